"""Option values as they arrive: lm-eval's ``model_args`` (and our CLIs) hand them over as str, int,
float, bool or list. One set of converters for ``harness/config.py`` and every backend, each naming the key
in its error, so ``intern_topk=ten`` fails the same way wherever it is read.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tandem_lm_eval.common.errors import TandemError

T = TypeVar("T")

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


class OptionError(TandemError, ValueError):
    """A bad option value; the message names the key."""


@contextlib.contextmanager
def reported_as(error: type[Exception], prefix: str = "") -> Iterator[None]:
    """Re-raise option errors as ``error`` (e.g. a backend's own error type), message prefixed."""
    try:
        yield
    except OptionError as exc:
        raise error(f"{prefix}{exc}") from None


def converted(
    error: type[Exception], prefix: str, convert: Callable[..., T], key: str, *args: Any, **kwargs: Any
) -> T:
    """``convert(key, ...)`` with its error re-raised as ``error``: a backend reports bad options as
    its own errors (it is also built outside model_args). Bind the first two with functools.partial."""
    with reported_as(error, prefix):
        return convert(key, *args, **kwargs)


def as_str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OptionError(f"{key} must be a non-empty string, got {value!r}")
    return value.strip()


def as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise OptionError(f"{key} must be true or false, got {value!r}")


def as_int(key: str, value: Any, minimum: int | None = None) -> int:
    try:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not float(number).is_integer():
            raise ValueError
        out = int(number)
    except (TypeError, ValueError, OverflowError):
        raise OptionError(f"{key} must be an integer, got {value!r}") from None
    if minimum is not None and out < minimum:
        raise OptionError(f"{key} must be >= {minimum}, got {value!r}")
    return out


def as_float(key: str, value: Any, minimum: float | None = None, maximum: float | None = None) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        out = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{key} must be a number, got {value!r}") from None
    if (
        not math.isfinite(out)
        or (minimum is not None and out < minimum)
        or (maximum is not None and out > maximum)
    ):
        low = "-inf" if minimum is None else f"{minimum:g}"
        high = "inf" if maximum is None else f"{maximum:g}"
        raise OptionError(f"{key} must be a finite number in [{low}, {high}], got {value!r}")
    return out


def as_choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in allowed:
        raise OptionError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    return text


def as_list(key: str, value: Any) -> list:
    """A list from a list, a number, or text such as ``[100,500,1000]`` or ``100/500/1000``."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        text = value.strip().strip("[]()")
        # lm-eval splits model_args on commas, so "/" and ":" are the separators that survive there
        for sep in ("/", ":", ";", ",", " "):
            if sep in text:
                return [p for p in (s.strip() for s in text.split(sep)) if p]
        return [text] if text else []
    raise OptionError(f"{key} must be a list like [100,500,1000] or 100/500/1000, got {value!r}")


_BYTE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def as_bytes(key: str, value: Any) -> int:
    """A positive byte count; text may carry a unit: ``4GiB``, ``512MiB``, ``2G``."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9.]+)\s*([kmg]i?)?b?\s*", value.lower())
        if match:
            try:
                number = float(match.group(1)) * _BYTE_UNITS[match.group(2) or ""]
            except ValueError:
                raise OptionError(f"{key} must be a byte count such as 4GiB, got {value!r}") from None
            return as_int(key, round(number), minimum=1)
    return as_int(key, value, minimum=1)


_COUNT_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def as_count(key: str, value: Any) -> int:
    """A positive count such as a parameter number: ``32000000000``, ``32e9``, ``32B``, ``1.5b``."""
    text = str(value).strip().replace("_", "").replace(",", "")
    scale = _COUNT_SUFFIXES.get(text[-1:].lower(), 1.0) if text else 1.0
    if scale != 1.0:
        text = text[:-1]
    try:
        number = float(text) * scale
    except ValueError:
        raise OptionError(f"{key} must be a positive number such as 32e9 or 32B, got {value!r}") from None
    if not math.isfinite(number) or number < 1:
        raise OptionError(f"{key} must be a positive number such as 32e9 or 32B, got {value!r}")
    return int(round(number))


def parse_model_args(text: str) -> dict[str, str]:
    """``key=value,key=value`` as lm_eval's ``--model_args`` (commas inside ``[...]`` kept together)."""
    out: dict[str, str] = {}
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    for part in parts:
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"model_args entry {part!r} is not key=value")
        out[key.strip()] = value.strip()
    return out
