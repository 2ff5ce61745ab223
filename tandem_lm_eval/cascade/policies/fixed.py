"""Baselines without a classifier: ``intern_only`` (stage 0) and ``fixed:k`` (always stage k).

``fixed:k`` is the paper's fixed-budget collaboration (Table 1 "7B+32B (low/medium/high)"): the
mentor writes the first k stages and the intern answers from them, with no scoring. The paper's names
``fixed:low`` / ``fixed:medium`` / ``fixed:high`` are ``fixed:1`` / ``fixed:2`` / ``fixed:3``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tandem_lm_eval.cascade.errors import CascadeError
from tandem_lm_eval.cascade.policies.base import StopPolicy
from tandem_lm_eval.cascade.policies.spec import ModeSyntax, PolicySpec, spec_of

#: the paper's names of the fixed-budget levels (Table 1): the stage each one answers from
FIXED_LEVELS = {"low": 1, "medium": 2, "high": 3}


class FixedStagePolicy(StopPolicy):
    name = "fixed"
    needs_scores = False

    def __init__(self, stage: int, label: str | None = None) -> None:
        if stage < 0:
            raise CascadeError(f"fixed stage must be >= 0, got {stage}")
        self.stage = int(stage)
        self.label = label  # the level name it was given by (fixed:high), if any

    def last_stage(self, num_stages: int) -> int:
        if self.stage >= num_stages:
            named = f"fixed:{self.label} (= fixed:{self.stage})" if self.label else f"fixed:{self.stage}"
            raise CascadeError(f"{named} needs {self.stage} budgets, only {num_stages - 1} given")
        return self.stage

    def stop_after(self, stage: int, scores: Sequence[float]) -> bool:
        return stage >= self.stage

    def final_stage(self, scores: Sequence[float], num_stages: int) -> int:
        return self.stage


class InternOnlyPolicy(FixedStagePolicy):
    name = "intern_only"

    def __init__(self) -> None:
        super().__init__(0)


def _parse_fixed(mode: str, argument: str | None) -> PolicySpec:
    if argument.lower() in FIXED_LEVELS:
        return spec_of(FixedStagePolicy(FIXED_LEVELS[argument.lower()], label=argument.lower()), mode)
    try:
        return spec_of(FixedStagePolicy(int(argument)), mode)
    except ValueError:
        raise CascadeError(
            f"bad mode {mode!r}: use fixed:<stage number> or fixed:low|medium|high, e.g. fixed:3"
        ) from None


MODES = (
    ModeSyntax(
        "intern_only", ("intern_only",), lambda mode, argument: spec_of(InternOnlyPolicy(), mode), order=10
    ),
    ModeSyntax("fixed", ("fixed:<k>", "fixed:low|medium|high"), _parse_fixed, takes_argument=True, order=20),
)
