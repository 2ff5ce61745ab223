"""vLLM's prompt logprobs as the intern's scores need them: which sampling fields this vLLM has, how a
full-vocabulary call is split, and both output shapes (flat and per-position dicts) read into one
row per scored position."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tandem_lm_eval.backends.base import (
    BackendError,
)

# A full-vocabulary prompt-logprob call materializes positions x vocabulary Python objects (~40 bytes
# each) plus a (positions, vocabulary + 1) tensor; calls are split so one holds at most this many.
_FULL_VOCAB_ENTRIES_PER_CALL = 1 << 24


@dataclass(frozen=True)
class ScoredPosition:
    """One prompt position from vLLM's prompt logprobs: the actual token and the listed top-k."""

    actual_logprob: float
    actual_rank: int
    top_logprobs: np.ndarray  # ranks 1..k (the whole vocabulary for k = -1)


# --- prompt logprobs --------------------------------------------------------------------------------
def has_sampling_field(name: str) -> bool:
    from vllm import SamplingParams

    return name in getattr(SamplingParams, "__struct_fields__", ())


def supports_flat_logprobs() -> bool:
    return has_sampling_field("flat_logprobs")


def engine_seconds(output: Any) -> float | None:
    """A request's own seconds in the engine, from its ``RequestOutput.metrics`` (vLLM's
    ``inference_time``: first scheduled to last token, engine-core timestamps); None where this vLLM
    or this engine (log stats off) gives no timestamps."""
    metrics = getattr(output, "metrics", None)
    start = getattr(metrics, "scheduled_ts", None)
    end = getattr(metrics, "last_token_ts", None)
    if not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
        return None
    if start <= 0 or end < start or not math.isfinite(end - start):
        return None
    return float(end - start)


def split_by_entries(rendered: list[list[int]], vocab_size: int) -> list[list[int]]:
    """Groups of prompt indices whose full-vocabulary output stays under the per-call entry budget."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, ids in enumerate(rendered):
        size = max(0, len(ids) - 1) * vocab_size
        if current and used + size > _FULL_VOCAB_ENTRIES_PER_CALL:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += size
    if current:
        groups.append(current)
    return groups


def parse_prompt_logprobs(
    prompt_logprobs: Any, ids: list[int], k: int, start: int = 1
) -> list[ScoredPosition]:
    """vLLM's prompt logprobs (flat or list of dicts) -> one ScoredPosition per position start..n-1 (0-based
    token index). Positions before ``start`` were read from the prefix cache: vLLM's v1 model runner
    returns a row for each of them anyway (holding no values), the v2 runner leaves them out (then
    the list is ``[None, rows for positions start..n-1]``); both shapes are read here."""
    n = len(ids)
    if n < 2:
        return []
    rows = 0 if prompt_logprobs is None else len(prompt_logprobs)
    if rows == n:
        offset = 0  # one row per prompt position
    elif start > 1 and rows == n - (start - 1):
        offset = start - 1  # rows only for the computed positions, after the leading None
    else:
        raise BackendError(
            f"vLLM returned {rows} prompt-logprob rows for a {n}-token prompt ({start - 1} tokens cached)"
        )
    out = []
    if hasattr(prompt_logprobs, "start_indices"):  # FlatLogprobs: the actual token first, then ranks 1..k
        lps = np.asarray(prompt_logprobs.logprobs, dtype=np.float64)
        starts, ends = prompt_logprobs.start_indices, prompt_logprobs.end_indices
        token_ids, ranks = prompt_logprobs.token_ids, prompt_logprobs.ranks
        for j in range(start, n):
            s, e = starts[j - offset], ends[j - offset]
            if token_ids[s] != ids[j]:
                raise BackendError(f"vLLM prompt logprobs are out of order at position {j}")
            out.append(ScoredPosition(float(lps[s]), int(ranks[s]), lps[s + 1 : e]))
        return out
    for j in range(start, n):  # older vLLM: {token_id: Logprob(logprob, rank, ...)} per position
        entries = prompt_logprobs[j - offset]
        actual = entries.get(ids[j])
        if actual is None:
            raise BackendError(f"vLLM prompt logprobs lack the actual token at position {j}")
        ranked = sorted((lp.rank, lp.logprob) for lp in entries.values() if lp.rank is not None)
        limit = math.inf if k == -1 else k
        top = np.array([lp for rank, lp in ranked if rank <= limit], dtype=np.float64)
        out.append(ScoredPosition(float(actual.logprob), int(actual.rank), top))
    return out
