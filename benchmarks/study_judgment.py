"""Does the intern's judgment work? A held-out study on collected records (no model calls).

    python benchmarks/study_judgment.py --train runs/gsm8k_train_oracle.jsonl \\
        --test runs/gsm8k_test_oracle.jsonl --out docs/judgment-study

Train records (a train split) are split by question 70/30 (seed 42): classifiers fit on the 70%,
early stopping, model selection and thresholds use the 30% validation questions. Test records (a
test split the classifiers never saw) are only reported on. Compared, on the same rows:

- feature spans: ``prompt`` (tandem-v1: the whole chat-rendered prompt), ``question_insights``
  (tandem-v2 default, Eq. 6's Q ⊕ I_t), ``insights`` (Appendix A's wording);
- estimators: the paper's MLP as specified (lr 1e-4, 3 epochs, early stopping on accuracy), the MLP
  trained to convergence (lr 1e-3, up to 300 epochs, early stopping on validation loss), logistic
  regression, gradient boosting;
- baselines: logistic regression on the stage alone, and on the stage and log n of the Q ⊕ I_t
  span (length + stage): features are worth something only if they beat them, above all within a
  stage, which is what a per-stage threshold acts on;
- thresholds of the selected classifier under each objective and on each set of tuning rows
  (validation §2.3, training §3.1, every training question out of fold), replayed on the tuning
  questions and on the test questions beside intern-only, each fixed stage and the oracle: the
  validation -> test gap of each objective;
- which objective should be ``fit``'s default, decided without the test questions: the training
  questions are split again and again (``--repeats`` times, 1/3 held out), ``fit``'s whole procedure
  runs on the other 2/3 (classifier on 70%, thresholds by each objective), and each objective is
  scored on the held-out third. The rule, fixed before the runs: the highest mean held-out accuracy,
  unless a cheaper objective is within one paired standard error of it (the one-SE rule once more).

Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tandem_lm_eval.calibration.analysis import analyze_records, bootstrap_auc  # noqa: E402
from tandem_lm_eval.calibration.fitting import (  # noqa: E402
    FitSettings,
    choose_for,
    fit_member,
    split_questions,
    threshold_tuning,
)
from tandem_lm_eval.calibration.objectives import Objective  # noqa: E402
from tandem_lm_eval.calibration.replay import fixed_stage, intern_only, oracle, replay
from tandem_lm_eval.calibration.tables import row_table, stage_table  # noqa: E402
from tandem_lm_eval.data.records import load_records  # noqa: E402
from tandem_lm_eval.judgment.features import FEATURE_NAMES, FEATURE_SPANS  # noqa: E402

ESTIMATORS = {
    "mlp-paper": ("mlp", {"learning_rate": 1e-4, "max_epochs": 3, "early_stopping": "accuracy"}),
    "mlp-converged": (
        "mlp",
        {"learning_rate": 1e-3, "max_epochs": 300, "patience": 30, "early_stopping": "loss"},
    ),
    "logistic": ("logistic", {}),
    "gradient_boosting": ("gradient_boosting", {}),
}
# label -> (objective, rows the thresholds are chosen on)
OBJECTIVES = {
    "max_accuracy": (Objective("max_accuracy"), "validation"),
    "one_se": (Objective("one_se"), "validation"),
    "max_accuracy, cv": (Objective("max_accuracy"), "cv"),
    "one_se, cv": (Objective("one_se"), "cv"),
    "max_accuracy, train rows (§3.1)": (Objective("max_accuracy"), "train"),
    "one_se, train rows (§3.1)": (Objective("one_se"), "train"),
    "per_stage (v1 rule; τ_e per effort level on validation, §2.3)": (Objective("per_stage"), "validation"),
    "per_stage, train rows (the paper's §3.1 reading)": (Objective("per_stage"), "train"),
    "per_stage, cv": (Objective("per_stage"), "cv"),
    "max_accuracy, cost <= 60% of fixed:last": (
        Objective("max_accuracy", max_cost_fraction=0.6),
        "validation",
    ),
    "min_cost, accuracy >= 95% of fixed:last": (
        Objective("min_cost", min_accuracy_fraction=0.95),
        "validation",
    ),
    "max_accuracy, stage 0 fallback only": (Objective("max_accuracy", stage0="fallback"), "validation"),
}
# the candidates for fit's default: the objectives that need no number from the user
DEFAULT_CANDIDATES = (
    "max_accuracy",
    "one_se",
    "max_accuracy, cv",
    "one_se, cv",
    "max_accuracy, train rows (§3.1)",
    "one_se, train rows (§3.1)",
    "per_stage (v1 rule; τ_e per effort level on validation, §2.3)",
    "per_stage, train rows (the paper's §3.1 reading)",
    "per_stage, cv",
)
LENGTH = FEATURE_NAMES.index("length")


def per_stage_auc(rows, s, resamples: int) -> dict:
    out = {"all": bootstrap_auc(rows.y, s, resamples)}
    for t in sorted(set(rows.stage.tolist())):
        m = rows.stage == t
        out[str(t)] = bootstrap_auc(rows.y[m], s[m], resamples)
    return out


def _baseline_inputs(rows, with_length: bool) -> np.ndarray:
    """Stage one-hot (and log n): what a classifier gets for free from knowing the stage and length."""
    stages = np.eye(4)[rows.stage]
    return np.hstack([stages, np.log1p(rows.X[:, [LENGTH]])]) if with_length else stages


def baseline(train_rows, rows, with_length: bool) -> np.ndarray:
    """Logistic regression on the stage (and log n). The stage alone explains part of any overall AUC
    (later stages are right more often); within a stage it ranks nothing (AUC 0.5). Length + stage
    learns the within-stage direction of length (longer questions are harder)."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(max_iter=1000).fit(_baseline_inputs(train_rows, with_length), train_rows.y)
    return lr.predict_proba(_baseline_inputs(rows, with_length))[:, 1]


def per_stage_diagnostic(train, test, resamples: int) -> dict:
    """Logistic regression fit per stage (on the train questions), AUC on test within that stage;
    and each feature alone (lower value = more sufficient) within the last stage."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tandem_lm_eval.judgment.scaling import log_scaled_columns

    cols = log_scaled_columns()

    def prep(X):
        X = X.copy()
        X[:, cols] = np.sign(X[:, cols]) * np.log1p(np.abs(X[:, cols]))
        return X

    out: dict = {"per_stage_logistic": {}, "single_features_last_stage": {}}
    for span in FEATURE_SPANS:
        a, b = row_table(train, span), row_table(test, span)
        for t in sorted(set(b.stage.tolist())):
            m, n = a.stage == t, b.stage == t
            if len(np.unique(a.y[m])) < 2 or len(np.unique(b.y[n])) < 2 or b.y[n].sum() < 10:
                continue  # too few positives to say anything
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
            clf.fit(prep(a.X[m]), a.y[m])
            out["per_stage_logistic"][f"{span} / stage {t}"] = bootstrap_auc(
                b.y[n], clf.predict_proba(prep(b.X[n]))[:, 1], resamples
            )
    b = row_table(test, "question_insights")
    last = b.stage == b.stage.max()
    for i, name in enumerate(FEATURE_NAMES):
        out["single_features_last_stage"][name] = bootstrap_auc(b.y[last], -b.X[last][:, i], resamples)
    return out


def repeated_splits(records, kind: str, params: dict, repeats: int, held_out: float = 1 / 3) -> dict:
    """``fit``'s whole procedure under each candidate objective on 2/3 of the training questions,
    scored on the other third, ``repeats`` times with fresh splits: which objective transfers.
    Test questions take no part."""
    from tqdm.auto import tqdm

    per_split: dict[str, list[dict]] = {label: [] for label in DEFAULT_CANDIDATES}
    fixed_last: list[tuple[float, float]] = []  # the reference: always the whole mentor budget
    for seed in tqdm(range(repeats), desc="repeated splits"):
        outer = split_questions(records, held_out, 1000 + seed)
        inner = [r for r, o in zip(records, outer) if not o]
        held = [r for r, o in zip(records, outer) if o]
        mask = split_questions(inner, 0.3, 42)  # fit's own 70/30 split
        fit_on = [r for r, v in zip(inner, mask) if not v]
        val_on = [r for r, v in zip(inner, mask) if v]
        base = FitSettings(span="question_insights", kind=kind, params=params)
        clf = fit_member(row_table(fit_on, base.span), row_table(val_on, base.span), base)
        held_rows = row_table(held, base.span)
        held_table = stage_table(held, lambda r, c=clf: c.sufficiency(r.X), held_rows)
        last = fixed_stage(held_table, held_table.num_stages - 1)
        fixed_last.append((last.accuracy, last.mean_tflops))
        tuning = {}  # rows name -> (records, rows, scores): the out-of-fold fits once per split
        for label in DEFAULT_CANDIDATES:
            objective, rows_name = OBJECTIVES[label]
            settings = FitSettings(
                span=base.span, kind=kind, params=params, objective=objective, threshold_rows=rows_name
            )
            if rows_name not in tuning:
                tuning[rows_name] = threshold_tuning(fit_on, val_on, settings)
            tune_records, tune_rows, scores = tuning[rows_name]
            choice, _, _ = choose_for(clf, tune_records, tune_rows, settings, scores)
            out = replay(held_table, choice.thresholds, objective.stage0)
            per_split[label].append(
                {
                    "tuning_accuracy": choice.accuracy,
                    "tuning_tflops": choice.mean_tflops,
                    "accuracy": out.accuracy,
                    "tflops": out.mean_tflops,
                    "early_rate": out.stopped_before_last_rate,
                }
            )
    summary = {}
    for label, runs in per_split.items():
        acc = np.array([r["accuracy"] for r in runs])
        summary[label] = {
            "tuning_accuracy": float(np.mean([r["tuning_accuracy"] for r in runs])),
            "held_out_accuracy": float(acc.mean()),
            "held_out_accuracy_se": float(acc.std(ddof=1) / np.sqrt(len(acc))) if len(acc) > 1 else None,
            "tuning_tflops": float(np.mean([r["tuning_tflops"] for r in runs])),
            "held_out_tflops": float(np.mean([r["tflops"] for r in runs])),
            "held_out_early_rate": float(np.mean([r["early_rate"] for r in runs])),
        }
    best = max(summary, key=lambda k: summary[k]["held_out_accuracy"])
    best_acc = np.array([r["accuracy"] for r in per_split[best]])
    for label, runs in per_split.items():
        diff = best_acc - np.array([r["accuracy"] for r in runs])
        summary[label]["behind_best"] = float(diff.mean())
        summary[label]["behind_best_se"] = (
            float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        )
    as_good = [k for k, v in summary.items() if v["behind_best"] <= (v["behind_best_se"] or 0.0) + 1e-12]
    chosen = min(as_good, key=lambda k: (summary[k]["held_out_tflops"], -summary[k]["held_out_accuracy"]))
    return {
        "repeats": repeats,
        "held_out_fraction": held_out,
        "questions": len(records),
        "estimator": kind,
        "rule": "highest mean held-out accuracy; the cheapest objective within one paired standard error of it",
        "best_accuracy": best,
        "as_good": as_good,
        "chosen": chosen,
        "objectives": summary,
        "fixed_last": {
            "held_out_accuracy": float(np.mean([a for a, _ in fixed_last])),
            "held_out_tflops": float(np.mean([c for _, c in fixed_last])),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, nargs="+", required=True)
    parser.add_argument("--test", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/judgment-study"))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=50, help="repeated splits of the training questions")
    args = parser.parse_args()
    t_start = time.perf_counter()

    train_all = load_records(args.train)
    test = load_records(args.test)
    seen = {r.question_hash for r in train_all}
    leaked = sum(r.question_hash in seen for r in test)
    if leaked:
        raise SystemExit(f"{leaked} test questions are also training questions: refusing")
    val_mask = split_questions(train_all, 0.3, 42)
    train = [r for r, v in zip(train_all, val_mask) if not v]
    val = [r for r, v in zip(train_all, val_mask) if v]

    def label_rates(records):
        L = np.array([[s.label for s in r.stages] for r in records], dtype=float)
        return {"by_stage": L.mean(0).round(4).tolist(), "any_stage": float(L.max(1).mean())}

    study: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "records": {"train": [shown(p) for p in args.train], "test": [shown(p) for p in args.test]},
        "questions": {"train": len(train), "validation": len(val), "test": len(test)},
        "label_rate": {
            "train": label_rates(train),
            "validation": label_rates(val),
            "test": label_rates(test),
        },
        "variants": {},
    }

    fitted = {}
    for span in FEATURE_SPANS:
        tr, va, te = row_table(train, span), row_table(val, span), row_table(test, span)
        for name, (kind, params) in ESTIMATORS.items():
            settings = FitSettings(span=span, kind=kind, params=params)
            clf = fit_member(tr, va, settings)
            fitted[(span, name)] = clf
            study["variants"][f"{span} / {name}"] = {
                "span": span,
                "estimator": name,
                "validation_auc": bootstrap_auc(va.y, clf.sufficiency(va.X), 0)["auc"],
                "test_auc": per_stage_auc(te, clf.sufficiency(te.X), args.resamples),
            }
            print(f"{span:18s} {name:18s} val AUC {study['variants'][f'{span} / {name}']['validation_auc']}")
    tr, va, te = (row_table(x, "question_insights") for x in (train, val, test))
    for label, with_length in (
        ("baseline: stage only", False),
        ("baseline: length + stage (log n of Q ⊕ I_t)", True),
    ):
        study["variants"][label] = {
            "span": "question_insights",
            "estimator": "logistic on stage one-hot" + (" + log n" if with_length else ""),
            "validation_auc": bootstrap_auc(va.y, baseline(tr, va, with_length), 0)["auc"],
            "test_auc": per_stage_auc(te, baseline(tr, te, with_length), args.resamples),
        }

    # diagnostic: one classifier per stage (is there a within-stage signal once the stage and the
    # insight length are held fixed?), and single features within the last stage
    study["per_stage_diagnostic"] = per_stage_diagnostic(train, test, args.resamples)

    # model selection on VALIDATION AUC among the default span's estimators (never on test)
    candidates = {
        k: v
        for k, v in study["variants"].items()
        if v["span"] == "question_insights" and k in {f"question_insights / {n}" for n in ESTIMATORS}
    }
    best_key = max(candidates, key=lambda k: candidates[k]["validation_auc"] or 0.0)
    best = fitted[("question_insights", candidates[best_key]["estimator"])]
    study["selected"] = {"variant": best_key, "by": "validation AUC (test never used for a choice)"}

    # thresholds under each objective (chosen on its tuning rows), replayed there and on test
    test_rows = row_table(test, "question_insights")
    test_table = stage_table(test, lambda r: best.sufficiency(r.X), test_rows)
    best_kind, best_params = ESTIMATORS[candidates[best_key]["estimator"]]
    points = {
        "intern_only": intern_only(test_table).summary(),
        **{f"fixed:{t}": fixed_stage(test_table, t).summary() for t in range(1, test_table.num_stages)},
        "oracle": oracle(test_table).summary(),
    }
    choices = {}
    for label, (objective, rows_name) in OBJECTIVES.items():
        settings = FitSettings(
            span="question_insights",
            kind=best_kind,
            params=best_params,
            objective=objective,
            threshold_rows=rows_name,
        )
        tune_records, tune_rows, scores = threshold_tuning(train, val, settings)
        choice, front, _ = choose_for(best, tune_records, tune_rows, settings, scores)
        tested = replay(test_table, choice.thresholds, objective.stage0).summary()
        choices[label] = {
            "thresholds": list(choice.thresholds),
            "rows": rows_name,
            "feasible": choice.feasible,
            "tuning": choice.result.summary(),
            "tuning_fixed_last": choice.reference,  # fixed:last on the same tuning questions
            "test": tested,
        }
        points[f"tandem: {label}"] = tested
        if label == "max_accuracy":
            study["front_points_validation"] = len(front)
    study["objectives"] = choices
    study["test_points"] = points
    # the selected estimator's evidence, and that of fit's default estimator (the paper's MLP)
    study["default_evidence"] = {
        name: repeated_splits(train_all, *ESTIMATORS[name], args.repeats)
        for name in dict.fromkeys([candidates[best_key]["estimator"], "mlp-paper"])
    }

    # the selected classifier, max_accuracy thresholds: the standard analyze report on test
    settings = FitSettings(
        span="question_insights", objective=OBJECTIVES["max_accuracy"][0], threshold_rows="validation"
    )
    choice, front, _ = choose_for(best, val, row_table(val, "question_insights"), settings)
    best.card.thresholds = list(choice.thresholds)
    best.card.feature_span = "question_insights"
    study["analyze_test"] = analyze_records(test, best, resamples=args.resamples)
    study["seconds"] = time.perf_counter() - t_start

    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(study, indent=2) + "\n")
    Path(f"{args.out}.md").write_text(markdown(study))
    print(markdown(study))


FIT_DEFAULT = "max_accuracy, cv"  # FitSettings() / fit's command-line defaults
FORMER_DEFAULT = "max_accuracy"  # on the validation rows, before the default was decided here


def decision(study: dict) -> str:
    """The paragraph that states fit's default and what the evidence and the test say about it."""
    verdicts = []
    for name, ev in study["default_evidence"].items():
        if ev["chosen"] == FIT_DEFAULT:
            verdicts.append(f"the rule's choice for {name}")
        elif FIT_DEFAULT in ev["as_good"]:
            cheaper = (
                ev["objectives"][FIT_DEFAULT]["held_out_tflops"]
                - ev["objectives"][ev["chosen"]]["held_out_tflops"]
            )
            verdicts.append(
                f"within one paired SE of the best for {name} (the rule's choice there, {ev['chosen']}, is "
                f"{cheaper:.2g} TFLOPs per question cheaper, {100 * cheaper / ev['objectives'][FIT_DEFAULT]['held_out_tflops']:.3f}%)"
            )
        else:
            verdicts.append(f"NOT among the best for {name} (the rule chose {ev['chosen']})")
    new, old = study["objectives"][FIT_DEFAULT], study["objectives"][FORMER_DEFAULT]
    last = max(
        (k for k in study["test_points"] if k.startswith("fixed:")), key=lambda k: int(k.split(":")[1])
    )
    fixed_last = study["test_points"][last]

    def gap(v):
        return v["tuning"]["accuracy"] - v["test"]["accuracy"]

    best_test = max(v["test"]["accuracy"] for v in study["objectives"].values())
    se_cv = study["objectives"]["one_se, cv"]["test"]
    one_se_note = (
        f"`one_se` on the same rows is cheaper ({se_cv['mean_tflops']:.3f} TFLOPs) and less accurate "
        f"({se_cv['accuracy']:.3f}): with this classifier the cheaper vectors within the noise stop early "
        "on the wrong questions, and the held-out questions show it. "
        if se_cv["accuracy"] < new["test"]["accuracy"]
        else ""
    )

    return (
        f"**`fit`'s default: `max_accuracy` on `cv` rows** — {'; '.join(verdicts)}. On the test questions, "
        f"never used for the choice, it gives accuracy {new['test']['accuracy']:.3f} at "
        f"{new['test']['mean_tflops']:.3f} TFLOPs against {old['test']['accuracy']:.3f} at "
        f"{old['test']['mean_tflops']:.3f} for the former default (`max_accuracy` on the validation rows), with "
        f"a tuning -> test gap of {gap(new):+.3f} against {gap(old):+.3f}. {one_se_note}"
        f"{'No' if best_test < fixed_last['accuracy'] else 'A'} threshold rule "
        f"{'beats' if best_test < fixed_last['accuracy'] else 'beats'} answering from the last stage "
        f"({last}: {fixed_last['accuracy']:.3f} on test; the best objective {best_test:.3f}). "
        "The paper's own readings stay available: `--objective per_stage --threshold-rows validation` "
        "(§2.3) or `train` (§3.1)."
    )


def _ci(a: dict) -> str:
    if a.get("auc") is None:
        return "n/a"
    return f"{a['auc']:.3f} [{a['low']:.2f}, {a['high']:.2f}]"


REPO = Path(__file__).resolve().parents[1]


def shown(path: Path) -> str:
    """A record file as the study names it: relative to the repository (never a path of this machine)."""
    resolved = path.resolve()
    if resolved.is_relative_to(REPO):
        return str(resolved.relative_to(REPO))
    return str(path) if not path.is_absolute() else path.name


def markdown(study: dict) -> str:
    q = study["questions"]
    lines = [
        "# Judgment study: does the intern know when the guidance suffices?",
        "",
        f"{study['date']}, {study['machine']}. Records: {', '.join(study['records']['train'])} (train split) and "
        f"{', '.join(study['records']['test'])} (test split). Questions: {q['train']} train / {q['validation']} "
        f"validation (train split, by question, stratified, seed 42) / {q['test']} test. The test records "
        "are a `collect` of the first test-split questions with the training records' setup (oracle mentor, "
        "demo intern, budgets, 256-token answers), as classifiers/smollm2-135m-gsm8k/README.md describes, "
        "written to the git-ignored `runs/` folder.",
        "",
        "Sufficient (label 1) rate by stage: "
        + "; ".join(
            f"{k} {v['by_stage']} (any stage {v['any_stage']:.3f})" for k, v in study["label_rate"].items()
        ),
        "",
        "## Held-out AUC by stage (test questions; 95% bootstrap interval)",
        "",
        "| features / estimator | validation AUC | test, all rows | stage 0 | stage 1 | stage 2 | stage 3 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in study["variants"].items():
        a = v["test_auc"]
        cells = " | ".join(_ci(a.get(str(t), {})) for t in range(4))
        val = "n/a" if v["validation_auc"] is None else f"{v['validation_auc']:.3f}"
        lines.append(f"| {name} | {val} | {_ci(a['all'])} | {cells} |")
    diag = study["per_stage_diagnostic"]
    lines += [
        "",
        "## Within a stage (diagnostic: one logistic regression per stage, fit on train, AUC on test)",
        "",
        "| span / stage | AUC [95% CI] | positives |",
        "|---|---|---|",
    ]
    for key, a in diag["per_stage_logistic"].items():
        lines.append(f"| {key} | {_ci(a)} | {a['positives']} of {a['rows']} |")
    singles = sorted(diag["single_features_last_stage"].items(), key=lambda kv: -(kv[1]["auc"] or 0))
    test_last = study["test_points"][f"fixed:{len(study['test_points']['oracle']['stage_distribution']) - 1}"]
    train_last = next(iter(study["default_evidence"].values()))["fixed_last"]["held_out_accuracy"]
    lines += [
        "",
        "Single features within the last stage (lower value = sufficient), best first: "
        + ", ".join(f"{name} {_ci(a)}" for name, a in singles[:6]),
        "",
        f"Selected by validation AUC: **{study['selected']['variant']}**.",
        "",
        "## Thresholds by each objective: chosen on their tuning rows, replayed on the test questions",
        "",
        f"Rows: `validation` = the {q['validation']} held-out training questions (§2.3), `train` = the "
        f"{q['train']} the classifier was fit on (§3.1), `cv` = all {q['train'] + q['validation']} training "
        "questions scored out of fold (5 classifiers, each fit on the other folds; fit's default). Gap = tuning "
        "accuracy - test accuracy; part of it is the test questions' own difficulty for this intern "
        f"(fixed:last: {train_last:.3f} on held-out training questions, {test_last['accuracy']:.3f} on test). "
        "vs fixed:last = the objective's accuracy minus always answering from the last stage on the "
        "same questions, tuning / test, which takes that shift out. Stopped early = the classifier stopped the "
        "mentor before its last stage (what saves mentor tokens).",
        "",
        "| objective | rows | thresholds | tuning accuracy | tuning TFLOPs | test accuracy | test TFLOPs "
        "| accuracy gap | vs fixed:last, tuning / test | stopped early (test) | stage distribution (test) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, v in study["objectives"].items():
        tune, tested = v["tuning"], v["test"]
        lines.append(
            f"| {label} | {v['rows']} | {[round(t, 2) for t in v['thresholds']]} | {tune['accuracy']:.3f} | "
            f"{tune['mean_tflops']:.3f} | {tested['accuracy']:.3f} | {tested['mean_tflops']:.3f} | "
            f"{tune['accuracy'] - tested['accuracy']:+.3f} | "
            f"{tune['accuracy'] - v['tuning_fixed_last']['accuracy']:+.3f} / "
            f"{tested['accuracy'] - test_last['accuracy']:+.3f} | {tested['stopped_before_last_rate']:.2f} | "
            f"{', '.join(f'{x:.2f}' for x in tested['stage_distribution'].values())} |"
        )
    lines += [
        "",
        "Baselines on the same test questions:",
        "",
        "| policy | accuracy | mean mentor tokens | mean TFLOPs | stage distribution |",
        "|---|---|---|---|---|",
    ]
    for name, v in study["test_points"].items():
        if name.startswith("tandem: "):
            continue
        lines.append(
            f"| {name} | {v['accuracy']:.3f} | {v['mean_mentor_tokens']:.1f} | {v['mean_tflops']:.3f} | "
            f"{', '.join(f'{x:.2f}' for x in v['stage_distribution'].values())} |"
        )
    evidence = study["default_evidence"]
    first = next(iter(evidence.values()))
    lines += [
        "",
        "## Which objective is `fit`'s default (decided without the test questions)",
        "",
        f"The {first['questions']} training questions split {first['repeats']} times (a third held out, "
        f"stratified, seeds 1000..{1000 + first['repeats'] - 1}); on the other two thirds `fit`'s procedure "
        "(the estimator on 70%, thresholds by each objective), then each objective's thresholds replayed on "
        f"the held-out third. Rule, fixed before the runs: {first['rule']}. The splits overlap, so the "
        "standard errors are optimistic (they treat the repeats as independent).",
    ]
    for name, ev in evidence.items():
        lines += [
            "",
            f"### {name}",
            "",
            "| objective | rows | tuning accuracy | held-out accuracy ± SE | behind the best ± paired SE "
            "| held-out TFLOPs | stopped early |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, v in ev["objectives"].items():
            rows_name = study["objectives"][label]["rows"]
            lines.append(
                f"| {label} | {rows_name} | {v['tuning_accuracy']:.3f} | {v['held_out_accuracy']:.3f} ± "
                f"{v['held_out_accuracy_se']:.3f} | {v['behind_best']:.3f} ± {v['behind_best_se']:.3f} | "
                f"{v['held_out_tflops']:.3f} | {v['held_out_early_rate']:.2f} |"
            )
        lines += [
            f"| reference: fixed:last (no judgment) | | | {ev['fixed_last']['held_out_accuracy']:.3f} | | "
            f"{ev['fixed_last']['held_out_tflops']:.3f} | 0.00 |",
            "",
            f"Most accurate on the held-out thirds: **{ev['best_accuracy']}**; within one paired SE of it: "
            f"{', '.join(ev['as_good'])}; the cheapest of those: **{ev['chosen']}**.",
        ]
    lines += ["", decision(study), ""]
    routing = study["analyze_test"]["routing"]
    lines += [
        "",
        "## Routing of the selected classifier (max_accuracy thresholds) on test (Table 14)",
        "",
        ", ".join(
            f"{k.replace('_', ' ')} {v['count']} ({v['percent']:.1f}%)"
            for k, v in routing.items()
            if isinstance(v, dict)
        )
        + f"; oracle accuracy {routing['oracle_accuracy']:.3f}.",
        "",
        "Per-stage precision / recall / F1 at those thresholds (Table 9): "
        + "; ".join(
            f"stage {t}: {v['precision']:.2f} / {v['recall']:.2f} / {v['f1']:.2f}"
            for t, v in study["analyze_test"]["per_stage"].items()
        ),
        "",
        "Permutation importance (AUC drop, test): "
        + ", ".join(
            f"{v['feature']} {v['auc_drop']:.3f}" for v in study["analyze_test"]["permutation_importance"][:6]
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
