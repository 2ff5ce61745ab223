"""What the cascade returns: per stage (``StageRecord``), per explored stage (``StageOutcome``,
``Exploration``) and per request (``CascadeResult``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from tandem_lm_eval.backends.base import Generation
from tandem_lm_eval.cost.ledger import PhaseTimes, RequestCost


@dataclass
class StageRecord:
    stage: int
    mentor_tokens: int  # cumulative mentor tokens behind I_t
    insights: str  # I_t, cumulative
    score: float | None = None
    usable: bool = True  # False when Q ⊕ I_t does not fit in the intern's context
    features: np.ndarray | None = field(default=None, repr=False)  # f_t (Eq. 7) over the classifier's span
    # f_t over every span the backend located (features.FEATURE_SPANS), and the token spans themselves
    features_by_span: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    spans: dict[str, tuple[tuple[int, int], ...]] | None = None
    prompt_tokens: int = 0  # length of the rendered intern prompt
    # this stage's own time (its share of each batched call): the mentor writing ΔI_t, the intern
    # scoring x_t, features and classifier, and the intern's answer from x_t where it answered
    times: PhaseTimes = field(default_factory=PhaseTimes)
    # the intern's hidden vectors read in the scoring pass (common/hidden_keys.py names them)
    hidden: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # what the classifier read: ``features`` for tandem-v2, else the hidden vector (and features)
    judge_input: np.ndarray | None = field(default=None, repr=False)
    # the mentor call that wrote this stage (none at stage 0, or after the mentor finished): its
    # prefill, the part a prefix cache served, the tokens it generated again (a hosted chat API);
    # what a replay needs to count every pass and regenerated tokens as a live run does
    mentor_prompt_tokens: int = 0
    mentor_cached_tokens: int = 0
    mentor_regenerated_tokens: int = 0

    def to_json(self) -> dict:
        """A JSON-safe dict (features as lists of floats): one stage of a trace or collect record."""
        return {
            "stage": self.stage,
            "mentor_tokens": self.mentor_tokens,
            "insights": self.insights,
            "score": self.score,
            "usable": self.usable,
            "prompt_tokens": self.prompt_tokens,
            "spans": None if self.spans is None else {k: [list(r) for r in v] for k, v in self.spans.items()},
            "features": {k: [float(x) for x in v] for k, v in self.features_by_span.items()},
            "seconds": asdict(self.times),
            "hidden": {k: float32_list(v) for k, v in self.hidden.items()} or None,
            "mentor_prompt_tokens": self.mentor_prompt_tokens,
            "mentor_cached_tokens": self.mentor_cached_tokens,
            "mentor_regenerated_tokens": self.mentor_regenerated_tokens,
        }


def float32_list(vector: np.ndarray) -> list[float]:
    """A float32 vector as JSON numbers: each the shortest decimal that reads back as the same float32."""
    return [
        float(np.format_float_positional(x, unique=True, trim="-")) for x in np.asarray(vector, np.float32)
    ]


@dataclass
class StageOutcome:
    """One (question, stage) pair of ``Cascade.explore``: the classifier's training row."""

    record: StageRecord
    answer: str | None  # None when the stage's prompt did not fit the intern's context
    intern_tokens: int
    finish_reason: str | None = None

    @property
    def stage(self) -> int:
        return self.record.stage

    @property
    def mentor_tokens(self) -> int:
        return self.record.mentor_tokens

    @property
    def features(self) -> np.ndarray | None:
        return self.record.features


@dataclass
class Exploration:
    """Every stage of one question (``Cascade.explore``) and the mentor's whole output."""

    stages: list[StageOutcome]
    mentor: Generation | None


@dataclass
class CascadeResult:
    answer: str
    cost: RequestCost
    stages: list[StageRecord] = field(default_factory=list)
    answer_finish_reason: str = "stop"
    mentor: Generation | None = None


def stage_distribution(results: Sequence[CascadeResult], num_stages: int) -> np.ndarray:
    """Fraction of requests answered from each stage (paper Table 12)."""
    counts = np.zeros(num_stages)
    for r in results:
        counts[r.cost.stop_stage] += 1
    return counts / max(len(results), 1)
