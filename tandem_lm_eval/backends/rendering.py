"""Shared by the local backends (transformers, vLLM): find the weights, render a Prompt to token ids."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from tandem_lm_eval.backends.base import BackendError, Prompt
from tandem_lm_eval.common.thinking import THINK_CLOSE, THINK_OPEN


def looks_like_local_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().exists()


def resolve_model_path(model: str) -> tuple[str, str | None]:
    """``(folder or hub id, gguf file name or None)`` for a model spec.

    ``demo`` is the embedded SmolLM2 demo (converted once into the cache). A ``.gguf`` file is loaded
    through transformers' GGUF reader. A local path that does not exist is an error here, not a
    confusing hub lookup later.
    """
    if not model or not model.strip():
        raise BackendError("empty model name")
    if model == "demo":
        from tandem_lm_eval.data.demo_model import demo_model_dir

        return str(demo_model_dir()), None
    if looks_like_local_path(model):
        path = Path(model).expanduser()
        if not path.exists():
            raise BackendError(f"model path {model!r} does not exist")
        if path.is_file():
            if path.suffix != ".gguf":
                raise BackendError(f"model path {model!r} is a file; give a model folder or a .gguf file")
            return str(path.parent), path.name
        if not (path / "config.json").is_file() and not any(path.glob("*.gguf")):
            raise BackendError(f"model folder {model!r} has no config.json")
        return str(path), None
    return model, None


def render_prompt_ids(tokenizer, prompt: Prompt, chat_template: str | None = None) -> list[int]:
    """Token ids of a prompt as the model sees it, through its chat template when it has one.

    ``chat_template`` replaces the tokenizer's own template (a backend's ``chat_template`` option). It
    is passed per call rather than set on the tokenizer: vLLM's tokenizer renders on pooled copies,
    so an attribute set on it would not be seen.
    """
    if prompt.raw_text is not None:
        ids = tokenizer(prompt.raw_text, add_special_tokens=True).input_ids
    elif chat_template or getattr(tokenizer, "chat_template", None):
        kwargs = {"chat_template": chat_template} if chat_template else {}
        if prompt.thinking is not None:
            kwargs["enable_thinking"] = prompt.thinking  # ignored by templates without the switch
        ids = tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in prompt.messages],
            add_generation_prompt=True,
            tokenize=True,
            **kwargs,
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
    else:
        # Base model without a chat template: plain text, one block per message, then an answer cue.
        text = "\n\n".join(m.content for m in prompt.messages) + "\n\n"
        ids = tokenizer(text, add_special_tokens=True).input_ids
    ids = list(ids)
    if not ids:
        raise BackendError("empty prompt")
    return ids


# Stands in for a segment in the second rendering; a control character no segment starts or ends with.
_SEGMENT_SENTINEL = "\x00"


def segment_spans(
    render: Callable[[Prompt], Sequence[int]], prompt: Prompt, ids: Sequence[int]
) -> dict[str, tuple[tuple[int, int], ...]]:
    """Token ranges ``[a, b)`` of each of ``prompt.segments`` inside ``ids`` (= ``render(prompt)``).

    The prompt is rendered twice more: without the segment's characters, and with them replaced by
    one sentinel character. In each, the tokens shared with ``ids`` at the front and at the back are
    template and surrounding text; the segment is what lies between, in both. Two edits, because a
    token at a boundary can re-merge under one of them (removing Q joins the newline before it with
    the one after: ``"\n" + "\n\n"``), rarely under both. This needs nothing but the backend's own
    rendering (a local tokenizer and chat template, or a server's ``/tokenize``), so every backend
    locates segments the same way, whatever the template.
    """
    full = list(ids)
    spans: dict[str, list[tuple[int, int]]] = {}
    for seg in prompt.segments:
        ranges = spans.setdefault(seg.name, [])
        if seg.start == seg.end:
            continue
        a1, b1 = _differing_range(full, render(prompt.without(seg)))
        a2, b2 = _differing_range(full, render(prompt.without(seg, _SEGMENT_SENTINEL)))
        a, b = max(a1, a2), min(b1, b2)
        ranges.append((a, max(a, b)))
    return {name: tuple(ranges) for name, ranges in spans.items()}


def _differing_range(full: list[int], other: Sequence[int]) -> tuple[int, int]:
    """``[a, b)`` of ``full`` outside the longest common prefix and suffix with ``other``."""
    other = list(other)
    limit = min(len(full), len(other))
    head = 0
    while head < limit and full[head] == other[head]:
        head += 1
    tail = 0
    while tail < limit - head and full[-1 - tail] == other[-1 - tail]:
        tail += 1
    return head, len(full) - tail


def think_opening(tokenizer, prompt_ids: list[int]) -> str:
    """The reasoning-block opening the chat template left open at the end of a rendered prompt.

    DeepSeek-R1-Distill templates (and Qwen3.5-style ones with thinking on) end the prompt with
    ``<think>\n``: the model's output then starts inside the block and holds only
    ``reasoning </think> answer``. Backends put this opening back in front of the generated text, so
    every model's output has the same ``<think>reasoning</think>answer`` shape as a model that opens
    the block itself (Qwen3) and as a server's ``reasoning`` field; ``thinking.split_thinking`` then
    needs no per-template knowledge. Returns ``""`` when no block is open (a closed
    ``<think></think>`` from Qwen3's ``enable_thinking=False`` included).
    """
    tail = tokenizer.decode(list(prompt_ids[-16:]), skip_special_tokens=False)
    at = tail.rfind(THINK_OPEN)
    if at == -1 or tail.rfind(THINK_CLOSE) > at or tail[at + len(THINK_OPEN) :].strip():
        return ""
    return tail[at:]


def loglikelihood_ids(tokenizer, context: str, continuation: str, max_tokens: int) -> tuple[list[int], int]:
    """``(token ids, n_context)`` for an lm-eval loglikelihood pair, at most ``max_tokens`` long.

    The whole string is tokenized and split where the context ends (as lm-eval's HFLM does), so a
    token spanning the boundary is not split in two. An empty context conditions on BOS (or EOS); a
    too-long pair keeps the continuation and drops the oldest context.
    """
    whole = list(tokenizer(context + continuation, add_special_tokens=False).input_ids)
    ctx = list(tokenizer(context, add_special_tokens=False).input_ids)
    n_ctx = len(ctx)
    while n_ctx > 0 and whole[:n_ctx] != ctx[:n_ctx]:
        n_ctx -= 1
    if n_ctx == 0:
        first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        whole, n_ctx = [first, *whole], 1
    if len(whole) > max_tokens:
        dropped = len(whole) - max_tokens
        whole, n_ctx = whole[dropped:], max(1, n_ctx - dropped)
    return whole, n_ctx


def cut_at_stop(text: str, stops: Sequence[str], start: int = 0) -> tuple[str, bool]:
    """``text`` up to the first stop string found in its new part (from ``start``: a continuation's
    earlier text is context, never searched); and whether one was found. One character before
    ``start`` is searched too: decoding a longer sequence may merge the boundary character."""
    cut = len(text)
    for stop in stops:
        if stop:
            at = text.find(stop, max(0, start - 1))
            if at != -1:
                cut = min(cut, at)
    return text[:cut], cut < len(text)
