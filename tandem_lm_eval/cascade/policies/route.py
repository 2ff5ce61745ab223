"""``route``: a FrugalGPT-style LLM cascade (Chen et al., 2024; paper Table 6).

One binary decision from stage 0: if s_0 > τ_0 the intern answers alone; otherwise the mentor writes
straight through to the last budget and the intern answers from the last stage. No stage after 0 is
scored and there is no argmax (``replay.route`` is the same rule offline; ``fit --policy route``
chooses τ_0). τ_0 is the first of the thresholds (the classifier card's, or model_args').
"""

from __future__ import annotations

from collections.abc import Sequence

from tandem_lm_eval.cascade.errors import CascadeError
from tandem_lm_eval.cascade.policies.base import StopPolicy
from tandem_lm_eval.cascade.policies.spec import FIRST_ONLY, ModeSyntax, PolicySpec


class RoutePolicy(StopPolicy):
    name = "route"
    needs_scores = True

    def __init__(self, thresholds: Sequence[float]) -> None:
        if not thresholds:
            raise CascadeError(
                f"the {self.name} policy needs τ_0 (thresholds[0], from the classifier or model_args)"
            )
        tau0 = float(thresholds[0])
        if not 0.0 <= tau0 <= 1.0:
            raise CascadeError(f"thresholds must lie in [0, 1], got {tau0}")
        self.threshold = tau0

    def scores_stage(self, stage: int) -> bool:
        return stage == 0

    def last_stage(self, num_stages: int) -> int:
        if num_stages < 2:
            raise CascadeError("the route policy needs at least one mentor budget")
        return num_stages - 1

    def stop_after(self, stage: int, scores: Sequence[float]) -> bool:
        # only stage 0 is a decision; the last stage is the route's other branch (final_stage)
        return stage == 0 and scores[0] > self.threshold

    def final_stage(self, scores: Sequence[float], num_stages: int) -> int:
        return num_stages - 1


def _last_stage(num_stages: int) -> int:
    if num_stages < 2:
        raise CascadeError("the route policy needs at least one mentor budget")
    return num_stages - 1


def _parse(mode: str, argument: str | None) -> PolicySpec:
    return PolicySpec(
        mode=mode,
        name="route",
        answerer="intern",
        needs_classifier=True,
        thresholds=FIRST_ONLY,
        factory=lambda thresholds, options: RoutePolicy(thresholds),
        stage_rule=_last_stage,
    )


MODES = (ModeSyntax("route", ("route",), _parse, order=30),)
