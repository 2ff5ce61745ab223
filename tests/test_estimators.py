"""The scikit-learn alternatives to the MLP: quality, agreement with scikit-learn, no-pickle round trip."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from sklearn.metrics import roc_auc_score

from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.estimators import ESTIMATORS, estimator_from_tensors, make_estimator
from tandem_lm_eval.judgment.estimators.base import paper_log_columns
from tandem_lm_eval.judgment.estimators.gradient_boosting import GradientBoostingSufficiency
from tandem_lm_eval.judgment.estimators.logistic import LogisticSufficiency
from tandem_lm_eval.judgment.features import FEATURE_NAMES, NUM_FEATURES

KINDS = sorted(ESTIMATORS)


def synthetic(n=400, seed=0):
    """17 features; the label depends on columns 7 and 8 only (plus label noise), the rest is noise.

    Columns 0-6 are heavy-tailed like perplexity statistics, so the signed-log option matters.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, NUM_FEATURES))
    X[:, :7] = np.exp(rng.normal(2, 2, (n, 7)))
    logit = 2.5 * X[:, 7] - 2.0 * X[:, 8]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


@pytest.fixture(scope="module")
def data():
    X, y = synthetic(600)
    return X[:400], y[:400], X[400:], y[400:]


@pytest.fixture(scope="module")
def fitted(data):
    X, y, _, _ = data
    return {kind: make_estimator(kind).fit(X, y) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_learns_the_signal_on_held_out_rows(kind, data, fitted):
    _, _, X_te, y_te = data
    s = fitted[kind].sufficiency(X_te)
    assert s.shape == (len(X_te),) and ((s >= 0) & (s <= 1)).all()
    assert roc_auc_score(y_te, s) > 0.8
    proba = fitted[kind].predict_proba(X_te)
    assert proba.shape == (len(X_te), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_numpy_prediction_equals_sklearn(kind, data, fitted):
    X, _, X_te, _ = data
    est = fitted[kind]
    for rows in (X, X_te):
        np.testing.assert_allclose(
            est.predict_proba(rows), est.sklearn_model_.predict_proba(rows), rtol=0, atol=1e-9
        )


def test_tree_traversal_matches_sklearn_on_split_thresholds(data):
    """Inputs exactly at (and one float64 ulp around) thresholds: sklearn rounds X to float32 first."""
    X, y, _, _ = data
    est = GradientBoostingSufficiency(n_estimators=20).fit(X, y)
    gb = est.sklearn_model_
    rows = []
    for reg in gb.estimators_[:5, 0]:
        t = reg.tree_
        for node in np.flatnonzero(t.children_left != -1):
            for thr in (t.threshold[node], np.nextafter(t.threshold[node], np.inf)):
                row = X[node % len(X)].copy()
                row[t.feature[node]] = thr
                rows.append(row)
    rows = np.array(rows)
    np.testing.assert_allclose(est.predict_proba(rows), gb.predict_proba(rows), rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_safetensors_round_trip_predicts_identically(kind, data, fitted, tmp_path):
    X, y, X_te, y_te = data
    est = make_estimator(kind).fit(X, y, X_te, y_te)
    tensors = est.to_tensors()
    assert all(a.dtype in (np.float64, np.int64) for a in tensors.values())
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "estimator.json").write_text(json.dumps(est.params()))

    params = json.loads((tmp_path / "estimator.json").read_text())
    back = ESTIMATORS[kind].from_tensors(load_file(str(tmp_path / "model.safetensors")), params)
    assert back.sklearn_model_ is None  # predicts from arrays alone
    np.testing.assert_array_equal(back.sufficiency(X_te), est.sufficiency(X_te))
    assert back.training_["validation_accuracy"] == est.training_["validation_accuracy"]
    again = estimator_from_tensors(load_file(str(tmp_path / "model.safetensors")), params)
    assert type(again) is type(est)
    np.testing.assert_array_equal(again.sufficiency(X), est.sufficiency(X))
    assert back.feature_importances() == est.feature_importances()


def test_log_columns_change_the_fit_input(data):
    X, y, X_te, _ = data
    mask = paper_log_columns()
    assert mask[FEATURE_NAMES.index("ppl_mean")] and not mask[FEATURE_NAMES.index("entropy_mean")]
    logged = LogisticSufficiency(log_columns=mask).fit(X, y)
    plain = LogisticSufficiency().fit(X, y)
    mean_logged = logged.to_tensors()["scaler.mean"]
    mean_plain = plain.to_tensors()["scaler.mean"]
    col = FEATURE_NAMES.index("ppl_mean")
    signed_log = np.sign(X[:, col]) * np.log1p(np.abs(X[:, col]))
    assert mean_logged[col] == pytest.approx(signed_log.mean(), rel=1e-12)
    assert mean_plain[col] == pytest.approx(X[:, col].mean(), rel=1e-12)
    assert mean_logged[col] < mean_plain[col] / 2
    unlogged = FEATURE_NAMES.index("entropy_mean")
    assert mean_logged[unlogged] == pytest.approx(X[:, unlogged].mean(), rel=1e-12)
    assert logged.params()["log_columns"] == mask
    assert not np.allclose(logged.sufficiency(X_te), plain.sufficiency(X_te))
    np.testing.assert_allclose(
        logged.predict_proba(X_te), logged.sklearn_model_.predict_proba(X_te), rtol=0, atol=1e-9
    )


def test_log_columns_of_wrong_length_are_refused(data):
    X, y, _, _ = data
    with pytest.raises(ClassifierError, match="log_columns has 3 entries"):
        LogisticSufficiency(log_columns=[True, False, True]).fit(X, y)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_raise_clear_errors(kind, data, fitted):
    X, y, _, _ = data
    with pytest.raises(ClassifierError, match="not fitted"):
        make_estimator(kind).sufficiency(X)
    with pytest.raises(ClassifierError, match="not fitted"):
        make_estimator(kind).predict_proba(X)
    with pytest.raises(ClassifierError, match="unfitted"):
        make_estimator(kind).to_tensors()
    with pytest.raises(ValueError, match="labels must be 0"):
        make_estimator(kind).fit(X, np.where(y == 1, 2, 0))
    with pytest.raises(ValueError, match="labels must be 0"):
        make_estimator(kind).fit(X, y - 0.5)
    with pytest.raises(ValueError, match="nothing to learn"):
        make_estimator(kind).fit(X, np.ones(len(X), dtype=int))
    with pytest.raises(ValueError, match="has 399 labels"):
        make_estimator(kind).fit(X, y[:-1])
    est = fitted[kind]
    with pytest.raises(ClassifierError, match=rf"shape \(n, {NUM_FEATURES}\)"):
        est.sufficiency(X[:, :-1])
    with pytest.raises(ClassifierError, match="shape"):
        est.predict_proba(X[0])
    with pytest.raises(ClassifierError, match="NaN"):
        est.sufficiency(np.where(np.eye(len(X), NUM_FEATURES) > 0, np.nan, X))
    assert est.sufficiency(np.zeros((0, NUM_FEATURES))).shape == (0,)
    assert est.predict_proba(np.zeros((0, NUM_FEATURES))).shape == (0, 2)


def test_from_tensors_refuses_malformed_artifacts(fitted):
    gb = fitted["gradient_boosting"]
    tensors, params = gb.to_tensors(), gb.params()
    with pytest.raises(ClassifierError, match="not 'gradient_boosting'"):
        GradientBoostingSufficiency.from_tensors(tensors, {**params, "kind": "logistic"})
    broken = dict(tensors)
    del broken["trees.value"]
    with pytest.raises(ClassifierError, match="missing tensor 'trees.value'"):
        GradientBoostingSufficiency.from_tensors(broken, params)
    looping = dict(tensors, **{"trees.children_left": tensors["trees.children_left"].copy()})
    looping["trees.children_left"][0] = 0  # a node that is its own child would never terminate
    with pytest.raises(ClassifierError, match="child indices"):
        GradientBoostingSufficiency.from_tensors(looping, params)
    lr = fitted["logistic"]
    with pytest.raises(ClassifierError, match="shape"):
        LogisticSufficiency.from_tensors(lr.to_tensors(), {**lr.params(), "num_features": 5})


def test_feature_importances(data, fitted):
    lr, gb = fitted["logistic"], fitted["gradient_boosting"]
    for imp in (lr.feature_importances(), gb.feature_importances(FEATURE_NAMES)):
        assert list(imp) == list(FEATURE_NAMES)
        top_two = sorted(imp, key=imp.get, reverse=True)[:2]
        assert set(top_two) == {FEATURE_NAMES[7], FEATURE_NAMES[8]}
    np.testing.assert_allclose(
        list(gb.feature_importances().values()), gb.sklearn_model_.feature_importances_
    )
    coef = lr.sklearn_model_.named_steps["logistic"].coef_[0]
    np.testing.assert_allclose(list(lr.feature_importances().values()), np.abs(coef))
    with pytest.raises(ValueError, match="2 feature names for 17"):
        lr.feature_importances(["a", "b"])


def test_validation_set_is_only_reported(data):
    X, y, X_te, y_te = data
    with_val = LogisticSufficiency().fit(X, y, X_te, y_te)
    without = LogisticSufficiency().fit(X, y)
    np.testing.assert_array_equal(with_val.sufficiency(X_te), without.sufficiency(X_te))
    expected = float(((without.sufficiency(X_te) > 0.5) == y_te).mean())
    assert with_val.training_["validation_accuracy"] == expected
    assert "validation_accuracy" not in without.training_
    with pytest.raises(ValueError, match="both X_val and y_val"):
        LogisticSufficiency().fit(X, y, X_te)


def test_registry_and_unknown_kind():
    assert ESTIMATORS == {"logistic": LogisticSufficiency, "gradient_boosting": GradientBoostingSufficiency}
    assert {cls.kind for cls in ESTIMATORS.values()} == set(ESTIMATORS)
    est = make_estimator("gradient_boosting", n_estimators=7, learning_rate=0.2)
    assert isinstance(est, GradientBoostingSufficiency) and est.n_estimators == 7
    with pytest.raises(
        ValueError, match="unknown estimator kind 'mlp'; valid kinds: gradient_boosting, logistic"
    ):
        make_estimator("mlp")


def test_class_weight_survives_json(data):
    X, y, _, _ = data
    est = LogisticSufficiency(class_weight={0: 1.0, 1: 3.0}).fit(X, y)
    params = json.loads(json.dumps(est.params()))
    back = LogisticSufficiency.from_tensors(est.to_tensors(), params)
    assert back.class_weight == {0: 1.0, 1: 3.0}
    assert est.sufficiency(X).mean() > LogisticSufficiency().fit(X, y).sufficiency(X).mean()
