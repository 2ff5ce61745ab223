"""Input conditioning shared by the classifiers: which feature columns go on a signed log scale, and
the width check of a feature matrix."""

from __future__ import annotations

import numpy as np

from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.features import (
    FEATURE_NAMES,
    FEATURE_SET,
    NUM_FEATURES,
)


def log_scaled_columns() -> np.ndarray:
    return np.array([name.startswith("ppl_") or name == "length" for name in FEATURE_NAMES])


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def check_width(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != NUM_FEATURES:
        raise ClassifierError(
            f"expected features of shape (n, {NUM_FEATURES}) ({FEATURE_SET}), got {tuple(X.shape)}"
        )
    return X
