"""Offline replay of the stop rule (``tandem_lm_eval.replay``): exactness against the live rule, the
whole-grid histogram against one-by-one replays, the objectives and the baselines."""

import itertools
import json
import math

import numpy as np
import pytest

from tandem_lm_eval.calibration.front import pareto_front
from tandem_lm_eval.calibration.objectives import Objective, choose_thresholds
from tandem_lm_eval.calibration.replay import NEVER, StageTable, fixed_stage, intern_only, oracle, replay
from tandem_lm_eval.calibration.threshold_grid import THRESHOLD_GRID, grid_search_threshold, threshold_grid
from tandem_lm_eval.cascade.policies.base import select_stage

NAN = math.nan


def random_table(rng, questions, stages, *, unusable=0.15, on_grid=False, params=(32e9, 7e9)):
    """Scores with unusable (NaN) stages; ``on_grid``: scores drawn from the grid values (and 0, 1),
    so there are ties between stages and scores equal to thresholds (s_t > τ_t is strict)."""
    if on_grid:
        scores = rng.choice(np.array((0.0, *THRESHOLD_GRID, 1.0)), size=(questions, stages))
    else:
        scores = rng.random((questions, stages))
    # a stage whose prompt does not fit usually stays unfit (insights only grow), but not always
    mask = rng.random((questions, stages)) < unusable
    mask[:, 0] = False
    scores[mask] = NAN
    mentor = np.cumsum(rng.integers(0, 400, (questions, stages)), axis=1).astype(float)
    mentor[:, 0] = 0
    return StageTable(
        scores=scores,
        correct=rng.random((questions, stages)) < np.linspace(0.3, 0.8, stages),
        mentor_tokens=mentor,
        intern_tokens=rng.integers(1, 600, (questions, stages)),
        mentor_params=params[0],
        intern_params=params[1],
    )


def loop_replay(table, thresholds):
    """The live rule, question by question: unusable stages read as -1, like ``Cascade``."""
    stages, early = [], []
    for q in range(table.num_questions):
        s = [(-1.0 if math.isnan(x) else float(x)) for x in table.scores[q]]
        t, e = select_stage(s, list(thresholds))
        stages.append(t)
        early.append(e)
    return np.array(stages), np.array(early)


# --- replay against select_stage ------------------------------------------------------------------
@pytest.mark.parametrize("stage0", ["stop", "fallback"])
@pytest.mark.parametrize("on_grid", [False, True])
def test_replay_matches_select_stage(stage0, on_grid):
    rng = np.random.default_rng(1 if on_grid else 2)
    for _ in range(20):
        table = random_table(rng, 200, int(rng.integers(1, 6)), on_grid=on_grid)
        thresholds = [float(x) for x in rng.choice(THRESHOLD_GRID, size=table.num_stages)]
        result = replay(table, thresholds, stage0=stage0)
        live = list(thresholds)
        if stage0 == "fallback":
            live[0] = math.inf
        stages, early = loop_replay(table, live)
        np.testing.assert_array_equal(result.stage, stages)
        np.testing.assert_array_equal(result.early, early)
        rows = np.arange(table.num_questions)
        np.testing.assert_array_equal(result.correct, table.correct[rows, stages])
        assert table.usable[rows, result.stage].all()
        paid = np.where(early, table.mentor_tokens[rows, stages], table.mentor_tokens[:, -1])
        np.testing.assert_array_equal(result.mentor_paid, paid)


def test_replay_with_many_ties_and_nans_exercises_both_paths():
    # guard on the random test above: the cases it is meant to cover do occur
    rng = np.random.default_rng(1)
    table = random_table(rng, 500, 4, on_grid=True)
    result = replay(table, [0.5, 0.5, 0.5, 0.5])
    assert 0 < result.early_rate < 1
    s = np.where(table.usable, table.scores, -1)
    assert (s[:, :, None] == s[:, None, :]).sum() > 500 * 4  # ties between stages
    assert np.isnan(table.scores).any()


def test_fallback_pays_every_stage_of_the_mentor():
    # no stage passes 0.9: the intern answers from argmax = stage 1, the mentor wrote all 3 stages
    table = StageTable(
        scores=[[0.4, 0.6, 0.3, NAN]],
        correct=[[False, True, False, False]],
        mentor_tokens=[[0, 50, 120, 200]],
        intern_tokens=[[10, 20, 30, 40]],
        mentor_params=1e9,
        intern_params=1e8,
    )
    r = replay(table, [0.9, 0.9, 0.9, 0.9])
    assert r.stage.tolist() == [1] and r.early.tolist() == [False] and r.correct.tolist() == [True]
    assert r.mentor_paid.tolist() == [200.0]  # stage 3 did not fit the intern, but the mentor wrote it
    assert r.intern_tokens.tolist() == [20.0]
    # Eq. 12: 2e-12 * (1e9 * 200 + 1e8 * (200 + 20)) = 2e-12 * 2.22e11
    assert r.tflops[0] == pytest.approx(0.444, rel=1e-12)
    # an early stop at stage 1 pays only the first stage
    r = replay(table, [0.9, 0.5, 0.9, 0.9])
    assert (r.stage[0], r.early[0], r.mentor_paid[0]) == (1, True, 50.0)
    # stage0="fallback": stage 0 cannot stop even with s_0 > τ_0, but can win the fallback
    assert replay(table, [0.1, 0.9, 0.9, 0.9]).stage.tolist() == [0]
    r = replay(table, [0.1, 0.9, 0.9, 0.9], stage0="fallback")
    assert (r.stage[0], r.early[0], r.mentor_paid[0]) == (1, False, 200.0)
    r = replay(table.with_scores([[0.7, 0.6, 0.3, NAN]]), [0.1, 0.9, 0.9, 0.9], stage0="fallback")
    assert (r.stage[0], r.early[0], r.mentor_paid[0]) == (0, False, 200.0)


def test_eq12_by_hand_on_two_questions():
    table = StageTable(
        scores=[[0.8, 0.9], [0.1, 0.7]],
        correct=[[True, True], [False, True]],
        mentor_tokens=[[0, 100], [0, 300]],
        intern_tokens=[[50, 40], [60, 25]],
        mentor_params=32e9,
        intern_params=7e9,
    )
    r = replay(table, [0.5, 0.5])
    assert r.stage.tolist() == [0, 1]
    # q0: stage 0, 2e-12 * (32e9 * 0 + 7e9 * (0 + 50)) = 0.7
    # q1: stage 1, 2e-12 * (32e9 * 300 + 7e9 * (300 + 25)) = 2e-12 * 1.1875e13 = 23.75
    np.testing.assert_allclose(r.tflops, [0.7, 23.75], rtol=1e-12)
    assert r.mean_tflops == pytest.approx(12.225, rel=1e-12)
    assert r.accuracy == 1.0 and r.mean_mentor_tokens == 150.0 and r.mean_intern_tokens == 37.5
    assert r.stage_distribution == (0.5, 0.5) and r.early_rate == 1.0
    assert json.loads(json.dumps(r.summary()))["stage_distribution"] == {"0": 0.5, "1": 0.5}


# --- baselines ------------------------------------------------------------------------------------
def hand_table():
    return StageTable(
        scores=[[0.2, 0.5, 0.9], [0.3, NAN, NAN], [0.1, 0.2, 0.3]],
        correct=[[False, False, True], [False, True, True], [False, False, False]],
        mentor_tokens=[[0, 100, 250], [0, 80, 90], [0, 10, 20]],
        intern_tokens=[[5, 6, 7], [8, 9, 10], [11, 12, 13]],
        mentor_params=5e11,  # 2e-12 * 5e11 = 1 TFLOP per mentor token
        intern_params=0.0,
    )


def test_fixed_stage_and_intern_only():
    table = hand_table()
    r = fixed_stage(table, 2)
    # q1's stages 1 and 2 did not fit: it answers from stage 0, but the mentor wrote up to stage 2
    assert r.stage.tolist() == [2, 0, 2]
    assert r.correct.tolist() == [True, False, False]
    assert r.mentor_paid.tolist() == [250, 90, 20]
    assert r.intern_tokens.tolist() == [7, 8, 13]
    assert r.tflops.tolist() == pytest.approx([250, 90, 20])
    assert not r.early.any()
    r = fixed_stage(table, 1)
    assert r.stage.tolist() == [1, 0, 1] and r.mentor_paid.tolist() == [100, 80, 10]
    r = intern_only(table)
    assert r.stage.tolist() == [0, 0, 0] and r.mentor_paid.tolist() == [0, 0, 0]
    assert r.accuracy == 0.0 and r.mean_intern_tokens == 8.0
    with pytest.raises(ValueError, match="out of range"):
        fixed_stage(table, 3)


def test_oracle_takes_the_first_correct_usable_stage():
    table = hand_table()
    r = oracle(table)
    # q0: first correct stage is 2; q1: stage 1 is "correct" but unusable, stage 2 too: no correct
    # usable stage, so stage 0 at no mentor cost, counted wrong; q2: never correct, the same
    assert r.stage.tolist() == [2, 0, 0]
    assert r.correct.tolist() == [True, False, False]
    assert r.mentor_paid.tolist() == [250, 0, 0]
    assert r.accuracy == pytest.approx(1 / 3)
    assert r.stage_distribution == pytest.approx((2 / 3, 0, 1 / 3))


# --- the whole grid -------------------------------------------------------------------------------
def assert_cell_matches(grid_result, table, index):
    r = replay(table, grid_result.thresholds_at(index), stage0=grid_result.stage0)
    assert grid_result.accuracy[index] == r.accuracy  # counts: exact
    assert grid_result.mean_mentor_tokens[index] == pytest.approx(r.mean_mentor_tokens, rel=1e-12, abs=0)
    assert grid_result.mean_tflops[index] == pytest.approx(r.mean_tflops, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("stage0", ["stop", "fallback"])
def test_grid_equals_replay_on_every_combination(stage0):
    rng = np.random.default_rng(3)
    grid = (0.2, 0.4, 0.5, 0.6, 0.8)
    # scores on the grid itself (and 0, 1): every s == τ edge case and many argmax ties are hit
    scores = rng.choice((0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0), (30, 3))
    scores[:, 1:][rng.random((30, 2)) < 0.2] = NAN
    mentor = np.cumsum(rng.integers(0, 50, (30, 3)), axis=1).astype(float)
    mentor[:, 0] = 0
    table = StageTable(
        scores=scores,
        correct=rng.random((30, 3)) < 0.5,
        mentor_tokens=mentor,
        intern_tokens=rng.integers(1, 90, (30, 3)),
        mentor_params=14e9,
        intern_params=1.5e9,
    )
    assert np.isnan(table.scores).any()
    g = threshold_grid(table, grid, stage0=stage0)
    assert g.shape == ((1,) if stage0 == "fallback" else (5,)) + (5, 5)
    for index in itertools.product(*(range(n) for n in g.shape)):
        assert_cell_matches(g, table, index)


def test_grid_equals_replay_on_random_combinations_of_the_paper_grid():
    rng = np.random.default_rng(4)
    table = random_table(rng, 500, 4, on_grid=True)
    g = threshold_grid(table)
    assert g.shape == (19, 19, 19, 19) and g.axes[0] == THRESHOLD_GRID
    assert len(np.unique(g.accuracy)) > 20  # the thresholds matter: not a constant grid
    for _ in range(200):
        assert_cell_matches(g, table, tuple(int(i) for i in rng.integers(0, 19, 4)))
    table = random_table(rng, 500, 4)
    g = threshold_grid(table, stage0="fallback")
    assert g.shape == (1, 19, 19, 19) and g.axes[0] == (NEVER,)
    for _ in range(50):
        assert_cell_matches(g, table, (0, *(int(i) for i in rng.integers(0, 19, 3))))


def test_grid_refuses_too_many_cells():
    table = random_table(np.random.default_rng(5), 10, 6)
    with pytest.raises(ValueError, match="coarser"):
        threshold_grid(table, max_cells=1000)
    with pytest.raises(ValueError, match="strictly increasing"):
        threshold_grid(table, grid=(0.5, 0.4))


# --- objectives -----------------------------------------------------------------------------------
GRID3 = (0.3, 0.6, 0.9)


def crafted_table():
    """TFLOPs = mentor tokens (intern_params = 0). With τ on (0.3, 0.6, 0.9):

    A always ends correct, stops at 0 (free) iff τ_0 <= 0.6; B stops at 0 wrongly iff τ_0 = 0.3,
    else stage 1 (τ_1 <= 0.6, cost 100) or 2 (cost 200), correct; C passes stage 1 wrongly iff
    τ_1 = 0.3 (cost 100), else stage 2 correct (cost 300); D is never correct, free iff τ_0 <= 0.6.
    τ_2 never matters once τ_0 <= 0.6, so ties go to τ_2 = 0.9.

    - max accuracy 3/4: (0.6, 0.6, 0.9) at 400/4 = 100 per question
    - cost <= 50: (0.6, 0.3, *) accuracy 1/2 (A, B) at 50; (0.3, >=0.6, *) also 1/2 but at 75
    - accuracy >= 1/4 at least cost: (0.3, 0.3, 0.9) at 25 (C always needs the mentor)
    Reference fixed:2: accuracy 3/4, cost (200 + 200 + 300 + 200) / 4 = 225.
    """
    return StageTable(
        scores=[[0.8, 0.5, 0.5], [0.5, 0.7, 0.95], [0.2, 0.4, 0.95], [0.7, 0.2, 0.1]],
        correct=[[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]],
        mentor_tokens=[[0, 100, 200], [0, 100, 200], [0, 100, 300], [0, 100, 200]],
        intern_tokens=np.zeros((4, 3)),
        mentor_params=5e11,
        intern_params=0.0,
    )


@pytest.mark.parametrize(
    "objective, thresholds, accuracy, cost",
    [
        (Objective("max_accuracy"), (0.6, 0.6, 0.9), 0.75, 100.0),
        (Objective("max_accuracy", max_tflops=50), (0.6, 0.3, 0.9), 0.5, 50.0),
        (Objective("max_accuracy", max_cost_fraction=0.25), (0.6, 0.3, 0.9), 0.5, 50.0),  # cap 56.25
        (Objective("max_accuracy", max_tflops=99.9), (0.6, 0.3, 0.9), 0.5, 50.0),
        (Objective("min_cost", min_accuracy=0.25), (0.3, 0.3, 0.9), 0.25, 25.0),
        (Objective("min_cost", min_accuracy=0.5), (0.6, 0.3, 0.9), 0.5, 50.0),
        (Objective("min_cost", min_accuracy_fraction=1.0), (0.6, 0.6, 0.9), 0.75, 100.0),
        (Objective("min_cost", min_accuracy_fraction=1 / 3), (0.3, 0.3, 0.9), 0.25, 25.0),  # floor 0.25
    ],
)
def test_objectives_pick_hand_known_thresholds(objective, thresholds, accuracy, cost):
    choice = choose_thresholds(crafted_table(), objective, grid=GRID3)
    assert choice.thresholds == thresholds
    assert choice.feasible and choice.note == ""
    assert choice.accuracy == accuracy
    assert choice.mean_tflops == pytest.approx(cost, rel=1e-12)
    assert choice.reference["accuracy"] == 0.75
    assert choice.reference["mean_tflops"] == pytest.approx(225.0)
    d = json.loads(json.dumps(choice.to_dict()))
    assert d["thresholds"] == list(thresholds) and Objective.from_dict(d["objective"]) == objective
    assert d["summary"]["accuracy"] == accuracy


def test_unreachable_constraints_are_reported():
    table = crafted_table()
    choice = choose_thresholds(table, Objective("min_cost", min_accuracy=1.0), grid=GRID3)
    assert not choice.feasible and "accuracy" in choice.note
    assert choice.thresholds == (0.6, 0.6, 0.9)  # the most accurate point, cheapest of those
    choice = choose_thresholds(table, Objective("max_accuracy", max_tflops=10), grid=GRID3)
    assert not choice.feasible and "cheapest" in choice.note and choice.bound == 10
    assert choice.thresholds == (0.3, 0.3, 0.9) and choice.mean_tflops == pytest.approx(25.0)


def test_stage0_fallback_objective():
    table = crafted_table()
    choice = choose_thresholds(table, Objective("max_accuracy", stage0="fallback"), grid=GRID3)
    # stage 0 never stops: τ_1 = 0.3 makes C stop wrongly at stage 1, so the best is 3/4 with
    # τ_1 = 0.6: A 200 (stage 2 or the fallback to stage 0: τ_2 does not matter, ties -> 0.9),
    # B 100, C 300, D 200 (fallback to stage 0, wrong)
    assert choice.thresholds == (NEVER, 0.6, 0.9)
    assert choice.accuracy == 0.75 and choice.mean_tflops == pytest.approx(200.0)
    assert not choice.result.early[choice.result.stage == 0].any()


def test_per_stage_is_grid_search_threshold_per_stage():
    rng = np.random.default_rng(6)
    table = random_table(rng, 300, 4)
    choice = choose_thresholds(table, Objective("per_stage"))
    expected = tuple(
        grid_search_threshold(table.scores[table.usable[:, t], t], table.correct[table.usable[:, t], t])
        for t in range(4)
    )
    assert choice.thresholds == expected
    assert len(set(expected)) > 1  # not a degenerate table
    assert choice.accuracy == replay(table, expected).accuracy
    choice = choose_thresholds(table, Objective("per_stage", stage0="fallback"))
    assert choice.thresholds == (NEVER, *expected[1:])


def test_objective_validation_and_round_trip():
    for bad in (
        dict(kind="min_cost"),
        dict(kind="min_cost", min_accuracy=0.5, min_accuracy_fraction=0.9),
        dict(kind="min_cost", min_accuracy=0.5, max_tflops=3),
        dict(kind="max_accuracy", min_accuracy=0.5),
        dict(kind="max_accuracy", max_tflops=1, max_cost_fraction=0.5),
        dict(kind="per_stage", max_tflops=1),
        dict(kind="max_accuracy", max_cost_fraction=0),
        dict(kind="min_cost", min_accuracy=1.5),
        dict(kind="best"),
        dict(kind="max_accuracy", stage0="skip"),
    ):
        with pytest.raises(ValueError):
            Objective(**bad)
    o = Objective("min_cost", min_accuracy_fraction=0.95, stage0="fallback")
    assert Objective.from_dict(json.loads(json.dumps(o.to_dict()))) == o
    with pytest.raises(ValueError, match="unknown"):
        Objective.from_dict({"kind": "per_stage", "tau": 1})


# --- pareto front ---------------------------------------------------------------------------------
def test_pareto_front_is_non_dominated_and_complete():
    rng = np.random.default_rng(7)
    table = random_table(rng, 400, 3)
    g = threshold_grid(table, grid=(0.1, 0.3, 0.5, 0.7, 0.9))
    front = pareto_front(g)
    acc, cost = g.accuracy.ravel(), g.mean_tflops.ravel()
    assert len(front) >= 3
    costs = [p.mean_tflops for p in front]
    assert costs == sorted(costs)
    assert len({(p.accuracy, p.mean_tflops) for p in front}) == len(front)
    for p in front:
        dominated = (
            (acc >= p.accuracy) & (cost <= p.mean_tflops) & ((acc > p.accuracy) | (cost < p.mean_tflops))
        )
        assert not dominated.any()
        r = replay(table, p.thresholds)
        assert r.accuracy == p.accuracy and r.mean_tflops == pytest.approx(p.mean_tflops, rel=1e-12)
    # every grid point is matched or beaten by a front point
    fa = np.array([p.accuracy for p in front])
    fc = np.array([p.mean_tflops for p in front])
    assert all(((fa >= a) & (fc <= c)).any() for a, c in zip(acc, cost))
    best = choose_thresholds(table, Objective("max_accuracy"), grid=g.axes[0], grid_result=g)
    cheapest = choose_thresholds(
        table, Objective("min_cost", min_accuracy=0.0), grid=g.axes[0], grid_result=g
    )
    points = [p.thresholds for p in front]
    assert best.thresholds in points and cheapest.thresholds in points
    assert front[0].thresholds == cheapest.thresholds and front[-1].thresholds == best.thresholds
    assert json.loads(json.dumps([p.to_dict() for p in front]))[0]["thresholds"] == list(front[0].thresholds)


# --- the table ------------------------------------------------------------------------------------
def test_stage_table_validation():
    ok = dict(
        scores=[[0.5, 0.5]],
        correct=[[True, False]],
        mentor_tokens=[[0, 10]],
        intern_tokens=[[1, 1]],
        mentor_params=1.0,
        intern_params=1.0,
    )
    StageTable(**ok)
    for change, message in (
        (dict(scores=[[NAN, 0.5]]), "stage 0"),
        (dict(scores=[[0.5, 1.5]]), r"\[0, 1\]"),
        (dict(scores=[0.5, 0.5]), "shape"),
        (dict(correct=[[True, False, True]]), "shape"),
        (dict(correct=[[0.5, 1.0]]), "bool"),
        (dict(mentor_tokens=[[0, -1]]), ">= 0"),
        (dict(mentor_tokens=[[5, 10]]), "0 at stage 0"),
        (dict(intern_tokens=[[1, NAN]]), "finite"),
        (dict(mentor_params=-1.0), "mentor_params"),
    ):
        with pytest.raises(ValueError, match=message):
            StageTable(**{**ok, **change})
    with pytest.raises(ValueError, match="non-decreasing"):
        StageTable(
            **{
                **ok,
                "scores": [[0.5, 0.5, 0.5]],
                "correct": [[1, 0, 0]],
                "mentor_tokens": [[0, 10, 5]],
                "intern_tokens": [[1, 1, 1]],
            }
        )
    table = StageTable(**{**ok, "correct": [[1, 0]]})
    assert table.correct.dtype == np.bool_
    with pytest.raises(ValueError):
        table.scores[0, 0] = 0.9  # frozen arrays
    assert table.with_scores([[0.1, NAN]]).usable.tolist() == [[True, False]]
    with pytest.raises(ValueError, match="thresholds for"):
        replay(table, [0.5])


def test_route_is_one_decision_at_stage_zero_then_the_last_stage():
    from tandem_lm_eval.calibration.objectives import Objective, choose_route_threshold
    from tandem_lm_eval.calibration.replay import route

    table = StageTable(
        scores=np.array([[0.9, 0.1, 0.1], [0.2, 0.99, 0.1], [0.3, 0.1, 0.5]]),
        correct=np.array([[True, False, False], [False, True, False], [False, False, True]]),
        mentor_tokens=np.array([[0, 10, 30], [0, 10, 20], [0, 10, 30]]),
        intern_tokens=np.array([[5, 5, 5], [7, 7, 7], [9, 9, 9]]),
        mentor_params=100.0,
        intern_params=10.0,
    )
    r = route(table, 0.5)
    # q0 stays with the intern; q1 goes to the last stage although stage 1 scored 0.99 (no scoring
    # in between, no argmax); the mentor is paid the whole budget for q1 and q2
    assert r.stage.tolist() == [0, 2, 2] and r.early.tolist() == [True, False, False]
    assert r.correct.tolist() == [True, False, True] and r.mentor_paid.tolist() == [0, 20, 30]
    assert r.tflops[1] == pytest.approx(2e-12 * (100 * 20 + 10 * (20 + 7)))
    # a tau_0 above every s_0 sends everything to the mentor: fixed:2
    assert route(table, 0.95).stage.tolist() == [2, 2, 2]
    choice = choose_route_threshold(table, Objective("max_accuracy"))
    # tau_0 in [0.30, 0.85] keeps only q0 with the intern: 2 of 3 correct, the cheapest such point
    # (ties go to the higher threshold) is tau_0 = 0.85; thresholds after stage 0 never stop
    assert choice.result.accuracy == pytest.approx(2 / 3) and choice.thresholds == (0.85, 1.0, 1.0)
    with pytest.raises(ValueError, match="one threshold"):
        choose_route_threshold(table, Objective("per_stage"))
    # one τ_0 per question (a per-group router): each question decides by its own
    per_question = route(table, np.array([0.95, 0.1, 0.95]))
    assert per_question.stage.tolist() == [2, 0, 2] and per_question.early.tolist() == [False, True, False]
    with pytest.raises(ValueError, match="one per question"):
        route(table, np.array([0.5, 0.5]))
