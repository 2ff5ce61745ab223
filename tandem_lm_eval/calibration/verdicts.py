"""Paired comparisons of two leaderboard rows and the verdict their intervals support.

A comparison of ``row`` against ``vs`` (a Tandem row, or fixed-high) on the same questions:

- Δaccuracy = accuracy(row) - accuracy(vs), in points (percentage points);
- ΔTFLOPs = (mean TFLOPs(row) - mean TFLOPs(vs)) / mean TFLOPs(vs), in %;

each with its paired bootstrap percentile interval (bootstrap.py: the same resampled questions for
both rows, the ratio recomputed in every resample). Each axis is read from its interval alone:

- accuracy: ``higher`` when the interval lies above 0, ``lower`` when below, ``equal`` when it
  contains 0 ("cannot be told apart", not a proof of equivalence);
- cost: ``cheaper`` when the ΔTFLOPs interval lies below 0, ``costlier`` when above, ``equal`` when
  it contains 0.

The verdict names the pair of readings (row relative to vs), nine words in all:

==========  =========================  ==============================  ============================
accuracy    cheaper                    equal cost                      costlier
==========  =========================  ==============================  ============================
higher      dominates                  more accurate at equal cost     more accurate, costlier
equal       cheaper at equal accuracy  cannot be told apart            costlier at equal accuracy
lower       cheaper, less accurate     less accurate at equal cost     dominated
==========  =========================  ==============================  ============================

Multiple comparisons: every interval is a per-comparison 95% interval and the verdict reads those;
the number of comparisons of each task is reported beside them, and a second verdict,
``verdict_bonferroni``, reads intervals at the Bonferroni level 1 - 0.05 / (2m) for the task's m
comparisons (two intervals each), so that a reader who wants the whole family at 95% has it.
Plain numpy, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tandem_lm_eval.calibration.bootstrap import LEVEL, PairedMeans, percentile_interval

VERDICTS = {
    ("higher", "cheaper"): "dominates",
    ("higher", "equal"): "more accurate at equal cost",
    ("higher", "costlier"): "more accurate, costlier",
    ("equal", "cheaper"): "cheaper at equal accuracy",
    ("equal", "equal"): "cannot be told apart",
    ("equal", "costlier"): "costlier at equal accuracy",
    ("lower", "cheaper"): "cheaper, less accurate",
    ("lower", "equal"): "less accurate at equal cost",
    ("lower", "costlier"): "dominated",
}


def side_of_zero(interval: tuple[float, float]) -> int:
    """+1 when the interval lies above 0, -1 when below, 0 when it contains 0."""
    low, high = interval
    if low > 0.0:
        return 1
    if high < 0.0:
        return -1
    return 0


def verdict(delta_accuracy_ci: tuple[float, float], delta_cost_ci: tuple[float, float]) -> str:
    """The verdict (module docstring) of Δaccuracy's and Δcost's intervals (row minus vs)."""
    accuracy = {1: "higher", 0: "equal", -1: "lower"}[side_of_zero(delta_accuracy_ci)]
    cost = {1: "costlier", 0: "equal", -1: "cheaper"}[side_of_zero(delta_cost_ci)]
    return VERDICTS[(accuracy, cost)]


@dataclass(frozen=True)
class Comparison:
    """``row`` against ``vs`` on one task (all numbers row minus vs)."""

    task: str
    row: str
    vs: str
    delta_accuracy: float  # points
    delta_accuracy_ci95: tuple[float, float]
    delta_tflops_pct: float | None  # None when vs costs nothing (no ratio)
    delta_tflops_pct_ci95: tuple[float, float] | None
    delta_tflops: float  # absolute, TFLOPs per question (decides the cost side when vs costs nothing)
    delta_tflops_ci95: tuple[float, float]
    verdict: str
    verdict_bonferroni: str
    comparisons_in_task: int
    bonferroni_level: float

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "row": self.row,
            "vs": self.vs,
            "delta_accuracy": self.delta_accuracy,
            "delta_accuracy_ci95": list(self.delta_accuracy_ci95),
            "delta_tflops_pct": self.delta_tflops_pct,
            "delta_tflops_pct_ci95": None
            if self.delta_tflops_pct_ci95 is None
            else list(self.delta_tflops_pct_ci95),
            "delta_tflops": self.delta_tflops,
            "delta_tflops_ci95": list(self.delta_tflops_ci95),
            "verdict": self.verdict,
            "verdict_bonferroni": self.verdict_bonferroni,
            "comparisons_in_task": self.comparisons_in_task,
            "bonferroni_level": self.bonferroni_level,
        }


def compare_rows(
    means: PairedMeans, task: str, pairs: list[tuple[str, str]], level: float = LEVEL
) -> list[Comparison]:
    """Every (row, vs) of ``pairs`` on ``means`` (series ``accuracy`` and ``tflops`` of each row),
    with per-comparison ``level`` intervals and the Bonferroni verdict for the ``len(pairs)``
    comparisons."""
    m = len(pairs)
    family = 1.0 - (1.0 - level) / (2 * max(m, 1))
    out = []
    for row, vs in pairs:
        acc_r, acc_r_s = means.column(row, "accuracy")
        acc_v, acc_v_s = means.column(vs, "accuracy")
        cost_r, cost_r_s = means.column(row, "tflops")
        cost_v, cost_v_s = means.column(vs, "tflops")
        d_acc = 100.0 * (acc_r_s - acc_v_s)
        d_cost = cost_r_s - cost_v_s
        pct = pct_ci = None
        if cost_v > 0 and np.all(cost_v_s > 0):
            d_pct = 100.0 * d_cost / cost_v_s
            pct, pct_ci = 100.0 * (cost_r - cost_v) / cost_v, percentile_interval(d_pct, level)
        # the cost side is read on the ratio where there is one; its sign is the absolute difference's
        cost_samples = d_cost if pct_ci is None else 100.0 * d_cost / cost_v_s
        out.append(
            Comparison(
                task=task,
                row=row,
                vs=vs,
                delta_accuracy=100.0 * (acc_r - acc_v),
                delta_accuracy_ci95=percentile_interval(d_acc, level),
                delta_tflops_pct=pct,
                delta_tflops_pct_ci95=pct_ci,
                delta_tflops=cost_r - cost_v,
                delta_tflops_ci95=percentile_interval(d_cost, level),
                verdict=verdict(percentile_interval(d_acc, level), percentile_interval(cost_samples, level)),
                verdict_bonferroni=verdict(
                    percentile_interval(d_acc, family), percentile_interval(cost_samples, family)
                ),
                comparisons_in_task=m,
                bonferroni_level=family,
            )
        )
    return out
