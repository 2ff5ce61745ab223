"""``router``: one decision before any generation, the intern alone or the mentor alone (the router
baseline of "Is Escalation Worth It?", arXiv 2605.06350; probe routers on the question's reading).

The intern reads the question once (its scoring pass over x_0 = Q: the stage-0 statistics or hidden
state a judge reads) and a classifier trained by ``fit --policy router`` gives s_0: if s_0 > τ_0 the
intern answers alone from stage 0; otherwise the mentor answers the question itself, as
``mode=mentor_only`` does, with no stages and no intern answer. Unlike ``route`` (the intern alone or
the intern after every mentor stage) nothing is paid for a cascade: the routed question costs the
mentor's own answer and the intern's one reading.

``Cascade.run`` runs it (``routes_to_mentor``); ``calibration/replay.py: router`` replays it from
collect records that hold the mentor's own answers (``collect --mentor-answers``).
"""

from __future__ import annotations

from collections.abc import Sequence

from tandem_lm_eval.cascade.policies.route import RoutePolicy
from tandem_lm_eval.cascade.policies.spec import FIRST_ONLY, ModeSyntax, PolicySpec


class RouterPolicy(RoutePolicy):
    """τ_0 and the one scored stage as ``route``; the other branch is the mentor alone."""

    name = "router"
    #: questions it does not give the intern go to the mentor alone (cascade/mentor_answers.py)
    routes_to_mentor = True

    def last_stage(self, num_stages: int) -> int:
        return 0  # no mentor stage: the mentor answers itself or not at all

    def intern_answers(self, scores: Sequence[float]) -> bool:
        """s_0 > τ_0: the intern answers alone (else the mentor does)."""
        return scores[0] > self.threshold

    def stop_after(self, stage: int, scores: Sequence[float]) -> bool:
        return True

    def final_stage(self, scores: Sequence[float], num_stages: int) -> int:
        return 0


def _parse(mode: str, argument: str | None) -> PolicySpec:
    return PolicySpec(
        mode=mode,
        name="router",
        answerer="intern",
        needs_classifier=True,
        thresholds=FIRST_ONLY,
        factory=lambda thresholds, options: RouterPolicy(thresholds),
        stage_rule=lambda num_stages: 0,  # no mentor stage: the mentor answers itself or not at all
        routes_to_mentor=True,
    )


MODES = (ModeSyntax("router", ("router",), _parse, order=55),)
