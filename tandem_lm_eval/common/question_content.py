"""A question's content, apart from how a task renders it.

The training-question guard (judgment/training_guard.py) must recognise a classifier's training
question whatever the task makes of it: the stock ``hendrycks_math`` and the package's ``tandem_math``
wrap one MATH problem in different templates, few-shot examples put other questions before it, and a
chat template changes every character around it. So a question is also identified by its content: the
question text of the task's document (its ``problem``, ``question``, ... field), normalised (Unicode
NFKC, case, whitespace), hashed. Without a document, the last user turn stands in for it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

# The document fields that hold the question itself, in the order they are tried: MATH (problem),
# GSM8K (question), HumanEval (prompt), and the usual names of other generation tasks.
QUESTION_FIELDS = ("problem", "question", "prompt", "input", "query", "text")


def normalized_question(text: str) -> str:
    """The question as compared: NFKC, lower case, runs of whitespace as one space, trimmed."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().lower()


def content_key(text: str) -> str:
    """A short stable id of a question's content (``normalized_question``, sha256, 16 hex digits)."""
    return hashlib.sha256(normalized_question(text).encode("utf-8")).hexdigest()[:16]


def doc_question_text(doc: Any) -> str | None:
    """The question text of a task's document: its first non-empty ``QUESTION_FIELDS`` string, else None."""
    if not isinstance(doc, Mapping):
        return None
    for name in QUESTION_FIELDS:
        value = doc.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def question_key(doc: Any, fallback_text: str | None = None) -> str | None:
    """The content key of a request's question: of its document's question text, else of
    ``fallback_text`` (the last user turn), else None."""
    text = doc_question_text(doc) or fallback_text
    return content_key(text) if text and text.strip() else None
