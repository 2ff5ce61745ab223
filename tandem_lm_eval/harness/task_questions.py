"""Questions from any lm-eval task, and the task's own verdict on an answer.

``collect`` and ``oracle-mentor`` need what ``lm_eval`` would send the model for a task (the same
context and generation settings, through the task's own ``doc_to_text``, few-shot and chat-template
handling) and, for ``collect``, whether an answer is correct by the task's own filters and metric.
Both come from lm-eval's task objects, so a benchmark added as task YAML works without code here.

Sampling is balanced across groups (a group: the task, or a document field such as MATH's subject)
before ``limit``: documents of each group are shuffled with the seed and taken round-robin, so a
limit of 700 over seven MATH subjects takes 100 of each, not the first subject's 700.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tandem_lm_eval.cascade.prompts import Question, question_from_request, serialize_chat
from tandem_lm_eval.common.errors import TandemError
from tandem_lm_eval.data.benchmarks import source_split
from tandem_lm_eval.data.records import doc_hash
from tandem_lm_eval.judgment.grouped import check_group_by, group_of

logger = logging.getLogger(__name__)


class TaskDataError(TandemError, ValueError):
    """A task that cannot serve as a source of questions (unknown, no generation requests, ...)."""


@dataclass
class TaskQuestion:
    """One document of a task, as lm-eval would ask it, ready for the cascade."""

    task: str
    doc_id: int  # index in the task's evaluation split (lm-eval's doc_id)
    doc: dict
    doc_hash: str
    split: str
    group: str | None
    question: Question
    instance: Any  # lm-eval's Instance, reused to run the task's filters on an answer
    # where the document really comes from, when its loader says (data/benchmarks.py: source_split)
    source_split: str | None = None


@dataclass
class TaskSource:
    """The lm-eval task objects behind a set of questions, with the metric that labels answers."""

    tasks: dict[str, Any]
    group_by: str = "task"
    metric: str | None = None  # None: each task's first metric
    filter_name: str | None = None  # None: each task's first filter
    threshold: float = 1.0  # an answer is correct when the metric is >= this

    def metric_of(self, task_name: str) -> str:
        if self.metric:
            return self.metric
        task = self.tasks[task_name]
        metrics = [m["metric"] for m in (task.config.metric_list or []) if isinstance(m.get("metric"), str)]
        if not metrics:
            raise TaskDataError(f"task {task_name!r} lists no metric: pass --metric")
        return metrics[0]

    def filter_of(self, task_name: str) -> str:
        names = [f.name for f in getattr(self.tasks[task_name], "_filters", [])]
        if self.filter_name:
            if self.filter_name not in names:
                raise TaskDataError(f"task {task_name!r} has no filter {self.filter_name!r}; it has {names}")
            return self.filter_name
        return names[0] if names else "none"

    def check(self) -> None:
        """The metric and filter that will label answers exist in every task, checked before any answer
        is generated (a wrong --metric or --filter used to fail after the whole chunk's work)."""
        for name, task in self.tasks.items():
            self.filter_of(name)
            listed = [
                m["metric"] for m in (task.config.metric_list or []) if isinstance(m.get("metric"), str)
            ]
            metric = self.metric_of(name)
            if self.metric and listed and metric not in listed:
                raise TaskDataError(
                    f"task {name!r} has no metric {metric!r}; it lists {listed}: pass one of them"
                )

    def judge(
        self, items: Sequence[TaskQuestion], answers: Sequence[str | None]
    ) -> list[tuple[float | None, int | None]]:
        """(metric value, label) of each answer by its task's filters and ``process_results``."""
        out: list[tuple[float | None, int | None]] = [(None, None)] * len(items)
        by_task: dict[str, list[int]] = {}
        for i, (item, answer) in enumerate(zip(items, answers)):
            if answer is not None:
                by_task.setdefault(item.task, []).append(i)
        for name, idxs in by_task.items():
            task = self.tasks[name]
            metric, filter_name = self.metric_of(name), self.filter_of(name)
            # One copy per answer: the stages of a question share one lm-eval Instance, and the
            # filters write into it.
            instances = [copy.copy(items[i].instance) for i in idxs]
            for i, inst in zip(idxs, instances):
                inst.resps = [answers[i]]
                inst.filtered_resps = {}
            saved = task._instances
            task._instances = instances  # the filters run over the task's instances: just these
            try:
                task.apply_filters()
            finally:
                task._instances = saved
            for i, inst in zip(idxs, instances):
                results = task.process_results(items[i].doc, [inst.filtered_resps[filter_name]])
                if metric not in results:
                    raise TaskDataError(
                        f"task {name!r} reports metrics {sorted(results)}, not {metric!r}: pass --metric"
                    )
                value = float(results[metric])
                out[i] = (value, int(value >= self.threshold - 1e-9))
        return out


def load_task_questions(
    task_names: Sequence[str],
    *,
    include_path: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    group_by: str = "task",
    max_gen_toks: int | None = None,
    default_max_gen_toks: int = 8192,
    apply_chat_template: bool = False,
    metric: str | None = None,
    filter_name: str | None = None,
    threshold: float = 1.0,
    confirm_run_unsafe_code: bool = False,
    sampling: str = "balanced",
) -> tuple[list[TaskQuestion], TaskSource]:
    """The questions of ``task_names`` (groups expand to their tasks), and the source that judges
    answers to them. ``sampling="balanced"``: ``limit`` in all, balanced across groups (seeded);
    ``sampling="first"``: the first ``limit`` documents of each task, as ``lm_eval --limit`` takes them.

    ``max_gen_toks`` overrides the task's answer budget (default: the task's own ``max_gen_toks``).
    """
    from lm_eval.tasks import TaskManager, get_task_dict

    check_group_by(group_by)
    try:
        manager = TaskManager(include_path=include_path) if include_path else TaskManager()
        task_dict = get_task_dict(list(task_names), manager)
    except (KeyError, ValueError) as exc:
        raise TaskDataError(f"could not load tasks {list(task_names)}: {exc}") from exc
    tasks = _leaf_tasks(task_dict)
    if not tasks:
        raise TaskDataError(f"no tasks found for {list(task_names)}")
    for name, task in tasks.items():
        if getattr(task, "UNSAFE_CODE", False) and not confirm_run_unsafe_code:
            raise TaskDataError(
                f"task {name!r} executes model-written code to judge answers: pass --confirm_run_unsafe_code "
                "(as for lm_eval) to run it"
            )
        if task.OUTPUT_TYPE != "generate_until":
            raise TaskDataError(
                f"task {name!r} is {task.OUTPUT_TYPE}: only generation tasks have answers to judge"
            )
    # choose documents, balanced across groups
    pools: dict[str | None, list[tuple[str, int]]] = {}
    for name, task in tasks.items():
        for doc_id, doc in enumerate(task.eval_docs):
            pools.setdefault(group_of(group_by, name, doc), []).append((name, doc_id))
    if sampling == "first":
        chosen = [
            (name, doc_id)
            for name, task in tasks.items()
            for doc_id in range(len(task.eval_docs) if limit is None else min(limit, len(task.eval_docs)))
        ]
    elif sampling == "balanced":
        rng = random.Random(seed)
        for group in sorted(pools, key=str):
            rng.shuffle(pools[group])
        chosen = _round_robin([pools[g] for g in sorted(pools, key=str)], limit)
    else:
        raise TaskDataError(f"sampling must be 'balanced' or 'first', got {sampling!r}")
    by_task: dict[str, list[int]] = {}
    for name, doc_id in chosen:
        by_task.setdefault(name, []).append(doc_id)

    questions: list[TaskQuestion] = []
    for name, doc_ids in by_task.items():
        task = tasks[name]
        wanted = sorted(doc_ids)
        task.build_all_requests(
            samples=wanted,
            apply_chat_template=apply_chat_template,
            chat_template=(lambda history, add_generation_prompt=True: serialize_chat(history))
            if apply_chat_template
            else None,
        )
        instances = [inst for inst in task.instances if inst.request_type == "generate_until"]
        if len(instances) != len(wanted):
            raise TaskDataError(
                f"task {name!r}: {len(instances)} generation requests for {len(wanted)} documents "
                "(repeats or several requests per document are not supported by collect)"
            )
        split = task.config.test_split if task.has_test_docs() else task.config.validation_split
        for doc_id, inst in zip(wanted, instances):  # doc_iterator yields the samples in order
            context, gen_kwargs = inst.args
            gen_kwargs = dict(gen_kwargs or {})
            if max_gen_toks is not None:
                gen_kwargs["max_gen_toks"] = max_gen_toks
            doc = inst.doc
            group = group_of(group_by, name, doc)
            questions.append(
                TaskQuestion(
                    task=name,
                    doc_id=doc_id,
                    doc=doc,
                    doc_hash=doc_hash(doc) or "",
                    split=str(split),
                    group=group,
                    question=question_from_request(context, gen_kwargs, default_max_gen_toks, group),
                    instance=inst,
                    source_split=source_split(doc),
                )
            )
    order = {key: i for i, key in enumerate(chosen)}
    questions.sort(key=lambda q: order[(q.task, q.doc_id)])
    logger.info("%d questions from %s (%d groups)", len(questions), ", ".join(tasks), len(pools))
    return questions, TaskSource(tasks, group_by, metric, filter_name, threshold)


def _leaf_tasks(task_dict: dict) -> dict[str, Any]:
    """lm-eval's nested {group: {task: Task}} as {task name: Task}."""
    out = {}
    for key, value in task_dict.items():
        if isinstance(value, dict):
            out.update(_leaf_tasks(value))
        elif value is not None and hasattr(value, "eval_docs"):
            out[getattr(key, "task_name", None) or value.config.task] = value
    return out


def _round_robin(pools: list[list], limit: int | None) -> list:
    chosen, index = [], 0
    total = sum(len(p) for p in pools)
    want = total if limit is None else min(limit, total)
    while len(chosen) < want:
        for pool in pools:
            if index < len(pool) and len(chosen) < want:
                chosen.append(pool[index])
        index += 1
    return chosen
