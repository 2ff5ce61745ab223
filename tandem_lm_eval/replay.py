"""Offline replay of the Tandem stop rule, and the whole threshold grid at once.

A :class:`StageTable` holds, for Q questions and T stages (t = 0: the question alone), the
classifier's score s_t (NaN where the stage's prompt did not fit the intern: such a stage never
passes and never wins the fallback), whether the intern's answer from stage t is correct, the
cumulative mentor tokens behind stage t and the intern's answer tokens from stage t. From it,
without any model:

- :func:`replay` applies one threshold vector τ exactly as the live cascade does
  (``policies.base.select_stage``: the first t with s_t > τ_t, else argmax_t s_t, ties to the
  earliest stage) and charges Eq. 12 (``cost.tflops``) per question;
- :func:`fixed_stage`, :func:`intern_only` and :func:`oracle` are the baselines on the same table;
- :func:`threshold_grid` gives accuracy, mean TFLOPs and mean mentor tokens for *every* τ in
  ``grid ** T`` (19**4 = 130,321 vectors for the paper's grid and four stages);
- :func:`choose_thresholds` picks τ for an explicit :class:`Objective`, and :func:`pareto_front`
  lists the accuracy/cost trade-offs the grid can reach.

What the mentor is paid (as in ``cascade.Cascade.run``): stopping early at stage t costs the mentor
tokens behind stage t. When no stage passes, the mentor has already written *every* stage before the
fallback is taken, so the fallback costs the mentor tokens behind the last stage T-1, whichever
stage the intern then answers from; this is true even when the last stages were unusable (the mentor
writes a stage before the intern finds that its prompt does not fit). The intern's answer tokens are
those of the chosen stage.

The grid in one pass (why it is fast and exact)
------------------------------------------------
Let G = (γ_0 < ... < γ_{n-1}) be the grid and k[q, t] the number of grid values strictly below
s_t (0 for an unusable stage). Question q passes stage t under grid index g_t iff
s_t > γ_{g_t} iff g_t < k[q, t]. Under the index vector g = (g_0, ..., g_{T-1}) question q

- stops early at stage t  iff  g_i >= k[q, i] for every i < t, and g_t < k[q, t];
- falls back               iff  g_i >= k[q, i] for every i.

The outcome of q at stage t (correct or not, its TFLOPs, its mentor tokens) does not depend on g,
so any total over questions, for instance the number of correct answers, is

    F(g) = Σ_t Σ_q w_t[q] · Π_{i<t} [g_i >= k[q, i]] · [g_t < k[q, t]]
         + Σ_q w_fb[q] · Π_i [g_i >= k[q, i]].

Each term is a sum over questions of a product of one-coordinate indicators, so it is a
multi-dimensional histogram of (k[q, 0], ..., k[q, t]) weighted by w_t, followed by one cumulative
sum per axis: a prefix sum (Σ_{k <= g}) for an indicator [g_i >= k_i], a suffix sum (Σ_{k > g}) for
[g_t < k_t]. The stage-t term depends on g_0..g_t only and is broadcast over the later axes. The
work is O(Q·T) for the histograms plus O(T·(n+1)^T) for the sums, instead of O(Q·T·n^T) for a
replay of every vector: about 15 ms for 5,000 questions, four stages and 19 grid values (see
benchmarks/bench_thresholds.py).
Counts are sums of 0/1 weights, hence exact; TFLOPs agree with :func:`replay` to rounding.

Everything here is plain numpy: no model, no file I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal

import numpy as np

from .classifier import THRESHOLD_GRID, grid_search_threshold
from .cost import tflops as eq12_tflops

Stage0 = Literal["stop", "fallback"]
STAGE0_MODES = ("stop", "fallback")
#: Largest grid (or histogram) :func:`threshold_grid` builds: each float64 array of this many cells
#: is 400 MB, and the function holds three results plus a histogram and a cumulative sum.
MAX_GRID_CELLS = 50_000_000
#: The stage-0 threshold that never stops (scores lie in [0, 1] and the rule is s_t > τ_t).
NEVER = 1.0


# --- data -------------------------------------------------------------------------------------------
def _frozen_array(value, dtype, name: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=dtype, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot be read as {np.dtype(dtype).name} ({exc})") from exc
    arr.setflags(write=False)  # the table is frozen: nobody edits its arrays behind its back
    return arr


@dataclass(frozen=True)
class StageTable:
    """Q questions x T stages of collected outcomes, for replaying the cascade offline."""

    scores: np.ndarray  # (Q, T) float, s_t; NaN where the stage was not usable (never passes, never argmax)
    correct: np.ndarray  # (Q, T) bool, the intern's answer from stage t is correct
    mentor_tokens: np.ndarray  # (Q, T) cumulative mentor tokens behind stage t (0 at stage 0, non-decreasing)
    intern_tokens: np.ndarray  # (Q, T) intern answer tokens when answering from stage t
    mentor_params: float
    intern_params: float

    def __post_init__(self) -> None:
        scores = _frozen_array(self.scores, np.float64, "scores")
        if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
            raise ValueError(f"scores must have shape (questions, stages) with both >= 1, got {scores.shape}")
        shape = scores.shape
        correct = np.asarray(self.correct)
        if correct.dtype != np.bool_:
            # 0/1 integers are accepted (labels often come as ints); anything else is a mistake
            if not np.issubdtype(correct.dtype, np.integer) or not np.isin(correct, (0, 1)).all():
                raise ValueError(f"correct must be bool (or 0/1 integers), got dtype {correct.dtype}")
        correct = _frozen_array(correct, np.bool_, "correct")
        mentor = _frozen_array(self.mentor_tokens, np.float64, "mentor_tokens")
        intern = _frozen_array(self.intern_tokens, np.float64, "intern_tokens")
        for name, arr in (("correct", correct), ("mentor_tokens", mentor), ("intern_tokens", intern)):
            if arr.shape != shape:
                raise ValueError(f"{name} has shape {arr.shape}, scores has {shape}")
        usable = ~np.isnan(scores)
        if not usable[:, 0].all():
            bad = np.flatnonzero(~usable[:, 0])[:5].tolist()
            raise ValueError(f"stage 0 (the question alone) must be usable: NaN score for questions {bad}")
        if np.any(scores[usable] < 0.0) or np.any(scores[usable] > 1.0):
            # the rule relies on it: τ = 1.0 must never pass (stage0="fallback")
            raise ValueError("scores must lie in [0, 1] (NaN marks an unusable stage)")
        for name, arr in (("mentor_tokens", mentor), ("intern_tokens", intern)):
            if not np.isfinite(arr).all() or np.any(arr < 0):
                raise ValueError(f"{name} must be finite and >= 0 at every stage, usable or not")
        if np.any(mentor[:, 0] != 0):
            raise ValueError("mentor_tokens must be 0 at stage 0 (the question alone)")
        if np.any(np.diff(mentor, axis=1) < 0):
            q = int(np.flatnonzero((np.diff(mentor, axis=1) < 0).any(axis=1))[0])
            raise ValueError(
                f"mentor_tokens must be cumulative (non-decreasing along stages); question {q}: "
                f"{mentor[q].tolist()}"
            )
        for name in ("mentor_params", "intern_params"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "correct", correct)
        object.__setattr__(self, "mentor_tokens", mentor)
        object.__setattr__(self, "intern_tokens", intern)

    @property
    def num_questions(self) -> int:
        return int(self.scores.shape[0])

    @property
    def num_stages(self) -> int:
        return int(self.scores.shape[1])

    @property
    def usable(self) -> np.ndarray:
        """(Q, T) bool: the stage's prompt fitted the intern (its score is not NaN)."""
        return ~np.isnan(self.scores)

    def with_scores(self, scores) -> StageTable:
        """The same outcomes under other scores (e.g. another classifier), validated again."""
        return replace(self, scores=scores)


# --- one threshold vector ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayResult:
    """Per-question outcome of one policy on a :class:`StageTable`."""

    stage: np.ndarray  # (Q,) int, the stage the intern answered from
    early: np.ndarray  # (Q,) bool, stopped by s_t > τ_t (False: fallback, or a baseline)
    correct: np.ndarray  # (Q,) bool
    mentor_paid: np.ndarray  # (Q,) mentor tokens generated (L_L of Eq. 12)
    intern_tokens: np.ndarray  # (Q,) intern answer tokens (L_S of Eq. 12)
    tflops: np.ndarray  # (Q,) Eq. 12
    num_stages: int

    @property
    def num_questions(self) -> int:
        return int(self.stage.shape[0])

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct))

    @property
    def mean_tflops(self) -> float:
        return float(np.mean(self.tflops))

    @property
    def mean_mentor_tokens(self) -> float:
        return float(np.mean(self.mentor_paid))

    @property
    def mean_intern_tokens(self) -> float:
        return float(np.mean(self.intern_tokens))

    @property
    def early_rate(self) -> float:
        return float(np.mean(self.early))

    @property
    def stage_distribution(self) -> tuple[float, ...]:
        """Fraction of questions answered from each stage 0..T-1."""
        counts = np.bincount(self.stage, minlength=self.num_stages)
        return tuple(float(c) / self.num_questions for c in counts)

    def summary(self) -> dict:
        return {
            "questions": self.num_questions,
            "accuracy": self.accuracy,
            "mean_tflops": self.mean_tflops,
            "mean_mentor_tokens": self.mean_mentor_tokens,
            "mean_intern_tokens": self.mean_intern_tokens,
            "stage_distribution": {str(t): f for t, f in enumerate(self.stage_distribution)},
            "early_rate": self.early_rate,
        }


def format_distribution(summary: dict) -> str:
    """A ``ReplayResult.summary()``'s stage distribution as ``"0: 0.12, 1: 0.30, ..."``."""
    return ", ".join(f"{t}: {share:.2f}" for t, share in summary["stage_distribution"].items())


def _check_stage0(stage0: str) -> None:
    if stage0 not in STAGE0_MODES:
        raise ValueError(f"stage0 must be one of {STAGE0_MODES}, got {stage0!r}")


def _result(table: StageTable, stage: np.ndarray, early: np.ndarray, mentor_paid: np.ndarray, correct=None):
    rows = np.arange(table.num_questions)
    intern = table.intern_tokens[rows, stage]
    return ReplayResult(
        stage=stage,
        early=early,
        correct=table.correct[rows, stage] if correct is None else correct,
        mentor_paid=mentor_paid,
        intern_tokens=intern,
        tflops=np.asarray(eq12_tflops(table.mentor_params, table.intern_params, mentor_paid, intern)),
        num_stages=table.num_stages,
    )


def _fallback_stage(table: StageTable) -> np.ndarray:
    """argmax_t s_t over usable stages, ties to the earliest (np.argmax returns the first maximum)."""
    return np.argmax(np.where(table.usable, table.scores, -np.inf), axis=1)


def replay(table: StageTable, thresholds: Sequence[float], stage0: Stage0 = "stop") -> ReplayResult:
    """The cascade under τ = ``thresholds`` (one per stage), question by question, vectorised.

    Same choice as ``policies.base.select_stage(scores, thresholds)`` with an unusable stage's score
    read as -1 (as ``Cascade`` does). ``stage0="fallback"``: stage 0 never stops early (τ_0 = +inf,
    ``thresholds[0]`` is ignored) but still takes part in the argmax fallback.
    """
    _check_stage0(stage0)
    tau = np.asarray(thresholds, dtype=np.float64)
    if tau.shape != (table.num_stages,):
        raise ValueError(f"{tau.size} thresholds for {table.num_stages} stages")
    if stage0 == "fallback":
        tau = tau.copy()
        tau[0] = np.inf
    elif not np.isfinite(tau).all():
        raise ValueError(f"thresholds must be finite, got {tau.tolist()}")
    passes = table.usable & (table.scores > tau)  # NaN > τ is False as well; the mask says why
    early = passes.any(axis=1)
    stage = np.where(early, np.argmax(passes, axis=1), _fallback_stage(table))
    rows = np.arange(table.num_questions)
    # early stop at t: the mentor wrote up to t; fallback: it wrote every stage before giving up
    mentor_paid = np.where(early, table.mentor_tokens[rows, stage], table.mentor_tokens[:, -1])
    return _result(table, stage, early, mentor_paid)


def fixed_stage(table: StageTable, t: int) -> ReplayResult:
    """Always answer from stage t (the ``fixed:t`` policy), no scoring.

    As in ``Cascade.run``: the mentor writes stages 1..t, so it is paid ``mentor_tokens[:, t]``; when
    stage t is unusable the intern answers from the last usable stage before it.
    """
    if not 0 <= t < table.num_stages:
        raise ValueError(f"stage {t} out of range 0..{table.num_stages - 1}")
    usable = table.usable[:, : t + 1]
    # index of the last True along the row (stage 0 is always usable, so there is one)
    stage = t - np.argmax(usable[:, ::-1], axis=1)
    return _result(table, stage, np.zeros(table.num_questions, dtype=bool), table.mentor_tokens[:, t].copy())


def intern_only(table: StageTable) -> ReplayResult:
    """The intern alone: stage 0, no mentor tokens."""
    return fixed_stage(table, 0)


def oracle(table: StageTable) -> ReplayResult:
    """The cheapest correct stage: the first usable stage whose answer is correct.

    The mentor is paid up to that stage. A question that no usable stage answers correctly is
    answered from stage 0 with no mentor tokens and counts as wrong (the oracle knows the mentor
    cannot help, so it does not pay for it). ``early`` is False throughout (no classifier decided).
    """
    good = table.correct & table.usable
    solvable = good.any(axis=1)
    stage = np.where(solvable, np.argmax(good, axis=1), 0)
    rows = np.arange(table.num_questions)
    mentor_paid = np.where(solvable, table.mentor_tokens[rows, stage], 0.0)
    return _result(table, stage, np.zeros(table.num_questions, dtype=bool), mentor_paid, correct=solvable)


# --- the whole grid ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridResult:
    """Replayed totals for every threshold vector of a grid.

    ``axes[t]`` lists the thresholds tried at stage t; the arrays have shape
    ``tuple(len(a) for a in axes)`` and cell ``g`` holds the result of
    ``replay(table, [axes[t][g[t]] for t in range(T)])``. With ``stage0="fallback"``, ``axes[0]`` is
    ``(1.0,)``: stage 0 never stops, so its axis has length 1.
    """

    axes: tuple[tuple[float, ...], ...]
    accuracy: np.ndarray
    mean_tflops: np.ndarray
    mean_mentor_tokens: np.ndarray
    num_questions: int
    stage0: Stage0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def thresholds_at(self, index) -> tuple[float, ...]:
        """The threshold vector of a cell, given its index tuple or its flat (C-order) index."""
        if np.isscalar(index):
            index = np.unravel_index(int(index), self.shape)
        return tuple(float(self.axes[t][int(g)]) for t, g in enumerate(index))


def _grid_axes(grid: Sequence[float], num_stages: int, stage0: Stage0) -> tuple[tuple[float, ...], ...]:
    values = np.asarray(grid, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError("grid must be a non-empty sequence of finite thresholds")
    if np.any(np.diff(values) <= 0):
        raise ValueError("grid must be strictly increasing")
    axis = tuple(float(v) for v in values)
    axes = [axis] * num_stages
    if stage0 == "fallback":
        axes[0] = (NEVER,)
    return tuple(axes)


def _grid_total(
    k: np.ndarray, sizes: Sequence[int], stop_w: np.ndarray, fallback_w: np.ndarray
) -> np.ndarray:
    """F(g) of the module docstring for one weight: stop weights (Q, T), fallback weights (Q,)."""
    T = len(sizes)
    out = np.zeros(tuple(sizes), dtype=np.float64)
    for t in range(T + 1):
        last = min(t, T - 1)  # t == T: the fallback term, prefix sums on every axis
        dims = tuple(n + 1 for n in sizes[: last + 1])  # k ranges over 0..n
        flat = np.ravel_multi_index(tuple(k[:, : last + 1].T), dims)
        weights = fallback_w if t == T else stop_w[:, t]
        hist = np.bincount(flat, weights=weights, minlength=int(np.prod(dims))).reshape(dims)
        for i in range(last + 1):
            if i < t:  # [g_i >= k_i]: Σ_{k <= g}, g = 0..n-1 (k = n never counts)
                hist = np.cumsum(hist[(slice(None),) * i + (slice(0, sizes[i]),)], axis=i)
            else:  # [g_t < k_t]: Σ_{k > g} = suffix sum from g + 1
                suffix = np.flip(np.cumsum(np.flip(hist, axis=i), axis=i), axis=i)
                hist = suffix[(slice(None),) * i + (slice(1, sizes[i] + 1),)]
        out += hist.reshape(hist.shape + (1,) * (T - 1 - last))
    return out


def threshold_grid(
    table: StageTable,
    grid: Sequence[float] = THRESHOLD_GRID,
    stage0: Stage0 = "stop",
    max_cells: int = MAX_GRID_CELLS,
) -> GridResult:
    """Accuracy, mean TFLOPs and mean mentor tokens of :func:`replay` for every τ in the grid.

    Exact (counts) and equal to :func:`replay` up to float rounding (TFLOPs), in O(Q·T + T·(n+1)^T)
    time: see the module docstring. Refuses grids above ``max_cells`` cells (memory).
    """
    _check_stage0(stage0)
    axes = _grid_axes(grid, table.num_stages, stage0)
    sizes = [len(a) for a in axes]
    cells = int(np.prod(sizes))
    hist_cells = int(np.prod([n + 1 for n in sizes]))
    if max(cells, hist_cells) > max_cells:
        raise ValueError(
            f"a grid of {len(grid)} values over {table.num_stages} stages needs {hist_cells:,} histogram "
            f"cells (limit {max_cells:,}, about {8 * hist_cells / 1e9:.1f} GB per array): use a coarser "
            "grid, stage0='fallback' (one axis less), fewer stages, or raise max_cells"
        )
    usable = table.usable
    # k[q, t] = number of axis values strictly below s_t: q passes stage t under index g iff g < k
    k = np.zeros(table.scores.shape, dtype=np.intp)
    for t, axis in enumerate(axes):
        k[:, t] = np.searchsorted(
            np.asarray(axis), np.where(usable[:, t], table.scores[:, t], -np.inf), "left"
        )

    rows = np.arange(table.num_questions)
    fb = _fallback_stage(table)
    fb_mentor = table.mentor_tokens[:, -1]  # the fallback comes after every stage was written
    stop_tflops = eq12_tflops(
        table.mentor_params, table.intern_params, table.mentor_tokens, table.intern_tokens
    )
    fb_tflops = eq12_tflops(
        table.mentor_params, table.intern_params, fb_mentor, table.intern_tokens[rows, fb]
    )
    # unusable stages have k = 0 and never stop: zero their weights anyway, so nothing leaks in
    stop = {
        "correct": np.where(usable, table.correct, False).astype(np.float64),
        "tflops": np.where(usable, stop_tflops, 0.0),
        "mentor": np.where(usable, table.mentor_tokens, 0.0),
    }
    fallback = {
        "correct": table.correct[rows, fb].astype(np.float64),
        "tflops": np.asarray(fb_tflops, dtype=np.float64),
        "mentor": fb_mentor,
    }
    q = table.num_questions
    totals = {name: _grid_total(k, sizes, stop[name], fallback[name]) for name in stop}
    return GridResult(
        axes=axes,
        accuracy=totals["correct"] / q,
        mean_tflops=totals["tflops"] / q,
        mean_mentor_tokens=totals["mentor"] / q,
        num_questions=q,
        stage0=stage0,
    )


# --- objectives -------------------------------------------------------------------------------------
ObjectiveKind = Literal["max_accuracy", "min_cost", "per_stage"]
OBJECTIVE_KINDS = ("max_accuracy", "min_cost", "per_stage")


@dataclass(frozen=True)
class Objective:
    """How thresholds are chosen; saved with them (``to_dict``) so a card says what was optimised.

    - ``max_accuracy``: highest replayed accuracy, optionally under a cap on mean TFLOPs per question
      (``max_tflops``, or ``max_cost_fraction`` of what ``fixed_stage(last stage)`` costs: the
      mentor's whole budget); ties -> lower mean TFLOPs, then higher thresholds.
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

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVE_KINDS:
            raise ValueError(f"objective kind must be one of {OBJECTIVE_KINDS}, got {self.kind!r}")
        _check_stage0(self.stage0)
        caps = {"max_tflops": self.max_tflops, "max_cost_fraction": self.max_cost_fraction}
        floors = {"min_accuracy": self.min_accuracy, "min_accuracy_fraction": self.min_accuracy_fraction}
        for name, value in {**caps, **floors}.items():
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"{name} must be a finite number, got {value!r}")
                object.__setattr__(self, name, float(value))
        given_caps = [n for n, v in caps.items() if v is not None]
        given_floors = [n for n, v in floors.items() if v is not None]
        if self.kind == "max_accuracy":
            if given_floors:
                raise ValueError(f"max_accuracy takes a cost cap, not an accuracy floor ({given_floors})")
            if len(given_caps) > 1:
                raise ValueError("give max_tflops or max_cost_fraction, not both")
        elif self.kind == "min_cost":
            if given_caps:
                raise ValueError(f"min_cost takes an accuracy floor, not a cost cap ({given_caps})")
            if len(given_floors) != 1:
                raise ValueError("min_cost needs exactly one of min_accuracy, min_accuracy_fraction")
        elif given_caps or given_floors:
            raise ValueError(f"per_stage takes no cap or floor ({given_caps + given_floors})")
        if self.max_tflops is not None and self.max_tflops < 0:
            raise ValueError(f"max_tflops must be >= 0, got {self.max_tflops}")
        if self.max_cost_fraction is not None and self.max_cost_fraction <= 0:
            raise ValueError(f"max_cost_fraction must be > 0, got {self.max_cost_fraction}")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise ValueError(f"min_accuracy must lie in [0, 1], got {self.min_accuracy}")
        if self.min_accuracy_fraction is not None and self.min_accuracy_fraction < 0:
            raise ValueError(f"min_accuracy_fraction must be >= 0, got {self.min_accuracy_fraction}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Objective:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown objective fields {sorted(unknown)}; known: {sorted(known)}")
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
        or grid_result.axes != _grid_axes(grid, table.num_stages, objective.stage0)
    ):
        raise ValueError("grid_result was computed for another table, grid or stage0")
    acc = grid_result.accuracy.ravel()
    cost = grid_result.mean_tflops.ravel()
    index, feasible, note, bound = _choose_index(acc, cost, objective, ref)
    thresholds = grid_result.thresholds_at(index)
    return ThresholdChoice(
        thresholds,
        result=replay(table, thresholds, objective.stage0),
        feasible=feasible,
        note=note,
        bound=bound,
        **common,
    )


def _choose_index(
    acc: np.ndarray, cost: np.ndarray, objective: Objective, ref: ReplayResult
) -> tuple[int, bool, str, float | None]:
    """(flat index, feasible, note, bound) of the candidate ``objective`` picks among points with
    accuracies ``acc`` and mean TFLOPs ``cost``; ``ref`` is the last fixed stage (for fractions)."""
    everything = np.ones(acc.shape, dtype=bool)

    def most_accurate(cand):  # ties: cheaper, then higher thresholds
        return _pick(cand, acc, -cost)

    def cheapest(cand):  # ties: more accurate, then higher thresholds
        return _pick(cand, -cost, acc)

    feasible, note, bound = True, "", None
    if objective.kind == "max_accuracy":
        if objective.max_tflops is not None:
            bound = objective.max_tflops
        elif objective.max_cost_fraction is not None:
            bound = objective.max_cost_fraction * ref.mean_tflops
        if bound is None:
            index = most_accurate(everything)
        else:
            ok = cost <= bound * (1 + 1e-12)
            feasible = bool(ok.any())
            if feasible:
                index = most_accurate(ok)
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


# --- the routing cascade (FrugalGPT-style, paper Table 6) ----------------------------------------------
def route(table: StageTable, tau0: float) -> ReplayResult:
    """``mode=route``: one decision from stage 0. s_0 > τ_0: the intern answers alone (no mentor);
    otherwise the mentor writes through the last budget and the intern answers from the last stage
    (the last usable one, as ``fixed_stage``), with no scoring and no argmax in between."""
    early = table.scores[:, 0] > tau0
    last = fixed_stage(table, table.num_stages - 1)
    stage = np.where(early, 0, last.stage)
    mentor_paid = np.where(early, 0.0, last.mentor_paid)
    return _result(table, stage, early, mentor_paid)


def choose_route_threshold(
    table: StageTable, objective: Objective, grid: Sequence[float] = THRESHOLD_GRID
) -> ThresholdChoice:
    """τ_0 of the routing cascade for ``objective``, over ``grid`` (the same rules and tie-breaks as
    ``choose_thresholds``). The thresholds returned are (τ_0, NEVER, ..., NEVER): the later stages
    never stop early, which is how ``mode=route`` reads them."""
    if objective.kind == "per_stage":
        raise ValueError("the route policy has one threshold: use max_accuracy or min_cost")
    grid = tuple(float(g) for g in grid)
    results = [route(table, tau) for tau in grid]
    acc = np.array([r.accuracy for r in results])
    cost = np.array([r.mean_tflops for r in results])
    ref = fixed_stage(table, table.num_stages - 1)
    index, feasible, note, bound = _choose_index(acc, cost, objective, ref)
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
