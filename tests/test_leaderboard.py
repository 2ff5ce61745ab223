"""The leaderboard's arithmetic (ΔTFLOPs, Len., Pareto front), its files and plot, and the compare
config's validation. The end-to-end compare run is in test_compare.py."""

import csv
import io
import json

import pytest

from tandem_lm_eval.workflows.compare import CompareError, config_from_dict
from tandem_lm_eval.workflows.leaderboard import (
    BoardEntry,
    delta_vs_reference,
    pareto,
    plot_task,
    to_csv,
    to_json,
    to_markdown,
)


def entry(name, mode, acc, tflops, mentor=0.0, intern=100.0, task="t"):
    return BoardEntry(name, mode, task, "exact_match", 50, acc, mentor, intern, tflops, "replay")


ENTRIES = [
    entry("Intern", "intern_only", 0.40, 10.0),
    entry("Mentor", "mentor_only", 0.80, 100.0, mentor=300, intern=0),
    entry("Fixed high", "fixed:3", 0.82, 120.0, mentor=250),
    entry("Tandem", "tandem", 0.83, 60.0, mentor=150),
    entry("Dominated", "fixed:1", 0.39, 30.0, mentor=50),
]


def test_delta_length_and_front():
    d = delta_vs_reference(ENTRIES)
    assert d[("Tandem", "t")] == pytest.approx(-40.0) and d[("Fixed high", "t")] == pytest.approx(20.0)
    assert ENTRIES[3].mean_length == 250
    # Fixed high is beaten by Tandem (more accurate, cheaper); Dominated by Intern
    assert [e.name for e in pareto(ENTRIES)] == ["Intern", "Tandem"]
    assert delta_vs_reference([entry("Intern", "intern_only", 0.4, 10.0)])[("Intern", "t")] is None
    # the oracle would dominate every method: it is drawn, never on the front
    assert [e.name for e in pareto([*ENTRIES, entry("Oracle", "oracle", 0.95, 5.0)])] == ["Intern", "Tandem"]


def test_markdown_csv_json_carry_the_same_numbers():
    md = to_markdown(ENTRIES)
    assert "| Tandem * | `tandem` | 83.00 | 150.0 | 100.0 | 250.0 | 60.000 | -40% | replay |" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(ENTRIES))))
    assert [r["method"] for r in rows] == [e.name for e in ENTRIES]
    assert float(rows[3]["delta_tflops_vs_mentor_pct"]) == pytest.approx(-40.0)
    data = json.loads(to_json(ENTRIES, {"limit": 50}))
    assert data["limit"] == 50 and data["rows"][1]["mean_length"] == 300


def test_plot_exists_and_its_points_are_the_tables(tmp_path):
    png = plot_task(ENTRIES, tmp_path / "t.png")
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = json.loads((tmp_path / "t.points.json").read_text())
    assert [(p["name"], p["mean_tflops"], p["accuracy_pct"]) for p in drawn["points"]] == [
        (e.name, e.mean_tflops, 100 * e.accuracy) for e in ENTRIES
    ]
    assert drawn["pareto"] == ["Intern", "Tandem"]
    with pytest.raises(ValueError, match="one task"):
        plot_task([*ENTRIES, entry("X", "intern_only", 0.1, 1.0, task="other")], tmp_path / "x.png")


def test_config_is_validated_before_anything_runs(tmp_path):
    good = {
        "output": "out",
        "tasks": "a,b",
        "limit": 5,
        "model_args": "mentor=m,intern=i,budgets=[8,16]",
        "rows": [{"mode": "intern_only"}, {"name": "T", "mode": "tandem", "model_args": {"classifier": "c"}}],
    }
    cfg = config_from_dict(good, base=tmp_path)
    assert (
        cfg.tasks == ["a", "b"] and cfg.output == tmp_path / "out" and cfg.model_args["budgets"] == "[8,16]"
    )
    assert [r.name for r in cfg.rows] == ["intern_only", "T"] and cfg.rows[1].model_args == {
        "classifier": "c"
    }
    assert all(r.replayed for r in cfg.rows)
    bad = [
        ({**good, "typo": 1}, "unknown config keys"),
        ({**good, "rows": [{"mode": "magic"}]}, "unknown mode"),
        ({**good, "rows": [{"mode": "intern_only"}, {"mode": "intern_only"}]}, "unique"),
        ({**good, "rows": [{"name": "x"}]}, "needs a mode"),
        ({**good, "model_args": "mode=tandem"}, "must not set mode"),
        ({k: v for k, v in good.items() if k != "tasks"}, "needs 'tasks'"),
        ({**good, "rows": [{"mode": "oracle", "live": True}]}, "cannot run live"),
    ]
    for data, message in bad:
        with pytest.raises(CompareError, match=message):
            config_from_dict(data)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _legend_covers_nothing(points_file) -> dict:
    drawn = json.loads(points_file.read_text())
    legend, r = drawn["legend"]["box"], drawn["marker_radius"]
    for p in drawn["points"]:
        x, y = p["pixel"]
        assert not _overlaps(legend, [x - r, y - r, x + r, y + r]), (p["name"], drawn["legend"])
        assert not _overlaps(legend, p["label_box"]), (p["name"], "label", drawn["legend"])
    return drawn


@pytest.mark.parametrize(
    "rows",
    [
        # the demo GSM8K plot where "Fixed low" sat under the legend (bottom right)
        [
            ("Intern only", "intern_only", 0.01, 0.06),
            ("Fixed low", "fixed:1", 0.02, 1.6),
            ("Fixed medium", "fixed:2", 0.05, 3.05),
            ("Fixed high", "fixed:3", 0.13, 4.96),
            ("Tandem", "tandem", 0.09, 4.89),
            ("Mentor only", "mentor_only", 0.30, 5.2),
            ("Oracle", "oracle", 0.17, 0.66),
        ],
        # every corner taken: the legend goes outside the axes
        [
            ("A", "fixed:1", 0.0, 1.0),
            ("B", "fixed:2", 1.0, 1.0),
            ("C", "fixed:3", 0.0, 5.0),
            ("D", "mentor_only", 1.0, 5.0),
            ("E", "tandem", 0.5, 3.0),
            ("F", "intern_only", 0.5, 1.0),
            ("G", "route", 0.5, 5.0),
            ("H", "oracle", 0.0, 3.0),
            ("I", "fixed:4", 1.0, 3.0),
        ],
    ],
    ids=["demo-gsm8k", "every-corner"],
)
def test_plot_legend_covers_no_point_and_no_label(tmp_path, rows):
    entries = [entry(name, mode, acc, tflops) for name, mode, acc, tflops in rows]
    plot_task(entries, tmp_path / "t.png")
    drawn = _legend_covers_nothing(tmp_path / "t.points.json")
    if len(rows) == 9:
        assert drawn["legend"]["placement"] == "outside right"
    else:  # the old fixed spot, lower right, covered "Fixed low"
        assert drawn["legend"]["placement"] != "lower right"
