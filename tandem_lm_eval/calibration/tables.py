"""Records (data/records.py) as arrays: the rows a classifier fits on, and the question x stage table the
cascade is replayed on (replay.StageTable). Shared by ``fit`` and ``analyze`` so both read records
the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tandem_lm_eval.calibration.replay import StageSeconds, StageTable
from tandem_lm_eval.cost import ledger
from tandem_lm_eval.data.records import QuestionRecord
from tandem_lm_eval.judgment.features import NUM_FEATURES, check_span


class TableError(ValueError):
    """Records that cannot make one table (unlabelled, mixed setups, missing features)."""


@dataclass
class RowTable:
    """One row per usable (question, stage): what a classifier fits on and is scored on."""

    question: np.ndarray  # index into the record list
    stage: np.ndarray
    group: np.ndarray  # object array of str | None
    X: np.ndarray  # (n, NUM_FEATURES)
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


def row_table(records: Sequence[QuestionRecord], span: str) -> RowTable:
    check_span(span)
    check_records(records)
    question, stage, group, X, y = [], [], [], [], []
    for i, rec in enumerate(records):
        for s in rec.stages:
            if not s.usable:
                continue
            vector = s.features.get(span)
            if vector is None:
                raise TableError(
                    f"record {rec.task} doc {rec.doc_id} stage {s.stage} has no features over span {span!r} "
                    f"(it has {sorted(s.features)})"
                )
            if len(vector) != NUM_FEATURES:
                raise TableError(
                    f"record {rec.task} doc {rec.doc_id}: {len(vector)} features, not {NUM_FEATURES}"
                )
            question.append(i)
            stage.append(s.stage)
            group.append(rec.group)
            X.append(vector)
            y.append(int(s.label))
    return RowTable(
        np.array(question, dtype=int),
        np.array(stage, dtype=int),
        np.array(group, dtype=object),
        np.array(X, dtype=np.float64).reshape(-1, NUM_FEATURES),
        np.array(y, dtype=int),
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
