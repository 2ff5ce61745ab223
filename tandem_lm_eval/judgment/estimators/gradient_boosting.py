"""Gradient boosting as a sufficiency estimator (scikit-learn fits; numpy walks the stored trees)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.estimators.base import (
    SufficiencyEstimator,
    checked_num_features,
    require_tensor,
    sigmoid,
)

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
            raise ClassifierError("n_estimators and max_depth must be >= 1")
        if not learning_rate > 0:
            raise ClassifierError(f"learning_rate must be > 0, got {learning_rate}")
        if not 0 < subsample <= 1:
            raise ClassifierError(f"subsample must be in (0, 1], got {subsample}")
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
        return sigmoid(self._trees.raw(X))

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
        F = checked_num_features(params, cls.kind)
        est = cls(
            n_estimators=params.get("n_estimators", 100),
            learning_rate=params.get("learning_rate", 0.1),
            max_depth=params.get("max_depth", 3),
            subsample=params.get("subsample", 1.0),
            random_state=params.get("random_state", 42),
        )
        offsets = require_tensor(tensors, "trees.offsets").astype(np.int64).ravel()
        if "num_trees" in params and len(offsets) != int(params["num_trees"]) + 1:
            raise ClassifierError(f"trees.offsets does not describe {params['num_trees']} trees")
        trees = _TreeEnsemble(
            offsets=offsets,
            children_left=require_tensor(tensors, "trees.children_left").astype(np.int64).ravel(),
            children_right=require_tensor(tensors, "trees.children_right").astype(np.int64).ravel(),
            feature=require_tensor(tensors, "trees.feature").astype(np.int64).ravel(),
            threshold=require_tensor(tensors, "trees.threshold").astype(np.float64).ravel(),
            value=require_tensor(tensors, "trees.value").astype(np.float64).ravel(),
            init_raw=float(require_tensor(tensors, "boosting.init_raw", (1,))[0]),
            learning_rate=float(require_tensor(tensors, "boosting.learning_rate", (1,))[0]),
        )
        trees.validate(F)
        est._trees = trees
        est._importances = require_tensor(tensors, "feature_importances", (F,)).astype(np.float64)
        est.num_features_ = F
        est.training_ = dict(params.get("training", {}))
        return est
