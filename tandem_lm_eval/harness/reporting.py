"""Cost beside the standard metrics, for any harness task (stock ``gsm8k`` included).

Mechanism (lm-eval 0.4.13 has no callbacks):
1. ``generate_until`` returns ``TandemResponse`` objects: ``str`` subclasses that carry the request's
   cost. They survive lm-eval's response cache and ``take_first``, but not regex filters.
2. Before a task's filters run, ``apply_filters`` (patched) collects the costs from the unfiltered
   responses into a per-task ledger keyed by document.
3. ``process_results`` (patched) adds the document's cost metrics to the task's own metrics, and
   ``aggregation``/``higher_is_better`` declare them (mean; lower is better). So they appear per task
   in the printed table and results JSON, and per sample under ``--log_samples``.

Tasks never answered by tandem are untouched: without a ledger entry nothing is added.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import defaultdict
from statistics import mean

from tandem_lm_eval.cost.ledger import RequestCost

logger = logging.getLogger(__name__)

COST_METRICS = (
    "tandem_tflops",
    "tandem_mentor_tokens",
    "tandem_intern_tokens",
    "tandem_length",
    "tandem_stop_stage",
    "tandem_early_stop",
)
USD_METRIC = "tandem_usd"


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
    """One document's cost metrics. With several responses per document (repeats) the tokens and
    TFLOPs add up (the document cost all of them); the stop stage and early-stop flag are averaged."""
    out = {
        "tandem_tflops": float(sum(c["tflops"] for c in costs)),
        "tandem_mentor_tokens": float(sum(c["mentor_tokens"] for c in costs)),
        "tandem_intern_tokens": float(sum(c["intern_tokens"] for c in costs)),
        # the paper's "Len." (section 3.1): L_L + L_S, all tokens generated for the document
        "tandem_length": float(sum(c["mentor_tokens"] + c["intern_tokens"] for c in costs)),
        "tandem_stop_stage": float(mean(c["stop_stage"] for c in costs)),
        "tandem_early_stop": float(mean(float(c["stopped_early"]) for c in costs)),
    }
    if any(c.get("usd") is not None for c in costs):
        out[USD_METRIC] = float(sum(c.get("usd") or 0.0 for c in costs))
    return out


class CostLedger:
    """Costs by task and document, filled from the responses before filtering."""

    def __init__(self) -> None:
        self._by_task: dict[str, dict[str, list[dict]]] = defaultdict(dict)
        self._lock = threading.Lock()

    def collect(self, task_name: str, instances) -> int:
        found: dict[str, list[dict]] = defaultdict(list)
        for inst in instances:
            for resp in inst.resps:
                if isinstance(resp, TandemResponse):
                    found[doc_key(inst.doc)].append(resp.tandem)
        with self._lock:
            if found:
                self._by_task[task_name] = dict(found)
            else:
                self._by_task.pop(task_name, None)
        return sum(len(v) for v in found.values())

    def metrics_for(self, task_name: str, doc) -> dict[str, float] | None:
        docs = self._by_task.get(task_name)
        if not docs:
            return None
        costs = docs.get(doc_key(doc))
        if costs is None:
            logger.warning(
                "tandem: no cost recorded for a %s document; its cost metrics are missing", task_name
            )
            return None
        return per_doc_metrics(costs)

    def has_task(self, task_name: str) -> bool:
        return bool(self._by_task.get(task_name))

    def has_usd(self, task_name: str) -> bool:
        docs = self._by_task.get(task_name, {})
        return any(c.get("usd") is not None for costs in docs.values() for c in costs)


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

    if "process_results" in vars(klass):
        original_process = vars(klass)["process_results"]

        def process_results(self, doc, results, _orig=original_process):
            out = _orig(self, doc, results)
            extra = LEDGER.metrics_for(_task_name(self), doc)
            if extra and isinstance(out, dict):
                out = {**out, **extra}
            return out

        klass.process_results = process_results

    # Cost metrics join each task's own: averaged over documents, lower is better.
    _add_cost_entries(klass, "aggregation", lm_mean)
    _add_cost_entries(klass, "higher_is_better", False)


def _add_cost_entries(klass, method: str, value) -> None:
    """Wrap ``klass.<method>`` (a metric -> entry dict) to add ``value`` for every cost metric."""
    if method not in vars(klass):
        return
    original = vars(klass)[method]

    def wrapped(self, _orig=original):
        out = _orig(self)
        if LEDGER.has_task(_task_name(self)):
            out = dict(out)
            for metric in (*COST_METRICS, USD_METRIC):
                out.setdefault(metric, value)
        return out

    setattr(klass, method, wrapped)


def _task_name(task) -> str:
    return (
        getattr(task, "task_name", None)
        or getattr(getattr(task, "config", None), "task", "")
        or type(task).__name__
    )
