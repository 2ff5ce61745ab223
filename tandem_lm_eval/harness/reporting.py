"""Cost beside the standard metrics, for any harness task (stock ``gsm8k`` included).

Mechanism (lm-eval 0.4.13 has no callbacks):
1. ``generate_until`` returns ``TandemResponse`` objects: ``str`` subclasses that carry the request's
   cost. They survive lm-eval's response cache and ``take_first``, but not regex filters.
2. Before a task's filters run, ``apply_filters`` (patched) collects the costs from the unfiltered
   responses into a per-task ledger keyed by the requests' ``doc_id`` (not by the document's content:
   benchmarks have duplicate rows, and two identical documents are two requests, each with its own cost).
3. ``doc_iterator`` (patched) notes the ``doc_id`` it hands the evaluator, so ``process_results``
   (patched), called for that document, adds that request's cost metrics to the task's own metrics;
   ``aggregation``/``higher_is_better`` declare them (mean; lower is better for the costs: TFLOPs,
   tokens, seconds, $; no direction for the stop stage and the early-stop rate, which describe the run).
   So they appear per task in the printed table and results JSON, and per sample under ``--log_samples``.

Tasks never answered by tandem are untouched: without a ledger entry nothing is added.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import mean

from tandem_lm_eval.cost.ledger import PHASES, RequestCost
from tandem_lm_eval.harness.answer_keys import remember_task

logger = logging.getLogger(__name__)

COST_METRICS = (
    "tandem_tflops",
    "tandem_full_pass_tflops",
    "tandem_mentor_tokens",
    "tandem_intern_tokens",
    "tandem_length",
    "tandem_stop_stage",
    "tandem_early_stop",
    "tandem_latency_s",
    "tandem_judgment_s",
    "tandem_censored",
)
USD_METRIC = "tandem_usd"
#: lm-eval's ``higher_is_better`` per metric (it only draws the ↑/↓ arrow of the printed table): the costs
#: (tokens, TFLOPs, seconds, $) are lower-is-better. The stop stage and the share of documents the
#: classifier stopped early describe where the cascade stopped: a later stop buys more mentor, which is
#: better or worse only beside the accuracy (and its cost is already in the TFLOPs), so neither claims a
#: direction (None: no arrow).
DESCRIPTIVE_METRICS = ("tandem_stop_stage", "tandem_early_stop", "tandem_censored")
HIGHER_IS_BETTER: dict[str, bool | None] = {
    metric: None if metric in DESCRIPTIVE_METRICS else False for metric in (*COST_METRICS, USD_METRIC)
}
#: where the patched ``doc_iterator`` notes the doc_id it is handing out, on the task object
CURRENT_DOC_ID = "tandem_current_doc_id"


class TandemResponse(str):
    """The intern's answer text, with the request's cost attached (``.tandem``: RequestCost as dict)."""

    tandem: dict

    def __new__(cls, text: str, cost: RequestCost | None = None):
        if cost is None:  # lm-eval builds strings with type(response)(x): give a plain str back
            return str(text)
        obj = super().__new__(cls, text)
        obj.tandem = cost.as_dict()
        return obj

    def __reduce__(self):  # keep the cost through pickling (lm-eval's --use_cache)
        return (_rebuild_response, (str(self), self.tandem))


class PaddingResponse(str):
    """The answer given again for a request lm-eval's evaluator repeats only to give every rank the
    same number of requests (padding). Computed once, it carries no cost, and the patched
    ``apply_filters`` drops it, so the document's samples and metrics are those of one process."""


def _rebuild_response(text: str, cost: dict) -> TandemResponse:
    obj = str.__new__(TandemResponse, text)
    obj.tandem = cost
    return obj


def doc_key(doc) -> str:
    """A stable key for a task document (the evaluator hands process_results a fresh copy of it)."""
    blob = json.dumps(doc, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def per_doc_metrics(costs: list[dict]) -> dict[str, float]:
    """One document's cost metrics. With several responses per document (repeats) the tokens, TFLOPs
    and seconds add up (the document cost all of them); the stop stage and early-stop flag are averaged.

    ``tandem_latency_s``: the request's seconds, every phase summed (its share of each batched call:
    cost/ledger.py); ``tandem_judgment_s``: the part spent judging (the intern's scoring passes,
    features, classifier); ``tandem_full_pass_tflops``: every forward pass of both models (prefill,
    scoring, answers: cost/passes.py) beside Eq. 12; ``tandem_censored``: 1 when the answer ended at the
    length limit (the mean over repeats)."""
    out = {
        "tandem_tflops": float(sum(c["tflops"] for c in costs)),
        "tandem_full_pass_tflops": float(sum(c.get("full_pass_tflops", 0.0) for c in costs)),
        "tandem_mentor_tokens": float(sum(c["mentor_tokens"] for c in costs)),
        "tandem_intern_tokens": float(sum(c["intern_tokens"] for c in costs)),
        # the paper's "Len." (section 3.1): L_L + L_S, all tokens generated for the document
        "tandem_length": float(sum(c["mentor_tokens"] + c["intern_tokens"] for c in costs)),
        "tandem_stop_stage": float(mean(c["stop_stage"] for c in costs)),
        "tandem_early_stop": float(mean(float(c["stopped_early"]) for c in costs)),
        "tandem_latency_s": float(sum(_seconds(c, PHASES) for c in costs)),
        "tandem_judgment_s": float(sum(_seconds(c, ("intern_score", "classify")) for c in costs)),
        "tandem_censored": float(mean(float(c.get("censored", False)) for c in costs)),
    }
    if any(c.get("usd") is not None for c in costs):
        out[USD_METRIC] = float(sum(c.get("usd") or 0.0 for c in costs))
    return out


def _seconds(cost: dict, phases) -> float:
    times = cost.get("times") or {}
    return sum(float(times.get(name, 0.0)) for name in phases)


@dataclass
class DocumentCosts:
    """The costs of every response to one document's requests, and the document's content key (a check
    that the evaluator's doc_id and the ledger's name the same document)."""

    content_key: str
    costs: list[dict] = field(default_factory=list)


class CostLedger:
    """Costs by task and ``doc_id``, filled from the responses before filtering."""

    def __init__(self) -> None:
        self._by_task: dict[str, dict[int, DocumentCosts]] = defaultdict(dict)
        self._lock = threading.Lock()

    def collect(self, task_name: str, instances) -> int:
        found: dict[int, DocumentCosts] = {}
        for inst in instances:
            costs = [resp.tandem for resp in inst.resps if isinstance(resp, TandemResponse)]
            if not costs:
                continue
            entry = found.setdefault(inst.doc_id, DocumentCosts(doc_key(inst.doc)))
            entry.costs.extend(costs)
        with self._lock:
            if found:
                self._by_task[task_name] = found
            else:
                self._by_task.pop(task_name, None)
        return sum(len(v.costs) for v in found.values())

    def metrics_for(self, task_name: str, doc, doc_id: int | None = None) -> dict[str, float] | None:
        """The cost metrics of the document ``doc_id`` (the evaluator's current one). Without a doc_id
        the document's content is used, and only when no other document has the same content: costs of
        identical documents are never merged or swapped."""
        docs = self._by_task.get(task_name)
        if not docs:
            return None
        key = doc_key(doc)
        entry = docs.get(doc_id) if doc_id is not None else None
        if entry is None or entry.content_key != key:
            same = [e for e in docs.values() if e.content_key == key]
            if len(same) != 1:
                logger.warning(
                    "tandem: %s a %s document; its cost metrics are missing",
                    "no cost recorded for" if not same else f"{len(same)} identical documents match",
                    task_name,
                )
                return None
            entry = same[0]
        return per_doc_metrics(entry.costs)

    def has_task(self, task_name: str) -> bool:
        return bool(self._by_task.get(task_name))

    def has_usd(self, task_name: str) -> bool:
        docs = self._by_task.get(task_name, {})
        return any(c.get("usd") is not None for entry in docs.values() for c in entry.costs)


LEDGER = CostLedger()


def install_task_patches() -> None:
    """Patch lm-eval's task class once so cost metrics flow into every task's results."""
    from lm_eval.api.task import Task

    if getattr(Task, "_tandem_patched", False):
        return
    cls = Task
    # ConfigurableTask overrides these; patch every class in the hierarchy that defines them.
    import lm_eval.api.task as task_module

    classes = [c for c in vars(task_module).values() if isinstance(c, type) and issubclass(c, Task)]
    for klass in classes:
        _patch_class(klass)
    cls._tandem_patched = True


def _patch_class(klass) -> None:
    from lm_eval.api.metrics import mean as lm_mean

    if "apply_filters" in vars(klass):
        original_filters = vars(klass)["apply_filters"]

        def apply_filters(self, *args, _orig=original_filters, **kwargs):
            instances = getattr(self, "instances", None) or []
            for inst in instances:  # a distributed run's padding answers are not the document's
                if any(isinstance(r, PaddingResponse) for r in inst.resps):
                    inst.resps = [r for r in inst.resps if not isinstance(r, PaddingResponse)]
            LEDGER.collect(_task_name(self), instances)
            return _orig(self, *args, **kwargs)

        klass.apply_filters = apply_filters

    if "doc_iterator" in vars(klass):
        original_iterator = vars(klass)["doc_iterator"]

        def doc_iterator(self, *args, _orig=original_iterator, **kwargs):
            # the evaluator calls process_results for each document as this iterator hands it out:
            # noting the doc_id lets the cost be that request's, even for documents with equal content;
            # the task itself is noted for mode=agreement, which keys answers by its filters
            remember_task(_task_name(self), self)
            for doc_id, doc in _orig(self, *args, **kwargs):
                setattr(self, CURRENT_DOC_ID, doc_id)
                yield doc_id, doc
            setattr(self, CURRENT_DOC_ID, None)

        klass.doc_iterator = doc_iterator

    if "process_results" in vars(klass):
        original_process = vars(klass)["process_results"]

        def process_results(self, doc, results, _orig=original_process):
            out = _orig(self, doc, results)
            extra = LEDGER.metrics_for(_task_name(self), doc, getattr(self, CURRENT_DOC_ID, None))
            if extra and isinstance(out, dict):
                out = {**out, **extra}
            return out

        klass.process_results = process_results

    # Cost metrics join each task's own: averaged over documents; the direction of each (HIGHER_IS_BETTER).
    _add_cost_entries(klass, "aggregation", dict.fromkeys(HIGHER_IS_BETTER, lm_mean))
    _add_cost_entries(klass, "higher_is_better", HIGHER_IS_BETTER)


def _add_cost_entries(klass, method: str, values: dict) -> None:
    """Wrap ``klass.<method>`` (a metric -> entry dict) to add each cost metric's entry from ``values``."""
    if method not in vars(klass):
        return
    original = vars(klass)[method]

    def wrapped(self, _orig=original):
        out = _orig(self)
        if LEDGER.has_task(_task_name(self)):
            out = dict(out)
            for metric, value in values.items():
                out.setdefault(metric, value)
        return out

    setattr(klass, method, wrapped)


def _task_name(task) -> str:
    return (
        getattr(task, "task_name", None)
        or getattr(getattr(task, "config", None), "task", "")
        or type(task).__name__
    )
