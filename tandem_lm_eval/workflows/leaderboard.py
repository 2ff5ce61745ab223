"""The cost-quality leaderboard: one row per method, the layout of the paper's Table 1.

For each task: accuracy (the task's primary metric), mean mentor and intern tokens, Len. (L_L + L_S),
TFLOPs (Eq. 12) and ΔTFLOPs against the mentor alone, in %; latency in seconds per question and the
speed-up against the mentor alone (paper Table 13), with the judgment's share of the latency for
rows that judge. Pure functions over ``BoardEntry``
lists (Markdown, CSV, JSON, the Pareto front); ``plot_task`` draws accuracy against TFLOPs with the
front, one PNG per task (matplotlib, the ``plot`` extra).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REFERENCE_MODE = "mentor_only"
# Rows that are references, not methods one can run (the oracle knows which stage is right): drawn,
# but never on the Pareto front, which they would dominate.
NOT_METHODS = ("oracle",)


@dataclass(frozen=True)
class QuestionOutcomes:
    """One row's per-question values on one task, in the order of ``doc_id`` (the task's documents):
    what the bootstrap resamples (board_stats.py). ``latency_s`` is None when no times were recorded."""

    doc_id: np.ndarray  # (n,) int
    correct: np.ndarray  # (n,) bool
    tflops: np.ndarray  # (n,) Eq. 12
    mentor_tokens: np.ndarray  # (n,)
    intern_tokens: np.ndarray  # (n,)
    latency_s: np.ndarray | None = None  # (n,)

    def series(self) -> dict[str, np.ndarray]:
        """Metric name -> per-question array, the metrics a row's intervals are on."""
        out = {
            "accuracy": self.correct.astype(np.float64),
            "tflops": self.tflops,
            "mentor_tokens": self.mentor_tokens,
            "intern_tokens": self.intern_tokens,
        }
        if self.latency_s is not None:
            out["latency_s"] = self.latency_s
        return out


def sorted_outcomes(
    doc_id, correct, tflops, mentor_tokens, intern_tokens, latency_s=None
) -> QuestionOutcomes:
    """A ``QuestionOutcomes`` with its arrays put in ``doc_id`` order."""
    order = np.argsort(np.asarray(doc_id), kind="stable")

    def arr(v, dtype=np.float64):
        return np.asarray(v, dtype=dtype)[order]

    return QuestionOutcomes(
        doc_id=arr(doc_id, np.int64),
        correct=arr(correct, bool),
        tflops=arr(tflops),
        mentor_tokens=arr(mentor_tokens),
        intern_tokens=arr(intern_tokens),
        latency_s=None if latency_s is None else arr(latency_s),
    )


@dataclass(frozen=True)
class BoardEntry:
    """One method on one task, averaged over its questions."""

    name: str
    mode: str
    task: str
    metric: str
    questions: int
    accuracy: float
    mean_mentor_tokens: float
    mean_intern_tokens: float
    mean_tflops: float
    source: str  # "replay" (from collected records) or "live" (an lm-eval run)
    mean_latency_s: float | None = None  # seconds per question (None: no times recorded)
    mean_judgment_s: float | None = None  # the part spent judging (rows that judge: tandem, route)
    # every forward pass of both models (cost/passes.py), beside Eq. 12's mean_tflops (None: unknown)
    mean_full_pass_tflops: float | None = None
    censored: int | None = None  # answers that ended at the length limit (None: unknown)
    accuracy_uncensored: float | None = None  # the accuracy among the other answers
    # mean_tflops counts the tokens a hosted chat API regenerated (False: records made before
    # they were kept, which cannot)
    counts_regenerated: bool = True
    # where the latency comes from: "measured" (this run), "collect" (the phases as the collect timed
    # them), "store" (outputs the run store served bring the seconds they took when computed, at
    # another moment than this run)
    latency_from: str | None = None
    # the per-question values behind the means (for intervals and paired comparisons; not written out)
    per_question: QuestionOutcomes | None = field(default=None, compare=False, repr=False)

    @property
    def mean_length(self) -> float:
        return self.mean_mentor_tokens + self.mean_intern_tokens

    @property
    def judgment_share(self) -> float | None:
        """The judgment's share of the latency (the paper's "< 2% of total generation time")."""
        if self.mean_judgment_s is None or not self.mean_latency_s:
            return None
        return self.mean_judgment_s / self.mean_latency_s


def delta_vs_reference(entries: Sequence[BoardEntry]) -> dict[tuple[str, str], float | None]:
    """(name, task) -> TFLOPs change against the task's ``mentor_only`` row, in % (None without one)."""
    reference = {e.task: e.mean_tflops for e in entries if e.mode == REFERENCE_MODE}
    out = {}
    for e in entries:
        ref = reference.get(e.task)
        out[(e.name, e.task)] = None if not ref else 100.0 * (e.mean_tflops - ref) / ref
    return out


def speedup_vs_reference(entries: Sequence[BoardEntry]) -> dict[tuple[str, str], float | None]:
    """(name, task) -> the task's ``mentor_only`` latency over this row's (Table 13's "Speedup": 1.8x
    = 1.8 times faster than the mentor alone); None without a mentor-only row or times."""
    reference = {e.task: e.mean_latency_s for e in entries if e.mode == REFERENCE_MODE}
    out = {}
    for e in entries:
        ref = reference.get(e.task)
        out[(e.name, e.task)] = None if not ref or not e.mean_latency_s else ref / e.mean_latency_s
    return out


def pareto(entries: Sequence[BoardEntry]) -> list[BoardEntry]:
    """The methods no other method beats on both accuracy and TFLOPs (at least as good on both, better
    on one), cheapest first. References (the oracle) take no part."""
    entries = [e for e in entries if e.mode not in NOT_METHODS]
    front = [
        e
        for e in entries
        if not any(
            o.accuracy >= e.accuracy
            and o.mean_tflops <= e.mean_tflops
            and (o.accuracy, o.mean_tflops) != (e.accuracy, e.mean_tflops)
            for o in entries
        )
    ]
    return sorted(front, key=lambda e: (e.mean_tflops, -e.accuracy))


def _tasks(entries: Sequence[BoardEntry]) -> list[str]:
    return list(dict.fromkeys(e.task for e in entries))


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "" if value is None else f"{value:{spec}}{suffix}"


def _with_ci(value: float, ci, spec: str, scale: float = 1.0) -> str:
    """``value [lo, hi]`` (the interval scaled as the value), or the value alone without one."""
    text = f"{scale * value:{spec}}"
    return text if ci is None else f"{text} [{scale * ci[0]:{spec}}, {scale * ci[1]:{spec}}]"


def to_markdown(
    entries: Sequence[BoardEntry],
    title: str = "Leaderboard",
    intervals: dict[tuple[str, str], dict[str, tuple[float, float]]] | None = None,
    sections: dict[str, str] | None = None,
) -> str:
    """The leaderboard as Markdown; ``intervals`` ((name, task) -> metric -> (lo, hi), board_stats.py)
    put each row's 95% intervals beside its accuracy, mentor tokens and TFLOPs; ``sections`` (task ->
    Markdown) follow each task's table (the comparisons and the frontier)."""
    delta = delta_vs_reference(entries)
    speedup = speedup_vs_reference(entries)
    intervals = intervals or {}
    lines = [f"# {title}", ""]
    for task in _tasks(entries):
        rows = [e for e in entries if e.task == task]
        front = {e.name for e in pareto(rows)}
        metric = rows[0].metric
        ci = " [95% CI]" if intervals else ""
        lines += [
            f"## {task} ({rows[0].questions} questions, {metric})",
            "",
            f"| method | mode | accuracy{ci} | mentor tokens{ci} | intern tokens | Len. | TFLOPs{ci} | ΔTFLOPs vs mentor "
            f"| source | latency (s/question){ci} | speed-up vs mentor | judgment share |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for e in rows:
            d = delta[(e.name, task)]
            mark = " *" if e.name in front else ""
            got = intervals.get((e.name, task), {})
            lines.append(
                f"| {e.name}{mark} | `{e.mode}` | {_with_ci(e.accuracy, got.get('accuracy'), '.2f', 100)} | "
                f"{_with_ci(e.mean_mentor_tokens, got.get('mentor_tokens'), '.1f')} | "
                f"{e.mean_intern_tokens:.1f} | {e.mean_length:.1f} | "
                f"{_with_ci(e.mean_tflops, got.get('tflops'), '.3f')} | "
                f"{_fmt(d, '+.0f', '%')} | {e.source} | "
                f"{'' if e.mean_latency_s is None else _with_ci(e.mean_latency_s, got.get('latency_s'), '.3f')} | "
                f"{_fmt(speedup[(e.name, task)], '.2f', 'x')} | {_fmt(_pct(e.judgment_share), '.2f', '%')} |"
            )
        lines += [
            "",
            "`*`: on the accuracy–TFLOPs Pareto front of the methods (the oracle is a reference). Latency: "
            "each question's share of the batched calls of its phases (live: measured; replay: the phases "
            "its path ran, as the collect timed them); speed-up = the mentor-only latency / the row's; "
            "judgment share = the intern's scoring passes, features and classifier / the latency."
            + (
                " Intervals: 95% paired bootstrap over the task's questions (the same resamples for every row)."
                if intervals
                else ""
            ),
            "",
        ]
        if sections and sections.get(task):
            lines += [sections[task], ""]
    return "\n".join(lines)


def passes_markdown(entries: Sequence[BoardEntry]) -> str:
    """Per task: every forward pass beside Eq. 12, the answers cut at the length limit, and what
    each row's cost and latency count (so rows measured differently are never compared unmarked)."""
    lines = ["## Every pass, censored answers, what each row counts", ""]
    for task in _tasks(entries):
        rows = [e for e in entries if e.task == task]
        lines += [
            f"### {task}",
            "",
            "| method | TFLOPs (Eq. 12) | all-passes TFLOPs | censored | accuracy w/o censored "
            "| regenerated tokens counted | latency from |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in rows:
            acc = None if e.accuracy_uncensored is None else 100 * e.accuracy_uncensored
            lines.append(
                f"| {e.name} | {e.mean_tflops:.3f} | {_fmt(e.mean_full_pass_tflops, '.3f')} | "
                f"{'' if e.censored is None else f'{e.censored} of {e.questions}'} | {_fmt(acc, '.2f')} | "
                f"{'yes' if e.counts_regenerated else 'no (records without them)'} | {e.latency_from or ''} |"
            )
        lines.append("")
    lines += [
        "All-passes TFLOPs: 2e-12 · Σ over both models of |θ| · every token it processed (prompt "
        "prefill, the intern's scoring passes, regenerated chat outputs, every answer), prefix-cache "
        "hits left out (docs/cost-reporting.md). Censored: answers that ended at the length limit. "
        "Latency from: measured = in this run; collect = the phases as the collect timed them; store = "
        "outputs the run store served carry the seconds they took when computed, at another moment.",
        "",
    ]
    return "\n".join(lines)


def _pct(share: float | None) -> float | None:
    return None if share is None else 100.0 * share


def to_csv(entries: Sequence[BoardEntry]) -> str:
    delta = delta_vs_reference(entries)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        [
            "task",
            "method",
            "mode",
            "metric",
            "questions",
            "accuracy",
            "mean_mentor_tokens",
            "mean_intern_tokens",
            "mean_length",
            "mean_tflops",
            "delta_tflops_vs_mentor_pct",
            "source",
            "mean_latency_s",
            "speedup_vs_mentor",
            "mean_judgment_s",
            "judgment_share",
        ]
    )
    speedup = speedup_vs_reference(entries)
    for e in entries:
        d = delta[(e.name, e.task)]
        writer.writerow(
            [
                e.task,
                e.name,
                e.mode,
                e.metric,
                e.questions,
                f"{e.accuracy:.6f}",
                f"{e.mean_mentor_tokens:.3f}",
                f"{e.mean_intern_tokens:.3f}",
                f"{e.mean_length:.3f}",
                f"{e.mean_tflops:.6f}",
                "" if d is None else f"{d:.3f}",
                e.source,
                _fmt(e.mean_latency_s, ".6f"),
                _fmt(speedup[(e.name, e.task)], ".6f"),
                _fmt(e.mean_judgment_s, ".6f"),
                _fmt(e.judgment_share, ".6f"),
            ]
        )
    return buf.getvalue()


def to_json(entries: Sequence[BoardEntry], extra: dict | None = None, row_fields=None) -> str:
    """The leaderboard as JSON (docs/leaderboard.md): ``extra``'s keys at the top level beside
    ``rows``; ``row_fields(entry)`` -> more keys of one row (its intervals, board_stats.py)."""
    delta = delta_vs_reference(entries)
    speedup = speedup_vs_reference(entries)
    rows = [
        {
            **{k: v for k, v in asdict(e).items() if k != "per_question"},
            "mean_length": e.mean_length,
            "delta_tflops_vs_mentor_pct": delta[(e.name, e.task)],
            "speedup_vs_mentor": speedup[(e.name, e.task)],
            "judgment_share": e.judgment_share,
            **(row_fields(e) if row_fields is not None else {}),
        }
        for e in entries
    ]
    return json.dumps({**(extra or {}), "rows": rows}, indent=2) + "\n"


def plot_task(
    entries: Sequence[BoardEntry],
    path: str | Path,
    title: str | None = None,
    intervals: dict[tuple[str, str], dict[str, tuple[float, float]]] | None = None,
    frontier: dict | None = None,
) -> Path:
    """Accuracy against mean TFLOPs for one task, each point labelled, the Pareto front drawn;
    ``intervals`` (board_stats.py) add 95% error bars on both axes, ``frontier`` (board_stats.py's
    block of the task) the non-decreasing convex hull and the random-mixing line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - the plot extra is missing
        raise RuntimeError("plots need matplotlib: pip install 'tandem-lm-eval[plot]'") from exc
    tasks = _tasks(entries)
    if len(tasks) != 1:
        raise ValueError(f"plot_task draws one task, got {tasks}")
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    xs = [e.mean_tflops for e in entries]
    ys = [100 * e.accuracy for e in entries]
    methods = [e.mode not in NOT_METHODS for e in entries]
    extra_lines: list[tuple[list[float], list[float]]] = []  # polylines the legend must not cover
    for e, x, y in zip(entries, xs, ys):  # error bars under the markers: they never hide a point
        got = (intervals or {}).get((e.name, e.task), {})
        xci, yci = got.get("tflops"), got.get("accuracy")
        if xci is None and yci is None:
            continue
        ax.errorbar(
            x,
            y,
            xerr=None if xci is None else [[max(x - xci[0], 0.0)], [max(xci[1] - x, 0.0)]],
            yerr=None if yci is None else [[max(y - 100 * yci[0], 0.0)], [max(100 * yci[1] - y, 0.0)]],
            fmt="none",
            ecolor="tab:blue" if e.mode not in NOT_METHODS else "tab:gray",
            alpha=0.45,
            elinewidth=1.0,
            capsize=2,
            zorder=1,
        )
        # the bars are data too: the legend must not cover them
        if yci is not None:
            extra_lines.append(([x, x], [100 * yci[0], 100 * yci[1]]))
        if xci is not None:
            extra_lines.append(([xci[0], xci[1]], [y, y]))
    if frontier:
        hull = frontier.get("hull") or []
        if hull:
            hx, hy = _dense(
                [h["mean_tflops"] for h in hull] + [max(xs)],
                [100 * h["accuracy"] for h in hull] + [100 * hull[-1]["accuracy"]],
            )
            ax.plot(
                hx,
                hy,
                color="tab:green",
                linestyle="--",
                linewidth=1.0,
                zorder=2,
                label="non-decreasing convex hull (AIQ)",
            )
            extra_lines.append((hx, hy))
        mix = frontier.get("mixing")
        if mix:
            mx, my = _dense(
                [p["mean_tflops"] for p in mix["line"]], [100 * p["accuracy"] for p in mix["line"]]
            )
            ax.plot(
                mx,
                my,
                color="black",
                linestyle=":",
                linewidth=1.4,
                zorder=2.5,
                label=f"random mixing: {mix['weak']} / {mix['strong']}",
            )
            extra_lines.append((mx, my))
    ax.scatter(
        [x for x, m in zip(xs, methods) if m],
        [y for y, m in zip(ys, methods) if m],
        color="tab:blue",
        edgecolors="white",  # two nearly equal points stay two: each marker's rim shows over the other
        linewidths=0.8,
        alpha=0.85,
        zorder=3,
    )
    ax.scatter(
        [x for x, m in zip(xs, methods) if not m],
        [y for y, m in zip(ys, methods) if not m],
        facecolors="none",
        edgecolors="tab:gray",
        zorder=3,
        label="reference (not a method)",
    )
    placed: list[tuple[float, float]] = []
    labels = []
    span_y = (max(ys) - min(ys)) or 1.0
    for e, x, y in zip(entries, xs, ys):
        # a label near an earlier point's goes below it, then further down: nearly equal points
        # (a method and a baseline at the same cost and accuracy) stay readable
        near = sum(
            1
            for px, py in placed
            if abs(py - y) < 0.04 * span_y and (abs(px - x) <= 0.15 * max(abs(x), 1e-12))
        )
        placed.append((x, y))
        labels.append(
            ax.annotate(e.name, (x, y), textcoords="offset points", xytext=(5, 4 - 11 * near), fontsize=8)
        )
    front = pareto(entries)
    ax.step(
        [e.mean_tflops for e in front],
        [100 * e.accuracy for e in front],
        where="post",
        color="tab:red",
        linewidth=1.2,
        label="Pareto front",
        zorder=2,
    )
    ax.set_xlabel("mean TFLOPs per question (Eq. 12)")
    ax.set_ylabel(f"accuracy (%, {entries[0].metric})")
    ax.set_title(title or f"{tasks[0]}: accuracy vs. compute ({entries[0].questions} questions)")
    if _x_scale(xs, ys) == "log":
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    placement = _place_legend(fig, ax, xs, ys, labels, front, extra_lines)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    # the plotted points, beside the picture: what was drawn can be checked against the table, and
    # where (in pixels of the PNG, origin bottom left) each point, label and the legend landed
    renderer = fig.canvas.get_renderer()
    pixels = ax.transData.transform(np.column_stack([xs, ys]))
    points = [
        {
            "name": e.name,
            "mean_tflops": x,
            "accuracy_pct": y,
            "pixel": [float(px), float(py)],
            "label_box": _box(label.get_window_extent(renderer)),
        }
        for e, x, y, (px, py), label in zip(entries, xs, ys, pixels, labels)
    ]
    legend = {"placement": placement, "box": _box(ax.get_legend().get_window_extent(renderer))}
    front_names = [e.name for e in front]
    plt.close(fig)
    path.with_suffix(".points.json").write_text(
        json.dumps(
            {"points": points, "pareto": front_names, "legend": legend, "marker_radius": MARKER_RADIUS_PX},
            indent=2,
        )
        + "\n"
    )
    return path


def _x_scale(xs: Sequence[float], ys: Sequence[float]) -> str:
    """``log`` when the costs span more than 20x, unless a log axis would put two distinct points
    closer than ``MERGE_FRACTION`` of the axes (their markers overlapping) where a linear one keeps
    them further apart: points a few percent apart in cost and equal in accuracy (a router beside
    fixed-high) merge on a log axis spanning two decades."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if x.size < 2 or x.min() <= 0 or x.max() / x.min() <= 20:
        return "linear"

    def closest(u: np.ndarray) -> float:
        span_u = (u.max() - u.min()) or 1.0
        span_y = (y.max() - y.min()) or 1.0
        p = np.column_stack([(u - u.min()) / span_u, (y - y.min()) / span_y])
        d = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))
        d = d[np.triu_indices(len(u), 1)]
        d = d[d > 1e-12]  # equal points are drawn as one on either axis
        return float(d.min()) if d.size else 0.0

    on_log = closest(np.log(x))
    return "linear" if on_log < MERGE_FRACTION and closest(x) > on_log else "log"


def _dense(xs: list[float], ys: list[float], per_segment: int = 40) -> tuple[list[float], list[float]]:
    """A polyline linear in data units, resampled so that it stays straight in data units on a log
    axis too (matplotlib joins the given points straight on screen)."""
    out_x: list[float] = []
    out_y: list[float] = []
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        t = np.linspace(0.0, 1.0, per_segment)
        out_x += (x0 + t * (x1 - x0)).tolist()
        out_y += (y0 + t * (y1 - y0)).tolist()
    return (out_x, out_y) if out_x else (list(xs), list(ys))


#: where the legend may go, in order of preference; when every spot covers data it goes outside
LEGEND_SPOTS = (
    "lower right",
    "upper left",
    "lower left",
    "upper right",
    "center right",
    "center left",
    "lower center",
    "upper center",
)
#: two markers closer than this share of the axes overlap (2 marker radii on a 600-px axis)
MERGE_FRACTION = 0.02
MARKER_RADIUS_PX = 6.0  # a scatter marker (size 36 pt², radius 3 pt) at 120 dpi is 5 px; one spare


def _box(bbox) -> list[float]:
    return [float(bbox.x0), float(bbox.y0), float(bbox.x1), float(bbox.y1)]


def _place_legend(fig, ax, xs, ys, labels, front, extra_lines=()) -> str:
    """Put the legend where it covers no point, no label and no stretch of the Pareto front (nor of
    ``extra_lines``, (xs, ys) polylines: the hull, the mixing line): the first free spot of
    ``LEGEND_SPOTS``, else outside the axes on the right. Returns where it went."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    r = MARKER_RADIUS_PX
    obstacles = [
        Bbox.from_extents(px - r, py - r, px + r, py + r)
        for px, py in ax.transData.transform(np.column_stack([xs, ys]))
    ]
    obstacles += [label.get_window_extent(renderer) for label in labels]
    # the front is a step line (where="post"): horizontal to the next point, then up
    corners = []
    for a, b in zip(front, front[1:]):
        corners += [(a.mean_tflops, 100 * a.accuracy), (b.mean_tflops, 100 * a.accuracy)]
    if front:
        corners.append((front[-1].mean_tflops, 100 * front[-1].accuracy))
    polylines = [corners] + [list(zip(lx, ly)) for lx, ly in extra_lines]
    for line in polylines:
        path = ax.transData.transform(np.array(line)) if line else np.zeros((0, 2))
        for (x0, y0), (x1, y1) in zip(path, path[1:]):
            for t in np.linspace(0.0, 1.0, 25):
                x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
                obstacles.append(Bbox.from_extents(x - 1, y - 1, x + 1, y + 1))
    for spot in LEGEND_SPOTS:
        legend = ax.legend(loc=spot, fontsize=8)
        fig.canvas.draw()
        box = legend.get_window_extent(renderer)
        if not any(box.overlaps(o) for o in obstacles):
            return spot
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    fig.tight_layout()  # makes room on the right
    fig.canvas.draw()
    return "outside right"
