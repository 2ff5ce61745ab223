"""Which threshold vector to use: an explicit, recorded objective over the replayed grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import numpy as np

from tandem_lm_eval.calibration.replay import (
    NEVER,
    ReplayResult,
    Stage0,
    StageTable,
    check_stage0,
    fixed_stage,
    replay,
    route,
)
from tandem_lm_eval.calibration.threshold_grid import (
    THRESHOLD_GRID,
    GridResult,
    grid_axes,
    grid_search_threshold,
    threshold_grid,
)
from tandem_lm_eval.common.options import OptionError

# --- objectives -------------------------------------------------------------------------------------
ObjectiveKind = Literal["max_accuracy", "one_se", "min_cost", "per_stage"]


OBJECTIVE_KINDS = ("max_accuracy", "one_se", "min_cost", "per_stage")


@dataclass(frozen=True)
class Objective:
    """How thresholds are chosen; saved with them (``to_dict``) so a card says what was optimised.

    - ``max_accuracy``: highest replayed accuracy, optionally under a cap on mean TFLOPs per question
      (``max_tflops``, or ``max_cost_fraction`` of what ``fixed_stage(last stage)`` costs: the
      mentor's whole budget); ties -> lower mean TFLOPs, then higher thresholds.
    - ``one_se``: the one-standard-error rule (Breiman et al., CART): the cheapest vector whose
      accuracy is within ``se_multiplier`` standard errors of the most accurate one's, the standard
      error being that of a proportion over the tuning questions, sqrt(a(1-a)/Q). Among 130,321
      vectors the most accurate on a few hundred questions is partly luck; every vector within that
      noise is as good a guess, and the cheapest of them spends the least on the luck. Ties -> higher
      accuracy, then higher thresholds. Takes the same optional cost cap as ``max_accuracy``.
    - ``min_cost``: lowest mean TFLOPs with accuracy >= a floor (``min_accuracy``, or
      ``min_accuracy_fraction`` of ``fixed_stage(last stage)``'s accuracy); ties -> higher accuracy,
      then higher thresholds.
    - ``per_stage``: today's rule, for comparison: each τ_t on its own maximises the accuracy of
      ``s_t > τ_t`` as a predictor of the stage-t label (``classifier.grid_search_threshold``).
    """

    kind: ObjectiveKind
    max_tflops: float | None = None  # cap on mean TFLOPs per question (max_accuracy)
    max_cost_fraction: float | None = None  # cap as a fraction of fixed_stage(last stage)'s mean TFLOPs
    min_accuracy: float | None = None  # floor (min_cost)
    min_accuracy_fraction: float | None = None  # floor as a fraction of fixed_stage(last)'s accuracy
    stage0: Stage0 = "stop"
    se_multiplier: float = 1.0  # one_se: how many standard errors below the best accuracy is "as good"

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVE_KINDS:
            raise OptionError(f"objective kind must be one of {OBJECTIVE_KINDS}, got {self.kind!r}")
        check_stage0(self.stage0)
        caps = {"max_tflops": self.max_tflops, "max_cost_fraction": self.max_cost_fraction}
        floors = {"min_accuracy": self.min_accuracy, "min_accuracy_fraction": self.min_accuracy_fraction}
        for name, value in {**caps, **floors}.items():
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise OptionError(f"{name} must be a finite number, got {value!r}")
                object.__setattr__(self, name, float(value))
        given_caps = [n for n, v in caps.items() if v is not None]
        given_floors = [n for n, v in floors.items() if v is not None]
        se = self.se_multiplier
        if isinstance(se, bool) or not isinstance(se, (int, float)) or not math.isfinite(se) or se < 0:
            raise OptionError(f"se_multiplier must be a finite number >= 0, got {se!r}")
        object.__setattr__(self, "se_multiplier", float(se))
        if self.kind != "one_se" and self.se_multiplier != 1.0:
            raise OptionError(f"se_multiplier is for the one_se objective, not {self.kind}")
        if self.kind in ("max_accuracy", "one_se"):
            if given_floors:
                raise OptionError(f"{self.kind} takes a cost cap, not an accuracy floor ({given_floors})")
            if len(given_caps) > 1:
                raise OptionError("give max_tflops or max_cost_fraction, not both")
        elif self.kind == "min_cost":
            if given_caps:
                raise OptionError(f"min_cost takes an accuracy floor, not a cost cap ({given_caps})")
            if len(given_floors) != 1:
                raise OptionError("min_cost needs exactly one of min_accuracy, min_accuracy_fraction")
        elif given_caps or given_floors:
            raise OptionError(f"per_stage takes no cap or floor ({given_caps + given_floors})")
        if self.max_tflops is not None and self.max_tflops < 0:
            raise OptionError(f"max_tflops must be >= 0, got {self.max_tflops}")
        if self.max_cost_fraction is not None and self.max_cost_fraction <= 0:
            raise OptionError(f"max_cost_fraction must be > 0, got {self.max_cost_fraction}")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise OptionError(f"min_accuracy must lie in [0, 1], got {self.min_accuracy}")
        if self.min_accuracy_fraction is not None and self.min_accuracy_fraction < 0:
            raise OptionError(f"min_accuracy_fraction must be >= 0, got {self.min_accuracy_fraction}")

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.kind != "one_se":  # only one_se reads it: the other objectives' cards stay as they were
            del out["se_multiplier"]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Objective:
        """An objective saved by ``to_dict`` (cards written before ``se_multiplier`` existed load too)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise OptionError(f"unknown objective fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class ThresholdChoice:
    """The thresholds an :class:`Objective` picked, and what they do on the table (via ``replay``)."""

    thresholds: tuple[float, ...]  # one per stage; stage 0 is 1.0 (never stops) when stage0="fallback"
    objective: Objective
    result: ReplayResult = field(repr=False)
    feasible: bool = True  # False: no grid point met the cap/floor; ``note`` says what was taken
    note: str = ""
    bound: float | None = None  # the cap (mean TFLOPs) or floor (accuracy) in absolute terms
    reference: dict = field(default_factory=dict)  # fixed_stage(last stage): accuracy, mean_tflops
    grid: tuple[float, ...] = THRESHOLD_GRID

    @property
    def accuracy(self) -> float:
        return self.result.accuracy

    @property
    def mean_tflops(self) -> float:
        return self.result.mean_tflops

    @property
    def mean_mentor_tokens(self) -> float:
        return self.result.mean_mentor_tokens

    @property
    def stage_distribution(self) -> tuple[float, ...]:
        return self.result.stage_distribution

    @property
    def early_rate(self) -> float:
        return self.result.early_rate

    def to_dict(self) -> dict:
        return {
            "thresholds": list(self.thresholds),
            "objective": self.objective.to_dict(),
            "feasible": self.feasible,
            "note": self.note,
            "bound": self.bound,
            "reference": dict(self.reference),
            "grid": list(self.grid),
            "summary": self.result.summary(),
        }


def _pick(candidates: np.ndarray, first: np.ndarray, second: np.ndarray) -> int:
    """Flat index: among ``candidates``, the highest ``first``, then the highest ``second``, then the
    highest flat index (C order: the lexicographically highest thresholds, stage 0 first)."""
    cand = candidates.copy()
    cand &= first == first[cand].max()
    cand &= second == second[cand].max()
    return int(np.flatnonzero(cand)[-1])


def choose_thresholds(
    table: StageTable,
    objective: Objective,
    grid: Sequence[float] = THRESHOLD_GRID,
    grid_result: GridResult | None = None,
) -> ThresholdChoice:
    """Thresholds for ``objective`` on ``table``, searched over ``grid`` at every stage.

    When no grid point meets the constraint, ``feasible`` is False and the closest point is taken:
    for an unreachable accuracy floor, the most accurate point (ties: cheapest, then highest
    thresholds); for an unreachable cost cap, the cheapest point (ties: most accurate, then highest
    thresholds). A floor is met within 1e-12 and a cap within a relative 1e-12, so that a bound
    computed as a fraction of the reference is not missed by float rounding.

    ``grid_result``: a :func:`threshold_grid` of this table, grid and ``objective.stage0`` to reuse.
    """
    grid = tuple(float(g) for g in grid)
    ref = fixed_stage(table, table.num_stages - 1)
    reference = {
        "policy": f"fixed:{table.num_stages - 1}",
        "accuracy": ref.accuracy,
        "mean_tflops": ref.mean_tflops,
    }
    common = {"objective": objective, "reference": reference, "grid": grid}

    if objective.kind == "per_stage":
        usable = table.usable
        taus = []
        for t in range(table.num_stages):
            if t == 0 and objective.stage0 == "fallback":
                taus.append(NEVER)
                continue
            m = usable[:, t]
            taus.append(grid_search_threshold(table.scores[m, t], table.correct[m, t], grid))
        thresholds = tuple(taus)
        return ThresholdChoice(thresholds, result=replay(table, thresholds, objective.stage0), **common)

    if grid_result is None:
        grid_result = threshold_grid(table, grid, objective.stage0)
    elif (
        grid_result.stage0 != objective.stage0
        or grid_result.num_questions != table.num_questions
        or grid_result.axes != grid_axes(grid, table.num_stages, objective.stage0)
    ):
        raise ValueError("grid_result was computed for another table, grid or stage0")
    acc = grid_result.accuracy.ravel()
    cost = grid_result.mean_tflops.ravel()
    index, feasible, note, bound = _choose_index(acc, cost, objective, ref, table.num_questions)
    thresholds = grid_result.thresholds_at(index)
    return ThresholdChoice(
        thresholds,
        result=replay(table, thresholds, objective.stage0),
        feasible=feasible,
        note=note,
        bound=bound,
        **common,
    )


def one_se_floor(best_accuracy: float, num_questions: int, multiplier: float = 1.0) -> float:
    """The one-standard-error rule's floor: ``best - multiplier * sqrt(best (1 - best) / Q)``."""
    se = math.sqrt(max(best_accuracy * (1.0 - best_accuracy), 0.0) / max(num_questions, 1))
    return best_accuracy - multiplier * se


def _choose_index(
    acc: np.ndarray, cost: np.ndarray, objective: Objective, ref: ReplayResult, num_questions: int
) -> tuple[int, bool, str, float | None]:
    """(flat index, feasible, note, bound) of the candidate ``objective`` picks among points with
    accuracies ``acc`` and mean TFLOPs ``cost`` over ``num_questions`` questions; ``ref`` is the last
    fixed stage (for fractions)."""
    everything = np.ones(acc.shape, dtype=bool)

    def most_accurate(cand):  # ties: cheaper, then higher thresholds
        return _pick(cand, acc, -cost)

    def cheapest(cand):  # ties: more accurate, then higher thresholds
        return _pick(cand, -cost, acc)

    feasible, note, bound = True, "", None
    if objective.kind in ("max_accuracy", "one_se"):
        if objective.max_tflops is not None:
            bound = objective.max_tflops
        elif objective.max_cost_fraction is not None:
            bound = objective.max_cost_fraction * ref.mean_tflops
        ok = everything if bound is None else cost <= bound * (1 + 1e-12)
        feasible = bool(ok.any())
        if feasible:
            index = most_accurate(ok)
            if objective.kind == "one_se":
                # the cheapest point as good as the best within the noise of Q questions; the bound
                # reported is then this accuracy floor (the cap, if any, is in the objective)
                bound = one_se_floor(float(acc[index]), num_questions, objective.se_multiplier)
                index = cheapest(ok & (acc >= bound - 1e-12))
        else:
            index = cheapest(everything)
            note = (
                f"no thresholds cost <= {bound:.6g} TFLOPs per question (cheapest: "
                f"{cost.min():.6g}); took the cheapest point"
            )
    else:  # min_cost
        if objective.min_accuracy is not None:
            bound = objective.min_accuracy
        else:
            bound = objective.min_accuracy_fraction * ref.accuracy
        ok = acc >= bound - 1e-12
        feasible = bool(ok.any())
        if feasible:
            index = cheapest(ok)
        else:
            index = most_accurate(everything)
            note = (
                f"no thresholds reach accuracy >= {bound:.6g} (best: {acc.max():.6g}); took the most "
                "accurate point"
            )
    return index, feasible, note, bound


def choose_route_threshold(
    table: StageTable, objective: Objective, grid: Sequence[float] = THRESHOLD_GRID, rule=None
) -> ThresholdChoice:
    """τ_0 of the routing cascade for ``objective``, over ``grid`` (the same rules and tie-breaks as
    ``choose_thresholds``). The thresholds returned are (τ_0, NEVER, ..., NEVER): the later stages
    never stop early, which is how ``mode=route`` reads them. ``rule(table, τ_0)``: the replay of
    another one-decision policy (``mode=router``: ``replay.router`` with the mentor's own answers);
    None: ``replay.route``."""
    if objective.kind == "per_stage":
        raise OptionError("the route policy has one threshold: use max_accuracy or min_cost")
    grid = tuple(float(g) for g in grid)
    rule = rule or route
    results = [rule(table, tau) for tau in grid]
    acc = np.array([r.accuracy for r in results])
    cost = np.array([r.mean_tflops for r in results])
    ref = fixed_stage(table, table.num_stages - 1)
    index, feasible, note, bound = _choose_index(acc, cost, objective, ref, table.num_questions)
    return ThresholdChoice(
        (grid[index], *[NEVER] * (table.num_stages - 1)),
        objective=objective,
        result=results[index],
        feasible=feasible,
        note=note,
        bound=bound,
        reference={
            "policy": f"fixed:{table.num_stages - 1}",
            "accuracy": ref.accuracy,
            "mean_tflops": ref.mean_tflops,
        },
        grid=grid,
    )
