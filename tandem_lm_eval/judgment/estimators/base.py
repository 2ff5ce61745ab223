"""The estimator interface every alternative to the MLP implements, and the array checks they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.features import FEATURE_NAMES
from tandem_lm_eval.judgment.scaling import log_scaled_columns


def paper_log_columns() -> list[bool]:
    """The MLP's signed-log column mask over ``FEATURE_NAMES`` (perplexity statistics and length).

    Pass it as ``log_columns`` to :class:`LogisticSufficiency` to give it the same input scaling as
    the MLP; the default is no log scaling, so the estimator also works on other feature widths.
    """
    return [bool(c) for c in log_scaled_columns()]


def sigmoid(z: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows for large |z| (raw log-odds can be large for trees).
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def as_features(X: Any, num_features: int | None, what: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or (num_features is not None and X.shape[1] != num_features):
        want = f"(n, {num_features})" if num_features is not None else "(n, num_features)"
        raise ClassifierError(f"expected {what} of shape {want}, got {tuple(X.shape)}")
    if not np.isfinite(X).all():
        # scikit-learn refuses NaN/inf at fit time; refusing them at predict time too keeps the
        # numpy prediction and scikit-learn's in agreement instead of silently routing NaN somewhere.
        raise ClassifierError(f"{what} contains NaN or infinite values")
    return X


def as_labels(y: Any, n_rows: int, what: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        y = y.ravel()
    if len(y) != n_rows:
        raise ClassifierError(f"{what} has {len(y)} labels but there are {n_rows} rows of features")
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ClassifierError(f"{what}: labels must be 0 (insufficient) or 1 (sufficient)") from exc
    bad = ~np.isin(yf, (0.0, 1.0))
    if bad.any():
        found = sorted({str(v) for v in y[bad]})[:5]
        raise ClassifierError(f"{what}: labels must be 0 (insufficient) or 1 (sufficient), found {found}")
    return yf.astype(np.int64)


def require_tensor(
    tensors: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    if key not in tensors:
        raise ClassifierError(f"missing tensor {key!r}")
    arr = np.asarray(tensors[key])
    if shape is not None and arr.shape != shape:
        raise ClassifierError(f"tensor {key!r} has shape {arr.shape}, expected {shape}")
    return arr


def checked_num_features(params: Mapping[str, Any], kind: str) -> int:
    """The feature width of saved ``params`` of an estimator of ``kind`` (both checked)."""
    check_kind(params, kind)
    try:
        return int(params["num_features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ClassifierError("params need an integer 'num_features'") from exc


def check_kind(params: Mapping[str, Any], kind: str) -> None:
    if params.get("kind", kind) != kind:
        raise ClassifierError(f"params are for a {params.get('kind')!r} estimator, not {kind!r}")


class SufficiencyEstimator:
    """Base of the estimators here: shared input checks, validation reporting and ``predict_proba``.

    Subclasses train with scikit-learn in ``_fit`` and predict from their own arrays in
    ``_sufficiency``; they also implement ``to_tensors``, ``params``, ``from_tensors`` and
    ``feature_importances``.
    """

    kind: ClassVar[str] = ""

    num_features_: int | None
    training_: dict[str, Any]
    sklearn_model_: Any  # the fitted scikit-learn object; None when rebuilt by from_tensors

    # --- subclass hooks ----------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _sufficiency(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _is_fitted(self) -> bool:
        raise NotImplementedError

    def to_tensors(self) -> dict[str, np.ndarray]:
        """The fitted model as float64/int64 arrays, ready for ``safetensors.numpy.save_file``."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """JSON-able constructor parameters plus what ``from_tensors`` needs (kind, widths, counts)."""
        raise NotImplementedError

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, np.ndarray], params: Mapping[str, Any]
    ) -> SufficiencyEstimator:
        """Rebuild a fitted estimator from ``to_tensors()`` and ``params()``; needs no scikit-learn."""
        raise NotImplementedError

    def feature_importances(self, names: Sequence[str] | None = None) -> dict[str, float]:
        """Importance per feature name (default names: ``FEATURE_NAMES``), in column order."""
        raise NotImplementedError

    # --- estimator API ------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> SufficiencyEstimator:
        """Train on all of ``X``; a validation set, if given, is only scored (``training_``).

        Unlike the MLP there is no early stopping, so nothing is held out implicitly: pass
        ``X_val``/``y_val`` to get a ``validation_accuracy`` in ``training_``.
        """
        X = as_features(X, None)
        if len(X) == 0:
            raise ClassifierError("cannot fit on zero rows")
        y = as_labels(y, len(X))
        if len(np.unique(y)) < 2:
            raise ClassifierError(
                f"all {len(y)} labels are {int(y[0])}: there is nothing to learn, "
                "the training set needs both sufficient (1) and insufficient (0) examples"
            )
        if (X_val is None) != (y_val is None):
            raise ClassifierError("pass both X_val and y_val, or neither")
        if X_val is not None:
            X_val = as_features(X_val, X.shape[1], "X_val")
            y_val = as_labels(y_val, len(X_val), "y_val")

        self._fit(X, y)
        self.num_features_ = int(X.shape[1])
        train_acc = float(((self._sufficiency(X) > 0.5) == y).mean())
        self.training_ = {
            "train_rows": int(len(y)),
            "positive_rate": float(y.mean()),
            "train_accuracy": train_acc,
        }
        if X_val is not None:
            self.training_["validation_rows"] = int(len(y_val))
            self.training_["validation_accuracy"] = (
                float(((self._sufficiency(X_val) > 0.5) == y_val).mean()) if len(y_val) else None
            )
        return self

    def sufficiency(self, X: Any) -> np.ndarray:
        """s = C(f) in [0, 1] for each row of features."""
        if not self._is_fitted():
            raise ClassifierError(f"the {self.kind} estimator is not fitted")
        X = as_features(X, self.num_features_)
        if len(X) == 0:
            return np.zeros(0)
        return self._sufficiency(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, 2) array: P(insufficient), P(sufficient), like scikit-learn."""
        s = self.sufficiency(X)
        return np.stack([1.0 - s, s], axis=1).reshape(-1, 2)

    def _importances_dict(self, values: np.ndarray, names: Sequence[str] | None) -> dict[str, float]:
        if not self._is_fitted():
            raise ClassifierError(f"the {self.kind} estimator is not fitted")
        names = list(FEATURE_NAMES if names is None else names)
        if len(names) != len(values):
            raise ValueError(f"got {len(names)} feature names for {len(values)} features")
        return {name: float(v) for name, v in zip(names, values)}
