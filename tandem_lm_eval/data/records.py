"""One JSON line per question: what the cascade saw and did. ``collect`` writes them, ``trace_path``
writes them, ``analyze``, ``fit`` and the recorded mentor read them.

A record holds the question (its hash and text), the task it came from, the mentor's whole output
(text and token ids: a recorded mentor serves it again), and per stage t: the insights I_t, the
intern prompt's token spans of Q and I_t, the features over each span, the classifier's score and,
where the intern answered from that stage, its answer and (``collect``) the task's own verdict on it.

``kind`` says which: ``explore`` records (``collect``) have an answer and a label at every stage;
``trace`` records (an lm_eval run with ``trace_path``) have the chosen stage's answer and the cost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tandem_lm_eval.common.disk import append_whole
from tandem_lm_eval.common.errors import TandemError

FORMAT = "tandem-record/1"


class RecordError(TandemError, ValueError):
    """A record file that cannot be read as records."""


@dataclass
class MentorOutput:
    """The mentor's whole output for a question (all stages it generated), as a recorded mentor needs it."""

    text: str
    token_ids: list[int] | None = None  # None: re-tokenize ``text`` with the mentor's tokenizer
    finished: bool = False  # the mentor ended by itself (it would write nothing more)
    model: str = ""
    num_params: float | None = None
    # The mentor answered the question itself (mode mentor_only or budget_forcing): the text is an
    # answer, not insights, and a recorded mentor must not serve it as insights.
    is_answer: bool = False

    def answers_itself(self, record_kind: str, num_stages: int) -> bool:
        """Whether this output is the mentor's own answer; traces written before ``is_answer``
        existed show it by having no stage (no intern read the mentor)."""
        return self.is_answer or (record_kind == "trace" and num_stages == 0)


@dataclass
class MentorAnswer:
    """The mentor's own answer to the question (``collect --mentor-answers``: mode=mentor_only's), judged
    by the task: what ``fit --policy router`` learns from and ``mode=router`` replays."""

    text: str
    tokens: int  # generated (L_L of a mentor-only row)
    finish_reason: str | None = None
    label: int | None = None  # 1: the task's metric says it is correct
    metric_value: float | None = None
    regenerated_tokens: int = 0
    prompt_tokens: int = 0  # its prefill (every call)
    cached_tokens: int = 0  # of it, served from a prefix cache
    seconds: float | None = None  # its share of the batched call(s)


@dataclass
class StageEntry:
    stage: int
    mentor_tokens: int
    insights: str = ""
    score: float | None = None
    usable: bool = True
    prompt_tokens: int = 0
    spans: dict[str, list[list[int]]] | None = None
    features: dict[str, list[float]] = field(default_factory=dict)  # by feature span
    # this stage's wall seconds by phase (cost/ledger.py PhaseTimes: mentor_generate, intern_score,
    # classify, intern_generate), each a share of one batched call; None in records written before
    seconds: dict[str, float] | None = None
    # the intern's hidden vectors of this stage (trace records of hidden-state judges); collect keeps
    # them compactly in a side file instead (data/hidden_file.py)
    hidden: dict[str, list[float]] | None = None
    # the mentor call that wrote this stage: prefill, prefix-cache hits, tokens generated again (None in
    # records written before they were kept)
    mentor_prompt_tokens: int | None = None
    mentor_cached_tokens: int | None = None
    mentor_regenerated_tokens: int | None = None
    answer: str | None = None
    intern_tokens: int | None = None
    finish_reason: str | None = None
    label: int | None = None  # 1: the task's metric says the answer is correct
    metric: str | None = None
    metric_value: float | None = None


@dataclass
class QuestionRecord:
    question_hash: str
    question: str
    stages: list[StageEntry]
    kind: str = "explore"
    task: str | None = None
    group: str | None = None
    group_by: str = "task"  # how ``group`` was found (classifier.group_of)
    doc_id: int | None = None
    doc_hash: str | None = None
    split: str | None = None
    # the split the question really comes from when the task's own name differs (data/benchmarks.py:
    # the offline MATH train pool is MATH test problems outside MATH-500); None when unknown
    source_split: str | None = None
    budgets: list[int] = field(default_factory=list)
    mentor: MentorOutput | None = None
    intern_model: str = ""
    intern_num_params: float | None = None
    entropy_method: str = ""
    mode: str | None = None
    chosen_stage: int | None = None
    stopped_early: bool | None = None
    cost: dict | None = None
    # the mentor's own answer (collect --mentor-answers); None when not recorded
    mentor_answer: MentorAnswer | None = None
    # The question's content key (common/question_content.py: the document's question text, normalised
    # and hashed), which the training-question guard matches whatever the template; None in records
    # written before it
    question_key: str | None = None
    format: str = FORMAT

    @property
    def labelled(self) -> bool:
        return all(s.label is not None for s in self.stages if s.usable)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuestionRecord:
        if data.get("format") != FORMAT:
            raise RecordError(f"not a {FORMAT} record (format={data.get('format')!r})")
        data = dict(data)
        stages = [StageEntry(**s) for s in data.pop("stages")]
        mentor = data.pop("mentor", None)
        answer = data.pop("mentor_answer", None)
        return cls(
            stages=stages,
            mentor=MentorOutput(**mentor) if mentor else None,
            mentor_answer=MentorAnswer(**answer) if answer else None,
            **data,
        )


def doc_hash(doc: dict | None) -> str | None:
    """lm-eval's ``doc_hash`` of a document (as in ``--log_samples`` output), so records join with it."""
    if doc is None:
        return None
    from lm_eval.utils import handle_non_serializable, hash_string

    return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))


def stage_entry(record, **extra: Any) -> StageEntry:
    """A ``StageEntry`` from a cascade ``StageRecord`` (its ``to_json``) plus answer/label fields."""
    return StageEntry(**record.to_json(), **extra)


def write_records(path: str | Path, records: Iterable[QuestionRecord]) -> int:
    """Append records to a JSONL file (one line each, flushed together); returns how many.

    A run killed mid-write leaves a torn last line; it is cut off before appending (its question has
    no record, so a resumed run computes it again), never glued to the next record.
    On a full disk (common/disk.py) the file is cut back to its last whole record and ``DiskFullError``
    names it.
    """
    lines = [r.to_json() + "\n" for r in records]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as fh:
        size = fh.seek(0, 2)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                fh.seek(0)
                data = fh.read()
                fh.truncate(data.rfind(b"\n") + 1)
    if lines:
        append_whole(path, "".join(lines).encode("utf-8"))
    return len(lines)


def iter_records(path: str | Path) -> Iterator[QuestionRecord]:
    """Records of a JSONL file; a torn last line (a run killed mid-write) is skipped with a warning,
    any other bad line is an error naming the file and line."""
    import logging

    path = Path(path)
    if not path.is_file():
        raise RecordError(f"record file {path} does not exist")
    raw = path.read_bytes()
    if path.suffix == ".gz":  # records shipped compressed (classifiers/<name>/training_records.jsonl.gz)
        import gzip

        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise RecordError(f"{path}: not a gzip file ({exc})") from None
    # split on "\n" only: str.splitlines() also splits on U+2028 and friends, which JSON strings
    # written with ensure_ascii=False may contain (GSM8K has one)
    lines = raw.decode("utf-8", errors="strict").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            yield QuestionRecord.from_dict(data)
        except (json.JSONDecodeError, TypeError, KeyError, RecordError) as exc:
            if number == len(lines) and isinstance(exc, json.JSONDecodeError):
                logging.getLogger(__name__).warning("%s:%d: torn last line skipped", path, number)
                continue
            raise RecordError(f"{path}:{number}: not a record ({type(exc).__name__}: {exc})") from exc


def load_records(paths: Sequence[str | Path]) -> list[QuestionRecord]:
    try:
        return [r for p in paths for r in iter_records(p)]
    except UnicodeDecodeError as exc:
        raise RecordError(f"a record file is not UTF-8: {exc}") from exc
