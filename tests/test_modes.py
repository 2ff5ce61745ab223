"""The leaderboard modes: mentor_only, budget_forcing:B, route, fixed:low|medium|high.

Units with scripted backends (costs by Eq. 12 computed by hand, the budget-forcing phases, both
routes), forced continuations on the real tiny model (transformers; vLLM when installed), and the
OpenAI-compatible backend's forced payloads against a stubbed transport.
"""

from __future__ import annotations

import importlib.util
import types

import numpy as np
import pytest
from fakes import ScriptedBackend

from tandem_lm_eval.backends.base import Backend, BackendError, Generation, GenerationRequest, Message, Prompt
from tandem_lm_eval.cascade.policies import (
    BudgetForcingPolicy,
    FixedStagePolicy,
    MentorOnlyPolicy,
    RoutePolicy,
    check_mode,
    make_policy,
)
from tandem_lm_eval.cascade.policies.mentor import PLAIN_CLOSE, THINKING_CLOSE
from tandem_lm_eval.cascade.prompts import MENTOR_SYSTEM_PROMPT, Question
from tandem_lm_eval.cascade.roles import Role
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.common.thinking import split_thinking
from tandem_lm_eval.cost.ledger import RequestCost
from tandem_lm_eval.harness.config import ConfigError, TandemConfig
from tandem_lm_eval.judgment.classifier import Classifier
from tandem_lm_eval.judgment.features import DEFAULT_SPAN

THETA_L, THETA_S = 32, 7  # toy |θL|, |θS|: Eq. 12 by hand below


def q(text, **kw):
    return Question(messages=(Message("user", text),), **kw)


def cascade(policy, mentor=None, intern=None, classifier=None, budgets=(100, 500, 1000)):
    return Cascade(
        Role(mentor, params=THETA_L),
        Role(intern, params=THETA_S),
        policy,
        budgets,
        classifier,
        progress=False,
    )


# --- the cost rule ------------------------------------------------------------------------------------
def test_a_mentor_answering_alone_pays_only_its_own_tokens():
    # paper Table 1, DeepSeek-32B on MATH: 2,560 tokens -> 163.84 TFLOPs
    alone = RequestCost(mentor_tokens=2560, intern_reads_mentor=False)
    alone.finalize(32e9, 7e9)
    assert alone.tflops == pytest.approx(163.84)
    # default unchanged: the intern reads the mentor's tokens (Eq. 12 as written)
    read = RequestCost(mentor_tokens=100, intern_tokens=20)
    read.finalize(32e9, 7e9)
    assert read.intern_reads_mentor and read.tflops == pytest.approx(2e-12 * (32e9 * 100 + 7e9 * 120))
    # the intern's own tokens still count when it does not read the mentor's
    own = RequestCost(mentor_tokens=100, intern_tokens=20, intern_reads_mentor=False)
    own.finalize(32e9, 7e9)
    assert own.tflops == pytest.approx(2e-12 * (32e9 * 100 + 7e9 * 20))
    assert RequestCost().as_dict()["intern_reads_mentor"] is True


# --- mentor_only -----------------------------------------------------------------------------------------
def test_mentor_only_answers_the_tasks_prompt_with_its_settings_and_eq12_cost():
    mentor = ScriptedBackend(script_len={"short": 37}, params=THETA_L)
    system = Message("system", "Answer with a number.")
    questions = [
        Question((system, Message("user", "short")), until=("Q:",), max_gen_toks=50, temperature=0.7, seed=3),
        q("long", max_gen_toks=50),  # the script runs past max_gen_toks: cut at 50
    ]
    results = cascade(make_policy("mentor_only"), mentor=mentor, intern=None).run(questions)
    assert len(mentor.generate_calls) == 1 and len(mentor.generate_calls[0]) == 2  # one batch
    req = mentor.generate_calls[0][0]
    # the task's own messages (its system turn too), NOT the Figure 6 insight prompt
    assert req.prompt.messages == questions[0].messages
    assert all(MENTOR_SYSTEM_PROMPT not in m.content for m in req.prompt.messages)
    assert (req.max_new_tokens, req.stop, req.temperature, req.seed, req.prefix) == (
        50,
        ("Q:",),
        0.7,
        3,
        None,
    )
    short, long = results
    assert (short.cost.mentor_tokens, long.cost.mentor_tokens) == (37, 50)
    assert (short.answer_finish_reason, long.answer_finish_reason) == ("stop", "length")
    for r in results:
        c = r.cost
        assert c.intern_tokens == 0 and not c.intern_reads_mentor
        assert c.stop_stage == 0 and not c.stopped_early and c.stage_scores == []
        assert c.tflops == pytest.approx(2e-12 * THETA_L * c.mentor_tokens)  # no |θS| term
        assert c.mentor_prompt_tokens == 5  # the scripted backend's prompt count
        assert r.mentor is not None and r.answer == r.mentor.text
    assert short.answer == " ".join(f"w{i}" for i in range(37))


def test_mentor_policies_need_a_mentor():
    with pytest.raises(ValueError, match="mentor_only policy needs a mentor"):
        cascade(make_policy("mentor_only"), mentor=None, intern=ScriptedBackend())


# --- budget forcing ---------------------------------------------------------------------------------------
ANSWER_MARKERS = ("</think>", "answer:")


class ReasoningMentor(Backend):
    """A scripted reasoning model. For each question (the last user turn) a script (R, A): R reasoning
    words, then the end of reasoning (``</think>``, or ``answer:`` for a model that does not think in
    tags), then A answer words, then it stops (EOS). One word = one token; text = the words joined
    (after ``<think>`` for a thinking model). It reads its context: after an end of reasoning it is
    in its answer (whoever wrote it: itself, or forced text), else it goes on reasoning."""

    name = "reasoning"

    def __init__(self, script: dict[str, tuple[int, int]], thinking: bool = True):
        self.script, self.thinking = script, thinking
        self.vocab: dict[str, int] = {}
        self.words: list[str] = []
        self.calls: list[list[GenerationRequest]] = []

    model_name = "reasoning-mentor"
    num_parameters = THETA_L
    max_context = 100_000

    def count_tokens(self, prompt):
        return sum(len(m.content.split()) for m in prompt.messages) + 2

    def score(self, prompts):
        raise AssertionError("the mentor never scores")

    def _id(self, word):
        if word not in self.vocab:
            self.vocab[word] = len(self.words)
            self.words.append(word)
        return self.vocab[word]

    def _text(self, ids):
        return ("<think>" if self.thinking else "") + " ".join(self.words[i] for i in ids)

    def _next_words(self, question, context):
        reasoning, answer = self.script[question]
        ends = [i for i, w in enumerate(context) if w.lower() in ANSWER_MARKERS]
        if ends:
            done = len(context) - ends[-1] - 1
            return [f"a{j}" for j in range(done, answer)]
        close = "</think>" if self.thinking else "answer:"
        natural = [f"r{j}" for j in range(reasoning)] + [close] + [f"a{j}" for j in range(answer)]
        return natural[len(context) :]

    def generate(self, requests):
        self.calls.append(list(requests))
        out = []
        for req in requests:
            question = req.prompt.messages[-1].content
            ids = list(req.prefix.token_ids) if req.prefix else []
            ids += [self._id(w) for w in req.forced_text.split()]
            earlier = self._text(ids)
            upcoming = self._next_words(question, [self.words[i] for i in ids])
            new, finish = [], "length"
            for word in upcoming[: req.max_new_tokens]:
                new.append(self._id(word))
                text = self._text(ids + new)
                if any(s in text[len(earlier) :] for s in req.stop):
                    finish = "stop"
                    break
            if len(new) == len(upcoming):
                finish = "stop"
            text = self._text(ids + new)
            for s in req.stop:
                at = text.find(s, len(earlier))
                text = text[:at] if at != -1 else text
            out.append(Generation(text, tuple(ids + new), len(new), finish, prompt_tokens=3))
        return out


def run_forcing(script, questions, budget=8, thinking=True, close="auto"):
    mentor = ReasoningMentor(script, thinking)
    policy = make_policy(f"budget_forcing:{budget}", budget_forcing_close=close)
    return cascade(policy, mentor=mentor).run(questions), mentor


def test_budget_forcing_cuts_the_reasoning_at_b_and_still_answers():
    results, mentor = run_forcing({"hard": (20, 5)}, [q("hard", until=("Q:",), max_gen_toks=30)])
    first, second = mentor.calls
    # phase 1: at most B tokens, no stop strings (a reasoning trace may contain them)
    assert (first[0].max_new_tokens, first[0].stop, first[0].prefix) == (8, (), None)
    # phase 2: the end of reasoning forced after the cut, then the answer with the task's stops
    req = second[0]
    assert req.forced_text == THINKING_CLOSE and req.stop == ("Q:",) and req.max_new_tokens == 30
    assert len(req.prefix.token_ids) == 8
    r = results[0]
    parts = split_thinking(r.answer)
    assert parts.completed and parts.answer == "a0 a1 a2 a3 a4"
    assert parts.reasoning == " ".join(f"r{j}" for j in range(8))  # reasoning stopped at B
    # L_L = 8 reasoning + 5 answer tokens; the forced </think> is context, not generated
    assert r.cost.mentor_tokens == 13 and len(r.mentor.token_ids) == 14
    assert r.cost.tflops == pytest.approx(2e-12 * THETA_L * 13)
    assert r.cost.intern_tokens == 0 and not r.cost.intern_reads_mentor and r.cost.stop_stage == 0
    assert r.cost.mentor_prompt_tokens == 6  # both calls read the prompt


def test_budget_forcing_phases_per_question_in_one_batch_each():
    script = {
        "forced": (20, 3),  # cut inside its reasoning: forced
        "easy": (3, 2),  # ends by itself within B: one call
        "closed": (5, 10),  # closed its reasoning but cut in the answer: continued, nothing forced
        "stopped": (2, 10),  # its answer already holds a stop string of the task: cut there, done
    }
    questions = [q(name, until=("a3",), max_gen_toks=30) for name in script]
    results, mentor = run_forcing(script, questions)
    assert [len(c) for c in mentor.calls] == [4, 2]
    phase2 = {r.prompt.messages[-1].content: r for r in mentor.calls[1]}
    assert set(phase2) == {"forced", "closed"}
    assert phase2["forced"].forced_text == THINKING_CLOSE and phase2["closed"].forced_text == ""
    forced, easy, closed, stopped = results
    assert forced.cost.mentor_tokens == 8 + 3 and split_thinking(forced.answer).answer == "a0 a1 a2"
    assert easy.cost.mentor_tokens == 6 and easy.answer == "<think>r0 r1 r2 </think> a0 a1"
    # 8 tokens (r0..r4 </think> a0 a1), then the answer continued up to the stop string a3
    assert closed.cost.mentor_tokens == 8 + 2 and split_thinking(closed.answer).answer == "a0 a1 a2"
    assert closed.answer_finish_reason == "stop"
    # r0 r1 </think> a0 a1 a2 a3 a4: all 8 tokens were generated (and cost), the answer ends before a3
    assert stopped.cost.mentor_tokens == 8 and split_thinking(stopped.answer).answer == "a0 a1 a2"
    assert stopped.answer_finish_reason == "stop"
    for r in results:
        assert r.cost.tflops == pytest.approx(2e-12 * THETA_L * r.cost.mentor_tokens)


def test_budget_forcing_a_model_that_does_not_think_in_tags_and_a_custom_close():
    results, mentor = run_forcing({"plain": (20, 3)}, [q("plain")], thinking=False)
    assert mentor.calls[1][0].forced_text == PLAIN_CLOSE
    assert results[0].answer.endswith("Final answer: a0 a1 a2") and results[0].cost.mentor_tokens == 11
    results, mentor = run_forcing({"plain": (20, 3)}, [q("plain")], thinking=False, close="\nSo the answer: ")
    assert mentor.calls[1][0].forced_text == "\nSo the answer: "
    assert results[0].answer.endswith("So the answer: a0 a1 a2")


def test_budget_forcing_policy_and_mode_names():
    policy = make_policy("budget_forcing:2000")
    assert isinstance(policy, BudgetForcingPolicy) and isinstance(policy, MentorOnlyPolicy)
    assert policy.reasoning_budget == 2000 and policy.answerer == "mentor" and not policy.needs_scores
    assert policy.close_text("<think>\nhmm") == "\n</think>\n\n" and policy.close_text("hmm") == PLAIN_CLOSE
    for bad in ("budget_forcing:0", "budget_forcing:x", "budget_forcing:"):
        with pytest.raises(ValueError, match="budget"):
            check_mode(bad)
    assert make_policy("mentor_only").reasoning_budget is None


# --- route -----------------------------------------------------------------------------------------------
class CraftedRouter(Classifier):
    """s_0 per question in call order; the card holds τ_0 (later thresholds never matter)."""

    kind = "crafted"

    def __init__(self, scores, thresholds):
        self.scores = list(scores)
        self.card = types.SimpleNamespace(thresholds=list(thresholds), feature_span=DEFAULT_SPAN, spec=None)
        self.calls = 0

    def sufficiency(self, X, groups=None):
        self.calls += 1
        out, self.scores = self.scores[: len(X)], self.scores[len(X) :]
        return np.asarray(out)


def test_route_decides_once_from_stage_zero_both_ways():
    router = CraftedRouter([0.9, 0.2, 0.5], thresholds=[0.5, 0.99, 0.99, 0.99])
    policy = make_policy("route", router.card.thresholds)
    assert isinstance(policy, RoutePolicy) and policy.threshold == 0.5
    mentor, intern = ScriptedBackend(params=THETA_L), ScriptedBackend(default_len=7, params=THETA_S)
    results = cascade(policy, mentor, intern, router).run([q("easy"), q("hard"), q("tie")])
    easy, hard, tie = results
    # s_0 = 0.9 > τ_0: the intern alone, a classifier decision
    assert (easy.cost.stop_stage, easy.cost.stopped_early, easy.cost.mentor_tokens) == (0, True, 0)
    # s_0 = 0.2 and 0.5 (not > τ_0): the mentor writes through the last budget, the intern answers
    # from the last stage; no argmax, no early stop
    for r in (hard, tie):
        assert (r.cost.stop_stage, r.cost.stopped_early, r.cost.mentor_tokens) == (3, False, 1000)
        assert r.cost.stage_scores == [pytest.approx(0.2 if r is hard else 0.5)]
    # only stage 0 was scored: one intern scoring call, one classifier call
    assert len(intern.score_calls) == 1 and len(intern.score_calls[0]) == 3 and router.calls == 1
    # the mentor continued stage by stage for the two routed questions (same tokens as one call)
    assert [len(c) for c in mentor.generate_calls] == [2, 2, 2]
    for r in results:  # Eq. 12 with the intern reading the mentor's tokens
        c = r.cost
        assert c.intern_tokens == 7 and c.intern_reads_mentor
        assert c.tflops == pytest.approx(
            2e-12 * (THETA_L * c.mentor_tokens + THETA_S * (c.mentor_tokens + 7))
        )


def test_route_needs_a_classifier_and_tau0():
    with pytest.raises(ValueError, match="needs a sufficiency classifier"):
        cascade(make_policy("route", [0.5]), ScriptedBackend(), ScriptedBackend())
    with pytest.raises(ValueError, match="mode=route needs thresholds"):
        make_policy("route")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_policy("route", [1.5])
    assert not RoutePolicy([0.5]).scores_stage(1) and RoutePolicy([0.5]).scores_stage(0)
    assert make_policy("tandem", [0.5] * 4).scores_stage(2)  # the default: every stage when scored


def test_route_model_args_and_classifier_thresholds(tiny_classifier_dir):
    from tandem_lm_eval.harness.assembly import load_classifier

    intern = ScriptedBackend(model_name="tiny-llama")
    args = {"mentor": "/m", "intern": "/i", "mode": "route", "classifier": str(tiny_classifier_dir)}
    # one threshold (τ_0) is enough for route, whatever the budgets
    one = TandemConfig.from_model_args({**args, "thresholds": "[0.3]", "budgets": "[8,16,32]"})
    assert load_classifier(one, intern)[1] == (0.3,)
    assert make_policy("route", (0.3,)).threshold == 0.3
    # without thresholds: the card's, τ_0 first (the tiny card has 3 for budgets [8,16])
    from tandem_lm_eval.harness.plan import plan_run

    card = plan_run(TandemConfig.from_model_args(args))  # the plan takes the card's budgets, once
    clf, thresholds = load_classifier(card, intern)
    assert clf is not None and thresholds == (0.5, 0.5, 0.5) and card.budgets == (8, 16)
    with pytest.raises(ConfigError, match="4 are needed"):
        TandemConfig.from_model_args({"mentor": "/m", "intern": "/i", "thresholds": "[0.3]"})


# --- fixed:low|medium|high --------------------------------------------------------------------------------
def test_fixed_levels_are_the_papers_names():
    for name, stage in (("low", 1), ("medium", 2), ("high", 3)):
        policy = make_policy(f"fixed:{name}")
        assert isinstance(policy, FixedStagePolicy) and policy.stage == stage
        assert TandemConfig.from_model_args(
            {"mentor": "/m", "intern": "/i", "mode": f"fixed:{name}"}
        ).mode == (f"fixed:{name}")
    results = cascade(
        make_policy("fixed:medium"), ScriptedBackend(params=THETA_L), ScriptedBackend(default_len=7)
    ).run([q("x")])
    assert results[0].cost.stop_stage == 2 and results[0].cost.mentor_tokens == 500
    with pytest.raises(ValueError, match=r"fixed:high \(= fixed:3\) needs 3 budgets, only 2 given"):
        cascade(make_policy("fixed:high"), ScriptedBackend(), ScriptedBackend(), budgets=(8, 16))
    with pytest.raises(ValueError, match=r"fixed:low\|medium\|high"):
        make_policy("fixed:huge")


# --- model_args ------------------------------------------------------------------------------------------
def test_budget_forcing_close_model_arg():
    base = {"mentor": "/m", "intern": "/i", "mode": "budget_forcing:64"}
    assert TandemConfig.from_model_args(base).budget_forcing_close == "auto"
    cfg = TandemConfig.from_model_args({**base, "budget_forcing_close": "\\n\\nThe answer is "})
    assert cfg.budget_forcing_close == "\n\nThe answer is "
    with pytest.raises(ConfigError, match="budget_forcing_close applies to mode=budget_forcing"):
        TandemConfig.from_model_args({"mentor": "/m", "intern": "/i", "budget_forcing_close": "x"})
    with pytest.raises(ConfigError, match="budget_forcing_close must be"):
        TandemConfig.from_model_args({**base, "budget_forcing_close": "  "})
    for mode in ("mentor_only", "route", "budget_forcing:8", "fixed:low"):
        assert check_mode(mode) == mode


def test_no_intern_is_loaded_when_the_mentor_answers(tiny_model_dir, tmp_path):
    from tandem_lm_eval.harness.assembly import build_backends
    from tandem_lm_eval.harness.lm import TandemLM
    from tandem_lm_eval.harness.plan import plan_run

    # the intern's path does not exist: loading it would fail
    args = {"mentor": str(tiny_model_dir), "intern": "/nonexistent/intern", "dtype": "float32"}
    plan = plan_run({**args, "mode": "mentor_only"})
    assert plan.mentor.loads and not plan.intern.loads  # decided by the plan, before any load
    mentor, intern, mentor_params, intern_params = build_backends(plan)
    assert intern is None and mentor is not None and intern_params == 0.0
    assert mentor_params == sum(p.numel() for p in mentor.model.parameters())
    with pytest.raises(ConfigError, match="recorded mentor"):  # refused by the plan: nothing loads
        plan_run({**args, "mode": "mentor_only", "mentor_backend": "recorded"})

    trace = tmp_path / "trace.jsonl"
    lm = TandemLM(**args, mode="budget_forcing:4", progress=False, trace_path=str(trace))
    assert lm.intern is None

    class Req:
        def __init__(self, *args):
            self.args = args

    out = lm.generate_until(
        [Req("Question: 2 plus 2?\nAnswer:", {"until": ["Question:"], "max_gen_toks": 5})]
    )
    cost = out[0].tandem
    assert (
        cost["intern_tokens"] == 0 and not cost["intern_reads_mentor"] and 0 < cost["mentor_tokens"] <= 4 + 5
    )
    assert cost["tflops"] == pytest.approx(2e-12 * lm.mentor_params * cost["mentor_tokens"])
    # the trace records the mentor's whole output as the answer, at stage 0, no intern stages
    from tandem_lm_eval.data.records import load_records

    (rec,) = load_records([trace])
    assert rec.mode == "budget_forcing:4" and rec.chosen_stage == 0 and rec.stages == []
    assert rec.mentor is not None and rec.mentor.text == str(out[0]) and rec.cost == cost
    # loglikelihood requests (multiple choice) are answered by the model that answers: the mentor
    ((ll, greedy),) = lm.loglikelihood([Req("The sky is", " blue")])
    assert ll < 0 and isinstance(greedy, bool)


# --- forced continuations on real backends ---------------------------------------------------------------
FORCED = THINKING_CLOSE
QUESTION = Prompt.chat(("user", "What is 2 + 3?"))


def check_forced_continuation(backend, tokenizer):
    """The forced tokens are in the context: the same new tokens as a continuation whose prefix
    already holds them, other tokens than an unforced continuation; only the new ones count."""
    first = backend.generate([GenerationRequest(QUESTION, 5)])[0]
    forced_ids = tuple(tokenizer(FORCED, add_special_tokens=False).input_ids)
    forced, plain = backend.generate(
        [
            GenerationRequest(QUESTION, 6, prefix=first, forced_text=FORCED),
            GenerationRequest(QUESTION, 6, prefix=first),
        ]
    )
    n = len(first.token_ids)
    assert forced.token_ids[:n] == first.token_ids
    assert forced.token_ids[n : n + len(forced_ids)] == forced_ids
    assert forced.new_tokens == len(forced.token_ids) - n - len(forced_ids) == 6
    assert forced.text.startswith(first.text) and FORCED.strip() in forced.text[len(first.text) :]
    # as if the model had written the forced tokens itself
    written = Generation(first.text + FORCED, first.token_ids + forced_ids, len(forced_ids), "length")
    reference = backend.generate([GenerationRequest(QUESTION, 6, prefix=written)])[0]
    assert reference.token_ids == forced.token_ids and reference.text == forced.text
    # and the context changed what came next
    assert forced.token_ids[n + len(forced_ids) :] != plain.token_ids[n:]


def test_forced_text_needs_a_prefix():
    with pytest.raises(ValueError, match="forced_text"):
        GenerationRequest(QUESTION, 4, forced_text=FORCED)


def test_transformers_forced_continuation(tiny_model_dir):
    from tandem_lm_eval.backends import make_backend

    backend = make_backend("hf", str(tiny_model_dir), dtype="float32")
    check_forced_continuation(backend, backend.tokenizer)


def test_a_recorded_mentor_cannot_be_forced(tmp_path, demo_model_dir):
    from tandem_lm_eval.backends.recorded_mentor import RecordedBackend
    from tandem_lm_eval.data.records import MentorOutput, QuestionRecord, write_records

    question = q("What is 2 + 3?")
    path = tmp_path / "mentor.jsonl"
    output = MentorOutput(text="Add them: 5.", finished=False, num_params=32e9)
    write_records(path, [QuestionRecord(question.key, "What is 2 + 3?", stages=[], mentor=output)])
    backend = RecordedBackend(str(path), tokenizer=str(demo_model_dir))
    first = backend.generate([GenerationRequest(QUESTION, 2)])[0]
    assert first.new_tokens == 2
    with pytest.raises(BackendError, match="recorded mentor cannot be forced"):
        backend.generate([GenerationRequest(QUESTION, 2, prefix=first, forced_text=FORCED)])


@pytest.fixture(scope="module")
def vllm_tiny_model_dir(tmp_path_factory, tiny_model_dir):
    """The tiny random Llama widened to head size 64 (vLLM's CPU attention has no kernel for 16)."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(str(tiny_model_dir))
    config.hidden_size, config.intermediate_size, config.head_dim = 128, 256, 64
    config.num_attention_heads, config.num_key_value_heads = 2, 1
    out = tmp_path_factory.mktemp("vllm_models") / tiny_model_dir.name
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(out))
    for f in tiny_model_dir.iterdir():
        if "token" in f.name or f.name.endswith(".jinja"):
            shutil.copy(f, out / f.name)
    return out


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_vllm_forced_continuation(vllm_tiny_model_dir):
    from tandem_lm_eval.backends.vllm import VLLMBackend

    backend = VLLMBackend(str(vllm_tiny_model_dir), max_model_len="512", seed="0")
    try:
        check_forced_continuation(backend, backend.tokenizer)
    finally:
        backend.close()


# --- the OpenAI-compatible backend, transport stubbed ------------------------------------------------------
@pytest.fixture()
def served(tiny_model_dir, monkeypatch):
    """An OpenAIBackend that believes it talks to a vLLM server; requests are recorded and answered
    by a canned response (no server)."""
    from tandem_lm_eval.backends.openai.backend import OpenAIBackend
    from tandem_lm_eval.backends.openai.transport import ServerInfo

    backend = OpenAIBackend(
        "m", base_url="http://127.0.0.1:9/v1", tokenizer=str(tiny_model_dir), endpoint="completions"
    )
    backend.server.info = ServerInfo(kind="vllm", max_model_len=2048)
    sent = []

    def request(method, path, body, parse, abort, **kw):
        sent.append((path, body))
        if path.endswith("/chat/completions"):
            message = {"content": " five", "reasoning": None}
            data = {"choices": [{"message": message, "token_ids": [11, 12], "finish_reason": "stop"}]}
        else:
            data = {"choices": [{"text": " five", "token_ids": [11, 12], "finish_reason": "stop"}]}
        data["usage"] = {"prompt_tokens": 40, "completion_tokens": 2}
        return parse(data)

    monkeypatch.setattr(backend.server, "request", request)
    return backend, sent


def test_openai_completions_send_the_forced_tokens_after_the_prefix(served):
    backend, sent = served
    prefix = Generation("<think>add", (5, 6), 2, "length")
    gen = backend.generate([GenerationRequest(QUESTION, 8, prefix=prefix, forced_text=FORCED)])[0]
    forced_ids = backend._encode(FORCED)
    prompt_ids = backend._prompt_ids(QUESTION, None)
    ((path, body),) = sent
    assert path == "/completions" and body["prompt"] == prompt_ids + [5, 6] + forced_ids
    assert gen.token_ids == (5, 6, *forced_ids, 11, 12) and gen.new_tokens == 2
    assert gen.text == "<think>add" + FORCED + " five"


def test_openai_chat_prefills_prefix_and_forced_text(served):
    backend, sent = served
    backend._endpoint = "chat"
    prefix = Generation("<think>add", (5, 6), 2, "length")
    gen = backend.generate([GenerationRequest(QUESTION, 8, prefix=prefix, forced_text=FORCED)])[0]
    ((path, body),) = sent
    assert body["messages"][-1] == {"role": "assistant", "content": "<think>add" + FORCED}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert gen.token_ids == (5, 6, *backend._encode(FORCED), 11, 12) and gen.new_tokens == 2
    assert split_thinking(gen.text).answer == "five"
    # an API that cannot continue an assistant message cannot force text either
    from tandem_lm_eval.backends.openai.transport import ServerInfo

    backend.server.info = ServerInfo(kind="openai", max_model_len=2048)
    with pytest.raises(BackendError, match="cannot put forced text"):
        backend.generate([GenerationRequest(QUESTION, 8, prefix=prefix, forced_text=FORCED)])
