"""The functions the tandem task YAMLs call (through the thin ``tasks/utils.py``).

Dataset loaders follow lm-eval's ``custom_dataset`` convention: they are called with the task's
metadata (``--metadata`` JSON and the model arguments) plus its ``dataset_kwargs``, and return a
``DatasetDict``. The keys used here:

- ``data_split`` / ``math_subject`` (from the YAMLs) choose the data;
- ``data_dir`` overrides ``$TANDEM_DATA_DIR``; ``math_train_source`` picks the MATH train pool;
- ``prompt_opened_think``: the model's chat template opens ``<think>`` in the prompt (DeepSeek-R1
  distills), so a response without ``</think>`` was cut off while thinking and has no answer.
  It is copied into every document, where ``process_results`` can see it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tandem_lm_eval.data.benchmarks import MathTrainSource, load_gsm8k, load_humaneval, load_math
from tandem_lm_eval.scoring.code_answer import build_test_program, extract_program
from tandem_lm_eval.scoring.code_exec import ExecResult, SandboxLimits, check_sandbox, run_program
from tandem_lm_eval.scoring.gsm8k_answer import extract_gsm8k_answer, score_gsm8k_response
from tandem_lm_eval.scoring.math_answer import extract_math_answer, score_math_response
from tandem_lm_eval.scoring.prompts import code_prompt, math_prompt


def _flag(value: Any) -> bool:
    # From --metadata JSON it is a bool; from --model_args text it is "True"/"true"/"1".
    return value is True or str(value).strip().lower() in ("1", "true", "yes")


def _dataset_dict(split: str, rows: list[dict], kwargs: dict[str, Any]):
    import datasets

    opened = _flag(kwargs.get("prompt_opened_think", False))
    for row in rows:
        row["prompt_opened_think"] = opened
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows)})


def gsm8k_dataset(**kwargs: Any):
    split = kwargs.get("data_split", "test")
    return _dataset_dict(split, load_gsm8k(split, data_dir=kwargs.get("data_dir")), kwargs)


def math_dataset(**kwargs: Any):
    split = kwargs.get("data_split", "test")
    source: MathTrainSource = kwargs.get("math_train_source", "auto")
    rows = load_math(split, kwargs.get("math_subject"), data_dir=kwargs.get("data_dir"), train_source=source)
    return _dataset_dict(split, rows, kwargs)


def humaneval_dataset(**kwargs: Any):
    # The sandbox's options (TANDEM_SANDBOX_REQUIRE, ...) are checked here, before any generation:
    # a required protection this machine lacks stops the run now, in one line.
    check_sandbox()
    return _dataset_dict("test", load_humaneval(data_dir=kwargs.get("data_dir")), kwargs)


# ---------------------------------------------------------------- prompts


def math_doc_to_text(doc: dict) -> str:
    return math_prompt(doc["problem"])


def gsm8k_doc_to_text(doc: dict) -> str:
    return math_prompt(doc["question"])


def humaneval_doc_to_text(doc: dict) -> str:
    return code_prompt(doc["prompt"])


# ---------------------------------------------------------------- scoring


def math_process_results(doc: dict, results: list[str]) -> dict[str, int]:
    score = score_math_response(
        results[0], doc["answer"], prompt_opened_think=bool(doc.get("prompt_opened_think"))
    )
    return {"exact_match": int(score.correct)}


def gsm8k_process_results(doc: dict, results: list[str]) -> dict[str, int]:
    correct = score_gsm8k_response(
        results[0], doc["target"], prompt_opened_think=bool(doc.get("prompt_opened_think"))
    )
    return {"exact_match": int(correct)}


# What ``mode=agreement`` compares (harness/answer_keys.py): a task whose filter hands process_results
# the raw text, and which extracts the answer there, says how through ``process_results.answer_key``
# (doc, text) -> the extracted answer, None when there is none (no answer never agrees).
def gsm8k_answer_key(doc: dict, text: str) -> str | None:
    answer = extract_gsm8k_answer(text, prompt_opened_think=bool(doc.get("prompt_opened_think")))
    return None if answer.value is None else str(answer.value)


def math_answer_key(doc: dict, text: str) -> str | None:
    answer = extract_math_answer(text, prompt_opened_think=bool(doc.get("prompt_opened_think")))
    return answer.text


gsm8k_process_results.answer_key = gsm8k_answer_key
math_process_results.answer_key = math_answer_key


class ExecutedProgram(str):
    """A solution program (the logged filtered response) carrying its sandbox result."""

    result: ExecResult | None


def _execute(doc: dict, response: str, limits: SandboxLimits) -> ExecutedProgram:
    answer = extract_program(
        response, doc["prompt"], doc["entry_point"], prompt_opened_think=bool(doc.get("prompt_opened_think"))
    )
    program = ExecutedProgram(answer.program or "")
    program.result = None
    if answer.program is not None:
        program.result = run_program(
            build_test_program(answer.program, doc["test"], doc["entry_point"]), limits
        )
    return program


def humaneval_execute(resps: list[list[str]], docs: list[dict]) -> list[list[ExecutedProgram]]:
    """lm-eval ``custom`` filter: run every response's program, all CPUs in parallel.

    Executing here, where the harness hands over all responses at once, rather than one by one in
    ``process_results``, keeps a run with many slow or hanging programs short.
    """
    limits = SandboxLimits()
    jobs = [(doc, response) for doc, responses in zip(docs, resps) for response in responses]
    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        done = iter(pool.map(lambda job: _execute(job[0], job[1], limits), jobs))
    return [[next(done) for _ in responses] for responses in resps]


def humaneval_process_results(doc: dict, results: list[str]) -> dict[str, int]:
    program = results[0]
    result = getattr(program, "result", None)
    if result is None and not isinstance(program, ExecutedProgram):
        # Not from our filter (e.g. a custom filter list): execute now.
        result = _execute(doc, str(program), SandboxLimits()).result
    return {"pass@1": int(result is not None and result.passed)}
