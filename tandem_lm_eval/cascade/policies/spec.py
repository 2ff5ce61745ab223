"""``mode`` parsed once: the typed ``PolicySpec`` a run plan holds, and the registry of mode syntaxes.

A policy file declares the modes it answers to (``MODES``: one ``ModeSyntax`` each, like RouteLLM's
``routers/``: the file is the registration) and ``policies/__init__.py`` collects every file's
``MODES``, so adding a mode is adding a file. ``parse_mode`` turns ``mode=`` text into a ``PolicySpec``
that says, before any model loads, everything the rest of a run asks of a mode: which roles it loads,
who answers, whether it needs a classifier, which thresholds it reads, which mode-only options it
reads, the last stage it may use, and how to make its ``StopPolicy``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tandem_lm_eval.cascade.errors import CascadeError
from tandem_lm_eval.cascade.policies.base import StopPolicy

#: what a mode reads of the thresholds: none, one per stage, or τ_0 alone
NO_THRESHOLDS, PER_STAGE, FIRST_ONLY = "none", "per_stage", "first"


@dataclass(frozen=True)
class PolicySpec:
    """A parsed mode. ``make`` builds its ``StopPolicy`` from the run's resolved thresholds and options."""

    mode: str  # the canonical text (what results and traces record)
    name: str  # the mode's family: tandem, route, fixed, intern_only, mentor_only, budget_forcing, ...
    answerer: str  # "intern" (the cascade of stages) or "mentor" (the mentor answers the question itself)
    needs_classifier: bool
    thresholds: str  # NO_THRESHOLDS, PER_STAGE or FIRST_ONLY
    # the model_args only this mode reads (budget_forcing_close): given to another mode they are refused
    options: frozenset[str] = frozenset()
    # (thresholds, {option: value}) -> the StopPolicy; thresholds are None for a mode that reads none
    factory: Callable[[tuple[float, ...] | None, dict], StopPolicy] = field(
        repr=False, compare=False, default=None
    )
    # num_stages -> the highest stage the mode may use (CascadeError when the budgets do not allow it)
    stage_rule: Callable[[int], int] = field(repr=False, compare=False, default=None)
    # questions the mode does not give the intern go to the mentor alone (``router``): it loads the
    # mentor though it reads no mentor stage
    routes_to_mentor: bool = False

    @property
    def loads_intern(self) -> bool:
        return self.answerer == "intern"

    def loads_mentor(self, num_stages: int) -> bool:
        """The mentor is loaded when it answers, or when the mode may read one of its stages."""
        return self.answerer == "mentor" or self.routes_to_mentor or self.last_stage(num_stages) > 0

    def last_stage(self, num_stages: int) -> int:
        return self.stage_rule(num_stages)

    def __reduce__(self):
        # to another process (a replica worker) as its text: parsed there by the same registry
        return (_reparse, (self.mode,))

    def make(self, thresholds: Sequence[float] | None = None, **options) -> StopPolicy:
        if self.thresholds != NO_THRESHOLDS and thresholds is None:
            raise CascadeError(f"mode={self.mode} needs thresholds (from the classifier or model_args)")
        known = {k: v for k, v in options.items() if k in self.options}
        return self.factory(tuple(thresholds) if thresholds is not None else None, known)


@dataclass(frozen=True)
class ModeSyntax:
    """How one family of modes is written: ``name`` alone, or ``name:<argument>`` when ``takes_argument``."""

    name: str
    usage: tuple[str, ...]  # how the help and the "valid modes" line show it
    parse: Callable[[str, str | None], PolicySpec]  # (canonical mode text, the argument or None)
    takes_argument: bool = False
    order: int = 50
    # model_args only these modes read (``budget_forcing_close``): given to another mode they are refused
    options: tuple[str, ...] = ()  # where the "valid modes" line lists it (lower first)


#: every mode syntax, by name: filled by policies/__init__.py from each policy file's ``MODES``
REGISTRY: dict[str, ModeSyntax] = {}


def _reparse(mode: str) -> PolicySpec:
    return parse_with(REGISTRY, mode)


def spec_of(policy: StopPolicy, mode: str, **fields) -> PolicySpec:
    """A ``PolicySpec`` whose stage rule is ``policy``'s own (a mode without thresholds)."""
    return PolicySpec(
        mode=mode,
        name=policy.name,
        answerer=policy.answerer,
        needs_classifier=policy.needs_scores,
        thresholds=NO_THRESHOLDS,
        factory=lambda thresholds, options: policy,
        stage_rule=policy.last_stage,
        **fields,
    )


def parse_with(registry: dict[str, ModeSyntax], mode: str) -> PolicySpec:
    """``mode`` as the registry's syntaxes read it (CascadeError naming the mode otherwise)."""
    if not isinstance(mode, str):
        raise CascadeError(f"mode must be a text, got {mode!r}")
    text = mode.strip()
    name, sep, argument = text.partition(":")
    syntax = registry.get(name.strip())
    if syntax is None or sep and not syntax.takes_argument:
        raise CascadeError(f"unknown mode {text!r}; valid modes: {', '.join(valid_modes(registry))}")
    if syntax.takes_argument and not sep:
        raise CascadeError(f"mode {text!r} needs an argument: {' or '.join(syntax.usage)}")
    return syntax.parse(text, argument.strip() if sep else None)


def valid_modes(registry: dict[str, ModeSyntax]) -> list[str]:
    ordered = sorted(registry.values(), key=lambda s: (s.order, s.name))
    return [u for s in ordered for u in s.usage]
