"""Answer extraction and scoring for the tandem tasks (MATH, GSM8K, HumanEval).

Modules: ``boxed`` (final ``\\boxed{}``), ``math_answer`` (equivalence with a hard timeout),
``gsm8k_answer`` (numbers), ``code_answer`` and ``code_exec`` (HumanEval programs and their
sandboxed execution) and ``prompts`` (task wording); what the task YAMLs call is
``harness/task_functions.py``. Nothing heavy is imported here.

May import: common.
"""
