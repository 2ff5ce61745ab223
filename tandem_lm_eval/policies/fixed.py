"""Baselines without a classifier: ``intern_only`` (stage 0) and ``fixed:k`` (always stage k).

``fixed:k`` is the paper's fixed-budget collaboration (Table 1 "7B+32B (low/medium/high)"): the
mentor writes the first k stages and the intern answers from them, with no scoring.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import StopPolicy


class FixedStagePolicy(StopPolicy):
    name = "fixed"
    needs_scores = False

    def __init__(self, stage: int) -> None:
        if stage < 0:
            raise ValueError(f"fixed stage must be >= 0, got {stage}")
        self.stage = int(stage)

    def last_stage(self, num_stages: int) -> int:
        if self.stage >= num_stages:
            raise ValueError(f"fixed:{self.stage} needs {self.stage} budgets, only {num_stages - 1} given")
        return self.stage

    def stop_after(self, stage: int, scores: Sequence[float]) -> bool:
        return stage >= self.stage

    def final_stage(self, scores: Sequence[float], num_stages: int) -> int:
        return self.stage


class InternOnlyPolicy(FixedStagePolicy):
    name = "intern_only"

    def __init__(self) -> None:
        super().__init__(0)
