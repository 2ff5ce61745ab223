"""Eq. 7 / Appendix A: the intern's uncertainty over x_t = Q ⊕ I_t as a fixed-length feature vector.

Pure functions over arrays. Input: the intern's log-probability of each actual prompt token and the
entropy of each predictive distribution (positions 2..n; the first token has no prediction).

The paper says 18 features but lists 17 (Eq. 7 and Appendix A: 7 perplexity statistics, 7 entropy
statistics, 2 trends, the length). Feature set ``tandem-v1`` is exactly those 17, in this order:

    ppl_mean ppl_std ppl_median ppl_max ppl_min ppl_p25 ppl_p75
    entropy_mean entropy_std entropy_median entropy_max entropy_min entropy_p25 entropy_p75
    ppl_trend entropy_trend length

- per-token perplexity PPL_i = exp(-log P(x_i)) (Eq. 4), entropy H_i in nats (Eq. 5);
- trend = mean of the last k values - mean of the first k values, k = min(20, number of values)
  (Appendix A: "last 20 minus first 20 tokens");
- std is the population standard deviation (ddof=0); percentiles use linear interpolation;
- length n = |x_t|, the number of tokens of the intern's input.

A classifier records ``FEATURE_SET`` and refuses vectors from another set (see classifier.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FEATURE_SET = "tandem-v1"
TREND_WINDOW = 20
# exp(-logp) overflows float64 past logp < -709; a token that unlikely is capped, not infinite.
_MAX_NEG_LOGPROB = 700.0

_STATS = ("mean", "std", "median", "max", "min", "p25", "p75")
FEATURE_NAMES: tuple[str, ...] = (
    *(f"ppl_{s}" for s in _STATS),
    *(f"entropy_{s}" for s in _STATS),
    "ppl_trend",
    "entropy_trend",
    "length",
)
NUM_FEATURES = len(FEATURE_NAMES)


def distribution_stats(values: np.ndarray) -> np.ndarray:
    """ϕ(·): mean, std, median, max, min, 25th and 75th percentile (zeros for an empty sequence)."""
    if values.size == 0:
        return np.zeros(len(_STATS))
    p25, median, p75 = np.percentile(values, [25, 50, 75])
    return np.array([values.mean(), values.std(), median, values.max(), values.min(), p25, p75])


def trend(values: np.ndarray, window: int = TREND_WINDOW) -> float:
    """Mean of the last k minus mean of the first k values, k = min(window, len(values))."""
    if values.size == 0:
        return 0.0
    k = min(window, values.size)
    return float(values[-k:].mean() - values[:k].mean())


def per_token_perplexity(token_logprobs: np.ndarray) -> np.ndarray:
    """Eq. 4: PPL_i = exp(-log P(x_i))."""
    neg = np.minimum(-np.asarray(token_logprobs, dtype=np.float64), _MAX_NEG_LOGPROB)
    return np.exp(neg)


def feature_vector(token_logprobs: np.ndarray, entropies: np.ndarray, num_tokens: int) -> np.ndarray:
    """The ``tandem-v1`` vector f_t for one intern input of ``num_tokens`` tokens."""
    logprobs = np.asarray(token_logprobs, dtype=np.float64)
    ent = np.asarray(entropies, dtype=np.float64)
    if logprobs.shape != ent.shape or logprobs.ndim != 1:
        raise ValueError("token_logprobs and entropies must be 1-D arrays of the same length")
    if not (np.all(np.isfinite(logprobs)) and np.all(np.isfinite(ent))):
        raise ValueError("token log-probabilities and entropies must be finite")
    if num_tokens < logprobs.size:
        raise ValueError(f"num_tokens={num_tokens} is less than the {logprobs.size} scored positions")
    ppl = per_token_perplexity(logprobs)
    return np.concatenate(
        [distribution_stats(ppl), distribution_stats(ent), [trend(ppl), trend(ent), float(num_tokens)]]
    )


def feature_matrix(scores: Sequence) -> np.ndarray:
    """Stack ``feature_vector`` over PromptScores-like objects (token_logprobs, entropies, num_tokens)."""
    if not scores:
        return np.zeros((0, NUM_FEATURES))
    return np.stack([feature_vector(s.token_logprobs, s.entropies, s.num_tokens) for s in scores])
