"""The cost-quality frontier as router benchmarks measure it: the non-decreasing convex hull, AIQ,
APGR and the random-mixing line. Pure functions over (cost, quality) arrays, no I/O.

- **Non-decreasing convex hull** (RouterBench, Hu et al. 2024): any two methods can be mixed at
  random (question by question, with probability p), which reaches every point of the segment between
  them in expectation; and paying more never forces a lower quality (one may keep the cheaper
  method). The quality reachable at cost c is therefore the upper concave envelope of the points,
  held flat after its highest point: ``ndch``. Below the cheapest point nothing is reachable.
- **AIQ** (RouterBench's "average improvement in quality"): the mean of that hull over a cost range,
  AIQ = 1/(c_max - c_min) ∫ hull(c) dc from c_min to c_max; by default the range of the points' costs.
  (RouterBench's ``evaluation/AIQ.py`` divides its area by c_max, i.e. takes c_min = 0; the range is
  reported beside every AIQ here, so a reader can tell which was used.) Quality in [0, 1] gives AIQ
  in [0, 1].
- **APGR** (RouteLLM, Ong et al. 2024): the performance gap recovered between a weak and a strong
  model, PGR = (q - q_weak) / (q_strong - q_weak), averaged over the strong model's share of the
  work from 0 to 1. RouteLLM's x axis is the share of calls routed to the strong model; a cascade
  pays part of the strong model on a question, so here x is the cost share
  (c - c_weak) / (c_strong - c_weak), and the curve is the hull of the methods in (x, PGR), clipped
  to [0, 1] on x. Random mixing of the two models has APGR 0.5.
- **The mixing line**: the straight line from the weak to the strong model's point, what a coin
  weighted p chooses between them reaches; ``mixing_gap`` is a point's quality above it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ndch(costs: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The vertices (cost, quality) of the non-decreasing convex hull, cheapest first."""
    c = np.asarray(costs, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if c.shape != q.shape or c.ndim != 1 or c.size == 0:
        raise ValueError(f"costs and quality must be equal-length 1-D arrays, got {c.shape} and {q.shape}")
    if not (np.isfinite(c).all() and np.isfinite(q).all()):
        raise ValueError("costs and quality must be finite")
    order = np.lexsort((-q, c))  # cheapest first, the best of equal costs first
    hull: list[tuple[float, float]] = []
    for x, y in zip(c[order], q[order]):
        if hull and x == hull[-1][0]:
            continue  # an equal cost, no better than the one kept
        # the upper hull turns clockwise: drop the last vertex while it lies on or under the chord
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append((float(x), float(y)))
    hx = np.array([h[0] for h in hull])
    hy = np.array([h[1] for h in hull])
    top = int(np.argmax(hy))  # the first highest vertex: after it the hull is flat
    return hx[: top + 1], hy[: top + 1]


def hull_value(hx: np.ndarray, hy: np.ndarray, cost) -> np.ndarray:
    """The hull's quality at ``cost``: interpolated between vertices, flat after the last, NaN
    below the cheapest (nothing reaches it)."""
    cost = np.asarray(cost, dtype=np.float64)
    value = np.interp(cost, hx, hy)  # np.interp holds the end values outside the range
    return np.where(cost < hx[0], np.nan, value)


def area_under(hx: np.ndarray, hy: np.ndarray, c_min: float, c_max: float) -> float:
    """∫ hull(c) dc over [c_min, c_max] (c_min >= the cheapest vertex), exact for the piecewise-linear hull."""
    if c_min < hx[0] - 1e-12 * max(1.0, abs(hx[0])):
        raise ValueError(f"c_min {c_min} lies below the cheapest point {hx[0]}: the hull is undefined there")
    inner = hx[(hx > c_min) & (hx < c_max)]
    xs = np.concatenate([[c_min], inner, [c_max]])
    return float(np.trapezoid(hull_value(hx, hy, xs), xs))


def aiq(
    costs: Sequence[float],
    quality: Sequence[float],
    c_min: float | None = None,
    c_max: float | None = None,
) -> float:
    """RouterBench's AIQ of the points (module docstring), over [c_min, c_max] (default: the points'
    cost range; a single cost: the best quality there)."""
    hx, hy = ndch(costs, quality)
    lo = float(np.min(costs)) if c_min is None else float(c_min)
    hi = float(np.max(costs)) if c_max is None else float(c_max)
    if hi < lo:
        raise ValueError(f"c_max {hi} < c_min {lo}")
    if hi == lo:
        return float(hull_value(hx, hy, lo))
    return area_under(hx, hy, lo, hi) / (hi - lo)


def mixing_value(weak: tuple[float, float], strong: tuple[float, float], cost) -> np.ndarray:
    """The quality random mixing of the weak and strong (cost, quality) points reaches at ``cost``
    (the line through both; outside the segment, the line extended, so a gap can be read anywhere)."""
    (cw, qw), (cs, qs) = weak, strong
    cost = np.asarray(cost, dtype=np.float64)
    if cs == cw:
        return np.full_like(cost, max(qw, qs))
    return qw + (qs - qw) * (cost - cw) / (cs - cw)


def mixing_gap(weak, strong, cost, quality) -> np.ndarray:
    """How far above the mixing line a point lies (quality units); negative: below it."""
    return np.asarray(quality, dtype=np.float64) - mixing_value(weak, strong, cost)


def apgr(
    costs: Sequence[float],
    quality: Sequence[float],
    weak: tuple[float, float],
    strong: tuple[float, float],
) -> float | None:
    """RouteLLM's APGR of the points between ``weak`` and ``strong`` (cost, quality), the x axis the
    cost share (module docstring). None when the two models have the same quality or cost (no gap)."""
    (cw, qw), (cs, qs) = weak, strong
    if qs == qw or cs == cw:
        return None
    c = np.asarray(costs, dtype=np.float64)
    x = np.clip((c - cw) / (cs - cw), 0.0, 1.0)
    pgr = (np.asarray(quality, dtype=np.float64) - qw) / (qs - qw)
    # the weak model itself is always reachable at x = 0 (PGR 0): the hull starts there
    x = np.concatenate([[0.0], x])
    pgr = np.concatenate([[0.0], pgr])
    hx, hy = ndch(x, pgr)
    return area_under(hx, hy, 0.0, 1.0)
