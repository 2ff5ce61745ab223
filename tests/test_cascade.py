"""Cascade units with a scripted backend: batching, continuation, stop rule, fallback, accounting."""

import numpy as np
import pytest
from fakes import LengthClassifier, ScriptedBackend

from tandem_lm_eval.backends.base import Message
from tandem_lm_eval.cascade.policies import TandemPolicy, make_policy
from tandem_lm_eval.cascade.prompts import INSIGHTS_HEADER, MENTOR_SYSTEM_PROMPT, Question
from tandem_lm_eval.cascade.roles import Role
from tandem_lm_eval.cascade.stages import Cascade


def q(text, **kw):
    return Question(messages=(Message("user", text),), **kw)


def run(policy, questions, mentor=None, intern=None, classifier=None, budgets=(100, 500, 1000)):
    mentor = mentor or ScriptedBackend(params=32)
    intern = intern or ScriptedBackend(default_len=7, params=7)
    cascade = Cascade(
        Role(mentor, params=32), Role(intern, params=7), policy, budgets, classifier, progress=False
    )
    return cascade.run(questions), mentor, intern


def test_mentor_continues_and_never_regenerates():
    questions = [q(f"question {i}") for i in range(5)]
    results, mentor, _ = run(make_policy("fixed:3"), questions)
    # one batched mentor call per stage, all five questions in it
    assert [len(c) for c in mentor.generate_calls] == [5, 5, 5]
    stage_news = [[r.max_new_tokens for r in c] for c in mentor.generate_calls]
    assert stage_news == [[100] * 5, [400] * 5, [500] * 5]
    for before, call in zip(mentor.generate_calls, mentor.generate_calls[1:]):
        for prev, req in zip(before, call):
            # the continuation carries exactly what the previous stage produced
            assert (
                req.prefix is not None
                and len(req.prefix.token_ids)
                == len(prev.prefix.token_ids if prev.prefix else ()) + prev.max_new_tokens
            )
    # every mentor token generated once: total generated = sum of L_L
    assert mentor.generated_total == sum(r.cost.mentor_tokens for r in results) == 5 * 1000
    assert all(r.cost.stop_stage == 3 and not r.cost.stopped_early for r in results)


def test_mentor_prompt_is_figure6_and_intern_prompt_is_question_plus_insights():
    results, mentor, intern = run(make_policy("fixed:1"), [q("What is 2+2?")])
    mp = mentor.generate_calls[0][0].prompt
    assert mp.messages[0].role == "system" and mp.messages[0].content == MENTOR_SYSTEM_PROMPT
    assert mp.messages[1].content == "What is 2+2?"
    answer_prompt = intern.generate_calls[0][0].prompt
    user = answer_prompt.messages[-1].content
    assert user.startswith("What is 2+2?\n\n" + INSIGHTS_HEADER + "\nw0 w1")
    assert results[0].stages[1].insights.startswith("w0 w1")


def test_stop_rule_and_stage_specific_thresholds():
    # LengthClassifier: s = n_tokens / 200. question alone ~6 tokens, +100 words per 100 mentor tokens
    policy = TandemPolicy([0.5, 0.9, 0.5, 0.5])
    results, mentor, intern = run(policy, [q("a b c")], classifier=LengthClassifier(200))
    r = results[0]
    # s0 ~ 0.03 (< .5), s1 ~ 0.53 (< .9), s2 ~ 1.0 (> .5): stop at stage 2 with 500 mentor tokens
    assert r.cost.stop_stage == 2 and r.cost.stopped_early
    assert r.cost.mentor_tokens == 500
    assert len(mentor.generate_calls) == 2  # stage 3 never generated
    assert len(r.cost.stage_scores) == 3


def test_fallback_argmax_when_no_stage_passes():
    class Peak(LengthClassifier):
        def sufficiency(self, X, groups=None):  # highest at the 500-token stage, never above 0.95
            return np.where((X[:, -1] > 300) & (X[:, -1] < 700), 0.8, 0.3)

    results, mentor, _ = run(TandemPolicy([0.95] * 4), [q("x")], classifier=Peak())
    r = results[0]
    assert r.cost.stop_stage == 2 and not r.cost.stopped_early
    assert r.cost.mentor_tokens == 1000  # all stages were generated before falling back


def test_early_stop_at_stage_zero_uses_no_mentor():
    results, mentor, intern = run(
        TandemPolicy([0.0, 0.5, 0.5, 0.5]), [q("easy")], classifier=LengthClassifier()
    )
    assert results[0].cost.stop_stage == 0 and results[0].cost.mentor_tokens == 0
    assert mentor.generate_calls == []
    assert INSIGHTS_HEADER not in intern.generate_calls[0][0].prompt.messages[-1].content


def test_finished_mentor_is_not_called_again_and_scores_are_reused():
    mentor = ScriptedBackend(script_len={"short": 60}, params=32)
    results, mentor, intern = run(
        TandemPolicy([0.99] * 4), [q("short"), q("long")], mentor=mentor, classifier=LengthClassifier(5000)
    )
    short, long = results
    assert short.cost.mentor_tokens == 60 and long.cost.mentor_tokens == 1000
    assert [len(c) for c in mentor.generate_calls] == [2, 1, 1]
    # stages 2 and 3 of "short" have the same insights as stage 1: scored once, not three times
    scored = sum(len(c) for c in intern.score_calls)
    assert scored == 2 + 2 + 1 + 1
    assert short.cost.stage_scores[1] == short.cost.stage_scores[2] == short.cost.stage_scores[3]


def test_batches_mixed_stops_and_request_order():
    class ByQuestion(LengthClassifier):
        def sufficiency(self, X, groups=None):
            return np.where(X[:, -1] < 50, 0.0, 1.0)  # every question stops at stage 1

    questions = [q(f"q{i}") for i in range(4)]
    results, mentor, intern = run(TandemPolicy([0.5] * 4), questions, classifier=ByQuestion())
    assert [r.cost.stop_stage for r in results] == [1, 1, 1, 1]
    assert len(intern.generate_calls) == 1 and len(intern.generate_calls[0]) == 4
    assert [c.prompt.messages[-1].content.split("\n")[0] for c in intern.generate_calls[0]] == [
        "q0",
        "q1",
        "q2",
        "q3",
    ]


def test_cost_is_eq12_per_request():
    results, *_ = run(make_policy("fixed:1"), [q("z")])
    c = results[0].cost
    assert c.mentor_tokens == 100 and c.intern_tokens == 7
    assert c.tflops == pytest.approx(2e-12 * (32 * 100 + 7 * (100 + 7)))


def test_answer_uses_task_until_and_max_gen_toks():
    results, _, intern = run(make_policy("intern_only"), [q("z", until=("Question:",), max_gen_toks=5)])
    req = intern.generate_calls[0][0]
    assert req.stop == ("Question:",) and req.max_new_tokens == 5
    assert results[0].cost.intern_tokens == 5


def test_misconfigurations_fail_clearly():
    with pytest.raises(ValueError, match="needs a sufficiency classifier"):
        Cascade(ScriptedBackend(), ScriptedBackend(), TandemPolicy([0.5] * 4), (100, 500, 1000))
    with pytest.raises(ValueError, match="increasing"):
        Cascade(ScriptedBackend(), ScriptedBackend(), make_policy("fixed:1"), (500, 100))
    with pytest.raises(ValueError, match="needs a mentor"):
        Cascade(None, ScriptedBackend(), make_policy("fixed:1"), (100,))
    with pytest.raises(ValueError, match="empty prompt"):
        q("   ")


def test_explore_gives_features_and_an_answer_for_every_stage():
    mentor = ScriptedBackend(script_len={"short": 60}, params=32)
    intern = ScriptedBackend(default_len=7, params=7)
    cascade = Cascade(mentor, intern, make_policy("fixed:3"), (100, 500, 1000), progress=False)
    explored = cascade.explore([q("short"), q("long")])
    rows = [e.stages for e in explored]
    assert [len(r) for r in rows] == [4, 4]
    short, long = rows
    assert explored[0].mentor.finished and len(explored[1].mentor.token_ids) == 1000
    assert [o.mentor_tokens for o in long] == [0, 100, 500, 1000]
    assert [o.mentor_tokens for o in short] == [0, 60, 60, 60]
    assert all(o.features is not None and o.features.shape == (17,) for r in rows for o in r)
    # identical prompts (short's stages 1-3) are scored and answered once
    assert sum(len(c) for c in intern.score_calls) == 2 + 2 + 1 + 1
    assert len(intern.generate_calls) == 1 and len(intern.generate_calls[0]) == 4 + 2
    assert short[3].answer == short[1].answer and short[3].features is short[1].features
    # the mentor generated each token once
    assert mentor.generated_total == 60 + 1000


def test_api_prices_bill_every_call_including_resent_prefixes():
    from tandem_lm_eval.cost.pricing import TokenPrices

    mentor = ScriptedBackend(params=32)  # reports prompt_tokens=5 per call
    intern = ScriptedBackend(default_len=7, params=7)
    cascade = Cascade(
        Role(mentor, prices=TokenPrices(1.0, 10.0)),
        intern,
        make_policy("fixed:2"),
        (100, 500),
        progress=False,
    )
    (r,) = cascade.run([q("z")])
    # two mentor calls: 5 input + 100 output, then 5 input + 400 output; the intern is unpriced
    assert r.cost.usd == pytest.approx((5 * 1.0 + 100 * 10.0 + 5 * 1.0 + 400 * 10.0) / 1e6)
    (free,) = Cascade(
        ScriptedBackend(), ScriptedBackend(default_len=3), make_policy("fixed:1"), (10,), progress=False
    ).run([q("z")])
    assert free.cost.usd is None
