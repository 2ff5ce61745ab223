"""Alternatives to the paper's MLP sufficiency classifier: logistic regression and gradient boosting.

The paper's classifier C (``classifier.py``) is a small MLP. These two estimators exist to check
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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np

from .classifier import ClassifierError, _signed_log, log_scaled_columns
from .features import FEATURE_NAMES

__all__ = [
    "ESTIMATORS",
    "GradientBoostingSufficiency",
    "LogisticSufficiency",
    "SufficiencyEstimator",
    "estimator_from_tensors",
    "make_estimator",
    "paper_log_columns",
]


def paper_log_columns() -> list[bool]:
    """The MLP's signed-log column mask over ``FEATURE_NAMES`` (perplexity statistics and length).

    Pass it as ``log_columns`` to :class:`LogisticSufficiency` to give it the same input scaling as
    the MLP; the default is no log scaling, so the estimator also works on other feature widths.
    """
    return [bool(c) for c in log_scaled_columns()]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows for large |z| (raw log-odds can be large for trees).
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _as_features(X: Any, num_features: int | None, what: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or (num_features is not None and X.shape[1] != num_features):
        want = f"(n, {num_features})" if num_features is not None else "(n, num_features)"
        raise ClassifierError(f"expected {what} of shape {want}, got {tuple(X.shape)}")
    if not np.isfinite(X).all():
        # scikit-learn refuses NaN/inf at fit time; refusing them at predict time too keeps the
        # numpy prediction and scikit-learn's in agreement instead of silently routing NaN somewhere.
        raise ClassifierError(f"{what} contains NaN or infinite values")
    return X


def _as_labels(y: Any, n_rows: int, what: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        y = y.ravel()
    if len(y) != n_rows:
        raise ValueError(f"{what} has {len(y)} labels but there are {n_rows} rows of features")
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: labels must be 0 (insufficient) or 1 (sufficient)") from exc
    bad = ~np.isin(yf, (0.0, 1.0))
    if bad.any():
        found = sorted({str(v) for v in y[bad]})[:5]
        raise ValueError(f"{what}: labels must be 0 (insufficient) or 1 (sufficient), found {found}")
    return yf.astype(np.int64)


def _require(tensors: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if key not in tensors:
        raise ClassifierError(f"missing tensor {key!r}")
    arr = np.asarray(tensors[key])
    if shape is not None and arr.shape != shape:
        raise ClassifierError(f"tensor {key!r} has shape {arr.shape}, expected {shape}")
    return arr


def _checked_num_features(params: Mapping[str, Any], kind: str) -> int:
    """The feature width of saved ``params`` of an estimator of ``kind`` (both checked)."""
    _check_kind(params, kind)
    try:
        return int(params["num_features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ClassifierError("params need an integer 'num_features'") from exc


def _check_kind(params: Mapping[str, Any], kind: str) -> None:
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
        X = _as_features(X, None)
        if len(X) == 0:
            raise ValueError("cannot fit on zero rows")
        y = _as_labels(y, len(X))
        if len(np.unique(y)) < 2:
            raise ValueError(
                f"all {len(y)} labels are {int(y[0])}: there is nothing to learn, "
                "the training set needs both sufficient (1) and insufficient (0) examples"
            )
        if (X_val is None) != (y_val is None):
            raise ValueError("pass both X_val and y_val, or neither")
        if X_val is not None:
            X_val = _as_features(X_val, X.shape[1], "X_val")
            y_val = _as_labels(y_val, len(X_val), "y_val")

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
        X = _as_features(X, self.num_features_)
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
    X[:, mask] = _signed_log(X[:, mask])
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
            raise ValueError(f"C must be > 0, got {C}")
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
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
        return _sigmoid(self._model.decision(X))

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
        F = _checked_num_features(params, cls.kind)
        est = cls(
            C=params.get("C", 1.0),
            class_weight=params.get("class_weight"),
            max_iter=params.get("max_iter", 1000),
            random_state=params.get("random_state", 42),
            log_columns=params.get("log_columns"),
        )
        mean = _require(tensors, "scaler.mean", (F,)).astype(np.float64)
        std = _require(tensors, "scaler.std", (F,)).astype(np.float64)
        coef = _require(tensors, "logistic.coef", (F,)).astype(np.float64)
        intercept = _require(tensors, "logistic.intercept", (1,)).astype(np.float64)
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
            raise ValueError(f"class_weight keys must be 0/1 and values numbers, got {cw!r}") from exc
    raise ValueError(f"class_weight must be None, 'balanced' or a {{0: w, 1: w}} dict, got {cw!r}")


def _class_weight_to_json(cw: str | dict[int, float] | None) -> str | dict[str, float] | None:
    return {str(k): v for k, v in cw.items()} if isinstance(cw, dict) else cw


# --- gradient boosting -----------------------------------------------------------------------------
_LEAF = -1  # sklearn.tree._tree.TREE_LEAF


@dataclass
class _TreeEnsemble:
    """All regression trees of a binary-log-loss boosting model, concatenated into flat arrays.

    Tree ``t`` owns nodes ``offsets[t] .. offsets[t+1]-1``; children are stored as global node
    indices (``-1`` marks a leaf), so all trees are walked at once.
    """

    offsets: np.ndarray  # int64 (T+1,)
    children_left: np.ndarray  # int64 (N,)
    children_right: np.ndarray  # int64 (N,)
    feature: np.ndarray  # int64 (N,)
    threshold: np.ndarray  # float64 (N,)
    value: np.ndarray  # float64 (N,): leaf values (raw log-odds increments)
    init_raw: float  # log-odds of the prior, the boosting starting point
    learning_rate: float

    def validate(self, num_features: int) -> None:
        """Refuse malformed arrays, so a crafted file cannot make traversal loop or index out of range."""
        n = len(self.children_left)
        o = self.offsets
        if len(o) < 2 or o[0] != 0 or o[-1] != n or (np.diff(o) < 1).any():
            raise ClassifierError("tree offsets must start at 0, increase, and end at the node count")
        for arr, name in ((self.children_right, "children_right"), (self.feature, "feature")):
            if len(arr) != n:
                raise ClassifierError(f"trees.{name} has {len(arr)} nodes, expected {n}")
        if len(self.threshold) != n or len(self.value) != n:
            raise ClassifierError("trees.threshold/value must have one entry per node")
        tree_of = np.repeat(np.arange(len(o) - 1), np.diff(o))
        end = o[1:][tree_of]
        idx = np.arange(n)
        leaf = self.children_left == _LEAF
        if (leaf != (self.children_right == _LEAF)).any():
            raise ClassifierError("a tree node has exactly one child")
        inner = ~leaf
        for child in (self.children_left[inner], self.children_right[inner]):
            # Children after the parent, inside the same tree: traversal strictly advances, so ends.
            if ((child <= idx[inner]) | (child >= end[inner])).any():
                raise ClassifierError("tree child indices are out of range")
        if ((self.feature[inner] < 0) | (self.feature[inner] >= num_features)).any():
            raise ClassifierError(f"tree split features must be in [0, {num_features})")
        if not (np.isfinite(self.threshold[inner]).all() and np.isfinite(self.value[leaf]).all()):
            raise ClassifierError("tree thresholds or leaf values are not finite")
        if not (np.isfinite(self.init_raw) and np.isfinite(self.learning_rate)):
            raise ClassifierError("init_raw and learning_rate must be finite")

    def raw(self, X: np.ndarray) -> np.ndarray:
        # scikit-learn's trees see float32 inputs and compare them against float64 thresholds;
        # rounding X the same way is what makes the prediction match to the last bit at split edges.
        with np.errstate(over="ignore"):
            Xs = X.astype(np.float32).astype(np.float64)
        rows = np.arange(len(Xs))[:, None]
        node = np.broadcast_to(self.offsets[:-1], (len(Xs), len(self.offsets) - 1)).copy()
        while True:
            left = self.children_left[node]
            active = left != _LEAF
            if not active.any():
                break
            f = np.where(active, self.feature[node], 0)
            go_left = Xs[rows, f] <= self.threshold[node]
            node = np.where(active, np.where(go_left, left, self.children_right[node]), node)
        leaf_values = self.value[node]  # (n, T)
        raw = np.full(len(Xs), self.init_raw, dtype=np.float64)
        for t in range(leaf_values.shape[1]):  # same order and scaling as sklearn's predict_stages
            raw += self.learning_rate * leaf_values[:, t]
        return raw


class GradientBoostingSufficiency(SufficiencyEstimator):
    """scikit-learn ``GradientBoostingClassifier`` (binary log-loss), predicted by walking stored trees.

    No input scaling: trees only compare a feature to thresholds, so a monotone transform such as the
    signed log would not change them.
    """

    kind: ClassVar[str] = "gradient_boosting"

    def __init__(
        self,
        n_estimators: int = 100,
        learning_rate: float = 0.1,
        max_depth: int = 3,
        subsample: float = 1.0,
        random_state: int | None = 42,
    ) -> None:
        if int(n_estimators) < 1 or int(max_depth) < 1:
            raise ValueError("n_estimators and max_depth must be >= 1")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if not 0 < subsample <= 1:
            raise ValueError(f"subsample must be in (0, 1], got {subsample}")
        self.n_estimators = int(n_estimators)
        self.learning_rate = float(learning_rate)
        self.max_depth = int(max_depth)
        self.subsample = float(subsample)
        self.random_state = None if random_state is None else int(random_state)
        self.num_features_: int | None = None
        self.training_: dict[str, Any] = {}
        self.sklearn_model_ = None
        self._trees: _TreeEnsemble | None = None
        self._importances: np.ndarray | None = None

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.dummy import DummyClassifier
        from sklearn.ensemble import GradientBoostingClassifier

        gb = GradientBoostingClassifier(
            loss="log_loss",
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            subsample=self.subsample,
            random_state=self.random_state,
        ).fit(X, y)
        if list(gb.classes_) != [0, 1] or gb.estimators_.shape[1] != 1:
            raise RuntimeError(f"expected a binary model, got classes {gb.classes_}")
        init = gb.init_
        if not isinstance(init, DummyClassifier) or list(init.classes_) != [0, 1]:
            raise RuntimeError(f"unexpected init estimator {init!r}")
        # sklearn's raw starting point: logit of the clipped positive-class prior (computed here from
        # the public class_prior_ instead of the private _raw_predict_init). fit refuses one-class y,
        # so the clip never bites; it is kept to follow sklearn exactly.
        eps = np.finfo(np.float64).eps
        p = float(np.clip(init.class_prior_[1], eps, 1 - eps))
        init_raw = float(np.log(p / (1.0 - p)))

        offsets, lefts, rights, feats, thrs, vals = [0], [], [], [], [], []
        for reg in gb.estimators_[:, 0]:
            tree = reg.tree_
            base = offsets[-1]
            left = tree.children_left.astype(np.int64)
            right = tree.children_right.astype(np.int64)
            lefts.append(np.where(left == _LEAF, _LEAF, left + base))
            rights.append(np.where(right == _LEAF, _LEAF, right + base))
            feats.append(tree.feature.astype(np.int64))
            thrs.append(tree.threshold.astype(np.float64))
            # Boosting overwrites the leaf values with the log-loss Newton step; value[:, 0, 0] is it.
            vals.append(tree.value[:, 0, 0].astype(np.float64))
            offsets.append(base + tree.node_count)
        self._trees = _TreeEnsemble(
            offsets=np.array(offsets, dtype=np.int64),
            children_left=np.concatenate(lefts),
            children_right=np.concatenate(rights),
            feature=np.concatenate(feats),
            threshold=np.concatenate(thrs),
            value=np.concatenate(vals),
            init_raw=init_raw,
            learning_rate=float(gb.learning_rate),
        )
        self._trees.validate(X.shape[1])
        self._importances = np.asarray(gb.feature_importances_, dtype=np.float64).copy()
        self.sklearn_model_ = gb

    def _sufficiency(self, X: np.ndarray) -> np.ndarray:
        assert self._trees is not None
        return _sigmoid(self._trees.raw(X))

    def _is_fitted(self) -> bool:
        return self._trees is not None

    def feature_importances(self, names: Sequence[str] | None = None) -> dict[str, float]:
        """scikit-learn's impurity-based ``feature_importances_``, computed at fit time and stored."""
        values = self._importances if self._importances is not None else np.zeros(0)
        return self._importances_dict(values, names)

    # --- persistence --------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        if self._trees is None:
            raise ClassifierError("cannot export an unfitted gradient boosting estimator")
        return {
            "kind": self.kind,
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "max_depth": self.max_depth,
            "subsample": self.subsample,
            "random_state": self.random_state,
            "num_features": self.num_features_,
            "num_trees": int(len(self._trees.offsets) - 1),
            "num_nodes": int(len(self._trees.children_left)),
            "training": dict(self.training_),
        }

    def to_tensors(self) -> dict[str, np.ndarray]:
        if self._trees is None or self._importances is None:
            raise ClassifierError("cannot export an unfitted gradient boosting estimator")
        t = self._trees
        return {
            "trees.offsets": t.offsets.astype(np.int64),
            "trees.children_left": t.children_left.astype(np.int64),
            "trees.children_right": t.children_right.astype(np.int64),
            "trees.feature": t.feature.astype(np.int64),
            "trees.threshold": t.threshold.astype(np.float64),
            "trees.value": t.value.astype(np.float64),
            "boosting.init_raw": np.array([t.init_raw], dtype=np.float64),
            "boosting.learning_rate": np.array([t.learning_rate], dtype=np.float64),
            "feature_importances": self._importances.astype(np.float64),
        }

    @classmethod
    def from_tensors(
        cls, tensors: Mapping[str, np.ndarray], params: Mapping[str, Any]
    ) -> GradientBoostingSufficiency:
        F = _checked_num_features(params, cls.kind)
        est = cls(
            n_estimators=params.get("n_estimators", 100),
            learning_rate=params.get("learning_rate", 0.1),
            max_depth=params.get("max_depth", 3),
            subsample=params.get("subsample", 1.0),
            random_state=params.get("random_state", 42),
        )
        offsets = _require(tensors, "trees.offsets").astype(np.int64).ravel()
        if "num_trees" in params and len(offsets) != int(params["num_trees"]) + 1:
            raise ClassifierError(f"trees.offsets does not describe {params['num_trees']} trees")
        trees = _TreeEnsemble(
            offsets=offsets,
            children_left=_require(tensors, "trees.children_left").astype(np.int64).ravel(),
            children_right=_require(tensors, "trees.children_right").astype(np.int64).ravel(),
            feature=_require(tensors, "trees.feature").astype(np.int64).ravel(),
            threshold=_require(tensors, "trees.threshold").astype(np.float64).ravel(),
            value=_require(tensors, "trees.value").astype(np.float64).ravel(),
            init_raw=float(_require(tensors, "boosting.init_raw", (1,))[0]),
            learning_rate=float(_require(tensors, "boosting.learning_rate", (1,))[0]),
        )
        trees.validate(F)
        est._trees = trees
        est._importances = _require(tensors, "feature_importances", (F,)).astype(np.float64)
        est.num_features_ = F
        est.training_ = dict(params.get("training", {}))
        return est


# --- registry --------------------------------------------------------------------------------------
ESTIMATORS: dict[str, type[SufficiencyEstimator]] = {
    LogisticSufficiency.kind: LogisticSufficiency,
    GradientBoostingSufficiency.kind: GradientBoostingSufficiency,
}


def _lookup(kind: str) -> type[SufficiencyEstimator]:
    try:
        return ESTIMATORS[kind]
    except (KeyError, TypeError):
        raise ValueError(
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
