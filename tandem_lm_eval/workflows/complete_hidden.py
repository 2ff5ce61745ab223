"""``tandem-lm-eval complete-hidden``: add the intern's hidden vectors to an existing collect.

A collect made without ``--hidden-layers`` (or before hidden-state judges existed) has the mentor's
insights, the answers and the labels of every stage; a hidden-state judge needs only the intern's
hidden vectors of the same prompts. They are computed here by intern forward passes alone: no mentor
call, no answer generation. Each stage's prompt x_t = Q ⊕ I_t is rebuilt from the task's own question
(found by task and lm-eval doc hash) and the recorded insights I_t, and checked against the record
(question hash, prompt length in tokens) before its vectors are kept.

The passes are batched as ``collect`` batches them (chunks of questions in file order, one scoring call
per stage, a stage that adds nothing to the previous one copies its vectors), so the vectors equal
those of a collect that kept them from the start (tests/test_judges.py). With a ``hidden_lora``
classifier the vectors of the intern with its adapter are computed (another name in the same file).
Resumable: questions whose vectors are all there are skipped; vectors made from a prompt of another
length than the record's (stale: from another collect into the same file) are recomputed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tandem_lm_eval.cascade.prompts import intern_prompt
from tandem_lm_eval.data.hidden_file import HiddenFile, HiddenRow, hidden_path_for
from tandem_lm_eval.data.records import QuestionRecord, RecordError
from tandem_lm_eval.harness.config import ConfigError
from tandem_lm_eval.judgment.card import normalize_model_name
from tandem_lm_eval.workflows.collect import hidden_meta_of, hidden_request

logger = logging.getLogger(__name__)


@dataclass
class CompletionStats:
    questions: int = 0  # completed by this run
    skipped: int = 0  # already complete
    prompts_scored: int = 0
    seconds: float = 0.0
    path: Path | None = None


def intern_plan(model_args: dict):
    """The run plan of an intern-only pass (no mentor is loaded; ``mentor=`` may be left out), made
    before any model loads."""
    from tandem_lm_eval.harness.plan import INTERN_ONLY, plan_run

    if "mode" in model_args:
        raise ConfigError("complete-hidden runs the intern only: leave mode out of --model_args")
    args = dict(model_args)
    if "intern" in args:
        args.setdefault("mentor", args["intern"])
    return plan_run(args, INTERN_ONLY)


def intern_for(plan):
    """The intern alone, its identity and thinking switch, from an intern-only plan (``intern_plan``)."""
    from tandem_lm_eval.harness.assembly import build_backends, intern_identity

    _, intern, _, _ = build_backends(plan)
    return intern, intern_identity(plan.intern, intern), plan.intern.thinking


def complete_hidden(
    records: Sequence[QuestionRecord],
    questions: dict,
    records_path: str | Path,
    intern,
    intern_model: str,
    hidden_layers: str,
    *,
    thinking: bool | None = None,
    adapter: tuple[str, str] | None = None,
    out: str | Path | None = None,
    chunk: int = 32,
    progress: bool = True,
) -> CompletionStats:
    """Score every usable stage of ``records`` with the intern and keep the hidden vectors.

    ``questions`` maps (task, doc hash) to the task's ``TaskQuestion``; ``adapter`` is a LoRA adapter
    (folder, id) to read an adapted intern.
    """
    from tqdm.auto import tqdm

    if not records:
        raise RecordError("no records to complete")
    for r in records:
        if normalize_model_name(r.intern_model) != normalize_model_name(intern_model):
            raise RecordError(
                f"the records were collected with intern {r.intern_model!r}, this intern is {intern_model!r}: "
                "hidden vectors must come from the same intern"
            )
    hidden = hidden_request(intern, hidden_layers, adapter, statistics=False)  # vectors only
    keys = [hidden.key(layer, "prompt_end") for layer in hidden.layers]
    path = Path(out) if out else hidden_path_for(records_path)
    stats = CompletionStats(path=path)
    t_start = time.perf_counter()
    with HiddenFile(path, create=True) as side:
        side.set_meta(**hidden_meta_of(intern, intern_model))
        bar = tqdm(total=len(records), desc="complete-hidden", unit="question", disable=not progress)
        for start in range(0, len(records), max(1, chunk)):
            batch = list(records[start : start + chunk])
            # a question whose vectors are all there, each made from a prompt of the record's length, is
            # done; stale ones (another x_t, e.g. of an earlier collect) are recomputed and replaced
            todo = [r for r in batch if not side.has_current(r.question_hash, _usable(r), keys)]
            stats.skipped += len(batch) - len(todo)
            if todo:
                rows = _chunk_vectors(todo, questions, intern, hidden, thinking, stats)
                side.put_many(rows)
                stats.questions += len(todo)
            bar.update(len(batch))
        bar.close()
    stats.seconds = time.perf_counter() - t_start
    return stats


def _usable(record: QuestionRecord) -> dict[int, int]:
    """The record's usable stages and the prompt length of each (its vectors are checked against it)."""
    return {s.stage: s.prompt_tokens or 0 for s in record.stages if s.usable}


def _chunk_vectors(records, questions, intern, hidden, thinking, stats: CompletionStats) -> list[HiddenRow]:
    """One scoring call per stage over the chunk, as ``Cascade.explore`` makes them."""
    rows: list[HiddenRow] = []
    found = []
    for r in records:
        item = questions.get((r.task, r.doc_hash))
        if item is None:
            raise RecordError(
                f"record {r.task} doc {r.doc_id}: no such document in the tasks given (--tasks as the collect's)"
            )
        if item.question.key != r.question_hash:
            raise RecordError(
                f"record {r.task} doc {r.doc_id}: the task renders another question than was collected "
                "(question hash differs: --apply_chat_template or the task version?)"
            )
        found.append(item.question)
    previous: dict[int, dict] = {}  # record index -> the vectors of its last usable stage
    num_stages = max(len(r.stages) for r in records)
    for stage in range(num_stages):
        todo, copies = [], []
        for i, r in enumerate(records):
            if stage >= len(r.stages) or not r.stages[stage].usable:
                continue
            if (
                stage > 0
                and r.stages[stage - 1].usable
                and r.stages[stage].insights == r.stages[stage - 1].insights
            ):
                copies.append(i)  # the same x_t as the previous stage: the same vectors (Cascade.explore)
            else:
                todo.append(i)
        if todo:
            prompts = [intern_prompt(found[i], records[i].stages[stage].insights, thinking) for i in todo]
            scores = intern.score(prompts, hidden)
            stats.prompts_scored += len(prompts)
            for i, sc in zip(todo, scores):
                entry = records[i].stages[stage]
                if entry.prompt_tokens and sc.num_tokens != entry.prompt_tokens:
                    raise RecordError(
                        f"record {records[i].task} doc {records[i].doc_id} stage {stage}: the rebuilt prompt has "
                        f"{sc.num_tokens} tokens, the collect's had {entry.prompt_tokens} (another intern template, "
                        "thinking switch or tokenizer?)"
                    )
                previous[i] = dict(sc.hidden or {})
        for i in [*todo, *copies]:
            entry = records[i].stages[stage]
            rows += [
                HiddenRow(records[i].question_hash, stage, key, entry.prompt_tokens, vector)
                for key, vector in previous[i].items()
            ]
    return rows
