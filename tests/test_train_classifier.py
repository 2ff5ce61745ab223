"""The classifier training pipeline: labelling, question-level split, replay, fit, card, collect."""

import json

import numpy as np
import pytest

from tandem_lm_eval.classifier import SufficiencyClassifier
from tandem_lm_eval.features import FEATURE_NAMES, NUM_FEATURES
from tandem_lm_eval.train_classifier import (
    TrainingTable,
    auc,
    fit,
    label_rows,
    main,
    model_card,
    simulate_cascade,
    split_by_question,
)


def rows(n_questions=120, seed=0):
    """Synthetic collect output: correctness becomes likelier with stage and lower entropy."""
    rng = np.random.default_rng(seed)
    out = []
    for q in range(n_questions):
        skill = rng.uniform()
        for stage, mentor in enumerate([0, 100, 500, 1000]):
            ok = skill + 0.2 * stage > 0.9
            f = np.abs(rng.normal(3, 1, NUM_FEATURES))
            f[FEATURE_NAMES.index("entropy_mean")] = (0.5 if ok else 2.0) + rng.normal(0, 0.3)
            f[-1] = 60 + mentor
            out.append(
                {
                    "qid": f"q{q}",
                    "dataset": "gsm8k_train",
                    "gold": "#### 7",
                    "stage": stage,
                    "features": list(f),
                    "answer": "\\boxed{7}" if ok else "\\boxed{3}",
                    "mentor_tokens": mentor,
                    "intern_tokens": 50,
                }
            )
    return out


def checker(answer, gold):
    return answer == "\\boxed{7}"


def test_label_rows_and_question_split():
    table = label_rows(rows(20), checker)
    assert table.X.shape == (80, NUM_FEATURES) and set(table.y) <= {0, 1}
    val = split_by_question(table.qids, 0.3, 42)
    for q in np.unique(table.qids):  # all stages of a question on one side
        assert len(set(val[table.qids == q])) == 1
    assert 0.2 < val.mean() < 0.4


def test_label_rows_skips_stages_without_answer():
    r = rows(2)
    r[1]["answer"] = None
    assert len(label_rows(r, checker).y) == 7


def test_auc():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert auc(np.array([0.1, 0.2]), np.array([1, 1])) is None


def test_simulate_cascade_replays_the_stop_rule():
    table = TrainingTable(
        qids=np.array(["a"] * 4 + ["b"] * 4),
        stages=np.array([0, 1, 2, 3] * 2),
        X=np.zeros((8, NUM_FEATURES)),
        y=np.array([0, 0, 1, 1, 0, 1, 1, 1]),
        mentor_tokens=np.array([0, 100, 500, 1000] * 2, dtype=float),
        intern_tokens=np.full(8, 10.0),
    )
    scores = np.array([0.1, 0.2, 0.9, 0.9, 0.1, 0.3, 0.2, 0.1])
    out = simulate_cascade(table, scores, [0.5, 0.5, 0.5, 0.5])
    # a stops at stage 2 (correct); b never passes, argmax = stage 1 (correct)
    assert out["accuracy"] == 1.0 and out["stage_distribution"] == {"1": 0.5, "2": 0.5}
    assert out["mean_mentor_tokens_at_answer"] == 300


def test_fit_learns_thresholds_and_writes_a_card(tmp_path):
    table = label_rows(rows(), checker)
    clf = SufficiencyClassifier(max_epochs=40, learning_rate=1e-3)
    clf.card.intern_model = "tiny"
    clf, report = fit(table, [100, 500, 1000], clf)
    assert len(clf.card.thresholds) == 4 and all(0.05 <= t <= 0.95 for t in clf.card.thresholds)
    assert report["validation_auc"] > 0.9
    card = model_card("x", clf, report, {"date": "2026-11-28", "machine": "test"})
    assert "validation AUC" in card and "2026-11-28" in card


def test_fit_cli_end_to_end(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(40)))
    out = tmp_path / "clf"
    main(["fit", "--rows", str(path), "--out", str(out), "--intern-model", "tiny", "--max-epochs", "2"])
    # the real GSM8K checker labelled "\\boxed{7}" vs gold "#### 7" as correct
    meta = json.loads((out / "classifier.json").read_text())
    assert meta["training"]["report"]["positive_rate"]["train"] > 0
    assert (out / "README.md").is_file()
    SufficiencyClassifier.load(out)


@pytest.mark.slow
def test_collect_with_a_real_model_resumes(tmp_path, tiny_model_dir, monkeypatch, shared_data):
    out = tmp_path / "rows.jsonl"
    args = [
        "collect",
        "--mentor",
        str(tiny_model_dir),
        "--intern",
        str(tiny_model_dir),
        "--budgets",
        "4/8",
        "--limit",
        "2",
        "--answer-max-tokens",
        "4",
        "--out",
        str(out),
    ]
    main(args)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2 * 3
    assert {r["stage"] for r in lines} == {0, 1, 2}
    assert all(len(r["features"]) == NUM_FEATURES for r in lines)
    main(args)  # nothing left to do: no duplicate rows
    assert len(out.read_text().splitlines()) == 6
