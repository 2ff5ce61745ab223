"""Alternatives to the paper's MLP sufficiency classifier: logistic regression and gradient boosting.

The paper's classifier C (``judgment/mlp.py``) is a small MLP. These two estimators exist to check
whether the MLP earns its place: a linear baseline and a tree ensemble, trained on the same
``tandem-v2`` features and compared with it in a held-out report. They share the MLP's estimator
interface (``fit(X, y, X_val=None, y_val=None)``, ``predict_proba``, ``sufficiency``), so a report or
a cascade can take any of them.

scikit-learn does the training, but a fitted model is never pickled: it is reduced to plain float64 /
int64 arrays (``to_tensors``) plus a JSON-able dict (``params``), which go into the same
``model.safetensors`` + JSON artifact as the MLP. Prediction runs in pure numpy from those arrays, so
an artifact is safe to load (no code runs on load) and does not depend on the scikit-learn version
that wrote it. Tests check that the numpy prediction matches scikit-learn's own ``predict_proba``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.estimators.base import SufficiencyEstimator, paper_log_columns
from tandem_lm_eval.judgment.estimators.gradient_boosting import GradientBoostingSufficiency
from tandem_lm_eval.judgment.estimators.logistic import LogisticSufficiency

__all__ = [
    "ESTIMATORS",
    "GradientBoostingSufficiency",
    "LogisticSufficiency",
    "SufficiencyEstimator",
    "estimator_from_tensors",
    "make_estimator",
    "paper_log_columns",
]


# --- registry --------------------------------------------------------------------------------------
ESTIMATORS: dict[str, type[SufficiencyEstimator]] = {
    LogisticSufficiency.kind: LogisticSufficiency,
    GradientBoostingSufficiency.kind: GradientBoostingSufficiency,
}


def _lookup(kind: str) -> type[SufficiencyEstimator]:
    try:
        return ESTIMATORS[kind]
    except (KeyError, TypeError):
        raise ClassifierError(
            f"unknown estimator kind {kind!r}; valid kinds: {', '.join(sorted(ESTIMATORS))}"
        ) from None


def make_estimator(kind: str, **params: Any) -> SufficiencyEstimator:
    """A fresh, unfitted estimator of ``kind`` with constructor ``params``."""
    return _lookup(kind)(**params)


def estimator_from_tensors(
    tensors: Mapping[str, np.ndarray], params: Mapping[str, Any]
) -> SufficiencyEstimator:
    """Rebuild a fitted estimator from ``to_tensors()`` + ``params()``, dispatching on ``params['kind']``."""
    if "kind" not in params:
        raise ClassifierError("params have no 'kind'; cannot tell which estimator they describe")
    return _lookup(params["kind"]).from_tensors(tensors, params)
