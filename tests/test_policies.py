import pytest

from tandem_lm_eval.cascade.policies import (
    FixedStagePolicy,
    InternOnlyPolicy,
    TandemPolicy,
    make_policy,
    select_stage,
)


def test_first_stage_above_threshold_wins():
    assert select_stage([0.2, 0.7, 0.9, 0.95], [0.5, 0.6, 0.5, 0.5]) == (1, True)


def test_threshold_is_strict():
    assert select_stage([0.5, 0.6], [0.5, 0.5]) == (1, True)  # s > tau, not >=


def test_fallback_is_argmax_of_scores():
    assert select_stage([0.3, 0.45, 0.2, 0.4], [0.9, 0.9, 0.9, 0.9]) == (1, False)


def test_fallback_tie_goes_to_cheapest_stage():
    assert select_stage([0.4, 0.4, 0.1], [0.9, 0.9, 0.9]) == (0, False)


def test_online_policy_agrees_with_offline_rule():
    policy = TandemPolicy([0.9, 0.8, 0.7, 0.6])
    scores = [0.1, 0.5, 0.75, 0.3]
    stops = [t for t in range(4) if policy.stop_after(t, scores[: t + 1])]
    assert stops[0] == select_stage(scores, policy.thresholds)[0] == 2


def test_thresholds_must_match_stages():
    with pytest.raises(ValueError, match="3 thresholds for 4 stages"):
        TandemPolicy([0.5, 0.5, 0.5]).last_stage(4)
    with pytest.raises(ValueError):
        TandemPolicy([1.5, 0.5])


def test_baselines():
    assert InternOnlyPolicy().last_stage(4) == 0
    fixed = make_policy("fixed:2")
    assert isinstance(fixed, FixedStagePolicy) and fixed.last_stage(4) == 2
    assert not fixed.stop_after(1, []) and fixed.stop_after(2, [])
    with pytest.raises(ValueError, match="needs 5 budgets"):
        make_policy("fixed:5").last_stage(4)
    with pytest.raises(ValueError, match="unknown mode"):
        make_policy("oracle")
    with pytest.raises(ValueError, match="fixed:<stage number>"):
        make_policy("fixed:x")
