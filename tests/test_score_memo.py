"""ScoreMemo: longest stored token prefix, collision safety, LRU eviction; slice/join of scores."""

from __future__ import annotations

import numpy as np
import pytest

from tandem_lm_eval.backends import score_memo
from tandem_lm_eval.backends.base import PromptScores
from tandem_lm_eval.backends.score_memo import ScoreMemo, join_scores, slice_scores


def scores_for(ids: list[int], method: str = "topk") -> PromptScores:
    # values that identify their position and token: position j (1-based token) -> -(j + ids[j] / 1000)
    lp = np.array([-(j + ids[j] / 1000) for j in range(1, len(ids))])
    bounds = (lp - 1, lp + 1) if method == "topk" else None
    return PromptScores(lp, -lp, num_tokens=len(ids), entropy_method=method, entropy_bounds=bounds)


def test_longest_prefix_finds_the_entry_sharing_most_tokens():
    memo = ScoreMemo(block=4)
    shared = list(range(100, 110))  # a template both prompts start with
    a = shared + [1, 2, 3, 4, 5, 6, 7, 8, 9]
    b = shared + [1, 50, 51, 52, 53]
    memo.add(a, scores_for(a))
    memo.add(b, scores_for(b))
    # an extension of a: longest common prefix with a is all of a, with b only 11 tokens
    ext = a + [70, 71, 72, 73, 74]
    found, length = memo.longest_prefix(ext)
    assert length == len(a)
    np.testing.assert_array_equal(found.token_logprobs, scores_for(a).token_logprobs)
    # a prompt diverging from a inside a block: the match length is exact, not block-aligned
    c = a[:14] + [99] * 6
    found, length = memo.longest_prefix(c)
    assert length == 14
    # b's extension finds b (the deepest shared block is b's own), not a
    assert memo.longest_prefix(b + [1, 1])[1] == len(b)
    # nothing shared in the first block: no hit
    assert memo.longest_prefix([1, 2, 3, 4, 5, 6, 7, 8]) is None
    # shorter than a block: no hit
    assert memo.longest_prefix(shared[:3]) is None


def test_a_hash_collision_is_not_taken_for_a_match(monkeypatch):
    monkeypatch.setattr(score_memo, "block_hashes", lambda ids, block=4: [7] * (len(ids) // block))
    memo = ScoreMemo(block=4)
    memo.add([1, 2, 3, 4, 5, 6, 7, 8], scores_for([1, 2, 3, 4, 5, 6, 7, 8]))
    assert memo.longest_prefix([9, 9, 9, 9, 9, 9, 9, 9]) is None  # same hashes, other tokens
    assert memo.longest_prefix([1, 2, 3, 4, 5, 0, 0, 0])[1] == 5


def test_least_recently_used_entries_are_evicted_past_the_position_budget():
    memo = ScoreMemo(max_positions=30, block=4)
    prompts = [[p] * 4 + list(range(12)) for p in range(3)]  # 15 positions each
    memo.add(prompts[0], scores_for(prompts[0]))
    memo.add(prompts[1], scores_for(prompts[1]))
    assert memo.longest_prefix(prompts[0])[1] == 16  # touch 0: 1 is now the oldest
    memo.add(prompts[2], scores_for(prompts[2]))
    assert len(memo) == 2 and memo.positions == 30
    assert memo.longest_prefix(prompts[1]) is None
    assert memo.longest_prefix(prompts[0]) is not None and memo.longest_prefix(prompts[2]) is not None


def test_eviction_keeps_prefixes_shared_with_surviving_entries_findable():
    memo = ScoreMemo(max_positions=40, block=4)
    shared = [5, 5, 5, 5]
    a, b, c = shared + [1] * 12, shared + [2] * 12, shared + [3] * 12
    for p in (a, b, c):  # c evicts a; b's and c's deeper blocks still lead to them
        memo.add(p, scores_for(p))
    assert memo.longest_prefix(a + [0]) is not None  # shares the first block with b or c
    assert memo.longest_prefix(a + [0])[1] == 4
    assert memo.longest_prefix(b + [0])[1] == 16


def test_add_refuses_scores_of_another_length():
    with pytest.raises(ValueError, match="3 tokens"):
        ScoreMemo().add([1, 2, 3, 4], scores_for([1, 2, 3]))


@pytest.mark.parametrize("method", ["topk", "exact"])
def test_slice_then_join_rebuilds_the_scores_of_the_longer_prompt(method):
    ids = list(range(20, 40))
    whole = scores_for(ids, method)
    head = slice_scores(whole, 7)
    assert head.num_tokens == 8 and head.token_logprobs.size == 7
    tail = PromptScores(
        whole.token_logprobs[7:],
        whole.entropies[7:],
        num_tokens=len(ids),
        entropy_method=method,
        entropy_bounds=None if whole.entropy_bounds is None else tuple(b[7:] for b in whole.entropy_bounds),
    )
    joined = join_scores(head, tail, num_tokens=len(ids))
    assert (joined.num_tokens, joined.entropy_method) == (whole.num_tokens, whole.entropy_method)
    np.testing.assert_array_equal(joined.token_logprobs, whole.token_logprobs)
    np.testing.assert_array_equal(joined.entropies, whole.entropies)
    if method == "topk":
        for got, want in zip(joined.entropy_bounds, whole.entropy_bounds):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="different entropy methods"):
        join_scores(head, scores_for(ids, "exact" if method == "topk" else "topk"), len(ids))
