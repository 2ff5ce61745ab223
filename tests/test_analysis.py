"""``analyze``: the held-out report of a classifier from records alone (analysis.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_fitting import (
    INTERN_PARAMS,
    MENTOR_PARAMS,
    NUM_STAGES,
    SPAN,
    hand_table,
    hashes,
    make_records,
    settings,
)

from tandem_lm_eval.calibration.analysis import (
    analyze_records,
    bootstrap_auc,
    replay_each,
    routing_categories,
    to_markdown,
    trace_summary,
)
from tandem_lm_eval.calibration.fitting import fit_records
from tandem_lm_eval.calibration.replay import StageTable, fixed_stage, intern_only, oracle, replay
from tandem_lm_eval.cascade.policies.base import select_stage
from tandem_lm_eval.cli.commands import run_subcommand
from tandem_lm_eval.cost.flops import tflops as eq12
from tandem_lm_eval.data.records import QuestionRecord, StageEntry, write_records

UNUSABLE = frozenset({3, 10, 17, 40})  # held-out questions whose stage 3 did not fit the intern


@pytest.fixture(scope="module")
def train_records():
    return make_records(200, seed=21, prefix="train")


@pytest.fixture(scope="module")
def clf(train_records):
    clf, _ = fit_records(train_records, settings("logistic"))
    return clf


@pytest.fixture(scope="module")
def held_out():
    return make_records(150, seed=22, prefix="heldout", split="test", unusable=UNUSABLE)


@pytest.fixture(scope="module")
def report(clf, held_out):
    return analyze_records(held_out, clf, resamples=200, importance_repeats=3)


def _table(scores, correct, mentor=None, intern=None) -> StageTable:
    scores = np.array(scores, dtype=float)
    Q, T = scores.shape
    mentor = np.tile(np.arange(T) * 10.0, (Q, 1)) if mentor is None else np.array(mentor, dtype=float)
    intern = np.full((Q, T), 5.0) if intern is None else np.array(intern, dtype=float)
    return StageTable(scores, np.array(correct, dtype=bool), mentor, intern, 100.0, 10.0)


# --- routing categories (Table 14) -------------------------------------------------------------------------
def test_routing_categories_hand_counted():
    F, T_ = False, True
    nan = np.nan
    table = _table(
        scores=[
            [0.1, 0.9, 0.2],  # q0: stops at 1, right -> correct routing
            [0.9, 0.1, 0.1],  # q1: stops at 0, wrong, stage 2 right -> premature
            [0.1, 0.2, 0.9],  # q2: stops at 2, wrong, only stage 0 right -> late
            [0.1, 0.2, 0.3],  # q3: falls back to 2, nothing right -> unsolvable
            [0.9, 0.1, 0.1],  # q4: stops at 0, right -> correct routing
            [0.1, nan, 0.2],  # q5: stage 1 "right" but unusable -> unsolvable
            [0.1, 0.9, 0.2],  # q6: stops at 1, wrong, right before and after -> premature
        ],
        correct=[
            [F, T_, T_],
            [F, F, T_],
            [T_, F, F],
            [F, F, F],
            [T_, T_, T_],
            [F, T_, F],
            [T_, F, T_],
        ],
    )
    result = replay(table, [0.5, 0.5, 0.5])
    assert result.stage.tolist() == [1, 0, 2, 2, 0, 2, 1]  # the routing the comments assume
    out = routing_categories(table, result)
    counts = {k: v["count"] for k, v in out.items() if k != "oracle_accuracy"}
    assert counts == {"correct_routing": 2, "premature_stop": 2, "late_stop": 1, "unsolvable": 2}
    assert out["late_stop"]["percent"] == pytest.approx(100 / 7)
    assert out["correct_routing"]["percent"] == pytest.approx(200 / 7)
    assert out["oracle_accuracy"] == pytest.approx(5 / 7)


# --- bootstrap AUC -------------------------------------------------------------------------------------------
def test_bootstrap_auc_matches_sklearn_and_narrows_with_more_rows():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)

    def sample(n):
        y = rng.integers(0, 2, n)
        return y, 1 / (1 + np.exp(-(1.2 * y + rng.normal(0, 1, n) - 0.6)))

    widths = []
    for n in (60, 2000):
        y, s = sample(n)
        out = bootstrap_auc(y, s, resamples=300, seed=1)
        assert out["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert out["low"] < out["auc"] < out["high"]
        assert out["rows"] == n and out["positives"] == int(y.sum())
        widths.append(out["high"] - out["low"])
    assert widths[1] < widths[0] / 3  # ~ 1/sqrt(n): 5.8x narrower expected
    assert bootstrap_auc(y, s, resamples=50, seed=1) == bootstrap_auc(y, s, resamples=50, seed=1)
    one_class = bootstrap_auc(np.ones(10, dtype=int), np.linspace(0, 1, 10))
    assert one_class["auc"] is None and one_class["positives"] == 10


# --- analyze_records ----------------------------------------------------------------------------------------
def _held_out_rows(records):
    X, y, stage = [], [], []
    for r in records:
        for st in r.stages:
            if st.usable:
                X.append(st.features[SPAN])
                y.append(st.label)
                stage.append(st.stage)
    return np.array(X), np.array(y), np.array(stage)


def test_held_out_records_are_new_questions(train_records, held_out, clf):
    assert hashes(held_out).isdisjoint(clf.card.training_questions)
    assert clf.card.training_questions == hashes(train_records)
    assert sum(not st.usable for r in held_out for st in r.stages) == len(UNUSABLE)


def test_per_stage_precision_recall_f1_match_sklearn(report, clf, held_out):
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    X, y, stage = _held_out_rows(held_out)
    s = clf.sufficiency(X)
    assert report["rows"] == len(y) == NUM_STAGES * len(held_out) - len(UNUSABLE)
    assert report["questions"] == len(held_out)
    assert report["classifier"]["thresholds"] == list(clf.card.thresholds)  # one vector: flat
    for t in range(NUM_STAGES):
        m = stage == t
        pred = s[m] > clf.card.thresholds[t]
        got = report["per_stage"][str(t)]
        assert got["rows"] == m.sum()
        assert got["positive_rate"] == pytest.approx(y[m].mean())
        assert got["predicted_sufficient"] == pytest.approx(pred.mean())
        assert got["precision"] == pytest.approx(precision_score(y[m], pred, zero_division=0))
        assert got["recall"] == pytest.approx(recall_score(y[m], pred, zero_division=0))
        assert got["f1"] == pytest.approx(f1_score(y[m], pred, zero_division=0))
        assert got["auc_auc"] == pytest.approx(roc_auc_score(y[m], s[m]))
    assert report["auc_all_rows"]["auc"] == pytest.approx(roc_auc_score(y, s))
    assert report["auc_all_rows"]["auc"] > 0.7
    assert report["calibration"]["brier"] == pytest.approx(np.mean((s - y) ** 2))


def test_policies_equal_independent_replays(report, clf, held_out):
    table = hand_table(held_out, clf.sufficiency)
    expected = {
        "intern_only": intern_only(table),
        "fixed:1": fixed_stage(table, 1),
        "fixed:2": fixed_stage(table, 2),
        "fixed:3": fixed_stage(table, 3),
        "oracle": oracle(table),
        "tandem": replay(table, clf.card.thresholds),
    }
    assert set(report["policies"]) == set(expected)
    for name, result in expected.items():
        got = report["policies"][name]
        assert got["accuracy"] == pytest.approx(result.accuracy), name
        assert got["mean_tflops"] == pytest.approx(result.mean_tflops), name
        assert got["mean_mentor_tokens"] == pytest.approx(result.mean_mentor_tokens), name

    # and by hand, from the records themselves
    labels0 = [r.stages[0].label for r in held_out]
    assert report["policies"]["intern_only"]["accuracy"] == pytest.approx(np.mean(labels0))
    intern0 = np.array([r.stages[0].intern_tokens for r in held_out])
    assert report["policies"]["intern_only"]["mean_tflops"] == pytest.approx(
        np.mean(2e-12 * INTERN_PARAMS * intern0)
    )
    # fixed:3 answers from stage 2 where stage 3 did not fit, but pays the mentor's stage 3 tokens
    answered = [r.stages[2 if i in UNUSABLE else 3] for i, r in enumerate(held_out)]
    assert report["policies"]["fixed:3"]["accuracy"] == pytest.approx(np.mean([s.label for s in answered]))
    mentor3 = np.array([r.stages[3].mentor_tokens for r in held_out])
    expected_tflops = eq12(
        MENTOR_PARAMS, INTERN_PARAMS, mentor3, np.array([s.intern_tokens for s in answered])
    )
    assert report["policies"]["fixed:3"]["mean_tflops"] == pytest.approx(np.mean(expected_tflops))
    solvable = [any(st.label for st in r.stages if st.usable) for r in held_out]
    assert report["policies"]["oracle"]["accuracy"] == pytest.approx(np.mean(solvable))
    assert report["routing"]["oracle_accuracy"] == pytest.approx(np.mean(solvable))

    # tandem, question by question with the live stop rule (unusable stage read as -1, as Cascade does)
    stages = [
        select_stage([-1.0 if np.isnan(v) else v for v in row], clf.card.thresholds)[0]
        for row in table.scores
    ]
    tandem_acc = np.mean([table.correct[q, t] for q, t in enumerate(stages)])
    assert report["policies"]["tandem"]["accuracy"] == pytest.approx(tandem_acc)
    dist = np.bincount(stages, minlength=NUM_STAGES) / len(stages)
    got_dist = report["policies"]["tandem"]["stage_distribution"]
    assert [got_dist[str(t)] for t in range(NUM_STAGES)] == pytest.approx(dist.tolist())

    routing = report["routing"]
    total = sum(routing[k]["count"] for k in ("correct_routing", "premature_stop", "late_stop", "unsolvable"))
    assert total == len(held_out)
    assert routing["correct_routing"]["count"] == round(tandem_acc * len(held_out))
    assert routing["unsolvable"]["count"] == len(held_out) - sum(solvable)


def test_permutation_importance_ranks_the_informative_feature_first(report):
    ranked = report["permutation_importance"]
    assert len(ranked) == 17
    assert ranked[0]["feature"] == "entropy_mean"
    assert ranked[0]["auc_drop"] > 0.1 and ranked[0]["auc_drop"] > 5 * abs(ranked[1]["auc_drop"])
    drops = [v["auc_drop"] for v in ranked]
    assert drops == sorted(drops, reverse=True)


# ReplayResult.summary() gives stage_distribution as a dict {"0": share, ...}; to_markdown formats its
# items as floats, so it raises on the keys. Strict: these fail once the bug is fixed, so the markers go.


def test_to_markdown_contains_the_tables(report):
    md = to_markdown(report, title="Held out")
    assert md.startswith("# Held out\n")
    for heading in ("## Per stage (Table 9)", "## Routing (Table 14)", "## Accuracy and cost, replayed"):
        assert heading in md
    assert (
        "| stage | rows | sufficient | predicted sufficient | precision | recall | F1 | AUC [95% CI] |" in md
    )
    for name in ("intern_only", "fixed:1", "fixed:3", "oracle", "tandem"):
        assert f"| {name} | {report['policies'][name]['accuracy']:.3f} |" in md
    assert f"| premature stop | {report['routing']['premature_stop']['count']} |" in md
    assert "| entropy_mean |" in md
    f1 = report["per_stage"]["2"]["f1"]
    assert f"| {f1:.3f} |" in md


# --- per-question thresholds ---------------------------------------------------------------------------------
def test_replay_each_equals_replaying_each_group_separately():
    rng = np.random.default_rng(3)
    Q, T = 40, 4
    scores = rng.uniform(0, 1, (Q, T))
    scores[5, 2] = np.nan
    correct = rng.uniform(0, 1, (Q, T)) < 0.5
    mentor = np.cumsum(np.c_[np.zeros(Q), rng.integers(0, 30, (Q, T - 1))], axis=1)
    intern = rng.integers(10, 100, (Q, T)).astype(float)
    table = StageTable(scores, correct, mentor, intern, MENTOR_PARAMS, INTERN_PARAMS)
    tau = {"a": (0.9, 0.8, 0.7, 0.6), "b": (0.2, 0.3, 0.95, 0.95)}
    groups = ["a" if q % 3 else "b" for q in range(Q)]
    merged = replay_each(table, [tau[g] for g in groups])
    for g, vector in tau.items():
        idx = np.array([q for q in range(Q) if groups[q] == g])
        sub = StageTable(scores[idx], correct[idx], mentor[idx], intern[idx], MENTOR_PARAMS, INTERN_PARAMS)
        alone = replay(sub, vector)
        for name in ("stage", "early", "correct", "mentor_paid", "intern_tokens", "tflops"):
            np.testing.assert_array_equal(getattr(merged, name)[idx], getattr(alone, name), err_msg=name)
    # and each question's stage is the live rule under its own thresholds
    for q in range(Q):
        row = [-1.0 if np.isnan(v) else v for v in scores[q]]
        assert (merged.stage[q], merged.early[q]) == select_stage(row, tau[groups[q]])
    # the two vectors really route differently (otherwise this test could not fail)
    assert (replay(table, tau["a"]).stage != replay(table, tau["b"]).stage).any()
    # one vector for all: plain replay
    same = replay_each(table, [tau["a"]] * Q)
    np.testing.assert_array_equal(same.stage, replay(table, tau["a"]).stage)


def test_analyze_per_group_classifier_uses_each_groups_thresholds():
    train = make_records(120, seed=31, prefix="pg-train")
    clf, _ = fit_records(train, settings("logistic", per_group=True, min_group_questions=30))
    for g, tau in (("a", [0.05] * 4), ("b", [0.95, 0.95, 0.95, 0.05])):
        clf.members[g].card.thresholds = tau
    held = make_records(60, seed=32, prefix="pg-test")
    report = analyze_records(held, clf, resamples=20, importance_repeats=1)
    assert sorted(report["classifier"]["thresholds"]) == [[0.05] * 4, [0.95, 0.95, 0.95, 0.05]]
    by_group = {g: [r for r in held if r.group == g] for g in ("a", "b")}
    correct, counts, stage0 = 0, np.zeros(NUM_STAGES), {}
    for g, recs in by_group.items():
        member = clf.members[g]
        result = replay(hand_table(recs, member.sufficiency), member.card.thresholds)
        correct += result.correct.sum()
        counts += np.bincount(result.stage, minlength=NUM_STAGES)
        stage0[g] = (result.stage == 0).mean()
    assert stage0["a"] > stage0["b"] + 0.2  # the groups' thresholds route differently
    assert report["policies"]["tandem"]["accuracy"] == pytest.approx(correct / len(held))
    dist = report["policies"]["tandem"]["stage_distribution"]
    assert [dist[str(t)] for t in range(NUM_STAGES)] == pytest.approx((counts / len(held)).tolist())
    X, y, stage = _held_out_rows(held)
    groups = [r.group for r in held for _ in r.stages]
    tau = np.array([clf.members[g].card.thresholds[t] for g, t in zip(groups, stage)])
    s = np.array([clf.members[g].sufficiency(X[i : i + 1])[0] for i, g in enumerate(groups)])
    m = stage == 2
    assert report["per_stage"]["2"]["predicted_sufficient"] == pytest.approx(np.mean(s[m] > tau[m]))


# --- the analyze subcommand ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clf_folder(clf, tmp_path_factory):
    return clf.save(tmp_path_factory.mktemp("clf") / "logistic")


def test_analyze_subcommand_writes_markdown_and_json(tmp_path, clf_folder, held_out, report, capsys):
    path = tmp_path / "heldout.jsonl"
    write_records(path, held_out)
    out = tmp_path / "reports" / "heldout"
    argv = ["analyze", "--records", str(path), "--classifier", str(clf_folder), "--out", str(out)]
    rc = run_subcommand([*argv, "--resamples", "50"])
    assert rc == 0, capsys.readouterr().err
    assert f"wrote {out}.md and {out}.json" in capsys.readouterr().out
    data = json.loads(out.with_suffix(".json").read_text())
    md = out.with_suffix(".md").read_text()
    assert "## Routing (Table 14)" in md and "| tandem |" in md
    for name in report["policies"]:
        assert data["policies"][name]["accuracy"] == pytest.approx(report["policies"][name]["accuracy"])
        assert data["policies"][name]["mean_tflops"] == pytest.approx(report["policies"][name]["mean_tflops"])
    assert data["routing"] == report["routing"]
    assert data["permutation_importance"][0]["feature"] == "entropy_mean"


def test_analyze_subcommand_refuses_training_questions(tmp_path, clf_folder, held_out, train_records, capsys):
    path = tmp_path / "mixed.jsonl"
    mixed = list(held_out) + list(train_records[:3])
    write_records(path, mixed)
    argv = ["analyze", "--records", str(path), "--classifier", str(clf_folder), "--resamples", "20"]
    assert run_subcommand([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"3 of {len(mixed)} questions are among the classifier's training questions" in err
    assert "--allow-training-overlap" in err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.md").exists()


def test_analyze_subcommand_allows_training_overlap_when_asked(
    tmp_path, clf_folder, held_out, train_records, capsys
):
    path = tmp_path / "mixed.jsonl"
    mixed = list(held_out) + list(train_records[:3])
    write_records(path, mixed)
    argv = ["analyze", "--records", str(path), "--classifier", str(clf_folder), "--resamples", "20"]
    rc = run_subcommand([*argv, "--out", str(tmp_path / "r"), "--allow-training-overlap"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["questions"] == len(mixed)


def test_analyze_refuses_a_classifier_made_for_another_intern(tmp_path, clf_folder, held_out, capsys):
    """lm_eval's rule (judgment/card.py: intern_mismatch) in analyze too: records of another intern."""
    import dataclasses

    path = tmp_path / "other.jsonl"
    write_records(path, [dataclasses.replace(r, intern_model="Qwen3-1.7B") for r in held_out])
    argv = ["analyze", "--records", str(path), "--classifier", str(clf_folder), "--resamples", "20"]
    assert run_subcommand([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "it was trained for intern" in err and "'qwen3-1.7b'" in err and "--no-classifier-strict" in err
    assert not (tmp_path / "r.json").exists()
    assert run_subcommand([*argv, "--out", str(tmp_path / "r"), "--no-classifier-strict"]) == 0
    assert (tmp_path / "r.json").exists()


def _trace_records() -> list[QuestionRecord]:
    """Five lm_eval trace records (unlabelled): chosen stage, early stop and cost each."""
    chosen = [0, 1, 1, 3, 2]
    early = [True, True, True, False, True]
    costs = [(0.5, 0, 100), (2.0, 24, 120), (2.5, 24, 80), (7.0, 96, 60), (4.0, 48, 90)]
    out = []
    for i, (c, e, (tf, mt, it)) in enumerate(zip(chosen, early, costs)):
        n = NUM_STAGES if not e else c + 1  # the cascade stops scoring at the chosen stage
        stages = [StageEntry(stage=t, mentor_tokens=[0, 24, 48, 96][t], score=0.3) for t in range(n)]
        stages[c].answer, stages[c].intern_tokens = "42", it
        out.append(
            QuestionRecord(
                question_hash=f"trace{i:011d}",
                question=f"trace question {i}",
                stages=stages,
                kind="trace",
                task="a",
                group="a",
                doc_id=i,
                budgets=[24, 48, 96],
                intern_model="demo-intern",
                entropy_method="exact",
                mode="tandem",
                chosen_stage=c,
                stopped_early=e,
                cost={"tflops": tf, "mentor_tokens": mt, "intern_tokens": it, "stop_stage": c},
            )
        )
    return out


def test_trace_summary_by_hand():
    out = trace_summary(_trace_records())
    assert out["questions"] == 5 and out["modes"] == ["tandem"]
    assert out["stage_distribution"] == pytest.approx([0.2, 0.4, 0.2, 0.2])
    assert out["early_stop_rate"] == pytest.approx(0.8)
    assert out["mean_tflops"] == pytest.approx(16.0 / 5)
    assert out["mean_mentor_tokens"] == pytest.approx(192 / 5)
    assert out["mean_intern_tokens"] == pytest.approx(90.0)


def test_analyze_subcommand_on_trace_records_prints_the_summary(tmp_path, capsys):
    path = tmp_path / "trace.jsonl"
    write_records(path, _trace_records())
    assert run_subcommand(["analyze", "--records", str(path)]) == 0  # no classifier needed
    printed = capsys.readouterr().out
    assert printed.startswith("# Classifier analysis")
    body = json.loads(printed.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert body["stage_distribution"] == pytest.approx([0.2, 0.4, 0.2, 0.2])
    assert body["early_stop_rate"] == pytest.approx(0.8)
    assert body["mean_tflops"] == pytest.approx(3.2)
    assert "carry no labels" in body["note"]
    out = tmp_path / "trace-report"
    assert run_subcommand(["analyze", "--records", str(path), "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text()) == body
