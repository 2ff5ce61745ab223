"""``tandem-lm-eval fit``: its arguments and what it runs (calibration/fitting.py does the work)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from tandem_lm_eval.calibration.fitting import KINDS, THRESHOLD_ROWS, FitSettings, fit_records
from tandem_lm_eval.calibration.model_card import model_card
from tandem_lm_eval.calibration.objectives import OBJECTIVE_KINDS, Objective
from tandem_lm_eval.calibration.tables import TableError, hidden_file_meta, hidden_vectors
from tandem_lm_eval.common.options import OptionError
from tandem_lm_eval.data.records import load_records
from tandem_lm_eval.judgment.features import DEFAULT_SPAN, FEATURE_SPANS
from tandem_lm_eval.judgment.judges import (
    DEFAULT_LAYER,
    DEFAULT_POSITION,
    FEATURE_SETS,
    HIDDEN_POSITIONS,
    STATISTICS,
    HiddenReading,
    JudgeSpec,
    layer_of,
    needs_adapter,
    needs_hidden,
)


# --- command line ----------------------------------------------------------------------------------
def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", type=Path, nargs="+", required=True, help="collect output (JSONL)")
    p.add_argument("--out", type=Path, required=True, help="classifier folder to write")
    p.add_argument("--span", default=DEFAULT_SPAN, choices=FEATURE_SPANS, help="features over which tokens")
    p.add_argument(
        "--features",
        default=STATISTICS,
        choices=FEATURE_SETS,
        help="what the judge reads: Eq. 7 statistics (tandem-v2), the intern's hidden state (hidden), the "
        "hidden state of the intern with a LoRA adapter trained here (hidden_lora), or statistics + hidden",
    )
    p.add_argument(
        "--hidden-layer",
        default=DEFAULT_LAYER,
        help="hidden judges: 'last', an index, or a fraction of the depth",
    )
    p.add_argument("--hidden-position", default=DEFAULT_POSITION, choices=HIDDEN_POSITIONS)
    p.add_argument(
        "--model_args",
        default="",
        help="hidden_lora: the intern as the collect named it (intern=...); the adapter is trained on it",
    )
    p.add_argument("--lora-rank", type=int, default=8, help="hidden_lora: LoRA rank r")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="hidden_lora: LoRA alpha")
    p.add_argument(
        "--lora-targets", default="q_proj,v_proj", help="hidden_lora: module names the adapter wraps"
    )
    p.add_argument(
        "--lora-epochs", type=float, default=2.0, help="hidden_lora: passes over the training rows"
    )
    p.add_argument("--lora-learning-rate", type=float, default=1e-4, help="hidden_lora: AdamW learning rate")
    p.add_argument(
        "--lora-max-rows", type=int, default=None, help="hidden_lora: train on at most this many rows (time)"
    )
    p.add_argument("--kind", default="mlp", choices=KINDS, help="estimator (mlp = the paper's)")
    p.add_argument("--max-epochs", type=int, default=3, help="MLP: epochs (paper: 3)")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="MLP: Adam learning rate (paper: 1e-4)")
    p.add_argument("--patience", type=int, default=10, help="MLP: epochs without improvement before stopping")
    p.add_argument(
        "--early-stopping", default="accuracy", choices=("accuracy", "loss"), help="MLP: validation criterion"
    )
    p.add_argument(
        "--objective",
        default="max_accuracy",
        choices=OBJECTIVE_KINDS,
        help="threshold rule (docs/classifier.md)",
    )
    p.add_argument("--max-tflops", type=float, help="max_accuracy, one_se: cap on mean TFLOPs per question")
    p.add_argument(
        "--max-cost-fraction",
        type=float,
        help="max_accuracy, one_se: cap as a fraction of the last fixed stage's cost",
    )
    p.add_argument(
        "--se-multiplier",
        type=float,
        default=1.0,
        help="one_se: how many standard errors below the best accuracy still count as as good",
    )
    p.add_argument("--min-accuracy", type=float, help="min_cost: accuracy floor")
    p.add_argument(
        "--min-accuracy-fraction",
        type=float,
        help="min_cost: floor as a fraction of the last fixed stage's accuracy",
    )
    p.add_argument(
        "--stage0",
        default="stop",
        choices=("stop", "fallback"),
        help="may stage 0 stop early, or only be a fallback",
    )
    p.add_argument(
        "--threshold-rows",
        default=None,
        choices=THRESHOLD_ROWS,
        help="rows thresholds are chosen on: every training question scored out of fold (cv, default: it "
        "transfers best, docs/judgment-study.md), the held-out validation part (§2.3; the default for "
        "hidden_lora, whose adapter learnt from the training part) or the training part (§3.1)",
    )
    p.add_argument(
        "--cv-folds", type=int, default=None, help="--threshold-rows cv: folds of the training questions (5)"
    )
    p.add_argument("--validation-fraction", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--per-group", action="store_true", help="one classifier per group plus a unified fallback"
    )
    p.add_argument("--min-group-questions", type=int, default=30)
    p.add_argument(
        "--policy",
        default="tandem",
        choices=("tandem", "route", "router"),
        help="thresholds for the Tandem stop rule, a stage-0 router for mode=route, or one for mode=router "
        "(the intern alone or the mentor alone; records from collect --mentor-answers)",
    )
    p.add_argument("--mentor-num-params", type=float, help="|θL| for Eq. 12 (default: from the records)")
    p.add_argument("--intern-num-params", type=float, help="|θS| for Eq. 12 (default: from the records)")
    p.add_argument("--allow-test-rows", action="store_true", help="fit on records from a test split anyway")


def settings_from_args(args) -> FitSettings:
    params = None
    if args.kind == "mlp":
        params = {
            "max_epochs": args.max_epochs,
            "learning_rate": args.learning_rate,
            "patience": args.patience,
            "early_stopping": args.early_stopping,
            "random_state": args.seed,
        }
    objective = Objective(
        args.objective,
        max_tflops=args.max_tflops,
        max_cost_fraction=args.max_cost_fraction,
        min_accuracy=args.min_accuracy,
        min_accuracy_fraction=args.min_accuracy_fraction,
        stage0=args.stage0,
        se_multiplier=args.se_multiplier,  # refused unless one_se
    )
    return FitSettings(
        span=args.span,
        kind=args.kind,
        params=params,
        objective=objective,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        threshold_rows=threshold_rows(args),
        cv_folds=_cv_folds(args),
        per_group=args.per_group,
        policy=args.policy,
        min_group_questions=args.min_group_questions,
        mentor_params=args.mentor_num_params,
        intern_params=args.intern_num_params,
    )


def threshold_rows(args) -> str:
    """``--threshold-rows``, default ``cv``; ``validation`` for a hidden_lora judge, whose adapter learnt
    from the training part's labels: their out-of-fold scores would not be out of sample."""
    lora = needs_adapter(getattr(args, "features", STATISTICS))
    if args.threshold_rows == "cv" and lora:  # refused here, before the adapter's training
        raise OptionError(
            "--threshold-rows cv does not suit --features hidden_lora: the adapter learns from the training "
            "questions' labels, so their vectors are not out of sample in any fold; use validation (the "
            "default for hidden_lora) or train"
        )
    if args.threshold_rows is not None:
        return args.threshold_rows
    return "validation" if lora else "cv"


def _cv_folds(args) -> int:
    if args.cv_folds is None:
        return 5
    if threshold_rows(args) != "cv":
        raise OptionError("--cv-folds is for --threshold-rows cv")
    if args.cv_folds < 2:
        raise OptionError(f"--cv-folds must be at least 2, got {args.cv_folds}")
    return args.cv_folds


def judge_for(args, settings: FitSettings, adapter: dict | None = None) -> FitSettings:
    """``settings`` with the judge of ``--features`` and, for hidden judges, the records' vectors."""
    if not needs_hidden(args.features):
        settings.judge = JudgeSpec(args.features, settings.span)
        return settings
    meta = hidden_file_meta(args.records)
    num_layers, hidden_size = int(meta["num_layers"]), int(meta["hidden_size"])
    reading = HiddenReading(
        layer_of(args.hidden_layer, num_layers), num_layers, hidden_size, args.hidden_position, adapter
    )
    settings.judge = JudgeSpec(args.features, settings.span, reading)
    settings.hidden, _ = hidden_vectors(args.records, reading.key)
    return settings


def run_fit(args) -> dict:
    settings = settings_from_args(args)  # every value checked before the records are read
    records = load_records(args.records)
    if not records:  # else a traceback-less "min() arg is an empty sequence" from deep in the fit
        raise TableError(f"--records {' '.join(str(p) for p in args.records)}: no records to fit on")
    adapter_dir = None
    if needs_adapter(args.features):
        if len(args.records) != 1:
            raise OptionError("--features hidden_lora trains on one record file: join them first")
        # the LoRA adapter first (the intern fine-tuned on the training split), then its vectors
        from tandem_lm_eval.workflows.lora_judge import train_adapter_for_fit

        adapter_dir, adapter = train_adapter_for_fit(records, settings, args)
        settings = judge_for(args, settings, adapter)
    else:
        settings = judge_for(args, settings)
    clf, report = fit_records(records, settings, allow_test_rows=args.allow_test_rows)
    clf.save(args.out)
    if adapter_dir is not None:
        from tandem_lm_eval.workflows.lora_judge import place_adapter

        place_adapter(adapter_dir, args.out)
    provenance = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {platform.system()}, {_cpus()} CPUs",
        "command": "tandem-lm-eval " + " ".join(getattr(args, "argv", None) or sys.argv[1:]),
        "records": [str(p) for p in args.records],
        "tasks": sorted({str(r.task) for r in records}),
        "mentor": sorted({r.mentor.model for r in records if r.mentor is not None}),
    }
    (Path(args.out) / "README.md").write_text(model_card(Path(args.out).name, clf, report, provenance))
    (Path(args.out) / "fit_report.json").write_text(
        json.dumps({"provenance": provenance, **report}, indent=2) + "\n"
    )
    return report


def _cpus() -> int:
    import os

    return os.cpu_count() or 0
