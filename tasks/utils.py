"""Glue for the tandem task YAMLs (``!function utils.x``); the logic lives in
``tandem_lm_eval/harness/task_functions.py`` and ``tandem_lm_eval/scoring/``."""

from tandem_lm_eval.harness.task_functions import (  # noqa: F401
    gsm8k_dataset,
    gsm8k_doc_to_text,
    gsm8k_process_results,
    humaneval_dataset,
    humaneval_doc_to_text,
    humaneval_execute,
    humaneval_process_results,
    math_dataset,
    math_doc_to_text,
    math_process_results,
)
