"""HumanEval answers: the program a response gives, and the test program built from it.

Two response shapes are accepted, as in the harness' own humaneval / humaneval_instruct tasks:

- a chat answer with a fenced code block: the last block that defines the entry point (else the
  last block) is the solution. It is appended to the problem's prompt, so the prompt's imports and
  helper functions stay available and the model's full definition replaces the stub;
- a plain completion (a base model continuing the prompt): prompt + completion, cut at the first
  line that starts a new top-level statement (``\\ndef``, ``\\nclass``, ``\\nif``, ``\\nprint``,
  ``\\n#``), which is what the stock task's stop sequences do during generation.

Reasoning is dropped first: only the text after ``</think>`` counts, and a response cut off while
thinking has no program.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tandem_lm_eval.common.thinking import split_thinking

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
# The stock humaneval task's stop sequences, applied after the fact to a plain completion.
COMPLETION_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


@dataclass(frozen=True)
class CodeAnswer:
    """The solution program (prompt included); None when the response has none."""

    program: str | None
    # "code_block", "completion", "full_definition" or "unfinished_thinking".
    source: str


def _defines(code: str, entry_point: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE) is not None


def extract_program(
    response: str, prompt: str, entry_point: str, *, prompt_opened_think: bool = False
) -> CodeAnswer:
    """The complete solution program for a HumanEval problem."""
    split = split_thinking(response, prompt_opened_think=prompt_opened_think)
    if not split.completed:
        return CodeAnswer(None, "unfinished_thinking")
    # split_thinking strips the text; a plain completion must keep the indentation of its first line.
    text = split.answer if "</think>" in response else response
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    if blocks:
        defining = [b for b in blocks if _defines(b, entry_point)]
        block = (defining or blocks)[-1]
        if _defines(block, entry_point):
            return CodeAnswer(prompt + "\n" + block, "code_block")
        # A block with the body only continues the prompt's stub.
        return CodeAnswer(prompt + block, "code_block")
    if _defines(text, entry_point):
        # An unfenced full definition: keep it whole (a cut at "\ndef" would drop the function).
        return CodeAnswer(prompt + "\n" + text, "full_definition")
    completion = text
    for stop in COMPLETION_STOPS:
        completion = completion.split(stop)[0]
    return CodeAnswer(prompt + completion, "completion")


def build_test_program(program: str, test: str, entry_point: str) -> str:
    """Solution + the problem's ``check`` function + the call that runs it."""
    return f"{program}\n\n{test}\n\ncheck({entry_point})\n"
