"""``StoredBackend``: any backend, with its results kept in a ``RunStore`` so a rerun never recomputes them.

Each request is keyed by the model's fingerprint and the request itself: a generation by the prompt
(messages/raw text/thinking), the prefix's *token ids* (what a continuation actually conditions on),
forced text, token budget, stop strings and sampling; a scoring by the prompt with its segments. Stored
requests are served, the missing ones go to the inner backend in ONE call (batching kept, order kept)
and are written as soon as that call returns, so a crash loses at most the batch in flight.

Because a mentor stage's key holds the previous stage's token ids, a mentor's stage outputs chain and
never mention the intern: changing the intern, the classifier or the thresholds reuses every mentor
entry, while changing the mentor's weights, dtype or decoding reuses none.

Values are JSON (generations) and raw little-endian arrays behind a JSON header (scores), never pickle:
a store file from elsewhere must not be able to run code.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..prompts import MENTOR_SYSTEM_PROMPT, prompt_question_hash
from ..store import RunStore, StoreEntry, StoreError
from .base import Backend, BackendError, Generation, GenerationRequest, Prompt, PromptScores

logger = logging.getLogger(__name__)

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
    return hashlib.sha256(_canonical(fp)).hexdigest()


def model_identity(model: str, backend: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The weights a model spec names, cheaply: a local folder by its resolved path, a hash of its
    small files and its weight files' names and sizes; a hub id by id, revision and (when the hub
    cache has it) the commit; ``demo`` by the demo package version; a recorded mentor by the file's hash."""
    from .rendering import looks_like_local_path

    options = options or {}
    if backend == "recorded":
        path = Path(model).expanduser().resolve()
        return {"recorded": str(path), "sha256": _file_sha256(path) if path.is_file() else None}
    if backend == "openai":
        return {"served": model}  # base_url is an option, so it is in the fingerprint too
    if model == "demo":
        from ..demo import DEMO_FOLDER, DEMO_PACKAGE

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
    text = str(value)
    return text.lower() if text.lower() in ("true", "false") else text


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


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
    return hashlib.sha256(_canonical(payload)).hexdigest()


def scores_key(model_digest: str, role: str, prompt: Prompt) -> str:
    payload = {
        "v": KEY_VERSION,
        "kind": "scores",
        "role": role,
        "model": model_digest,
        "prompt": _prompt_dict(prompt, True),
    }
    return hashlib.sha256(_canonical(payload)).hexdigest()


def _is_insight_prompt(prompt: Prompt) -> bool:
    """A mentor prompt of the cascade (Figure 6 system message), not a prompt the mentor answers."""
    return bool(prompt.messages) and prompt.messages[0].content.startswith(MENTOR_SYSTEM_PROMPT)


# --- values ---------------------------------------------------------------------------------------
def encode_generation(gen: Generation) -> bytes:
    data = asdict(gen)
    data["token_ids"] = [int(i) for i in gen.token_ids]
    return _canonical(data)


def decode_generation(blob: bytes) -> Generation:
    try:
        data = json.loads(blob)
        ids = data["token_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise ValueError("token_ids is not a list of integers")
        if data["finish_reason"] not in ("stop", "length"):
            raise ValueError(f"finish_reason {data['finish_reason']!r}")
        return Generation(
            text=str(data["text"]),
            token_ids=tuple(ids),
            new_tokens=int(data["new_tokens"]),
            finish_reason=data["finish_reason"],
            cached_prompt_tokens=data.get("cached_prompt_tokens"),
            prompt_tokens=data.get("prompt_tokens"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"undecodable generation: {exc}") from None


_SCORES_MAGIC = b"TSC1"


def _le(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    if array.dtype.kind != "f":
        raise ValueError(f"scores arrays must be floating point, got {array.dtype}")
    return array.astype(array.dtype.newbyteorder("<"), copy=False)


def encode_scores(sc: PromptScores) -> bytes:
    """``TSC1`` + header length (uint32 LE) + JSON header + the arrays' raw little-endian bytes
    (token_logprobs, entropies, then the bounds when present), each in its own dtype: bit-exact."""
    arrays = [sc.token_logprobs, sc.entropies]
    if sc.entropy_bounds is not None:
        arrays += list(sc.entropy_bounds)
    arrays = [_le(a) for a in arrays]
    header = {
        "num_tokens": int(sc.num_tokens),
        "entropy_method": sc.entropy_method,
        "spans": None
        if sc.spans is None
        else {k: [[int(a), int(b)] for a, b in v] for k, v in sc.spans.items()},
        "arrays": [[a.dtype.str, int(a.size)] for a in arrays],
    }
    head = _canonical(header)
    return b"".join([_SCORES_MAGIC, struct.pack("<I", len(head)), head, *(a.tobytes() for a in arrays)])


def decode_scores(blob: bytes) -> PromptScores:
    try:
        if blob[:4] != _SCORES_MAGIC:
            raise ValueError("bad magic")
        (n,) = struct.unpack("<I", blob[4:8])
        header = json.loads(blob[8 : 8 + n])
        offset = 8 + n
        arrays = []
        for dtype, size in header["arrays"]:
            dt = np.dtype(dtype)
            if dt.kind != "f":
                raise ValueError(f"dtype {dtype}")
            end = offset + dt.itemsize * int(size)
            if end > len(blob):
                raise ValueError("truncated arrays")
            arrays.append(np.frombuffer(blob[offset:end], dtype=dt).astype(dt.newbyteorder("="), copy=True))
            offset = end
        if offset != len(blob) or len(arrays) not in (2, 4):
            raise ValueError("trailing bytes or wrong array count")
        spans = header["spans"]
        return PromptScores(
            token_logprobs=arrays[0],
            entropies=arrays[1],
            num_tokens=int(header["num_tokens"]),
            entropy_method=header["entropy_method"],
            entropy_bounds=(arrays[2], arrays[3]) if len(arrays) == 4 else None,
            spans=None
            if spans is None
            else {k: tuple((int(a), int(b)) for a, b in v) for k, v in spans.items()},
        )
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise ValueError(f"undecodable scores: {exc}") from None


# --- the wrapper ----------------------------------------------------------------------------------
@dataclass
class StoreCounts:
    """Requests answered from the store (served) and by the inner backend (computed)."""

    generations_served: int = 0
    generations_computed: int = 0
    scores_served: int = 0
    scores_computed: int = 0
    unsaved: int = 0  # computed but not written (the store refused a write; see the warning)

    @property
    def served(self) -> int:
        return self.generations_served + self.scores_served

    @property
    def computed(self) -> int:
        return self.generations_computed + self.scores_computed

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class StoredBackend(Backend):
    """``inner`` with a store in front of ``generate`` and ``score``; everything else is the inner
    backend's (``loglikelihood`` is not stored: it is cheap and one call per task)."""

    def __init__(
        self,
        inner: Backend,
        store: RunStore,
        role: str,
        fingerprint: dict[str, Any],
        *,
        num_params: float | None = None,
        model_label: str | None = None,
    ) -> None:
        if role not in ("mentor", "intern"):
            raise ValueError(f"role must be 'mentor' or 'intern', got {role!r}")
        self.inner = inner
        self.store = store
        self.role = role
        self.fingerprint = dict(fingerprint)
        self.fingerprint_digest = fingerprint_digest(self.fingerprint)
        self.name = inner.name
        self.model_label = model_label or inner.model_name
        self.num_params = num_params  # recorded with mentor generations, for a recorded-mentor export
        self.counts = StoreCounts()
        self._warned_write = False

    # --- delegated ------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def num_parameters(self) -> int:
        return self.inner.num_parameters

    @property
    def max_context(self) -> int:
        return self.inner.max_context

    def count_tokens(self, prompt: Prompt) -> int:
        return self.inner.count_tokens(prompt)

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        return self.inner.loglikelihood(pairs)

    def close(self) -> None:
        self.inner.close()
        self.store.close()

    def __getattr__(self, name: str) -> Any:
        # Engine attributes (entropy_method, tokenizer, model, usage, ...) are the inner backend's.
        inner = self.__dict__.get("inner")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    # --- stored ---------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        requests = list(requests)
        keys = [generation_key(self.fingerprint_digest, self.role, r) for r in requests]
        known = self._lookup(keys, decode_generation)
        # Identical requests of one batch are computed once: a rerun serves them one stored value, so
        # computing them once also makes the first run equal to any resumed one.
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in known:
                todo.setdefault(key, i)
        if todo:
            sent = [requests[i] for i in todo.values()]
            gens = self.inner.generate(sent)
            if len(gens) != len(sent):
                raise BackendError(f"{self.name} backend returned {len(gens)} generations for {len(sent)}")
            entries = []
            for key, req, gen in zip(todo, sent, gens):
                known[key] = gen
                entries.append(
                    self._entry(key, "generation", encode_generation(gen), self._gen_meta(req, gen))
                )
            self._save(entries)
            self.counts.generations_computed += len(sent)
        self.counts.generations_served += len(requests) - len(todo)
        return [known[k] for k in keys]

    def score(self, prompts: Sequence[Prompt]) -> list[PromptScores]:
        prompts = list(prompts)
        keys = [scores_key(self.fingerprint_digest, self.role, p) for p in prompts]
        known = self._lookup(keys, decode_scores)
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in known:
                todo.setdefault(key, i)
        if todo:
            sent = [prompts[i] for i in todo.values()]
            scores = self.inner.score(sent)
            if len(scores) != len(sent):
                raise BackendError(f"{self.name} backend returned {len(scores)} scores for {len(sent)}")
            entries = []
            for key, sc in zip(todo, scores):
                known[key] = sc
                entries.append(self._entry(key, "scores", encode_scores(sc), {"tokens": int(sc.num_tokens)}))
            self._save(entries)
            self.counts.scores_computed += len(sent)
        self.counts.scores_served += len(prompts) - len(todo)
        return [known[k] for k in keys]

    def _lookup(self, keys: list[str], decode) -> dict[str, Any]:
        known = {}
        for key, blob in self.store.get_many(keys).items():
            try:
                known[key] = decode(blob)
            except ValueError as exc:  # sound bytes, wrong content (e.g. a foreign writer): recompute
                self.store.discard(key, str(exc))
        return known

    def _gen_meta(self, req: GenerationRequest, gen: Generation) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "q": prompt_question_hash(req.prompt),
            "budget": (len(req.prefix.token_ids) if req.prefix else 0) + int(req.max_new_tokens),
            "tokens": len(gen.token_ids),
        }
        if self.role == "mentor":
            meta["insights"] = _is_insight_prompt(req.prompt) and not req.forced_text
            if self.num_params is not None:
                meta["num_params"] = float(self.num_params)
        return meta

    def _entry(self, key: str, kind: str, value: bytes, meta: dict[str, Any]) -> StoreEntry:
        return StoreEntry(key, kind, self.role, self.model_label, self.fingerprint_digest, value, meta)

    def _save(self, entries: list[StoreEntry]) -> None:
        try:
            self.store.put_many(entries)
        except StoreError as exc:
            # The results are in hand: finish the run, but say that a crash would now lose them.
            self.counts.unsaved += len(entries)
            if not self._warned_write:
                self._warned_write = True
                logger.warning(
                    "%s; the run goes on, but the %s's new results are not stored (a crash would lose them)",
                    exc,
                    self.role,
                )


def store_of(*backends: Backend | None) -> RunStore | None:
    """The run store behind these backends (None when none is stored)."""
    for b in backends:
        if isinstance(b, StoredBackend):
            return b.store
    return None


# --- export ---------------------------------------------------------------------------------------
def mentor_fingerprints(store: RunStore) -> dict[str, dict[str, Any]]:
    """fingerprint digest -> {model, entries} of the stored mentor insight generations."""
    out: dict[str, dict[str, Any]] = {}
    for group in store.stats()["groups"]:
        if group["role"] == "mentor" and group["kind"] == "generation":
            slot = out.setdefault(group["fingerprint"], {"model": group["model"], "entries": 0})
            slot["entries"] += group["entries"]
    return out


def export_recorded_mentor(store: RunStore, out: str | Path, model: str | None = None) -> int:
    """Write the store's mentor insights as a recorded-mentor file (``records.py``) that
    ``mentor_backend=recorded,mentor=FILE`` replays: per question, the mentor's longest generation.

    ``model`` picks the mentor (its name or fingerprint, or a prefix of 8+ characters) when the store
    holds several; generations of different mentors (or decodings) are never mixed. Returns how many
    questions were written.
    """
    from ..records import MentorOutput, QuestionRecord, write_records

    fps = mentor_fingerprints(store)
    if model is not None:
        fps = {
            fp: v
            for fp, v in fps.items()
            if v["model"] == model or fp == model or (len(model) >= 8 and fp.startswith(model))
        }
    if not fps:
        raise StoreError(
            f"run store {store.path} has no mentor generations" + (f" of model {model!r}" if model else "")
        )
    if len(fps) > 1:
        listing = "; ".join(
            f"{v['model']} (fingerprint {fp[:12]}, {v['entries']} entries)" for fp, v in fps.items()
        )
        raise StoreError(
            f"run store {store.path} holds generations of {len(fps)} mentors (or decodings): {listing}; "
            "pick one with --model NAME or --model FINGERPRINT"
        )
    (fp,) = fps
    best: dict[str, tuple[Generation, StoreEntry]] = {}
    for entry in store.iter_entries(kind="generation", role="mentor", fingerprint=fp):
        if not entry.meta.get("insights") or not entry.meta.get("q"):
            continue
        try:
            gen = decode_generation(entry.value)
        except ValueError as exc:
            store.discard(entry.key, str(exc))
            continue
        q = entry.meta["q"]
        known = best.get(q)
        if known is None or len(gen.token_ids) > len(known[0].token_ids):
            best[q] = (gen, entry)
    if not best:
        raise StoreError(f"run store {store.path}: the mentor {fps[fp]['model']} has no stored insights")
    records = [
        QuestionRecord(
            question_hash=q,
            question="",  # the store keeps hashes, not question texts
            stages=[],
            kind="store",
            mentor=MentorOutput(
                text=gen.text,
                token_ids=list(gen.token_ids),
                finished=gen.finish_reason == "stop",
                model=entry.model,
                num_params=entry.meta.get("num_params"),
            ),
        )
        for q, (gen, entry) in sorted(best.items())
    ]
    out = Path(out)
    partial = out.with_name(out.name + ".partial")  # replaced in one step: never a half file
    partial.unlink(missing_ok=True)
    n = write_records(partial, records)
    partial.replace(out)
    return n
