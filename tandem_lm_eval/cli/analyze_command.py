"""``tandem-lm-eval analyze``: its arguments and what it runs (calibration/analysis.py does the work)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tandem_lm_eval.calibration.analysis import analyze_records, to_markdown, trace_summary
from tandem_lm_eval.calibration.tables import TableError, hidden_vectors
from tandem_lm_eval.data.records import load_records
from tandem_lm_eval.judgment.card import intern_mismatch
from tandem_lm_eval.judgment.loading import load_classifier_folder
from tandem_lm_eval.judgment.training_guard import QuestionIdentity, overlap

logger = logging.getLogger(__name__)


# --- command line ----------------------------------------------------------------------------------
def add_analyze_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", type=Path, nargs="+", required=True, help="collect (or trace) records")
    p.add_argument(
        "--classifier",
        nargs="+",
        help="classifier folder (needed for labelled records); several: Table 8 compares them as judges, "
        "the first gets the full report",
    )
    p.add_argument("--out", type=Path, help="write <out>.md and <out>.json (default: print Markdown)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for AUC intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mentor-num-params", type=float)
    p.add_argument("--intern-num-params", type=float)
    p.add_argument(
        "--allow-training-overlap", action="store_true", help="analyze records the classifier was trained on"
    )
    p.add_argument(
        "--no-classifier-strict",
        dest="classifier_strict",
        action="store_false",
        help="analyze with a classifier made for another intern or entropy method (lm_eval's "
        "classifier_strict=false)",
    )


def run_analyze(args) -> int:
    records = load_records(args.records)
    if not records:
        raise TableError("no records")
    if not all(r.labelled for r in records) or all(r.kind == "trace" for r in records):
        report = trace_summary(records)
    else:
        if not args.classifier:
            raise TableError("labelled records need --classifier to analyze")
        judges = {}
        for name in args.classifier:
            clf = load_classifier_folder(classifier_folder(name))
            check_fits_records(clf, name, records, getattr(args, "classifier_strict", True))
            found = overlap([QuestionIdentity.of_record(r) for r in records], clf.card.training_questions)
            if found and not args.allow_training_overlap:
                raise TableError(
                    f"{len(found)} of {len(records)} questions are among the classifier's training questions "
                    f"({name}): a held-out report needs questions it never saw (--allow-training-overlap to "
                    "analyze anyway)"
                )
            judges[Path(name).name] = (clf, judge_vectors(clf, args.records))
        first, (clf, hidden) = next(iter(judges.items()))
        report = analyze_records(
            records,
            clf,
            resamples=args.resamples,
            seed=args.seed,
            mentor_params=args.mentor_num_params,
            intern_params=args.intern_num_params,
            hidden=hidden,
        )
        report["judges"] = compare_judges(records, judges, args)
    markdown = to_markdown(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
        Path(f"{args.out}.md").write_text(markdown)
        print(f"analyze: wrote {args.out}.md and {args.out}.json")
    else:
        print(markdown)
    return 0


def check_fits_records(clf, name: str, records, strict: bool) -> None:
    """The classifier against the records' intern, by lm_eval's rule (judgment/card.py: intern_mismatch):
    its scores of another intern's features would make a held-out report of nothing."""
    for intern, method in sorted({(r.intern_model, r.entropy_method) for r in records}):
        problems = intern_mismatch(clf.card, intern, method)
        if not problems:
            continue
        message = f"classifier {name}: " + "; ".join(problems) + " (the records' intern)"
        if strict:
            raise TableError(message + ": --no-classifier-strict to analyze anyway")
        logger.warning("analyze: %s; analyzing anyway (--no-classifier-strict)", message)


def judge_vectors(clf, records_paths):
    """The hidden vectors a classifier reads, from the records' side files (None for tandem-v2)."""
    hidden = clf.card.hidden
    return None if hidden is None else hidden_vectors(records_paths, hidden.key)[0]


def compare_judges(records, judges: dict, args) -> dict:
    """Table 8 over the classifiers given: each one's replayed cascade per group and AUC per stage."""
    from tandem_lm_eval.calibration.analysis import bootstrap_auc, question_thresholds, replay_each, scores_of
    from tandem_lm_eval.calibration.judges_table import JudgeRows, judges_table
    from tandem_lm_eval.calibration.tables import row_table, stage_table

    rows_of = []
    table = None
    for name, (clf, hidden) in judges.items():
        rows = row_table(records, clf.card.feature_span, clf.card.spec, hidden)
        s = scores_of(clf, rows, records)
        table = stage_table(records, lambda r, s=s: s, rows, args.mentor_num_params, args.intern_num_params)
        result = replay_each(table, question_thresholds(clf, records))
        rows_of.append(JudgeRows(name, clf.card.feature_set, rows, s, result))
    return judges_table(
        records,
        table,
        rows_of,
        lambda y, s, questions=None: bootstrap_auc(y, s, args.resamples, args.seed, questions=questions),
    )


def classifier_folder(name: str) -> Path:
    from tandem_lm_eval.data.resources import classifiers_dir

    path = Path(name).expanduser()
    return path if path.exists() else classifiers_dir() / name
