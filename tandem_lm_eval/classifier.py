"""The sufficiency classifier C (Eq. 8): an MLP over ``tandem-v1`` features, s_t = C(f_t) in [0, 1].

Paper (section 3.1): two hidden layers of 64 and 32 units, ReLU, dropout 0.3, Adam with lr 1e-4,
early stopping on validation accuracy, stratified 70/30 split with seed 42; per-stage thresholds by
grid search over 0.05..0.95 in steps of 0.05.

Estimator API like scikit-learn: parameters in the constructor, ``fit``, ``predict_proba``. Saved as
a folder, never pickle: ``model.safetensors`` (weights and the input scaler) + ``classifier.json``
(feature set, intern model, entropy method, budgets, thresholds, training summary) + a model card.

Inputs are standardized with the training mean/std; perplexity statistics and the length are first
put on a signed log scale (sign(x)·log1p(|x|)), because per-token perplexities span many orders of
magnitude and would otherwise swamp the other features. This is part of the classifier, not of the
feature set: the features stay exactly those of Eq. 7.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .features import FEATURE_NAMES, FEATURE_SET, NUM_FEATURES

WEIGHTS_FILE = "model.safetensors"
META_FILE = "classifier.json"
FORMAT_VERSION = 1
THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


class ClassifierError(ValueError):
    """A classifier file that is missing, malformed, or made for another setup."""


def _log_scaled_columns() -> np.ndarray:
    return np.array([name.startswith("ppl_") or name == "length" for name in FEATURE_NAMES])


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class ClassifierCard:
    """Everything a classifier must know about the setup that produced its training features."""

    feature_set: str = FEATURE_SET
    intern_model: str = ""
    entropy_method: str = "exact"
    budgets: list[int] = field(default_factory=lambda: [100, 500, 1000])
    thresholds: list[float] = field(default_factory=list)  # one per stage: stage 0 .. len(budgets)
    training: dict = field(default_factory=dict)


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
    ) -> None:
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
        cols = _log_scaled_columns()
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
        best_acc, best_state, since_best = -1.0, None, 0
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
                val_pred = (torch.sigmoid(net(xv)[:, 0]).numpy() > 0.5).astype(float)
            val_acc = float((val_pred == y_va).mean()) if len(y_va) else 0.0
            self.history_.append({"epoch": epoch + 1, "train_loss": total / len(xt), "val_accuracy": val_acc})
            if val_acc > best_acc:  # early stopping on validation accuracy, keep the best weights
                best_acc, since_best = val_acc, 0
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
                "best_validation_accuracy": best_acc,
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
    def save(self, folder: str | Path) -> Path:
        import torch
        from safetensors.torch import save_file

        if self._net is None:
            raise ClassifierError("cannot save an unfitted classifier")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v.contiguous() for k, v in self._net.state_dict().items()}
        tensors["scaler.mean"] = torch.tensor(self._mean, dtype=torch.float64)
        tensors["scaler.std"] = torch.tensor(self._std, dtype=torch.float64)
        save_file(tensors, str(folder / WEIGHTS_FILE))
        meta = {
            "format_version": FORMAT_VERSION,
            "feature_set": self.card.feature_set,
            "feature_names": list(FEATURE_NAMES),
            "log_scaled_features": [n for n, c in zip(FEATURE_NAMES, _log_scaled_columns()) if c],
            "intern_model": self.card.intern_model,
            "entropy_method": self.card.entropy_method,
            "budgets": list(self.card.budgets),
            "thresholds": [float(t) for t in self.card.thresholds],
            "architecture": {"hidden_sizes": list(self.hidden_sizes), "dropout": self.dropout},
            "hyperparameters": {
                "learning_rate": self.learning_rate,
                "batch_size": self.batch_size,
                "max_epochs": self.max_epochs,
                "patience": self.patience,
                "validation_fraction": self.validation_fraction,
                "random_state": self.random_state,
            },
            "training": self.card.training,
            "history": self.history_,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SufficiencyClassifier:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
        if not meta_path.is_file() or not weights_path.is_file():
            raise ClassifierError(
                f"{folder} is not a classifier folder (needs {META_FILE} and {WEIGHTS_FILE})"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ClassifierError(f"{meta_path}: invalid JSON ({exc})") from exc
        if meta.get("format_version") != FORMAT_VERSION:
            raise ClassifierError(f"{folder}: unsupported classifier format {meta.get('format_version')!r}")
        if meta.get("feature_set") != FEATURE_SET or meta.get("feature_names") != list(FEATURE_NAMES):
            raise ClassifierError(
                f"{folder} was trained on feature set {meta.get('feature_set')!r}; this version computes "
                f"{FEATURE_SET!r}: retrain it"
            )
        arch, hp = meta["architecture"], meta["hyperparameters"]
        clf = cls(hidden_sizes=arch["hidden_sizes"], dropout=arch["dropout"], **hp)
        clf.card = ClassifierCard(
            feature_set=meta["feature_set"],
            intern_model=meta.get("intern_model", ""),
            entropy_method=meta.get("entropy_method", "exact"),
            budgets=list(meta.get("budgets", [])),
            thresholds=list(meta.get("thresholds", [])),
            training=meta.get("training", {}),
        )
        clf.history_ = meta.get("history", [])
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


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation), each class split in the same proportion."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * fraction))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(val, dtype=int))


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
