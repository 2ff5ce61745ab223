"""An answer's key by its task's own filters: what ``mode=agreement`` compares between stages.

Two answers agree when the task's filter pipeline (lm-eval's ``filter_list``: the GSM8K regex, a
``\\boxed{}`` extraction, ``take_first``, ...) turns them into the same string: the same answer the
task's metric would read, so a different wording of the same number agrees. The filter is the task's
first one (what ``collect`` and ``compare`` label answers with, ``TaskSource.filter_of``).

Live, the tasks come from lm-eval's own task objects: the patched ``doc_iterator``
(harness/reporting.py) notes each task as it builds its requests (:func:`remember_task`), and a
request names its task (``Instance.task_name``). Offline (``compare``'s replay) the task objects of
the ``TaskSource`` are used. A task that extracts its answer in ``process_results`` (the tandem
GSM8K and MATH tasks: ``harness/task_functions.py``) gives the extraction as that function's
``answer_key``. A request whose task is not known (lm-eval's ``--cache_requests`` builds
requests without the iterator) is keyed by its stripped text, with one warning.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

_TASKS: dict[str, Any] = {}
_LOCK = threading.Lock()


def remember_task(name: str, task: Any) -> None:
    """Note lm-eval's task object ``name`` (called as the task builds its requests)."""
    with _LOCK:
        _TASKS[name] = task


def known_task(name: str | None) -> Any | None:
    with _LOCK:
        return _TASKS.get(name) if name else None


def text_key(text: str) -> str:
    """The key of an answer without a task: its text, stripped."""
    return text.strip()


def filter_names(task: Any) -> list[str]:
    return [f.name for f in getattr(task, "_filters", [])]


def filtered_answer(task: Any, doc: dict, text: str, filter_name: str | None = None) -> str | None:
    """``text`` through ``task``'s filter pipeline ``filter_name`` (None: its first) for ``doc``, as
    one string; then, for a task whose ``process_results`` extracts the answer itself (the tandem
    tasks: their filter hands it the raw text), through that function's ``answer_key`` (doc, text).
    None: no answer was extracted (it agrees with nothing)."""
    ensembles = list(getattr(task, "_filters", []))
    if filter_name is not None:
        ensembles = [f for f in ensembles if f.name == filter_name]
    out: Any = text
    if ensembles:
        resps: Any = [[text]]
        for make_filter in ensembles[0].filters:
            resps = make_filter().apply(resps, [doc])
        out = list(resps)[0]
        if isinstance(out, (list, tuple)):
            out = out[0] if out else ""
    extract = getattr(getattr(getattr(task, "config", None), "process_results", None), "answer_key", None)
    if extract is not None:
        return extract(doc, str(out))
    return text_key(str(out))


def request_keys(requests: Sequence[Any]) -> Callable[[int, str], str | None]:
    """For lm-eval requests (Instances), ``key(i, text)``: request i's answer ``text`` keyed by its
    task's filters."""
    tasks = [known_task(getattr(r, "task_name", None)) for r in requests]
    missing = sorted({str(getattr(r, "task_name", None)) for r, t in zip(requests, tasks) if t is None})
    if missing:
        logger.warning(
            "tandem: mode=agreement: the filters of %s are not known here (requests built from lm-eval's "
            "request cache?): their answers agree when their texts do",
            ", ".join(missing),
        )

    def key(i: int, text: str) -> str | None:
        task = tasks[i]
        return text_key(text) if task is None else filtered_answer(task, requests[i].doc, text)

    return key
