"""``tandem-lm-eval analyze``: its arguments and what it runs (calibration/analysis.py does the work)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tandem_lm_eval.calibration.analysis import analyze_records, to_markdown, trace_summary
from tandem_lm_eval.calibration.tables import TableError
from tandem_lm_eval.data.records import load_records
from tandem_lm_eval.judgment.loading import load_classifier_folder


# --- command line ----------------------------------------------------------------------------------
def add_analyze_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", type=Path, nargs="+", required=True, help="collect (or trace) records")
    p.add_argument("--classifier", help="classifier folder (needed for labelled records)")
    p.add_argument("--out", type=Path, help="write <out>.md and <out>.json (default: print Markdown)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for AUC intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mentor-num-params", type=float)
    p.add_argument("--intern-num-params", type=float)
    p.add_argument(
        "--allow-training-overlap", action="store_true", help="analyze records the classifier was trained on"
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
        clf = load_classifier_folder(_classifier_path(args.classifier))
        seen = clf.card.training_questions
        overlap = sum(r.question_hash in seen for r in records)
        if overlap and not args.allow_training_overlap:
            raise TableError(
                f"{overlap} of {len(records)} questions are among the classifier's training questions: a "
                "held-out report needs questions it never saw (--allow-training-overlap to analyze anyway)"
            )
        report = analyze_records(
            records,
            clf,
            resamples=args.resamples,
            seed=args.seed,
            mentor_params=args.mentor_num_params,
            intern_params=args.intern_num_params,
        )
    markdown = to_markdown(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
        Path(f"{args.out}.md").write_text(markdown)
        print(f"analyze: wrote {args.out}.md and {args.out}.json")
    else:
        print(markdown)
    return 0


def _classifier_path(name: str) -> Path:
    from tandem_lm_eval.data.resources import classifiers_dir

    path = Path(name).expanduser()
    return path if path.exists() else classifiers_dir() / name
