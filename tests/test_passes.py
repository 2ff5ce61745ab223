"""All-passes TFLOPs (cost/passes.py) beside Eq. 12: the pure function on a hand-counted request, the
ledger and the live cascade filling it, the replay counting the same passes, and censored answers."""

import numpy as np
import pytest
from fakes import ScriptedBackend, render_words

from tandem_lm_eval.backends.base import Message
from tandem_lm_eval.calibration.replay import StageTable, StageTokens, fixed_stage, replay
from tandem_lm_eval.cascade.policies import TandemPolicy, make_policy
from tandem_lm_eval.cascade.prompts import Question
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.cost.flops import tflops
from tandem_lm_eval.cost.ledger import RequestCost
from tandem_lm_eval.cost.passes import PassTokens, full_pass_tflops
from tandem_lm_eval.judgment.card import ClassifierCard
from tandem_lm_eval.judgment.classifier import Classifier
from tandem_lm_eval.cascade.roles import Role


def test_full_pass_on_a_hand_counted_request():
    # a 7e9 intern, a 32e9 mentor. The mentor: two calls, prompts of 40 and 40 + 100 (its prefix) tokens,
    # 30 of the second served from a prefix cache; it generated 100 + 50 tokens. The intern: scored x_0
    # (20 tokens) and x_1 (20 + 100), answered from x_1 (a 120-token prompt) with 12 tokens.
    tokens = PassTokens(
        mentor_prompt=40 + 140,
        mentor_generated=150,
        mentor_cached=30,
        intern_scored=20 + 120,
        intern_prompt=120,
        intern_generated=12,
    )
    out = full_pass_tflops(32e9, 7e9, tokens)
    mentor_computed = 40 + 140 - 30 + 150  # 300
    intern_computed = 20 + 120 + 120 + 12  # 272
    assert (mentor_computed, intern_computed) == (300, 272)
    assert out.computed == pytest.approx(2e-12 * (32e9 * 300 + 7e9 * 272))
    assert out.cached == pytest.approx(2e-12 * 32e9 * 30)
    # Eq. 12 of the same request counts the decoded tokens only: less
    assert out.computed > tflops(32e9, 7e9, 150, 12)
    # elementwise over arrays, and every count must be >= 0
    arr = full_pass_tflops(1.0, 1.0, PassTokens(mentor_prompt=np.array([1.0, 2.0]), intern_generated=1))
    assert arr.computed.tolist() == pytest.approx([2 * 2e-12, 3 * 2e-12])
    with pytest.raises(ValueError, match="intern_scored must be finite and >= 0"):
        full_pass_tflops(1.0, 1.0, PassTokens(intern_scored=-1))
    # a cache hit never counts more than the prompt it was part of
    capped = full_pass_tflops(1e9, 0.0, PassTokens(mentor_prompt=10, mentor_cached=50))
    assert capped.computed == 0.0 and capped.cached == pytest.approx(2e-12 * 1e9 * 10)


def test_ledger_finalize_fills_full_pass():
    cost = RequestCost(mentor_tokens=150, mentor_regenerated_tokens=5, intern_tokens=12)
    cost.mentor_prompt_tokens, cost.intern_scored_tokens = 180, 140
    cost.add_intern_answer_call(prompt_tokens=120, cached_prompt_tokens=None)
    cost.finalize(32e9, 7e9)
    assert cost.full_pass_tflops == pytest.approx(2e-12 * (32e9 * (180 + 155) + 7e9 * (140 + 120 + 12)))
    assert cost.tflops == pytest.approx(tflops(32e9, 7e9, 150, 12, 5))
    assert cost.cached_pass_tflops == 0.0


def q(text):
    return Question(messages=(Message("user", text),))


class Everything(Classifier):
    """A classifier that never stops early (s = 0 everywhere): the fallback scores every stage."""

    kind = "never"

    def __init__(self):
        self.card = ClassifierCard()

    def sufficiency(self, X, groups=None):
        return np.zeros(len(X))


def test_live_cascade_counts_every_pass():
    # the scripted backends: every generate call reports 5 prompt tokens; a scoring pass reads the
    # rendered prompt (render_words); the intern answers 7 tokens, the mentor writes its whole budget
    mentor, intern = ScriptedBackend(params=32), ScriptedBackend(default_len=7, params=7)
    cascade = Cascade(
        Role(mentor, params=32),
        Role(intern, params=7),
        TandemPolicy([0.5] * 3),
        (10, 20),
        Everything(),
        progress=False,
    )
    (res,) = cascade.run([q("a b c")])
    scored = sum(len(render_words(p)) for call in intern.score_calls for p in call)
    assert len(mentor.generate_calls) == 2 and len(intern.score_calls) == 3
    assert res.cost.intern_scored_tokens == scored
    expected = 2e-12 * (32 * (5 + 5 + 20) + 7 * (scored + 5 + 7))
    assert res.cost.full_pass_tflops == pytest.approx(expected)
    # the stage records keep the mentor calls' prefill, for a replay to count it as well
    assert [s.mentor_prompt_tokens for s in res.stages] == [0, 5, 5]
    # the scripted intern stops by itself: not censored; an answer cut at its budget is
    assert res.cost.censored is False
    short = Cascade(
        ScriptedBackend(params=32),
        ScriptedBackend(default_len=50, params=7),
        make_policy("fixed:1"),
        (10,),
        progress=False,
    )
    (cut,) = short.run([Question(messages=(Message("user", "x y"),), max_gen_toks=4)])
    assert cut.cost.censored is True and cut.answer_finish_reason == "length"


def table_with_tokens(**over):
    # 2 questions x 3 stages
    base = dict(
        scores=[[0.1, 0.9, 0.2], [0.1, 0.2, 0.3]],
        correct=[[False, True, True], [False, False, True]],
        mentor_tokens=[[0, 10, 20], [0, 10, 20]],
        intern_tokens=[[4, 5, 6], [7, 8, 9]],
        mentor_params=100.0,
        intern_params=10.0,
    )
    tokens = StageTokens(
        prompt=[[3, 13, 23], [3, 13, 23]],
        mentor_prompt=[[0, 2, 12], [0, 2, 12]],
        mentor_cached=[[0, 0, 0], [0, 0, 0]],
        mentor_regenerated=[[0, 0, 10], [0, 0, 10]],
        censored=[[False, True, False], [False, False, True]],
        repeat=[[False, False, False], [False, False, False]],
    )
    base.update(over)
    return StageTable(**base, tokens=tokens)


def test_replay_counts_the_same_passes_and_regenerated_tokens():
    table = table_with_tokens()
    r = replay(table, [0.5, 0.5, 0.5])
    # question 0 stops at stage 1 (s_1 = 0.9): the mentor's first call, judged stages 0-1, answer from 1
    # question 1 falls back to the argmax (stage 2) after the mentor wrote both stages (10 regenerated)
    assert r.stage.tolist() == [1, 2]
    assert r.tflops.tolist() == pytest.approx(
        [tflops(100, 10, 10, 5), tflops(100, 10, 20, 9, 10)]  # the hosted-chat tokens, as live counts them
    )
    q0 = 2e-12 * (100 * (2 + 10) + 10 * ((3 + 13) + 13 + 5))
    q1 = 2e-12 * (100 * (2 + 12 + 20 + 10) + 10 * ((3 + 13 + 23) + 23 + 9))
    assert r.full_pass_tflops.tolist() == pytest.approx([q0, q1])
    assert r.censored.tolist() == [True, True] and r.censored_count == 2 and r.accuracy_uncensored is None
    f = fixed_stage(table, 2)  # no judgment: no scoring pass in the count
    assert f.full_pass_tflops[0] == pytest.approx(2e-12 * (100 * (2 + 12 + 20 + 10) + 10 * (23 + 6)))
    assert f.censored.tolist() == [False, True] and f.accuracy_uncensored == 1.0
    # a table without StageTokens reports neither
    bare = StageTable(**{k: v for k, v in table.__dict__.items() if k not in ("tokens", "seconds")})
    assert replay(bare, [0.5] * 3).full_pass_tflops is None and replay(bare, [0.5] * 3).censored is None


def test_live_rows_say_where_their_latency_comes_from_and_count_censored_answers():
    from tandem_lm_eval.workflows.compare import live_entry
    from tandem_lm_eval.workflows.compare_config import CompareRow
    from tandem_lm_eval.workflows.leaderboard import passes_markdown

    def sample(doc_id, metric, censored, served):
        return {
            "doc_id": doc_id,
            "metric": metric,
            "mentor_tokens": 10.0,
            "intern_tokens": 5.0,
            "tflops": 1.0,
            "full_pass_tflops": 1.5 + doc_id,
            "censored": censored,
            "latency_s": 0.5,
            "judgment_s": 0.1,
            "store_served": served,
        }

    row = CompareRow("Fixed", "fixed:1")
    fresh = live_entry(
        row, "t", [sample(0, 1.0, 0.0, 0), sample(1, 0.0, 1.0, 0), sample(2, 0.0, 0.0, 0)], "acc"
    )
    assert fresh.latency_from == "measured" and fresh.censored == 1
    assert fresh.accuracy_uncensored == pytest.approx(0.5) and fresh.mean_full_pass_tflops == pytest.approx(
        2.5
    )
    served = live_entry(row, "t", [sample(0, 1.0, 0.0, 4)], "acc")
    assert served.latency_from == "store"
    # samples cached by an earlier version have neither: nothing is claimed
    old = {k: v for k, v in sample(0, 1.0, 0.0, 0).items() if k not in ("censored", "full_pass_tflops")}
    legacy = live_entry(row, "t", [old], "acc")
    assert (
        legacy.censored is None
        and legacy.mean_full_pass_tflops is None
        and legacy.accuracy_uncensored is None
    )
    table = passes_markdown([fresh, served])
    assert "| Fixed | 1.000 | 2.500 | 1 of 3 | 50.00 | yes | measured |" in table
    assert "| store |" in table


def test_per_sample_metrics_carry_full_pass_and_censored():
    from tandem_lm_eval.harness.reporting import HIGHER_IS_BETTER, per_doc_metrics

    cut = RequestCost(mentor_tokens=10, intern_tokens=4, tflops=1.0, full_pass_tflops=2.5, censored=True)
    whole = RequestCost(mentor_tokens=10, intern_tokens=4, tflops=1.0, full_pass_tflops=3.5)
    one = per_doc_metrics([cut.as_dict()])
    assert one["tandem_full_pass_tflops"] == 2.5 and one["tandem_censored"] == 1.0
    # repeats: the passes add up, the censored flag is the share of the document's answers
    two = per_doc_metrics([cut.as_dict(), whole.as_dict()])
    assert two["tandem_full_pass_tflops"] == 6.0 and two["tandem_censored"] == 0.5
    assert (
        HIGHER_IS_BETTER["tandem_full_pass_tflops"] is False and HIGHER_IS_BETTER["tandem_censored"] is None
    )
