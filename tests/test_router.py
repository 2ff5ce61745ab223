"""``mode=router``: the intern alone or the mentor alone, decided from the intern's reading of the
question. Live in the cascade, replayed from collect records with the mentor's own answers
(``collect --mentor-answers``), replay == live through ``compare``, and ``fit --policy router``'s labels."""

import json

import numpy as np
import pytest
from fakes import ScriptedBackend
from test_agreement import assert_rows_agree, live_samples
from test_compare import TASK, config_head, grouped_router

from tandem_lm_eval.backends.base import Message
from tandem_lm_eval.calibration.replay import MentorAnswers, StageTable, StageTokens, router
from tandem_lm_eval.cascade.policies import RouterPolicy, make_policy
from tandem_lm_eval.cascade.prompts import Question
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.cli.commands import run_subcommand
from tandem_lm_eval.cost.flops import tflops
from tandem_lm_eval.judgment.card import ClassifierCard
from tandem_lm_eval.judgment.classifier import Classifier
from tandem_lm_eval.cascade.roles import Role


class ByQuestion(Classifier):
    """s_0 of each scored row, in order (``values``)."""

    kind = "by_question"

    def __init__(self):
        self.card = ClassifierCard()

    def sufficiency(self, X, groups=None):
        return self.values[: len(X)]


def q(text):
    return Question(messages=(Message("user", text),))


def test_router_sends_each_question_to_one_model_and_pays_the_reading():
    mentor, intern = ScriptedBackend(default_len=9, params=32), ScriptedBackend(default_len=7, params=7)
    clf = ByQuestion()
    clf.values = np.array([0.9, 0.1])
    cascade = Cascade(Role(mentor, params=32), Role(intern, params=7), RouterPolicy([0.5]), (10, 20), clf, progress=False)
    easy, hard = cascade.run([q("easy one"), q("hard one")])
    # the intern read both questions once (one scoring call), then answered only the easy one
    assert len(intern.score_calls) == 1 and len(intern.score_calls[0]) == 2
    assert [len(c) for c in intern.generate_calls] == [1]
    assert len(mentor.generate_calls) == 1 and len(mentor.generate_calls[0]) == 1  # the hard one, itself
    assert easy.cost.mentor_tokens == 0 and easy.cost.intern_tokens == 7 and easy.cost.stopped_early
    assert hard.cost.mentor_tokens == 9 and hard.cost.intern_tokens == 0 and not hard.cost.stopped_early
    # Eq. 12: the intern alone, or the mentor alone (no intern term)
    assert easy.cost.tflops == pytest.approx(tflops(32, 7, 0, 7))
    assert hard.cost.tflops == pytest.approx(2e-12 * 32 * 9)
    # both paid the intern's reading of the question: in the passes, not in Eq. 12
    reading = [s.num_tokens for s in intern.score(list(intern.score_calls[0]))]
    assert hard.cost.intern_scored_tokens == reading[1] and hard.cost.scored_stages == 1
    assert hard.cost.full_pass_tflops == pytest.approx(2e-12 * (32 * (5 + 9) + 7 * reading[1]))
    assert easy.cost.full_pass_tflops == pytest.approx(2e-12 * 7 * (reading[0] + 5 + 7))
    assert hard.stages[0].score == pytest.approx(0.1)


def test_router_policy_needs_tau0_and_a_mentor():
    with pytest.raises(ValueError, match="needs thresholds"):
        make_policy("router")
    with pytest.raises(ValueError, match="needs a mentor"):
        Cascade(None, ScriptedBackend(), RouterPolicy([0.5]), (10,), ByQuestion(), progress=False)


def test_router_replay_on_a_hand_made_table():
    table = StageTable(
        scores=[[0.9, 0.5], [0.2, 0.5], [0.7, 0.5]],
        correct=[[True, True], [False, True], [False, False]],
        mentor_tokens=[[0, 10], [0, 10], [0, 10]],
        intern_tokens=[[4, 5], [6, 7], [8, 9]],
        mentor_params=32.0,
        intern_params=7.0,
        tokens=StageTokens(
            prompt=[[12, 22]] * 3,
            mentor_prompt=np.zeros((3, 2)),
            mentor_cached=np.zeros((3, 2)),
            mentor_regenerated=np.zeros((3, 2)),
            censored=[[False, False], [False, False], [True, False]],
            repeat=np.zeros((3, 2), dtype=bool),
        ),
    )
    answers = MentorAnswers(
        correct=[False, True, True],
        tokens=[30, 40, 50],
        regenerated=[0, 0, 0],
        prompt=[15, 15, 15],
        cached=[0, 0, 0],
        censored=[False, True, False],
    )
    r = router(table, answers, 0.6)  # questions 0 and 2 to the intern, 1 to the mentor
    assert r.early.tolist() == [True, False, True] and r.correct.tolist() == [True, True, False]
    assert r.mentor_paid.tolist() == [0, 40, 0] and r.intern_tokens.tolist() == [4, 0, 8]
    assert r.tflops.tolist() == pytest.approx([tflops(32, 7, 0, 4), 2e-12 * 32 * 40, tflops(32, 7, 0, 8)])
    assert r.full_pass_tflops[1] == pytest.approx(2e-12 * (32 * (15 + 40) + 7 * 12))
    assert r.full_pass_tflops[0] == pytest.approx(2e-12 * 7 * (12 + 12 + 4))
    assert r.censored.tolist() == [False, True, True] and r.accuracy_uncensored == 1.0
    with pytest.raises(ValueError, match="mentor answers for 2 questions"):
        router(table, MentorAnswers([1, 0], [1, 1], [0, 0], [0, 0], [0, 0], [0, 0]), 0.5)


@pytest.mark.slow
def test_router_replay_equals_live_and_fit_labels(tmp_path, tiny_model_dir):
    # documents 0 and 1 have τ_0 = 0 (the intern alone), document 2 τ_0 = 1 (the mentor alone)
    clf = grouped_router(tmp_path / "router", {"5": 0.0, "17": 0.0}, fallback_tau0=1.0)
    config = tmp_path / "compare.toml"
    config.write_text(
        config_head(tiny_model_dir)
        + f"""
[[rows]]
name = "Router"
mode = "router"
model_args = "classifier={clf}"
[[rows]]
name = "Router (live)"
mode = "router"
model_args = "classifier={clf}"
live = true
[[rows]]
name = "Mentor"
mode = "mentor_only"
"""
    )
    assert run_subcommand(["compare", str(config)]) == 0
    out = tmp_path / "out"
    board = {r["name"]: r for r in json.loads((out / "leaderboard.json").read_text())["rows"]}
    live = live_samples(out, f"{TASK}-router-*.jsonl")
    assert [s["mentor_tokens"] > 0 for s in live] == [False, False, True]
    assert [s["intern_tokens"] > 0 for s in live][2] is False
    assert_rows_agree(board["Router"], board["Router (live)"], rel=1e-9)
    # the replayed row's latency is the collect's timing; the live one's outputs came from the run store
    assert board["Router"]["latency_from"] == "collect" and board["Router (live)"]["latency_from"] == "store"
    # the collect recorded one mentor-only answer per question: the live mentor_only row's
    from tandem_lm_eval.calibration.fitting import router_rows
    from tandem_lm_eval.calibration.tables import row_table
    from tandem_lm_eval.data.records import load_records

    (records_file,) = (out / "records").glob(f"{TASK}-*.jsonl")
    records = load_records([records_file])
    assert all(r.mentor_answer is not None and r.mentor_answer.label is not None for r in records)
    mentor_live = live_samples(out, f"{TASK}-mentor_only-*.jsonl")
    assert [r.mentor_answer.tokens for r in records] == [s["mentor_tokens"] for s in mentor_live]
    assert [float(r.mentor_answer.label) for r in records] == [s["metric"] for s in mentor_live]
    # fit --policy router's labels: 1 unless only the mentor is right
    rows = router_rows(row_table(records, "question_insights"), records)
    expected = [int(bool(r.stages[0].label) or not r.mentor_answer.label) for r in records]
    assert rows.stage.tolist() == [0, 0, 0] and rows.y.tolist() == expected


def test_fit_policy_router_learns_when_only_the_mentor_is_right_and_replays_the_router():
    from dataclasses import replace

    from test_fitting import make_records, settings

    from tandem_lm_eval.calibration.fitting import fit_records, split_questions
    from tandem_lm_eval.calibration.objectives import Objective, choose_route_threshold
    from tandem_lm_eval.calibration.tables import TableError, mentor_answers, row_table, stage_table
    from tandem_lm_eval.data.records import MentorAnswer

    records = make_records(200, seed=1)
    with pytest.raises(TableError, match="collect them with --mentor-answers"):
        fit_records(records, settings("logistic", policy="router"))
    # the mentor is right on every other question, 30 tokens each
    records = [
        replace(
            r, mentor_answer=MentorAnswer(text="42", tokens=30, label=int(i % 2 == 0), finish_reason="stop")
        )
        for i, r in enumerate(records)
    ]
    clf, report = fit_records(records, settings("logistic", policy="router"))
    assert clf.card.policy == "router" and report["policy"] == "router"
    val_mask = split_questions(records, 0.3, 42)
    train = [r for r, v in zip(records, val_mask) if not v]
    val = [r for r, v in zip(records, val_mask) if v]
    assert clf.card.training["train_rows"] == len(train)  # stage-0 rows only
    # τ_0 is the objective's choice replaying the router (the mentor's own answers) on validation
    table = stage_table(val, lambda r: clf.sufficiency(r.X), row_table(val, "question_insights"))
    answers = mentor_answers(val)
    expected = choose_route_threshold(
        table, Objective("max_accuracy"), rule=lambda t, tau: router(t, answers, tau)
    )
    assert tuple(clf.card.thresholds) == expected.thresholds
    # the saved front is the router replayed at every τ_0 of the grid (mentor answers, not the last stage)
    front = clf.card.threshold_front
    assert len(front) == len(expected.grid)
    for point, tau in zip(front, expected.grid):
        r = router(table, answers, tau)
        assert point["accuracy"] == pytest.approx(r.accuracy) and point["mean_tflops"] == pytest.approx(
            r.mean_tflops
        )
