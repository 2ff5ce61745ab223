"""Threshold objectives that transfer to unseen questions: the one-standard-error rule and the
cross-validated choice (thresholds on every training question, scored out of fold)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from test_fitting import make_records, settings

from tandem_lm_eval.calibration.fitting import (
    FitSettings,
    fit_records,
    fold_of_questions,
    out_of_fold_scores,
    split_questions,
)
from tandem_lm_eval.calibration.objectives import (
    Objective,
    choose_route_threshold,
    choose_thresholds,
    one_se_floor,
)
from tandem_lm_eval.calibration.replay import StageTable, replay
from tandem_lm_eval.calibration.tables import TableError, row_table, stage_table
from tandem_lm_eval.cli.commands import run_subcommand
from tandem_lm_eval.data.records import write_records
from tandem_lm_eval.judgment.loading import load_classifier_folder


# --- the one-standard-error rule on tables with a known answer --------------------------------------
def two_stage_table() -> StageTable:
    """100 questions, stage 0 (alone) and stage 1 (after the mentor). Questions 20-49 look easy
    (s_0 = 0.9), the others not (0.1); s_1 = 0.6 everywhere. Stage 1 is right for questions 0-49,
    stage 0 for 20-46. Stopping the easy-looking ones at stage 0 loses 3 of 50 correct answers and
    saves the mentor for 30 questions."""
    q = 100
    s0 = np.where((np.arange(q) >= 20) & (np.arange(q) < 50), 0.9, 0.1)
    correct0 = (np.arange(q) >= 20) & (np.arange(q) < 47)
    correct1 = np.arange(q) < 50
    return StageTable(
        scores=np.stack([s0, np.full(q, 0.6)], axis=1),
        correct=np.stack([correct0, correct1], axis=1),
        mentor_tokens=np.tile([0.0, 100.0], (q, 1)),
        intern_tokens=np.full((q, 2), 10.0),
        mentor_params=32e9,
        intern_params=7e9,
    )


def test_one_se_takes_the_cheapest_vector_within_one_standard_error_of_the_best():
    table, grid = two_stage_table(), (0.5, 0.95)
    best = choose_thresholds(table, Objective("max_accuracy"), grid)
    # the most accurate: never stop at stage 0, stop at stage 1 (s_1 = 0.6 > 0.5): 50 of 100
    assert best.thresholds == (0.95, 0.5) and best.accuracy == pytest.approx(0.50)
    # one SE of 0.50 over 100 questions is 0.05: 0.47 counts as as good, and stopping the
    # easy-looking questions at stage 0 saves 30% of the mentor
    se = choose_thresholds(table, Objective("one_se"), grid)
    assert se.bound == pytest.approx(0.50 - 0.05) == one_se_floor(0.50, 100)
    assert se.thresholds[0] == 0.5 and se.accuracy == pytest.approx(0.47)
    assert se.mean_mentor_tokens == pytest.approx(70.0) and se.mean_tflops < best.mean_tflops
    # 30 questions stopped before the last stage; max_accuracy's stops all come at the last one
    assert se.result.stopped_before_last_rate == pytest.approx(0.30)
    assert best.result.early_rate == 1.0 and best.result.stopped_before_last_rate == 0.0
    assert se.to_dict()["objective"]["kind"] == "one_se"
    # half a standard error (0.025): 0.47 is no longer as good, the rule keeps the best
    half = choose_thresholds(table, Objective("one_se", se_multiplier=0.5), grid)
    assert half.thresholds == best.thresholds and half.bound == pytest.approx(0.475)
    # zero: exactly max_accuracy
    assert choose_thresholds(table, Objective("one_se", se_multiplier=0), grid).thresholds == best.thresholds


def test_one_se_equals_a_brute_force_over_every_vector():
    rng = np.random.default_rng(7)
    q, t = 120, 3
    correct = rng.random((q, t)) < np.array([0.1, 0.3, 0.45])
    scores = np.clip(0.5 * correct + rng.random((q, t)) * 0.6, 0, 1)
    table = StageTable(
        scores,
        correct,
        np.tile([0.0, 50.0, 150.0], (q, 1)),
        rng.integers(20, 200, (q, t)).astype(float),
        32e9,
        7e9,
    )
    grid = (0.2, 0.4, 0.6, 0.8)
    for objective in (Objective("one_se"), Objective("one_se", max_cost_fraction=0.7)):
        results = {v: replay(table, v) for v in itertools.product(grid, repeat=t)}
        cap = None if objective.max_cost_fraction is None else 0.7 * replay(table, (1.0,) * t).mean_tflops
        allowed = {v: r for v, r in results.items() if cap is None or r.mean_tflops <= cap * (1 + 1e-12)}
        top = max(r.accuracy for r in allowed.values())
        floor = top - np.sqrt(top * (1 - top) / q)
        within = [(r.mean_tflops, -r.accuracy, v) for v, r in allowed.items() if r.accuracy >= floor - 1e-12]
        cheapest_cost = min(c for c, _, _ in within)
        expected = [v for c, a, v in within if c <= cheapest_cost * (1 + 1e-9)]
        choice = choose_thresholds(table, objective, grid)
        assert choice.thresholds in expected, objective
        assert choice.mean_tflops == pytest.approx(cheapest_cost)
        assert choice.accuracy >= floor - 1e-12 and choice.feasible


def test_one_se_for_the_router_and_its_refusals():
    table = two_stage_table()
    route = choose_route_threshold(table, Objective("one_se"), grid=(0.5, 0.95))
    assert route.thresholds == (0.5, 1.0) and route.accuracy == pytest.approx(0.47)
    with pytest.raises(ValueError, match="se_multiplier is for the one_se objective"):
        Objective("max_accuracy", se_multiplier=2.0)
    with pytest.raises(ValueError, match="se_multiplier must be a finite number >= 0"):
        Objective("one_se", se_multiplier=-1.0)
    with pytest.raises(ValueError, match="one_se takes a cost cap, not an accuracy floor"):
        Objective("one_se", min_accuracy=0.5)
    # cards written before se_multiplier existed still load
    old = {"kind": "max_accuracy", "max_tflops": None, "max_cost_fraction": None}
    old |= {"min_accuracy": None, "min_accuracy_fraction": None, "stage0": "stop"}
    assert Objective.from_dict(old) == Objective("max_accuracy")


# --- the cross-validated choice ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def records():
    return make_records(200, seed=1)


def test_folds_keep_questions_whole_are_stratified_and_seeded(records):
    fold = fold_of_questions(records, 5, 42)
    assert sorted(np.bincount(fold).tolist()) == [40] * 5
    solvable = np.array([any(s.label for s in r.stages) for r in records])
    for k in range(5):
        assert 0 < solvable[fold == k].mean() < 1  # every fold sees both kinds
    assert (fold == fold_of_questions(records, 5, 42)).all()
    assert not (fold == fold_of_questions(records, 5, 43)).all()
    with pytest.raises(TableError, match="at least 2 folds"):
        fold_of_questions(records, 1, 42)


def test_out_of_fold_scores_come_from_classifiers_that_never_saw_the_question(records, monkeypatch):
    """A spy estimator (a unit double for the real ones) remembers the feature rows it was fit on
    and scores a row 1.0 when it saw it, 0.0 when not: every out-of-fold score must be 0.0."""
    seen_by_model: list[set] = []

    class Memorizer:
        def fit(self, X, y, X_val=None, y_val=None):
            seen_by_model.append({tuple(x) for x in X})
            self.seen = seen_by_model[-1]
            return self

        def sufficiency(self, X):
            return np.array([1.0 if tuple(x) in self.seen else 0.0 for x in X])

    monkeypatch.setattr(
        "tandem_lm_eval.calibration.fitting.make_classifier", lambda kind, spec=None, **kw: Memorizer()
    )
    rows = row_table(records, "question_insights")
    oof = out_of_fold_scores(records, rows, settings("logistic"))
    assert len(seen_by_model) == 5 and not np.isnan(oof).any()
    assert (oof == 0.0).all()  # no row was scored by a model that trained on its question
    # and together the five models saw every row (each row in exactly four of them)
    every = {tuple(x) for x in rows.X}
    assert set().union(*seen_by_model) == every


def test_cv_rows_choose_thresholds_on_every_training_question(records):
    clf, report = fit_records(
        records, settings("logistic", threshold_rows="cv", objective=Objective("one_se"))
    )
    assert report["threshold_choice"]["summary"]["questions"] == 200  # train + validation
    assert "baselines_on_cv" in report
    assert clf.card.threshold_objective["rows"] == "cv" and clf.card.threshold_objective["folds"] == 5
    assert clf.card.threshold_objective["kind"] == "one_se"
    # the classifier itself is the one fit on the 70% (as with validation rows): same scores
    plain, _ = fit_records(records, settings("logistic"))
    x = row_table(records[:5], "question_insights").X
    np.testing.assert_allclose(clf.sufficiency(x), plain.sufficiency(x))
    # the thresholds are one_se's choice on the out-of-fold table of all 200 questions
    val_mask = split_questions(records, 0.3, 42)
    tune = [r for r, v in zip(records, val_mask) if not v] + [r for r, v in zip(records, val_mask) if v]
    rows = row_table(tune, "question_insights")
    oof = out_of_fold_scores(tune, rows, settings("logistic"))
    table = stage_table(tune, lambda r: oof, rows)
    assert tuple(clf.card.thresholds) == choose_thresholds(table, Objective("one_se")).thresholds


def test_cv_rows_refused_for_a_judge_whose_adapter_learnt_the_training_labels(records):
    from tandem_lm_eval.judgment.judges import HiddenReading, JudgeSpec

    reading = HiddenReading(layer=2, num_layers=2, hidden_size=4, adapter={"sha256": "0" * 64})
    lora = settings("logistic", threshold_rows="cv", judge=JudgeSpec("hidden_lora", hidden=reading))
    with pytest.raises(TableError, match="does not suit a hidden_lora judge"):
        fit_records(records, lora)


def test_cross_validated_rows_are_the_default(tmp_path, capsys):
    """The default decided in docs/judgment-study.md: max_accuracy over out-of-fold scores."""
    assert FitSettings().threshold_rows == "cv" and FitSettings().objective == Objective("max_accuracy")
    path = tmp_path / "records.jsonl"
    write_records(path, make_records(60, seed=12))
    out = tmp_path / "clf"
    assert run_subcommand(["fit", "--records", str(path), "--out", str(out), "--kind", "logistic"]) == 0
    card = load_classifier_folder(out).card
    assert card.threshold_objective["rows"] == "cv" and card.threshold_objective["kind"] == "max_accuracy"
    assert json.loads((out / "fit_report.json").read_text())["threshold_choice"]["summary"]["questions"] == 60


def test_fit_subcommand_one_se_cv_and_its_refusals(tmp_path, capsys):
    path = tmp_path / "records.jsonl"
    write_records(path, make_records(80, seed=10))
    out = tmp_path / "clf"
    rc = run_subcommand(
        ["fit", "--records", str(path), "--out", str(out), "--kind", "logistic", "--objective", "one_se"]
        + ["--se-multiplier", "0.5", "--threshold-rows", "cv", "--cv-folds", "4"]
    )
    assert rc == 0, capsys.readouterr().err
    card = load_classifier_folder(out).card
    assert card.threshold_objective["kind"] == "one_se" and card.threshold_objective["se_multiplier"] == 0.5
    assert card.threshold_objective["rows"] == "cv" and card.threshold_objective["folds"] == 4
    assert "training questions, scored out of fold" in (out / "README.md").read_text()
    assert json.loads((out / "fit_report.json").read_text())["threshold_choice"]["summary"]["questions"] == 80
    for bad, message in (
        (["--se-multiplier", "2"], "se_multiplier is for the one_se objective"),
        (["--threshold-rows", "validation", "--cv-folds", "3"], "--cv-folds is for --threshold-rows cv"),
        (["--threshold-rows", "cv", "--cv-folds", "1"], "--cv-folds must be at least 2"),
        # refused before the adapter is trained (hours on a CPU): it learns the training questions' labels
        (["--features", "hidden_lora", "--threshold-rows", "cv"], "--threshold-rows cv does not suit"),
    ):
        rc = run_subcommand(["fit", "--records", str(path), "--out", str(tmp_path / "bad"), *bad])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and "Traceback" not in err, bad
        assert not (tmp_path / "bad").exists()
