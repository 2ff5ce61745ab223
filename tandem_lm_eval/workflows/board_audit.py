"""The leaderboard's audit block: what each row's thresholds or router were chosen on, and the check
that none of the evaluated questions was among those (RouterArena's rule: nothing tuned on the
evaluation questions).

One entry per row and task. A row that judges (``tandem``, ``route``) names its classifier, the
task(s) and question counts it was fit on (its card, ``fit_report.json``), the rows its thresholds
were chosen on (the card's objective) and how many evaluated questions are among its training
questions, counted by the training-question guard itself (judgment/training_guard.py: ``overlap``, by
question content where both sides know it, else by the rendered dialogue); a row whose
thresholds the config gives says so. Fixed policies tune nothing; the oracle is a reference that
reads the evaluated questions' labels by construction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tandem_lm_eval.judgment.training_guard import QuestionIdentity, overlap


def row_audit(
    name: str,
    mode: str,
    task: str,
    questions: Sequence[QuestionIdentity],
    *,
    classifier=None,
    folder: Path | None = None,
    given_thresholds: str | None = None,
    overlap_allowed: bool = False,
) -> dict:
    """The audit entry of one row on one task (module docstring)."""
    kind = mode.split(":")[0]
    out: dict = {"row": name, "mode": mode, "task": task, "evaluated_questions": len(questions)}
    if kind == "oracle":
        return {
            **out,
            "chosen_on": "reference, not a method: it reads the evaluated questions' labels",
            "check": "not applicable",
        }
    if classifier is None:
        return {
            **out,
            "chosen_on": "nothing: a fixed policy, no threshold or router",
            "check": "not applicable",
        }
    card = classifier.card
    provenance = _provenance(folder)
    report = card.training.get("report", {}) if isinstance(card.training, dict) else {}
    found = len(overlap(questions, card.training_questions))
    out.update(
        {
            "classifier": str(folder.name if folder is not None else ""),
            "policy": card.policy,
            "thresholds": [float(t) for t in card.thresholds],
            "chosen_on": "thresholds given in the config (not chosen on any question)"
            if given_thresholds
            else f"the classifier's {card.threshold_objective.get('rows', 'training')} questions, objective "
            f"{card.threshold_objective.get('kind', 'unknown')}",
            "given_thresholds": given_thresholds or None,
            "training_tasks": provenance.get("tasks"),
            "training_records": provenance.get("records"),
            "training_questions": len(card.training_questions),
            "train_questions": report.get("questions", {}).get("train"),
            "validation_questions": report.get("questions", {}).get("validation"),
            "overlap_with_evaluated": found,
        }
    )
    if not card.training_questions:  # nothing to check against: say so, never "passed"
        out["check"] = "not checked: the classifier records no training questions (training_questions.txt)"
    elif found == 0:
        out["check"] = "passed: no evaluated question is among its training questions"
    else:
        out["check"] = f"FAILED: {found} evaluated questions are among its training questions" + (
            " (allow_training_overlap=true)" if overlap_allowed else ""
        )
    return out


def _provenance(folder: Path | None) -> dict:
    """The ``provenance`` of the classifier's ``fit_report.json`` (records, tasks), {} without one."""
    if folder is None or not (folder / "fit_report.json").is_file():
        return {}
    try:
        return json.loads((folder / "fit_report.json").read_text()).get("provenance", {}) or {}
    except (OSError, ValueError):
        return {}
