"""MATH-style answers: the final ``\\boxed{}`` of a response, and equivalence with the gold answer.

Equivalence is math-verify's (sympy-based: ``\\frac{1}{2}`` = ``0.5`` = ``1/2``, intervals, tuples,
matrices, sets, ``x=3`` vs ``3``, units and degrees), plus the MATH convention that a percent sign
is dropped and a string comparison for answers that are words. Every comparison runs in a helper
process with a hard wall-clock timeout (see ``line_worker``): a pathological answer costs at most
``timeout_s`` seconds and is scored wrong, and the caller can be any thread.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tandem_lm_eval.common.thinking import split_thinking
from tandem_lm_eval.scoring.boxed import last_boxed
from tandem_lm_eval.scoring.line_worker import LineWorker, WorkerCrashed, WorkerTimeout

# Per comparison, hard. Generous because a loaded machine makes sympy's first use of a construct
# take seconds; only pathological answers get near it.
DEFAULT_TIMEOUT_S = 20.0
_WORKER_FILE = str(Path(__file__).with_name("_math_worker.py"))


@dataclass(frozen=True)
class MathAnswer:
    """What a response answered. ``text`` is None when it gave no final answer."""

    text: str | None
    # "boxed": found; "no_boxed": finished without a box; "unfinished_thinking": cut off before </think>.
    status: str


def extract_math_answer(response: str, *, prompt_opened_think: bool = False) -> MathAnswer:
    """The last ``\\boxed{}`` after the reasoning (``</think>``) of a response."""
    split = split_thinking(response, prompt_opened_think=prompt_opened_think)
    if not split.completed:
        return MathAnswer(None, "unfinished_thinking")
    boxed = last_boxed(split.answer)
    return MathAnswer(boxed, "boxed") if boxed else MathAnswer(None, "no_boxed")


@dataclass(frozen=True)
class Judgement:
    equal: bool
    timed_out: bool = False
    error: str | None = None


class MathJudge:
    """Answer equivalence through ``workers`` helper processes, ``timeout_s`` per comparison."""

    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.timeout_s = timeout_s
        self._workers = [LineWorker([_WORKER_FILE, str(timeout_s)]) for _ in range(workers)]
        self._next = 0
        self._lock = threading.Lock()
        self._ids = 0

    def _pick(self) -> LineWorker:
        with self._lock:
            worker = self._workers[self._next % len(self._workers)]
            self._next += 1
            self._ids += 1
            return worker

    def _judge_on(self, worker: LineWorker, pred: str, gold: str) -> Judgement:
        try:
            reply = worker.request({"id": 0, "pred": pred, "gold": gold}, self.timeout_s)
        except WorkerTimeout:
            return Judgement(False, timed_out=True, error=f"no verdict within {self.timeout_s:g} s")
        except WorkerCrashed as exc:
            return Judgement(False, error=f"worker crashed: {exc}")
        return Judgement(bool(reply["equal"]), error=reply.get("error"))

    def judge(self, pred: str | None, gold: str) -> Judgement:
        """Is ``pred`` (a final-answer string, None for no answer) equivalent to ``gold``?"""
        if pred is None or not pred.strip():
            return Judgement(False)
        return self._judge_on(self._pick(), pred, gold)

    def judge_many(self, pairs: Sequence[tuple[str | None, str]]) -> list[Judgement]:
        """Judge many pairs, one thread per worker process (the work happens in the processes)."""
        if len(self._workers) == 1 or len(pairs) < 2:
            return [self.judge(p, g) for p, g in pairs]
        results: list[Judgement | None] = [None] * len(pairs)

        def run(slot: int) -> None:
            worker = self._workers[slot]
            for i in range(slot, len(pairs), len(self._workers)):
                pred, gold = pairs[i]
                empty = pred is None or not pred.strip()
                results[i] = Judgement(False) if empty else self._judge_on(worker, pred, gold)

        with ThreadPoolExecutor(len(self._workers)) as pool:
            list(pool.map(run, range(len(self._workers))))
        return [r for r in results if r is not None]

    def close(self) -> None:
        for worker in self._workers:
            worker.close()


_default: MathJudge | None = None
_default_lock = threading.Lock()


def default_judge() -> MathJudge:
    """The process-wide judge used by the tasks (started on first use, stopped at exit)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathJudge()
            atexit.register(_default.close)
        return _default


def math_equal(pred: str | None, gold: str) -> bool:
    """Convenience: equivalence of two final-answer strings with the default judge."""
    return default_judge().judge(pred, gold).equal


@dataclass(frozen=True)
class MathScore:
    correct: bool
    answer: MathAnswer
    judgement: Judgement


def score_math_response(
    response: str, gold: str, *, prompt_opened_think: bool = False, judge: MathJudge | None = None
) -> MathScore:
    """Score a full model response against a gold final answer."""
    answer = extract_math_answer(response, prompt_opened_think=prompt_opened_think)
    verdict = (judge or default_judge()).judge(answer.text, gold)
    return MathScore(verdict.equal, answer, verdict)
