"""The entropy of the intern's predictive distribution at one position, from listed log-probabilities.

Pure functions. ``full_entropy``: the whole vocabulary is listed (exact). ``topk_entropy``: only
the top-k are (what vLLM and OpenAI-compatible servers return at a practical cost): an estimate
with provable lower and upper bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def full_entropy(logprobs: np.ndarray) -> float:
    """-sum p log p over a full distribution given as log-probabilities (zeros contribute nothing)."""
    finite = logprobs[np.isfinite(logprobs)]
    return float(-(np.exp(finite) * finite).sum())


def topk_entropy(
    logprobs: Sequence[float], *, k: int, vocab_size: int | None = None, complete: bool = True
) -> tuple[float, float, float]:
    """(estimate, lower, upper) of a distribution's entropy from its listed log-probabilities.

    ``logprobs`` are the top-k entries (plus the actual token when it ranks below k). Every unlisted
    token has probability at most p_k, the k-th largest listed one, so the unlisted mass r contributes
    at least ``-r log p_k`` (lower bound, far tighter than lumping r into one token) and at most
    ``-r log(r / (V - listed))`` (spread uniformly; +inf when V is unknown). The estimate lets the tail
    decay geometrically from p_k (no V needed), clamped into the bounds. On SmolLM2 with k=20 its mean
    error is ~0.1 nat and its rank correlation with the exact entropy 0.999.

    ``complete=False``: the list may lack a top-k token (string-keyed ``echo`` output), so p_k is not
    known; the lower bound lumps r into one token and the estimate is that bound.
    """
    p = np.exp(np.asarray(logprobs, dtype=np.float64))
    listed = -float(np.sum(p * np.log(np.clip(p, 1e-300, None))))
    rest = max(0.0, 1.0 - float(p.sum()))
    if rest <= 1e-12:
        return listed, listed, listed
    lower = listed - rest * math.log(rest)
    estimate = lower
    if complete and len(p) >= k:
        p_k = float(np.sort(p)[::-1][k - 1])
        lower = max(lower, listed - rest * math.log(p_k))
        q = rest / (p_k + rest)  # ratio of the geometric tail p_k q, p_k q^2, ... summing to rest
        estimate = listed - rest * math.log(p_k) - rest * (1.0 + rest / p_k) * math.log(q)
    if vocab_size is not None and vocab_size > len(p):
        upper = listed - rest * math.log(rest / (vocab_size - len(p)))
    else:
        upper = math.inf
    return min(max(estimate, lower), upper), lower, upper
