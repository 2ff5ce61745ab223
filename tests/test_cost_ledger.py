"""The cost ledger through lm-eval's own evaluator: each document's cost is its own requests', even when
documents have the same content (benchmarks have duplicate rows) and with ``repeats``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from lm_eval import simple_evaluate
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from tandem_lm_eval.cost.ledger import RequestCost
from tandem_lm_eval.harness.reporting import (
    HIGHER_IS_BETTER,
    LEDGER,
    CostLedger,
    TandemResponse,
    install_task_patches,
)

FIXTURE_TASKS = Path(__file__).parent / "fixtures" / "tasks"


class PricedLM(LM):
    """Answers "5"; the k-th response to document d costs 10·(d+1) + k mentor tokens, so every response
    of the run has a cost of its own and a merged or swapped one shows."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter = Counter()

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            k = self.seen[(req.task_name, req.doc_id)]
            self.seen[(req.task_name, req.doc_id)] += 1
            tokens = 10 * (req.doc_id + 1) + k
            out.append(
                TandemResponse(
                    " 5",
                    RequestCost(mentor_tokens=tokens, intern_tokens=1, tflops=0.5 * tokens, stop_stage=1),
                )
            )
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


@pytest.fixture()
def evaluate():
    install_task_patches()
    tasks_seen = []

    def run(task: str, **kwargs):
        tasks_seen.append(task)
        lm = PricedLM()
        out = simple_evaluate(
            model=lm,
            tasks=[task],
            task_manager=TaskManager(include_path=str(FIXTURE_TASKS)),
            log_samples=True,
            **kwargs,
        )
        return out, lm

    yield run
    for task in tasks_seen:
        LEDGER.collect(task, [])  # leave no costs behind for the other tests


def test_identical_documents_each_report_their_own_cost(evaluate):
    out, _ = evaluate("tandem_test_dups")
    samples = sorted(out["samples"]["tandem_test_dups"], key=lambda s: s["doc_id"])
    # documents 0, 2 and 3 are the same question; each is billed its own request only
    assert [s["doc"]["question"] for s in samples].count("What is 2 plus 3?") == 3
    assert [s["tandem_mentor_tokens"] for s in samples] == [10, 20, 30, 40]
    assert [s["tandem_tflops"] for s in samples] == [5.0, 10.0, 15.0, 20.0]
    assert [s["tandem_length"] for s in samples] == [11, 21, 31, 41]
    res = out["results"]["tandem_test_dups"]
    assert res["tandem_mentor_tokens,none"] == pytest.approx(25.0)  # (10+20+30+40)/4, not inflated
    assert res["tandem_tflops,none"] == pytest.approx(12.5)


def test_repeats_add_up_per_document_under_every_filter(evaluate):
    out, lm = evaluate("tandem_test_dups_repeats")
    assert set(lm.seen.values()) == {2}  # every document was asked twice
    by_filter: dict[str, list] = {}
    for s in out["samples"]["tandem_test_dups_repeats"]:
        by_filter.setdefault(s["filter"], []).append(s)
    assert set(by_filter) == {"first", "regex"}  # the regex filter drops the cost-carrying strings
    for samples in by_filter.values():
        samples.sort(key=lambda s: s["doc_id"])
        # both answers of document d: 10(d+1) + 0 and 10(d+1) + 1
        assert [s["tandem_mentor_tokens"] for s in samples] == [21, 41, 61, 81]
        assert [s["tandem_stop_stage"] for s in samples] == [1, 1, 1, 1]
    res = out["results"]["tandem_test_dups_repeats"]
    assert res["tandem_mentor_tokens,first"] == res["tandem_mentor_tokens,regex"] == pytest.approx(51.0)


def test_early_stop_and_stop_stage_describe_the_run_without_a_direction(evaluate):
    out, _ = evaluate("tandem_test_dups")
    directions = out["higher_is_better"]["tandem_test_dups"]
    assert directions["tandem_early_stop"] is None  # a rate: no ↑/↓ in the table
    # where the cascade stopped: a later stop buys more mentor, better or worse only beside the accuracy
    assert directions["tandem_stop_stage"] is None and HIGHER_IS_BETTER["tandem_stop_stage"] is None
    assert directions["tandem_tflops"] is False and directions["tandem_mentor_tokens"] is False
    assert directions["tandem_latency_s"] is False and directions["tandem_judgment_s"] is False
    from lm_eval.utils import make_table  # the printed table: an arrow for the costs only

    rows = {m: line for line in make_table(out).splitlines() for m in directions if f"|{m} " in line}
    assert "↓" in rows["tandem_tflops"] and "↓" in rows["tandem_latency_s"]
    assert not {"↑", "↓"} & set(rows["tandem_stop_stage"] + rows["tandem_early_stop"])


class Inst:
    """The parts of an lm-eval Instance the ledger reads."""

    def __init__(self, doc_id: int, doc: dict, *tokens: int) -> None:
        self.doc_id, self.doc = doc_id, doc
        self.resps = [TandemResponse("x", RequestCost(mentor_tokens=t)) for t in tokens]


def test_without_a_doc_id_identical_documents_are_never_merged(caplog):
    ledger = CostLedger()
    same, other = {"q": "same"}, {"q": "other"}
    ledger.collect("t", [Inst(0, same, 10), Inst(1, other, 20), Inst(2, same, 30)])
    assert ledger.metrics_for("t", same, 0)["tandem_mentor_tokens"] == 10
    assert ledger.metrics_for("t", same, 2)["tandem_mentor_tokens"] == 30
    # a caller that does not know the doc_id: unique content is still found, duplicates are refused
    assert ledger.metrics_for("t", other)["tandem_mentor_tokens"] == 20
    assert ledger.metrics_for("t", same) is None
    assert "2 identical documents match" in caplog.text
    # a doc_id whose document has other content (a different evaluator order): found by content
    assert ledger.metrics_for("t", other, 0)["tandem_mentor_tokens"] == 20
