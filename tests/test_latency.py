"""Latency (paper Table 13): each question's own seconds per phase, the per-sample metric, the run
summary's mean and judgment share, replayed paths summing exactly the phases they ran, replay == live.

Wall time is not reproducible, so equality tests run on a ticking clock: ``cost.ledger.clock`` is
replaced by a counter that only advances inside backend calls, by a fixed amount per request. Every
share is then known exactly and a replayed latency must equal the live one to the last bit; the
real-clock test checks that every place reporting a request's time reports the same number.
"""

import json

import numpy as np
import pytest
from fakes import LengthClassifier, ScriptedBackend
from test_e2e_cli import arith_args, lm_eval, results_and_samples

from tandem_lm_eval.backends.base import Message
from tandem_lm_eval.calibration.analysis import replay_each
from tandem_lm_eval.calibration.replay import StageSeconds, StageTable, fixed_stage, oracle, replay, route
from tandem_lm_eval.calibration.tables import row_table, stage_seconds, stage_table
from tandem_lm_eval.cascade.policies import TandemPolicy, make_policy
from tandem_lm_eval.cascade.prompts import Question
from tandem_lm_eval.cascade.roles import Role
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.cost.ledger import PhaseTimes, RequestCost, RunSummary
from tandem_lm_eval.data.records import QuestionRecord, StageEntry, load_records
from tandem_lm_eval.harness.reporting import per_doc_metrics
from tandem_lm_eval.workflows.leaderboard import BoardEntry, to_csv, to_json, to_markdown

GENERATE_TICK = 1.0  # fake seconds per generated request
SCORE_TICK = 0.25  # fake seconds per scored prompt


class TickingClock:
    """A clock that stands still except when a backend call tells it how many requests it served."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self, requests: int, per_request: float) -> None:
        self.now += requests * per_request


@pytest.fixture
def ticking(monkeypatch) -> TickingClock:
    clock = TickingClock()
    monkeypatch.setattr("tandem_lm_eval.cost.ledger.clock", clock)
    return clock


class TickingBackend(ScriptedBackend):
    def __init__(self, clock: TickingClock, **kw):
        super().__init__(**kw)
        self.clock = clock

    def generate(self, requests):
        out = super().generate(requests)
        self.clock.tick(len(requests), GENERATE_TICK)
        return out

    def score(self, prompts):
        out = super().score(prompts)
        self.clock.tick(len(prompts), SCORE_TICK)
        return out


def q(text):
    return Question(messages=(Message("user", text),))


# --- the ledger and the per-sample metric -----------------------------------------------------------
def test_latency_is_the_sum_of_phases_and_the_summary_reports_the_judgment_share():
    a = RequestCost(times=PhaseTimes(2.0, 0.5, 0.1, 1.4), scored_stages=2)
    b = RequestCost(times=PhaseTimes(0.0, 0.25, 0.05, 0.7), scored_stages=1)
    assert a.latency_s == pytest.approx(4.0) and b.latency_s == pytest.approx(1.0)
    summary = RunSummary.of([a, b], num_stages=3)
    assert summary.mean_latency_s == pytest.approx(2.5)
    assert summary.judgment_share == pytest.approx((0.75 + 0.15) / 5.0)
    assert summary.classifier_share == pytest.approx(0.15 / 5.0)
    assert summary.judgment_s_per_stage == pytest.approx(0.9 / 3)
    d = summary.as_dict()
    assert d["mean_latency_s"] == pytest.approx(2.5) and d["judgment"]["share_of_time"] == pytest.approx(0.18)
    assert "latency: 2.500 s per request" in summary.format() and "18.00% of the time" in summary.format()
    # no phase timed (an empty run): no share, never a division by zero
    assert RunSummary.of([], 3).judgment_share is None and RunSummary.of([], 3).judgment_s_per_stage is None


def test_per_sample_latency_metric_sums_the_phases_and_the_repeats():
    one = RequestCost(times=PhaseTimes(1.0, 0.5, 0.25, 2.0)).as_dict()
    two = RequestCost(times=PhaseTimes(3.0, 0.0, 0.0, 1.0)).as_dict()
    metrics = per_doc_metrics([one])
    assert metrics["tandem_latency_s"] == pytest.approx(3.75)
    assert metrics["tandem_judgment_s"] == pytest.approx(0.75)
    # repeats: the document took both responses' time
    assert per_doc_metrics([one, two])["tandem_latency_s"] == pytest.approx(7.75)


# --- replayed paths ---------------------------------------------------------------------------------
def timed_table() -> StageTable:
    """Three questions, three stages, distinct seconds in every cell so each sum names its cells."""
    mentor = np.array([[0.0, 10.0, 20.0], [0.0, 30.0, 40.0], [0.0, 50.0, 60.0]])
    judge = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    answer = np.array([[100.0, 200.0, 300.0], [400.0, 500.0, 600.0], [700.0, 800.0, 900.0]])
    return StageTable(
        scores=[[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.3, 0.2]],
        correct=[[1, 0, 0], [0, 1, 1], [0, 0, 1]],
        mentor_tokens=[[0, 8, 16]] * 3,
        intern_tokens=[[5, 5, 5]] * 3,
        mentor_params=2.0,
        intern_params=1.0,
        seconds=StageSeconds(mentor, judge, answer),
    )


def test_replayed_latency_sums_exactly_the_phases_of_each_path():
    table = timed_table()
    # tandem, τ = 0.5: q0 stops at 0 (judge 0, answer 0); q1 stops at 1 (mentor 1, judge 0-1,
    # answer 1); q2 falls back to argmax stage 1 after every stage was written and judged
    r = replay(table, [0.5, 0.5, 0.5])
    assert r.stage.tolist() == [0, 1, 1] and r.early.tolist() == [True, True, False]
    assert r.latency.tolist() == [1 + 100, 30 + 4 + 5 + 500, 50 + 60 + 7 + 8 + 9 + 800]
    assert r.judgment.tolist() == [1, 4 + 5, 7 + 8 + 9]
    # fixed:2: the mentor writes both stages, nothing is judged, the answer from stage 2
    f = fixed_stage(table, 2)
    assert f.latency.tolist() == [10 + 20 + 300, 30 + 40 + 600, 50 + 60 + 900]
    assert f.judgment.tolist() == [0, 0, 0]
    assert fixed_stage(table, 0).latency.tolist() == [100, 400, 700]  # intern only
    # route, τ_0 = 0.5: q0 alone (judge 0 + answer 0); the others: judge 0, every stage, last answer
    g = route(table, 0.5)
    assert g.latency.tolist() == [1 + 100, 4 + 30 + 40 + 600, 7 + 50 + 60 + 900]
    # oracle: the mentor up to the first correct stage, no judgment
    o = oracle(table)
    assert o.latency.tolist() == [100, 30 + 500, 50 + 60 + 900]
    assert r.summary()["mean_latency_s"] == pytest.approx(np.mean(r.latency))
    # per-question thresholds (a per-group classifier): the same paths, merged in question order
    each = replay_each(table, [(0.5, 0.5, 0.5), (0.95, 0.95, 0.95), (0.5, 0.5, 0.5)])
    alone = replay(table, [0.95] * 3)
    assert each.latency.tolist() == [r.latency[0], alone.latency[1], r.latency[2]]


def test_no_times_no_latency_and_bad_times_refused():
    table = timed_table()
    untimed = StageTable(table.scores, table.correct, table.mentor_tokens, table.intern_tokens, 2.0, 1.0)
    result = replay(untimed, [0.5] * 3)
    assert result.latency is None and result.mean_latency_s is None
    assert "mean_latency_s" not in result.summary()
    with pytest.raises(ValueError, match="seconds.judge has shape"):
        StageTable(
            table.scores,
            table.correct,
            table.mentor_tokens,
            table.intern_tokens,
            2.0,
            1.0,
            seconds=StageSeconds(np.zeros((3, 3)), np.zeros((3, 2)), np.zeros((3, 3))),
        )
    with pytest.raises(ValueError, match="finite and >= 0"):
        StageSeconds(np.full((1, 1), -1.0), np.zeros((1, 1)), np.zeros((1, 1)))


def record(seconds, insights=("", "a", "a b")):
    stages = [
        StageEntry(
            stage=t,
            mentor_tokens=[0, 8, 16][t],
            insights=insights[t],
            label=0,
            intern_tokens=3,
            features={"prompt": [1.0] * 17},
            seconds=None if seconds is None else seconds[t],
        )
        for t in range(3)
    ]
    return QuestionRecord("h", "Q", stages, budgets=[8, 16], intern_num_params=1.0)


def test_stage_seconds_from_records_judge_only_where_a_live_run_judges():
    phases = [
        {"mentor_generate": 0.0, "intern_score": 0.5, "classify": 0.1, "intern_generate": 2.0},
        {"mentor_generate": 1.0, "intern_score": 0.5, "classify": 0.1, "intern_generate": 2.5},
        {"mentor_generate": 0.0, "intern_score": 0.0, "classify": 0.0, "intern_generate": 2.5},
    ]
    # stage 2 adds nothing to stage 1 (the mentor had finished): not judged again, no classifier time
    s = stage_seconds([record(phases, insights=("", "a", "a"))], classifier_share=0.01)
    np.testing.assert_allclose(s.mentor, [[0.0, 1.0, 0.0]])
    np.testing.assert_allclose(s.judge, [[0.61, 0.61, 0.0]])
    np.testing.assert_allclose(s.answer, [[2.0, 2.5, 2.5]])
    # one record without times: the table has none (no made-up latency)
    assert stage_seconds([record(phases), record(None)]) is None


# --- the cascade records every question's own phases ---------------------------------------------------
def test_each_request_and_stage_carries_its_share_of_every_call(ticking):
    mentor = TickingBackend(ticking, params=32, script_len={"short": 30})
    intern = TickingBackend(ticking, default_len=7, params=7)
    # LengthClassifier: longer prompts look sufficient; "a b c" stops at stage 2, "short" never does
    cascade = Cascade(
        Role(mentor, params=32),
        Role(intern, params=7),
        TandemPolicy([0.5, 0.9, 0.5, 0.5]),
        (100, 500, 1000),
        LengthClassifier(200),
        progress=False,
    )
    results = cascade.run([q("a b c"), q("short")])
    long_run, short = results
    assert long_run.cost.stop_stage == 2 and long_run.cost.stopped_early
    # "a b c": mentor stages 1, 2; scored stages 0, 1, 2; one answer
    assert long_run.cost.times.mentor_generate == 2 * GENERATE_TICK
    assert long_run.cost.times.intern_score == 3 * SCORE_TICK and long_run.cost.scored_stages == 3
    assert long_run.cost.times.intern_generate == GENERATE_TICK
    assert long_run.cost.times.classify == 0.0  # the ticking clock stands still outside backends
    # "short": its mentor finished within stage 1, so stages 2, 3 add nothing: not generated, not rescored
    assert short.cost.times.mentor_generate == GENERATE_TICK and short.cost.scored_stages == 2
    for r in results:
        per_stage = PhaseTimes()
        for st in r.stages:
            per_stage.add(st.times)
        assert per_stage == r.cost.times  # the stages' own seconds add up to the request's
        assert r.cost.latency_s == r.cost.times.total
        assert r.stages[r.cost.stop_stage].times.intern_generate == GENERATE_TICK


def test_features_recorded_for_analysis_are_outside_the_judgment(ticking, monkeypatch):
    """A trace or collect records f_t over every span; only the classifier's is part of the judgment
    (a run that records nothing computes no other), so recording never inflates a latency."""
    from tandem_lm_eval.cascade import stages

    real = stages.features_of

    def ticking_features(scores, span):
        ticking.tick(1, 0.01)
        return real(scores, span)

    monkeypatch.setattr(stages, "features_of", ticking_features)

    def run(all_spans):
        ticking.now = 0.0  # both runs from the same start: the same float sums
        mentor = TickingBackend(ticking, params=32, script_len={"short": 30})
        intern = TickingBackend(ticking, default_len=7, params=7)
        policy = TandemPolicy([0.5, 0.9, 0.5, 0.5])
        cascade = Cascade(
            Role(mentor, params=32),
            Role(intern, params=7),
            policy,
            (100, 500, 1000),
            LengthClassifier(200),
            progress=False,
        )
        cascade.all_feature_spans = all_spans
        return cascade.run([q("a b c")])[0]

    plain, recorded = run(False), run(True)
    assert len(plain.stages[1].features_by_span) == 1 < len(recorded.stages[1].features_by_span)
    assert recorded.cost.times == plain.cost.times
    assert plain.cost.times.classify == pytest.approx(0.01 * plain.cost.scored_stages)


def test_explore_answers_by_stage_in_calls_of_a_live_runs_size(ticking):
    mentor = TickingBackend(ticking, params=32)
    intern = TickingBackend(ticking, default_len=7, params=7)
    cascade = Cascade(
        Role(mentor, params=32), Role(intern, params=7), make_policy("fixed:2"), (8, 16), progress=False
    )
    questions = [q(f"question {i}") for i in range(3)]
    together = cascade.explore(questions)
    assert [len(c) for c in intern.generate_calls] == [9]  # 3 questions x 3 stages in one call
    intern.generate_calls.clear()
    by_stage = cascade.explore(questions, answers_by_stage=True)
    assert [len(c) for c in intern.generate_calls] == [3, 3, 3]
    for explored in (together, by_stage):
        for e in explored:
            assert [o.record.times.intern_generate for o in e.stages] == [GENERATE_TICK] * 3
            assert [o.record.times.mentor_generate for o in e.stages] == [0.0, GENERATE_TICK, GENERATE_TICK]
            assert [o.record.to_json()["seconds"]["intern_score"] for o in e.stages] == [SCORE_TICK] * 3


def test_replayed_latency_equals_the_live_run_with_scripted_backends(ticking):
    """Every policy: a live cascade's per-question latency == the replay of an explore of the same
    questions (the same phases, each with its own recorded share)."""
    from tandem_lm_eval.data.records import stage_entry
    from tandem_lm_eval.judgment.features import DEFAULT_SPAN

    questions = [q("a b c"), q("short"), q("one two three four five six seven")]
    script = {"short": 30}
    budgets = (100, 500, 1000)

    def cascade(policy, classifier=None):
        mentor = TickingBackend(ticking, params=32, script_len=script)
        intern = TickingBackend(ticking, default_len=7, params=7)
        return Cascade(
            Role(mentor, params=32), Role(intern, params=7), policy, budgets, classifier, progress=False
        )

    explored = cascade(make_policy("fixed:3")).explore(questions, answers_by_stage=True)
    records = [
        QuestionRecord(
            f"q{i}",
            "Q",
            [
                stage_entry(o.record, answer=o.answer, intern_tokens=o.intern_tokens, label=0)
                for o in e.stages
            ],
            budgets=list(budgets),
            intern_num_params=7.0,
        )
        for i, e in enumerate(explored)
    ]
    rows = row_table(records, DEFAULT_SPAN)  # what the live cascade reads without a classifier card
    clf = LengthClassifier(200)
    table = stage_table(records, lambda r: clf.sufficiency(r.X), rows, mentor_params=32.0)
    thresholds = [0.5, 0.9, 0.5, 0.5]
    tau0 = float(np.sort(table.scores[:, 0])[-2:].mean())  # the router keeps the longest question alone
    live = {
        "tandem": cascade(TandemPolicy(thresholds), clf).run(questions),
        "fixed:2": cascade(make_policy("fixed:2")).run(questions),
        "intern_only": cascade(make_policy("intern_only")).run(questions),
        "route": cascade(make_policy("route", [tau0]), clf).run(questions),
    }
    replayed = {
        "tandem": replay(table, thresholds),
        "fixed:2": fixed_stage(table, 2),
        "intern_only": fixed_stage(table, 0),
        "route": route(table, tau0),
    }
    assert {r.cost.stop_stage for r in live["tandem"]} == {2, 1}  # early stops and a finished mentor
    assert sum(r.cost.stop_stage == 0 for r in live["route"]) == 1  # the router kept one question
    for name, results in live.items():
        assert replayed[name].stage.tolist() == [r.cost.stop_stage for r in results], name
        assert replayed[name].latency.tolist() == [r.cost.latency_s for r in results], name
        assert replayed[name].judgment.tolist() == [r.cost.times.judgment for r in results], name


# --- a run store: served outputs bring the seconds they took ------------------------------------------
def stored_cascade(ticking, store_path):
    from tandem_lm_eval.store.run_store import RunStore
    from tandem_lm_eval.store.stored_backend import StoredBackend

    store = RunStore(store_path)
    mentor = StoredBackend(TickingBackend(ticking, params=32, script_len={"short": 30}), store, "mentor", {})
    intern = StoredBackend(TickingBackend(ticking, default_len=7, params=7), store, "intern", {})
    policy = TandemPolicy([0.5, 0.9, 0.5, 0.5])
    return Cascade(
        Role(mentor, params=32),
        Role(intern, params=7),
        policy,
        (100, 500, 1000),
        LengthClassifier(200),
        progress=False,
    )


def phase_times(result):
    return result.cost.times, [st.times for st in result.stages]


def test_outputs_served_by_the_run_store_bring_the_seconds_they_took(ticking, tmp_path):
    """A rerun over the same store computes nothing, and every request reports the seconds its outputs
    took when they were computed (as it reports their tokens), not the time to read them back; in a
    call with both, the computed requests share the inner call's time and the served ones bring theirs."""
    store = tmp_path / "store.sqlite"
    first = stored_cascade(ticking, store).run([q("a b c"), q("short")])
    assert all(r.cost.latency_s > 0 for r in first)
    before = ticking.now
    cascade = stored_cascade(ticking, store)
    again = cascade.run([q("a b c"), q("short")])
    assert ticking.now == before  # nothing computed
    assert cascade.mentor.counts.computed == cascade.intern.counts.computed == 0
    assert [phase_times(r) for r in again] == [phase_times(r) for r in first]

    cascade = stored_cascade(ticking, store)
    mixed = cascade.run([q("a b c"), q("x y z"), q("short")])  # one new question among the stored ones
    assert cascade.mentor.counts.generations_computed == 2  # its stages 1 and 2
    assert [phase_times(r) for r in (mixed[0], mixed[2])] == [phase_times(r) for r in first]
    new = mixed[1].cost.times
    assert (new.mentor_generate, new.intern_score, new.intern_generate) == (
        2 * GENERATE_TICK,
        3 * SCORE_TICK,
        GENERATE_TICK,
    )


def test_outputs_stored_without_seconds_count_the_read_and_say_so(ticking, tmp_path, caplog):
    import sqlite3

    store = tmp_path / "store.sqlite"
    stored_cascade(ticking, store).run([q("a b c")])
    with sqlite3.connect(store) as conn:  # as an earlier version wrote them: meta without seconds
        conn.execute("UPDATE entries SET meta = '{}'")
    again = stored_cascade(ticking, store).run([q("a b c")])
    assert again[0].cost.latency_s == 0.0  # the ticking clock stands still while the store is read
    assert "stored without the seconds they took" in caplog.text


# --- the leaderboard ----------------------------------------------------------------------------------
def entry(name, mode, latency, judgment=None, task="t"):
    return BoardEntry(name, mode, task, "acc", 10, 0.5, 1.0, 1.0, 1.0, "live", latency, judgment)


def test_leaderboard_latency_and_speedup_against_the_mentor():
    entries = [
        entry("Intern", "intern_only", 8.62),
        entry("Mentor", "mentor_only", 22.67),
        entry("Tandem", "tandem", 12.64, judgment=0.2),
        entry("Untimed", "fixed:1", None),
        entry("Alone", "intern_only", 1.0, task="other"),  # no mentor row on this task
    ]
    rows = {r["name"]: r for r in json.loads(to_json(entries))["rows"]}
    # the paper's Table 13: 2.6x, 1.0x, 1.8x
    assert rows["Intern"]["speedup_vs_mentor"] == pytest.approx(22.67 / 8.62)
    assert round(rows["Intern"]["speedup_vs_mentor"], 1) == 2.6
    assert rows["Mentor"]["speedup_vs_mentor"] == 1.0
    assert round(rows["Tandem"]["speedup_vs_mentor"], 1) == 1.8
    assert rows["Tandem"]["mean_latency_s"] == 12.64
    assert rows["Tandem"]["judgment_share"] == pytest.approx(0.2 / 12.64)
    assert rows["Untimed"]["speedup_vs_mentor"] is None and rows["Alone"]["speedup_vs_mentor"] is None
    md = to_markdown(entries)
    assert "| latency (s/question) | speed-up vs mentor | judgment share |" in md
    assert "| 12.640 | 1.79x | 1.58% |" in md
    csv_rows = to_csv(entries).splitlines()
    assert csv_rows[0].endswith("mean_latency_s,speedup_vs_mentor,mean_judgment_s,judgment_share")
    assert csv_rows[3].split(",")[-4:] == [
        "12.640000",
        f"{22.67 / 12.64:.6f}",
        "0.200000",
        f"{0.2 / 12.64:.6f}",
    ]


# --- through lm-eval, real clock ------------------------------------------------------------------------
@pytest.mark.slow
def test_per_sample_latency_in_lm_eval_results_equals_the_traced_phases(
    tmp_path, tiny_model_dir, tiny_classifier_dir
):
    trace = tmp_path / "trace.jsonl"
    model_args = (
        f"mentor={tiny_model_dir},intern={tiny_model_dir},classifier={tiny_classifier_dir},"
        f"budgets=[8,16],mentor_num_params=2e9,dtype=float32,trace_path={trace}"
    )
    proc = lm_eval(arith_args(model_args, limit=3), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, samples = results_and_samples(tmp_path)
    res = data["results"]["tandem_test_arith"]
    assert res["tandem_latency_s,none"] > 0 and "tandem_judgment_s,none" in res
    assert data["higher_is_better"]["tandem_test_arith"]["tandem_latency_s"] is False
    assert "tandem_latency_s" in proc.stdout  # in the printed table
    traced = {r.doc_id: r for r in load_records([trace])}
    rows = samples["tandem_test_arith"]
    assert len(rows) == 3
    for row in rows:
        r = traced[row["doc_id"]]
        # the sample's latency is the traced request's phases, which are its stages' own seconds
        assert row["tandem_latency_s"] == pytest.approx(sum(r.cost["times"].values()), rel=1e-12)
        by_stage = sum(sum(s.seconds.values()) for s in r.stages)
        assert row["tandem_latency_s"] == pytest.approx(by_stage, rel=1e-9)
        judged = r.cost["times"]["intern_score"] + r.cost["times"]["classify"]
        assert row["tandem_judgment_s"] == pytest.approx(judged, rel=1e-12)
    summary = data["config"]["tandem"]["summary"]
    assert summary["mean_latency_s"] == pytest.approx(np.mean([row["tandem_latency_s"] for row in rows]))
    assert 0 < summary["judgment"]["share_of_time"] < 1
