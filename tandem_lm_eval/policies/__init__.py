"""Stop-policy registry: ``mode`` in model_args names one.

- ``tandem``: the classifier rule of the paper (needs a classifier and per-stage thresholds)
- ``intern_only``: the intern answers the question alone (stage 0)
- ``fixed:k``: the mentor writes k stages, the intern answers from them (fixed-budget baseline)
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import StopPolicy, select_stage
from .fixed import FixedStagePolicy, InternOnlyPolicy
from .tandem import TandemPolicy

MODES = ("tandem", "intern_only", "fixed:<k>")

__all__ = [
    "MODES",
    "FixedStagePolicy",
    "InternOnlyPolicy",
    "StopPolicy",
    "TandemPolicy",
    "check_mode",
    "make_policy",
    "select_stage",
]


def check_mode(mode: str) -> str:
    """``mode`` if it names a policy (checked when model_args are read, before any model loads)."""
    make_policy(mode, thresholds=(0.5,))  # the thresholds only satisfy the constructor here
    return mode.strip()


def make_policy(mode: str, thresholds: Sequence[float] | None = None) -> StopPolicy:
    mode = mode.strip()
    if mode == "tandem":
        if thresholds is None:
            raise ValueError("mode=tandem needs thresholds (from the classifier or model_args)")
        return TandemPolicy(thresholds)
    if mode == "intern_only":
        return InternOnlyPolicy()
    if mode.startswith("fixed:"):
        try:
            return FixedStagePolicy(int(mode.split(":", 1)[1]))
        except ValueError:
            raise ValueError(f"bad mode {mode!r}: use fixed:<stage number>, e.g. fixed:3") from None
    raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
