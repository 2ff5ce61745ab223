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

import importlib
import pkgutil
from collections.abc import Sequence

from tandem_lm_eval.cascade.policies.agreement import AgreementPolicy
from tandem_lm_eval.cascade.policies.base import StopPolicy, select_stage
from tandem_lm_eval.cascade.policies.fixed import FIXED_LEVELS, FixedStagePolicy, InternOnlyPolicy
from tandem_lm_eval.cascade.policies.mentor import BudgetForcingPolicy, MentorOnlyPolicy
from tandem_lm_eval.cascade.policies.route import RoutePolicy
from tandem_lm_eval.cascade.policies.router import RouterPolicy
from tandem_lm_eval.cascade.policies.spec import REGISTRY, ModeSyntax, PolicySpec, parse_with, valid_modes
from tandem_lm_eval.cascade.policies.tandem import TandemPolicy


def _register_modes(registry: dict[str, ModeSyntax]) -> None:
    """Every policy file's ``MODES``: a file in this folder that declares modes registers them."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for syntax in getattr(module, "MODES", ()):
            known = registry.get(syntax.name)
            if known is not None and known.parse.__module__ != module.__name__:
                raise RuntimeError(f"mode {syntax.name!r} is declared twice (policies/{info.name}.py)")
            registry[syntax.name] = syntax


_register_modes(REGISTRY)
MODES = tuple(valid_modes(REGISTRY))

__all__ = [
    "FIXED_LEVELS",
    "MODES",
    "AgreementPolicy",
    "REGISTRY",
    "BudgetForcingPolicy",
    "FixedStagePolicy",
    "InternOnlyPolicy",
    "MentorOnlyPolicy",
    "ModeSyntax",
    "PolicySpec",
    "RoutePolicy",
    "RouterPolicy",
    "StopPolicy",
    "TandemPolicy",
    "answerer_of",
    "check_mode",
    "make_policy",
    "parse_mode",
    "select_stage",
]


def parse_mode(mode: str) -> PolicySpec:
    """``mode=`` text as a typed spec (parsed once, when the run plan is made; CascadeError names the mode)."""
    return parse_with(REGISTRY, mode)


def check_mode(mode: str) -> str:
    """``mode`` if it names a policy (its canonical text)."""
    return parse_mode(mode).mode


def answerer_of(mode: str) -> str:
    """Who answers in ``mode``: ``"intern"`` (the cascade) or ``"mentor"`` (no intern is needed)."""
    return parse_mode(mode).answerer


def make_policy(
    mode: str | PolicySpec, thresholds: Sequence[float] | None = None, *, budget_forcing_close: str = "auto"
) -> StopPolicy:
    """The policy ``mode`` names. ``thresholds``: per-stage τ_t (``tandem``; ``route``, ``router`` read τ_0);
    ``budget_forcing_close``: the text forced after a cut reasoning (``budget_forcing:B``)."""
    spec = mode if isinstance(mode, PolicySpec) else parse_mode(mode)
    return spec.make(thresholds, budget_forcing_close=budget_forcing_close)
