"""lm-eval's ``--use_cache`` (CachingLM) around the tandem model: a cache another tandem configuration
filled is refused (its answers and costs would be served as this run's); the same configuration reuses
it; a cache that recorded no configuration is refused too."""

from __future__ import annotations

import pytest
from lm_eval.api.model import CachingLM
from sqlitedict import SqliteDict

from tandem_lm_eval.harness.answer_cache import CONFIG_ENTRY, check_answer_cache


class Req:
    def __init__(self, context: str, doc_id: int) -> None:
        self.args = (context, {"until": ["Question:"], "max_gen_toks": 5})
        self.task_name, self.doc_id = "t", doc_id


REQS = [Req(f"Question: what is {i} plus {i + 1}?\nAnswer:", i) for i in range(2)]


def tandem(tiny_model_dir, **extra):
    from tandem_lm_eval.harness.lm import TandemLM

    args = dict(
        mentor=str(tiny_model_dir),
        intern=str(tiny_model_dir),
        mode="fixed:1",
        budgets="[8,16]",
        progress=False,
        dtype="float32",
        batch_size=1,
    )
    return TandemLM(**{**args, **extra})


def test_a_changed_model_args_does_not_get_the_other_runs_answers(tmp_path, tiny_model_dir):
    path = str(tmp_path / "cache_rank0.db")
    first = CachingLM(tandem(tiny_model_dir), path)
    answers = first.generate_until(REQS)
    assert all(a.tandem["mentor_tokens"] > 0 for a in answers)

    with pytest.raises(SystemExit) as info:  # another mode: refused, naming the file and what differs
        CachingLM(tandem(tiny_model_dir, mode="intern_only"), path)
    message = str(info.value)
    assert message.startswith(f"tandem: --use_cache {path} holds the answers and costs of another tandem")
    assert "(different: mode)" in message and "\n" not in message
    with pytest.raises(SystemExit, match=r"different: budgets"):
        CachingLM(tandem(tiny_model_dir, budgets="[8,24]"), path)

    # the same configuration (a trace or progress bar aside) is served from the cache, costs and all
    again = CachingLM(tandem(tiny_model_dir, trace_path=str(tmp_path / "t.jsonl")), path)
    served = again.generate_until(REQS)
    assert [str(a) for a in served] == [str(a) for a in answers]
    assert [a.tandem for a in served] == [a.tandem for a in answers]


def test_a_cache_without_a_recorded_configuration_is_refused(tmp_path):
    path = str(tmp_path / "old.db")
    old = SqliteDict(path, autocommit=True)
    old["0" * 64] = "an answer of some earlier run"
    with pytest.raises(ValueError, match=r"did not record its tandem configuration"):
        check_answer_cache(old, path, {"mode": "tandem"})
    empty = SqliteDict(str(tmp_path / "new.db"), autocommit=True)
    check_answer_cache(empty, "new.db", {"mode": "tandem"})  # an empty cache records this configuration
    assert empty[CONFIG_ENTRY] == {"mode": "tandem"}
    check_answer_cache(empty, "new.db", {"mode": "tandem"})  # and accepts it again
