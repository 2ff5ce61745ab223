"""Eq. 7 / Appendix A: the intern's uncertainty over x_t = Q ⊕ I_t as a fixed-length feature vector.

Pure functions over arrays. Input: the intern's log-probability of each actual prompt token and the
entropy of each predictive distribution (``PromptScores``: positions 2..n of the rendered prompt),
plus the token spans of Q and I_t inside that prompt.

Feature set ``tandem-v2``: the 17 statistics Eq. 7 and Appendix A list (the paper says 18 and lists
17), in this order:

    ppl_mean ppl_std ppl_median ppl_max ppl_min ppl_p25 ppl_p75
    entropy_mean entropy_std entropy_median entropy_max entropy_min entropy_p25 entropy_p75
    ppl_trend entropy_trend length

computed over the tokens of one *span* of the intern's prompt:

- ``question_insights`` (default): the tokens of Q and of I_t, concatenated. §2.3: "we concatenate Q
  and I_t to form the input sequence x_t = Q ⊕ I_t ... Let n denote the number of tokens in the SLM
  input x_t" (Eq. 6 defines PPL^t and H^t over those n tokens). The chat template, the task's system
  prompt and our header/footer around the insights are not part of Q ⊕ I_t and are left out.
- ``insights``: the tokens of I_t only. Appendix A: "statistical features from the perplexity and
  entropy values computed over the insight tokens". At stage 0 there are none (I_0 = ∅) and §2.4
  computes s_0 "when the SLM processes Q alone", so stage 0 uses Q's tokens.
- ``prompt``: every position of the rendered prompt, template included. This was ``tandem-v1``; it
  is kept to compare against (docs/features.md shows why it measures the template), not as a default.

Definitions: per-token perplexity PPL_i = exp(-log P(x_i)) (Eq. 4), entropy H_i in nats (Eq. 5);
trend = mean of the last k values - mean of the first k values, k = min(20, number of values)
(Appendix A: "last 20 minus first 20 tokens"); std is the population standard deviation (ddof=0);
percentiles use linear interpolation; length = number of tokens in the span. A token's values are
those of its prediction (position i predicts token i), so every token of a span has them unless it
is the prompt's very first token.

A classifier records ``FEATURE_SET`` and its span, and the cascade computes exactly those.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tandem_lm_eval.common.errors import TandemError

FEATURE_SET = "tandem-v2"
# The spans features can be computed over (see the module docstring); the first is the default.
FEATURE_SPANS: tuple[str, ...] = ("question_insights", "insights", "prompt")
DEFAULT_SPAN = FEATURE_SPANS[0]
QUESTION, INSIGHTS = "question", "insights"  # the segment names prompts.intern_prompt marks
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
    """The 17 statistics of f_t for a sequence of ``num_tokens`` tokens with these values."""
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


class FeatureError(TandemError, ValueError):
    """Features cannot be computed as asked (e.g. the backend could not locate Q and I_t)."""


def check_span(span: str) -> str:
    if span not in FEATURE_SPANS:
        raise FeatureError(f"unknown feature span {span!r}; valid: {', '.join(FEATURE_SPANS)}")
    return span


def span_ranges(scores, span: str) -> list[tuple[int, int]]:
    """The token ranges ``[a, b)`` of the rendered prompt that ``span`` covers."""
    check_span(span)
    if span == "prompt":
        return [(0, int(scores.num_tokens))]
    spans = getattr(scores, "spans", None)
    if spans is None or QUESTION not in spans:
        raise FeatureError(
            f"feature span {span!r} needs the token spans of Q and I_t, which this intern backend did not "
            "report (an OpenAI-compatible server without /tokenize and without tokenizer=?)"
        )
    insights = list(spans.get(INSIGHTS, ()))
    if span == "insights" and any(b > a for a, b in insights):
        return insights
    return [*spans[QUESTION], *insights]


def span_values(scores, span: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(log-probabilities, entropies, number of tokens) of the tokens in ``span``, in prompt order."""
    logprobs = np.asarray(scores.token_logprobs, dtype=np.float64)
    entropies = np.asarray(scores.entropies, dtype=np.float64)
    index: list[np.ndarray] = []
    tokens = 0
    for a, b in span_ranges(scores, span):
        tokens += b - a
        # value j belongs to token j + 1 (the first token of the prompt has no prediction)
        index.append(np.arange(max(a, 1), b) - 1)
    idx = np.concatenate(index) if index else np.zeros(0, dtype=int)
    if idx.size and idx.max() >= logprobs.size:
        raise FeatureError(f"span ends at token {idx.max() + 1}, the prompt has {scores.num_tokens} tokens")
    return logprobs[idx], entropies[idx], tokens


def features_of(scores, span: str = DEFAULT_SPAN) -> np.ndarray:
    """f_t for one scored prompt (a ``PromptScores``), over ``span``."""
    logprobs, entropies, tokens = span_values(scores, span)
    return feature_vector(logprobs, entropies, tokens)


def feature_matrix(scores: Sequence, span: str = DEFAULT_SPAN) -> np.ndarray:
    """Stack ``features_of`` over scored prompts."""
    if not scores:
        return np.zeros((0, NUM_FEATURES))
    return np.stack([features_of(s, span) for s in scores])
