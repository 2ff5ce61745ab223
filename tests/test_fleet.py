"""A mentor (or intern) on several OpenAI-compatible servers: ``base_url=[url1,url2,...]``. Against
instant loopback fakes (benchmarks/fake_openai_server.py): every request answered once and in order,
each question's requests on one server, at most ``concurrency`` in flight per server, usage summed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from fake_openai_server import FakeServer  # noqa: E402

from tandem_lm_eval.backends.base import BackendError, GenerationRequest, Prompt  # noqa: E402
from tandem_lm_eval.backends.openai.backend import OpenAIBackend  # noqa: E402
from tandem_lm_eval.backends.openai.transport import parse_base_urls  # noqa: E402


def test_base_url_lists():
    a, b = "http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"
    assert parse_base_urls(a) == [a]
    assert parse_base_urls(f"[{a},{b}]") == parse_base_urls(f"{a}|{b}") == parse_base_urls([a, b]) == [a, b]
    with pytest.raises(BackendError, match="lists a server twice"):
        parse_base_urls(f"[{a},{a}/]")
    with pytest.raises(BackendError, match="must be an http"):
        parse_base_urls(f"[{a},ftp://x]")


@pytest.fixture
def fleet():
    servers = [FakeServer(per_token_s=0.002, capacity=64).start() for _ in range(3)]
    yield servers
    for s in servers:
        s.stop()


def question(i: int) -> Prompt:
    return Prompt(raw_text=f"question {i}: what is {i} times {i}?")


def test_a_fleet_answers_each_request_once_with_affinity(fleet):
    url = "[" + ",".join(s.base_url for s in fleet) + "]"
    backend = OpenAIBackend("fake", base_url=url, server="openai", endpoint="completions", concurrency=2,
                            max_context=4096, tokenizer=None)  # fmt: skip
    try:
        reqs = [GenerationRequest(question(i), 5 + i % 3) for i in range(30)]
        gens = backend.generate(reqs)
        assert [g.new_tokens for g in gens] == [5 + i % 3 for i in range(30)]  # in order, each its own
        assert sum(s.served for s in fleet) == 30
        assert all(s.served > 0 for s in fleet)  # spread over the fleet
        assert all(s.peak_in_flight <= 2 for s in fleet)  # concurrency is per server
        first = [list(s.prompts) for s in fleet]
        # the same questions again (as a later stage): each goes to the server that had it
        backend.generate(reqs)
        assert all(sorted(s.prompts[len(f) :]) == sorted(f) for s, f in zip(fleet, first))
        assert backend.usage.calls == 60
        assert backend.usage.completion_tokens == 2 * sum(5 + i % 3 for i in range(30))
    finally:
        backend.close()


def test_fleet_in_model_args():
    from tandem_lm_eval.harness.config import TandemConfig

    cfg = TandemConfig.from_model_args(
        {
            "mentor": "m", "intern": "demo", "mentor_backend": "openai", "mentor_num_params": "32e9",
            "mentor_base_url": "[http://127.0.0.1:8000/v1,http://127.0.0.1:8001/v1]", "mentor_concurrency": "32",
        }
    )  # fmt: skip
    assert parse_base_urls(cfg.mentor.options["base_url"]) == [
        "http://127.0.0.1:8000/v1",
        "http://127.0.0.1:8001/v1",
    ]
