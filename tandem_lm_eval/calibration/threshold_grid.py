"""The grid of per-stage thresholds τ_t, and the cascade replayed for *every* vector of it at once.

:func:`threshold_grid` gives accuracy, mean TFLOPs and mean mentor tokens for every τ in
``grid ** T`` (19**4 = 130,321 vectors for the paper's grid and four stages).

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
from dataclasses import dataclass

import numpy as np

from tandem_lm_eval.calibration.replay import NEVER, Stage0, StageTable, check_stage0, fallback_stage
from tandem_lm_eval.common.options import OptionError
from tandem_lm_eval.cost.flops import tflops as eq12_tflops

THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


def grid_search_threshold(scores, labels, grid: Sequence[float] = THRESHOLD_GRID) -> float:
    """The τ of ``grid`` that best predicts the labels as ``score > τ`` (accuracy; ties -> higher τ,
    the conservative choice: stopping early on a wrong guess costs accuracy, continuing costs tokens)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape:
        raise ValueError("scores and labels must have the same shape")
    if scores.size == 0:
        return 0.5
    best_tau, best_acc = grid[0], -math.inf
    for tau in grid:
        acc = float(((scores > tau) == labels).mean())
        if acc >= best_acc:
            best_tau, best_acc = tau, acc
    return float(best_tau)


#: Largest grid (or histogram) :func:`threshold_grid` builds: each float64 array of this many cells
#: is 400 MB, and the function holds three results plus a histogram and a cumulative sum.
MAX_GRID_CELLS = 50_000_000


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


def grid_axes(grid: Sequence[float], num_stages: int, stage0: Stage0) -> tuple[tuple[float, ...], ...]:
    values = np.asarray(grid, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise OptionError("grid must be a non-empty sequence of finite thresholds")
    if np.any(np.diff(values) <= 0):
        raise OptionError("grid must be strictly increasing")
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
    check_stage0(stage0)
    axes = grid_axes(grid, table.num_stages, stage0)
    sizes = [len(a) for a in axes]
    cells = int(np.prod(sizes))
    hist_cells = int(np.prod([n + 1 for n in sizes]))
    if max(cells, hist_cells) > max_cells:
        raise OptionError(
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
    fb = fallback_stage(table)
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
