"""The run store's keys: a model's fingerprint (what makes two models the same model) and the key of
each request (everything that decides its result, nothing that does not).

Because a mentor stage's key holds the previous stage's token ids, a mentor's stage outputs chain and
never mention the intern: changing the intern, the classifier or the thresholds reuses every mentor
entry, while changing the mentor's weights, dtype or decoding reuses none."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path
from typing import Any

from tandem_lm_eval.backends.base import (
    Backend,
    GenerationRequest,
    HiddenRequest,
    Prompt,
)
from tandem_lm_eval.common.redaction import redact_urls
from tandem_lm_eval.store.codec import canonical_json

# Bump when the key layout or a value format changes: old entries then simply stop matching.
KEY_VERSION = 1


# Backend options that change speed or memory but never an output, so they are left out of the
# fingerprint (changing them keeps every stored entry). Every other option is assumed to change
# outputs. Keep this the one list of them. Deliberately not here: ``device`` (CPU and GPU kernels round
# differently) and ``seed`` (a vLLM engine's sampling seed).
PERFORMANCE_ONLY_OPTIONS = frozenset(
    {
        "batch_size",  # hf: how many prompts per forward pass
        "gpu_memory_utilization",  # vllm: KV cache size
        "kv_cache_memory_bytes",
        "tensor_parallel_size",  # vllm: how many GPUs share the model
        "enforce_eager",  # vllm: CUDA graphs or not
        "max_num_seqs",  # vllm scheduler
        "max_num_batched_tokens",
        "reuse_scores",  # vllm: the prefix-score memo (score_memo.py) skips positions, same values
        "concurrency",  # openai: parallel HTTP requests
        "timeout",
        "max_retries",
        "retry_backoff",
        "api_key_env",  # which variable holds the key, not which model answers
    }
)


# Files of a model folder: weights are identified by name and size (hashing 65 GB would take minutes);
# the small files that shape outputs (config, tokenizer, chat template, remote code) by their bytes.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".h5", ".msgpack", ".ckpt")


_CONTENT_SUFFIXES = (".json", ".jinja", ".model", ".txt", ".py", ".tiktoken")


_CONTENT_LIMIT = 64 << 20


# --- fingerprint ----------------------------------------------------------------------------------
def fingerprint(role_config, backend: Backend | None = None) -> dict[str, Any]:
    """What identifies a role's outputs: the model (see ``model_identity``), the backend and engine
    version, the dtype, every backend option that changes outputs, and thinking.

    ``role_config`` is a ``config.RoleConfig``; ``backend`` (optional) names the engine when the
    config still says ``auto``.
    """
    name = role_config.backend if role_config.backend != "auto" or backend is None else backend.name
    options = {
        k: _option_value(v)
        for k, v in sorted(role_config.options.items())
        if k not in PERFORMANCE_ONLY_OPTIONS and k != "dtype"
    }
    return {
        "key_version": KEY_VERSION,
        "backend": name,
        "engine": _engine_versions(name),
        "model": model_identity(role_config.model, name, role_config.options),
        "dtype": str(role_config.options.get("dtype", "auto")),
        "options": options,
        "thinking": role_config.thinking,
    }


def fingerprint_digest(fp: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(fp)).hexdigest()


def model_identity(model: str, backend: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The weights a model spec names, cheaply: a local folder by its resolved path, a hash of its
    small files and its weight files' names and sizes; a hub id by id, revision and (when the hub
    cache has it) the commit; ``demo`` by the demo package version; a recorded mentor by the file's hash."""
    from tandem_lm_eval.backends.rendering import looks_like_local_path

    options = options or {}
    if backend == "recorded":
        path = Path(model).expanduser().resolve()
        return {"recorded": str(path), "sha256": _file_sha256(path) if path.is_file() else None}
    if backend == "openai":
        return {"served": model}  # base_url is an option, so it is in the fingerprint too
    if model == "demo":
        from tandem_lm_eval.data.demo_model import DEMO_FOLDER, DEMO_PACKAGE

        return {"demo": DEMO_FOLDER, "package_version": _version(DEMO_PACKAGE.replace("_", "-"))}
    if looks_like_local_path(model):
        path = Path(model).expanduser().resolve()
        if path.is_file():
            return {"path": str(path), "size": path.stat().st_size}
        return {"path": str(path), "files": folder_digest(path)}
    revision = options.get("revision")
    return {"hub": model, "revision": revision, "commit": _hub_commit(model, revision)}


def folder_digest(folder: Path) -> str:
    """sha256 over a model folder's weight files (name and size) and small files (name and bytes)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        size = f.stat().st_size
        if f.suffix in _WEIGHT_SUFFIXES or size > _CONTENT_LIMIT:
            h.update(f"weights {f.name} {size}\n".encode())
        elif f.suffix in _CONTENT_SUFFIXES:
            h.update(f"file {f.name} {_file_sha256(f)}\n".encode())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hub_commit(model: str, revision: str | None) -> str | None:
    """The commit the local hub cache resolves ``revision`` to (a newer download changes it)."""
    if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    try:
        from huggingface_hub import constants

        ref = (
            Path(constants.HF_HUB_CACHE)
            / f"models--{model.replace('/', '--')}"
            / "refs"
            / (revision or "main")
        )
        return ref.read_text().strip() if ref.is_file() else None
    except Exception:  # no hub library or an odd cache layout: id and revision still identify it
        return None


def _engine_versions(backend: str) -> dict[str, str | None]:
    # A new engine version may round differently: one run's entries should not mix versions.
    packages = {"hf": ("transformers", "torch"), "vllm": ("vllm", "torch")}.get(backend, ())
    return {p: _version(p) for p in packages}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _option_value(value: Any) -> Any:
    # model_args arrive typed by lm-eval (50, True) or as text ("50", "true"): one spelling for both.
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    # a URL's credentials and query string identify no model: never kept, not even hashed into a key
    text = redact_urls(str(value))
    return text.lower() if text.lower() in ("true", "false") else text


# --- keys -----------------------------------------------------------------------------------------
def _prompt_dict(prompt: Prompt, with_segments: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "messages": [[m.role, m.content] for m in prompt.messages],
        "raw_text": prompt.raw_text,
        "thinking": prompt.thinking,
    }
    if with_segments:  # segments decide the scores' spans, not a generation
        out["segments"] = [[s.name, s.message, s.start, s.end] for s in prompt.segments]
    return out


def generation_key(model_digest: str, role: str, req: GenerationRequest) -> str:
    payload = {
        "v": KEY_VERSION,
        "kind": "generation",
        "role": role,
        "model": model_digest,
        "prompt": _prompt_dict(req.prompt, False),
        # the prefix's token ids, not its text: they are what the continuation conditions on
        "prefix": None if req.prefix is None else [int(i) for i in req.prefix.token_ids],
        "forced_text": req.forced_text,
        "max_new_tokens": int(req.max_new_tokens),
        "stop": list(req.stop),
        "temperature": float(req.temperature),
        "top_p": float(req.top_p),
        "seed": req.seed,
    }
    if req.temperature > 0 and req.sample:  # the k-th draw of a sampled request (first draws keep old keys)
        payload["sample"] = int(req.sample)
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def scores_key(model_digest: str, role: str, prompt: Prompt, hidden: HiddenRequest | None = None) -> str:
    payload = {
        "v": KEY_VERSION,
        "kind": "scores",
        "role": role,
        "model": model_digest,
        "prompt": _prompt_dict(prompt, True),
    }
    if hidden is not None:  # scores with hidden vectors are other entries (old keys unchanged)
        payload["hidden"] = {
            "layers": sorted(int(x) for x in hidden.layers),
            "adapter": hidden.adapter_id,
            "statistics": hidden.statistics,
        }
    return hashlib.sha256(canonical_json(payload)).hexdigest()
