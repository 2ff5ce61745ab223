"""``agreement``: a stop rule without a classifier and without training (arXiv 2605.28913's answer
agreement as a gold-free stop signal).

The intern answers at every stage it visits; the cascade stops at the first stage t >= 1 whose
answer, keyed by the task's own filters (harness/answer_keys.py), equals the answer at stage t-1,
and otherwise answers from the last stage. Every visited stage's answer is generated, so every one
is in its cost (L_S of Eq. 12 and the all-passes count); a stage that adds no insight (the mentor had
finished) has the previous stage's prompt, so its answer is that one, not generated again, and agrees.

``Cascade.run`` runs it (``answers_each_stage``); ``calibration/replay.py: agreement`` is the same rule
on collect records.
"""

from __future__ import annotations

from collections.abc import Sequence

from tandem_lm_eval.cascade.errors import CascadeError
from tandem_lm_eval.cascade.policies.base import StopPolicy
from tandem_lm_eval.cascade.policies.spec import NO_THRESHOLDS, ModeSyntax, PolicySpec


def agreed_at(keys: Sequence[str | None], stage: int) -> bool:
    """Whether stage ``stage``'s answer key equals stage ``stage - 1``'s (None: no answer there)."""
    return (
        stage >= 1
        and keys[stage] is not None
        and keys[stage - 1] is not None
        and keys[stage] == keys[stage - 1]
    )


class AgreementPolicy(StopPolicy):
    name = "agreement"
    needs_scores = False
    #: the intern answers at every stage it visits (Cascade.run's answering loop)
    answers_each_stage = True

    def last_stage(self, num_stages: int) -> int:
        if num_stages < 2:
            raise CascadeError("the agreement policy needs at least one mentor budget")
        return num_stages - 1

    def stop_after(self, stage: int, scores: Sequence[float]) -> bool:
        return False  # the decision reads answers, not scores: stop_on_answers

    def stop_on_answers(self, stage: int, keys: Sequence[str | None]) -> bool:
        """After ``stage`` (``keys``: the answer keys of stages 0..stage), answer now?"""
        return agreed_at(keys, stage)

    def final_stage(self, scores: Sequence[float], num_stages: int) -> int:
        return num_stages - 1


def _parse(mode: str, argument: str | None) -> PolicySpec:
    policy = AgreementPolicy()
    return PolicySpec(
        mode=mode,
        name="agreement",
        answerer="intern",
        needs_classifier=False,
        thresholds=NO_THRESHOLDS,
        factory=lambda thresholds, options: AgreementPolicy(),
        stage_rule=policy.last_stage,
    )


MODES = (ModeSyntax("agreement", ("agreement",), _parse, order=50),)
