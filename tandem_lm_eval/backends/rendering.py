"""Shared by the local backends (transformers, vLLM): find the weights, render a Prompt to token ids."""

from __future__ import annotations

from pathlib import Path

from .base import BackendError, Prompt


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
        from ..demo import demo_model_dir

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


def render_prompt_ids(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of a prompt as the model sees it, through its chat template when it has one."""
    if prompt.raw_text is not None:
        ids = tokenizer(prompt.raw_text, add_special_tokens=True).input_ids
    elif getattr(tokenizer, "chat_template", None):
        kwargs = {}
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
