"""The accuracy/cost trade-offs the threshold grid can reach (the Pareto front saved in a classifier)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tandem_lm_eval.calibration.threshold_grid import GridResult


@dataclass(frozen=True)
class FrontPoint:
    thresholds: tuple[float, ...]
    accuracy: float
    mean_tflops: float
    mean_mentor_tokens: float

    def to_dict(self) -> dict:
        return {
            "thresholds": list(self.thresholds),
            "accuracy": self.accuracy,
            "mean_tflops": self.mean_tflops,
            "mean_mentor_tokens": self.mean_mentor_tokens,
        }


def pareto_front(grid_result: GridResult) -> list[FrontPoint]:
    """The non-dominated points of the grid, cheapest first.

    A point is dominated when another is at least as accurate and at most as expensive, and better
    in one of the two. Points with the same (accuracy, TFLOPs) appear once, with the highest
    thresholds (lexicographically, stage 0 first), the same tie rule as :func:`choose_thresholds`.
    """
    acc = grid_result.accuracy.ravel()
    cost = grid_result.mean_tflops.ravel()
    index = np.arange(acc.size)
    # cheapest first; at equal cost the most accurate, then the highest thresholds
    order = np.lexsort((-index, -acc, cost))
    best_before = np.maximum.accumulate(np.concatenate(([-np.inf], acc[order][:-1])))
    keep = order[acc[order] > best_before]
    mentor = grid_result.mean_mentor_tokens.ravel()
    return [
        FrontPoint(grid_result.thresholds_at(i), float(acc[i]), float(cost[i]), float(mentor[i]))
        for i in keep
    ]
