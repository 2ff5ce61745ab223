"""Every classifier the loader can make, fresh or from its folder, is a ``judgment.classifier.Classifier``
and answers the protocol's questions itself: its kind and card, whether it judges by group, the member
of a group, and s for rows with their groups."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from tandem_lm_eval.judgment.card import ClassifierCard
from tandem_lm_eval.judgment.classifier import Classifier
from tandem_lm_eval.judgment.estimators import ESTIMATORS
from tandem_lm_eval.judgment.features import FEATURE_NAMES, NUM_FEATURES
from tandem_lm_eval.judgment.grouped import GroupedClassifier
from tandem_lm_eval.judgment.loading import load_classifier_folder, make_classifier

# every kind make_classifier takes: the paper's MLP and each estimator of estimators/
KINDS = ["mlp", *sorted(ESTIMATORS)]
ENT = FEATURE_NAMES.index("entropy_mean")


def _rows(seed: int, n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.abs(rng.normal(2.0, 1.0, (n, NUM_FEATURES)))
    X[:, -1] = rng.integers(5, 200, n)
    return X, (X[:, ENT] < 2.0).astype(int)


def _fitted(kind: str, seed: int = 0):
    X, y = _rows(seed)
    clf = make_classifier(kind, **({"max_epochs": 2} if kind == "mlp" else {}))
    clf.fit(X, y)
    clf.card.thresholds = [0.5, 0.5]
    clf.card.budgets = [16]
    return clf


def _check_single(clf, kind: str) -> None:
    assert isinstance(clf, Classifier) and not inspect.isabstract(type(clf))
    assert clf.kind == kind and isinstance(clf.card, ClassifierCard)
    assert clf.group_by is None and dict(clf.members) == {}
    assert clf.for_group("any group") is clf and clf.for_group(None) is clf
    X, _ = _rows(seed=9, n=12)
    s = clf.sufficiency(X)
    assert s.shape == (12,) and np.all((s >= 0) & (s <= 1))
    # the groups of the rows do not change a single classifier's scores
    np.testing.assert_array_equal(clf.sufficiency(X, ["a", None] * 6), s)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_the_loader_makes_is_a_classifier(kind, tmp_path):
    clf = _fitted(kind)
    _check_single(clf, kind)
    loaded = load_classifier_folder(clf.save(tmp_path / kind))
    _check_single(loaded, kind)
    X, _ = _rows(seed=9, n=12)
    np.testing.assert_allclose(loaded.sufficiency(X), clf.sufficiency(X), rtol=1e-6)


def test_a_per_group_classifier_judges_each_row_by_its_group(tmp_path):
    members = {"a": _fitted("logistic", seed=1), "b": _fitted("gradient_boosting", seed=2)}
    fallback = _fitted("logistic", seed=3)
    for clf in (
        GroupedClassifier(members, fallback, "doc:subject"),
        load_classifier_folder(GroupedClassifier(members, fallback, "doc:subject").save(tmp_path / "g")),
    ):
        assert isinstance(clf, Classifier) and not inspect.isabstract(type(clf))
        assert clf.kind == "per_group" and clf.group_by == "doc:subject"
        assert set(clf.members) == {"a", "b"} and all(isinstance(m, Classifier) for m in clf.members.values())
        assert clf.for_group("a").kind == "logistic" and clf.for_group("b").kind == "gradient_boosting"
        assert clf.for_group("unknown").kind == "logistic" and clf.for_group(None).kind == "logistic"
        X, _ = _rows(seed=9, n=6)
        groups = ["a", "b", None, "a", "unknown", "b"]
        s = clf.sufficiency(X, groups)
        want = [clf.for_group(g).sufficiency(X[i : i + 1])[0] for i, g in enumerate(groups)]
        np.testing.assert_allclose(s, want, rtol=1e-9)
        np.testing.assert_allclose(clf.sufficiency(X), clf.for_group(None).sufficiency(X), rtol=1e-9)


def test_a_class_that_does_not_score_is_not_a_classifier():
    class NoScores(Classifier):
        kind = "none"

    with pytest.raises(TypeError, match="sufficiency"):
        NoScores()
