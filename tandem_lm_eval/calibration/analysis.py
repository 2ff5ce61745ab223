"""``tandem-lm-eval analyze``: how a classifier judges held-out questions, from records alone.

Input: ``collect`` records of questions the classifier never saw (a test split), where the intern
answered from every stage and the task judged each answer. Zero model calls: the classifier scores
the recorded features and the cascade is replayed (replay.py, threshold_grid.py). Reported, as Markdown and JSON:

- per stage: positive rate, precision / recall / F1 of ``s_t > τ_t`` against the label (Table 9),
  ROC AUC with a 95% bootstrap interval (questions resampled);
- calibration: Brier score and a reliability table (scikit-learn's ``calibration_curve``);
- routing (Table 14): correct, premature stop (wrong, a later stage was right), late stop (wrong, no
  later stage right but an earlier one was), unsolvable (no stage right), and the oracle accuracy;
- the replayed accuracy, mean mentor tokens and mean TFLOPs (Eq. 12) of intern-only, each fixed
  stage, the oracle (the cheapest correct stage) and Tandem with the classifier's thresholds;
- permutation feature importance (drop in AUC when a feature is shuffled; Table 11 reports
  gradient-boosting impurity importance, a different measure).

``trace_path`` records of an lm_eval run (no labels) get the part that needs none: stage
distribution, early-stop rate and cost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from tandem_lm_eval.calibration.replay import (
    ReplayResult,
    StageTable,
    fixed_stage,
    format_distribution,
    intern_only,
    oracle,
    replay,
)
from tandem_lm_eval.calibration.tables import HiddenVectors, RowTable, row_table, stage_table
from tandem_lm_eval.data.records import QuestionRecord


class _Scorer:
    """scikit-learn's permutation_importance wants an estimator object; ours is already fitted."""

    def __init__(self, score) -> None:
        self.score_rows = score

    def fit(self, X, y):  # never called: the classifier is fitted
        return self


def scores_of(clf, rows: RowTable, records: Sequence[QuestionRecord]) -> np.ndarray:
    """s for every row, by the classifier of each row's group for a per-group classifier."""
    return clf.sufficiency(rows.X, [records[q].group for q in rows.question])


def bootstrap_auc(
    y: np.ndarray,
    s: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    *,
    questions: np.ndarray | None = None,
) -> dict:
    """AUC and its 95% percentile interval over resampled *questions*: ``questions`` gives each row's
    question (rows of one question, its stages, are drawn together: they are not independent);
    without it each row is its own question. A resample draws the questions with replacement and
    weighs each row by how often its question was drawn (the AUC of the duplicated sample). With one
    row per question the draws are those of resampling the rows (the interval of earlier versions)."""
    from sklearn.metrics import roc_auc_score

    y, s = np.asarray(y), np.asarray(s)
    if len(np.unique(y)) < 2:
        return {"auc": None, "low": None, "high": None, "positives": int(y.sum()), "rows": len(y)}
    if questions is None:
        question_of_row = np.arange(len(y))
    else:  # 0..Q-1 per row, whatever the question ids are
        _, question_of_row = np.unique(np.asarray(questions), return_inverse=True)
    n = int(question_of_row.max()) + 1
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        weight = np.bincount(rng.integers(0, n, n), minlength=n)[question_of_row]
        drawn = weight > 0
        if len(np.unique(y[drawn])) == 2:
            values.append(roc_auc_score(y[drawn], s[drawn], sample_weight=weight[drawn]))
    low, high = np.percentile(values, [2.5, 97.5]) if values else (None, None)
    return {
        "auc": float(roc_auc_score(y, s)),
        "low": None if low is None else float(low),
        "high": None if high is None else float(high),
        "positives": int(y.sum()),
        "rows": len(y),
        "questions": n,
    }


def routing_categories(table: StageTable, result: ReplayResult) -> dict:
    """Table 14: why each question ended as it did."""
    correct = table.correct & table.usable
    later = np.array([correct[q, result.stage[q] + 1 :].any() for q in range(table.num_questions)])
    earlier = np.array([correct[q, : result.stage[q]].any() for q in range(table.num_questions)])
    solvable = correct.any(axis=1)
    wrong = ~result.correct
    n = max(table.num_questions, 1)
    counts = {
        "correct_routing": int(result.correct.sum()),
        "premature_stop": int((wrong & later).sum()),
        "late_stop": int((wrong & ~later & earlier).sum()),
        "unsolvable": int((~solvable).sum()),
    }
    out = {k: {"count": v, "percent": 100.0 * v / n} for k, v in counts.items()}
    out["oracle_accuracy"] = float(solvable.mean()) if table.num_questions else 0.0
    return out


def analyze_records(
    records: Sequence[QuestionRecord],
    clf,
    *,
    resamples: int = 1000,
    seed: int = 0,
    importance_repeats: int = 10,
    mentor_params: float | None = None,
    intern_params: float | None = None,
    hidden: HiddenVectors | None = None,
) -> dict:
    """The held-out report of ``clf`` on labelled records (see the module docstring); a hidden-state
    judge reads its vectors from ``hidden`` (tables.hidden_vectors)."""
    from sklearn.calibration import calibration_curve
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import brier_score_loss, precision_recall_fscore_support, roc_auc_score

    card = clf.card
    rows = row_table(records, card.feature_span, card.spec, hidden)
    s = scores_of(clf, rows, records)
    table = stage_table(records, lambda r: s, rows, mentor_params, intern_params)
    thresholds = question_thresholds(clf, records)
    tandem = replay_each(table, thresholds)
    per_stage = {}
    for t in range(table.num_stages):
        m = rows.stage == t
        tau = np.array([thresholds[q][t] for q in rows.question[m]])
        pred = (s[m] > tau).astype(int)
        p, r, f, _ = precision_recall_fscore_support(rows.y[m], pred, average="binary", zero_division=0)
        per_stage[str(t)] = {
            "rows": int(m.sum()),
            "positive_rate": float(rows.y[m].mean()) if m.any() else 0.0,
            "predicted_sufficient": float(pred.mean()) if m.any() else 0.0,
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            **{
                f"auc_{k}": v
                for k, v in bootstrap_auc(
                    rows.y[m], s[m], resamples, seed, questions=rows.question[m]
                ).items()
            },
        }
    frac_pos, mean_pred = calibration_curve(rows.y, s, n_bins=10, strategy="quantile")
    # Importance of each named statistic; hidden units one by one mean nothing, so they are left out.
    names = card.spec.statistics_names()
    importance = None
    if names:
        importance = permutation_importance(
            _Scorer(lambda X: _rescore(clf, _with_columns(rows.X, X), rows, records)),
            rows.X[:, : len(names)],
            rows.y,
            scoring=lambda est, X, y: roc_auc_score(y, est.score_rows(X)) if len(np.unique(y)) == 2 else 0.5,
            n_repeats=importance_repeats,
            random_state=seed,
        )
    order = np.argsort(-importance.importances_mean) if importance is not None else []
    policies = {
        "intern_only": intern_only(table),
        **{f"fixed:{t}": fixed_stage(table, t) for t in range(1, table.num_stages)},
        "oracle": oracle(table),
        "tandem": tandem,
    }
    return {
        "classifier": {
            "kind": getattr(clf, "kind", "mlp"),
            "feature_set": card.feature_set,
            "feature_span": card.feature_span,
            "hidden": None if card.hidden is None else card.hidden.to_dict(),
            # one vector, or one per group of a per-group classifier
            "thresholds": list(thresholds[0])
            if len(set(thresholds)) == 1
            else [list(v) for v in sorted(set(thresholds))],
            "objective": card.threshold_objective,
        },
        "questions": table.num_questions,
        "rows": len(rows),
        "tasks": sorted({str(r.task) for r in records}),
        "auc_all_rows": bootstrap_auc(rows.y, s, resamples, seed, questions=rows.question),
        "per_stage": per_stage,
        "calibration": {
            "brier": float(brier_score_loss(rows.y, s)),
            "bins": [
                {"mean_predicted": float(m), "fraction_sufficient": float(f)}
                for m, f in zip(mean_pred, frac_pos)
            ],
        },
        "routing": routing_categories(table, tandem),
        "policies": {name: result.summary() for name, result in policies.items()},
        "permutation_importance": [
            {
                "feature": names[i],
                "auc_drop": float(importance.importances_mean[i]),
                "std": float(importance.importances_std[i]),
            }
            for i in order
        ],
    }


def question_thresholds(clf, records: Sequence[QuestionRecord]) -> list[tuple[float, ...]]:
    """Each question's thresholds: its group's for a per-group classifier, else the classifier's."""
    return [tuple(clf.for_group(r.group).card.thresholds) for r in records]


def replay_each(table: StageTable, thresholds: Sequence[tuple[float, ...]]) -> ReplayResult:
    """``replay`` with each question's own thresholds (one replay per distinct vector, merged)."""
    distinct = sorted(set(thresholds))
    if len(distinct) == 1:
        return replay(table, distinct[0])
    parts = {}
    for vector in distinct:
        idx = np.array([i for i, v in enumerate(thresholds) if v == vector])
        parts[vector] = (idx, replay(table.subset(idx), vector))
    merged = {}
    timed = ("latency", "judgment") if table.seconds is not None else ()
    for name in ("stage", "early", "correct", "mentor_paid", "intern_tokens", "tflops", *timed):
        first = getattr(next(iter(parts.values()))[1], name)
        out = np.zeros(table.num_questions, dtype=first.dtype)
        for idx, result in parts.values():
            out[idx] = getattr(result, name)
        merged[name] = out
    return ReplayResult(**merged, num_stages=table.num_stages)


def _with_columns(X_all: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The full input with its first columns (the statistics) replaced by ``first``."""
    if first.shape[1] == X_all.shape[1]:
        return first
    return np.hstack([first, X_all[:, first.shape[1] :]])


def _rescore(clf, X, rows: RowTable, records) -> np.ndarray:
    return clf.sufficiency(X, [records[q].group for q in rows.question])


def trace_summary(records: Sequence[QuestionRecord]) -> dict:
    """What unlabelled trace records tell: stage distribution, early stops, cost."""
    chosen = [r.chosen_stage for r in records if r.chosen_stage is not None]
    costs = [r.cost for r in records if r.cost]
    stages = max((len(r.stages) for r in records), default=0)
    n = max(len(chosen), 1)
    return {
        "questions": len(records),
        "modes": sorted({str(r.mode) for r in records}),
        "stage_distribution": [sum(c == t for c in chosen) / n for t in range(stages)],
        "early_stop_rate": sum(bool(r.stopped_early) for r in records) / max(len(records), 1),
        "mean_tflops": float(np.mean([c["tflops"] for c in costs])) if costs else None,
        "mean_mentor_tokens": float(np.mean([c["mentor_tokens"] for c in costs])) if costs else None,
        "mean_intern_tokens": float(np.mean([c["intern_tokens"] for c in costs])) if costs else None,
        "note": "trace records carry no labels: accuracy, P/R/F1 and routing need `tandem-lm-eval collect` records",
    }


# --- Markdown -----------------------------------------------------------------------------------------
def to_markdown(report: dict, title: str = "Classifier analysis") -> str:
    if "per_stage" not in report:
        return f"# {title}\n\n```json\n{json.dumps(report, indent=2)}\n```\n"
    c = report["classifier"]
    lines = [
        f"# {title}",
        "",
        f"{report['questions']} questions ({', '.join(report['tasks'])}), {report['rows']} question-stage rows. "
        f"Classifier: {c['kind']}, `{c['feature_set']}` over `{c['feature_span']}`, thresholds {c['thresholds']}.",
        "",
        "## Per stage (Table 9)",
        "",
        "| stage | rows | sufficient | predicted sufficient | precision | recall | F1 | AUC [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t, v in report["per_stage"].items():
        lines.append(
            f"| {t} | {v['rows']} | {v['positive_rate']:.3f} | {v['predicted_sufficient']:.3f} | {v['precision']:.3f} "
            f"| {v['recall']:.3f} | {v['f1']:.3f} | {_ci(v)} |"
        )
    a = report["auc_all_rows"]
    lines += [
        "",
        f"All rows: AUC {_ci({'auc_' + k: x for k, x in a.items()})}; Brier score {report['calibration']['brier']:.4f}.",
        "",
        "## Routing (Table 14)",
        "",
        "| outcome | count | % |",
        "|---|---|---|",
    ]
    for k in ("correct_routing", "premature_stop", "late_stop", "unsolvable"):
        v = report["routing"][k]
        lines.append(f"| {k.replace('_', ' ')} | {v['count']} | {v['percent']:.2f} |")
    lines += [
        "",
        f"Oracle accuracy (some stage right): {report['routing']['oracle_accuracy']:.3f}.",
        "",
        "## Accuracy and cost, replayed",
        "",
        "| policy | accuracy | mean mentor tokens | mean intern tokens | mean TFLOPs | stage distribution |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in report["policies"].items():
        lines.append(
            f"| {name} | {v['accuracy']:.3f} | {v['mean_mentor_tokens']:.1f} | {v['mean_intern_tokens']:.1f} | "
            f"{v['mean_tflops']:.3f} | {format_distribution(v)} |"
        )
    if report["permutation_importance"]:
        lines += ["", "## Permutation importance (AUC drop)", "", "| feature | drop | std |", "|---|---|---|"]
        for v in report["permutation_importance"][:10]:
            lines.append(f"| {v['feature']} | {v['auc_drop']:.4f} | {v['std']:.4f} |")
    if "judges" in report:
        from tandem_lm_eval.calibration.judges_table import judges_markdown

        lines += ["", judges_markdown(report["judges"])]
    return "\n".join(lines) + "\n"


def _ci(v: dict) -> str:
    if v.get("auc_auc") is None:
        return "n/a (one class)"
    return f"{v['auc_auc']:.3f} [{v['auc_low']:.3f}, {v['auc_high']:.3f}]"
