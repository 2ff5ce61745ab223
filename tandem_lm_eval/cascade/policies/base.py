"""What a stop policy decides, and the Tandem stop rule as a pure function.

The cascade asks a policy, after each stage t (t = 0: the question alone; t = k: after the k-th
mentor stage), whether the intern should answer now; when no stage passes, the policy names the
stage to answer from. Baselines are policies too, so they run through the same cascade and ledger.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from tandem_lm_eval.cascade.errors import CascadeError


def select_stage(scores: Sequence[float], thresholds: Sequence[float]) -> tuple[int, bool]:
    """Eq. 8-11: the first t with s_t > τ_t (True: stopped early), else argmax_t s_t (False).

    Ties in the argmax go to the earliest, cheapest stage.
    """
    if len(scores) == 0:
        raise CascadeError("no stage was scored")
    if len(scores) > len(thresholds):
        raise CascadeError(f"{len(scores)} scores but only {len(thresholds)} thresholds")
    for t, (s, tau) in enumerate(zip(scores, thresholds)):
        if s > tau:
            return t, True
    return int(np.argmax(np.asarray(scores, dtype=np.float64))), False


class StopPolicy(abc.ABC):
    """One policy per module under ``policies/``, registered by name in ``policies/__init__.py``."""

    name: str = ""
    #: whether the intern must score stages (the classifier is only consulted when True)
    needs_scores: bool = False
    #: who answers: "intern" (the cascade of stages) or "mentor" (the mentor answers the question
    #: itself, no stages and no intern: ``mentor_answers.py``)
    answerer: str = "intern"
    #: the intern answers at every stage it visits and the policy decides from the answers
    #: (``stop_on_answers``: ``agreement``); False: it answers once, from the chosen stage
    answers_each_stage: bool = False
    #: a question the policy does not give the intern is answered by the mentor alone (``router``)
    routes_to_mentor: bool = False

    def scores_stage(self, stage: int) -> bool:
        """Whether the intern scores stage ``stage`` (default: every stage when the policy needs scores)."""
        return self.needs_scores

    @abc.abstractmethod
    def last_stage(self, num_stages: int) -> int:
        """The highest stage whose insights this policy may use (0 = no mentor at all)."""

    @abc.abstractmethod
    def stop_after(self, stage: int, scores: Sequence[float]) -> bool:
        """After ``stage`` (``scores``: s_0..s_stage when scored), answer now?"""

    @abc.abstractmethod
    def final_stage(self, scores: Sequence[float], num_stages: int) -> int:
        """The stage to answer from when ``stop_after`` never said stop."""
