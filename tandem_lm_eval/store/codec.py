"""How backend results are stored: generations as canonical JSON, scores as raw little-endian arrays behind
a JSON header, never pickle (a store file from elsewhere must not be able to run code)."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from tandem_lm_eval.backends.base import (
    Generation,
    PromptScores,
)


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


# --- values ---------------------------------------------------------------------------------------
def encode_generation(gen: Generation) -> bytes:
    # The fields by hand, not dataclasses.asdict: asdict deep-copies the token ids one by one (a
    # thinking mentor's output is thousands of them), and json writes the tuple as it is. The bytes
    # are the same as before (sorted keys), so stored entries keep matching.
    ids = gen.token_ids
    if not all(type(i) is int for i in ids):  # numpy integers from an engine: plain ints for json
        ids = [int(i) for i in ids]
    return canonical_json(
        {
            "cached_prompt_tokens": gen.cached_prompt_tokens,
            "finish_reason": gen.finish_reason,
            "new_tokens": gen.new_tokens,
            "prompt_tokens": gen.prompt_tokens,
            "regenerated_tokens": gen.regenerated_tokens,
            "text": gen.text,
            "token_ids": ids,
        }
    )


def decode_generation(blob: bytes) -> Generation:
    try:
        data = json.loads(blob)
        ids = data["token_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise ValueError("token_ids is not a list of integers")
        if data["finish_reason"] not in ("stop", "length"):
            raise ValueError(f"finish_reason {data['finish_reason']!r}")
        return Generation(
            text=str(data["text"]),
            token_ids=tuple(ids),
            new_tokens=int(data["new_tokens"]),
            finish_reason=data["finish_reason"],
            cached_prompt_tokens=data.get("cached_prompt_tokens"),
            prompt_tokens=data.get("prompt_tokens"),
            regenerated_tokens=int(data.get("regenerated_tokens") or 0),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"undecodable generation: {exc}") from None


_SCORES_MAGIC = b"TSC1"


def _le(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    if array.dtype.kind != "f":
        raise ValueError(f"scores arrays must be floating point, got {array.dtype}")
    return array.astype(array.dtype.newbyteorder("<"), copy=False)


def encode_scores(sc: PromptScores) -> bytes:
    """``TSC1`` + header length (uint32 LE) + JSON header + the arrays' raw little-endian bytes
    (token_logprobs, entropies, then the bounds when present), each in its own dtype: bit-exact."""
    arrays = [sc.token_logprobs, sc.entropies]
    if sc.entropy_bounds is not None:
        arrays += list(sc.entropy_bounds)
    arrays = [_le(a) for a in arrays]
    hidden = sorted((sc.hidden or {}).items())
    header = {
        "num_tokens": int(sc.num_tokens),
        "entropy_method": sc.entropy_method,
        "spans": None
        if sc.spans is None
        else {k: [[int(a), int(b)] for a, b in v] for k, v in sc.spans.items()},
        "arrays": [[a.dtype.str, int(a.size)] for a in arrays],
    }
    if hidden:  # hidden vectors after the arrays, named (old entries have none)
        header["hidden"] = [k for k, _ in hidden]
        arrays += [_le(np.asarray(v)) for _, v in hidden]
        header["arrays"] += [[a.dtype.str, int(a.size)] for a in arrays[-len(hidden) :]]
    head = canonical_json(header)
    return b"".join([_SCORES_MAGIC, struct.pack("<I", len(head)), head, *(a.tobytes() for a in arrays)])


def decode_scores(blob: bytes) -> PromptScores:
    try:
        if blob[:4] != _SCORES_MAGIC:
            raise ValueError("bad magic")
        (n,) = struct.unpack("<I", blob[4:8])
        header = json.loads(blob[8 : 8 + n])
        offset = 8 + n
        arrays = []
        for dtype, size in header["arrays"]:
            dt = np.dtype(dtype)
            if dt.kind != "f":
                raise ValueError(f"dtype {dtype}")
            end = offset + dt.itemsize * int(size)
            if end > len(blob):
                raise ValueError("truncated arrays")
            arrays.append(np.frombuffer(blob[offset:end], dtype=dt).astype(dt.newbyteorder("="), copy=True))
            offset = end
        names = header.get("hidden") or []
        vectors = arrays[len(arrays) - len(names) :] if names else []
        arrays = arrays[: len(arrays) - len(names)]
        if offset != len(blob) or len(arrays) not in (2, 4):
            raise ValueError("trailing bytes or wrong array count")
        spans = header["spans"]
        return PromptScores(
            token_logprobs=arrays[0],
            entropies=arrays[1],
            num_tokens=int(header["num_tokens"]),
            entropy_method=header["entropy_method"],
            entropy_bounds=(arrays[2], arrays[3]) if len(arrays) == 4 else None,
            spans=None
            if spans is None
            else {k: tuple((int(a), int(b)) for a, b in v) for k, v in spans.items()},
            hidden=dict(zip(names, vectors)) if names else None,
        )
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise ValueError(f"undecodable scores: {exc}") from None
