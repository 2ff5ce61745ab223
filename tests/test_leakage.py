"""The leakage the guard exists for: offline, tandem_math_train is MATH test problems outside MATH-500."""

import lm_eval.tasks.manager as manager

from tandem_lm_eval.harness.registration import patch_task_manager
from tandem_lm_eval.harness.task_questions import load_task_questions


def test_math_train_questions_are_recognised_in_tandem_math_not_in_math500(shared_data):
    patch_task_manager(manager)
    train, _ = load_task_questions(["tandem_math_train"], limit=70, group_by="doc:subject")
    assert len({q.group for q in train}) == 7  # balanced: 10 per subject
    hashes = {q.question.key for q in train}
    test, _ = load_task_questions(["tandem_math"])
    math500, _ = load_task_questions(["tandem_math500"])
    # the same question text reaches the intern in both tasks, so the hashes a classifier saves match
    assert len(hashes & {q.question.key for q in test}) == 70
    assert not hashes & {q.question.key for q in math500}
