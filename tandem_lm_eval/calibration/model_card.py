"""The model card (README.md) written beside a fitted classifier."""

from __future__ import annotations

import json

from tandem_lm_eval.calibration.replay import format_distribution


def model_card(name: str, clf, report: dict, provenance: dict) -> str:
    """A README for the classifier folder: how it was made and how it did on held-out rows."""
    card = clf.card
    choice = report["threshold_choice"]
    reads = f"`{card.feature_set}` features (span `{card.feature_span}`)"
    if card.hidden is not None:
        h = card.hidden
        reads = (
            f"`{card.feature_set}`: the intern's hidden state, layer {h.layer} of {h.num_layers} at `{h.position}` "
            f"({h.hidden_size} units)"
            + (f", with the LoRA adapter in `adapter/` (sha256 {h.adapter_id[:16]}...)" if h.adapter else "")
        )
    lines = [
        f"# Sufficiency classifier `{name}`",
        "",
        f"{report['kind']} over {reads}, intern `{card.intern_model}`, entropy `{card.entropy_method}`, "
        f"budgets {card.budgets}.",
        "",
        "## How it was made",
        f"- {provenance['date']} on {provenance['machine']}: `{provenance['command']}`",
        f"- records: {', '.join(provenance['records'])} (tasks {', '.join(provenance['tasks'])}; mentor "
        f"{', '.join(provenance['mentor']) or 'n/a'})",
        f"- questions: {report['questions']['train']} train / {report['questions']['validation']} validation "
        f"(split by question, stratified); rows {report['rows']['train']} / {report['rows']['validation']}; "
        f"positive rate {report['positive_rate']['train']:.3f} / {report['positive_rate']['validation']:.3f}",
        f"- thresholds {[round(t, 2) for t in card.thresholds]} by objective `{json.dumps(card.threshold_objective)}`"
        f" ({'feasible' if choice.get('feasible', True) else 'NOT feasible: ' + str(choice.get('note'))})",
        "",
        f"## On the {_rows_name(card.threshold_objective.get('rows', 'validation'))} (replayed, no model calls)",
        f"- AUC {_fmt(report['validation_auc'])} (validation); by stage: "
        + ", ".join(f"{t}: {_fmt(v)}" for t, v in report["validation_auc_by_stage"].items()),
        f"- {'Tandem' if card.policy == 'tandem' else 'routing cascade (mode=route)'}: accuracy "
        f"{choice['summary']['accuracy']:.3f}, mean TFLOPs "
        f"{choice['summary']['mean_tflops']:.3f}, mean mentor tokens {choice['summary']['mean_mentor_tokens']:.1f}, "
        f"stage distribution {format_distribution(choice['summary'])}",
    ]
    base_key = next(k for k in report if k.startswith("baselines_on_"))
    for label, summary in report[base_key].items():
        lines.append(
            f"- {label}: accuracy {summary['accuracy']:.3f}, mean TFLOPs {summary['mean_tflops']:.3f}, "
            f"mean mentor tokens {summary['mean_mentor_tokens']:.1f}"
        )
    if report.get("test_split_origin"):
        lines += ["", "## Where the training questions come from", f"- {report['test_split_origin']}"]
    if report.get("groups_using_fallback"):
        lines += [
            "",
            "## Groups",
            f"- group_by `{report['group_by']}`; own classifiers: {', '.join(report.get('groups', {})) or 'none'}; "
            f"on the unified one: {report['groups_using_fallback']}",
        ]
    lines += [
        "",
        "## Limits",
        "Trained for this intern, entropy method and feature span (or hidden layer and size) only: the loader "
        "refuses another intern, entropy method or hidden size, and lm_eval refuses to evaluate it on its own "
        "training questions. Held-out test results: `tandem-lm-eval analyze` (docs/classifier.md).",
        "",
    ]
    return "\n".join(lines)


def _rows_name(rows: str) -> str:
    return "training questions, scored out of fold" if rows == "cv" else f"{rows} questions"


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
