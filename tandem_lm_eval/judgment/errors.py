"""The error of every classifier file that is missing, malformed, or made for another setup."""

from __future__ import annotations

from tandem_lm_eval.common.errors import TandemError


class ClassifierError(TandemError, ValueError):
    """A classifier file that is missing, malformed, or made for another setup."""
