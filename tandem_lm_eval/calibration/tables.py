"""Records (data/records.py) as arrays: the rows a classifier fits on, and the question x stage table the
cascade is replayed on (replay.StageTable). Shared by ``fit`` and ``analyze`` so both read records
the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tandem_lm_eval.calibration.errors import TableError
from tandem_lm_eval.calibration.replay import MentorAnswers, StageSeconds, StageTable, StageTokens
from tandem_lm_eval.cost import ledger
from tandem_lm_eval.data.hidden_file import HiddenFile, hidden_path_for, stale_vectors
from tandem_lm_eval.data.records import QuestionRecord, iter_records
from tandem_lm_eval.judgment.features import NUM_FEATURES, check_span
from tandem_lm_eval.judgment.judges import JudgeError, JudgeSpec, judge_input, needs_statistics

# Hidden vectors of records by (question hash, stage), as read from their side files.
HiddenVectors = dict[tuple[str, int], np.ndarray]


@dataclass
class RowTable:
    """One row per usable (question, stage): what a classifier fits on and is scored on."""

    question: np.ndarray  # index into the record list
    stage: np.ndarray
    group: np.ndarray  # object array of str | None
    X: np.ndarray  # (n, width of the judge's input): 17 statistics and/or the hidden units
    y: np.ndarray  # 0/1

    def subset(self, mask: np.ndarray) -> RowTable:
        return RowTable(self.question[mask], self.stage[mask], self.group[mask], self.X[mask], self.y[mask])

    def __len__(self) -> int:
        return len(self.y)


def check_records(records: Sequence[QuestionRecord], need_labels: bool = True) -> int:
    """The number of stages the records share; refuses mixed setups and unlabelled records."""
    if not records:
        raise TableError("no records")
    setups = {(tuple(r.budgets), r.intern_model, r.entropy_method) for r in records}
    if len(setups) > 1:
        raise TableError(
            "records come from different setups (budgets, intern, entropy method): "
            + "; ".join(f"{list(b)} {i} {e}" for b, i, e in sorted(setups))
        )
    counts = {len(r.stages) for r in records}
    if len(counts) > 1:
        raise TableError(f"records have different numbers of stages: {sorted(counts)}")
    if need_labels:
        unlabelled = [r for r in records if not r.labelled]
        if unlabelled:
            r = unlabelled[0]
            raise TableError(
                f"{len(unlabelled)} records have stages without a label (first: {r.task} doc {r.doc_id}, "
                f"kind {r.kind!r}); labels come from `tandem-lm-eval collect`"
            )
    return counts.pop()


def row_table(
    records: Sequence[QuestionRecord],
    span: str,
    judge: JudgeSpec | None = None,
    hidden: HiddenVectors | None = None,
) -> RowTable:
    """Rows of the judge's input (default: ``tandem-v2`` over ``span``); a hidden-state judge reads its
    vectors from ``hidden`` (``hidden_vectors``)."""
    check_span(span)
    check_records(records)
    judge = judge or JudgeSpec(span=span)
    reads_statistics = needs_statistics(judge.feature_set)
    if judge.hidden is not None and hidden is None:
        raise TableError(f"the judge reads hidden vectors ({judge.hidden.key}): none were given")
    question, stage, group, X, y = [], [], [], [], []
    for i, rec in enumerate(records):
        for s in rec.stages:
            if not s.usable:
                continue
            vector = s.features.get(span)
            if vector is None and reads_statistics:
                raise TableError(
                    f"record {rec.task} doc {rec.doc_id} stage {s.stage} has no features over span {span!r} "
                    f"(it has {sorted(s.features)})"
                )
            if reads_statistics and len(vector) != NUM_FEATURES:
                raise TableError(
                    f"record {rec.task} doc {rec.doc_id}: {len(vector)} features, not {NUM_FEATURES}"
                )
            if judge.hidden is not None:
                h = hidden.get((rec.question_hash, s.stage))
                if h is None:
                    raise TableError(
                        f"record {rec.task} doc {rec.doc_id} stage {s.stage} has no hidden vector "
                        f"{judge.hidden.key!r}: add it with `tandem-lm-eval complete-hidden`"
                    )
                try:
                    vector = judge_input(judge, vector, {judge.hidden.key: h})
                except JudgeError as exc:
                    raise TableError(f"record {rec.task} doc {rec.doc_id} stage {s.stage}: {exc}") from None
            question.append(i)
            stage.append(s.stage)
            group.append(rec.group)
            X.append(vector)
            y.append(int(s.label))
    return RowTable(
        np.array(question, dtype=int),
        np.array(stage, dtype=int),
        np.array(group, dtype=object),
        np.array(X, dtype=np.float64).reshape(-1, judge.width),
        np.array(y, dtype=int),
    )


def hidden_file_meta(records_paths: Sequence[str | Path]) -> dict:
    """The intern, layer count and hidden size the records' side file was written with."""
    with HiddenFile(hidden_path_for(records_paths[0])) as side:
        meta = side.meta()
    if "hidden_size" not in meta:
        raise TableError(f"{hidden_path_for(records_paths[0])} holds no hidden vectors yet")
    return meta


def hidden_vectors(records_paths: Sequence[str | Path], key: str) -> tuple[HiddenVectors, dict]:
    """The vectors named ``key`` from the side files of these record files, and the files' meta
    (intern, layers, hidden size), which must agree."""
    vectors: HiddenVectors = {}
    metas = []
    for path in records_paths:
        with HiddenFile(hidden_path_for(path)) as side:
            metas.append(side.meta())
            check_prompt_lengths(path, side, key)
            vectors.update(side.read_key(key))
    shapes = {(m.get("num_layers"), m.get("hidden_size")) for m in metas}
    if len(shapes) != 1:
        raise TableError(f"the hidden side files come from different interns: {sorted(map(str, shapes))}")
    if not vectors:
        raise TableError(
            f"no hidden vectors named {key!r} next to {', '.join(map(str, records_paths))}: add them with "
            "`tandem-lm-eval complete-hidden` (layers/adapter as the judge reads)"
        )
    return vectors, metas[0]


def check_prompt_lengths(records_path: str | Path, side: HiddenFile, key: str) -> None:
    """Refuse a side file whose vectors were made from prompts of another length than its records'
    (an earlier collect's vectors beside a new record file): they would be read as this x_t's."""
    expected = {
        (r.question_hash, s.stage): s.prompt_tokens or 0 for r in iter_records(records_path) for s in r.stages
    }
    stale = stale_vectors(expected, side.prompt_tokens(key))
    if stale:
        q, t = stale[0]
        raise TableError(
            f"{side.path}: {len(stale)} {key} vectors were made from prompts of another length than the records "
            f"of {records_path} (first: question {q} stage {t}, {expected[(q, t)]} tokens in the records): they "
            "belong to other records; recompute them with `tandem-lm-eval complete-hidden` (it replaces stale "
            "vectors) or give the side file that belongs to these records"
        )


def stage_table(
    records: Sequence[QuestionRecord],
    scores: Callable[[RowTable], np.ndarray],
    rows: RowTable,
    mentor_params: float | None = None,
    intern_params: float | None = None,
) -> StageTable:
    """The replay table of ``records``; ``scores(rows)`` gives s_t for each row of ``rows``.

    With per-stage seconds in every record (``collect`` writes them), the table carries them
    (``StageSeconds``); the time of ``scores(rows)`` itself, per row, joins each judged stage's
    recorded judgment (a collect runs no classifier: its records time the scoring pass and features).
    """
    num_stages = check_records(records)
    Q = len(records)
    s = np.full((Q, num_stages), np.nan)
    t0 = ledger.clock()
    s[rows.question, rows.stage] = scores(rows)
    classifier_share = (ledger.clock() - t0) / max(len(rows), 1)
    correct = np.zeros((Q, num_stages), dtype=bool)
    correct[rows.question, rows.stage] = rows.y.astype(bool)
    mentor = np.array([[st.mentor_tokens for st in r.stages] for r in records], dtype=np.float64)
    intern = np.array([[st.intern_tokens or 0 for st in r.stages] for r in records], dtype=np.float64)
    return StageTable(
        scores=s,
        correct=correct,
        mentor_tokens=mentor,
        intern_tokens=intern,
        mentor_params=_param(records, mentor_params, "mentor"),
        intern_params=_param(records, intern_params, "intern"),
        seconds=stage_seconds(records, classifier_share),
        tokens=stage_tokens(records),
    )


def stage_tokens(records: Sequence[QuestionRecord]) -> StageTokens:
    """Each record's per-stage prompt, mentor-call and censoring facts as arrays (replay.StageTokens);
    a count a record does not have (written before it was kept) reads as 0."""

    def grid(value) -> np.ndarray:
        return np.array([[value(r, t, st) for t, st in enumerate(r.stages)] for r in records])

    return StageTokens(
        prompt=grid(lambda r, t, st: st.prompt_tokens or 0),
        mentor_prompt=grid(lambda r, t, st: st.mentor_prompt_tokens or 0),
        mentor_cached=grid(lambda r, t, st: st.mentor_cached_tokens or 0),
        mentor_regenerated=grid(lambda r, t, st: st.mentor_regenerated_tokens or 0),
        censored=grid(lambda r, t, st: st.finish_reason == "length").astype(bool),
        repeat=grid(
            lambda r, t, st: bool(
                t > 0 and st.usable and r.stages[t - 1].usable and st.insights == r.stages[t - 1].insights
            )
        ).astype(bool),
    )


def stage_seconds(records: Sequence[QuestionRecord], classifier_share: float = 0.0) -> StageSeconds | None:
    """Each record's per-stage seconds as arrays (None unless every stage of every record has them).

    A stage is judged where the live cascade would judge it: usable, and adding insights to the
    previous stage (one that adds nothing reuses the previous score); ``classifier_share`` seconds
    are added to each judged stage."""
    if any(st.seconds is None for r in records for st in r.stages):
        return None

    def phase(st, *names: str) -> float:
        return float(sum(st.seconds.get(n, 0.0) for n in names))

    judge = []
    for r in records:
        row = []
        for t, st in enumerate(r.stages):
            judged = st.usable and not (
                t > 0 and r.stages[t - 1].usable and st.insights == r.stages[t - 1].insights
            )
            row.append(phase(st, "intern_score", "classify") + (classifier_share if judged else 0.0))
        judge.append(row)
    return StageSeconds(
        mentor=np.array([[phase(st, "mentor_generate") for st in r.stages] for r in records]),
        judge=np.array(judge),
        answer=np.array([[phase(st, "intern_generate") for st in r.stages] for r in records]),
    )


def _param(records: Sequence[QuestionRecord], given: float | None, role: str) -> float:
    if given is not None:
        return float(given)
    values = {
        (r.mentor.num_params if r.mentor is not None else None) if role == "mentor" else r.intern_num_params
        for r in records
    }
    values.discard(None)
    if len(values) != 1:
        raise TableError(
            f"the records do not agree on the {role}'s size ({sorted(values) or 'none given'}): "
            f"pass --{role}-num-params"
        )
    return float(values.pop())


def mentor_answers(records: Sequence[QuestionRecord]) -> MentorAnswers:
    """The mentor's own answers the records hold (``collect --mentor-answers``), for the router."""
    missing = sum(r.mentor_answer is None or r.mentor_answer.label is None for r in records)
    if missing:
        raise TableError(
            f"{missing} of {len(records)} records have no judged mentor answer: collect them with "
            "--mentor-answers (a router learns and replays when the mentor alone would be right)"
        )
    answers = [r.mentor_answer for r in records]
    timed = all(a.seconds is not None for a in answers)
    return MentorAnswers(
        correct=np.array([bool(a.label) for a in answers]),
        tokens=np.array([a.tokens for a in answers], dtype=np.float64),
        regenerated=np.array([a.regenerated_tokens for a in answers], dtype=np.float64),
        prompt=np.array([a.prompt_tokens for a in answers], dtype=np.float64),
        cached=np.array([a.cached_tokens for a in answers], dtype=np.float64),
        censored=np.array([a.finish_reason == "length" for a in answers]),
        seconds=np.array([a.seconds for a in answers], dtype=np.float64) if timed else None,
    )
