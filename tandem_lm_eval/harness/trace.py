"""``trace_path``: one record per request, in every mode (the same schema as ``collect``'s records).

A trace record holds the mentor's output, per stage the insights, the Q/I_t token spans, the features,
the score, the answer and the cost. ``analyze`` reads traces, and a trace can serve as a recorded
mentor (a mentor's own answers, from mentor_only or budget_forcing, are marked and never served as
insights).
"""

from __future__ import annotations

from tandem_lm_eval.cascade.outcomes import CascadeResult
from tandem_lm_eval.cascade.prompts import Question
from tandem_lm_eval.data.records import MentorOutput, QuestionRecord, doc_hash, stage_entry
from tandem_lm_eval.harness.config import TandemConfig


def trace_record(
    req,
    res: CascadeResult,
    question: Question,
    *,
    config: TandemConfig,
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
            model=config.mentor.model,
            num_params=mentor_params,
            is_answer=not res.cost.intern_reads_mentor,
        )
    stages = []
    for rec in res.stages:
        answered = rec.stage == res.cost.stop_stage
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
        budgets=list(config.budgets),
        mentor=mentor,
        intern_model=config.intern.model,
        intern_num_params=intern_params,
        entropy_method=entropy_method,
        mode=config.mode,
        chosen_stage=res.cost.stop_stage,
        stopped_early=res.cost.stopped_early,
        cost=res.cost.as_dict(),
    )
