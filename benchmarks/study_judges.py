"""The intern's self-knowledge read three ways (paper Appendix E, Table 8), held out, on collected records.

    python benchmarks/study_judges.py --train runs/judges/train.jsonl.gz --test runs/judges/test.jsonl \\
        [--lora-classifier runs/judges/lora] --out docs/judges-study

No model call: every judge reads what the records and their hidden side files hold (``collect
--hidden-layers`` or ``complete-hidden``; for Hidden w/ LoRA, ``fit --features hidden_lora`` trained the
adapter on the training split and ``complete-hidden --classifier`` added the adapted vectors of the
test questions). Train records are split by question 70/30 (seed 42, as ``fit``): estimators fit on
the 70%; the estimator of each judge, the hidden variant selected as "Hidden (best on validation)" and
every threshold are chosen on the 30% validation questions. The test questions (a test split) are
only reported on. Judges:

- **Statistics**: Eq. 7 (``tandem-v2``) over Q ⊕ I_t;
- **Hidden**: the last layer at the prompt's last token (the paper's words, the default reading), plus
  the other readings as variants (a middle layer, Q ⊕ I_t's last token) and ``tandem-v2+hidden``;
- **Hidden w/ LoRA**: the same reading from the intern with the LoRA adapter (if given);
- baselines: logistic regression on the stage alone, and on the stage and log n of Q ⊕ I_t.

Estimators per judge: the paper's MLP (lr 1e-4, 3 epochs, early stopping on accuracy), the MLP trained
to convergence (lr 1e-3, early stopping on validation loss) and L2 logistic regression with C chosen on
validation. Reported: validation AUC; test AUC over all rows and within each stage with 95% bootstrap
intervals; precision / recall / F1 per stage at the thresholds chosen on validation (objective
max_accuracy); the replayed accuracy and mean TFLOPs of each judge's cascade beside intern-only, each
fixed stage and the oracle. Writes ``<out>.json`` and ``<out>.md``.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_judgment import baseline, per_stage_auc  # noqa: E402

from tandem_lm_eval.calibration.analysis import bootstrap_auc  # noqa: E402
from tandem_lm_eval.calibration.fitting import FitSettings, fit_member, split_questions  # noqa: E402
from tandem_lm_eval.calibration.judges_table import format_auc_ci  # noqa: E402
from tandem_lm_eval.calibration.objectives import Objective, choose_thresholds  # noqa: E402
from tandem_lm_eval.calibration.replay import fixed_stage, intern_only, oracle, replay  # noqa: E402
from tandem_lm_eval.calibration.tables import hidden_file_meta, hidden_vectors, row_table, stage_table  # noqa: E402
from tandem_lm_eval.data.records import load_records  # noqa: E402
from tandem_lm_eval.judgment.judges import HiddenReading, JudgeSpec, layer_of  # noqa: E402
from tandem_lm_eval.judgment.loading import load_classifier_folder  # noqa: E402

ESTIMATORS = {
    "mlp-paper": ("mlp", {"learning_rate": 1e-4, "max_epochs": 3, "early_stopping": "accuracy"}),
    "mlp-converged": (
        "mlp",
        {"learning_rate": 1e-3, "max_epochs": 300, "patience": 30, "early_stopping": "loss"},
    ),
    **{f"logistic C={c:g}": ("logistic", {"C": c, "max_iter": 5000}) for c in (0.001, 0.01, 0.1, 1.0)},
}
SPAN = "question_insights"


def prf(y: np.ndarray, pred: np.ndarray) -> dict:
    tp = int(((pred == 1) & (y == 1)).sum())
    p = tp / max(int(pred.sum()), 1)
    r = tp / max(int(y.sum()), 1)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def evaluate(name, kind, spec, val_recs, test_recs, val_rows, test_rows, s_val, s_test, resamples) -> dict:
    """Thresholds on validation (max_accuracy), then everything on test."""
    val_table = stage_table(val_recs, lambda r: s_val, val_rows)
    choice = choose_thresholds(val_table, Objective("max_accuracy"))
    test_table = stage_table(test_recs, lambda r: s_test, test_rows)
    result = replay(test_table, choice.thresholds)
    per_stage = {}
    for t in range(test_table.num_stages):
        m = test_rows.stage == t
        per_stage[str(t)] = prf(test_rows.y[m], (s_test[m] > choice.thresholds[t]).astype(int))
    return {
        "name": name,
        "kind": kind,
        "input": spec,
        "validation_auc": bootstrap_auc(val_rows.y, s_val, 0)["auc"],
        "test_auc": per_stage_auc(test_rows, s_test, resamples),
        "thresholds": list(choice.thresholds),
        "validation_replay": choice.result.summary(),
        "test_replay": result.summary(),
        "test_prf_by_stage": per_stage,
    }


def fit_judge(spec: JudgeSpec, vectors, train, val, test, resamples: int) -> tuple[dict, dict]:
    """Each estimator on the judge's input; the one with the best validation AUC is the judge."""
    rows = [row_table(x, SPAN, spec, vectors) for x in (train, val, test)]
    tried = {}
    best = None
    for est_name, (kind, params) in ESTIMATORS.items():
        clf = fit_member(rows[0], rows[1], FitSettings(span=SPAN, kind=kind, params=dict(params), judge=spec))
        s_val, s_test = clf.sufficiency(rows[1].X), clf.sufficiency(rows[2].X)
        auc = bootstrap_auc(rows[1].y, s_val, 0)["auc"] or 0.0
        tried[est_name] = {"validation_auc": auc, "test_auc_all": bootstrap_auc(rows[2].y, s_test, 0)["auc"]}
        if best is None or auc > best[0]:
            best = (auc, est_name, s_val, s_test)
    return {"rows": rows, "estimator": best[1], "s_val": best[2], "s_test": best[3]}, tried


def with_vectors(records, vectors) -> list:
    """The records whose every usable stage has a hidden vector (a completion still running leaves
    some without): the study compares judges on the same questions."""
    return [r for r in records if all((r.question_hash, s.stage) in vectors for s in r.stages if s.usable)]


def compare_judges(train_all, test, judges: dict, resamples: int) -> dict:
    """Every judge (and the two baselines) fit on the 70% of ``train_all``, chosen on the 30%, tested."""
    seen = {r.question_hash for r in train_all}
    if any(r.question_hash in seen for r in test):
        raise SystemExit("test questions are also training questions: refusing")
    val_mask = split_questions(train_all, 0.3, 42)
    train = [r for r, v in zip(train_all, val_mask) if not v]
    val = [r for r, v in zip(train_all, val_mask) if v]
    out: dict = {
        "questions": {"train": len(train), "validation": len(val), "test": len(test)},
        "estimators_tried": {},
        "judges": {},
    }
    for name, (fs, spec, vectors) in judges.items():
        print(f"fitting {name} ...", flush=True)
        best, tried = fit_judge(spec, vectors, train, val, test, resamples)
        out["estimators_tried"][name] = tried
        rows = best["rows"]
        entry = evaluate(
            name, fs, _describe(spec), val, test, rows[1], rows[2], best["s_val"], best["s_test"], resamples
        )
        entry["estimator"] = best["estimator"]
        out["judges"][name] = entry
    tr, va, te = (row_table(x, SPAN) for x in (train, val, test))
    for name, with_length in (("stage only", False), ("length + stage", True)):
        what = "logistic regression on the stage one-hot" + (" + log n of Q ⊕ I_t" if with_length else "")
        s_val, s_test = baseline(tr, va, with_length), baseline(tr, te, with_length)
        out["judges"][name] = evaluate(name, "baseline", what, val, test, va, te, s_val, s_test, resamples)
        out["judges"][name]["estimator"] = "logistic"
    test_table = stage_table(test, lambda r: np.zeros(len(r)), te)
    out["test_baselines"] = {
        "intern only": intern_only(test_table).summary(),
        **{f"fixed:{t}": fixed_stage(test_table, t).summary() for t in range(1, test_table.num_stages)},
        "oracle": oracle(test_table).summary(),
    }
    out["label_rate_test_by_stage"] = [
        float(te.y[te.stage == t].mean()) for t in range(test_table.num_stages)
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument(
        "--lora-classifier", type=Path, default=None, help="a fit --features hidden_lora folder"
    )
    parser.add_argument(
        "--lora-train", type=Path, default=None, help="the records that classifier was fit on"
    )
    parser.add_argument(
        "--lora-test", type=Path, default=None, help="test records completed with its adapter"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/judges-study"))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument(
        "--lora-only", action="store_true", help="add the LoRA section to an existing <out>.json (no refit)"
    )
    args = parser.parse_args()
    t_start = time.perf_counter()
    record_files = [args.train, args.test] + [p for p in (args.lora_train, args.lora_test) if p]
    meta = hidden_file_meta([args.train])
    L, d = int(meta["num_layers"]), int(meta["hidden_size"])

    def hidden_spec(feature_set: str, layer: str, position: str, adapter: dict | None = None) -> tuple:
        reading = HiddenReading(layer_of(layer, L), L, d, position, adapter)
        vectors = {}
        for path in record_files:
            try:
                vectors.update(hidden_vectors([path], reading.key)[0])
            except ValueError:  # this file has no such vectors (the LoRA ones are in the subset's files)
                continue
        return JudgeSpec(feature_set, SPAN, reading), vectors

    judges: dict[str, tuple] = {"Statistics": ("tandem-v2", JudgeSpec("tandem-v2", SPAN), None)}
    judges["Hidden"] = ("hidden", *hidden_spec("hidden", "last", "prompt_end"))
    if args.lora_only:
        study = json.loads(Path(f"{args.out}.json").read_text())
        add_lora(study, args, judges, hidden_spec)
        write(study, args.out)
        return
    variants = {
        "Hidden: layer 0.5 depth, prompt end": ("hidden", "0.5", "prompt_end"),
        "Hidden: layer 0.7 depth, prompt end": ("hidden", "0.7", "prompt_end"),
        "Hidden: last layer, Q ⊕ I_t end": ("hidden", "last", "question_insights_end"),
        "Statistics + Hidden": ("tandem-v2+hidden", "last", "prompt_end"),
    }
    for name, (fs, layer, position) in variants.items():
        judges[name] = (fs, *hidden_spec(fs, layer, position))
    base_vectors = judges["Hidden"][2]
    full_train, full_test = load_records([args.train]), load_records([args.test])
    train_all, test = (
        with_vectors(full_train, base_vectors),
        with_vectors(full_test, base_vectors),
    )
    study: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "records": {"train": str(args.train), "test": str(args.test)},
        "records_with_hidden": {
            "train": f"{len(train_all)} of {len(full_train)}",
            "test": f"{len(test)} of {len(full_test)}",
        },
        "intern": {"model": meta.get("intern_model"), "num_layers": L, "hidden_size": d},
        **compare_judges(train_all, test, judges, args.resamples),
    }
    hidden_names = [n for n in judges if n.startswith("Hidden")]
    study["hidden_selected_on_validation"] = max(
        hidden_names, key=lambda n: study["judges"][n]["validation_auc"] or 0.0
    )
    if args.lora_classifier:
        add_lora(study, args, judges, hidden_spec)
    study["seconds"] = time.perf_counter() - t_start
    write(study, args.out)


def add_lora(study: dict, args, judges: dict, hidden_spec) -> None:
    """Statistics, Hidden and Hidden w/ LoRA on the subset the adapter was trained and completed on."""
    h = load_classifier_folder(args.lora_classifier).card.hidden
    lora_judges = {k: judges[k] for k in ("Statistics", "Hidden")}
    lora_judges["Hidden w/ LoRA"] = (
        "hidden_lora",
        *hidden_spec("hidden_lora", str(h.layer), h.position, h.adapter),
    )
    lora_vectors = lora_judges["Hidden w/ LoRA"][2]
    lora_train = with_vectors(load_records([args.lora_train]), lora_vectors)
    lora_test = with_vectors(load_records([args.lora_test]), lora_vectors)
    study["lora"] = {
        "adapter": h.adapter,
        "records": {"train": str(args.lora_train), "test": str(args.lora_test)},
        **compare_judges(lora_train, lora_test, lora_judges, args.resamples),
    }


def write(study: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(study, indent=2) + "\n")
    Path(f"{out}.md").write_text(markdown(study))
    print(markdown(study))


def _describe(spec: JudgeSpec) -> str:
    if spec.hidden is None:
        return f"{spec.feature_set} over {spec.span}"
    h = spec.hidden
    extra = f", LoRA r={h.adapter['rank']}" if h.adapter else ""
    stats = "Eq. 7 statistics + " if spec.feature_set.startswith("tandem-v2") else ""
    return f"{stats}layer {h.layer}/{h.num_layers} at {h.position} ({h.hidden_size} units{extra})"


def section(part: dict, title: str) -> list[str]:
    q = part["questions"]
    lines = [
        f"## {title}",
        "",
        f"Questions: {q['train']} train / {q['validation']} validation (by question, stratified, seed 42) / "
        f"{q['test']} test (never used for a choice). Sufficient rate on test by stage: "
        + ", ".join(f"{x:.3f}" for x in part["label_rate_test_by_stage"])
        + ".",
        "",
        "### AUC (validation: the choice of estimator; test: 95% bootstrap interval)",
        "",
        "| judge | input | estimator (by validation AUC) | validation AUC | test, all rows | stage 0 | stage 1 | stage 2 | stage 3 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in part["judges"].items():
        a = v["test_auc"]
        cells = " | ".join(format_auc_ci(a.get(str(t), {})) for t in range(4))
        val = "n/a" if v["validation_auc"] is None else f"{v['validation_auc']:.3f}"
        lines.append(
            f"| {name} | {v['input']} | {v['estimator']} | {val} | {format_auc_ci(a['all'])} | {cells} |"
        )
    lines += [
        "",
        "### Test precision / recall / F1 per stage at thresholds chosen on validation (Table 9)",
        "",
        "| judge | thresholds | stage 0 | stage 1 | stage 2 | stage 3 |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in part["judges"].items():
        cells = " | ".join(
            f"{p['precision']:.2f} / {p['recall']:.2f} / {p['f1']:.2f}"
            for p in v["test_prf_by_stage"].values()
        )
        lines.append(f"| {name} | {v['thresholds']} | {cells} |")
    lines += [
        "",
        "### Replayed on the test questions (Table 8's columns for one group: accuracy, mean TFLOPs)",
        "",
        "| method | accuracy | mean mentor tokens | mean TFLOPs | stage distribution |",
        "|---|---|---|---|---|",
    ]
    points = {
        **part["test_baselines"],
        **{f"Tandem, {k}": v["test_replay"] for k, v in part["judges"].items()},
    }
    for name, v in points.items():
        dist = ", ".join(f"{x:.2f}" for x in v["stage_distribution"].values())
        lines.append(
            f"| {name} | {v['accuracy']:.3f} | {v['mean_mentor_tokens']:.1f} | {v['mean_tflops']:.3f} | {dist} |"
        )
    lines += ["", "Estimators tried (validation AUC / test AUC, all rows):", ""]
    for name, tried in part["estimators_tried"].items():
        lines.append(
            f"- {name}: "
            + "; ".join(
                f"{k} {v['validation_auc']:.3f} / {(v['test_auc_all'] or 0):.3f}" for k, v in tried.items()
            )
        )
    return lines


def markdown(study: dict) -> str:
    lines = [
        "# The intern's self-knowledge read three ways: Statistics, Hidden, Hidden w/ LoRA (held out)",
        "",
        f"{study['date']}, {study['machine']}; `benchmarks/study_judges.py` (no model call: records and their "
        f"hidden side files). Intern {study['intern']['model']} ({study['intern']['num_layers']} layers, "
        f"{study['intern']['hidden_size']} units). Records: {study['records']['train']} (GSM8K train split) and "
        f"{study['records']['test']} (GSM8K test split); with hidden vectors: train {study['records_with_hidden']['train']}, "
        f"test {study['records_with_hidden']['test']}.",
        "",
        *section(study, "All judges on the same questions"),
        "",
        f"Best hidden reading on validation: **{study['hidden_selected_on_validation']}**.",
    ]
    if "lora" in study:
        a = study["lora"]["adapter"]
        lines += [
            "",
            *section(
                study["lora"], "Hidden w/ LoRA, on the subset its adapter could be trained and evaluated on"
            ),
            "",
            f"Adapter: rank {a['rank']}, alpha {a['alpha']}, dropout {a['dropout']}, targets {a['target_modules']}, "
            f"{a['epochs']} epoch(s), {a['steps']} steps, lr {a['learning_rate']}, {a['train_rows']} training rows "
            f"({a['train_positives']} sufficient), {a['seconds']:.0f} s ({a['seconds_per_row_epoch']:.2f} s per row "
            f"and epoch on this loaded machine); objective: {a['objective']}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
