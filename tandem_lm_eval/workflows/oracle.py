"""``tandem-lm-eval oracle-mentor``: a recorded mentor made of a task's reference solutions.

An "oracle mentor" whose insights are the reference solution of each question (GSM8K's ``answer``,
MATH's ``solution``), served by ``mentor_backend=recorded`` and cut at each budget like a real
mentor's output. It lets a machine without a large model study the intern's judgment with a real
intern and real labels: the first tokens of a solution rarely suffice, the whole of it often does.

Cleaning (``clean_solution``): GSM8K's calculator notes ``<<48/2=24>>`` are removed, and so is its
final ``#### <answer>`` line (``keep_final_answer=True`` keeps it): the intern should have to use
the guidance, not copy a marked answer. MATH solutions are kept as written (their ``\\boxed{}``
answer is part of the worked solution).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from tandem_lm_eval.data.records import MentorOutput, QuestionRecord, write_records
from tandem_lm_eval.harness.task_questions import TaskDataError, TaskQuestion

_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")
_FINAL_ANSWER_LINE = re.compile(r"\n?####[^\n]*\s*$")


def clean_solution(text: str, keep_final_answer: bool = False) -> str:
    text = _CALCULATOR_NOTE.sub("", text)
    if not keep_final_answer:
        text = _FINAL_ANSWER_LINE.sub("", text)
    return text.strip()


def oracle_records(
    questions: Sequence[TaskQuestion], solution_field: str, keep_final_answer: bool = False
) -> list[QuestionRecord]:
    records = []
    for q in questions:
        solution = q.doc.get(solution_field)
        if not isinstance(solution, str) or not solution.strip():
            raise TaskDataError(
                f"task {q.task!r} document {q.doc_id} has no text field {solution_field!r} "
                f"(fields: {', '.join(sorted(q.doc))}): pass --solution-field"
            )
        records.append(
            QuestionRecord(
                question_hash=q.question.key,
                question="\n\n".join(m.content for m in q.question.dialogue()),
                question_key=q.question.content_key(q.doc),
                stages=[],
                kind="oracle",
                task=q.task,
                group=q.group,
                doc_id=q.doc_id,
                doc_hash=q.doc_hash,
                split=q.split,
                mentor=MentorOutput(
                    text=clean_solution(solution, keep_final_answer),
                    token_ids=None,
                    finished=True,
                    model=f"oracle:{solution_field}",
                    num_params=None,
                ),
            )
        )
    return records


def write_oracle(
    questions: Sequence[TaskQuestion], solution_field: str, out: str | Path, keep_final_answer: bool = False
) -> int:
    out = Path(out)
    records = oracle_records(questions, solution_field, keep_final_answer)  # fails before touching out
    # a fresh file, replaced in one step: the same question written twice would be ambiguous
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    n = write_records(partial, records)
    partial.replace(out)
    return n
