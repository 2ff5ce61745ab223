"""What the ranks of a run send each other, as JSON: never pickle.

The collectives of ``harness/ranks.py`` pass objects through the launcher's key-value store (torch's
``TCPStore``), which any process that reaches ``MASTER_ADDR:MASTER_PORT`` may write to without
authentication; ``pickle.loads`` of what it holds would run whatever code a writer put there. JSON
decodes to data only.

The objects that travel are few and small (see ``harness/lm.py``): lm-eval's request counts (0-d
integer tensors), its logged samples and per-document metrics (dicts keyed by tuples, lists, strings,
numbers), and this plugin's run summary (``RunSummary`` with its ``PhaseTimes``), store counts and
trace part names. JSON's own types pass as they are; the others are tagged objects
``{"__tandem__": <kind>, ...}``:

- ``tuple``; ``dict`` with keys that are not all strings (as a list of pairs); ``bytes`` (base64);
- a torch tensor (dtype, shape, values) and numpy scalars and arrays (as Python numbers and lists,
  what lm-eval's own JSON writer makes of them);
- the dataclasses named in ``DATACLASSES`` (by name, so a peer can only ask for those);
- anything else becomes its ``str()``, as lm-eval's results writer (``handle_non_serializable``) would
  write it anyway, with one warning naming the type.

A payload that is not valid JSON, or a tag this codec does not know, raises ``RankPayloadError``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
from typing import Any

from tandem_lm_eval.common.errors import TandemError
from tandem_lm_eval.cost.ledger import PhaseTimes, RunSummary

logger = logging.getLogger(__name__)

TAG = "__tandem__"
# The dataclasses a rank may send, by name: a peer's payload can build these and nothing else.
DATACLASSES: dict[str, type] = {"RunSummary": RunSummary, "PhaseTimes": PhaseTimes}
_warned: set[str] = set()


class RankPayloadError(TandemError, ValueError):
    """What a rank found in the launcher's store is not a payload of this codec (one line)."""


def encode(obj: Any) -> bytes:
    """``obj`` as UTF-8 JSON bytes (NaN and infinities kept, as Python's json writes them)."""
    return json.dumps(_to_json(obj), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(payload: bytes | str) -> Any:
    """The object ``encode`` was given (tuples, non-string keys, tensors and the named dataclasses
    restored; numpy values come back as Python numbers and lists)."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else payload
        tree = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RankPayloadError(f"a rank's payload in the launcher's store is not JSON ({exc})") from None
    return _from_json(tree)


def _to_json(obj: Any) -> Any:
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)  # a str subclass (lm-eval responses carrying their cost) travels as its text
    if isinstance(obj, list):
        return [_to_json(v) for v in obj]
    if isinstance(obj, tuple):
        return {TAG: "tuple", "items": [_to_json(v) for v in obj]}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and TAG not in obj:
            return {str(k): _to_json(v) for k, v in obj.items()}
        return {TAG: "dict", "pairs": [[_to_json(k), _to_json(v)] for k, v in obj.items()]}
    if isinstance(obj, bytes | bytearray):
        return {TAG: "bytes", "b64": base64.b64encode(bytes(obj)).decode("ascii")}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = type(obj).__name__
        if DATACLASSES.get(name) is type(obj):
            fields = {f.name: _to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            return {TAG: "dataclass", "name": name, "fields": fields}
    module = type(obj).__module__.split(".")[0]
    if module == "torch":
        import torch

        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu()
            return {TAG: "tensor", "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                    "values": t.reshape(-1).tolist()}  # fmt: skip
    if module == "numpy":
        import numpy as np

        if isinstance(obj, np.generic | np.ndarray):
            return _to_json(obj.tolist())
    if isinstance(obj, set | frozenset):
        return [_to_json(v) for v in sorted(obj, key=repr)]
    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if name not in _warned:
        _warned.add(name)
        logger.warning(
            "tandem: a %s sent between ranks travels as its text (str), as lm-eval writes it", name
        )
    return str(obj)


def _from_json(tree: Any) -> Any:
    if isinstance(tree, list):
        return [_from_json(v) for v in tree]
    if not isinstance(tree, dict):
        return tree
    kind = tree.get(TAG)
    if kind is None:
        return {k: _from_json(v) for k, v in tree.items()}
    try:
        if kind == "tuple":
            return tuple(_from_json(v) for v in tree["items"])
        if kind == "dict":
            return {_hashable(_from_json(k)): _from_json(v) for k, v in tree["pairs"]}
        if kind == "bytes":
            return base64.b64decode(tree["b64"], validate=True)
        if kind == "dataclass":
            cls = DATACLASSES[tree["name"]]
            names = {f.name for f in dataclasses.fields(cls)}
            fields = {k: _from_json(v) for k, v in tree["fields"].items() if k in names}
            return cls(**fields)
        if kind == "tensor":
            return _tensor(tree["dtype"], tree["shape"], tree["values"])
    except RankPayloadError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise RankPayloadError(
            f"a rank's {kind!r} payload is malformed ({type(exc).__name__}: {exc})"
        ) from None
    raise RankPayloadError(f"a rank's payload has an unknown kind {kind!r}")


def _hashable(key: Any) -> Any:
    if isinstance(key, list):  # a JSON list can only have come from a set or a list: keys need a tuple
        return tuple(_hashable(k) for k in key)
    return key


# Tensor dtypes a rank may send: numbers only (an ``object`` or storage of another kind cannot be named).
_TENSOR_DTYPES = (
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
)


def _tensor(dtype: str, shape: list, values: list):
    import torch

    if dtype not in _TENSOR_DTYPES:
        raise RankPayloadError(
            f"a rank sent a tensor of dtype {dtype!r}; expected one of {', '.join(_TENSOR_DTYPES)}"
        )
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise RankPayloadError(f"a rank sent a tensor of shape {shape!r}")
    if not isinstance(values, list) or len(values) != math.prod(shape):
        raise RankPayloadError(f"a rank sent a tensor of shape {shape} with {len(values)} values")
    return torch.tensor(values, dtype=getattr(torch, dtype)).reshape(shape)
