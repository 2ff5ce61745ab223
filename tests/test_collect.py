"""``tandem-lm-eval collect`` end to end, in-process: the tiny random intern (transformers backend)
with a recorded oracle mentor (``oracle-mentor``'s GSM8K reference solutions, cut with the tiny
model's tokenizer), every stage labelled by the task's own metric; resume and a corrupt file."""

from __future__ import annotations

import json

import pytest

from tandem_lm_eval.backends.base import Message
from tandem_lm_eval.cascade.prompts import Question, intern_prompt
from tandem_lm_eval.cli.commands import run_subcommand
from tandem_lm_eval.data.records import iter_records
from tandem_lm_eval.judgment.features import FEATURE_SPANS, NUM_FEATURES
from tandem_lm_eval.workflows.oracle import clean_solution

BUDGETS = [8, 16, 32]
TASK = "tandem_gsm8k_train"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def oracle_file(tmp_path_factory, shared_data):
    """Reference solutions of the first 6 sampled questions (a superset of the first 4: the same
    seed shuffles the one pool the same way)."""
    out = tmp_path_factory.mktemp("oracle") / "gsm8k_oracle.jsonl"
    argv = ["oracle-mentor", "--tasks", TASK, "--limit", "6", "--solution-field", "answer", "--out", str(out)]
    assert run_subcommand(argv) == 0
    return out


def collect_argv(oracle_file, tiny_model_dir, out, limit: int) -> list[str]:
    model_args = (
        f"mentor={oracle_file},mentor_backend=recorded,mentor_tokenizer={tiny_model_dir},"
        f"mentor_num_params=32e9,intern={tiny_model_dir},intern_backend=hf,dtype=float32,"
        f"budgets=[{','.join(map(str, BUDGETS))}],progress=false"
    )
    return [
        "collect",
        "--tasks",
        TASK,
        "--limit",
        str(limit),
        "--chunk",
        "2",
        "--answer-max-tokens",
        "8",
        "--model_args",
        model_args,
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def collected(tmp_path_factory, oracle_file, tiny_model_dir):
    out = tmp_path_factory.mktemp("collect") / "records.jsonl"
    assert run_subcommand(collect_argv(oracle_file, tiny_model_dir, out, limit=4)) == 0
    return out


def test_collect_records(collected, oracle_file, tiny_model_dir, tokenizer, shared_data):
    from lm_eval.utils import hash_string

    from tandem_lm_eval.data.benchmarks import load_gsm8k
    from tandem_lm_eval.scoring.gsm8k_answer import score_gsm8k_response

    records = list(iter_records(collected))
    assert len(records) == 4
    oracle = {r.question_hash: r for r in iter_records(oracle_file)}
    assert len(oracle) == 6
    train = load_gsm8k("train")
    for rec in records:
        # where the question came from
        assert rec.kind == "explore" and rec.mode == "explore" and rec.labelled
        assert rec.task == TASK and rec.group == TASK and rec.group_by == "task" and rec.split == "train"
        doc = {**train[rec.doc_id], "prompt_opened_think": False}  # as tasks/utils.py serves it
        assert rec.doc_hash == hash_string(json.dumps(doc, indent=2, ensure_ascii=False))
        assert doc["question"] in rec.question
        assert rec.question_hash in oracle and oracle[rec.question_hash].doc_id == rec.doc_id
        assert rec.budgets == BUDGETS
        assert rec.intern_model == str(tiny_model_dir) and rec.entropy_method == "exact"
        # the mentor: the reference solution, cut at the last budget with the mentor's tokenizer
        ids = tokenizer(clean_solution(doc["answer"]), add_special_tokens=False).input_ids
        n = min(BUDGETS[-1], len(ids))
        assert rec.mentor.token_ids == ids[:n]
        assert rec.mentor.text == tokenizer.decode(ids[:n], skip_special_tokens=True)
        assert rec.mentor.finished == (len(ids) <= BUDGETS[-1])
        assert rec.mentor.num_params == 32e9
        assert rec.mentor.model == "recorded:oracle:answer"
        # every stage
        assert [s.stage for s in rec.stages] == [0, 1, 2, 3]
        tokens = [s.mentor_tokens for s in rec.stages]
        assert tokens == [0, *(min(b, len(ids)) for b in BUDGETS)]
        assert tokens == sorted(tokens) and all(t <= b for t, b in zip(tokens[1:], BUDGETS))
        question = Question(messages=(Message("user", rec.question),))  # zero-shot: one user turn
        assert question.key == rec.question_hash
        for stage in rec.stages:
            k = stage.mentor_tokens
            expected = tokenizer.decode(ids[:k], skip_special_tokens=True).strip() if k else ""
            assert stage.insights == expected
            assert stage.usable
            # the rendered intern prompt x_t, counted with the intern's own chat template
            prompt = intern_prompt(question, stage.insights, None)
            text = tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in prompt.messages],
                add_generation_prompt=True,
                tokenize=False,
            )
            assert stage.prompt_tokens == len(tokenizer(text, add_special_tokens=False).input_ids)
            # token spans of Q and (from stage 1) I_t inside it
            assert set(stage.spans) == ({"question", "insights"} if k else {"question"})
            (q_span,) = stage.spans["question"]
            assert 0 < q_span[0] < q_span[1] < stage.prompt_tokens
            q_tokens = q_span[1] - q_span[0]
            assert abs(q_tokens - len(tokenizer(rec.question, add_special_tokens=False).input_ids)) <= 2
            i_tokens = 0
            if k:
                (i_span,) = stage.spans["insights"]
                assert q_span[1] < i_span[0] < i_span[1] < stage.prompt_tokens
                i_tokens = i_span[1] - i_span[0]
                assert abs(i_tokens - k) <= 2  # the same text, tokenized inside the prompt
            # 17 features over each span; the last one is the span's length in tokens
            assert set(stage.features) == set(FEATURE_SPANS)
            assert all(len(v) == NUM_FEATURES for v in stage.features.values())
            assert stage.features["prompt"][-1] == stage.prompt_tokens
            assert stage.features["question_insights"][-1] == q_tokens + i_tokens
            assert stage.features["insights"][-1] == (i_tokens if k else q_tokens)
            assert all(f > 0 for f in stage.features["prompt"][:7])  # perplexities
            # the intern's answer and the task's verdict on it
            assert isinstance(stage.answer, str)
            assert 1 <= stage.intern_tokens <= 8 and stage.finish_reason in ("stop", "length")
            assert stage.metric == "exact_match"
            assert stage.label in (0, 1) and stage.metric_value == float(stage.label)
            assert stage.label == int(score_gsm8k_response(stage.answer, doc["target"]))
        assert any(s.intern_tokens == 8 for s in rec.stages)  # --answer-max-tokens reached the intern


def test_intern_params_recorded(collected, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    expected = float(sum(p.numel() for p in model.parameters()))
    assert {r.intern_num_params for r in iter_records(collected)} == {expected}


def test_resume(collected, oracle_file, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "records.jsonl"
    out.write_bytes(collected.read_bytes())
    before = out.read_bytes()
    capsys.readouterr()
    # the same command again: nothing new
    assert run_subcommand(collect_argv(oracle_file, tiny_model_dir, out, limit=4)) == 0
    assert f"collect: wrote 0 records to {out}" in capsys.readouterr().out
    assert out.read_bytes() == before
    # a larger limit: only the 2 questions not there yet
    assert run_subcommand(collect_argv(oracle_file, tiny_model_dir, out, limit=6)) == 0
    assert "wrote 2 records" in capsys.readouterr().out
    after = out.read_bytes()
    assert after.startswith(before)
    records = list(iter_records(out))
    assert len(records) == 6
    assert len({(r.task, r.doc_hash) for r in records}) == 6
    oracle_ids = {r.doc_id for r in iter_records(oracle_file)}
    assert {r.doc_id for r in records} == oracle_ids
    assert all(len(r.stages) == 4 and r.labelled for r in records[4:])


def test_corrupt_line_in_the_middle(collected, oracle_file, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "records.jsonl"
    lines = collected.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 5 and lines[-1] == ""
    lines[1] = lines[1][: len(lines[1]) // 2]  # a half-written record, not at the end
    out.write_text("\n".join(lines), encoding="utf-8")
    before = out.read_bytes()
    capsys.readouterr()
    assert run_subcommand(collect_argv(oracle_file, tiny_model_dir, out, limit=4)) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    message = [line for line in stderr.splitlines() if line.startswith("tandem-lm-eval")]
    assert len(message) == 1, stderr
    assert message[0].startswith(f"tandem-lm-eval collect: cannot resume into {out}: {out}:2: not a record")
    assert out.read_bytes() == before  # nothing appended


def test_mode_is_refused(oracle_file, tiny_model_dir, tmp_path, capsys):
    argv = collect_argv(oracle_file, tiny_model_dir, tmp_path / "r.jsonl", limit=1)
    argv[argv.index("--model_args") + 1] += ",mode=tandem"
    assert run_subcommand(argv) == 2
    assert "collect runs every stage: leave mode out of --model_args" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()


def test_answers_by_stage_gives_the_same_records_with_each_stage_timed(
    collected, oracle_file, tiny_model_dir, tmp_path, monkeypatch
):
    """``--answers-by-stage``: one answer call per stage (as a live run answers), the same answers
    and labels, and every stage's seconds recorded."""
    from tandem_lm_eval.backends.hf import HFBackend

    calls = []
    generate = HFBackend.generate

    def counting(self, requests):
        calls.append(len(requests))
        return generate(self, requests)

    monkeypatch.setattr(HFBackend, "generate", counting)
    out = tmp_path / "by-stage.jsonl"
    assert (
        run_subcommand([*collect_argv(oracle_file, tiny_model_dir, out, limit=4), "--answers-by-stage"]) == 0
    )
    # 2 chunks of 2 questions, 4 stages each: at most 4 answer calls of at most 2 per chunk
    assert calls and max(calls) <= 2 and len(calls) >= 4
    by_stage, together = list(iter_records(out)), list(iter_records(collected))
    strip = ("seconds",)
    for a, b in zip(by_stage, together):
        assert [{k: v for k, v in s.__dict__.items() if k not in strip} for s in a.stages] == [
            {k: v for k, v in s.__dict__.items() if k not in strip} for s in b.stages
        ]
        for t, s in enumerate(a.stages):
            assert set(s.seconds) == {"mentor_generate", "intern_score", "classify", "intern_generate"}
            assert s.seconds["intern_generate"] > 0
            # scored unless it adds nothing to the previous stage (then the previous score is reused)
            new_insights = t == 0 or s.insights != a.stages[t - 1].insights
            assert (s.seconds["intern_score"] > 0) == new_insights


def test_a_failed_judging_step_loses_nothing(oracle_file, tiny_model_dir, tmp_path, capsys, monkeypatch):
    """A broken filter in the task (any error while judging) fails after the chunk's generations: they
    are in the run store beside --out, and the rerun after the fix computes nothing twice."""
    from tandem_lm_eval.harness.task_questions import TaskSource
    from tandem_lm_eval.workflows import collect as collect_module

    explorers = []  # a spy, so the rerun's store counts can be read
    real_make, real_judge = collect_module.make_explorer, TaskSource.judge

    def spy(model_args, **kwargs):
        explorers.append(real_make(model_args, **kwargs))
        return explorers[-1]

    def broken(self, items, answers):  # fault injection: the task's filter raises
        raise KeyError("answer_field")

    monkeypatch.setattr(collect_module, "make_explorer", spy)
    monkeypatch.setattr(TaskSource, "judge", broken)
    out = tmp_path / "records.jsonl"
    capsys.readouterr()
    assert run_subcommand(collect_argv(oracle_file, tiny_model_dir, out, limit=2)) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("tandem-lm-eval")]
    assert (
        f"judging {TASK} answers with the task's filters and metric failed: KeyError: 'answer_field'" in line
    )
    assert f"kept in the run store {tmp_path / 'records.store.sqlite'}" in line
    assert not out.exists()
    first = {b.role: b.counts for b in (explorers[0].cascade.mentor, explorers[0].cascade.intern)}
    assert first["intern"].computed > 0

    monkeypatch.setattr(TaskSource, "judge", real_judge)  # the fix
    assert run_subcommand(collect_argv(oracle_file, tiny_model_dir, out, limit=2)) == 0
    assert "model outputs kept in the run store" in capsys.readouterr().out
    again = {b.role: b.counts for b in (explorers[1].cascade.mentor, explorers[1].cascade.intern)}
    assert again["mentor"].computed == 0 and again["intern"].computed == 0  # nothing computed twice
    assert again["intern"].served == first["intern"].computed
    assert len(list(iter_records(out))) == 2
