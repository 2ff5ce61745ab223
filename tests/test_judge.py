"""TaskSource.judge labels each answer on its own, even when several answers share a question."""

import lm_eval.tasks.manager as manager

from tandem_lm_eval.harness.registration import patch_task_manager
from tandem_lm_eval.harness.task_questions import load_task_questions


def test_answers_to_one_question_are_judged_separately(shared_data):
    patch_task_manager(manager)
    questions, source = load_task_questions(["tandem_gsm8k_train"], limit=2)
    first, second = questions
    gold = first.doc["target"]
    wrong = str(int(gold) + 1)
    # the stages of one question share one lm-eval Instance: the verdicts must not bleed into each other
    verdicts = source.judge(
        [first, first, second, first],
        [f"The answer is \\boxed{{{gold}}}", f"\\boxed{{{wrong}}}", None, f"so {gold}"],
    )
    assert verdicts == [(1.0, 1), (0.0, 0), (None, None), (1.0, 1)]


def test_tasks_that_run_model_code_need_the_same_confirmation_as_lm_eval(shared_data):
    import pytest

    from tandem_lm_eval.harness.task_questions import TaskDataError

    patch_task_manager(manager)
    with pytest.raises(TaskDataError, match="confirm_run_unsafe_code"):
        load_task_questions(["tandem_humaneval"], limit=2)
    questions, source = load_task_questions(["tandem_humaneval"], limit=2, confirm_run_unsafe_code=True)
    assert source.metric_of("tandem_humaneval") == "pass@1"
    canonical = "```python\n" + questions[0].doc["prompt"] + questions[0].doc["canonical_solution"] + "\n```"
    assert source.judge(questions[:1], [canonical]) == [(1.0, 1)]
