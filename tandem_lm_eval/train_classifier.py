"""Train a sufficiency classifier for a mentor/intern pair (paper section 3.1).

Two steps, so the expensive one runs once:

    # 1. run the pair over training questions: features and the intern's answer at every stage
    python -m tandem_lm_eval.train_classifier collect --mentor demo --intern demo \\
        --dataset gsm8k_train --limit 200 --out runs/demo_gsm8k.jsonl

    # 2. label (correct answer = sufficient), fit the MLP, pick per-stage thresholds, write the card
    python -m tandem_lm_eval.train_classifier fit --rows runs/demo_gsm8k.jsonl \\
        --out classifiers/smollm2-135m-gsm8k

``collect`` appends one JSON line per (question, stage) and skips questions already in the file, so
an interrupted run resumes. Backend options per role are given like model_args:
``--mentor-arg backend=vllm --mentor-arg dtype=float32``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from .backends.base import Message
from .cascade import Cascade
from .classifier import SufficiencyClassifier, grid_search_threshold
from .config import DEFAULT_BUDGETS, TandemConfig
from .features import FEATURE_SET
from .policies import FixedStagePolicy
from .prompts import Question
from .scoring.prompts import MATH_INSTRUCTION, math_prompt

logger = logging.getLogger("tandem_lm_eval.train_classifier")


@dataclass(frozen=True)
class TrainingQuestion:
    qid: str
    text: str
    gold: str


def load_training_questions(dataset: str, limit: int | None, offset: int = 0) -> list[TrainingQuestion]:
    """Training questions: GSM8K train, or the MATH train variant (local data or the hub)."""
    from .datasets import load_gsm8k, load_math

    if dataset == "gsm8k_train":
        questions = [TrainingQuestion(r["id"], r["question"], r["answer"]) for r in load_gsm8k("train")]
    elif dataset == "math_train":
        questions = [TrainingQuestion(r["id"], r["problem"], r["answer"]) for r in load_math("train")]
    else:
        raise SystemExit(f"unknown dataset {dataset!r}; use gsm8k_train or math_train")
    questions = questions[offset:]
    return questions[:limit] if limit else questions


def checker_for(dataset: str) -> Callable[[str, str], bool]:
    if dataset.startswith("gsm8k"):
        from .scoring.gsm8k_answer import gsm8k_gold, score_gsm8k_response

        # rows keep GSM8K's whole answer field ("... #### 72"); the gold is the number after ####
        return lambda answer, gold: bool(
            score_gsm8k_response(answer, gsm8k_gold(gold) if "####" in gold else gold)
        )
    from .scoring.math_answer import score_math_response

    return lambda answer, gold: bool(score_math_response(answer, gold))


# --- collect ------------------------------------------------------------------------------------------
def collect(
    cascade: Cascade,
    questions: Sequence[TrainingQuestion],
    out_path: Path,
    dataset: str,
    chunk: int = 32,
    answer_max_tokens: int = 512,
) -> int:
    """Run ``cascade.explore`` chunk by chunk, appending rows to ``out_path``; returns rows written."""
    done = set()
    if out_path.is_file():
        done = {json.loads(line)["qid"] for line in out_path.read_text().splitlines() if line.strip()}
    todo = [q for q in questions if q.qid not in done]
    logger.info("collect: %d questions (%d already in %s)", len(todo), len(done), out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    for start in range(0, len(todo), chunk):
        batch = todo[start : start + chunk]
        t0 = time.perf_counter()
        rows = cascade.explore(
            [
                # the same user turn as the tandem_gsm8k / tandem_math tasks
                Question((Message("user", math_prompt(q.text)),), max_gen_toks=answer_max_tokens)
                for q in batch
            ]
        )
        with out_path.open("a", encoding="utf-8") as fh:
            for q, outcomes in zip(batch, rows):
                for o in outcomes:
                    fh.write(
                        json.dumps(
                            {
                                "qid": q.qid,
                                "dataset": dataset,
                                "gold": q.gold,
                                "stage": o.stage,
                                "features": None if o.features is None else [float(x) for x in o.features],
                                "answer": o.answer,
                                "mentor_tokens": o.mentor_tokens,
                                "intern_tokens": o.intern_tokens,
                            }
                        )
                        + "\n"
                    )
                    written += 1
        logger.info(
            "collect: %d/%d questions, chunk %.1f s", start + len(batch), len(todo), time.perf_counter() - t0
        )
    return written


# --- fit ----------------------------------------------------------------------------------------------
@dataclass
class TrainingTable:
    qids: np.ndarray
    stages: np.ndarray
    X: np.ndarray
    y: np.ndarray
    mentor_tokens: np.ndarray
    intern_tokens: np.ndarray


def label_rows(rows: list[dict], checker: Callable[[str, str], bool]) -> TrainingTable:
    rows = [r for r in rows if r["features"] is not None and r["answer"] is not None]
    return TrainingTable(
        qids=np.array([r["qid"] for r in rows]),
        stages=np.array([r["stage"] for r in rows], dtype=int),
        X=np.array([r["features"] for r in rows], dtype=np.float64),
        y=np.array([checker(r["answer"], r["gold"]) for r in rows], dtype=int),
        mentor_tokens=np.array([r["mentor_tokens"] for r in rows], dtype=float),
        intern_tokens=np.array([r["intern_tokens"] for r in rows], dtype=float),
    )


def split_by_question(qids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows; all stages of a question fall on the same side."""
    unique = np.unique(qids)
    rng = np.random.default_rng(seed)
    val = set(rng.choice(unique, size=max(1, int(round(len(unique) * fraction))), replace=False))
    return np.array([q in val for q in qids])


def simulate_cascade(table: TrainingTable, scores: np.ndarray, thresholds: Sequence[float]) -> dict:
    """Offline replay of the stop rule on labelled rows: accuracy, stage distribution, mean tokens."""
    from .policies.base import select_stage

    correct, stages, mentor = [], [], []
    for q in np.unique(table.qids):
        idx = np.flatnonzero(table.qids == q)
        idx = idx[np.argsort(table.stages[idx])]
        t, _ = select_stage(list(scores[idx]), thresholds[: len(idx)])
        # the mentor tokens spent: up to the stopping stage, or all stages when the fallback was used
        correct.append(table.y[idx[t]])
        stages.append(int(table.stages[idx[t]]))
        mentor.append(table.mentor_tokens[idx[t]])
    n = max(len(correct), 1)
    return {
        "questions": len(correct),
        "accuracy": float(np.mean(correct)) if correct else 0.0,
        "stage_distribution": {str(s): stages.count(s) / n for s in sorted(set(stages))},
        "mean_mentor_tokens_at_answer": float(np.mean(mentor)) if mentor else 0.0,
    }


def fixed_stage_accuracy(table: TrainingTable, num_stages: int) -> dict[str, float]:
    return {
        str(t): float(table.y[table.stages == t].mean())
        for t in range(num_stages)
        if (table.stages == t).any()
    }


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (rank formulation); None when one class is missing."""
    from scipy.stats import rankdata

    pos, neg = labels == 1, labels == 0
    if not pos.any() or not neg.any():
        return None
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))


def fit(
    table: TrainingTable,
    budgets: Sequence[int],
    clf: SufficiencyClassifier,
    validation_fraction: float = 0.3,
) -> tuple[SufficiencyClassifier, dict]:
    num_stages = len(budgets) + 1
    val = split_by_question(table.qids, validation_fraction, clf.random_state)
    clf.fit(table.X[~val], table.y[~val], table.X[val], table.y[val])
    scores = clf.sufficiency(table.X)
    # Paper: thresholds by grid search on the training set, per effort level.
    thresholds = []
    for t in range(num_stages):
        m = (~val) & (table.stages == t)
        thresholds.append(grid_search_threshold(scores[m], table.y[m]))
    clf.card.thresholds = thresholds
    clf.card.budgets = list(budgets)
    train, valid = _subset(table, ~val), _subset(table, val)
    report = {
        "rows": {"train": int((~val).sum()), "validation": int(val.sum())},
        "questions": {"train": len(np.unique(train.qids)), "validation": len(np.unique(valid.qids))},
        "positive_rate": {"train": float(train.y.mean()), "validation": float(valid.y.mean())},
        "validation_auc": auc(scores[val], table.y[val]),
        "validation_accuracy_at_0.5": float(((scores[val] > 0.5) == table.y[val]).mean()),
        "thresholds": thresholds,
        "fixed_stage_accuracy_validation": fixed_stage_accuracy(valid, num_stages),
        "cascade_validation": simulate_cascade(valid, scores[val], thresholds),
    }
    return clf, report


def _subset(table: TrainingTable, mask: np.ndarray) -> TrainingTable:
    return TrainingTable(*(getattr(table, f)[mask] for f in TrainingTable.__dataclass_fields__))


def model_card(name: str, clf: SufficiencyClassifier, report: dict, provenance: dict) -> str:
    r = report
    lines = [
        f"# Sufficiency classifier `{name}`",
        "",
        f"Feature set `{FEATURE_SET}` (17 features, see `tandem_lm_eval/features.py`), intern "
        f"`{clf.card.intern_model}`, entropy `{clf.card.entropy_method}`, budgets {clf.card.budgets}.",
        "",
        "## How it was made",
        f"- date: {provenance.get('date')}; machine: {provenance.get('machine')}",
        f"- mentor: `{provenance.get('mentor')}`, intern: `{provenance.get('intern')}` "
        f"(backends: {provenance.get('backends')})",
        f"- data: {provenance.get('dataset')}, {r['questions']['train'] + r['questions']['validation']} questions "
        f"x {len(clf.card.budgets) + 1} stages; the intern answered at every stage (greedy, at most "
        f"{provenance.get('answer_max_tokens')} tokens), label = answer correct",
        f"- prompt: {provenance.get('prompt', 'the tandem_gsm8k task prompt: the question, a blank line, then `' + MATH_INSTRUCTION + '`')}",
        f"- split by question, {r['questions']['train']} train / {r['questions']['validation']} validation "
        f"(seed {clf.random_state})",
        f"- MLP 64-32, ReLU, dropout {clf.dropout}, Adam lr {clf.learning_rate}, batch {clf.batch_size}, "
        f"up to {clf.max_epochs} epochs, early stopping on validation accuracy (patience {clf.patience}); "
        f"epochs run: {len(clf.history_)}",
        "- thresholds: grid 0.05..0.95 per stage on the training rows (accuracy of s > tau as a predictor of "
        "the label; ties to the higher tau)",
        f"- command: `{provenance.get('command')}`",
        "",
        "## How well it separates",
        f"- positive rate (intern correct): train {r['positive_rate']['train']:.3f}, "
        f"validation {r['positive_rate']['validation']:.3f}",
        f"- validation AUC: {_fmt(r['validation_auc'])}; validation accuracy at s > 0.5: "
        f"{r['validation_accuracy_at_0.5']:.3f}",
        f"- per-stage thresholds: {[round(t, 2) for t in r['thresholds']]}",
        f"- fixed-stage accuracy on validation questions: {r['fixed_stage_accuracy_validation']}",
        f"- replayed cascade on validation questions: accuracy {r['cascade_validation']['accuracy']:.3f}, "
        f"stage distribution {r['cascade_validation']['stage_distribution']}, mean mentor tokens "
        f"{r['cascade_validation']['mean_mentor_tokens_at_answer']:.0f}",
        "",
        "## Limits",
        provenance.get(
            "limits",
            "Trained for this intern and feature set only; the loader refuses another intern or entropy method.",
        ),
        "",
    ]
    return "\n".join(lines)


def _fmt(x) -> str:
    return "n/a (one class only)" if x is None else f"{x:.3f}"


# --- CLI ----------------------------------------------------------------------------------------------
def _role_args(pairs: Sequence[str], role: str) -> dict:
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--{role}-arg expects key=value, got {pair!r}")
        out[f"{role}_{key}"] = value
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tandem_lm_eval.train_classifier", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="run the pair over training questions, write features + answers")
    c.add_argument("--mentor", default="demo")
    c.add_argument("--intern", default="demo")
    c.add_argument("--mentor-arg", action="append", default=[], help="backend option key=value (repeatable)")
    c.add_argument("--intern-arg", action="append", default=[])
    c.add_argument("--dataset", default="gsm8k_train", choices=["gsm8k_train", "math_train"])
    c.add_argument("--limit", type=int, default=200)
    c.add_argument("--offset", type=int, default=0)
    c.add_argument("--budgets", default="/".join(map(str, DEFAULT_BUDGETS)))
    c.add_argument("--answer-max-tokens", type=int, default=512)
    c.add_argument("--chunk", type=int, default=32)
    c.add_argument("--out", type=Path, required=True)
    f = sub.add_parser("fit", help="label rows, train the MLP, choose thresholds, save with a model card")
    f.add_argument("--rows", type=Path, nargs="+", required=True)
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--intern-model", required=True, help="the intern's name as recorded in the card")
    f.add_argument("--entropy-method", default="exact", choices=["exact", "topk"])
    f.add_argument("--budgets", default="/".join(map(str, DEFAULT_BUDGETS)))
    f.add_argument("--max-epochs", type=int, default=3)
    f.add_argument("--learning-rate", type=float, default=1e-4)
    f.add_argument("--machine", default="")
    f.add_argument("--provenance", type=Path, help="JSON with mentor/intern/backends/limits for the card")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    if args.command == "collect":
        cfg = TandemConfig.from_model_args(
            {
                "mentor": args.mentor,
                "intern": args.intern,
                "budgets": args.budgets,
                "mode": f"fixed:{len(args.budgets.split('/'))}",
                **_role_args(args.mentor_arg, "mentor"),
                **_role_args(args.intern_arg, "intern"),
            }
        )
        from .model import build_backends

        mentor, intern, mentor_params, intern_params = build_backends(cfg)
        cascade = Cascade(
            mentor,
            intern,
            FixedStagePolicy(len(cfg.budgets)),
            cfg.budgets,
            mentor_params=mentor_params,
            intern_params=intern_params,
            mentor_thinking=cfg.mentor.thinking,
            intern_thinking=cfg.intern.thinking,
        )
        questions = load_training_questions(args.dataset, args.limit, args.offset)
        n = collect(cascade, questions, args.out, args.dataset, args.chunk, args.answer_max_tokens)
        print(f"wrote {n} rows to {args.out}")
        return

    rows = [json.loads(line) for path in args.rows for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise SystemExit("no rows to fit on")
    dataset = rows[0]["dataset"]
    table = label_rows(rows, checker_for(dataset))
    budgets = [int(b) for b in args.budgets.split("/")]
    clf = SufficiencyClassifier(max_epochs=args.max_epochs, learning_rate=args.learning_rate)
    clf.card.intern_model = args.intern_model
    clf.card.entropy_method = args.entropy_method
    clf, report = fit(table, budgets, clf)
    clf.card.training.update({"dataset": dataset, "report": report})
    clf.save(args.out)
    provenance = json.loads(args.provenance.read_text()) if args.provenance else {}
    provenance.setdefault("date", date.today().isoformat())
    provenance.setdefault("machine", args.machine)
    provenance.setdefault("dataset", dataset)
    provenance.setdefault("command", "python -m tandem_lm_eval.train_classifier " + " ".join(sys.argv[1:]))
    (args.out / "README.md").write_text(model_card(args.out.name, clf, report, provenance))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
