"""The leaderboard's statistics (issue 20): the paired bootstrap over questions against the binomial
formula, paired against unpaired intervals, the verdicts on constructed cases, the non-decreasing
convex hull and AIQ on a hand-computed hull, APGR, analyze's AUC resampling questions, and
compare's JSON fields on synthetic rows (no model)."""

import json

import numpy as np
import pytest

from tandem_lm_eval.calibration.analysis import bootstrap_auc
from tandem_lm_eval.calibration.bootstrap import (
    paired_means,
    percentile_interval,
    resample_counts,
    resampled_means,
)
from tandem_lm_eval.calibration.frontier import aiq, apgr, hull_value, mixing_gap, ndch
from tandem_lm_eval.calibration.verdicts import VERDICTS, compare_rows, verdict
from tandem_lm_eval.judgment.training_guard import QuestionIdentity
from tandem_lm_eval.workflows.board_audit import row_audit
from tandem_lm_eval.workflows.board_stats import board_stats, comparison_pairs, task_markdown
from tandem_lm_eval.workflows.leaderboard import BoardEntry, plot_task, sorted_outcomes, to_json, to_markdown


# --- the bootstrap --------------------------------------------------------------------------------------
def test_resample_counts_are_draws_of_n_seeded_and_chunked():
    a = np.concatenate(list(resample_counts(50, 30, seed=3, chunk_elements=50 * 7)))
    b = np.concatenate(list(resample_counts(50, 30, seed=3, chunk_elements=50 * 7)))
    assert a.shape == (30, 50) and (a.sum(axis=1) == 50).all() and (a >= 0).all()
    assert np.array_equal(a, b)  # seeded: the same counts
    c = np.concatenate(list(resample_counts(50, 30, seed=4, chunk_elements=50 * 7)))
    assert not np.array_equal(a, c)
    # chunks of 7 resamples: 5 chunks, the last of 2; the chunking does not change the counts
    assert [x.shape[0] for x in resample_counts(50, 30, seed=3, chunk_elements=50 * 7)] == [7, 7, 7, 7, 2]
    assert np.array_equal(a, np.concatenate(list(resample_counts(50, 30, seed=3))))


def test_resampled_means_equal_the_means_of_the_drawn_questions():
    rng = np.random.default_rng(0)
    values = rng.random((3, 40))
    means = resampled_means(values, 5, seed=1)
    counts = np.concatenate(list(resample_counts(40, 5, seed=1)))
    for b in range(5):
        drawn = np.repeat(np.arange(40), counts[b].astype(int))
        assert np.allclose(means[b], values[:, drawn].mean(axis=1))


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_bootstrap_interval_agrees_with_the_binomial_formula(p):
    n = 2000
    correct = np.random.default_rng(7).random(n) < p
    phat = correct.mean()
    low, high = percentile_interval(resampled_means(correct[None, :].astype(float), 4000, seed=0)[:, 0])
    half = 1.959964 * np.sqrt(phat * (1 - phat) / n)  # the normal-approximation binomial interval
    assert low == pytest.approx(phat - half, abs=0.15 * half)
    assert high == pytest.approx(phat + half, abs=0.15 * half)


def test_paired_interval_on_a_difference_is_narrower_than_unpaired_when_rows_are_correlated():
    n = 500
    rng = np.random.default_rng(11)
    ability = rng.random(n)  # the question's difficulty: both rows get the easy ones right
    a = (ability < 0.40).astype(float)
    b = ((ability < 0.43) ^ (rng.random(n) < 0.02)).astype(float)
    paired = paired_means({("A", "accuracy"): a, ("B", "accuracy"): b}, 2000, seed=0)
    d_paired = paired.column("B", "accuracy")[1] - paired.column("A", "accuracy")[1]
    # unpaired: each row resampled on its own (other seeds)
    da = resampled_means(a[None, :], 2000, seed=1)[:, 0]
    db = resampled_means(b[None, :], 2000, seed=2)[:, 0]
    lo_p, hi_p = percentile_interval(d_paired)
    lo_u, hi_u = percentile_interval(db - da)
    assert hi_p - lo_p < 0.5 * (hi_u - lo_u)
    assert lo_p > 0 > lo_u  # the pairing tells the 3-point gain apart; the unpaired one cannot


# --- verdicts --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "acc, cost, expected",
    [
        ((0.5, 2.0), (-9.0, -1.0), "dominates"),
        ((0.5, 2.0), (-1.0, 1.0), "more accurate at equal cost"),
        ((0.5, 2.0), (1.0, 3.0), "more accurate, costlier"),
        ((-1.0, 1.0), (-9.0, -1.0), "cheaper at equal accuracy"),
        ((-1.0, 1.0), (-1.0, 1.0), "cannot be told apart"),
        ((0.0, 0.0), (0.0, 0.0), "cannot be told apart"),  # identical rows: [0, 0] contains 0
        ((-1.0, 1.0), (1.0, 3.0), "costlier at equal accuracy"),
        ((-2.0, -0.5), (-9.0, -1.0), "cheaper, less accurate"),
        ((-2.0, -0.5), (-1.0, 0.0), "less accurate at equal cost"),  # an end at 0 still contains 0
        ((-2.0, -0.5), (1.0, 3.0), "dominated"),
    ],
)
def test_verdict_on_constructed_intervals(acc, cost, expected):
    assert verdict(acc, cost) == expected


def test_the_nine_verdicts_are_distinct():
    assert len(set(VERDICTS.values())) == 9


def test_compare_rows_on_constructed_rows():
    n = 400
    rng = np.random.default_rng(5)
    base = rng.random(n) < 0.3
    better = base | (rng.random(n) < 0.15)  # right wherever base is, and more
    series = {
        ("Base", "accuracy"): base.astype(float),
        ("Base", "tflops"): np.full(n, 10.0) + rng.random(n),
        ("Better", "accuracy"): better.astype(float),
        ("Better", "tflops"): np.full(n, 5.0) + rng.random(n),  # and half the cost
        ("Same", "accuracy"): base.astype(float),
        ("Same", "tflops"): np.full(n, 10.0) + rng.random(n),
    }
    means = paired_means(series, 1000, seed=0)
    out = {c.row: c for c in compare_rows(means, "t", [("Better", "Base"), ("Same", "Base")])}
    b = out["Better"]
    assert b.verdict == "dominates" and b.delta_accuracy > 0 and b.delta_tflops_pct < 0
    assert b.delta_accuracy == pytest.approx(100 * (better.mean() - base.mean()))
    assert b.delta_accuracy_ci95[0] <= b.delta_accuracy <= b.delta_accuracy_ci95[1]
    assert out["Same"].verdict == "cannot be told apart" and out["Same"].delta_accuracy_ci95 == (0.0, 0.0)
    assert b.comparisons_in_task == 2 and b.bonferroni_level == pytest.approx(1 - 0.05 / 4)


# --- the frontier --------------------------------------------------------------------------------------
def test_ndch_and_aiq_on_a_hand_computed_hull():
    # points: (0, 0.2) (1, 0.5) (2, 0.6) (3, 0.9) (4, 0.8) (1.5, 0.3, under the hull)
    cost = [0, 1, 2, 3, 4, 1.5]
    acc = [0.2, 0.5, 0.6, 0.9, 0.8, 0.3]
    hx, hy = ndch(cost, acc)
    # (2, 0.6) lies under the chord (1, 0.5)-(3, 0.9) (0.7 at x=2); (4, 0.8) is after the top: flat
    assert hx.tolist() == [0, 1, 3] and hy.tolist() == [0.2, 0.5, 0.9]
    assert hull_value(hx, hy, [4.0])[0] == pytest.approx(0.9)
    assert np.isnan(hull_value(hx, hy, [-1.0])[0])
    # area over [0, 4]: (0.2+0.5)/2*1 + (0.5+0.9)/2*2 + 0.9*1 = 0.35 + 1.4 + 0.9 = 2.65
    assert aiq(cost, acc) == pytest.approx(2.65 / 4)
    # over [1, 3]: 1.4 / 2
    assert aiq(cost, acc, c_min=1, c_max=3) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        aiq(cost, acc, c_min=-1)


def test_apgr_of_the_mixing_line_is_one_half_and_of_a_free_win_is_one():
    weak, strong = (1.0, 0.2), (11.0, 0.8)
    # only the two models: the hull is the mixing line, PGR = x
    assert apgr([1.0, 11.0], [0.2, 0.8], weak, strong) == pytest.approx(0.5)
    # a method at the weak model's cost with the strong model's accuracy recovers the whole gap
    assert apgr([1.0, 11.0, 1.0], [0.2, 0.8, 0.8], weak, strong) == pytest.approx(1.0)
    # a point halfway in cost at PGR 0.75: area 0.5*(0+0.75)/2 + 0.5*(0.75+1)/2 = 0.625
    assert apgr([1.0, 11.0, 6.0], [0.2, 0.8, 0.65], weak, strong) == pytest.approx(0.625)
    assert apgr([1.0, 11.0], [0.5, 0.5], (1.0, 0.5), (11.0, 0.5)) is None
    assert mixing_gap(weak, strong, 6.0, 0.6) == pytest.approx(0.1)


# --- analyze: AUC intervals resample questions ------------------------------------------------------
def test_bootstrap_auc_resamples_questions_with_their_rows_together():
    rng = np.random.default_rng(3)
    q = 120
    y1 = rng.random(q) < 0.4
    s1 = np.clip(0.3 * y1 + rng.random(q) * 0.7, 0, 1)
    # four identical stage rows per question: the information of one row each
    y4, s4, question = np.repeat(y1, 4), np.repeat(s1, 4), np.repeat(np.arange(q), 4)
    one = bootstrap_auc(y1, s1, 300, seed=0)
    by_question = bootstrap_auc(y4, s4, 300, seed=0, questions=question)
    by_row = bootstrap_auc(y4, s4, 300, seed=0)
    # resampling questions on the copies is resampling the questions themselves: the same draws
    assert by_question["auc"] == pytest.approx(one["auc"])
    assert (by_question["low"], by_question["high"]) == pytest.approx((one["low"], one["high"]))
    assert by_question["questions"] == q and by_row["questions"] == 4 * q
    # treating the 4q rows as independent is too narrow (about half as wide here)
    assert by_row["high"] - by_row["low"] < 0.7 * (by_question["high"] - by_question["low"])


def test_bootstrap_auc_with_one_row_per_question_keeps_the_row_draws():
    """One row per question: the draws are those of resampling rows, so per-stage intervals keep their
    values (the old loop is written out here)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(8)
    y = rng.random(80) < 0.3
    s = rng.random(80)
    r = np.random.default_rng(0)
    old = []
    for _ in range(200):
        idx = r.integers(0, 80, 80)
        if len(np.unique(y[idx])) == 2:
            old.append(roc_auc_score(y[idx], s[idx]))
    got = bootstrap_auc(y, s, 200, seed=0, questions=np.arange(100, 180))
    assert (got["low"], got["high"]) == pytest.approx(tuple(np.percentile(old, [2.5, 97.5])))


# --- compare's outputs on synthetic rows ------------------------------------------------------------
def _entry(name, mode, correct, tflops, doc_id=None):
    n = len(correct)
    doc_id = np.arange(n) if doc_id is None else doc_id
    return BoardEntry(
        name,
        mode,
        "t",
        "exact_match",
        n,
        float(np.mean(correct)),
        10.0,
        100.0,
        float(np.mean(tflops)),
        "replay",
        mean_latency_s=1.0,
        per_question=sorted_outcomes(
            doc_id, correct, tflops, np.full(n, 10.0), np.full(n, 100.0), np.ones(n)
        ),
    )


@pytest.fixture
def rows():
    n = 300
    rng = np.random.default_rng(2)
    ability = rng.random(n)
    return [
        _entry("Intern only", "intern_only", ability < 0.05, np.full(n, 0.1)),
        _entry("Mentor only", "mentor_only", ability < 0.40, np.full(n, 10.0)),
        _entry("Fixed high", "fixed:high", ability < 0.30, 5 + rng.random(n)),
        _entry("Tandem", "tandem", ability < 0.30, 3 + rng.random(n)),
        _entry("Oracle", "oracle", ability < 0.45, np.full(n, 1.0)),
        # listed in another order: the bootstrap pairs them by doc_id
        _entry("Route", "route", (ability < 0.2)[::-1], np.full(n, 4.0), doc_id=np.arange(n)[::-1]),
    ]


def test_comparison_pairs_each_method_against_tandem_and_fixed_high_once(rows):
    pairs = comparison_pairs(rows)
    assert ("Fixed high", "Tandem") in pairs and ("Tandem", "Fixed high") not in pairs
    assert not any("Oracle" in p for p in pairs)
    assert len(pairs) == 4 + 3  # four methods against Tandem, three more against fixed-high


def test_board_stats_json_markdown_and_plot(rows, tmp_path):
    stats = board_stats(rows, resamples=500, seed=0)
    data = json.loads(
        to_json(
            rows,
            {"comparisons": [c.to_dict() for c in stats.comparisons], "frontier": stats.frontier},
            stats.row_fields,
        )
    )
    board = {r["name"]: r for r in data["rows"]}
    for r in board.values():
        lo, hi = r["accuracy_ci95"]
        assert lo <= r["accuracy"] <= hi and r["paired"]
        lo, hi = r["mean_tflops_ci95"]
        assert lo <= r["mean_tflops"] + 1e-12 and r["mean_tflops"] <= hi + 1e-12
        assert "per_question" not in r
    tandem_vs_high = next(c for c in data["comparisons"] if c["row"] == "Fixed high" and c["vs"] == "Tandem")
    assert (
        tandem_vs_high["delta_accuracy"] == 0.0 and tandem_vs_high["verdict"] == "costlier at equal accuracy"
    )
    for key in (
        "row",
        "vs",
        "delta_accuracy",
        "delta_accuracy_ci95",
        "delta_tflops_pct",
        "delta_tflops_pct_ci95",
    ):
        assert key in tandem_vs_high
    f = data["frontier"]["t"]
    assert f["hull_rows"] == ["Intern only", "Tandem", "Mentor only"]
    methods = [n for n in board if n != "Oracle"]
    assert f["aiq"] == pytest.approx(
        aiq([board[n]["mean_tflops"] for n in methods], [board[n]["accuracy"] for n in methods])
    )
    assert f["aiq_ci95"][0] <= f["aiq"] <= f["aiq_ci95"][1]
    assert f["aiq_without_tandem"] < f["aiq"] and f["apgr"] is not None
    assert f["references"]["oracle"]["row"] == "Oracle"
    assert f["references"]["best_single_model"]["row"] == "Mentor only"
    assert f["mixing"]["weak"] == "Intern only" and f["mixing"]["strong"] == "Mentor only"
    md = to_markdown(rows, intervals=stats.intervals, sections={"t": task_markdown(stats, "t")})
    assert "accuracy [95% CI]" in md and "costlier at equal accuracy" in md and "AIQ" in md
    plot_task(rows, tmp_path / "t.png", intervals=stats.intervals, frontier=stats.frontier["t"])
    drawn = json.loads((tmp_path / "t.points.json").read_text())
    assert [p["name"] for p in drawn["points"]] == [e.name for e in rows]  # every row drawn


def test_a_row_on_other_questions_is_not_paired(rows):
    n = 300
    odd = _entry("Other", "fixed:low", np.ones(n, dtype=bool), np.full(n, 2.0), doc_id=np.arange(n) + 1000)
    stats = board_stats([*rows, odd], resamples=200)
    assert ("Other", "t") in stats.unpaired and stats.intervals[("Other", "t")]["accuracy"] == (1.0, 1.0)
    assert not any("Other" in (c.row, c.vs) for c in stats.comparisons)


def test_row_audit_names_what_thresholds_were_chosen_on():
    from types import SimpleNamespace

    card = SimpleNamespace(
        policy="tandem",
        thresholds=[0.05, 0.95],
        threshold_objective={"kind": "max_accuracy", "rows": "validation"},
        training={"report": {"questions": {"train": 3, "validation": 1}}},
        training_questions=frozenset({"a", "b", "c", "d"}),
    )
    clf = SimpleNamespace(card=card)

    def ids(*keys):  # evaluated questions known by their dialogue hash only (as older records)
        return [QuestionIdentity(k) for k in keys]

    ok = row_audit("Tandem", "tandem", "t", ids("x", "y"), classifier=clf)
    assert ok["overlap_with_evaluated"] == 0 and ok["check"].startswith("passed")
    assert ok["training_questions"] == 4 and ok["train_questions"] == 3 and "validation" in ok["chosen_on"]
    bad = row_audit("Tandem", "tandem", "t", ids("a", "y"), classifier=clf, overlap_allowed=True)
    assert bad["overlap_with_evaluated"] == 1 and bad["check"].startswith("FAILED")
    assert row_audit("Fixed", "fixed:high", "t", ids("a"))["check"] == "not applicable"
    blank = SimpleNamespace(card=SimpleNamespace(**{**vars(card), "training_questions": frozenset()}))
    assert row_audit("Tandem", "tandem", "t", ids("a"), classifier=blank)["check"].startswith("not checked")
    assert "labels" in row_audit("Oracle", "oracle", "t", ids("a"))["chosen_on"]
