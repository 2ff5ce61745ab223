"""Scores of recently scored prompts, found again by their longest common token prefix.

The cascade scores x_t = Q ⊕ I_t at every stage, and x_t extends x_{t-1}: the intern's
log-probability and entropy at a position depend only on the tokens up to it, so every position
inside the common prefix of x_{t-1} and x_t has the value it had one stage earlier. A backend that
can skip those positions (vLLM reading its prefix cache) asks this memo for them instead of
recomputing them; the memo is pure bookkeeping, no model.

Lookup is by chained block hashes (the hash of block b covers every token before it, as in vLLM's
prefix cache), so finding the longest stored prefix of a prompt costs one dict probe per block, and
a hash hit is confirmed by comparing the token ids. Entries are evicted least recently used once the
stored positions exceed ``max_positions``; an evicted entry only means recomputation, never a wrong
value.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tandem_lm_eval.backends.base import PromptScores

# 8M positions x (4 float64 arrays + int32 ids) ~ 300 MB of host memory at most.
DEFAULT_MAX_POSITIONS = 1 << 23
BLOCK = 16


@dataclass
class _Entry:
    ids: np.ndarray
    scores: PromptScores
    hashes: list[int]


def block_hashes(ids: Sequence[int], block: int = BLOCK) -> list[int]:
    """hash of blocks 0..b for every full block b of ``ids`` (each hash covers the whole prefix)."""
    out: list[int] = []
    previous = 0
    for start in range(0, len(ids) - block + 1, block):
        previous = hash((previous, *ids[start : start + block]))
        out.append(previous)
    return out


def slice_scores(scores: PromptScores, count: int) -> PromptScores:
    """The first ``count`` predicted positions (tokens 2..count+1) of ``scores``."""
    bounds = scores.entropy_bounds
    return PromptScores(
        scores.token_logprobs[:count],
        scores.entropies[:count],
        num_tokens=count + 1,
        entropy_method=scores.entropy_method,
        entropy_bounds=None if bounds is None else (bounds[0][:count], bounds[1][:count]),
    )


def join_scores(head: PromptScores, tail: PromptScores, num_tokens: int) -> PromptScores:
    """Positions of ``head`` followed by those of ``tail``, for a prompt of ``num_tokens`` tokens."""
    if head.entropy_method != tail.entropy_method:
        raise ValueError("cannot join scores of different entropy methods")
    bounds = None
    if head.entropy_bounds is not None and tail.entropy_bounds is not None:
        bounds = (
            np.concatenate([head.entropy_bounds[0], tail.entropy_bounds[0]]),
            np.concatenate([head.entropy_bounds[1], tail.entropy_bounds[1]]),
        )
    return PromptScores(
        np.concatenate([head.token_logprobs, tail.token_logprobs]),
        np.concatenate([head.entropies, tail.entropies]),
        num_tokens=num_tokens,
        entropy_method=head.entropy_method,
        entropy_bounds=bounds,
    )


class ScoreMemo:
    """Recently scored prompts; ``longest_prefix`` returns the stored scores sharing most leading tokens."""

    def __init__(self, max_positions: int = DEFAULT_MAX_POSITIONS, block: int = BLOCK) -> None:
        if max_positions < 1 or block < 1:
            raise ValueError("max_positions and block must be positive")
        self.max_positions, self.block = max_positions, block
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._by_hash: dict[int, int] = {}
        self._next_key = 0
        self.positions = 0  # predicted positions stored

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, ids: Sequence[int], scores: PromptScores) -> None:
        if len(ids) != scores.num_tokens:
            raise ValueError(f"scores are for {scores.num_tokens} tokens, ids have {len(ids)}")
        key, self._next_key = self._next_key, self._next_key + 1
        array = np.asarray(ids, dtype=np.int64)
        hashes = block_hashes(ids, self.block)
        self._entries[key] = _Entry(array, scores, hashes)
        for h in hashes:  # the newest entry answers for a shared prefix: it is the likeliest reused
            self._by_hash[h] = key
        self.positions += scores.token_logprobs.size
        while self.positions > self.max_positions and len(self._entries) > 1:
            self._evict(next(iter(self._entries)))

    def longest_prefix(self, ids: Sequence[int]) -> tuple[PromptScores, int] | None:
        """(stored scores, L): the entry whose first L tokens equal ``ids``'s first L, L maximal
        over the entries found by block; None when no entry shares a full block with ``ids``."""
        hashes = block_hashes(ids, self.block)
        array = np.asarray(ids, dtype=np.int64)
        # Deepest block first: a hash covers the whole prefix before it, so the first confirmed hit
        # is the longest block-aligned match (shallower keys may have moved to other entries).
        for depth in range(len(hashes), 0, -1):
            key = self._by_hash.get(hashes[depth - 1])
            if key is None:
                continue
            entry = self._entries[key]
            aligned = depth * self.block
            if entry.ids.size < aligned or not np.array_equal(entry.ids[:aligned], array[:aligned]):
                continue  # a hash collision: keep looking
            limit = min(entry.ids.size, array.size)
            differ = np.nonzero(entry.ids[aligned:limit] != array[aligned:limit])[0]
            length = aligned + (int(differ[0]) if differ.size else limit - aligned)
            self._entries.move_to_end(key)
            return entry.scores, length
        return None

    def _evict(self, key: int) -> None:
        entry = self._entries.pop(key)
        self.positions -= entry.scores.token_logprobs.size
        for h in entry.hashes:
            if self._by_hash.get(h) == key:
                del self._by_hash[h]
