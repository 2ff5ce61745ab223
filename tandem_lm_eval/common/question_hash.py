"""A question's identity as the models read it. Recorded mentors and run-store labels find a request's
question by it, and classifiers record the hashes of their training questions."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Protocol


class Turn(Protocol):
    """One turn of a dialogue (``backends/base.py: Message`` is one)."""

    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str: ...


class Prompt(Protocol):
    """What a model reads (``backends/base.py: Prompt`` is one): its turns, or its raw text."""

    @property
    def messages(self) -> Sequence[Turn]: ...
    @property
    def raw_text(self) -> str | None: ...


def question_hash(dialogue: Sequence[Turn] | str) -> str:
    """A short stable id of a question as the models read it: its non-system turns, whitespace and
    case normalized. Recorded mentors are keyed by it, and classifiers record the hashes of their
    training questions so an evaluation containing them is refused."""
    text = dialogue if isinstance(dialogue, str) else "\n".join(f"{m.role}: {m.content}" for m in dialogue)
    if isinstance(dialogue, str):
        text = f"user: {text}"
    normalized = re.sub(r"\s+", " ", text).strip().lower()
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()[:16]


def prompt_question_hash(prompt: Prompt) -> str:
    """``question_hash`` of the question inside a rendered-to-be prompt (its non-system turns, or its raw
    text): how a recorded mentor finds a request's recording and how the run store labels mentor entries,
    so a store can serve as a recorded mentor."""
    if prompt.raw_text is not None:
        return question_hash(prompt.raw_text)
    return question_hash(tuple(m for m in prompt.messages if m.role != "system"))
