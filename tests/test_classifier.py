import json

import numpy as np
import pytest

from tandem_lm_eval.calibration.threshold_grid import grid_search_threshold
from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.features import FEATURE_NAMES, NUM_FEATURES
from tandem_lm_eval.judgment.loading import load_mlp
from tandem_lm_eval.judgment.mlp import SufficiencyClassifier, stratified_split


def synthetic(n=600, seed=0):
    """Features where low entropy means sufficient, with realistic magnitudes (PPL up to 1e4)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = np.abs(rng.normal(5, 1, (n, NUM_FEATURES)))
    X[:, :7] *= rng.uniform(1, 2000, (n, 1))  # ppl stats, heavy-tailed, uninformative
    ent_mean = FEATURE_NAMES.index("entropy_mean")
    X[:, ent_mean] = np.where(y == 1, 1.0, 2.5) + rng.normal(0, 0.4, n)
    X[:, -1] = rng.integers(50, 800, n)
    return X, y


def test_mlp_learns_a_separable_signal():
    X, y = synthetic()
    clf = SufficiencyClassifier(max_epochs=60, learning_rate=1e-3).fit(X[:400], y[:400])
    s = clf.sufficiency(X[400:])
    acc = ((s > 0.5) == y[400:]).mean()
    assert acc > 0.85, acc
    proba = clf.predict_proba(X[400:])
    assert proba.shape == (200, 2) and np.allclose(proba.sum(1), 1)


def test_the_fit_depends_on_its_seed_only():
    """Two fits with the same random_state give the same network, whatever used torch's global
    generator before them (initial weights included); another random_state gives another one."""
    import torch

    X, y = synthetic(200, seed=3)
    fits = []
    for draws, seed in ((0, 7), (5, 7), (0, 8)):
        torch.rand(draws)  # something else consumed the global generator first
        fits.append(SufficiencyClassifier(max_epochs=3, learning_rate=1e-3, random_state=seed).fit(X, y))
    scores = [f.sufficiency(X) for f in fits]
    assert np.array_equal(scores[0], scores[1])
    assert not np.allclose(scores[0], scores[2])


def test_architecture_matches_paper():
    clf = SufficiencyClassifier()
    assert clf.hidden_sizes == (64, 32) and clf.dropout == 0.3 and clf.learning_rate == 1e-4
    net = clf._build()
    linear = [m for m in net if m.__class__.__name__ == "Linear"]
    assert [(m.in_features, m.out_features) for m in linear] == [(17, 64), (64, 32), (32, 1)]


def test_early_stopping_keeps_best_validation_epoch():
    X, y = synthetic(300, seed=1)
    clf = SufficiencyClassifier(max_epochs=30, patience=3, learning_rate=1e-3).fit(X, y)
    best = max(h["val_accuracy"] for h in clf.history_)
    assert clf.card.training["best_validation_accuracy"] == best
    assert len(clf.history_) <= 30


def test_save_load_roundtrip_is_exact_and_not_pickle(tmp_path):
    X, y = synthetic(200)
    clf = SufficiencyClassifier(max_epochs=5, learning_rate=1e-3).fit(X, y)
    clf.card.intern_model = "SmolLM2-135M-Instruct"
    clf.card.thresholds = [0.5, 0.6, 0.7, 0.8]
    folder = clf.save(tmp_path / "clf")
    assert sorted(p.name for p in folder.iterdir()) == ["classifier.json", "model.safetensors"]
    back = load_mlp(folder)
    np.testing.assert_allclose(back.sufficiency(X), clf.sufficiency(X), rtol=0, atol=1e-7)
    assert back.card.thresholds == [0.5, 0.6, 0.7, 0.8]
    assert back.card.intern_model == "SmolLM2-135M-Instruct"


def test_load_refuses_other_feature_set(tmp_path):
    X, y = synthetic(100)
    folder = SufficiencyClassifier(max_epochs=1).fit(X, y).save(tmp_path / "clf")
    meta = json.loads((folder / "classifier.json").read_text())
    meta["feature_set"] = "tandem-v0"
    (folder / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(ClassifierError, match="feature set 'tandem-v0'"):
        load_mlp(folder)


def test_load_refuses_missing_or_broken(tmp_path):
    with pytest.raises(ClassifierError, match="not a classifier folder"):
        load_mlp(tmp_path)
    (tmp_path / "classifier.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ClassifierError, match="invalid JSON"):
        load_mlp(tmp_path)


def test_wrong_feature_width_is_refused():
    X, y = synthetic(100)
    clf = SufficiencyClassifier(max_epochs=1).fit(X, y)
    with pytest.raises(ClassifierError, match="shape"):
        clf.sufficiency(X[:, :10])


def test_stratified_split_keeps_class_ratio():
    y = np.array([0] * 70 + [1] * 30)
    tr, va = stratified_split(y, 0.3, 42)
    assert len(va) == 30 and len(tr) == 70 and not set(tr) & set(va)
    assert y[va].sum() == 9


def test_grid_search_threshold():
    scores = np.array([0.1, 0.2, 0.32, 0.6, 0.7, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    tau = grid_search_threshold(scores, labels)
    assert 0.32 <= tau < 0.6
    assert tau == 0.55  # ties go to the highest (most conservative) threshold
    # all-negative labels: never stop early
    assert grid_search_threshold(scores, np.zeros(6)) == 0.95
