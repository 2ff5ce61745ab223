"""The leaderboard's statistics: intervals on every row, paired comparisons with verdicts, the frontier.

From the per-question values of each row (``BoardEntry.per_question``), per task:

- **intervals**: one paired bootstrap over the task's questions (calibration/bootstrap.py), the same
  resampled questions for every row and metric: 95% percentile intervals on accuracy, mean TFLOPs,
  mean mentor and intern tokens and latency;
- **comparisons**: every method against each Tandem row and against fixed-high (when the task has
  one), Δaccuracy in points and ΔTFLOPs in %, each with its paired interval, and the verdict the
  intervals support (calibration/verdicts.py, which defines the nine verdicts and the Bonferroni
  reading); references (the oracle) are not compared;
- **frontier**: the non-decreasing convex hull of the methods and its AIQ (with and without the
  Tandem rows, and a bootstrap interval), APGR between intern-only and mentor-only where both rows
  exist, the random-mixing line between intern-only and mentor-only (fixed-high when there is no
  mentor-only row, said so), each method's gap to it, and the reference points: the oracle and the
  best single model (calibration/frontier.py defines them).

Rows answer the same questions when their documents (``doc_id``) are the same; a row whose documents
differ from the task's other rows gets intervals of its own (unpaired) and takes no part in the
comparisons or the frontier. Seeded: the same config gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tandem_lm_eval.calibration.bootstrap import (
    LEVEL,
    RESAMPLES,
    PairedMeans,
    paired_means,
    percentile_interval,
)
from tandem_lm_eval.calibration.frontier import aiq, apgr, mixing_gap, ndch
from tandem_lm_eval.calibration.verdicts import Comparison, compare_rows
from tandem_lm_eval.workflows.leaderboard import NOT_METHODS, REFERENCE_MODE, BoardEntry

#: the JSON names of a row's intervals, by the metric they are on
CI_FIELDS = {
    "accuracy": "accuracy_ci95",
    "tflops": "mean_tflops_ci95",
    "mentor_tokens": "mean_mentor_tokens_ci95",
    "intern_tokens": "mean_intern_tokens_ci95",
    "latency_s": "mean_latency_s_ci95",
}
FIXED_HIGH = "fixed:high"
SINGLE_MODELS = ("intern_only", REFERENCE_MODE)


def is_tandem(entry: BoardEntry) -> bool:
    return entry.mode.split(":")[0] == "tandem"


@dataclass
class BoardStats:
    """What the statistics add to a leaderboard (board_stats module docstring)."""

    resamples: int
    seed: int
    level: float
    intervals: dict[tuple[str, str], dict[str, tuple[float, float]]] = field(default_factory=dict)
    unpaired: set[tuple[str, str]] = field(default_factory=set)  # (name, task) resampled on its own
    comparisons: list[Comparison] = field(default_factory=list)
    frontier: dict[str, dict] = field(default_factory=dict)

    def row_fields(self, entry: BoardEntry) -> dict:
        """The interval fields of one row's JSON (``[lo, hi]``, None where the metric is missing)."""
        got = self.intervals.get((entry.name, entry.task), {})
        out = {name: (list(got[m]) if m in got else None) for m, name in CI_FIELDS.items()}
        out["paired"] = (entry.name, entry.task) not in self.unpaired
        return out

    def method(self) -> dict:
        return {
            "method": "percentile bootstrap over questions, paired: the same resampled questions for "
            "every row and metric of a task",
            "level": self.level,
            "resamples": self.resamples,
            "seed": self.seed,
            "comparisons": "each method against each Tandem row and fixed-high; per-comparison "
            f"{100 * self.level:.0f}% intervals (verdict), and verdict_bonferroni at level "
            "1 - (1 - level) / (2m) for a task's m comparisons (two intervals each)",
            "verdicts": "accuracy higher/lower when the Δaccuracy interval excludes 0, equal (cannot be "
            "told apart) when it contains 0; the same for cost on ΔTFLOPs; the pair names the verdict "
            "(docs/leaderboard.md)",
        }


def board_stats(
    entries: Sequence[BoardEntry], resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> BoardStats:
    """Intervals, comparisons and the frontier of every task of ``entries`` (module docstring)."""
    stats = BoardStats(resamples=resamples, seed=seed, level=level)
    for task in dict.fromkeys(e.task for e in entries):
        rows = [e for e in entries if e.task == task and e.per_question is not None]
        if not rows:
            continue
        paired = _paired_rows(rows)
        for e in rows:
            if all(e is not p for p in paired):  # other documents: its own resamples, no comparisons
                stats.unpaired.add((e.name, task))
                own = paired_means(_series([e]), resamples, seed)
                stats.intervals[(e.name, task)] = _intervals(own, e.name, level)
        means = paired_means(_series(paired), resamples, seed)
        for e in paired:
            stats.intervals[(e.name, task)] = _intervals(means, e.name, level)
        stats.comparisons += compare_rows(means, task, comparison_pairs(paired), level)
        stats.frontier[task] = task_frontier(paired, means, level)
    return stats


def _paired_rows(rows: list[BoardEntry]) -> list[BoardEntry]:
    """The rows that answer the documents most rows of the task answer."""
    keys = [tuple(e.per_question.doc_id.tolist()) for e in rows]
    common = max(set(keys), key=keys.count)
    return [e for e, k in zip(rows, keys) if k == common]


def _series(rows: Sequence[BoardEntry]) -> dict[tuple[str, str], np.ndarray]:
    return {(e.name, metric): v for e in rows for metric, v in e.per_question.series().items()}


def _intervals(means: PairedMeans, name: str, level: float) -> dict[str, tuple[float, float]]:
    return {m: means.interval(name, m, level) for m in CI_FIELDS if means.has(name, m)}


def comparison_pairs(rows: Sequence[BoardEntry]) -> list[tuple[str, str]]:
    """(row, vs) for every method against each Tandem row and fixed-high; each pair once (a Tandem
    row against fixed-high, not also the reverse); references take no part."""
    methods = [e for e in rows if e.mode not in NOT_METHODS]
    anchors = [e for e in methods if is_tandem(e)] + [e for e in methods if e.mode == FIXED_HIGH]
    pairs: list[tuple[str, str]] = []
    for vs in anchors:
        for e in methods:
            if e.name != vs.name and (vs.name, e.name) not in pairs:
                pairs.append((e.name, vs.name))
    return pairs


def task_frontier(rows: Sequence[BoardEntry], means: PairedMeans, level: float = LEVEL) -> dict:
    """The frontier block of one task (module docstring); accuracy as a fraction, cost in TFLOPs."""
    methods = [e for e in rows if e.mode not in NOT_METHODS]
    cost = np.array([e.mean_tflops for e in methods])
    acc = np.array([e.accuracy for e in methods])
    hx, hy = ndch(cost, acc)
    c_min, c_max = float(cost.min()), float(cost.max())
    samples = np.array(
        [
            aiq(cs, qs, c_min=float(cs.min()), c_max=float(cs.max()))
            for cs, qs in zip(_resampled(means, methods, "tflops"), _resampled(means, methods, "accuracy"))
        ]
    )
    baselines = [i for i, e in enumerate(methods) if not is_tandem(e)]
    out: dict = {
        "aiq": aiq(cost, acc),
        "aiq_ci95": list(percentile_interval(samples, level)),
        "aiq_cost_range": [c_min, c_max],
        "aiq_without_tandem": aiq(cost[baselines], acc[baselines], c_min, c_max)
        if baselines and cost[baselines].min() <= c_min
        else None,
        "hull": [{"mean_tflops": float(x), "accuracy": float(y)} for x, y in zip(hx, hy)],
        "hull_rows": [e.name for e in sorted(methods, key=lambda e: e.mean_tflops) if _on_hull(e, hx, hy)],
    }
    weak = _first(methods, "intern_only")
    mentor = _first(methods, REFERENCE_MODE)
    strong = mentor or _first(methods, FIXED_HIGH)
    if weak is not None and mentor is not None:
        out["apgr"] = apgr(cost, acc, _point(weak), _point(mentor))
    else:
        out["apgr"] = None
        out["apgr_note"] = "needs an intern_only and a mentor_only row"
    if weak is not None and strong is not None and strong is not weak:
        out["mixing"] = {
            "weak": weak.name,
            "strong": strong.name,
            "note": "" if strong is mentor else "no mentor_only row: mixing of intern-only and fixed-high",
            "line": [
                {"mean_tflops": weak.mean_tflops, "accuracy": weak.accuracy},
                {"mean_tflops": strong.mean_tflops, "accuracy": strong.accuracy},
            ],
            "gap_points": {e.name: _gap(means, e, weak, strong, level) for e in methods},
        }
    singles = [e for e in methods if e.mode in SINGLE_MODELS]
    references = {}
    if singles:
        best = max(singles, key=lambda e: (e.accuracy, -e.mean_tflops))
        references["best_single_model"] = _ref(best)
    oracle = _first(rows, "oracle")
    if oracle is not None:
        references["oracle"] = _ref(oracle)
    out["references"] = references
    return out


def _resampled(means: PairedMeans, rows: Sequence[BoardEntry], metric: str) -> np.ndarray:
    """(B, rows) resampled means of one metric."""
    return np.column_stack([means.column(e.name, metric)[1] for e in rows])


def _gap(means: PairedMeans, e: BoardEntry, weak: BoardEntry, strong: BoardEntry, level: float) -> dict:
    """The row's accuracy above the mixing line at its cost, in points, with its paired interval."""
    point = 100 * float(mixing_gap(_point(weak), _point(strong), e.mean_tflops, e.accuracy))
    parts = {
        name: (means.column(r.name, "tflops")[1], means.column(r.name, "accuracy")[1])
        for name, r in (("row", e), ("weak", weak), ("strong", strong))
    }
    (cr, qr), (cw, qw), (cs, qs) = parts["row"], parts["weak"], parts["strong"]
    same = np.isclose(cs, cw)
    slope = np.where(same, 0.0, (qs - qw) / np.where(same, 1.0, cs - cw))
    line = np.where(same, np.maximum(qw, qs), qw + slope * (cr - cw))
    return {"gap": point, "ci95": list(percentile_interval(100 * (qr - line), level))}


def _on_hull(e: BoardEntry, hx: np.ndarray, hy: np.ndarray) -> bool:
    return bool(np.any(np.isclose(hx, e.mean_tflops) & np.isclose(hy, e.accuracy)))


def _first(rows: Sequence[BoardEntry], mode: str) -> BoardEntry | None:
    return next((e for e in rows if e.mode == mode), None)


def _point(e: BoardEntry) -> tuple[float, float]:
    return (e.mean_tflops, e.accuracy)


def _ref(e: BoardEntry) -> dict:
    return {"row": e.name, "mode": e.mode, "mean_tflops": e.mean_tflops, "accuracy": e.accuracy}


# --- Markdown -----------------------------------------------------------------------------------------
def _num(value: float, spec: str) -> str:
    """``value`` formatted, without the sign of a negative zero (-1e-17 is 0.00, not -0.00)."""
    text = f"{value:{spec}}"
    if text.startswith("-") and float(text) == 0:
        text = ("+" if "+" in spec else "") + text[1:]
    return text


def _ci(pair, scale: float = 1.0, spec: str = ".1f") -> str:
    return "" if pair is None else f"[{_num(scale * pair[0], spec)}, {_num(scale * pair[1], spec)}]"


def task_markdown(stats: BoardStats, task: str) -> str:
    """The comparisons and frontier of one task, as Markdown (below its leaderboard table)."""
    lines = []
    comps = [c for c in stats.comparisons if c.task == task]
    if comps:
        m = comps[0].comparisons_in_task
        lines += [
            f"### Paired comparisons ({m}; {100 * stats.level:.0f}% paired bootstrap intervals over "
            f"questions, {stats.resamples} resamples, seed {stats.seed})",
            "",
            "| row | vs | Δaccuracy (points) | ΔTFLOPs (%) | verdict | verdict, Bonferroni "
            f"({100 * comps[0].bonferroni_level:.2f}% each) |",
            "|---|---|---|---|---|---|",
        ]
        for c in comps:
            pct = (
                "n/a"
                if c.delta_tflops_pct is None
                else f"{_num(c.delta_tflops_pct, '+.1f')} {_ci(c.delta_tflops_pct_ci95)}"
            )
            lines.append(
                f"| {c.row} | {c.vs} | {_num(c.delta_accuracy, '+.2f')} {_ci(c.delta_accuracy_ci95, spec='.2f')} | "
                f"{pct} | {c.verdict} | {c.verdict_bonferroni} |"
            )
        lines += [
            "",
            "Verdicts read each interval alone: an interval that contains 0 is *equal* (cannot be told "
            "apart), not proven equal. `dominates` = more accurate and cheaper; the nine verdicts and "
            "the multiple-comparison rule are in docs/leaderboard.md.",
            "",
        ]
    f = stats.frontier.get(task)
    if f:
        lo, hi = f["aiq_cost_range"]
        parts = [
            f"AIQ (RouterBench) {100 * f['aiq']:.2f} {_ci(f['aiq_ci95'], 100, '.2f')} over "
            f"{lo:.3f}–{hi:.3f} TFLOPs"
        ]
        if f.get("aiq_without_tandem") is not None:
            parts.append(f"without the Tandem rows {100 * f['aiq_without_tandem']:.2f}")
        parts.append(
            "APGR (RouteLLM) n/a (no mentor-only row)" if f["apgr"] is None else f"APGR {f['apgr']:.3f}"
        )
        lines += [
            "### Frontier",
            "",
            "; ".join(parts) + f". On the non-decreasing convex hull: {', '.join(f['hull_rows'])}.",
        ]
        mix = f.get("mixing")
        if mix:
            gaps = ", ".join(  # the two ends lie on the line by construction
                f"{name} {_num(g['gap'], '+.2f')} {_ci(g['ci95'], spec='.2f')}"
                for name, g in mix["gap_points"].items()
                if name not in (mix["weak"], mix["strong"])
            )
            lines += [
                "",
                f"Above random mixing of {mix['weak']} and {mix['strong']} (points at the row's cost"
                f"{'; ' + mix['note'] if mix['note'] else ''}): {gaps}.",
            ]
        refs = f["references"]
        if refs:
            lines += [
                "",
                "References: "
                + "; ".join(
                    f"{kind.replace('_', ' ')} {r['row']} ({100 * r['accuracy']:.2f}% at {r['mean_tflops']:.3f} TFLOPs)"
                    for kind, r in refs.items()
                )
                + ".",
            ]
        lines.append("")
    return "\n".join(lines)
