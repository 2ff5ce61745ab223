"""Answer extraction and scoring for the tandem tasks (MATH, GSM8K, HumanEval).

Modules: ``boxed`` (final ``\\boxed{}``), ``math_answer`` (equivalence with a hard timeout),
``gsm8k_answer`` (numbers), ``code_answer`` and ``code_exec`` (HumanEval programs and their
sandboxed execution), ``prompts`` (task wording) and ``harness`` (what the task YAMLs call).
Nothing heavy is imported here.
"""
