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

Time: each entry's meta keeps the seconds its output took (its share of the inner call that computed
it, on ``clock``, which the cascade sets to the phase clock of cost/ledger.py). An output served from
the store brings those seconds, as it brings its tokens: after each call ``last_seconds`` holds every
request's, so a request's latency is what computing its output took, never the time to read it back
(docs/cost-reporting.md). Entries stored without seconds (by an earlier version) report None, with one
warning.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tandem_lm_eval.backends.base import (
    Backend,
    BackendError,
    Generation,
    GenerationRequest,
    HiddenRequest,
    Prompt,
    PromptScores,
)
from tandem_lm_eval.common.question_hash import prompt_question_hash
from tandem_lm_eval.store.codec import (
    decode_generation,
    decode_scores,
    encode_generation,
    encode_scores,
)
from tandem_lm_eval.store.keys import fingerprint_digest, generation_key, scores_key
from tandem_lm_eval.store.run_store import RunStore, StoreEntry, StoreError

logger = logging.getLogger(__name__)


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
        # the clock the inner calls are timed with, and each request's seconds of the last call (None:
        # served from an entry stored without them)
        self.clock: Callable[[], float] = time.perf_counter
        self.last_seconds: list[float | None] | None = None
        self._warned_untimed = False

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

    def hidden_shape(self) -> tuple[int, int]:
        return self.inner.hidden_shape()

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
        self.last_seconds = None
        keys = [generation_key(self.fingerprint_digest, self.role, r) for r in requests]
        known, seconds = self._lookup(keys, decode_generation)
        # Identical requests of one batch are computed once: a rerun serves them one stored value, so
        # computing them once also makes the first run equal to any resumed one.
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in known:
                todo.setdefault(key, i)
        if todo:
            sent = [requests[i] for i in todo.values()]
            t0 = self.clock()
            gens = self.inner.generate(sent)
            took = self._inner_seconds(t0, len(sent))
            if len(gens) != len(sent):
                raise BackendError(f"{self.name} backend returned {len(gens)} generations for {len(sent)}")
            entries = []
            for key, req, gen, share in zip(todo, sent, gens, took):
                known[key], seconds[key] = gen, share
                meta = {**self._gen_meta(req, gen), "seconds": share}
                entries.append(self._entry(key, "generation", encode_generation(gen), meta))
            self._save(entries)
            self.counts.generations_computed += len(sent)
        self.counts.generations_served += len(requests) - len(todo)
        self._note_seconds(keys, seconds)
        return [known[k] for k in keys]

    def score(self, prompts: Sequence[Prompt], hidden: HiddenRequest | None = None) -> list[PromptScores]:
        prompts = list(prompts)
        self.last_seconds = None
        keys = [scores_key(self.fingerprint_digest, self.role, p, hidden) for p in prompts]
        known, seconds = self._lookup(keys, decode_scores)
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in known:
                todo.setdefault(key, i)
        if todo:
            sent = [prompts[i] for i in todo.values()]
            t0 = self.clock()
            scores = self.inner.score(sent) if hidden is None else self.inner.score(sent, hidden)
            took = self._inner_seconds(t0, len(sent))
            if len(scores) != len(sent):
                raise BackendError(f"{self.name} backend returned {len(scores)} scores for {len(sent)}")
            entries = []
            for key, sc, share in zip(todo, scores, took):
                known[key], seconds[key] = sc, share
                meta = {"tokens": int(sc.num_tokens), "seconds": share}
                entries.append(self._entry(key, "scores", encode_scores(sc), meta))
            self._save(entries)
            self.counts.scores_computed += len(sent)
        self.counts.scores_served += len(prompts) - len(todo)
        self._note_seconds(keys, seconds)
        return [known[k] for k in keys]

    def _inner_seconds(self, t0: float, n: int) -> list[float]:
        """Each of the inner call's ``n`` requests' seconds: the engine's own where it reported them
        (``last_seconds``, backends/vllm.py), else an equal share of the call."""
        elapsed = self.clock() - t0
        reported = getattr(self.inner, "last_seconds", None)
        if isinstance(reported, list) and len(reported) == n and all(isinstance(s, float) for s in reported):
            return list(reported)
        return [elapsed / n] * n

    def _lookup(self, keys: list[str], decode) -> tuple[dict[str, Any], dict[str, float]]:
        """The stored values of ``keys`` that decode, and the seconds each took when computed."""
        known, seconds = {}, {}
        for key, (blob, meta) in self.store.get_many_with_meta(keys).items():
            try:
                known[key] = decode(blob)
            except ValueError as exc:  # sound bytes, wrong content (e.g. a foreign writer): recompute
                self.store.discard(key, str(exc))
                continue
            took = meta.get("seconds")
            if isinstance(took, (int, float)) and math.isfinite(took) and took >= 0:
                seconds[key] = float(took)
        return known, seconds

    def _note_seconds(self, keys: list[str], seconds: dict[str, float]) -> None:
        self.last_seconds = [seconds.get(k) for k in keys]
        untimed = self.last_seconds.count(None)
        if untimed and not self._warned_untimed:
            self._warned_untimed = True
            logger.warning(
                "run store %s: %d %s outputs were stored without the seconds they took (an earlier "
                "version): their latency is the time to read them back",
                self.store.path,
                untimed,
                self.role,
            )

    def _gen_meta(self, req: GenerationRequest, gen: Generation) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "q": prompt_question_hash(req.prompt),
            "budget": (len(req.prefix.token_ids) if req.prefix else 0) + int(req.max_new_tokens),
            "tokens": len(gen.token_ids),
        }
        if self.role == "mentor":
            meta["insights"] = req.insights and not req.forced_text
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
