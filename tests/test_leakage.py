"""The leakage the guard exists for: offline, tandem_math_train is MATH test problems outside MATH-500."""

import json
from pathlib import Path
from shutil import copy as shutil_copy

import lm_eval.tasks.manager as manager
import pytest

from tandem_lm_eval.common.question_content import content_key
from tandem_lm_eval.harness.registration import patch_task_manager
from tandem_lm_eval.harness.task_questions import load_task_questions
from tandem_lm_eval.judgment.training_guard import QuestionIdentity, overlap, training_entries


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


# --- matched by content, whatever the template (judgment/training_guard.py) ----------------------------
FIXTURE_TASKS = Path(__file__).parent / "fixtures" / "tasks"


@pytest.fixture(scope="module")
def arith():
    """The first 3 questions of tandem_test_arith and of its few-shot twin (one task manager: slow)."""
    questions, _ = load_task_questions(
        ["tandem_test_arith", "tandem_test_arith_fewshot"],
        include_path=str(FIXTURE_TASKS),
        limit=3,
        sampling="first",
    )
    return {
        task: [q for q in questions if q.task == task]
        for task in ("tandem_test_arith", "tandem_test_arith_fewshot")
    }


def _identities(questions):
    return [QuestionIdentity(q.question.key, q.question.content_key(q.doc)) for q in questions]


def test_another_template_with_few_shot_examples_is_recognised_by_content(arith):
    trained, other = arith["tandem_test_arith"], arith["tandem_test_arith_fewshot"]
    assert [q.doc for q in trained] == [q.doc for q in other]  # the same documents
    assert "Solve this one." in other[0].question.messages[-1].content  # another rendering, few-shot too
    assert not {q.question.key for q in trained} & {q.question.key for q in other}  # dialogue hashes differ
    entries = training_entries(_identities(trained))  # what fit records of them
    assert overlap(_identities(other), entries) == [0, 1, 2]
    # what classifiers recorded before content keys (rendered-dialogue hashes) missed every one
    legacy = frozenset(q.question.key for q in trained)
    assert overlap(_identities(other), legacy) == []
    assert overlap(_identities(trained), legacy) == [0, 1, 2]  # and still guard their own template


def test_content_is_the_documents_question_normalised():
    a = QuestionIdentity.of("h1", {"problem": "What is  2+3?\n"})
    b = QuestionIdentity.of("h2", {"question": "what is 2+3?"}, fallback_text="Question: what is 2+3?")
    c = QuestionIdentity.of("h3", None, fallback_text="What is 2+3?")  # no document: the last user turn
    assert a.content == b.content == c.content and a.content == content_key("WHAT IS 2+3?")
    assert overlap([QuestionIdentity.of("h4", {"problem": "What is 2+4?"})], training_entries([a])) == []
    assert QuestionIdentity("h5").entries() == ("h5",)  # a record from before content keys: its hash


def test_lm_eval_refuses_a_training_question_under_another_template(
    tmp_path, tiny_classifier_dir, tiny_model_dir, arith
):
    """TandemLM itself, on the few-shot task's requests, with a classifier fit on the plain task."""
    import shutil

    from tandem_lm_eval.harness.lm import TandemLM

    folder = tmp_path / "clf"
    shutil.copytree(tiny_classifier_dir, folder)
    trained = arith["tandem_test_arith"][:1]
    (folder / "training_questions.txt").write_text(
        "\n".join(sorted(training_entries(_identities(trained)))) + "\n"
    )
    lm = TandemLM(
        mentor=str(tiny_model_dir),
        intern=str(tiny_model_dir),
        classifier=str(folder),
        dtype="float32",
        progress="false",
    )
    requests = [q.instance for q in arith["tandem_test_arith_fewshot"]]
    with pytest.raises(SystemExit) as info:
        lm.generate_until(requests)
    message = str(info.value)
    assert (
        "1 of 3 questions (first: tandem_test_arith_fewshot doc 0) are among the classifier's training"
        in message
    )


def test_a_classifier_folder_copied_without_its_training_questions_is_refused(tmp_path):
    from tandem_lm_eval.judgment.errors import ClassifierError
    from tandem_lm_eval.judgment.loading import load_classifier_folder

    shipped = Path(__file__).resolve().parents[1] / "classifiers" / "smollm2-135m-gsm8k"
    copy = tmp_path / "copied"
    copy.mkdir()
    for name in ("classifier.json", "model.safetensors"):
        shutil_copy(shipped / name, copy / name)
    with pytest.raises(ClassifierError) as info:
        load_classifier_folder(copy)
    message = str(info.value)
    assert message.startswith(
        f"classifier {copy}: no training_questions.txt, though it was fit on 480 questions"
    )
    (copy / "training_questions.txt").write_text("")  # an empty file: the guard off, knowingly
    assert load_classifier_folder(copy).card.training_questions == frozenset()


def test_the_shipped_classifiers_know_their_training_questions_by_content(shared_data):
    """Their files were regenerated from training_records.jsonl.gz: a stock-template GSM8K run of those
    questions is recognised, not only the tandem_gsm8k_train rendering."""
    from tandem_lm_eval.data.records import load_records
    from tandem_lm_eval.judgment.loading import load_classifier_folder

    shipped = Path(__file__).resolve().parents[1] / "classifiers" / "smollm2-135m-gsm8k"
    card = load_classifier_folder(shipped).card
    records = load_records([shipped / "training_records.jsonl.gz"])
    assert all(r.question_key for r in records)
    train = [json.loads(line) for line in (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()]
    by_key = {content_key(d["question"]): d for d in train}
    stock = [QuestionIdentity.of("rendered-otherwise", by_key[r.question_key]) for r in records]
    assert overlap(stock, card.training_questions) == list(range(len(records)))
