"""A hosted chat API that cannot continue an assistant message regenerates the whole answer at every
stage: ``tandem_usd`` is what the API bills (the regenerated output included) and ``tandem_tflops``
counts what the mentor computed (the regenerated tokens in its term), while L_L stays the insights'
length. The OpenAI backend runs for real; only its transport is stubbed (a scripted API with usage
counts and no token ids, as hosted APIs answer)."""

from __future__ import annotations

import pytest
from fakes import ScriptedBackend

from tandem_lm_eval.backends.base import GenerationRequest, Message, Prompt
from tandem_lm_eval.backends.openai.backend import OpenAIBackend
from tandem_lm_eval.backends.openai.transport import ServerInfo
from tandem_lm_eval.cascade.policies import FixedStagePolicy, make_policy
from tandem_lm_eval.cascade.prompts import Question
from tandem_lm_eval.cascade.roles import Role
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.cost.flops import tflops
from tandem_lm_eval.cost.pricing import TokenPrices

PROMPT_TOKENS = 40  # what the scripted API reports for every request's prompt
ANSWER_WORDS = 100  # the scripted model's whole answer, one token per word


@pytest.fixture()
def hosted(monkeypatch):
    """An OpenAIBackend on a chat API with standard fields only; each call returns the first
    ``max_completion_tokens`` words of one fixed answer and bills them, as a hosted API does."""
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", endpoint="chat", server="openai")
    backend.server.info = ServerInfo(kind="openai", max_model_len=None)
    bodies, billed = [], {"prompt": 0, "completion": 0}

    def request(method, path, body, parse, abort, **kw):
        bodies.append(body)
        n = min(body["max_completion_tokens"], ANSWER_WORDS)
        message = {"content": " ".join(f"w{i}" for i in range(n)), "reasoning": None}
        finish = "stop" if n == ANSWER_WORDS else "length"
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": n, "total_tokens": PROMPT_TOKENS + n}
        billed["prompt"] += PROMPT_TOKENS
        billed["completion"] += n
        return parse({"choices": [{"message": message, "finish_reason": finish}], "usage": usage})

    monkeypatch.setattr(backend.server, "request", request)
    return backend, bodies, billed


def question() -> Question:
    return Question((Message("user", "What is 2 plus 3?"),), max_gen_toks=5)


def test_a_continuation_regenerates_and_says_how_much(hosted):
    backend, bodies, _ = hosted
    first = backend.generate([GenerationRequest(Prompt.chat(("user", "hi")), 4)])[0]
    second = backend.generate([GenerationRequest(Prompt.chat(("user", "hi")), 4, prefix=first)])[0]
    assert bodies[1]["max_completion_tokens"] == 8  # the whole answer again, with the larger budget
    assert (first.new_tokens, first.regenerated_tokens) == (4, 0)
    assert (second.new_tokens, second.regenerated_tokens, len(second.token_ids)) == (4, 4, 8)


def test_usd_is_what_the_api_bills_and_tflops_count_the_regenerated_tokens(hosted):
    mentor, _, api = hosted
    mentor._num_parameters = 32e9
    intern = ScriptedBackend(params=7e9)
    prices = TokenPrices(input_per_million=1.0, output_per_million=4.0)
    cascade = Cascade(
        Role(mentor, params=32e9, prices=prices),
        Role(intern, params=7e9),
        FixedStagePolicy(3),
        budgets=(4, 8, 12),
        progress=False,
    )
    (result,) = cascade.run([question()])
    cost = result.cost
    # three stages: 4 tokens, then 8 (4 of them again), then 12 (8 of them again)
    assert cost.mentor_tokens == 12  # L_L: the insights' length
    assert cost.mentor_regenerated_tokens == 4 + 8
    assert api["completion"] == 4 + 8 + 12 and api["prompt"] == 3 * PROMPT_TOKENS  # what the API bills
    assert cost.usd == pytest.approx(prices.cost(api["prompt"], api["completion"]))
    # Eq. 12 with the regenerated tokens in the mentor's term; the intern reads L_L once
    assert cost.tflops == pytest.approx(2e-12 * (32e9 * (12 + 12) + 7e9 * (12 + cost.intern_tokens)))
    assert cost.tflops > tflops(32e9, 7e9, cost.mentor_tokens, cost.intern_tokens)


def test_an_engine_that_continues_pays_each_token_once():
    mentor = ScriptedBackend(params=32e9)
    intern = ScriptedBackend(params=7e9)
    cascade = Cascade(
        Role(mentor, params=32e9), Role(intern, params=7e9), make_policy("fixed:3"), budgets=(4, 8, 12)
    )
    cascade.progress = False
    (result,) = cascade.run([question()])
    assert result.cost.mentor_regenerated_tokens == 0 and mentor.generated_total == 12
    assert result.cost.tflops == pytest.approx(tflops(32e9, 7e9, 12, result.cost.intern_tokens))
