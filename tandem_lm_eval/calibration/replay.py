"""Offline replay of the Tandem stop rule on a table of scored stages.

A :class:`StageTable` holds, for Q questions and T stages (t = 0: the question alone), the
classifier's score s_t (NaN where the stage's prompt did not fit the intern: such a stage never
passes and never wins the fallback), whether the intern's answer from stage t is correct, the
cumulative mentor tokens behind stage t and the intern's answer tokens from stage t. From it,
without any model:

- :func:`replay` applies one threshold vector τ exactly as the live cascade does
  (``cascade/policies/base.py: select_stage``: the first t with s_t > τ_t, else argmax_t s_t, ties to the
  earliest stage) and charges Eq. 12 (``cost/flops.py``) per question;
- :func:`fixed_stage`, :func:`intern_only` and :func:`oracle` are the baselines on the same table;
- :func:`route` is the one-decision routing cascade (stage 0, else the last stage).

The whole grid of threshold vectors at once is ``threshold_grid.py``; the choice of one by an explicit
objective is ``objectives.py``; the accuracy/cost front is ``front.py``.

What the mentor is paid (as in ``cascade/stages.py: Cascade.run``): stopping early at stage t costs the mentor
tokens behind stage t. When no stage passes, the mentor has already written *every* stage before the
fallback is taken, so the fallback costs the mentor tokens behind the last stage T-1, whichever
stage the intern then answers from; this is true even when the last stages were unusable (the mentor
writes a stage before the intern finds that its prompt does not fit). The intern's answer tokens are
those of the chosen stage.

Latency (when the table has :class:`StageSeconds`): a question's replayed seconds are exactly the
phases its path ran, each as recorded for that question: the mentor writing stages 1..m, the
judgment of stages 0..j (the intern's scoring pass, features, classifier), the answer from the
chosen stage. Tandem: m = j = the stop stage (T-1 on a fallback); ``fixed:t``: m = t, no judgment;
``route``: j = 0, m = 0 or T-1; the oracle: m = its stage, no judgment.

Everything here is plain numpy: no model, no file I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from tandem_lm_eval.calibration.errors import TableError
from tandem_lm_eval.common.options import OptionError
from tandem_lm_eval.cost.flops import tflops as eq12_tflops
from tandem_lm_eval.cost.passes import PassTokens, full_pass_tflops

Stage0 = Literal["stop", "fallback"]
STAGE0_MODES = ("stop", "fallback")
#: The stage-0 threshold that never stops (scores lie in [0, 1] and the rule is s_t > τ_t).
NEVER = 1.0


# --- data -------------------------------------------------------------------------------------------
def _frozen_array(value, dtype, name: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=dtype, copy=True)
    except (TypeError, ValueError) as exc:
        raise TableError(f"{name}: cannot be read as {np.dtype(dtype).name} ({exc})") from exc
    arr.setflags(write=False)  # the table is frozen: nobody edits its arrays behind its back
    return arr


@dataclass(frozen=True)
class StageSeconds:
    """(Q, T) wall seconds of each question's phases at each stage, as ``collect`` recorded them."""

    mentor: np.ndarray  # the mentor writing stage t's new insights (0 at stage 0 and after it finished)
    judge: np.ndarray  # judging stage t: the intern's scoring pass, features, classifier (0 if not scored)
    answer: np.ndarray  # the intern's answer from stage t

    def __post_init__(self) -> None:
        for name in ("mentor", "judge", "answer"):
            arr = _frozen_array(getattr(self, name), np.float64, f"seconds.{name}")
            if arr.ndim != 2:
                raise TableError(f"seconds.{name} must have shape (questions, stages), got {arr.shape}")
            if not np.isfinite(arr).all() or np.any(arr < 0):
                raise TableError(f"seconds.{name} must be finite and >= 0")
            object.__setattr__(self, name, arr)

    def subset(self, index: np.ndarray) -> StageSeconds:
        return StageSeconds(self.mentor[index], self.judge[index], self.answer[index])


@dataclass(frozen=True)
class StageTokens:
    """(Q, T) what else each stage of each question processed or produced, as ``collect`` recorded it:
    for the all-passes count (cost/passes.py), hosted-chat regenerated tokens and answers cut at the
    length limit. Records written before these were kept read as 0 (and no censoring)."""

    prompt: np.ndarray  # the intern prompt x_t in intern tokens (its scoring pass and its answer's prefill)
    mentor_prompt: np.ndarray  # prefill of the mentor call that wrote stage t (0 at stage 0)
    mentor_cached: np.ndarray  # of it, served from a prefix cache
    mentor_regenerated: np.ndarray  # tokens that call generated again (a hosted chat API)
    censored: np.ndarray  # bool: the intern's answer from stage t ended at the length limit
    repeat: np.ndarray  # bool: stage t adds no insight to t-1 (same x_t: not scored or answered again)

    def __post_init__(self) -> None:
        for name in ("prompt", "mentor_prompt", "mentor_cached", "mentor_regenerated"):
            arr = _frozen_array(getattr(self, name), np.float64, f"tokens.{name}")
            if arr.ndim != 2 or not np.isfinite(arr).all() or np.any(arr < 0):
                raise ValueError(f"tokens.{name} must be (questions, stages), finite and >= 0")
            object.__setattr__(self, name, arr)
        for name in ("censored", "repeat"):
            object.__setattr__(self, name, _frozen_array(getattr(self, name), np.bool_, f"tokens.{name}"))

    def subset(self, index: np.ndarray) -> StageTokens:
        return StageTokens(
            *(getattr(self, f)[index] for f in StageTokens.__dataclass_fields__)  # field order
        )


@dataclass(frozen=True)
class StageTable:
    """Q questions x T stages of collected outcomes, for replaying the cascade offline."""

    scores: np.ndarray  # (Q, T) float, s_t; NaN where the stage was not usable (never passes, never argmax)
    correct: np.ndarray  # (Q, T) bool, the intern's answer from stage t is correct
    mentor_tokens: np.ndarray  # (Q, T) cumulative mentor tokens behind stage t (0 at stage 0, non-decreasing)
    intern_tokens: np.ndarray  # (Q, T) intern answer tokens when answering from stage t
    mentor_params: float
    intern_params: float
    seconds: StageSeconds | None = None  # per-phase times (None: records without times)
    tokens: StageTokens | None = None  # prefill, regenerated, censored (None: not known)

    def __post_init__(self) -> None:
        scores = _frozen_array(self.scores, np.float64, "scores")
        if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
            raise TableError(f"scores must have shape (questions, stages) with both >= 1, got {scores.shape}")
        shape = scores.shape
        correct = np.asarray(self.correct)
        if correct.dtype != np.bool_:
            # 0/1 integers are accepted (labels often come as ints); anything else is a mistake
            if not np.issubdtype(correct.dtype, np.integer) or not np.isin(correct, (0, 1)).all():
                raise TableError(f"correct must be bool (or 0/1 integers), got dtype {correct.dtype}")
        correct = _frozen_array(correct, np.bool_, "correct")
        mentor = _frozen_array(self.mentor_tokens, np.float64, "mentor_tokens")
        intern = _frozen_array(self.intern_tokens, np.float64, "intern_tokens")
        for name, arr in (("correct", correct), ("mentor_tokens", mentor), ("intern_tokens", intern)):
            if arr.shape != shape:
                raise TableError(f"{name} has shape {arr.shape}, scores has {shape}")
        if self.seconds is not None:
            for name in ("mentor", "judge", "answer"):
                if getattr(self.seconds, name).shape != shape:
                    raise TableError(
                        f"seconds.{name} has shape {getattr(self.seconds, name).shape}, scores has {shape}"
                    )
        if self.tokens is not None:
            for name in StageTokens.__dataclass_fields__:
                if getattr(self.tokens, name).shape != shape:
                    raise ValueError(
                        f"tokens.{name} has shape {getattr(self.tokens, name).shape}, scores has {shape}"
                    )
        usable = ~np.isnan(scores)
        if not usable[:, 0].all():
            bad = np.flatnonzero(~usable[:, 0])[:5].tolist()
            raise TableError(f"stage 0 (the question alone) must be usable: NaN score for questions {bad}")
        if np.any(scores[usable] < 0.0) or np.any(scores[usable] > 1.0):
            # the rule relies on it: τ = 1.0 must never pass (stage0="fallback")
            raise TableError("scores must lie in [0, 1] (NaN marks an unusable stage)")
        for name, arr in (("mentor_tokens", mentor), ("intern_tokens", intern)):
            if not np.isfinite(arr).all() or np.any(arr < 0):
                raise TableError(f"{name} must be finite and >= 0 at every stage, usable or not")
        if np.any(mentor[:, 0] != 0):
            raise TableError("mentor_tokens must be 0 at stage 0 (the question alone)")
        if np.any(np.diff(mentor, axis=1) < 0):
            q = int(np.flatnonzero((np.diff(mentor, axis=1) < 0).any(axis=1))[0])
            raise TableError(
                f"mentor_tokens must be cumulative (non-decreasing along stages); question {q}: "
                f"{mentor[q].tolist()}"
            )
        for name in ("mentor_params", "intern_params"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise TableError(f"{name} must be finite and >= 0, got {value}")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "correct", correct)
        object.__setattr__(self, "mentor_tokens", mentor)
        object.__setattr__(self, "intern_tokens", intern)

    @property
    def num_questions(self) -> int:
        return int(self.scores.shape[0])

    @property
    def num_stages(self) -> int:
        return int(self.scores.shape[1])

    @property
    def usable(self) -> np.ndarray:
        """(Q, T) bool: the stage's prompt fitted the intern (its score is not NaN)."""
        return ~np.isnan(self.scores)

    def with_scores(self, scores) -> StageTable:
        """The same outcomes under other scores (e.g. another classifier), validated again."""
        return replace(self, scores=scores)

    def subset(self, index) -> StageTable:
        """The questions ``index`` (an index or boolean array), everything else the same."""
        index = np.asarray(index)
        return replace(
            self,
            scores=self.scores[index],
            correct=self.correct[index],
            mentor_tokens=self.mentor_tokens[index],
            intern_tokens=self.intern_tokens[index],
            seconds=None if self.seconds is None else self.seconds.subset(index),
            tokens=None if self.tokens is None else self.tokens.subset(index),
        )


# --- one threshold vector ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayResult:
    """Per-question outcome of one policy on a :class:`StageTable`."""

    stage: np.ndarray  # (Q,) int, the stage the intern answered from
    early: np.ndarray  # (Q,) bool, stopped by s_t > τ_t (False: fallback, or a baseline)
    correct: np.ndarray  # (Q,) bool
    mentor_paid: np.ndarray  # (Q,) mentor tokens generated (L_L of Eq. 12)
    intern_tokens: np.ndarray  # (Q,) intern answer tokens (L_S of Eq. 12)
    tflops: np.ndarray  # (Q,) Eq. 12
    num_stages: int
    latency: np.ndarray | None = None  # (Q,) seconds of the phases the path ran (None: no times)
    judgment: np.ndarray | None = None  # (Q,) the part of ``latency`` spent judging stages
    # (Q,) every forward pass (cost/passes.py) and the answer ended at the length limit (None: the
    # table has no StageTokens)
    full_pass_tflops: np.ndarray | None = None
    censored: np.ndarray | None = None

    @property
    def num_questions(self) -> int:
        return int(self.stage.shape[0])

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct))

    @property
    def mean_tflops(self) -> float:
        return float(np.mean(self.tflops))

    @property
    def mean_mentor_tokens(self) -> float:
        return float(np.mean(self.mentor_paid))

    @property
    def mean_intern_tokens(self) -> float:
        return float(np.mean(self.intern_tokens))

    @property
    def early_rate(self) -> float:
        return float(np.mean(self.early))

    @property
    def stopped_before_last_rate(self) -> float:
        """Share of questions the classifier stopped before the last stage: the mentor stopped early
        (a stop at the last stage, or a fallback, pays the mentor's whole budget)."""
        return float(np.mean(self.early & (self.stage < self.num_stages - 1)))

    @property
    def mean_latency_s(self) -> float | None:
        return None if self.latency is None else float(np.mean(self.latency))

    @property
    def mean_judgment_s(self) -> float | None:
        return None if self.judgment is None else float(np.mean(self.judgment))

    @property
    def mean_full_pass_tflops(self) -> float | None:
        return None if self.full_pass_tflops is None else float(np.mean(self.full_pass_tflops))

    @property
    def censored_count(self) -> int | None:
        """How many returned answers ended at the length limit."""
        return None if self.censored is None else int(np.sum(self.censored))

    @property
    def accuracy_uncensored(self) -> float | None:
        """Accuracy among the answers that did not end at the length limit (None: none, or unknown)."""
        if self.censored is None or self.censored.all():
            return None
        return float(np.mean(self.correct[~self.censored]))

    @property
    def stage_distribution(self) -> tuple[float, ...]:
        """Fraction of questions answered from each stage 0..T-1."""
        counts = np.bincount(self.stage, minlength=self.num_stages)
        return tuple(float(c) / self.num_questions for c in counts)

    def summary(self) -> dict:
        out = {
            "questions": self.num_questions,
            "accuracy": self.accuracy,
            "mean_tflops": self.mean_tflops,
            "mean_mentor_tokens": self.mean_mentor_tokens,
            "mean_intern_tokens": self.mean_intern_tokens,
            "stage_distribution": {str(t): f for t, f in enumerate(self.stage_distribution)},
            "early_rate": self.early_rate,
            "stopped_before_last_rate": self.stopped_before_last_rate,
        }
        if self.latency is not None:
            out["mean_latency_s"] = self.mean_latency_s
            out["mean_judgment_s"] = self.mean_judgment_s
        if self.censored is not None:
            out["mean_full_pass_tflops"] = self.mean_full_pass_tflops
            out["censored"] = self.censored_count
            out["accuracy_uncensored"] = self.accuracy_uncensored
        return out


def format_distribution(summary: dict) -> str:
    """A ``ReplayResult.summary()``'s stage distribution as ``"0: 0.12, 1: 0.30, ..."``."""
    return ", ".join(f"{t}: {share:.2f}" for t, share in summary["stage_distribution"].items())


def check_stage0(stage0: str) -> None:
    if stage0 not in STAGE0_MODES:
        raise OptionError(f"stage0 must be one of {STAGE0_MODES}, got {stage0!r}")


def path_seconds(
    seconds: StageSeconds, stage: np.ndarray, mentor_through: np.ndarray, judged_through: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(latency, judgment) per question of a path that had the mentor write stages 1..``mentor_through``,
    judged stages 0..``judged_through`` (-1: none) and answered from ``stage``: the sum of exactly
    those phases' recorded seconds."""
    rows = np.arange(stage.shape[0])
    mentor = np.cumsum(seconds.mentor, axis=1)[rows, mentor_through]
    judged = np.concatenate([np.zeros((stage.shape[0], 1)), np.cumsum(seconds.judge, axis=1)], axis=1)
    judgment = judged[rows, np.asarray(judged_through) + 1]
    return mentor + judgment + seconds.answer[rows, stage], judgment


def replay_result(
    table: StageTable,
    stage: np.ndarray,
    early: np.ndarray,
    mentor_paid: np.ndarray,
    correct=None,
    *,
    mentor_through: np.ndarray,
    judged_through: np.ndarray,
    answered: np.ndarray | None = None,
):
    """The result of a path per question; ``mentor_through``/``judged_through`` say which phases it
    ran (``path_seconds``), for its latency and its passes; ``answered`` ((Q, T) bool): the stages whose
    answers it generated (None: the chosen stage's only), every one in its cost."""
    rows = np.arange(table.num_questions)
    if answered is None:
        intern = table.intern_tokens[rows, stage]
    else:
        intern = np.sum(np.where(answered, table.intern_tokens, 0.0), axis=1)
    latency = judgment = None
    if table.seconds is not None:
        latency, judgment = path_seconds(table.seconds, stage, mentor_through, judged_through)
        if answered is not None:  # every generated answer's time, not the chosen one's only
            latency = (
                latency
                - table.seconds.answer[rows, stage]
                + np.sum(np.where(answered, table.seconds.answer, 0.0), axis=1)
            )
    regenerated = full = censored = 0.0
    if table.tokens is not None:
        tok = table.tokens
        upto = np.arange(table.num_stages)[None, :]
        wrote = (upto >= 1) & (upto <= np.asarray(mentor_through)[:, None])  # mentor calls 1..m
        # a stage that adds nothing is not scored again (Cascade._score_stage)
        judged = (upto <= np.asarray(judged_through)[:, None]) & table.usable & ~tok.repeat
        if answered is None:
            answer_prompt = tok.prompt[rows, stage]
        else:
            answer_prompt = np.sum(np.where(answered, tok.prompt, 0.0), axis=1)
        regenerated = np.sum(np.where(wrote, tok.mentor_regenerated, 0.0), axis=1)
        passes = PassTokens(
            mentor_prompt=np.sum(np.where(wrote, tok.mentor_prompt, 0.0), axis=1),
            mentor_generated=mentor_paid + regenerated,
            mentor_cached=np.sum(np.where(wrote, tok.mentor_cached, 0.0), axis=1),
            intern_scored=np.sum(np.where(judged, tok.prompt, 0.0), axis=1),
            intern_prompt=answer_prompt,
            intern_generated=intern,
        )
        full = np.asarray(full_pass_tflops(table.mentor_params, table.intern_params, passes).computed)
        censored = tok.censored[rows, stage]
    return ReplayResult(
        stage=stage,
        early=early,
        correct=table.correct[rows, stage] if correct is None else correct,
        mentor_paid=mentor_paid,
        intern_tokens=intern,
        tflops=np.asarray(
            eq12_tflops(table.mentor_params, table.intern_params, mentor_paid, intern, regenerated)
        ),
        num_stages=table.num_stages,
        latency=latency,
        judgment=judgment,
        full_pass_tflops=None if table.tokens is None else full,
        censored=None if table.tokens is None else censored,
    )


def fallback_stage(table: StageTable) -> np.ndarray:
    """argmax_t s_t over usable stages, ties to the earliest (np.argmax returns the first maximum)."""
    return np.argmax(np.where(table.usable, table.scores, -np.inf), axis=1)


def replay(table: StageTable, thresholds: Sequence[float], stage0: Stage0 = "stop") -> ReplayResult:
    """The cascade under τ = ``thresholds`` (one per stage), question by question, vectorised.

    Same choice as ``policies.base.select_stage(scores, thresholds)`` with an unusable stage's score
    read as -1 (as ``Cascade`` does). ``stage0="fallback"``: stage 0 never stops early (τ_0 = +inf,
    ``thresholds[0]`` is ignored) but still takes part in the argmax fallback.
    """
    check_stage0(stage0)
    tau = np.asarray(thresholds, dtype=np.float64)
    if tau.shape != (table.num_stages,):
        raise OptionError(f"{tau.size} thresholds for {table.num_stages} stages")
    if stage0 == "fallback":
        tau = tau.copy()
        tau[0] = np.inf
    elif not np.isfinite(tau).all():
        raise OptionError(f"thresholds must be finite, got {tau.tolist()}")
    passes = table.usable & (table.scores > tau)  # NaN > τ is False as well; the mask says why
    early = passes.any(axis=1)
    stage = np.where(early, np.argmax(passes, axis=1), fallback_stage(table))
    rows = np.arange(table.num_questions)
    # early stop at t: the mentor wrote up to t; fallback: it wrote every stage before giving up
    mentor_paid = np.where(early, table.mentor_tokens[rows, stage], table.mentor_tokens[:, -1])
    # the same for the stages written and judged (timed)
    through = np.where(early, stage, table.num_stages - 1)
    return replay_result(table, stage, early, mentor_paid, mentor_through=through, judged_through=through)


def fixed_stage(table: StageTable, t: int) -> ReplayResult:
    """Always answer from stage t (the ``fixed:t`` policy), no scoring.

    As in ``Cascade.run``: the mentor writes stages 1..t, so it is paid ``mentor_tokens[:, t]``; when
    stage t is unusable the intern answers from the last usable stage before it.
    """
    if not 0 <= t < table.num_stages:
        raise OptionError(f"stage {t} out of range 0..{table.num_stages - 1}")
    usable = table.usable[:, : t + 1]
    # index of the last True along the row (stage 0 is always usable, so there is one)
    stage = t - np.argmax(usable[:, ::-1], axis=1)
    q = table.num_questions
    return replay_result(
        table,
        stage,
        np.zeros(q, dtype=bool),
        table.mentor_tokens[:, t].copy(),
        mentor_through=np.full(q, t),
        judged_through=np.full(q, -1),  # no scoring: a fixed stage needs no judgment
    )


def intern_only(table: StageTable) -> ReplayResult:
    """The intern alone: stage 0, no mentor tokens."""
    return fixed_stage(table, 0)


def oracle(table: StageTable) -> ReplayResult:
    """The cheapest correct stage: the first usable stage whose answer is correct.

    The mentor is paid up to that stage. A question that no usable stage answers correctly is
    answered from stage 0 with no mentor tokens and counts as wrong (the oracle knows the mentor
    cannot help, so it does not pay for it). ``early`` is False throughout (no classifier decided).
    """
    good = table.correct & table.usable
    solvable = good.any(axis=1)
    stage = np.where(solvable, np.argmax(good, axis=1), 0)
    rows = np.arange(table.num_questions)
    mentor_paid = np.where(solvable, table.mentor_tokens[rows, stage], 0.0)
    return replay_result(
        table,
        stage,
        np.zeros(table.num_questions, dtype=bool),
        mentor_paid,
        correct=solvable,
        mentor_through=stage,  # 0 for an unsolvable question: no mentor
        judged_through=np.full(table.num_questions, -1),
    )


# --- the routing cascade (FrugalGPT-style, paper Table 6) ----------------------------------------------
def route(table: StageTable, tau0) -> ReplayResult:
    """``mode=route``: one decision from stage 0. s_0 > τ_0: the intern answers alone (no mentor);
    otherwise the mentor writes through the last budget and the intern answers from the last stage
    (the last usable one, as ``fixed_stage``), with no scoring and no argmax in between.

    ``tau0``: one τ_0 for every question, or one per question (shape (Q,): a per-group router gives
    each group its own)."""
    tau0 = np.asarray(tau0, dtype=np.float64)
    if tau0.ndim not in (0, 1) or (tau0.ndim == 1 and tau0.shape[0] != table.num_questions):
        raise TableError(
            f"tau0 must be one value or one per question ({table.num_questions}), got {tau0.shape}"
        )
    early = table.scores[:, 0] > tau0
    last = fixed_stage(table, table.num_stages - 1)
    stage = np.where(early, 0, last.stage)
    mentor_paid = np.where(early, 0.0, last.mentor_paid)
    return replay_result(
        table,
        stage,
        early,
        mentor_paid,
        mentor_through=np.where(early, 0, table.num_stages - 1),
        judged_through=np.zeros(table.num_questions, dtype=int),  # stage 0 only
    )


# --- answer agreement (no classifier) ------------------------------------------------------------------
def agreement(table: StageTable, keys) -> ReplayResult:
    """``mode=agreement`` (cascade/policies/agreement.py): the intern answers at every stage it visits;
    stop at the first t >= 1 whose answer key equals stage t-1's, else answer from the last usable
    stage. ``keys``: (Q, T) the answers' keys by the task's filters (None where a stage was unusable).

    Paid: the mentor through the stop stage (the last on no agreement), and every answer generated on
    the way (a stage that adds nothing to the previous one reuses its answer: not generated again,
    ``StageTokens.repeat``, which the table needs); no judgment."""
    keys = np.asarray(keys, dtype=object)
    if keys.shape != table.scores.shape:
        raise ValueError(f"keys has shape {keys.shape}, the table has {table.scores.shape}")
    if table.tokens is None:
        raise ValueError("agreement needs the table's StageTokens (which stages repeat the previous one)")
    Q, T = table.scores.shape
    present = table.usable & np.not_equal(keys, None)
    same = np.zeros((Q, T), dtype=bool)
    same[:, 1:] = present[:, 1:] & present[:, :-1] & (keys[:, 1:] == keys[:, :-1])
    agreed = same.any(axis=1)
    last_usable = T - 1 - np.argmax(table.usable[:, ::-1], axis=1)
    stage = np.where(agreed, np.argmax(same, axis=1), last_usable)
    through = np.where(agreed, stage, T - 1)  # stages visited: the mentor wrote each one
    visited = np.arange(T)[None, :] <= through[:, None]
    answered = visited & table.usable & ~table.tokens.repeat
    rows = np.arange(Q)
    mentor_paid = table.mentor_tokens[rows, through]
    return replay_result(
        table,
        stage,
        agreed,
        mentor_paid,
        mentor_through=through,
        judged_through=np.full(Q, -1),
        answered=answered,
    )


# --- the router: the intern alone or the mentor alone -------------------------------------------------
@dataclass(frozen=True)
class MentorAnswers:
    """(Q,) the mentor's own answer to each question (``collect --mentor-answers``), for ``router``."""

    correct: np.ndarray  # bool
    tokens: np.ndarray  # generated
    regenerated: np.ndarray  # generated again (a hosted chat API)
    prompt: np.ndarray  # prefill of its call(s)
    cached: np.ndarray  # of it, from a prefix cache
    censored: np.ndarray  # bool: ended at the length limit
    seconds: np.ndarray | None = None  # its share of the batched call (None: not timed)

    def __post_init__(self) -> None:
        for name in ("correct", "censored"):
            object.__setattr__(self, name, _frozen_array(getattr(self, name), np.bool_, f"mentor.{name}"))
        for name in ("tokens", "regenerated", "prompt", "cached"):
            arr = _frozen_array(getattr(self, name), np.float64, f"mentor.{name}")
            if arr.ndim != 1 or not np.isfinite(arr).all() or np.any(arr < 0):
                raise ValueError(f"mentor.{name} must be (questions,), finite and >= 0")
            object.__setattr__(self, name, arr)
        if self.seconds is not None:
            object.__setattr__(self, "seconds", _frozen_array(self.seconds, np.float64, "mentor.seconds"))


def router(table: StageTable, mentor: MentorAnswers, tau0) -> ReplayResult:
    """``mode=router`` (cascade/policies/router.py): s_0 > τ_0: the intern answers alone from stage 0;
    otherwise the mentor answers the question itself (its own recorded answer). Both pay the intern's
    reading of the question (its scoring pass, the judgment: latency and all passes, not Eq. 12, which
    never counts scoring); the mentor's answer costs 2e-12 · |θL| · (L + R), no intern term (as
    ``mentor_only``). ``tau0``: one value, or one per question."""
    Q = table.num_questions
    if mentor.correct.shape != (Q,):
        raise ValueError(f"mentor answers for {mentor.correct.shape[0]} questions, the table has {Q}")
    tau0 = np.asarray(tau0, dtype=np.float64)
    if tau0.ndim not in (0, 1) or (tau0.ndim == 1 and tau0.shape[0] != Q):
        raise ValueError(f"tau0 must be one value or one per question ({Q}), got {tau0.shape}")
    to_intern = table.scores[:, 0] > tau0
    stage = np.zeros(Q, dtype=int)
    intern_tokens = np.where(to_intern, table.intern_tokens[:, 0], 0.0)
    mentor_paid = np.where(to_intern, 0.0, mentor.tokens)
    regenerated = np.where(to_intern, 0.0, mentor.regenerated)
    eq12 = np.asarray(eq12_tflops(table.mentor_params, 0.0, mentor_paid, 0.0, regenerated)) + np.asarray(
        eq12_tflops(0.0, table.intern_params, 0.0, intern_tokens)
    )
    latency = judgment = None
    if table.seconds is not None and mentor.seconds is not None:
        judgment = table.seconds.judge[:, 0].copy()
        latency = judgment + np.where(to_intern, table.seconds.answer[:, 0], mentor.seconds)
    full = censored = None
    if table.tokens is not None:
        tok = table.tokens
        passes = PassTokens(
            mentor_prompt=np.where(to_intern, 0.0, mentor.prompt),
            mentor_generated=mentor_paid + regenerated,
            mentor_cached=np.where(to_intern, 0.0, mentor.cached),
            intern_scored=tok.prompt[:, 0],
            intern_prompt=np.where(to_intern, tok.prompt[:, 0], 0.0),
            intern_generated=intern_tokens,
        )
        full = np.asarray(full_pass_tflops(table.mentor_params, table.intern_params, passes).computed)
        censored = np.where(to_intern, tok.censored[:, 0], mentor.censored)
    return ReplayResult(
        stage=stage,
        early=to_intern,
        correct=np.where(to_intern, table.correct[:, 0], mentor.correct),
        mentor_paid=mentor_paid,
        intern_tokens=intern_tokens,
        tflops=eq12,
        num_stages=table.num_stages,
        latency=latency,
        judgment=judgment,
        full_pass_tflops=full,
        censored=censored,
    )
