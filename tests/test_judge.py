"""TaskSource.judge labels each answer on its own, even when several answers share a question."""

import lm_eval.tasks.manager as manager

from tandem_lm_eval._startup import patch_task_manager
from tandem_lm_eval.taskdata import load_task_questions


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
