"""``tandem-lm-eval collect``: run a mentor/intern pair over a task's questions through every stage.

For each question the mentor writes all stages once (continuing between them), the intern scores
x_t = Q ⊕ I_t at every stage (features over every span) and answers from every distinct x_t, and the
task's own filters and metric judge each answer (label 1 = correct = the guidance sufficed, §3.1).
One record per question (data/records.py) is appended as each chunk finishes, so an interrupted run
resumes where it stopped: questions already in the file (same task and document) are skipped.

These records train classifiers (``fit``), evaluate them (``analyze``), and can serve the mentor's
outputs again (``mentor_backend=recorded``). With ``hidden_layers`` the intern's hidden vectors of the
same scoring pass go to the records' side file (data/hidden_file.py), for hidden-state judges.

Nothing generated is lost: the ``collect`` command runs its models behind a run store beside its
records (``default_store``: ``runs/train.jsonl`` -> ``runs/train.store.sqlite``) unless model_args name
``store=`` (``none``: off). A chunk whose judging fails (a broken filter in a task YAML) leaves its
generations in the store, so the rerun after the fix serves them and computes nothing twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tandem_lm_eval.backends.base import Backend, HiddenRequest
from tandem_lm_eval.cascade.roles import Role
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.data.hidden_file import HiddenFile, HiddenRow, hidden_path_for
from tandem_lm_eval.data.records import (
    MentorAnswer,
    MentorOutput,
    QuestionRecord,
    RecordError,
    iter_records,
    stage_entry,
    write_records,
)
from tandem_lm_eval.harness.config import ConfigError
from tandem_lm_eval.harness.task_questions import TaskDataError, TaskQuestion, TaskSource

logger = logging.getLogger(__name__)


@dataclass
class Explorer:
    """A cascade that runs every stage, and the names its records carry."""

    cascade: Cascade
    mentor_model: str
    intern_model: str
    entropy_method: str
    hidden_meta: dict | None = None  # the intern's name, layers and hidden size, when hidden vectors are kept


def hidden_request(
    intern: Backend, layers: str | None, adapter=None, statistics: bool = True
) -> HiddenRequest | None:
    """The layers of ``--hidden-layers`` (``last``, indices, fractions of the depth; comma-separated)
    as a request to the intern backend; ``adapter``: (folder, id) of a LoRA adapter."""
    from tandem_lm_eval.judgment.judges import layer_of

    if not layers:
        return None
    num_layers, _ = intern.hidden_shape()
    resolved = tuple(sorted({layer_of(x, num_layers) for x in str(layers).split(",") if x.strip()}))
    folder, adapter_id = adapter if adapter else (None, None)
    return HiddenRequest(resolved, adapter=folder, adapter_id=adapter_id, statistics=statistics)


def hidden_meta_of(intern: Backend, intern_model: str) -> dict:
    num_layers, hidden_size = intern.hidden_shape()
    return {"intern_model": intern_model, "num_layers": num_layers, "hidden_size": hidden_size}


def collect_plan(model_args: dict):
    """The run plan of a collect (every stage of every question: both roles, no classifier), made
    before any model loads; ``mode`` and ``data_parallel_size`` are refused, not ignored."""
    from tandem_lm_eval.harness.plan import COLLECT, plan_run

    if "mode" in model_args:
        raise ConfigError("collect runs every stage: leave mode out of --model_args")
    plan = plan_run(model_args, COLLECT)
    refuse_replicas(plan)
    return plan


def make_explorer(plan, hidden_layers: str | None = None) -> Explorer:
    """Backends and an all-stages cascade from a collect's plan (``collect_plan``); ``hidden_layers``:
    also keep the intern's hidden vectors of these layers."""
    from tandem_lm_eval.harness.assembly import build_backends, intern_identity

    mentor, intern, mentor_params, intern_params = build_backends(plan)
    identity = intern_identity(plan.intern, intern)
    hidden = hidden_request(intern, hidden_layers)
    cascade = Cascade(
        Role(mentor, params=mentor_params, thinking=plan.mentor.thinking),
        Role(intern, params=intern_params, thinking=plan.intern.thinking),
        plan.policy.make(),
        plan.budgets,
        progress=plan.progress,
        hidden=hidden,
    )
    return Explorer(
        cascade,
        mentor.model_name if mentor is not None else "",
        identity,
        getattr(intern, "entropy_method", "exact"),
        hidden_meta_of(intern, identity) if hidden is not None else None,
    )


def refuse_replicas(plan) -> None:
    """collect runs its cascade in this process: data_parallel_size (replicas, harness/replicas.py) is
    for ``lm_eval --model tandem``; refused rather than ignored."""
    if plan.data_parallel_size > 1:
        raise ConfigError(
            f"data_parallel_size={plan.data_parallel_size}: collect runs its models in this process, without "
            "replicas; leave data_parallel_size out of its model_args (it applies to lm_eval --model "
            "tandem and to compare's live rows), or run several collects on parts of the task"
        )


def default_store(out_path: str | Path) -> Path:
    """Where the ``collect`` command keeps what its models generate, when model_args name no store."""
    return Path(out_path).with_suffix(".store.sqlite")


@dataclass
class CollectStats:
    questions: int = 0  # written by this run
    skipped: int = 0  # already in the file
    seconds: float = 0.0


def done_keys(out_path: Path) -> set[tuple[str | None, str | None]]:
    """(task, doc_hash) of the records already in ``out_path``."""
    if not out_path.is_file():
        return set()
    try:
        return {(r.task, r.doc_hash) for r in iter_records(out_path)}
    except RecordError as exc:
        raise RecordError(f"cannot resume into {out_path}: {exc}") from None


def collect(
    explorer: Explorer,
    questions: Sequence[TaskQuestion],
    source: TaskSource,
    out_path: str | Path,
    *,
    chunk: int = 32,
    answers_by_stage: bool = False,
    mentor_answers: bool = False,
) -> CollectStats:
    """Explore every stage of ``questions`` chunk by chunk, appending one record per question.

    Each stage of a record carries its own seconds by phase (a share of each batched call);
    ``answers_by_stage``: answer in one call per stage, as a live run does (``Cascade.explore``);
    ``mentor_answers``: the mentor also answers each question itself (``mode=mentor_only``'s answer,
    judged by the task), what ``fit --policy router`` learns from (the record's ``mentor_answer``)."""
    cascade = explorer.cascade
    out_path = Path(out_path)
    done = done_keys(out_path)
    todo = [q for q in questions if (q.task, q.doc_hash) not in done]
    stats = CollectStats(skipped=len(questions) - len(todo))
    logger.info("collect: %d questions to run, %d already in %s", len(todo), stats.skipped, out_path)
    t_start = time.perf_counter()
    from tqdm.auto import tqdm

    side = None
    if explorer.hidden_meta is not None:
        side = HiddenFile(hidden_path_for(out_path), create=True)
        side.set_meta(**explorer.hidden_meta)

    overall = tqdm(total=len(todo), desc="collect", unit="question", disable=not cascade.progress)
    for start in range(0, len(todo), max(1, chunk)):
        batch = todo[start : start + chunk]
        t0 = time.perf_counter()
        explored = cascade.explore([q.question for q in batch], answers_by_stage=answers_by_stage)
        # judge every stage's answer with the task's own filters and metric
        flat = [(i, o) for i, e in enumerate(explored) for o in e.stages]
        try:
            verdicts = source.judge([batch[i] for i, _ in flat], [o.answer for _, o in flat])
        except Exception as exc:  # the task's own code (its filters or metric): say where, and what was kept
            raise TaskDataError(_judging_failed(exc, batch, cascade)) from exc
        own = _mentor_answers(cascade, batch, source) if mentor_answers else [None] * len(batch)
        by_question: dict[int, list] = {}
        vectors: list[HiddenRow] = []
        for (i, outcome), (value, label) in zip(flat, verdicts):
            if side is not None and outcome.record.usable:
                vectors += [
                    HiddenRow(batch[i].question.key, outcome.stage, key, outcome.record.prompt_tokens, vector)
                    for key, vector in outcome.record.hidden.items()
                ]
            outcome.record.hidden = {}  # in the side file, not in the JSONL line
            by_question.setdefault(i, []).append(
                stage_entry(
                    outcome.record,
                    answer=outcome.answer,
                    intern_tokens=outcome.intern_tokens if outcome.answer is not None else None,
                    finish_reason=outcome.finish_reason,
                    label=label,
                    metric=source.metric_of(batch[i].task) if value is not None else None,
                    metric_value=value,
                )
            )
        records = []
        for i, (item, exploration) in enumerate(zip(batch, explored)):
            mentor = exploration.mentor
            records.append(
                QuestionRecord(
                    question_hash=item.question.key,
                    question="\n\n".join(m.content for m in item.question.dialogue()),
                    stages=by_question[i],
                    kind="explore",
                    task=item.task,
                    group=item.group,
                    group_by=source.group_by,
                    doc_id=item.doc_id,
                    doc_hash=item.doc_hash,
                    split=item.split,
                    source_split=item.source_split,
                    budgets=list(cascade.budgets),
                    mentor=None
                    if mentor is None
                    else MentorOutput(
                        text=mentor.text,
                        token_ids=list(mentor.token_ids),
                        finished=mentor.finished,
                        model=explorer.mentor_model,
                        num_params=cascade.mentor_params,
                    ),
                    intern_model=explorer.intern_model,
                    intern_num_params=cascade.intern_params,
                    entropy_method=explorer.entropy_method,
                    mode="explore",
                    mentor_answer=own[i],
                    question_key=item.question.content_key(item.doc),
                )
            )
        if side is not None:  # vectors first: a record in the file always has its vectors
            side.put_many(vectors)
        stats.questions += write_records(out_path, records)
        overall.update(len(batch))
        logger.info(
            "collect: %d/%d questions (chunk of %d: %.1f s)",
            start + len(batch),
            len(todo),
            len(batch),
            time.perf_counter() - t0,
        )
    overall.close()
    if side is not None:
        side.close()
    stats.seconds = time.perf_counter() - t_start
    return stats


def _mentor_answers(
    cascade: Cascade, batch: Sequence[TaskQuestion], source: TaskSource
) -> list[MentorAnswer]:
    """The mentor's own answer to each question of ``batch`` (as ``mode=mentor_only`` answers), judged."""
    from tandem_lm_eval.cascade.mentor_answers import answer_with_mentor
    from tandem_lm_eval.cascade.policies.mentor import MentorOnlyPolicy

    if cascade.mentor is None:
        raise ConfigError("--mentor-answers needs a mentor")
    results = answer_with_mentor(
        cascade.mentor,
        [q.question for q in batch],
        MentorOnlyPolicy(),
        mentor_params=cascade.mentor_params,
        intern_params=cascade.intern_params,
        mentor_thinking=cascade.mentor_thinking,
        progress=False,
    )
    try:
        verdicts = source.judge(batch, [r.answer for r in results])
    except Exception as exc:  # the task's own code, as for the stages' answers
        raise TaskDataError(_judging_failed(exc, batch, cascade)) from exc
    return [
        MentorAnswer(
            text=r.answer,
            tokens=r.cost.mentor_tokens,
            finish_reason=r.answer_finish_reason,
            label=label,
            metric_value=value,
            regenerated_tokens=r.cost.mentor_regenerated_tokens,
            prompt_tokens=r.cost.mentor_prompt_tokens,
            cached_tokens=r.cost.mentor_cached_tokens,
            seconds=r.cost.times.mentor_generate,
        )
        for r, (value, label) in zip(results, verdicts)
    ]


def _judging_failed(exc: Exception, batch: Sequence[TaskQuestion], cascade: Cascade) -> str:
    """One line: the task's judging failed where, and whether the chunk's generations are kept."""
    import traceback

    from tandem_lm_eval.store.stored_backend import store_of

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    store = store_of(cascade.mentor, cascade.intern)
    kept = (
        f"the generations are kept in the run store {store.path}: fix the task and rerun the same command "
        "(nothing is computed twice)"
        if store is not None
        else "nothing was kept (store=none): fix the task and rerun"
    )
    tasks = ", ".join(sorted({q.task for q in batch}))
    message = str(exc).replace("\n", " ")
    return f"judging {tasks} answers with the task's filters and metric failed: {type(exc).__name__}: {message}{where}; {kept}"
