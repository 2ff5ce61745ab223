"""Per-group classifiers: one classifier per group (a MATH subject, a task) plus a unified fallback."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tandem_lm_eval.judgment.card import FORMAT_VERSION, META_FILE, ClassifierCard
from tandem_lm_eval.judgment.classifier import Classifier
from tandem_lm_eval.judgment.errors import ClassifierError


class GroupedClassifier(Classifier):
    """One classifier per group (a MATH subject, a task) plus a unified fallback, saved as one folder.

    ``group_by`` says how a request's group is found: ``task`` (the lm-eval task name) or
    ``doc:<field>`` (a field of the task's document, e.g. ``doc:subject`` for MATH, the same in the
    train and test tasks). Every member must read the same features from the same intern.
    """

    kind = "per_group"

    def __init__(self, members: dict[str, Classifier], fallback: Classifier, group_by: str) -> None:
        check_group_by(group_by)
        self._members, self.fallback, self._group_by = dict(members), fallback, group_by
        for name, member in self.members.items():
            for key in ("feature_set", "feature_span", "hidden", "intern_model", "entropy_method", "budgets"):
                if getattr(member.card, key) != getattr(fallback.card, key):
                    raise ClassifierError(
                        f"group {name!r} was trained with {key}={getattr(member.card, key)!r}, the fallback "
                        f"with {getattr(fallback.card, key)!r}: members of one classifier must agree"
                    )

    @property
    def group_by(self) -> str:
        return self._group_by

    @property
    def members(self) -> dict[str, Classifier]:
        return self._members

    @property
    def card(self) -> ClassifierCard:
        """The fallback's card; ``training_questions`` covers every member."""
        questions = set(self.fallback.card.training_questions)
        for member in self.members.values():
            questions |= member.card.training_questions
        return dataclasses.replace(self.fallback.card, training_questions=frozenset(questions))

    def for_group(self, group: str | None) -> Classifier:
        return self.members.get(group, self.fallback) if group is not None else self.fallback

    def sufficiency(self, X, groups: Sequence[str | None] | None = None) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if groups is None:
            return self.fallback.sufficiency(X)
        out = np.zeros(len(X))
        for group in set(groups):
            rows = np.array([g == group for g in groups])
            out[rows] = self.for_group(group).sufficiency(X[rows])
        return out

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = {}
        for group, member in self.members.items():
            names[group] = _group_folder_name(group)
            member.save(folder / names[group])
        self.fallback.save(folder / "unified")
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "group_by": self.group_by,
            "groups": names,
            "fallback": "unified",
            "feature_set": self.fallback.card.feature_set,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder


def check_group_by(group_by: str) -> str:
    if group_by == "task" or (group_by.startswith("doc:") and len(group_by) > 4):
        return group_by
    raise ClassifierError(f"group_by must be 'task' or 'doc:<field>', got {group_by!r}")


def group_of(group_by: str, task: str | None, doc: dict | None) -> str | None:
    """A request's group: its task name, or a field of its document (None when absent)."""
    if group_by == "task":
        return task
    value = (doc or {}).get(group_by[len("doc:") :])
    return None if value is None else str(value)


def _group_folder_name(group: str) -> str:
    import re

    return "group-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", group).strip("_") or "empty")
