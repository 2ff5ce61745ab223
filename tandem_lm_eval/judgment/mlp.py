"""The sufficiency classifier C (Eq. 8): s_t = C(f_t) in [0, 1] over ``tandem-v2`` features.

The paper's estimator (section 3.1) is an MLP: two hidden layers of 64 and 32 units, ReLU, dropout 0.3,
Adam with lr 1e-4, early stopping on validation accuracy. ``estimators/`` adds scikit-learn's
logistic regression and gradient boosting as alternatives behind the same interface.

Estimator API like scikit-learn: parameters in the constructor, ``fit``, ``predict_proba``. Saved as
a folder, never pickle: ``model.safetensors`` (weights and input scaler) + ``classifier.json``
(feature set and span, intern model, entropy method, budgets, thresholds with the objective that
chose them and the accuracy-cost front, training summary) + ``training_questions.txt`` (the training
questions by content and by rendered dialogue, training_guard.py, so an evaluation that contains them
is refused) + a model card.

A *per-group* classifier (one per MATH subject, say) is a folder of such folders with a unified
fallback: ``GroupedClassifier``; the cascade picks the member by each request's group.

Inputs are standardized with the training mean/std; perplexity statistics and the length are first
put on a signed log scale (sign(x)·log1p(|x|)), because per-token perplexities span many orders of
magnitude and would otherwise swamp the other features. This is part of the classifier, not of the
feature set: the features stay exactly those of Eq. 7.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tandem_lm_eval.judgment.card import WEIGHTS_FILE, ClassifierCard, write_folder
from tandem_lm_eval.judgment.classifier import Classifier
from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.features import NUM_FEATURES
from tandem_lm_eval.judgment.scaling import log_scaled_columns, signed_log
from tandem_lm_eval.judgment.weights import check_shapes


class SufficiencyClassifier(Classifier):
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
        log_columns: Sequence[bool] | None = None,
    ) -> None:
        if early_stopping not in ("accuracy", "loss"):
            raise ClassifierError(
                f"early_stopping must be 'accuracy' (the paper's) or 'loss', got {early_stopping!r}"
            )
        if not 0 <= dropout < 1:
            raise ClassifierError(f"dropout must be in [0, 1), got {dropout}")
        if learning_rate <= 0 or batch_size < 1 or max_epochs < 1:
            raise ClassifierError("learning_rate must be > 0, batch_size and max_epochs >= 1")
        if not 0 < validation_fraction < 1:
            raise ClassifierError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
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
        # Columns put on a signed log scale (JudgeSpec.log_columns); None: tandem-v2's for 17 columns,
        # none for another width (hidden units).
        self.log_columns = None if log_columns is None else np.array([bool(c) for c in log_columns])
        self.num_features: int | None = None  # the input width, fixed by fit (or the card on load)
        self.card = ClassifierCard()
        self._net = None
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        self.history_: list[dict] = []

    # --- network ------------------------------------------------------------------------------------
    def _build(self):
        import torch
        from torch import nn

        # Seeded before the layers exist: their initial weights come from the global generator, so a
        # seed set afterwards would leave the fit depending on whatever ran before it.
        torch.manual_seed(self.random_state)
        layers: list[nn.Module] = []
        width = self.num_features or NUM_FEATURES
        for h in self.hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(self.dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        return nn.Sequential(*layers)

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every tensor ``save`` writes for this architecture (``_build``'s layers:
        Linear, ReLU, Dropout per hidden size, then the output Linear; the input scaler)."""
        width = self.num_features or NUM_FEATURES
        shapes: dict[str, tuple[int, ...]] = {"scaler.mean": (width,), "scaler.std": (width,)}
        fan_in = width
        for i, out in enumerate([*self.hidden_sizes, 1]):
            shapes[f"net.{3 * i}.weight"] = (out, fan_in)
            shapes[f"net.{3 * i}.bias"] = (out,)
            fan_in = out
        return shapes

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        width = self.num_features or NUM_FEATURES
        if X.ndim != 2 or X.shape[1] != width:
            raise ClassifierError(
                f"expected features of shape (n, {width}) ({self.card.feature_set}), got {tuple(X.shape)}"
            )
        X = X.copy()
        cols = self._log_mask(width)
        X[:, cols] = signed_log(X[:, cols])
        return X

    def _log_mask(self, width: int) -> np.ndarray:
        if self.log_columns is not None:
            if len(self.log_columns) != width:
                raise ClassifierError(
                    f"log_columns has {len(self.log_columns)} entries, the features {width}"
                )
            return self.log_columns
        return log_scaled_columns() if width == NUM_FEATURES else np.zeros(width, dtype=bool)

    # --- estimator API ------------------------------------------------------------------------------
    def fit(self, X, y, X_val=None, y_val=None) -> SufficiencyClassifier:
        """Train; without an explicit validation set, hold out a stratified ``validation_fraction``."""
        import torch

        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 2:
            self.num_features = X.shape[1]
        X = self._prepare(X)
        y = np.asarray(y, dtype=np.float64).ravel()
        if len(X) != len(y):
            raise ClassifierError(f"X has {len(X)} rows but y has {len(y)}")
        if set(np.unique(y)) - {0.0, 1.0}:
            raise ClassifierError("labels must be 0 (insufficient) or 1 (sufficient)")
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

    def sufficiency(self, X, groups: Sequence[str | None] | None = None) -> np.ndarray:
        """s = C(f) in [0, 1] for each row of features (one classifier for every group)."""
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
        return write_folder(folder, self.kind, self.card, meta, lambda path: save_file(tensors, path))

    @classmethod
    def _from_folder(cls, folder: Path, meta: dict, card: ClassifierCard) -> SufficiencyClassifier:
        from safetensors.torch import load_file

        arch, hp = meta["architecture"], meta["hyperparameters"]
        sizes = arch["hidden_sizes"]
        if not isinstance(sizes, list) or not all(isinstance(h, int) and h >= 1 for h in sizes):
            raise ClassifierError(
                f"{folder}: hidden_sizes must be a list of positive integers, got {sizes!r}"
            )
        clf = cls(hidden_sizes=sizes, dropout=arch["dropout"], **hp)
        clf.card = card
        clf.num_features = card.spec.width
        clf.log_columns = card.spec.log_columns()
        clf.history_ = meta.get("history", [])
        weights_path = folder / WEIGHTS_FILE
        # the card's architecture against the file's header before any layer is built: the card alone
        # must not decide how much memory the loader takes (judgment/weights.py)
        check_shapes(weights_path, clf.tensor_shapes(), f"the card's architecture {list(clf.hidden_sizes)}")
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
