"""Classifier kinds by name: a fresh classifier (``make_classifier``) or a saved folder of any kind
(``load_classifier_folder``)."""

from __future__ import annotations

import json
from pathlib import Path

from tandem_lm_eval.judgment.card import FORMAT_VERSION, META_FILE, WEIGHTS_FILE, ClassifierCard
from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.estimator_classifier import EstimatorClassifier
from tandem_lm_eval.judgment.features import (
    FEATURE_NAMES,
    FEATURE_SET,
)
from tandem_lm_eval.judgment.grouped import GroupedClassifier
from tandem_lm_eval.judgment.mlp import SufficiencyClassifier
from tandem_lm_eval.judgment.scaling import log_scaled_columns


def make_classifier(kind: str, **params):
    """A fresh classifier of ``kind``: ``mlp`` (the paper's), ``logistic`` or ``gradient_boosting``."""
    if kind == "mlp":
        return SufficiencyClassifier(**params)
    from tandem_lm_eval.judgment.estimators import ESTIMATORS, make_estimator

    if kind not in ESTIMATORS:
        raise ClassifierError(
            f"unknown classifier kind {kind!r}; valid: mlp, {', '.join(sorted(ESTIMATORS))}"
        )
    if kind == "logistic":  # a linear model needs the heavy-tailed columns on a log scale; trees do not
        params.setdefault("log_columns", list(log_scaled_columns()))
    return EstimatorClassifier(make_estimator(kind, **params))


def load_classifier_folder(folder: str | Path):
    """Load any classifier folder: an MLP, another estimator, or a per-group classifier."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ClassifierError(f"{folder} is not a classifier folder (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClassifierError(f"{meta_path}: invalid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ClassifierError(f"{meta_path}: expected a JSON object")
    if meta.get("feature_set") != FEATURE_SET:
        raise ClassifierError(
            f"{folder} was trained on feature set {meta.get('feature_set')!r}; this version computes "
            f"{FEATURE_SET!r} (features over Q ⊕ I_t, not the chat template): retrain it with "
            "`tandem-lm-eval collect` and `tandem-lm-eval fit` (docs/classifier.md)"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise ClassifierError(f"{folder}: unsupported classifier format {meta.get('format_version')!r}")
    try:
        if meta.get("kind") == GroupedClassifier.kind:
            members = {g: load_classifier_folder(folder / sub) for g, sub in meta["groups"].items()}
            return GroupedClassifier(
                members, load_classifier_folder(folder / meta["fallback"]), meta["group_by"]
            )
        if meta.get("feature_names") != list(FEATURE_NAMES):
            raise ClassifierError(f"{folder}: feature names differ from {FEATURE_SET}'s: retrain it")
        if not (folder / WEIGHTS_FILE).is_file():
            raise ClassifierError(f"{folder} is not a classifier folder (no {WEIGHTS_FILE})")
        card = ClassifierCard.from_meta(meta, folder)
        if meta.get("kind") == "mlp":
            return SufficiencyClassifier._from_folder(folder, meta, card)
        return EstimatorClassifier._from_folder(folder, meta, card)
    except ClassifierError:
        raise
    except Exception as exc:  # noqa: BLE001 - a missing key, a truncated safetensors file (SafetensorError), ...
        raise ClassifierError(f"{folder}: malformed classifier ({type(exc).__name__}: {exc})") from exc


def load_mlp(folder: str | Path) -> SufficiencyClassifier:
    """Load a classifier folder that must hold the paper's MLP."""
    clf = load_classifier_folder(folder)
    if not isinstance(clf, SufficiencyClassifier):
        raise ClassifierError(f"{folder} holds a {clf.kind} classifier, not an MLP")
    return clf
