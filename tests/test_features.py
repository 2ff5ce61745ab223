import numpy as np
import pytest

from tandem_lm_eval.backends.base import PromptScores
from tandem_lm_eval.judgment.features import (
    FEATURE_NAMES,
    FEATURE_SET,
    NUM_FEATURES,
    FeatureError,
    feature_matrix,
    feature_vector,
    features_of,
    per_token_perplexity,
    span_values,
    trend,
)


def test_feature_set_is_the_documented_17():
    assert FEATURE_SET == "tandem-v2"
    assert NUM_FEATURES == 17 == len(set(FEATURE_NAMES))
    assert FEATURE_NAMES[:7] == (
        "ppl_mean",
        "ppl_std",
        "ppl_median",
        "ppl_max",
        "ppl_min",
        "ppl_p25",
        "ppl_p75",
    )
    assert FEATURE_NAMES[-3:] == ("ppl_trend", "entropy_trend", "length")


def test_feature_vector_values_by_hand():
    logprobs = np.log(np.array([0.5, 0.25, 1.0, 0.125]))  # PPL = 2, 4, 1, 8
    ent = np.array([1.0, 2.0, 3.0, 4.0])
    f = dict(zip(FEATURE_NAMES, feature_vector(logprobs, ent, num_tokens=5)))
    ppl = np.array([2.0, 4.0, 1.0, 8.0])
    assert f["ppl_mean"] == pytest.approx(3.75)
    assert f["ppl_std"] == pytest.approx(ppl.std())
    assert f["ppl_median"] == pytest.approx(3.0)
    assert f["ppl_max"] == pytest.approx(8.0) and f["ppl_min"] == pytest.approx(1.0)
    assert f["ppl_p25"] == pytest.approx(np.percentile(ppl, 25))
    assert f["ppl_p75"] == pytest.approx(np.percentile(ppl, 75))
    assert f["entropy_mean"] == pytest.approx(2.5)
    assert f["entropy_min"] == 1.0 and f["entropy_max"] == 4.0
    # fewer than 20 values: k = n, so last-k minus first-k is 0
    assert f["ppl_trend"] == pytest.approx(0.0) and f["entropy_trend"] == pytest.approx(0.0)
    assert f["length"] == 5


def test_trend_uses_last_and_first_twenty():
    values = np.concatenate([np.zeros(20), np.full(30, 5.0), np.full(20, 2.0)])
    assert trend(values) == pytest.approx(2.0)
    rising = np.arange(100, dtype=float)
    assert trend(rising) == pytest.approx(80.0)  # mean(80..99) - mean(0..19)


def test_perplexity_is_exp_of_negative_logprob_and_capped():
    assert per_token_perplexity(np.array([0.0, -1.0]))[1] == pytest.approx(np.e)
    assert np.isfinite(per_token_perplexity(np.array([-5000.0]))).all()


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        feature_vector(np.zeros(3), np.zeros(4), 5)
    with pytest.raises(ValueError):
        feature_vector(np.array([np.nan]), np.zeros(1), 5)
    with pytest.raises(ValueError):
        feature_vector(np.zeros(6), np.zeros(6), 3)


def test_single_token_prompt_gives_zeros_not_nan():
    f = feature_vector(np.zeros(0), np.zeros(0), 1)
    assert np.isfinite(f).all() and f[-1] == 1


def scored(n: int, spans=None) -> PromptScores:
    """A prompt of n tokens whose value j (token j + 1) is j + 1: value indices are visible."""
    values = np.arange(1, n, dtype=float)
    return PromptScores(-values / 100, values, num_tokens=n, spans=spans)


def test_question_insights_span_takes_exactly_those_tokens():
    # tokens 0..29: template 0-4, Q 5-11, header 12-14, I 15-24, footer 25-29
    sc = scored(30, {"question": ((5, 12),), "insights": ((15, 25),)})
    _, ent, n = span_values(sc, "question_insights")
    assert list(ent) == [*range(5, 12), *range(15, 25)]  # token i's value is i (value index i - 1)
    assert n == 17
    f = dict(zip(FEATURE_NAMES, features_of(sc)))
    assert f["length"] == 17 and f["entropy_max"] == 24 and f["entropy_min"] == 5


def test_insights_span_and_its_stage_zero_fallback_to_q():
    sc = scored(30, {"question": ((5, 12),), "insights": ((15, 25),)})
    assert list(span_values(sc, "insights")[1]) == list(range(15, 25))
    stage0 = scored(20, {"question": ((5, 12),)})  # I_0 is empty: §2.4 scores Q alone
    assert list(span_values(stage0, "insights")[1]) == list(range(5, 12))
    empty_insights = scored(20, {"question": ((5, 12),), "insights": ()})
    assert list(span_values(empty_insights, "insights")[1]) == list(range(5, 12))


def test_prompt_span_is_the_v1_whole_prompt():
    sc = scored(30, {"question": ((5, 12),)})
    logprobs, ent, n = span_values(sc, "prompt")
    assert n == 30 and len(ent) == 29  # the first token has no prediction
    assert np.allclose(features_of(sc, "prompt"), feature_vector(sc.token_logprobs, sc.entropies, 30))


def test_spans_are_required_and_checked():
    with pytest.raises(FeatureError, match="token spans of Q and I_t"):
        features_of(scored(10))
    assert features_of(scored(10), "prompt")[-1] == 10
    with pytest.raises(FeatureError, match="unknown feature span"):
        features_of(scored(10, {"question": ((0, 3),)}), "template")
    with pytest.raises(FeatureError, match="prompt has 10 tokens"):
        features_of(scored(10, {"question": ((5, 12),)}))


def test_feature_matrix_stacks_rows():
    m = feature_matrix([scored(6, {"question": ((1, 6),)}), scored(41, {"question": ((1, 41),)})])
    assert m.shape == (2, NUM_FEATURES)
    assert m[1, -1] == 40 and m[1, FEATURE_NAMES.index("entropy_trend")] > 0
