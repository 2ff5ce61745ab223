"""A recorded mentor: insights served from a file of earlier mentor outputs, at no mentor cost.

``mentor_backend=recorded,mentor=runs/r1-32b.jsonl`` reads records (``data/records.py``: the output of
``collect``, of an lm_eval run with ``trace_path``, or of ``tandem-lm-eval oracle-mentor``), or a run
store (``store=`` of an earlier run: a recorded mentor is a store someone else filled), and
answers each mentor request with the recorded output of the same question (``prompts.question_hash``
of its non-system turns), cut at the request's token budget with the mentor's tokenizer
(``mentor_tokenizer=``: a model folder, hub id or ``demo``). A 32B mentor's insights captured once
on a GPU machine can so be reused with other interns, classifiers and thresholds anywhere.

Costs: the cut is counted in the mentor's tokens like any generation, and Eq. 12 uses
``mentor_num_params`` (required unless every record carries the recorded mentor's size). The system
prompt (Figure 6) is not checked: the records are whatever the recorded mentor was asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from tandem_lm_eval.backends.base import (
    Backend,
    BackendError,
    Generation,
    GenerationRequest,
    HiddenRequest,
    Prompt,
    PromptScores,
)
from tandem_lm_eval.common.question_hash import prompt_question_hash
from tandem_lm_eval.data.records import MentorOutput, QuestionRecord, RecordError, load_records

logger = logging.getLogger(__name__)


class RecordedBackend(Backend):
    name = "recorded"

    def __init__(self, model: str, *, tokenizer: str | None = None) -> None:
        path = Path(model).expanduser()
        self._path = path
        self._outputs = recorded_outputs(model, self.read_recordings)
        if tokenizer is None:
            raise BackendError(
                "a recorded mentor needs the mentor's tokenizer to cut its outputs at each budget: "
                "give mentor_tokenizer= (a model folder, hub id, or demo)"
            )
        self._tokenizer = _load_tokenizer(tokenizer)
        self._ids: dict[str, tuple[int, ...]] = {}
        sizes = {o.num_params for o in self._outputs.values()}
        self._num_params = sizes.pop() if len(sizes) == 1 and None not in sizes else None
        models = {o.model for o in self._outputs.values() if o.model}
        self._model_name = f"recorded:{models.pop() if len(models) == 1 else path.name}"
        logger.info("recorded mentor: %d questions from %s", len(self._outputs), path)

    def read_recordings(self, path: Path) -> list[QuestionRecord]:
        """The records the outputs come from: a records file. (A run store given as the file is read by
        the store room's subclass, ``store/export.py: StoreRecordedBackend``.)"""
        return load_records([path])

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def num_parameters(self) -> int:
        if self._num_params is None:
            raise BackendError(
                f"the records in {self._path} do not say how large the recorded mentor was: give "
                "mentor_num_params= (|θL| for Eq. 12, e.g. 32e9)"
            )
        return int(self._num_params)

    @property
    def max_context(self) -> int:
        return 1 << 30

    def __len__(self) -> int:
        return len(self._outputs)

    def count_tokens(self, prompt: Prompt) -> int:
        text = (
            prompt.raw_text if prompt.raw_text is not None else "\n".join(m.content for m in prompt.messages)
        )
        return len(self._tokenizer(text, add_special_tokens=False).input_ids)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for req in requests:
            if req.forced_text:
                raise BackendError(
                    "a recorded mentor cannot be forced: it replays what was recorded, and nothing was "
                    "recorded after forced text (budget forcing needs a live mentor)"
                )
            key = prompt_question_hash(req.prompt)
            output = self._outputs.get(key)
            if output is None:
                raise BackendError(
                    f"the recorded mentor ({self._path}, {len(self._outputs)} questions) has no output for "
                    f"question {key} ({_preview(req.prompt)}); record it first, or evaluate only recorded "
                    "questions"
                )
            ids = self._token_ids(key, output)
            before = len(req.prefix.token_ids) if req.prefix else 0
            end = min(before + req.max_new_tokens, len(ids))
            if end < before + req.max_new_tokens and not output.finished:
                raise BackendError(
                    f"the recorded mentor output of question {key} stops after {len(ids)} tokens without "
                    f"finishing; a budget of {before + req.max_new_tokens} needs more: record with larger "
                    "budgets"
                )
            cut = ids[:end]
            out.append(
                Generation(
                    text=self._tokenizer.decode(list(cut), skip_special_tokens=True),
                    token_ids=cut,
                    new_tokens=end - before,
                    finish_reason="stop" if end == len(ids) and output.finished else "length",
                    cached_prompt_tokens=None,
                    prompt_tokens=0,
                )
            )
        return out

    def score(self, prompts: Sequence[Prompt], hidden: HiddenRequest | None = None) -> list[PromptScores]:
        raise BackendError("a recorded mentor cannot score prompts: it can only be the mentor")

    def _token_ids(self, key: str, output: MentorOutput) -> tuple[int, ...]:
        ids = self._ids.get(key)
        if ids is None:
            if output.token_ids is not None:
                ids = tuple(int(i) for i in output.token_ids)
            else:
                ids = tuple(self._tokenizer(output.text, add_special_tokens=False).input_ids)
            self._ids[key] = ids
        return ids


def recorded_outputs(
    model: str, read: Callable[[Path], list[QuestionRecord]] | None = None
) -> dict[str, MentorOutput]:
    """The mentor outputs a recorded mentor's file holds, by question hash (the longest recording of
    each): read before any model loads (harness/plan.py), and by the backend itself. ``read``: how the
    file becomes records (a records file by default; a run store's reader is the store room's,
    ``store/export.py: store_records``)."""
    path = Path(model).expanduser()
    if not path.is_file():
        raise BackendError(f"recorded mentor file {model!r} does not exist")
    try:
        records = read(path) if read is not None else load_records([path])
    except (RecordError, ValueError) as exc:  # ValueError: StoreError
        raise BackendError(f"recorded mentor: {exc}") from None
    outputs: dict[str, MentorOutput] = {}
    answers = 0
    for rec in records:
        if rec.mentor is None:
            continue
        if rec.mentor.answers_itself(rec.kind, len(rec.stages)):
            answers += 1  # a trace of mentor_only / budget_forcing: the mentor's answer, not insights
            continue
        known = outputs.get(rec.question_hash)
        if known is None or _length(rec.mentor) > _length(known):  # keep the longest recording
            outputs[rec.question_hash] = rec.mentor
    if not outputs:
        why = f" ({answers} are traces of a mode where the mentor answered itself)" if answers else ""
        raise BackendError(f"recorded mentor file {model!r} holds no mentor outputs{why}")
    return outputs


def _length(output: MentorOutput) -> int:
    """How much a recording holds, comparable across recordings with and without token ids."""
    return len(output.text)


def _preview(prompt: Prompt) -> str:
    text = prompt.raw_text or next((m.content for m in reversed(prompt.messages) if m.role == "user"), "")
    text = " ".join(text.split())
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def _load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    from tandem_lm_eval.backends.rendering import resolve_model_path

    path, gguf_file = resolve_model_path(spec)
    try:
        return AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"could not load the mentor tokenizer {spec!r}: {str(exc).splitlines()[0]}"
        ) from exc
