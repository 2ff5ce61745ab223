"""Two vLLM engines on one GPU: each role's memory share and the KV-cache mode, decided before any load.

The paper's setup puts the mentor (32B) and the intern (7B) on one GPU, both engines in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, backends/vllm.py). Two things can make one starve the other:

* **An unset share.** vLLM < 0.34 assumes ``gpu_memory_utilization=0.92`` of the GPU's total memory
  for each engine; vLLM 0.34 with its extensible KV cache resolves an unset share to 1.0
  (``vllm/config/cache.py``, ``resolved_gpu_memory_utilization``). Either way the first engine takes
  nearly the whole GPU. So both roles always get an explicit share: the user's, or one derived here
  from the models' weight sizes and the GPU's memory (``split_gpu_memory``, pure arithmetic).
* **The extensible KV cache's process-wide cap (0.34).** After warm-up it caps torch's allocator for
  the WHOLE process (``torch.cuda.set_per_process_memory_fraction`` in
  ``vllm/v1/worker/extensible_kv_cache.py``) at what the engine measured as free, and lifts it only
  when that engine is freed ("The process may start another engine, which must not inherit the cap").
  With the engine core in this process, the second engine, the pooling engine of
  ``hidden_states=pooling`` and the transformers copy of ``exact_entropy=transformers`` all allocate
  under the first engine's cap. Giving each engine core its own process would contain the cap, but
  gives up what the in-process engine is for (prompt logprobs off the IPC channel, no ``__main__``
  guard) and still leaves the first engine's allocator free to grow into what it measured as free,
  which is the second engine's room. So where the argument exists the backend passes
  ``enable_extensible_kv_cache=False`` (vLLM's own switch back to estimate-based sizing, the 0.33
  behaviour); a user who asks for the extensible cache with an in-process engine core is refused.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from typing import Literal

from tandem_lm_eval.backends.base import BackendError

logger = logging.getLogger(__name__)

GiB = 1 << 30
#: What vLLM assumes for one engine when no share is given (< 0.34, or 0.34 without the extensible cache).
VLLM_DEFAULT_SHARE = 0.92
#: The sum of both engines' shares: each CUDA context and NCCL/cuBLAS workspace lives outside the shares.
TWO_ENGINE_BUDGET = 0.90
#: Per engine beyond its weights: activations at the profiled batch, CUDA graphs, sampler buffers.
#: An allowance, not a measurement (no GPU here); vLLM itself refuses to start if it is too small.
ENGINE_OVERHEAD_BYTES = 2 * GiB
#: The smallest KV cache worth starting an engine with (one 16k-token sequence of a 7B model is ~0.9 GiB).
MIN_KV_CACHE_BYTES = 1 * GiB

BYTES_PER_PARAMETER = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "auto": 2}

KVCacheMode = Literal["fixed", "extensible", "fixed (no extensible cache in this vLLM)"]


@dataclass(frozen=True)
class EngineNeed:
    """One engine's demand on the shared GPU."""

    role: str
    weight_bytes: int | None  # per GPU (weights / tensor_parallel_size); None: unknown
    share: float | None = None  # the user's gpu_memory_utilization
    kv_cache_bytes: int | None = None  # the user's kv_cache_memory_bytes


@dataclass(frozen=True)
class MemoryShare:
    """What one engine is given: a fraction of the GPU, or a KV cache in bytes; and where it came from."""

    role: str
    gpu_memory_utilization: float | None
    kv_cache_memory_bytes: int | None
    source: Literal["given", "derived"]

    def engine_args(self) -> dict[str, float | int]:
        if self.kv_cache_memory_bytes is not None:
            return {"kv_cache_memory_bytes": self.kv_cache_memory_bytes}
        assert self.gpu_memory_utilization is not None
        return {"gpu_memory_utilization": self.gpu_memory_utilization}

    def describe(self) -> str:
        if self.kv_cache_memory_bytes is not None:
            return f"kv_cache_memory_bytes={self.kv_cache_memory_bytes} ({self.source})"
        return f"gpu_memory_utilization={self.gpu_memory_utilization:.2f} ({self.source})"


def weight_bytes_of(
    parameters: float | None, dtype: str, tensor_parallel_size: int, quantized: bool
) -> int | None:
    """Bytes of one GPU's part of the weights, or None when they cannot be known before loading
    (no parameter count, a quantized checkpoint, a dtype this table does not know)."""
    per = BYTES_PER_PARAMETER.get(str(dtype).removeprefix("torch."))
    if not parameters or quantized or per is None:
        return None
    return int(parameters * per / max(tensor_parallel_size, 1))


def split_gpu_memory(
    needs: list[EngineNeed],
    gpu_total_bytes: int,
    budget: float = TWO_ENGINE_BUDGET,
    overhead_bytes: int = ENGINE_OVERHEAD_BYTES,
    min_kv_bytes: int = MIN_KV_CACHE_BYTES,
) -> list[MemoryShare]:
    """Each engine's share of one GPU, so that together they stay within ``budget`` of it.

    Given shares (or KV-cache sizes) stand; the engines without one split what is left: each gets its
    weights and the overhead allowance, and the rest of the budget goes to their KV caches in
    proportion to their weights (a model's KV bytes per token grow with its size: 32B/7B R1-Distill
    ~4.6x, weights ~4.3x). Raises BackendError (one line, before any load) when they cannot fit."""
    if gpu_total_bytes <= 0:
        raise ValueError("gpu_total_bytes must be positive")
    fixed, todo = 0.0, []
    for need in needs:
        if need.kv_cache_bytes is not None:
            if need.weight_bytes is None:
                raise BackendError(
                    f"vllm backend: {need.role}_kv_cache_memory_bytes is given but the {need.role}'s weight size "
                    f"is not known before loading; give {need.role}_gpu_memory_utilization as well"
                )
            fixed += (need.weight_bytes + overhead_bytes + need.kv_cache_bytes) / gpu_total_bytes
        elif need.share is not None:
            fixed += need.share
        else:
            todo.append(need)
    roles = " and ".join(f"{n.role}_gpu_memory_utilization" for n in needs)
    left = budget - fixed
    if not todo:
        if fixed > budget + 1e-9:
            raise BackendError(
                f"vllm backend: the engines on one GPU take {fixed:.2f} of its memory together, more than "
                f"{budget:.2f}; lower {roles}"
            )
        return [_given(n, gpu_total_bytes, overhead_bytes) for n in needs]
    unknown = [n.role for n in todo if n.weight_bytes is None]
    if unknown:
        raise BackendError(
            f"vllm backend: two engines share one GPU and the {' and '.join(unknown)}'s weight size is not known "
            f"before loading (no local checkpoint or num_params, or a quantized model); give {roles}"
        )
    need_bytes = sum(n.weight_bytes + overhead_bytes + min_kv_bytes for n in todo)  # type: ignore[operator]
    room = left * gpu_total_bytes
    if need_bytes > room:
        raise BackendError(
            f"vllm backend: the {' and '.join(n.role for n in todo)} need at least {need_bytes / GiB:.1f} GiB "
            f"(weights + {overhead_bytes / GiB:.0f} GiB + a {min_kv_bytes / GiB:.0f} GiB KV cache each) and "
            f"{room / GiB:.1f} GiB of the GPU's {gpu_total_bytes / GiB:.1f} GiB are left for them: the models do "
            f"not fit one GPU (quantize one, shard the mentor with mentor_tensor_parallel_size, or serve it "
            f"elsewhere with mentor_backend=openai)"
        )
    spare = room - need_bytes
    weights = sum(n.weight_bytes for n in todo)  # type: ignore[misc]
    derived = {}
    for n in todo:
        kv = min_kv_bytes + spare * n.weight_bytes / weights  # type: ignore[operator]
        # rounded down to 0.01: vLLM's shares are fractions, and rounding up could pass the budget
        share = int(100 * (n.weight_bytes + overhead_bytes + kv) / gpu_total_bytes) / 100  # type: ignore[operator]
        derived[n.role] = MemoryShare(n.role, share, None, "derived")
    return [derived.get(n.role) or _given(n, gpu_total_bytes, overhead_bytes) for n in needs]


def _given(need: EngineNeed, gpu_total_bytes: int, overhead_bytes: int) -> MemoryShare:
    if need.kv_cache_bytes is not None:
        return MemoryShare(need.role, None, need.kv_cache_bytes, "given")
    if need.weight_bytes is not None and need.share is not None:
        if need.weight_bytes + overhead_bytes > need.share * gpu_total_bytes:
            raise BackendError(
                f"vllm backend: {need.role}_gpu_memory_utilization={need.share:g} is "
                f"{need.share * gpu_total_bytes / GiB:.1f} GiB, less than the {need.role}'s weights and "
                f"overhead ({(need.weight_bytes + overhead_bytes) / GiB:.1f} GiB); raise it"
            )
    return MemoryShare(need.role, need.share, None, "given")


def kv_cache_mode(
    has_extensible_switch: bool, in_process: bool, requested: bool | None
) -> tuple[KVCacheMode, dict]:
    """(mode, engine args to add) for one engine. ``requested``: the user's enable_extensible_kv_cache."""
    if not has_extensible_switch:
        if requested:
            raise BackendError("vllm backend: enable_extensible_kv_cache needs vLLM >= 0.34")
        return "fixed (no extensible cache in this vLLM)", {}
    if requested and in_process:
        raise BackendError(
            "vllm backend: enable_extensible_kv_cache=true caps torch's allocator for the whole process, and "
            "the engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0): a second engine or the "
            "transformers copy would inherit the cap; set VLLM_ENABLE_V1_MULTIPROCESSING=1 or leave it off"
        )
    if requested or (requested is None and not in_process):
        return "extensible", {}
    return "fixed", {"enable_extensible_kv_cache": False}


# --- before loading: the roles' shares ---------------------------------------------------------------
@dataclass(frozen=True)
class RoleEngine:
    """A role that will start a vLLM engine: what the plan needs to know before it loads."""

    role: str
    model: str
    options: dict
    num_params: float | None = None  # the role's <role>_num_params (Eq. 12's count), a fallback size


def shared_gpu_shares(roles: list[RoleEngine], gpu_total_bytes: int | None = None) -> dict[str, dict]:
    """Engine args to add per role so that two vLLM engines on one GPU both have an explicit share
    (``split_gpu_memory``); {} for one engine or a CPU-only vLLM. Raises BackendError (one line) when
    they cannot fit, before any model loads. ``gpu_total_bytes``: the GPU's memory (default: asked of
    torch for the current CUDA device)."""
    from tandem_lm_eval.common.options import as_bytes, as_float, as_int, converted

    if len(roles) < 2:
        return {}
    if gpu_total_bytes is None:
        gpu_total_bytes = _gpu_total_bytes()
        if gpu_total_bytes is None:
            return {}
    option = functools.partial(converted, BackendError, "vllm backend: ")
    needs = []
    for r in roles:
        o = r.options
        share = o.get("gpu_memory_utilization")
        kv = o.get("kv_cache_memory_bytes")
        tp = option(as_int, f"{r.role}_tensor_parallel_size", o.get("tensor_parallel_size", 1), minimum=1)
        parameters, quantized = _checkpoint_size(r.model, o.get("revision"))
        weights = weight_bytes_of(
            parameters or r.num_params, o.get("dtype", "auto"), tp, quantized or bool(o.get("quantization"))
        )
        needs.append(
            EngineNeed(
                r.role,
                weights,
                None
                if share is None
                else option(as_float, f"{r.role}_gpu_memory_utilization", share, 0.0, 1.0),
                None if kv is None else option(as_bytes, f"{r.role}_kv_cache_memory_bytes", kv),
            )
        )
    shares = split_gpu_memory(needs, gpu_total_bytes)
    logger.info(
        "vllm: two engines on one GPU of %.1f GiB: %s",
        gpu_total_bytes / GiB,
        ", ".join(f"{s.role} {s.describe()}" for s in shares),
    )
    return {s.role: s.engine_args() for s in shares if s.source == "derived"}


def _gpu_total_bytes() -> int | None:
    """The current CUDA device's memory, or None on a CPU-only vLLM build or without a GPU."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return None
    if current_platform.is_cpu():
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.mem_get_info()[1])


def _checkpoint_size(model: str, revision: str | None) -> tuple[int | None, bool]:
    """(parameters from the local checkpoint's safetensors headers, whether it is quantized)."""
    from tandem_lm_eval.backends.rendering import resolve_model_path
    from tandem_lm_eval.data.checkpoint import local_model_folder, safetensors_parameter_count

    try:
        path, gguf_file = resolve_model_path(model)
    except Exception:  # an unknown name: the backend says so when it loads
        return None, False
    if gguf_file:
        return None, True  # GGUF weights are quantized blocks: no size from a parameter count
    folder = local_model_folder(path, revision)
    if folder is None:
        return None, False
    config = folder / "config.json"
    quantized = config.is_file() and "quantization_config" in json.loads(config.read_text(encoding="utf-8"))
    return (safetensors_parameter_count(folder) or None), quantized
