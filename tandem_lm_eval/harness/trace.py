"""``trace_path``: one record per request, in every mode (the same schema as ``collect``'s records).

A trace record holds the mentor's output, per stage the insights, the Q/I_t token spans, the features,
the score, the answer and the cost. ``analyze`` reads traces, and a trace can serve as a recorded
mentor (a mentor's own answers, from mentor_only or budget_forcing, are marked and never served as
insights).

With several processes (harness/ranks.py) each rank writes its records to a part file beside the
trace while it runs (one per replica with data_parallel_size, harness/replicas.py, since replicas finish
their chunks in any order); at the end of each call rank 0 merges the parts into the trace, in the order
one process would have written them, so the trace is written once with one record per request.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tandem_lm_eval.cascade.outcomes import CascadeResult
from tandem_lm_eval.cascade.prompts import Question
from tandem_lm_eval.common.disk import DiskFullError, append_whole
from tandem_lm_eval.data.records import MentorOutput, QuestionRecord, doc_hash, stage_entry, write_records
from tandem_lm_eval.harness.plan import RunPlan


def trace_record(
    req,
    res: CascadeResult,
    question: Question,
    *,
    plan: RunPlan,
    group_by: str,
    mentor_params: float,
    intern_params: float,
    entropy_method: str,
) -> QuestionRecord:
    """The trace record of one lm-eval request ``req`` and its cascade result."""
    mentor = None
    if res.mentor is not None:
        mentor = MentorOutput(
            text=res.mentor.text,
            token_ids=list(res.mentor.token_ids),
            finished=res.mentor.finished,
            model=plan.mentor.model,
            num_params=mentor_params,
            is_answer=not res.cost.intern_reads_mentor,
        )
    stages = []
    for rec in res.stages:
        # the intern's answer; a question a router gave the mentor has the intern's reading, no answer
        answered = rec.stage == res.cost.stop_stage and res.cost.intern_reads_mentor
        stages.append(
            stage_entry(
                rec,
                answer=res.answer if answered else None,
                intern_tokens=res.cost.intern_tokens if answered else None,
                finish_reason=res.answer_finish_reason if answered else None,
            )
        )
    return QuestionRecord(
        question_hash=question.key,
        question="\n\n".join(m.content for m in question.dialogue()),
        stages=stages,
        kind="trace",
        task=getattr(req, "task_name", None),
        group=question.group if question.group is not None else getattr(req, "task_name", None),
        group_by=group_by,
        doc_id=getattr(req, "doc_id", None),
        doc_hash=doc_hash(getattr(req, "doc", None)),
        budgets=list(plan.budgets),
        mentor=mentor,
        intern_model=plan.intern.model,
        intern_num_params=intern_params,
        entropy_method=entropy_method,
        mode=plan.mode,
        chosen_stage=res.cost.stop_stage,
        stopped_early=res.cost.stopped_early,
        cost=res.cost.as_dict(),
        question_key=question.content_key(getattr(req, "doc", None)),
    )


# --- several processes: one part file per rank (and replica), merged once by rank 0 -----------------------
def part_path(
    trace_path: str | Path, rank: int, world_size: int, replica: int = 0, replicas: int = 1
) -> Path:
    """Where rank ``rank`` writes the records of its replica ``replica`` during a call (beside the trace,
    on the same file system): ``<trace>.rank<r>-of-<W>.part`` under a launcher,
    ``<trace>[.rank<r>-of-<W>].replica<k>-of-<N>.part`` with data_parallel_size=N."""
    path = Path(trace_path)
    name = path.name
    if world_size > 1:
        name += f".rank{rank}-of-{world_size}"
    if replicas > 1:
        name += f".replica{replica}-of-{replicas}"
    return path.with_name(f"{name}.part")


def sort_prefix(task_position: int, doc_id: int | None, serial: int) -> str:
    """A part line's sort key: the merge puts records in the order one process would have written
    them (task by task, then by document), though each rank holds every world_size-th document."""
    return f"{task_position:06d} {doc_id if doc_id is not None else -1:012d} {serial:012d}\t"


def write_part(part: Path, keyed_records: Iterable[tuple[str, QuestionRecord]]) -> int:
    """Append ``(sort prefix, record)`` lines to a rank's part file; returns the bytes written."""
    data = "".join(f"{key}{rec.to_json()}\n" for key, rec in keyed_records).encode("utf-8")
    return append_whole(part, data)


_MERGE_BATCH = 1 << 20  # bytes of merged lines appended at a time


def merge_parts(trace_path: str | Path, parts: Sequence[tuple[Path, int]]) -> tuple[int, list[Path]]:
    """Append the records of every rank's part file to the trace, in one process's order, streaming
    (one line per part in memory), and delete the parts. ``parts``: (path, bytes its rank wrote).

    Returns (records written, parts that this process cannot see whole: left where they are)."""
    readable, missing = [], []
    for path, size in parts:
        if path.is_file() and path.stat().st_size >= size:
            readable.append(path)
        else:
            missing.append(path)
    handles = [p.open("rb") for p in readable]
    written = 0
    out_path = Path(trace_path)
    # a full disk mid-merge: the trace is cut back to what it held and the parts stay (common/disk.py)
    kept = (
        f"{out_path.name} keeps the records it held before this merge, and the rank parts "
        f"{', '.join(p.name for p in readable)} are left beside it"
    )
    try:
        write_records(out_path, [])  # makes the file and cuts a torn last line a killed run left
        start = out_path.stat().st_size
        # keyed lines sort by their prefix; each part is already in its rank's order
        merged = heapq.merge(*(iter(h) for h in handles))
        batch = bytearray()
        try:
            for line in merged:
                if not line.endswith(b"\n"):  # a torn line of a killed writer: its record is not kept
                    continue
                batch += line.split(b"\t", 1)[1]
                written += 1
                if len(batch) >= _MERGE_BATCH:
                    append_whole(out_path, bytes(batch), kept)
                    batch.clear()
            if batch:
                append_whole(out_path, bytes(batch), kept)
        except DiskFullError:
            os.truncate(out_path, start)  # none of this merge: the parts still hold it all
            raise
    finally:
        for h in handles:
            h.close()
    for p in readable:
        p.unlink()
    return written, missing
