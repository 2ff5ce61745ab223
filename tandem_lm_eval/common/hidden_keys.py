"""The names of stored hidden vectors, shared by the backends that compute them and the judges that read
them: a layer index, a position in the intern's prompt and, for an adapted intern, the LoRA adapter."""

from __future__ import annotations

from tandem_lm_eval.common.options import OptionError

# prompt_end: the last token of the rendered intern prompt (where the answer would start);
# question_insights_end: the last token of Q ⊕ I_t (Eq. 6's input, without the template after it).
HIDDEN_POSITIONS: tuple[str, ...] = ("prompt_end", "question_insights_end")


def hidden_key(layer: int, position: str, adapter_id: str | None = None) -> str:
    """``layer<L>@<position>`` (+ ``+lora:<first 16 hex of the adapter's sha256>``)."""
    if position not in HIDDEN_POSITIONS:
        raise OptionError(f"unknown hidden position {position!r}; valid: {', '.join(HIDDEN_POSITIONS)}")
    key = f"layer{int(layer)}@{position}"
    return f"{key}+lora:{adapter_id[:16]}" if adapter_id else key
