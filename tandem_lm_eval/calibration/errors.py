"""The calibration room's error: records or recorded arrays that cannot make one table."""

from __future__ import annotations

from tandem_lm_eval.common.errors import TandemError


class TableError(TandemError, ValueError):
    """Records that cannot make one table (unlabelled, mixed setups, missing features, arrays of the
    wrong shape or with impossible values)."""
