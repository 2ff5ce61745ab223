"""Input conditioning shared by the classifiers: which feature columns go on a signed log scale, and
the width check of a feature matrix (the width comes from the classifier's card: 17 for ``tandem-v2``,
the intern's hidden size for a hidden-state judge)."""

from __future__ import annotations

import numpy as np

from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.features import (
    FEATURE_NAMES,
    FEATURE_SET,
    NUM_FEATURES,
)


def log_scaled_columns() -> np.ndarray:
    """The ``tandem-v2`` mask (perplexity statistics and the length); ``JudgeSpec.log_columns`` gives
    any feature set's."""
    return np.array([name.startswith("ppl_") or name == "length" for name in FEATURE_NAMES])


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def check_width(X, width: int = NUM_FEATURES, feature_set: str = FEATURE_SET) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != width:
        raise ClassifierError(
            f"expected features of shape (n, {width}) ({feature_set}), got {tuple(X.shape)}"
        )
    return X
