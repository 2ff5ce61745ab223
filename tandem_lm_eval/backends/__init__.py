"""Backend registry: one module per engine, imported only when a role asks for it.

``make_backend("hf", model, **options)`` builds a backend. Options come from ``model_args`` with
the role prefix removed (``mentor_dtype=bfloat16`` -> ``dtype="bfloat16"`` for the mentor); each
backend validates its own options and names the bad one.
"""

from __future__ import annotations

import importlib
from typing import Any

from tandem_lm_eval.backends.base import (
    Backend,
    BackendError,
    Generation,
    GenerationRequest,
    Message,
    Prompt,
    PromptScores,
)

# name -> "module:Class"; modules import their engine (torch, vllm, openai) lazily.
BACKENDS: dict[str, str] = {
    "hf": "tandem_lm_eval.backends.hf:HFBackend",
    "vllm": "tandem_lm_eval.backends.vllm:VLLMBackend",
    "openai": "tandem_lm_eval.backends.openai.backend:OpenAIBackend",
    # mentor only: outputs recorded earlier (data/records.py), cut at each budget
    "recorded": "tandem_lm_eval.backends.recorded_mentor:RecordedBackend",
}

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "Generation",
    "GenerationRequest",
    "Message",
    "Prompt",
    "PromptScores",
    "backend_class",
    "make_backend",
]


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; valid backends: {', '.join(sorted(BACKENDS))}")
    module_name, _, class_name = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        extra = {"vllm": "vllm", "openai": "api"}.get(name, "")
        hint = f" (pip install 'tandem-lm-eval[{extra}]')" if extra else ""
        raise BackendError(f"the {name} backend needs the missing package {exc.name!r}{hint}") from exc
    return getattr(module, class_name)


def make_backend(name: str, model: str, **options: Any) -> Backend:
    return backend_class(name)(model, **options)
