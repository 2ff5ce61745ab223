"""The sufficiency classifier C (Eq. 8): s_t = C(f_t) in [0, 1] over ``tandem-v2`` features.

The paper's estimator (section 3.1) is an MLP: two hidden layers of 64 and 32 units, ReLU, dropout 0.3,
Adam with lr 1e-4, early stopping on validation accuracy. ``estimators.py`` adds scikit-learn's
logistic regression and gradient boosting as alternatives behind the same interface.

Estimator API like scikit-learn: parameters in the constructor, ``fit``, ``predict_proba``. Saved as
a folder, never pickle: ``model.safetensors`` (weights and input scaler) + ``classifier.json``
(feature set and span, intern model, entropy method, budgets, thresholds with the objective that
chose them and the accuracy-cost front, training summary) + ``training_questions.txt`` (hashes of
the training questions, so an evaluation that contains them is refused) + a model card.

A *per-group* classifier (one per MATH subject, say) is a folder of such folders with a unified
fallback: ``GroupedClassifier``; the cascade picks the member by each request's group.

Inputs are standardized with the training mean/std; perplexity statistics and the length are first
put on a signed log scale (sign(x)·log1p(|x|)), because per-token perplexities span many orders of
magnitude and would otherwise swamp the other features. This is part of the classifier, not of the
feature set: the features stay exactly those of Eq. 7.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .features import DEFAULT_SPAN, FEATURE_NAMES, FEATURE_SET, NUM_FEATURES, check_span

WEIGHTS_FILE = "model.safetensors"
META_FILE = "classifier.json"
HASHES_FILE = "training_questions.txt"
# 2: tandem-v2 features with a recorded span, estimator kinds, objective and front, per-group folders.
FORMAT_VERSION = 2
THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


class ClassifierError(ValueError):
    """A classifier file that is missing, malformed, or made for another setup."""


def log_scaled_columns() -> np.ndarray:
    return np.array([name.startswith("ppl_") or name == "length" for name in FEATURE_NAMES])


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class ClassifierCard:
    """Everything a classifier must know about the setup that produced its training features."""

    feature_set: str = FEATURE_SET
    feature_span: str = DEFAULT_SPAN
    intern_model: str = ""
    entropy_method: str = "exact"
    budgets: list[int] = field(default_factory=lambda: [100, 500, 1000])
    thresholds: list[float] = field(default_factory=list)  # one per stage: stage 0 .. len(budgets)
    # The stop rule the thresholds were chosen for: "tandem" (first s_t > τ_t, else argmax) or
    # "route" (one decision from stage 0, else the last stage; only thresholds[0] matters).
    policy: str = "tandem"
    # How the thresholds were chosen (replay.Objective.to_dict()) and the accuracy-TFLOPs front of the
    # whole threshold grid on the rows they were chosen on (replay.FrontPoint.to_dict() each).
    threshold_objective: dict = field(default_factory=dict)
    threshold_front: list[dict] = field(default_factory=list)
    training: dict = field(default_factory=dict)
    # Hashes (prompts.question_hash) of the questions the classifier and thresholds were fit on.
    training_questions: frozenset[str] = frozenset()

    def to_meta(self) -> dict:
        return {
            "feature_set": self.feature_set,
            "feature_names": list(FEATURE_NAMES),
            "feature_span": self.feature_span,
            "log_scaled_features": [n for n, c in zip(FEATURE_NAMES, log_scaled_columns()) if c],
            "intern_model": self.intern_model,
            "entropy_method": self.entropy_method,
            "budgets": list(self.budgets),
            "thresholds": [float(t) for t in self.thresholds],
            "policy": self.policy,
            "threshold_objective": self.threshold_objective,
            "threshold_front": self.threshold_front,
            "training": self.training,
        }

    @classmethod
    def from_meta(cls, meta: dict, folder: Path) -> ClassifierCard:
        hashes = folder / HASHES_FILE
        return cls(
            feature_set=meta["feature_set"],
            feature_span=check_span(meta.get("feature_span", DEFAULT_SPAN)),
            intern_model=meta.get("intern_model", ""),
            entropy_method=meta.get("entropy_method", "exact"),
            budgets=list(meta.get("budgets", [])),
            thresholds=list(meta.get("thresholds", [])),
            policy=meta.get("policy", "tandem"),
            threshold_objective=meta.get("threshold_objective", {}),
            threshold_front=meta.get("threshold_front", []),
            training=meta.get("training", {}),
            training_questions=frozenset(hashes.read_text().split()) if hashes.is_file() else frozenset(),
        )


class SufficiencyClassifier:
    def __init__(
        self,
        hidden_sizes: Sequence[int] = (64, 32),
        dropout: float = 0.3,
        learning_rate: float = 1e-4,
        batch_size: int = 32,
        max_epochs: int = 3,
        patience: int = 10,
        validation_fraction: float = 0.3,
        random_state: int = 42,
        early_stopping: str = "accuracy",
    ) -> None:
        if early_stopping not in ("accuracy", "loss"):
            raise ValueError(
                f"early_stopping must be 'accuracy' (the paper's) or 'loss', got {early_stopping!r}"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if learning_rate <= 0 or batch_size < 1 or max_epochs < 1:
            raise ValueError("learning_rate must be > 0, batch_size and max_epochs >= 1")
        if not 0 < validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.dropout = float(dropout)
        self.learning_rate = float(learning_rate)
        self.batch_size = int(batch_size)
        self.max_epochs = int(max_epochs)
        self.patience = int(patience)
        self.validation_fraction = float(validation_fraction)
        self.random_state = int(random_state)
        # The paper stops on validation accuracy; with rare positives that plateaus at "never
        # sufficient" from the first epoch, so validation log-loss is offered as well.
        self.early_stopping = early_stopping
        self.card = ClassifierCard()
        self._net = None
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        self.history_: list[dict] = []

    # --- network ------------------------------------------------------------------------------------
    def _build(self):
        import torch
        from torch import nn

        layers: list[nn.Module] = []
        width = NUM_FEATURES
        for h in self.hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(self.dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        torch.manual_seed(self.random_state)
        return nn.Sequential(*layers)

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != NUM_FEATURES:
            raise ClassifierError(
                f"expected features of shape (n, {NUM_FEATURES}) ({FEATURE_SET}), got {tuple(X.shape)}"
            )
        X = X.copy()
        cols = log_scaled_columns()
        X[:, cols] = _signed_log(X[:, cols])
        return X

    # --- estimator API ------------------------------------------------------------------------------
    def fit(self, X, y, X_val=None, y_val=None) -> SufficiencyClassifier:
        """Train; without an explicit validation set, hold out a stratified ``validation_fraction``."""
        import torch

        X = self._prepare(X)
        y = np.asarray(y, dtype=np.float64).ravel()
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if set(np.unique(y)) - {0.0, 1.0}:
            raise ValueError("labels must be 0 (insufficient) or 1 (sufficient)")
        if X_val is None:
            train_idx, val_idx = stratified_split(y, self.validation_fraction, self.random_state)
            X_tr, y_tr, X_va, y_va = X[train_idx], y[train_idx], X[val_idx], y[val_idx]
        else:
            X_tr, y_tr = X, y
            X_va, y_va = self._prepare(X_val), np.asarray(y_val, dtype=np.float64).ravel()
        self._mean = X_tr.mean(axis=0)
        std = X_tr.std(axis=0)
        self._std = np.where(std > 1e-12, std, 1.0)

        net = self._build()
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        gen = torch.Generator().manual_seed(self.random_state)
        xt = torch.tensor((X_tr - self._mean) / self._std, dtype=torch.float32)
        yt = torch.tensor(y_tr, dtype=torch.float32)
        xv = torch.tensor((X_va - self._mean) / self._std, dtype=torch.float32)
        best_acc, best_state, since_best, best_epoch = -math.inf, None, 0, 0
        self.history_ = []
        for epoch in range(self.max_epochs):
            net.train()
            perm = torch.randperm(len(xt), generator=gen)
            total = 0.0
            for start in range(0, len(xt), self.batch_size):
                idx = perm[start : start + self.batch_size]
                opt.zero_grad()
                loss = loss_fn(net(xt[idx])[:, 0], yt[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            net.eval()
            with torch.no_grad():
                val_logits = net(xv)[:, 0]
                val_loss = (
                    float(loss_fn(val_logits, torch.tensor(y_va, dtype=torch.float32))) if len(y_va) else 0.0
                )
                val_pred = (torch.sigmoid(val_logits).numpy() > 0.5).astype(float)
            val_acc = float((val_pred == y_va).mean()) if len(y_va) else 0.0
            self.history_.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": total / len(xt),
                    "val_accuracy": val_acc,
                    "val_loss": val_loss,
                }
            )
            quality = val_acc if self.early_stopping == "accuracy" else -val_loss
            if quality > best_acc:  # early stopping on the validation criterion, keep the best weights
                best_acc, since_best, best_epoch = quality, 0, epoch
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                since_best += 1
                if since_best >= self.patience:
                    break
        net.load_state_dict(best_state)
        net.eval()
        self._net = net
        self.card.training.update(
            {
                "train_rows": int(len(y_tr)),
                "validation_rows": int(len(y_va)),
                "positive_rate": float(y.mean()) if len(y) else 0.0,
                "epochs_run": len(self.history_),
                "early_stopping": self.early_stopping,
                "best_epoch": best_epoch + 1,
                "best_validation_accuracy": self.history_[best_epoch]["val_accuracy"],
            }
        )
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2) array: P(insufficient), P(sufficient), like scikit-learn."""
        s = self.sufficiency(X)
        return np.stack([1.0 - s, s], axis=1)

    def sufficiency(self, X) -> np.ndarray:
        """s = C(f) in [0, 1] for each row of features."""
        import torch

        if self._net is None:
            raise ClassifierError("the classifier is not fitted")
        X = self._prepare(X)
        if len(X) == 0:
            return np.zeros(0)
        with torch.no_grad():
            z = torch.tensor((X - self._mean) / self._std, dtype=torch.float32)
            return torch.sigmoid(self._net(z)[:, 0]).double().numpy()

    # --- persistence --------------------------------------------------------------------------------
    kind = "mlp"

    def save(self, folder: str | Path) -> Path:
        import torch
        from safetensors.torch import save_file

        if self._net is None:
            raise ClassifierError("cannot save an unfitted classifier")
        tensors = {f"net.{k}": v.contiguous() for k, v in self._net.state_dict().items()}
        tensors["scaler.mean"] = torch.tensor(self._mean, dtype=torch.float64)
        tensors["scaler.std"] = torch.tensor(self._std, dtype=torch.float64)
        meta = {
            "architecture": {"hidden_sizes": list(self.hidden_sizes), "dropout": self.dropout},
            "hyperparameters": {
                "learning_rate": self.learning_rate,
                "batch_size": self.batch_size,
                "max_epochs": self.max_epochs,
                "patience": self.patience,
                "validation_fraction": self.validation_fraction,
                "random_state": self.random_state,
                "early_stopping": self.early_stopping,
            },
            "history": self.history_,
        }
        return _write_folder(folder, self.kind, self.card, meta, lambda path: save_file(tensors, path))

    @classmethod
    def load(cls, folder: str | Path) -> SufficiencyClassifier:
        clf = load_classifier_folder(folder)
        if not isinstance(clf, cls):
            raise ClassifierError(f"{folder} holds a {clf.kind} classifier, not an MLP")
        return clf

    @classmethod
    def _from_folder(cls, folder: Path, meta: dict, card: ClassifierCard) -> SufficiencyClassifier:
        from safetensors.torch import load_file

        arch, hp = meta["architecture"], meta["hyperparameters"]
        clf = cls(hidden_sizes=arch["hidden_sizes"], dropout=arch["dropout"], **hp)
        clf.card = card
        clf.history_ = meta.get("history", [])
        weights_path = folder / WEIGHTS_FILE
        tensors = load_file(str(weights_path))
        net = clf._build()
        try:
            net.load_state_dict({k[len("net.") :]: v for k, v in tensors.items() if k.startswith("net.")})
        except RuntimeError as exc:
            raise ClassifierError(f"{weights_path}: weights do not match the architecture ({exc})") from exc
        net.eval()
        clf._net = net
        clf._mean = tensors["scaler.mean"].numpy()
        clf._std = tensors["scaler.std"].numpy()
        return clf


class EstimatorClassifier:
    """A scikit-learn estimator of ``estimators.py`` (logistic regression, gradient boosting) with a
    card, saved like the MLP: arrays in safetensors, parameters in JSON, never pickle."""

    def __init__(self, estimator) -> None:
        self.estimator = estimator
        self.kind = estimator.kind
        self.card = ClassifierCard()

    def fit(self, X, y, X_val=None, y_val=None) -> EstimatorClassifier:
        X = _check_width(X)
        self.estimator.fit(X, y, None if X_val is None else _check_width(X_val), y_val)
        self.card.training.update(getattr(self.estimator, "training_", {}))
        return self

    def sufficiency(self, X) -> np.ndarray:
        return np.asarray(self.estimator.sufficiency(_check_width(X)), dtype=np.float64)

    def predict_proba(self, X) -> np.ndarray:
        s = self.sufficiency(X)
        return np.stack([1.0 - s, s], axis=1)

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save_file

        tensors = {f"est.{k}": np.ascontiguousarray(v) for k, v in self.estimator.to_tensors().items()}
        meta = {"estimator_params": self.estimator.params()}
        return _write_folder(folder, self.kind, self.card, meta, lambda path: save_file(tensors, path))

    @classmethod
    def _from_folder(cls, folder: Path, meta: dict, card: ClassifierCard) -> EstimatorClassifier:
        from safetensors.numpy import load_file

        from .estimators import ESTIMATORS

        tensors = {k[len("est.") :]: v for k, v in load_file(str(folder / WEIGHTS_FILE)).items()}
        estimator = ESTIMATORS[meta["estimator"]].from_tensors(tensors, meta.get("estimator_params", {}))
        clf = cls(estimator)
        clf.card = card
        return clf


def make_classifier(kind: str, **params):
    """A fresh classifier of ``kind``: ``mlp`` (the paper's), ``logistic`` or ``gradient_boosting``."""
    if kind == "mlp":
        return SufficiencyClassifier(**params)
    from .estimators import ESTIMATORS, make_estimator

    if kind not in ESTIMATORS:
        raise ClassifierError(
            f"unknown classifier kind {kind!r}; valid: mlp, {', '.join(sorted(ESTIMATORS))}"
        )
    if kind == "logistic":  # a linear model needs the heavy-tailed columns on a log scale; trees do not
        params.setdefault("log_columns", list(log_scaled_columns()))
    return EstimatorClassifier(make_estimator(kind, **params))


class GroupedClassifier:
    """One classifier per group (a MATH subject, a task) plus a unified fallback, saved as one folder.

    ``group_by`` says how a request's group is found: ``task`` (the lm-eval task name) or
    ``doc:<field>`` (a field of the task's document, e.g. ``doc:subject`` for MATH, the same in the
    train and test tasks). Every member must read the same features from the same intern.
    """

    kind = "per_group"

    def __init__(self, members: dict[str, object], fallback, group_by: str) -> None:
        check_group_by(group_by)
        self.members, self.fallback, self.group_by = dict(members), fallback, group_by
        for name, member in self.members.items():
            for key in ("feature_set", "feature_span", "intern_model", "entropy_method", "budgets"):
                if getattr(member.card, key) != getattr(fallback.card, key):
                    raise ClassifierError(
                        f"group {name!r} was trained with {key}={getattr(member.card, key)!r}, the fallback "
                        f"with {getattr(fallback.card, key)!r}: members of one classifier must agree"
                    )

    @property
    def card(self) -> ClassifierCard:
        """The fallback's card; ``training_questions`` covers every member."""
        questions = set(self.fallback.card.training_questions)
        for member in self.members.values():
            questions |= member.card.training_questions
        return dataclasses.replace(self.fallback.card, training_questions=frozenset(questions))

    def for_group(self, group: str | None):
        return self.members.get(group, self.fallback) if group is not None else self.fallback

    def sufficiency(self, X, groups: Sequence[str | None] | None = None) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if groups is None:
            return self.fallback.sufficiency(X)
        out = np.zeros(len(X))
        for group in set(groups):
            rows = np.array([g == group for g in groups])
            out[rows] = self.for_group(group).sufficiency(X[rows])
        return out

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = {}
        for group, member in self.members.items():
            names[group] = _group_folder_name(group)
            member.save(folder / names[group])
        self.fallback.save(folder / "unified")
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "group_by": self.group_by,
            "groups": names,
            "fallback": "unified",
            "feature_set": self.fallback.card.feature_set,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder


def check_group_by(group_by: str) -> str:
    if group_by == "task" or (group_by.startswith("doc:") and len(group_by) > 4):
        return group_by
    raise ClassifierError(f"group_by must be 'task' or 'doc:<field>', got {group_by!r}")


def group_of(group_by: str, task: str | None, doc: dict | None) -> str | None:
    """A request's group: its task name, or a field of its document (None when absent)."""
    if group_by == "task":
        return task
    value = (doc or {}).get(group_by[len("doc:") :])
    return None if value is None else str(value)


def _group_folder_name(group: str) -> str:
    import re

    return "group-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", group).strip("_") or "empty")


def _check_width(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != NUM_FEATURES:
        raise ClassifierError(
            f"expected features of shape (n, {NUM_FEATURES}) ({FEATURE_SET}), got {tuple(X.shape)}"
        )
    return X


def _write_folder(folder: str | Path, kind: str, card: ClassifierCard, meta: dict, write_weights) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_weights(str(folder / WEIGHTS_FILE))
    full = {"format_version": FORMAT_VERSION, "kind": kind, "estimator": kind, **card.to_meta(), **meta}
    (folder / META_FILE).write_text(json.dumps(full, indent=2) + "\n")
    if card.training_questions:
        (folder / HASHES_FILE).write_text("\n".join(sorted(card.training_questions)) + "\n")
    return folder


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


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation), each class split in the same proportion (scikit-learn's
    ``train_test_split``; a class too small to split stays on the training side)."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    index = np.arange(len(y))
    labels, counts = np.unique(y, return_counts=True)
    splittable = np.isin(y, labels[counts >= 2])
    train, val = train_test_split(
        index[splittable], test_size=fraction, random_state=seed, stratify=y[splittable]
    )
    train = np.concatenate([train, index[~splittable]])
    return np.sort(train.astype(int)), np.sort(val.astype(int))


def grid_search_threshold(scores, labels, grid: Sequence[float] = THRESHOLD_GRID) -> float:
    """The τ of ``grid`` that best predicts the labels as ``score > τ`` (accuracy; ties -> higher τ,
    the conservative choice: stopping early on a wrong guess costs accuracy, continuing costs tokens)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape:
        raise ValueError("scores and labels must have the same shape")
    if scores.size == 0:
        return 0.5
    best_tau, best_acc = grid[0], -math.inf
    for tau in grid:
        acc = float(((scores > tau) == labels).mean())
        if acc >= best_acc:
            best_tau, best_acc = tau, acc
    return float(best_tau)


def normalize_model_name(name: str) -> str:
    """Compare models by their last path component: ``/models/Qwen3-8B`` and ``Qwen/Qwen3-8B`` agree."""
    return Path(name.rstrip("/")).name.lower() if name else ""
