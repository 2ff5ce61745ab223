"""taskdata.py on real lm-eval tasks: balanced sampling across groups, doc ids, generation settings,
the task's own verdict on an answer, and user-added task YAMLs (a local JSON dataset)."""

from __future__ import annotations

import json
from collections import Counter

import lm_eval.tasks.manager as manager
import pytest

from tandem_lm_eval.backends.base import Message
from tandem_lm_eval.harness.registration import patch_task_manager
from tandem_lm_eval.harness.task_questions import TaskDataError, TaskSource, load_task_questions
from tandem_lm_eval.judgment.errors import ClassifierError

ALGEBRA, GEOMETRY = "tandem_math_algebra_train", "tandem_math_geometry_train"
SUBJECTS = {
    "Algebra",
    "Counting & Probability",
    "Geometry",
    "Intermediate Algebra",
    "Number Theory",
    "Prealgebra",
    "Precalculus",
}


@pytest.fixture(scope="module", autouse=True)
def _tasks_folder(shared_data):
    patch_task_manager(manager)  # as the subcommands do: lm-eval's TaskManager sees tasks/


def picks(questions) -> list[tuple[str, int]]:
    return [(q.task, q.doc_id) for q in questions]


@pytest.fixture(scope="module")
def two_subjects():
    return load_task_questions([ALGEBRA, GEOMETRY], limit=10, seed=0, group_by="task")


def test_balanced_across_tasks(two_subjects):
    questions, source = two_subjects
    assert len(questions) == 10
    assert Counter(q.task for q in questions) == {ALGEBRA: 5, GEOMETRY: 5}
    assert [q.group for q in questions] == [q.task for q in questions]
    assert [q.task for q in questions] == [ALGEBRA, GEOMETRY] * 5  # round-robin over sorted groups
    assert len(set(picks(questions))) == 10
    assert set(source.tasks) == {ALGEBRA, GEOMETRY}
    assert source.group_by == "task"


def test_doc_id_indexes_the_tasks_eval_docs(two_subjects):
    from lm_eval.utils import hash_string

    questions, source = two_subjects
    for q in questions:
        task = source.tasks[q.task]
        doc = task.eval_docs[q.doc_id]
        assert q.doc == doc
        assert q.doc["subject"] == ("Algebra" if q.task == ALGEBRA else "Geometry")
        assert q.split == "train"
        assert q.doc_hash == hash_string(json.dumps(doc, indent=2, ensure_ascii=False))
        # the question is the context lm-eval builds (zero-shot, no chat template): doc_to_text
        assert q.question.messages == (Message("user", task.doc_to_text(doc)),)
        assert doc["problem"] in q.question.messages[0].content
        assert q.question.group == q.task
        # the task's own generation settings (tasks/_tandem_generation_yaml)
        assert q.question.max_gen_toks == 8192 and q.question.until == () and q.question.temperature == 0
        assert q.instance.doc == doc and q.instance.request_type == "generate_until"
    assert max(q.doc_id for q in questions) >= 10  # sampled, not the first documents


def test_same_seed_same_questions_grouped_by_subject(two_subjects):
    """A fresh load with the same seed, grouping by the document's subject: each task is one subject,
    so the groups hold the same documents as by task and the same seed must pick the same ones."""
    questions, _ = two_subjects
    again, source = load_task_questions(
        [ALGEBRA, GEOMETRY], limit=10, seed=0, group_by="doc:subject", max_gen_toks=77
    )
    assert picks(again) == picks(questions)
    assert [q.group for q in again] == ["Algebra", "Geometry"] * 5
    for q in again:
        assert q.group == q.doc["subject"] == q.question.group
        assert q.question.max_gen_toks == 77  # the override reaches the question
    assert [q.question.messages for q in again] == [q.question.messages for q in questions]
    assert source.group_by == "doc:subject"


def test_task_group_and_another_seed(two_subjects):
    questions, source = load_task_questions(["tandem_math_train"], limit=14, seed=1, group_by="task")
    assert len(source.tasks) == 7  # the group expanded to its seven subject tasks
    assert Counter(q.task for q in questions) == {t: 2 for t in source.tasks}
    assert {q.doc["subject"] for q in questions} == SUBJECTS
    for q in questions:
        assert q.group == q.task
        assert source.tasks[q.task].eval_docs[q.doc_id] == q.doc
        assert q.question.max_gen_toks == 8192
    # the algebra pool is shuffled first in both runs: with seed 0 these would be its first two picks
    seed0_algebra = [d for t, d in picks(two_subjects[0]) if t == ALGEBRA][:2]
    seed1_algebra = [d for t, d in picks(questions) if t == ALGEBRA]
    assert len(seed1_algebra) == 2 and seed1_algebra != seed0_algebra


def test_bad_group_by():
    with pytest.raises(ClassifierError, match="group_by must be 'task' or 'doc:<field>'"):
        load_task_questions([ALGEBRA], group_by="subject")


def test_judge_gsm8k():
    questions, source = load_task_questions(["tandem_gsm8k_train"], limit=3, seed=5)
    assert source.metric_of("tandem_gsm8k_train") == "exact_match"
    for q in questions:
        assert source.tasks[q.task].eval_docs[q.doc_id] == q.doc
        assert q.doc["target"] == q.doc["answer"].rpartition("#### ")[2].replace(",", "")
    gold = [q.doc["target"] for q in questions]
    answers = [
        f"The answer is \\boxed{{{gold[0]}}}",
        f"The answer is \\boxed{{{int(gold[1]) + 1}}}",
        None,  # a stage that did not fit: no verdict
    ]
    assert source.judge(questions, answers) == [(1.0, 1), (0.0, 0), (None, None)]
    assert source.judge(questions[1:2], [f"So it is \\boxed{{{gold[1]}}}."]) == [(1.0, 1)]
    # a metric the task does not report, a filter it does not have
    with pytest.raises(TaskDataError, match=r"reports metrics \['exact_match'\], not 'acc': pass --metric"):
        TaskSource(source.tasks, metric="acc").judge(questions[:1], ["\\boxed{1}"])
    with pytest.raises(TaskDataError, match="has no filter 'strict'"):
        TaskSource(source.tasks, filter_name="strict").judge(questions[:1], ["\\boxed{1}"])
    # a threshold above the metric's range labels nothing correct
    assert TaskSource(source.tasks, threshold=2.0).judge(questions[:1], answers[:1]) == [(1.0, 0)]


def test_unknown_task():
    with pytest.raises(TaskDataError, match=r"could not load tasks \['tandem_no_such_task'\]"):
        load_task_questions(["tandem_no_such_task"])


# ---------------------------------------------------------------- user-added task YAMLs

GEN_DOCS = [
    {"question": "What is 2 plus 2?", "answer": "4", "kind": "add"},
    {"question": "What is 3 times 3?", "answer": "9", "kind": "mul"},
    {"question": "What is 5 plus 1?", "answer": "6", "kind": "add"},
    {"question": "What is 7 plus 2?", "answer": "9", "kind": "add"},
    {"question": "What is 2 times 5?", "answer": "10", "kind": "mul"},
    {"question": "What is 1 plus 1?", "answer": "2", "kind": "add"},
]


@pytest.fixture(scope="module")
def user_tasks(tmp_path_factory):
    """A generation task and a multiple-choice task, each on a local JSON-lines file."""
    folder = tmp_path_factory.mktemp("user_tasks")
    gen, mc = folder / "gen.jsonl", folder / "mc.jsonl"
    gen.write_text("".join(json.dumps(d) + "\n" for d in GEN_DOCS))
    mc.write_text(json.dumps({"question": "Sky color?", "choices": ["blue", "green"], "label": 0}) + "\n")
    cache = folder / "hf_cache"
    (folder / "my_arith.yaml").write_text(
        f"""task: my_arith
dataset_path: json
dataset_kwargs:
  data_files:
    test: {gen}
  cache_dir: {cache}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 16
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
    )
    (folder / "my_choice.yaml").write_text(
        f"""task: my_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {mc}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
    )
    return folder


def test_user_generation_task(user_tasks):
    questions, source = load_task_questions(
        ["my_arith"], include_path=str(user_tasks), limit=5, seed=0, group_by="doc:kind"
    )
    # 4 'add' and 2 'mul' documents, limit 5: round-robin takes both 'mul' and 3 'add'
    assert Counter(q.group for q in questions) == {"add": 3, "mul": 2}
    for q in questions:
        assert q.doc == GEN_DOCS[q.doc_id]
        assert q.question.messages == (Message("user", f"Q: {q.doc['question']}\nA:"),)
        assert q.question.until == ("\n",) and q.question.max_gen_toks == 16
        assert q.split == "test" and q.task == "my_arith"
    assert source.metric_of("my_arith") == "exact_match"
    answers = [
        q.doc["answer"] if i % 2 == 0 else str(int(q.doc["answer"]) + 1) for i, q in enumerate(questions)
    ]
    assert source.judge(questions, answers) == [(1.0, 1), (0.0, 0), (1.0, 1), (0.0, 0), (1.0, 1)]
    assert source.judge(questions[:1], [f" {questions[0].doc['answer']}!"]) == [(0.0, 0)]  # exact, no ignores


def test_loglikelihood_task_refused(user_tasks):
    with pytest.raises(TaskDataError, match="task 'my_choice' is multiple_choice: only generation tasks"):
        load_task_questions(["my_arith", "my_choice"], include_path=str(user_tasks))
