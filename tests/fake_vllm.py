"""A recording fake of the ``vllm`` package, behaving as vLLM 0.32 or as 0.34 on a GPU (no GPU needed).

What it models, from the versions' source (shared/notes/PLATFORM.md, "Checked 2026-12-08"):

* ``EngineArgs`` fields per version: 0.34 adds ``enable_extensible_kv_cache``; an unknown keyword
  is a TypeError, as ``vllm.LLM`` raises.
* One GPU of ``gpu_total_bytes``: each engine takes its resolved share (explicit, else 0.92; 0.34
  with the extensible cache: 1.0); an engine that does not fit beside the live ones fails, as
  vLLM's startup memory check does. 0.34's extensible cache, with the engine core in this process,
  caps torch's allocator for the whole process: a later engine in the process fails.
* The prefix cache (blocks of ``block_size``, written by every request) and prompt logprobs: a
  request with ``prompt_logprobs`` reads no cache unless ``skip_reading_prefix_cache=False``; 0.34's
  ``prompt_logprob_start`` bounds the read there and leaves earlier rows None; 0.32 refuses it
  without ``prompt_logprob_token_ids``. Rows of positions served from the cache hold STALE values
  (vLLM #42019): a caller that reads them gets wrong numbers.
* ``RequestOutput.metrics`` (engine timestamps) only with ``disable_log_stats=False``.

The values are a deterministic function of the token prefix, so scoring a prompt whole and in parts
must give the same numbers. Every engine start and request is recorded in ``FakeVLLM.calls``.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GiB = 1 << 30

_COMMON_FIELDS = (
    "model",
    "dtype",
    "tensor_parallel_size",
    "seed",
    "trust_remote_code",
    "revision",
    "max_model_len",
    "kv_cache_memory_bytes",
    "gpu_memory_utilization",
    "enforce_eager",
    "max_logprobs",
    "disable_log_stats",
    "block_size",
    "enable_prefix_caching",
    "quantization",
    "max_num_seqs",
    "runner",
    "convert",
    "pooler_config",
)


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class RequestStateStats:
    scheduled_ts: float = 0.0
    last_token_ts: float = 0.0


@dataclass
class CompletionOutput:
    token_ids: list[int]
    finish_reason: str = "length"
    stop_reason: Any = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list | None
    num_cached_tokens: int
    metrics: RequestStateStats | None = None


@dataclass
class Request:
    """One recorded request: its tokens, its sampling params, the prefix-cache hit it got."""

    ids: list[int]
    params: Any
    cached: int


class FakeVLLM:
    def __init__(
        self,
        version: str,
        tokenizer,
        *,
        gpu_total_bytes: int = 80 * GiB,
        weights_bytes: int = 2 * GiB,
        block_size: int = 16,
    ) -> None:
        self.version = tuple(int(x) for x in version.split("."))
        self.tokenizer = tokenizer
        self.gpu_total_bytes = gpu_total_bytes
        self.weights_bytes = weights_bytes
        self.block_size = block_size
        self.calls: list[tuple[str, Any]] = []  # ("LLM", kwargs) and ("request", Request)
        self.live: list[FakeLLM] = []  # engines holding GPU memory
        self.process_cap: float | None = None  # 0.34's per-process allocator cap, once set
        self.clock = 100.0

    @property
    def extensible(self) -> bool:
        return self.version >= (0, 34)

    def engine_fields(self) -> tuple[str, ...]:
        return _COMMON_FIELDS + (("enable_extensible_kv_cache",) if self.extensible else ())

    def requests(self) -> list[Request]:
        return [r for kind, r in self.calls if kind == "request"]

    def engines(self) -> list[dict]:
        return [kw for kind, kw in self.calls if kind == "LLM"]

    # --- the modules --------------------------------------------------------------------------
    def modules(self) -> dict[str, types.ModuleType]:
        fake = self
        names = self.engine_fields()
        engine_args = dataclasses.make_dataclass("EngineArgs", [(n, Any, field(default=None)) for n in names])

        class LLM(FakeLLM):
            def __init__(self, model: str, **kwargs: Any) -> None:
                super().__init__(fake, model, **kwargs)

        class SamplingParams(FakeSamplingParams):
            __struct_fields__ = FakeSamplingParams.__struct_fields__

        vllm = types.ModuleType("vllm")
        vllm.__version__ = ".".join(map(str, self.version))
        vllm.LLM = LLM
        vllm.SamplingParams = SamplingParams
        vllm.PoolingParams = lambda **kw: kw
        platforms = types.ModuleType("vllm.platforms")
        platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: False)
        inputs = types.ModuleType("vllm.inputs")
        inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": list(prompt_token_ids)}
        engine = types.ModuleType("vllm.engine")
        arg_utils = types.ModuleType("vllm.engine.arg_utils")
        arg_utils.EngineArgs = engine_args
        config = types.ModuleType("vllm.config")
        config.PoolerConfig = lambda **kw: kw
        return {
            "vllm": vllm,
            "vllm.platforms": platforms,
            "vllm.inputs": inputs,
            "vllm.engine": engine,
            "vllm.engine.arg_utils": arg_utils,
            "vllm.config": config,
        }

    def install(self, monkeypatch) -> None:
        for name, module in self.modules().items():
            monkeypatch.setitem(sys.modules, name, module)

    # --- the model: values that depend only on the token prefix ---------------------------------
    def row(self, ids: list[int], j: int, k: int) -> dict[int, Logprob]:
        """Prompt-logprob row of token j (its logprob given ids[:j]) with the top-k."""
        seed = hash(tuple(ids[: j + 1])) & 0xFFFFFFFF
        rng = np.random.default_rng(seed)
        top = np.sort(-0.1 - rng.exponential(1.0, size=k))[::-1]
        actual_rank = 1 + seed % (k + 2)
        vocab = len(self.tokenizer)
        others = [(ids[j] + 1 + m) % vocab for m in range(k + 1)]
        others = [t for t in others if t != ids[j]][:k]
        out: dict[int, Logprob] = {}
        for rank, (token, lp) in enumerate(zip(others, top), start=1):
            out[token] = Logprob(float(lp), rank)
        if actual_rank <= k:  # the actual token takes its rank's place in the top-k
            victim = others[actual_rank - 1]
            del out[victim]
            out[ids[j]] = Logprob(float(top[actual_rank - 1]), actual_rank)
        else:
            out[ids[j]] = Logprob(float(top[-1] - 1.0), actual_rank)
        return out

    @staticmethod
    def stale_row(ids: list[int], j: int) -> dict[int, Logprob]:
        """What vLLM #42019 may serve for a cached position: another request's numbers."""
        return {ids[j]: Logprob(7.0, 1)}


class FakeSamplingParams:
    __struct_fields__ = (
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "prompt_logprobs",
        "prompt_logprob_start",
        "prompt_logprob_token_ids",
        "detokenize",
        "skip_reading_prefix_cache",
    )

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - set(self.__struct_fields__)
        if unknown:
            raise TypeError(f"SamplingParams got unexpected keywords {sorted(unknown)}")
        for name in self.__struct_fields__:
            setattr(self, name, kwargs.get(name))
        if self.skip_reading_prefix_cache is None:  # as vLLM: prompt logprobs read no cache by default
            self.skip_reading_prefix_cache = self.prompt_logprobs is not None
        self.max_tokens = self.max_tokens or 16


class FakeLLM:
    def __init__(self, fake: FakeVLLM, model: str, **kwargs: Any) -> None:
        unknown = set(kwargs) - set(fake.engine_fields())
        if unknown:
            raise TypeError(
                f"EngineArgs.__init__() got an unexpected keyword argument {sorted(unknown)[0]!r}"
            )
        fake.calls.append(("LLM", dict(kwargs)))
        self.fake, self.kwargs = fake, kwargs
        extensible = (
            fake.extensible
            and kwargs.get("enable_extensible_kv_cache") is not False
            and kwargs.get("kv_cache_memory_bytes") is None
        )
        share = kwargs.get("gpu_memory_utilization")
        if share is None:
            share = 1.0 if extensible else 0.92
        if fake.process_cap is not None:
            raise RuntimeError(
                "CUDA out of memory: torch's allocator is capped for this process by another engine's "
                "extensible KV cache"
            )
        if kwargs.get("kv_cache_memory_bytes") is not None:
            taken = fake.weights_bytes + kwargs["kv_cache_memory_bytes"]
        else:
            taken = share * fake.gpu_total_bytes
        used = sum(e.taken for e in fake.live)
        if used + taken > fake.gpu_total_bytes:
            raise RuntimeError(
                f"ValueError: Free memory on device ({(fake.gpu_total_bytes - used) / GiB:.1f} GiB) is less "
                f"than desired GPU memory utilization ({share}, {taken / GiB:.1f} GiB)"
            )
        self.taken = taken
        fake.live.append(self)
        if extensible:
            fake.process_cap = share
        self.cache: set[tuple[int, ...]] = set()
        max_len = kwargs.get("max_model_len") or 2048
        block = kwargs.get("block_size") or fake.block_size
        tokenizer = fake.tokenizer
        self.llm_engine = types.SimpleNamespace(
            model_config=types.SimpleNamespace(
                max_model_len=max_len,
                get_vocab_size=lambda: len(tokenizer),
                hf_text_config=types.SimpleNamespace(num_hidden_layers=2, hidden_size=8),
                dtype="torch.float32",
            ),
            vllm_config=types.SimpleNamespace(
                cache_config=types.SimpleNamespace(block_size=block, num_gpu_blocks=4096)
            ),
            engine_core=types.SimpleNamespace(shutdown=self._shutdown),
        )
        self.block = block

    def _shutdown(self) -> None:
        if self in self.fake.live:
            self.fake.live.remove(self)
            self.fake.process_cap = None

    def get_tokenizer(self):
        return self.fake.tokenizer

    def apply_model(self, fn):
        return [1000]

    def _hit(self, ids: list[int], params) -> int:
        """Leading tokens served from the prefix cache (whole blocks, never the last token)."""
        if params.prompt_logprobs is not None and params.skip_reading_prefix_cache:
            return 0
        limit = len(ids) - 1
        if self.fake.version >= (0, 34) and params.prompt_logprobs is not None:
            limit = min(limit, params.prompt_logprob_start or 0)
        hit = 0
        while hit + self.block <= limit and tuple(ids[: hit + self.block]) in self.cache:
            hit += self.block
        return hit

    def generate(self, prompts, params, use_tqdm: bool = False) -> list[RequestOutput]:
        fake = self.fake
        params = params if isinstance(params, list) else [params] * len(prompts)
        for p in params:  # validated before any request runs, as LLM.generate does
            if (
                p.prompt_logprob_start is not None
                and fake.version < (0, 34)
                and p.prompt_logprob_token_ids is None
            ):
                raise ValueError("prompt_logprob_start requires prompt_logprob_token_ids.")
            if (
                p.prompt_logprob_start is not None
                and p.prompt_logprobs is None
                and p.prompt_logprob_token_ids is None
            ):
                raise ValueError("prompt_logprob_start requires prompt_logprobs or prompt_logprob_token_ids.")
        outs = []
        for prompt, p in zip(prompts, params):
            ids = list(prompt["prompt_token_ids"])
            hit = self._hit(ids, p)
            fake.calls.append(("request", Request(ids, p, hit)))
            rows = None
            if p.prompt_logprobs is not None:
                k = p.prompt_logprobs if p.prompt_logprobs > 0 else 1
                start = p.prompt_logprob_start or 0
                rows = [None]
                for j in range(1, len(ids)):
                    if j <= start:
                        rows.append(None)
                    elif j <= hit:  # row j - 1 was served from the cache
                        rows.append(fake.stale_row(ids, j))
                    else:
                        rows.append(fake.row(ids, j, k))
            for b in range(self.block, len(ids) + 1, self.block):
                self.cache.add(tuple(ids[:b]))
            new = [(sum(ids) + m) % 1000 + 10 for m in range(p.max_tokens)]
            computed = len(ids) - hit + len(new)
            metrics = None
            if self.kwargs.get("disable_log_stats") is False:
                metrics = RequestStateStats(fake.clock, fake.clock + 0.001 * computed)
            fake.clock += 1.0
            outs.append(RequestOutput(ids, [CompletionOutput(new)], rows, hit, metrics))
        return outs
