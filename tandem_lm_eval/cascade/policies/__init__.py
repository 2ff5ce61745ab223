"""Stop-policy registry: ``mode`` in model_args names one.

- ``tandem``: the classifier rule of the paper (needs a classifier and per-stage thresholds)
- ``intern_only``: the intern answers the question alone (stage 0)
- ``fixed:k``: the mentor writes k stages, the intern answers from them (fixed-budget baseline);
  ``fixed:low`` / ``fixed:medium`` / ``fixed:high`` are the paper's names of k = 1 / 2 / 3
- ``route``: one decision from stage 0: the intern alone if s_0 > τ_0, else the last stage
  (FrugalGPT-style cascade, paper Table 6; needs a classifier)
- ``mentor_only``: the mentor answers the task's prompt itself (no intern)
- ``budget_forcing:B``: the mentor answers itself, its reasoning cut at B tokens (s1, paper Table 6)
- ``router``: one decision from the intern's reading of the question: the intern alone if s_0 > τ_0,
  else the mentor alone (needs a classifier from ``fit --policy router``)
- ``agreement``: no classifier: the intern answers at every stage; stop at the first t >= 1 whose answer
  (by the task's filters) equals stage t-1's, else the last stage
"""

from __future__ import annotations

from collections.abc import Sequence

from tandem_lm_eval.cascade.errors import CascadeError
from tandem_lm_eval.cascade.policies.agreement import AgreementPolicy
from tandem_lm_eval.cascade.policies.base import StopPolicy, select_stage
from tandem_lm_eval.cascade.policies.fixed import FIXED_LEVELS, FixedStagePolicy, InternOnlyPolicy
from tandem_lm_eval.cascade.policies.mentor import BudgetForcingPolicy, MentorOnlyPolicy
from tandem_lm_eval.cascade.policies.route import RoutePolicy
from tandem_lm_eval.cascade.policies.router import RouterPolicy
from tandem_lm_eval.cascade.policies.tandem import TandemPolicy

MODES = (
    "tandem",
    "intern_only",
    "fixed:<k>",
    "fixed:low|medium|high",
    "route",
    "mentor_only",
    "budget_forcing:<B>",
    "agreement",
    "router",
)

__all__ = [
    "MODES",
    "AgreementPolicy",
    "BudgetForcingPolicy",
    "FixedStagePolicy",
    "InternOnlyPolicy",
    "MentorOnlyPolicy",
    "RoutePolicy",
    "RouterPolicy",
    "StopPolicy",
    "TandemPolicy",
    "answerer_of",
    "check_mode",
    "make_policy",
    "select_stage",
]


def check_mode(mode: str) -> str:
    """``mode`` if it names a policy (checked when model_args are read, before any model loads)."""
    make_policy(mode, thresholds=(0.5,))  # the thresholds only satisfy the constructor here
    return mode.strip()


def answerer_of(mode: str) -> str:
    """Who answers in ``mode``: ``"intern"`` (the cascade) or ``"mentor"`` (no intern is needed)."""
    return make_policy(mode, thresholds=(0.5,)).answerer


def make_policy(
    mode: str, thresholds: Sequence[float] | None = None, *, budget_forcing_close: str = "auto"
) -> StopPolicy:
    """The policy ``mode`` names. ``thresholds``: per-stage τ_t (``tandem``; ``route``, ``router`` read τ_0);
    ``budget_forcing_close``: the text forced after a cut reasoning (``budget_forcing:B``)."""
    mode = mode.strip()
    if mode in ("tandem", "route", "router"):
        if thresholds is None:
            raise CascadeError(f"mode={mode} needs thresholds (from the classifier or model_args)")
        return {"tandem": TandemPolicy, "route": RoutePolicy, "router": RouterPolicy}[mode](thresholds)
    if mode == "intern_only":
        return InternOnlyPolicy()
    if mode == "mentor_only":
        return MentorOnlyPolicy()
    if mode == "agreement":
        return AgreementPolicy()
    if mode.startswith("fixed:"):
        value = mode.split(":", 1)[1].strip()
        if value.lower() in FIXED_LEVELS:
            return FixedStagePolicy(FIXED_LEVELS[value.lower()], label=value.lower())
        try:
            return FixedStagePolicy(int(value))
        except ValueError:
            raise CascadeError(
                f"bad mode {mode!r}: use fixed:<stage number> or fixed:low|medium|high, e.g. fixed:3"
            ) from None
    if mode.startswith("budget_forcing:"):
        try:
            budget = int(mode.split(":", 1)[1])
        except ValueError:
            raise CascadeError(
                f"bad mode {mode!r}: use budget_forcing:<reasoning tokens>, e.g. budget_forcing:2000"
            ) from None
        return BudgetForcingPolicy(budget, budget_forcing_close)
    raise CascadeError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
