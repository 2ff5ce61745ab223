"""What every sufficiency classifier offers the rooms that use one (the cascade, the harness, the
calibration): ``Classifier``. The paper's MLP (``mlp.SufficiencyClassifier``), the scikit-learn
estimators (``estimator_classifier.EstimatorClassifier``: logistic regression, gradient boosting) and
the per-group classifier (``grouped.GroupedClassifier``) all derive from it, so a caller asks the
classifier, never ``hasattr``, whether it judges by group. (Saving is the trained kinds' own: each
writes its folder, judgment/card.py.)"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

import numpy as np

from tandem_lm_eval.judgment.card import ClassifierCard


class Classifier(abc.ABC):
    """A sufficiency classifier C: s_t = C(x_t) in [0, 1] for rows of judge inputs, with its card.

    A single classifier judges every row alike; a per-group classifier (``members`` not empty) judges
    each row by its group's member, found by ``group_by`` (``task`` or ``doc:<field>``)."""

    # "mlp", "logistic", "gradient_boosting", "per_group": the ``kind`` its folder records
    kind: str
    # what it reads, was trained on and chose (judgment/card.py); a per-group classifier's is its
    # fallback's, with every member's training questions
    card: ClassifierCard

    @abc.abstractmethod
    def sufficiency(self, X, groups: Sequence[str | None] | None = None) -> np.ndarray:
        """s for each row of ``X``. ``groups``: each row's group; a single classifier ignores it."""

    @property
    def group_by(self) -> str | None:
        """How a request's group is found (``task`` or ``doc:<field>``); None: it judges without groups."""
        return None

    @property
    def members(self) -> Mapping[str, Classifier]:
        """The classifier of each group (empty for a single classifier)."""
        return {}

    def for_group(self, group: str | None) -> Classifier:
        """The classifier that judges ``group``'s rows (itself, for a single classifier)."""
        return self
