"""Logistic regression as a sufficiency estimator (scikit-learn fits; numpy predicts from arrays)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np

from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.estimators.base import (
    SufficiencyEstimator,
    checked_num_features,
    require_tensor,
    sigmoid,
)
from tandem_lm_eval.judgment.scaling import signed_log


# --- logistic regression ---------------------------------------------------------------------------
@dataclass
class _LinearModel:
    """Everything the logistic prediction needs: signed-log mask, scaler, weights."""

    log_columns: np.ndarray  # bool, (F,)
    mean: np.ndarray  # (F,) on the signed-log scale
    std: np.ndarray  # (F,)
    coef: np.ndarray  # (F,) on the standardized scale
    intercept: float

    def decision(self, X: np.ndarray) -> np.ndarray:
        Z = (_apply_signed_log(X, self.log_columns) - self.mean) / self.std
        return Z @ self.coef + self.intercept


def _apply_signed_log(X: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return X
    X = np.array(X, dtype=np.float64, copy=True)
    X[:, mask] = signed_log(X[:, mask])
    return X


class LogisticSufficiency(SufficiencyEstimator):
    """Standardized logistic regression: signed-log on ``log_columns``, then mean/std, then a line.

    Trained as a scikit-learn ``Pipeline`` (FunctionTransformer -> StandardScaler ->
    LogisticRegression, kept as ``sklearn_model_`` after ``fit``); predicts from the stored arrays.
    """

    kind: ClassVar[str] = "logistic"

    def __init__(
        self,
        C: float = 1.0,
        class_weight: str | Mapping[Any, float] | None = None,
        max_iter: int = 1000,
        random_state: int | None = 42,
        log_columns: Sequence[bool] | None = None,
    ) -> None:
        if not C > 0:
            raise ClassifierError(f"C must be > 0, got {C}")
        if int(max_iter) < 1:
            raise ClassifierError(f"max_iter must be >= 1, got {max_iter}")
        self.C = float(C)
        self.class_weight = _normalize_class_weight(class_weight)
        self.max_iter = int(max_iter)
        self.random_state = None if random_state is None else int(random_state)
        self.log_columns = None if log_columns is None else [bool(c) for c in log_columns]
        self.num_features_: int | None = None
        self.training_: dict[str, Any] = {}
        self.sklearn_model_ = None
        self._model: _LinearModel | None = None

    def _mask(self, num_features: int) -> np.ndarray:
        if self.log_columns is None:
            return np.zeros(num_features, dtype=bool)
        if len(self.log_columns) != num_features:
            raise ClassifierError(
                f"log_columns has {len(self.log_columns)} entries but the features have {num_features} columns"
            )
        return np.array(self.log_columns, dtype=bool)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        mask = self._mask(X.shape[1])
        pipe = Pipeline(
            [
                ("signed_log", FunctionTransformer(partial(_apply_signed_log, mask=mask))),
                ("scale", StandardScaler()),
                (
                    "logistic",
                    LogisticRegression(
                        C=self.C,
                        class_weight=self.class_weight,
                        max_iter=self.max_iter,
                        random_state=self.random_state,
                    ),
                ),
            ]
        ).fit(X, y)
        scaler, lr = pipe.named_steps["scale"], pipe.named_steps["logistic"]
        if list(lr.classes_) != [0, 1]:  # guaranteed by the label checks; the sign of coef depends on it
            raise RuntimeError(f"unexpected classes {lr.classes_}")
        self.sklearn_model_ = pipe
        self._model = _LinearModel(
            log_columns=mask,
            mean=np.asarray(scaler.mean_, dtype=np.float64).copy(),
            # StandardScaler already replaced (near-)zero std by 1, so constant columns stay finite.
            std=np.asarray(scaler.scale_, dtype=np.float64).copy(),
            coef=np.asarray(lr.coef_, dtype=np.float64)[0].copy(),
            intercept=float(lr.intercept_[0]),
        )

    def _sufficiency(self, X: np.ndarray) -> np.ndarray:
        assert self._model is not None
        return sigmoid(self._model.decision(X))

    def _is_fitted(self) -> bool:
        return self._model is not None

    def feature_importances(self, names: Sequence[str] | None = None) -> dict[str, float]:
        """|coefficient| per feature, on the standardized scale (so columns are comparable)."""
        values = np.abs(self._model.coef) if self._model is not None else np.zeros(0)
        return self._importances_dict(values, names)

    # --- persistence --------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        if self._model is None:
            raise ClassifierError("cannot export an unfitted logistic estimator")
        return {
            "kind": self.kind,
            "C": self.C,
            "class_weight": _class_weight_to_json(self.class_weight),
            "max_iter": self.max_iter,
            "random_state": self.random_state,
            "log_columns": [bool(c) for c in self._model.log_columns],
            "num_features": self.num_features_,
            "training": dict(self.training_),
        }

    def to_tensors(self) -> dict[str, np.ndarray]:
        if self._model is None:
            raise ClassifierError("cannot export an unfitted logistic estimator")
        m = self._model
        return {
            "scaler.mean": m.mean.astype(np.float64),
            "scaler.std": m.std.astype(np.float64),
            "logistic.coef": m.coef.astype(np.float64),
            "logistic.intercept": np.array([m.intercept], dtype=np.float64),
        }

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, np.ndarray], params: Mapping[str, Any]
    ) -> LogisticSufficiency:
        F = checked_num_features(params, cls.kind)
        est = cls(
            C=params.get("C", 1.0),
            class_weight=params.get("class_weight"),
            max_iter=params.get("max_iter", 1000),
            random_state=params.get("random_state", 42),
            log_columns=params.get("log_columns"),
        )
        mean = require_tensor(tensors, "scaler.mean", (F,)).astype(np.float64)
        std = require_tensor(tensors, "scaler.std", (F,)).astype(np.float64)
        coef = require_tensor(tensors, "logistic.coef", (F,)).astype(np.float64)
        intercept = require_tensor(tensors, "logistic.intercept", (1,)).astype(np.float64)
        if not all(np.isfinite(a).all() for a in (mean, std, coef, intercept)) or (std <= 0).any():
            raise ClassifierError("logistic tensors contain non-finite values or a non-positive std")
        est.num_features_ = F
        est._model = _LinearModel(est._mask(F), mean, std, coef, float(intercept[0]))
        est.training_ = dict(params.get("training", {}))
        return est


def _normalize_class_weight(cw: Any) -> str | dict[int, float] | None:
    # JSON turns the dict keys {0: w0, 1: w1} into strings; accept both so params() round-trips.
    if cw is None or cw == "balanced":
        return cw
    if isinstance(cw, Mapping):
        try:
            return {int(k): float(v) for k, v in cw.items()}
        except (TypeError, ValueError) as exc:
            raise ClassifierError(f"class_weight keys must be 0/1 and values numbers, got {cw!r}") from exc
    raise ClassifierError(f"class_weight must be None, 'balanced' or a {{0: w, 1: w}} dict, got {cw!r}")


def _class_weight_to_json(cw: str | dict[int, float] | None) -> str | dict[str, float] | None:
    return {str(k): v for k, v in cw.items()} if isinstance(cw, dict) else cw
