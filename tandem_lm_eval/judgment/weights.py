"""A classifier's weights file checked from its header alone, before anything is allocated.

A classifier folder is a user's input, and its small JSON card says how large the network is: a 5 KB
``classifier.json`` with ``hidden_sizes: [40000, 40000]`` would have the loader build 6.4 GB of layers
before ``load_state_dict`` noticed that the weights file holds nothing of that size. So the shapes the
card implies are compared with the shapes the safetensors header declares (its first 8 bytes give the
header's length, the header is JSON: name -> dtype, shape, byte offsets), and the declared sizes with
the file's size, before any tensor or layer exists. What is then allocated is at most what the file
holds.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tandem_lm_eval.judgment.errors import ClassifierError

# safetensors refuses headers over 100 MB itself; a classifier's header is a few hundred bytes.
MAX_HEADER_BYTES = 1 << 20
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F16": 2, "BF16": 2, "I16": 2, "U16": 2, "F32": 4, "I32": 4,
               "U32": 4, "F64": 8, "I64": 8, "U64": 8}  # fmt: skip
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header declares it."""

    dtype: str
    shape: tuple[int, ...]


def read_header(path: str | Path) -> dict[str, TensorEntry]:
    """The tensors a safetensors file declares, read from its header only (no tensor data), each
    checked to lie inside the file with the size its dtype and shape give."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise ClassifierError(
                    f"{path}: malformed classifier weights, not a safetensors file (shorter than its 8-byte header length)"
                )
            (length,) = struct.unpack("<Q", prefix)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise ClassifierError(
                    f"{path}: malformed classifier weights, not a safetensors file (header length {length} of a {size}-byte file)"
                )
            raw = fh.read(length)
    except OSError as exc:
        raise ClassifierError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ClassifierError(
            f"{path}: malformed classifier weights, not a safetensors file (its header is not JSON)"
        ) from None
    if not isinstance(header, dict):
        raise ClassifierError(
            f"{path}: malformed classifier weights, not a safetensors file (its header is not a JSON object)"
        )
    data_bytes = size - 8 - length
    out: dict[str, TensorEntry] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        out[name] = _entry(path, name, entry, data_bytes)
    return out


def _entry(path: Path, name: str, entry, data_bytes: int) -> TensorEntry:
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
    except (TypeError, KeyError, ValueError):
        raise ClassifierError(
            f"{path}: malformed classifier weights, tensor {name!r} has a malformed header entry"
        ) from None
    if dtype not in DTYPE_BYTES:
        raise ClassifierError(
            f"{path}: malformed classifier weights, tensor {name!r} has an unknown dtype {dtype!r}"
        )
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ClassifierError(
            f"{path}: malformed classifier weights, tensor {name!r} has a malformed shape {shape!r}"
        )
    if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_bytes):
        raise ClassifierError(
            f"{path}: malformed classifier weights, tensor {name!r} lies outside the file (bytes {begin}-{end} of {data_bytes})"
        )
    if end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise ClassifierError(
            f"{path}: malformed classifier weights, tensor {name!r} of shape {shape} ({dtype}) is not {end - begin} bytes"
        )
    return TensorEntry(dtype, tuple(shape))


def check_shapes(
    path: str | Path, expected: Mapping[str, tuple[int, ...]], what: str
) -> dict[str, TensorEntry]:
    """Refuse a weights file whose tensors are not exactly ``expected`` (name -> shape, float dtypes),
    naming the first difference; ``what`` says where the expectation comes from (the card's
    architecture)."""
    found = read_header(path)
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []
        )
        raise ClassifierError(
            f"{path}: malformed classifier weights, the tensors do not match {what} ({'; '.join(parts)})"
        )
    for name, shape in expected.items():
        entry = found[name]
        if entry.shape != tuple(shape):
            raise ClassifierError(
                f"{path}: malformed classifier weights, tensor {name!r} has shape {list(entry.shape)}, {what} needs {list(shape)}"
            )
        if entry.dtype not in FLOAT_DTYPES:
            raise ClassifierError(
                f"{path}: malformed classifier weights, tensor {name!r} is {entry.dtype}, not a float type"
            )
    return found
