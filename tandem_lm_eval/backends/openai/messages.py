"""Request bodies and response fields of the OpenAI-compatible APIs: sampling fields, chat messages,
reasoning fields joined into one ``<think>...</think>`` text, finish reasons, usage and token ids."""

from __future__ import annotations

from typing import Any, Literal

from tandem_lm_eval.backends.base import (
    Generation,
    GenerationRequest,
    Prompt,
)
from tandem_lm_eval.common.thinking import THINK_CLOSE, THINK_OPEN


# --- reasoning fields -------------------------------------------------------------------------------
def join_reasoning(prefix_text: str, reasoning: str, content: str, *, closed: bool) -> str:
    """Append a chat response to earlier text, the reasoning wrapped as ``<think>...</think>``.

    Servers with a reasoning parser return the thinking in ``message.reasoning`` (older vLLM:
    ``reasoning_content``) and the answer in ``content``; downstream ``thinking.split_thinking``
    expects one text. A prefix that stopped inside ``<think>`` continues without a second opening tag.
    ``closed``: the thinking ended (an answer follows, or the model stopped by itself).
    """
    text = prefix_text
    in_think = text.rfind(THINK_OPEN) > text.rfind(THINK_CLOSE)
    if reasoning:
        if not in_think:
            text += THINK_OPEN
        text += reasoning
        if closed:
            text += THINK_CLOSE
    return text + content


# --- small helpers ----------------------------------------------------------------------------------
def unchanged_generation(req: GenerationRequest) -> Generation:
    """A zero-token request: nothing is sent and nothing billed."""
    prefix = req.prefix
    return Generation(
        text=prefix.text if prefix else "",
        token_ids=prefix.token_ids if prefix else (),
        new_tokens=0,
        finish_reason="length",
        prompt_tokens=0,
    )


def sampling_fields(req: GenerationRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"temperature": req.temperature}
    if req.temperature > 0 and req.top_p < 1:
        out["top_p"] = req.top_p
    if req.stop:
        out["stop"] = list(req.stop)
    if req.seed is not None:
        out["seed"] = req.seed
    return out


def chat_messages(prompt: Prompt) -> list[dict[str, str]]:
    if prompt.raw_text is not None:  # an already-rendered context: the user's turn on a chat API
        return [{"role": "user", "content": prompt.raw_text}]
    return [{"role": m.role, "content": m.content} for m in prompt.messages]


def finish_kind(reason: Any) -> Literal["stop", "length"]:
    # "stop", "eos", "abort", "content_filter": the model did not run into the token budget.
    return "length" if reason == "length" else "stop"


def usage_of(data: dict) -> dict:
    usage = data.get("usage")
    return usage if isinstance(usage, dict) else {}


def as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def ids_or_none(value: Any) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise TypeError("token ids are not a list of integers")
    return list(value)
