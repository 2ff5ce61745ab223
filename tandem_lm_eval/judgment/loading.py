"""Classifier kinds by name: a fresh classifier (``make_classifier``) or a saved folder of any kind
(``load_classifier_folder``)."""

from __future__ import annotations

import json
from pathlib import Path

from tandem_lm_eval.judgment.card import (
    ADAPTER_CONFIG,
    ADAPTER_FOLDER,
    ADAPTER_WEIGHTS,
    FORMAT_VERSION,
    META_FILE,
    WEIGHTS_FILE,
    ClassifierCard,
)
from tandem_lm_eval.judgment.classifier import Classifier
from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.estimator_classifier import EstimatorClassifier
from tandem_lm_eval.judgment.features import FEATURE_SET
from tandem_lm_eval.judgment.grouped import GroupedClassifier
from tandem_lm_eval.judgment.judges import FEATURE_SETS, HiddenReading, JudgeError, JudgeSpec
from tandem_lm_eval.judgment.mlp import SufficiencyClassifier


def make_classifier(
    kind: str, spec: JudgeSpec | None = None, **params
) -> SufficiencyClassifier | EstimatorClassifier:
    """A fresh classifier of ``kind``: ``mlp`` (the paper's), ``logistic`` or ``gradient_boosting``,
    for the input ``spec`` describes (default: ``tandem-v2`` over the default span)."""
    spec = spec or JudgeSpec()
    if kind == "mlp":
        params.setdefault("log_columns", list(spec.log_columns()))
        clf = SufficiencyClassifier(**params)
        clf.card = _card_for(spec)
        return clf
    from tandem_lm_eval.judgment.estimators import ESTIMATORS, make_estimator

    if kind not in ESTIMATORS:
        raise ClassifierError(
            f"unknown classifier kind {kind!r}; valid: mlp, {', '.join(sorted(ESTIMATORS))}"
        )
    if kind == "logistic":  # a linear model needs the heavy-tailed columns on a log scale; trees do not
        params.setdefault("log_columns", list(spec.log_columns()))
    clf = EstimatorClassifier(make_estimator(kind, **params))
    clf.card = _card_for(spec)
    return clf


def _card_for(spec: JudgeSpec) -> ClassifierCard:
    return ClassifierCard(feature_set=spec.feature_set, feature_span=spec.span, hidden=spec.hidden)


def load_classifier_folder(folder: str | Path) -> Classifier:
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
    if meta.get("feature_set") not in FEATURE_SETS:
        raise ClassifierError(
            f"{folder} was trained on feature set {meta.get('feature_set')!r}; this version computes "
            f"{', '.join(map(repr, FEATURE_SETS))} ({FEATURE_SET} = features over Q ⊕ I_t, not the chat "
            "template): retrain it with "
            "`tandem-lm-eval collect` and `tandem-lm-eval fit` (docs/classifier.md)"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise ClassifierError(f"{folder}: unsupported classifier format {meta.get('format_version')!r}")
    try:
        if meta.get("kind") == GroupedClassifier.kind:
            groups = meta["groups"]
            if not isinstance(groups, dict):
                raise ClassifierError(f"{meta_path}: 'groups' must map each group to its folder")
            members = {g: load_classifier_folder(member_folder(folder, sub)) for g, sub in groups.items()}
            fallback = load_classifier_folder(member_folder(folder, meta["fallback"]))
            return GroupedClassifier(members, fallback, meta["group_by"])
        card = ClassifierCard.from_meta(meta, folder)
        if meta.get("feature_names") != card.spec.statistics_names():
            raise ClassifierError(f"{folder}: feature names differ from {FEATURE_SET}'s: retrain it")
        if "num_features" in meta and meta["num_features"] != card.spec.width:
            raise ClassifierError(
                f"{folder}: num_features {meta['num_features']} does not match its {card.feature_set} "
                f"input ({card.spec.width})"
            )
        if not (folder / WEIGHTS_FILE).is_file():
            raise ClassifierError(f"{folder} is not a classifier folder (no {WEIGHTS_FILE})")
        if meta.get("kind") == "mlp":
            return SufficiencyClassifier._from_folder(folder, meta, card)
        return EstimatorClassifier._from_folder(folder, meta, card)
    except ClassifierError:
        raise
    except JudgeError as exc:
        raise ClassifierError(f"{folder}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a missing key, a truncated safetensors file (SafetensorError), ...
        raise ClassifierError(f"{folder}: malformed classifier ({type(exc).__name__}: {exc})") from exc


def member_folder(folder: Path, name) -> Path:
    """A per-group classifier's member folder, named in its ``classifier.json``: a relative path that
    stays inside ``folder`` once symlinks are resolved (no absolute path, no ``..``, not the folder
    itself), so a classifier folder cannot make the loader read files elsewhere on the machine."""
    if not isinstance(name, str) or not name.strip():
        raise ClassifierError(f"{folder / META_FILE}: a member folder must be a relative path, got {name!r}")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ClassifierError(
            f"{folder / META_FILE}: member folder {name!r} must be a path inside {folder} (no absolute path, no '..')"
        )
    root = folder.resolve()
    target = (folder / relative).resolve()
    if target == root or not target.is_relative_to(root):
        raise ClassifierError(
            f"{folder / META_FILE}: member folder {name!r} resolves to {target}, outside {folder} (a symlink out?)"
        )
    return folder / relative


def load_mlp(folder: str | Path) -> SufficiencyClassifier:
    """Load a classifier folder that must hold the paper's MLP."""
    clf = load_classifier_folder(folder)
    if not isinstance(clf, SufficiencyClassifier):
        raise ClassifierError(f"{folder} holds a {clf.kind} classifier, not an MLP")
    return clf


def file_sha256(path: str | Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def adapter_of(folder: str | Path, hidden: HiddenReading) -> tuple[str, str]:
    """(adapter folder, adapter id) of a ``hidden_lora`` classifier in ``folder``, its files checked
    against the card (present, the same sha256) before any model loads."""
    adapter = Path(folder) / ADAPTER_FOLDER
    if hidden.adapter is None:
        raise ClassifierError(f"{folder}: its judge reads no LoRA adapter")
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
        if not (adapter / name).is_file():
            raise ClassifierError(f"{folder}: its LoRA adapter is missing ({adapter / name})")
    digest = file_sha256(adapter / ADAPTER_WEIGHTS)
    if digest != hidden.adapter_id:
        raise ClassifierError(
            f"{folder}: {ADAPTER_FOLDER}/{ADAPTER_WEIGHTS} is not the adapter its card names "
            f"(sha256 {digest[:16]}..., the card says {str(hidden.adapter_id)[:16]}...)"
        )
    return str(adapter), digest
