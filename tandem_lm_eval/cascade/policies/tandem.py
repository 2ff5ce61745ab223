"""``tandem``: the paper's rule. Stop at the first s_t > τ_t; if none passes, use argmax_t s_t."""

from __future__ import annotations

from collections.abc import Sequence

from tandem_lm_eval.cascade.errors import CascadeError
from tandem_lm_eval.cascade.policies.base import StopPolicy, select_stage
from tandem_lm_eval.cascade.policies.spec import PER_STAGE, ModeSyntax, PolicySpec


class TandemPolicy(StopPolicy):
    name = "tandem"
    needs_scores = True

    def __init__(self, thresholds: Sequence[float]) -> None:
        if not thresholds:
            raise CascadeError("the tandem policy needs one threshold per stage")
        for tau in thresholds:
            if not 0.0 <= tau <= 1.0:
                raise CascadeError(f"thresholds must lie in [0, 1], got {tau}")
        self.thresholds = tuple(float(t) for t in thresholds)

    def last_stage(self, num_stages: int) -> int:
        if len(self.thresholds) != num_stages:
            raise CascadeError(
                f"{len(self.thresholds)} thresholds for {num_stages} stages (stage 0 + one per budget)"
            )
        return num_stages - 1

    def stop_after(self, stage: int, scores: Sequence[float]) -> bool:
        return scores[stage] > self.thresholds[stage]

    def final_stage(self, scores: Sequence[float], num_stages: int) -> int:
        return select_stage(scores, self.thresholds)[0]


def _parse(mode: str, argument: str | None) -> PolicySpec:
    return PolicySpec(
        mode=mode,
        name="tandem",
        answerer="intern",
        needs_classifier=True,
        thresholds=PER_STAGE,
        factory=lambda thresholds, options: TandemPolicy(thresholds),
        stage_rule=lambda num_stages: num_stages - 1,
    )


MODES = (ModeSyntax("tandem", ("tandem",), _parse, order=0),)
