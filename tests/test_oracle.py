"""oracle.py and ``tandem-lm-eval oracle-mentor``: a recorded mentor made of a task's reference
solutions, keyed so that the request lm-eval builds for the same document finds it."""

from __future__ import annotations

import json

import lm_eval.tasks.manager as manager
import pytest
from lm_eval.tasks import TaskManager
from lm_eval.utils import hash_string

from tandem_lm_eval.backends.base import Message
from tandem_lm_eval.cli.commands import run_subcommand
from tandem_lm_eval.cli.main import main
from tandem_lm_eval.common.question_hash import question_hash
from tandem_lm_eval.data.records import iter_records
from tandem_lm_eval.harness.registration import patch_task_manager
from tandem_lm_eval.harness.task_questions import load_task_questions
from tandem_lm_eval.workflows.oracle import clean_solution, oracle_records, write_oracle

# GSM8K train, first problem, as in the data file
NATALIA = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


def remove_notes(text: str) -> str:
    """Calculator notes removed by scanning (not the module's regex)."""
    out, i = [], 0
    while True:
        start = text.find("<<", i)
        if start < 0:
            out.append(text[i:])
            return "".join(out)
        end = text.find(">>", start)
        out.append(text[i:start])
        i = end + 2


def test_clean_solution_first_gsm8k_answer(shared_data):
    from tandem_lm_eval.data.benchmarks import load_gsm8k

    assert load_gsm8k("train")[0]["answer"] == NATALIA
    assert clean_solution(NATALIA) == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."
    )
    assert clean_solution(NATALIA, keep_final_answer=True) == (
        "Natalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"
    )


def test_clean_solution_every_gsm8k_answer(shared_data):
    from tandem_lm_eval.data.benchmarks import load_gsm8k

    docs = load_gsm8k("train") + load_gsm8k("test")
    assert len(docs) == 7473 + 1319
    with_notes = 0
    for doc in docs:
        answer = doc["answer"]
        with_notes += "<<" in answer
        body, _, final = answer.rpartition("\n")
        assert final.startswith("#### ")
        assert clean_solution(answer) == remove_notes(body).strip()
        assert clean_solution(answer, keep_final_answer=True) == (remove_notes(body) + "\n" + final).strip()
    assert with_notes > 8000  # the notes were there to remove


def test_clean_solution_leaves_math_solutions_alone():
    solution = "We have $x^2 = 4$, so $x = \\boxed{2}$.\n\nThus #1 and $a<b>c$ stay."
    assert clean_solution(solution) == solution
    assert clean_solution("  padded\n") == "padded"


@pytest.fixture(scope="module")
def lm_eval_train_task(shared_data):
    """lm-eval's own task object for tandem_gsm8k_train (our folder only: fast)."""
    patch_task_manager(manager)  # what the subcommands do: adds the package's task folder
    return TaskManager(include_defaults=False).load(["tandem_gsm8k_train"])["tasks"]["tandem_gsm8k_train"]


@pytest.fixture(scope="module")
def oracle_file(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("oracle") / "oracle.jsonl"
    out.write_text("stale content that a fresh run replaces\n")
    argv = ["oracle-mentor", "--tasks", "tandem_gsm8k_train", "--limit", "5", "--solution-field", "answer"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(out)])
    assert info.value.code == 0
    return out


def test_oracle_mentor_command(oracle_file, lm_eval_train_task):
    records = list(iter_records(oracle_file))
    assert len(records) == 5
    assert len({r.doc_id for r in records}) == 5
    docs = lm_eval_train_task.eval_docs
    doc_ids = sorted(r.doc_id for r in records)
    lm_eval_train_task.build_all_requests(samples=doc_ids)  # the requests lm-eval sends the model
    instances = lm_eval_train_task.instances
    assert len(instances) == 5
    # lm-eval yields the chosen samples in eval_docs order (its own doc_id is then their position)
    assert [inst.doc for inst in instances] == [docs[i] for i in doc_ids]
    contexts = {doc_id: inst.args[0] for doc_id, inst in zip(doc_ids, instances)}
    for rec in records:
        doc = docs[rec.doc_id]
        context = contexts[rec.doc_id]
        assert context == lm_eval_train_task.doc_to_text(doc)
        assert doc["question"] in context
        assert rec.question_hash == question_hash((Message("user", context),)) == question_hash(context)
        assert rec.question == context
        assert rec.kind == "oracle" and rec.stages == []
        assert rec.task == "tandem_gsm8k_train" and rec.group == "tandem_gsm8k_train" and rec.split == "train"
        assert rec.doc_hash == hash_string(json.dumps(doc, indent=2, ensure_ascii=False))
        assert rec.mentor.text == remove_notes(doc["answer"].rpartition("\n")[0]).strip()
        assert "####" not in rec.mentor.text and "<<" not in rec.mentor.text
        assert rec.mentor.token_ids is None and rec.mentor.finished
        assert rec.mentor.model == "oracle:answer" and rec.mentor.num_params is None
    assert "stale content" not in oracle_file.read_text()


def test_bad_solution_field(tmp_path, capsys, shared_data):
    out = tmp_path / "oracle.jsonl"
    argv = ["oracle-mentor", "--tasks", "tandem_gsm8k_train", "--limit", "2", "--solution-field", "solution"]
    code = run_subcommand([*argv, "--out", str(out)])
    assert code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    err = [line for line in stderr.splitlines() if line.startswith("tandem-lm-eval")]  # (and tqdm bars)
    assert len(err) == 1, stderr
    assert err[0].startswith("tandem-lm-eval oracle-mentor: task 'tandem_gsm8k_train' document ")
    assert err[0].endswith(
        "has no text field 'solution' (fields: answer, id, prompt_opened_think, question, target): "
        "pass --solution-field"
    )
    assert not out.exists()


def test_unknown_task_is_a_one_line_error(tmp_path, capsys, shared_data):
    argv = ["oracle-mentor", "--tasks", "tandem_no_such_task", "--solution-field", "answer"]
    code = run_subcommand([*argv, "--out", str(tmp_path / "o.jsonl")])
    assert code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    err = [line for line in stderr.splitlines() if line.startswith("tandem-lm-eval")]
    assert len(err) == 1, stderr
    assert err[0].startswith("tandem-lm-eval oracle-mentor: could not load tasks ['tandem_no_such_task']")


@pytest.fixture(scope="module")
def train_questions(shared_data):
    patch_task_manager(manager)
    return load_task_questions(["tandem_gsm8k_train"], limit=3, seed=7)[0]


def test_oracle_records_keep_final_answer(train_questions, tmp_path):
    kept = oracle_records(train_questions, "answer", keep_final_answer=True)
    plain = oracle_records(train_questions, "answer")
    assert len(kept) == len(plain) == 3
    for q, k, p in zip(train_questions, kept, plain):
        final = q.doc["answer"].rpartition("\n")[2]
        assert k.mentor.text == p.mentor.text + "\n" + final
        assert final == "#### " + q.doc["answer"].rpartition("#### ")[2]
        assert k.question_hash == p.question_hash == q.question.key
        assert k.doc_id == q.doc_id and k.doc_hash == q.doc_hash
    out = tmp_path / "o.jsonl"
    assert write_oracle(train_questions, "answer", out) == 3
    assert write_oracle(train_questions, "answer", out) == 3  # rewritten, not appended
    assert [r.mentor.text for r in iter_records(out)] == [p.mentor.text for p in plain]


def test_oracle_records_rejects_empty_solution(train_questions):
    q = train_questions[0]
    q.doc["empty"] = "  "
    try:
        with pytest.raises(ValueError, match=rf"document {q.doc_id} has no text field 'empty'"):
            oracle_records(train_questions, "empty")
    finally:
        del q.doc["empty"]


def test_failed_oracle_run_keeps_the_previous_file(train_questions, tmp_path):
    out = tmp_path / "o.jsonl"
    write_oracle(train_questions, "answer", out)
    before = out.read_text()
    with pytest.raises(ValueError):
        write_oracle(train_questions, "no_such_field", out)
    assert out.exists() and out.read_text() == before
