"""The cascade's error: a policy, budget, threshold or prompt it cannot run with."""

from __future__ import annotations

from tandem_lm_eval.common.errors import TandemError


class CascadeError(TandemError, ValueError):
    """A mode, budget, threshold or request the cascade cannot run with; the message names it."""
