"""The training-question guard: the one function that says which questions a classifier was fit on.

A classifier evaluated on its own training questions reports its fit, not how it generalises, so
``lm_eval``, ``compare`` and ``analyze`` refuse such questions unless told otherwise. A question is
recognised by its content (common/question_content.py: the document's question text, normalised), so
another template, few-shot examples or a chat template do not hide it, and also by the hash of its
rendered dialogue (``question_hash``), which is all that classifiers fit before content keys recorded.

``training_questions.txt`` (card.HASHES_FILE) lists one entry a line: ``c:<content key>`` for a question's
content, a bare ``<question hash>`` for its rendered dialogue. Files written before content keys hold
bare hashes only and are read as they are; ``fit`` writes both kinds for every question.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from tandem_lm_eval.common.question_content import question_key
from tandem_lm_eval.judgment.errors import ClassifierError

CONTENT_PREFIX = "c:"


@dataclass(frozen=True)
class QuestionIdentity:
    """How the guard recognises one question: its rendered dialogue's hash and its content's key."""

    dialogue: str  # question_hash of the dialogue as rendered (cascade/prompts.py: Question.key)
    content: str | None = None  # content_key of the question text; None when unknown (older records)

    @classmethod
    def of(cls, dialogue_hash: str, doc=None, fallback_text: str | None = None) -> QuestionIdentity:
        """From a question's dialogue hash and its task document (``fallback_text``: the question text
        to use when the document has no question field, e.g. the last user turn)."""
        return cls(dialogue_hash, question_key(doc, fallback_text))

    @classmethod
    def of_record(cls, record) -> QuestionIdentity:
        """From a record (data/records.py: QuestionRecord): its question hash and content key."""
        return cls(record.question_hash, getattr(record, "question_key", None))

    def entries(self) -> tuple[str, ...]:
        """Its lines in ``training_questions.txt``."""
        return (
            (self.dialogue,) if self.content is None else (f"{CONTENT_PREFIX}{self.content}", self.dialogue)
        )


def overlap(questions: Sequence[QuestionIdentity], training: Collection[str]) -> list[int]:
    """The positions of ``questions`` that are among ``training`` (a card's ``training_questions``):
    by content where both sides know it, else by the rendered dialogue."""
    if not training:
        return []
    return [
        i
        for i, q in enumerate(questions)
        if q.dialogue in training or (q.content is not None and f"{CONTENT_PREFIX}{q.content}" in training)
    ]


def training_entries(questions: Sequence[QuestionIdentity]) -> frozenset[str]:
    """What a card records of the questions it was fit on (``fit``)."""
    return frozenset(e for q in questions for e in q.entries())


def check_training_questions_file(folder: Path, meta: dict, present: bool) -> None:
    """Refuse a classifier folder that was fit on questions but lacks ``training_questions.txt`` (copied
    without it): the guard would be off without a word. ``meta`` is its classifier.json."""
    if present:
        return
    questions = ((meta.get("training") or {}).get("report") or {}).get("questions") or {}
    fitted_on = sum(int(n) for n in questions.values() if isinstance(n, (int, float)))
    if fitted_on > 0:
        raise ClassifierError(
            f"classifier {folder}: no training_questions.txt, though it was fit on {fitted_on} questions, so "
            "the guard against evaluating it on them cannot work: copy the file from the folder `fit` "
            "wrote (an empty file there switches the guard off knowingly)"
        )
