"""The user messages of the tandem tasks (documented in docs/tasks.md).

Zero-shot, one user turn, no system prompt: DeepSeek-R1 recommends putting every instruction in the
user message, and lm-eval's ``--system_instruction`` can add one when a model wants it. With
``--apply_chat_template`` the text below is the user message; without it, it is the raw prompt.
The math wording is the one DeepSeek-R1 and Qwen3 use for their MATH evaluations, so the answer
comes back in ``\\boxed{}`` where the scorer looks for it.
"""

from __future__ import annotations

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

CODE_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function, including the "
    "imports it needs, in a single ```python code block."
)


def math_prompt(problem: str) -> str:
    """MATH and GSM8K: the problem, then the boxed-answer instruction."""
    return f"{problem.strip()}\n\n{MATH_INSTRUCTION}"


def code_prompt(function_prompt: str) -> str:
    """HumanEval: the instruction, then the signature and docstring in a code block."""
    return f"{CODE_INSTRUCTION}\n\n```python\n{function_prompt.rstrip()}\n```"
