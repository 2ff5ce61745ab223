"""A scikit-learn estimator (``estimators/``) behind the classifier interface, with a card, saved like
the MLP: arrays in safetensors, parameters in JSON, never pickle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tandem_lm_eval.judgment.card import WEIGHTS_FILE, ClassifierCard, write_folder
from tandem_lm_eval.judgment.classifier import Classifier
from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.scaling import check_width


class EstimatorClassifier(Classifier):
    """A scikit-learn estimator of ``estimators/`` (logistic regression, gradient boosting) with a
    card, saved like the MLP: arrays in safetensors, parameters in JSON, never pickle."""

    def __init__(self, estimator) -> None:
        self.estimator = estimator
        self.kind = estimator.kind
        self.card = ClassifierCard()

    def fit(self, X, y, X_val=None, y_val=None) -> EstimatorClassifier:
        X = np.asarray(X, dtype=np.float64)
        width = X.shape[1] if X.ndim == 2 else -1
        X = check_width(X, width, self.card.feature_set)
        self.estimator.fit(
            X, y, None if X_val is None else check_width(X_val, width, self.card.feature_set), y_val
        )
        self.card.training.update(getattr(self.estimator, "training_", {}))
        return self

    @property
    def num_features(self) -> int:
        return int(self.estimator.num_features_ or self.card.spec.width)

    def sufficiency(self, X, groups: Sequence[str | None] | None = None) -> np.ndarray:
        """s for each row (one estimator for every group)."""
        X = check_width(X, self.num_features, self.card.feature_set)
        return np.asarray(self.estimator.sufficiency(X), dtype=np.float64)

    def predict_proba(self, X) -> np.ndarray:
        s = self.sufficiency(X)
        return np.stack([1.0 - s, s], axis=1)

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save_file

        tensors = {f"est.{k}": np.ascontiguousarray(v) for k, v in self.estimator.to_tensors().items()}
        meta = {"estimator_params": self.estimator.params()}
        return write_folder(folder, self.kind, self.card, meta, lambda path: save_file(tensors, path))

    @classmethod
    def _from_folder(cls, folder: Path, meta: dict, card: ClassifierCard) -> EstimatorClassifier:
        from safetensors.numpy import load_file

        from tandem_lm_eval.judgment.estimators import ESTIMATORS

        tensors = {k[len("est.") :]: v for k, v in load_file(str(folder / WEIGHTS_FILE)).items()}
        estimator = ESTIMATORS[meta["estimator"]].from_tensors(tensors, meta.get("estimator_params", {}))
        clf = cls(estimator)
        clf.card = card
        if estimator.num_features_ != card.spec.width:
            raise ClassifierError(
                f"{folder}: the estimator reads {estimator.num_features_} features, its card's "
                f"{card.feature_set} input has {card.spec.width}"
            )
        return clf
