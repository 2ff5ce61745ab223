"""Reasoning-model output: split ``<think> ... </think>`` reasoning from the visible answer.

DeepSeek-R1-Distill templates open the ``<think>`` block inside the prompt, so the generated text
holds only ``reasoning </think> answer``; Qwen3 generates both tags. A text with an opening but no
closing tag was cut off while thinking: it has reasoning and no answer.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class SplitOutput:
    reasoning: str
    answer: str
    # False when the text stopped inside the reasoning (an answer-less, truncated response).
    completed: bool


def split_thinking(text: str, *, prompt_opened_think: bool = False) -> SplitOutput:
    """Split generated text at the LAST ``</think>``.

    ``prompt_opened_think``: the chat template already emitted ``<think>`` (R1-Distill), so text
    without ``</think>`` is unfinished reasoning rather than a plain answer.
    """
    close = text.rfind(THINK_CLOSE)
    if close != -1:
        reasoning = text[:close]
        open_pos = reasoning.find(THINK_OPEN)
        if open_pos != -1:
            reasoning = reasoning[open_pos + len(THINK_OPEN) :]
        return SplitOutput(reasoning.strip(), text[close + len(THINK_CLOSE) :].strip(), True)
    stripped = text.lstrip()
    if prompt_opened_think or stripped.startswith(THINK_OPEN):
        body = stripped[len(THINK_OPEN) :] if stripped.startswith(THINK_OPEN) else stripped
        return SplitOutput(body.strip(), "", False)
    return SplitOutput("", text.strip(), True)


def strip_think_tags(text: str) -> str:
    """Text with the think tags removed and the content kept (mentor insights passed to the intern)."""
    return text.replace(THINK_OPEN, "").replace(THINK_CLOSE, "").strip()
