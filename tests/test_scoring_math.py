"""MATH scoring: final-answer extraction, equivalence (a table of tricky pairs), timeouts, and every
gold solution of the MATH test split scoring correct."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from pathlib import Path

import pytest

from tandem_lm_eval.scoring.boxed import last_boxed
from tandem_lm_eval.scoring.math_answer import MathJudge, extract_math_answer, score_math_response


@pytest.fixture(scope="module")
def judge():
    j = MathJudge(workers=2)
    yield j
    j.close()


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $\\boxed{5}$.", "5"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("answer $\\boxed 7$ done", "7"),
        ("\\fbox{12}", "12"),
        ("\\boxed{1} and then a cut-off \\boxed{\\frac{2", "1"),
        ("no box here, the answer is 5", None),
        ("\\boxed{}", None),
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert (last_boxed(text) or None) == expected


def test_answer_comes_after_think() -> None:
    response = "<think>maybe \\boxed{3}</think>The answer is $\\boxed{4}$."
    assert extract_math_answer(response).text == "4"


def test_thinking_cut_off_has_no_answer() -> None:
    # Qwen3 style: the model opened <think> itself and never closed it.
    answer = extract_math_answer("<think>so it is \\boxed{4} and")
    assert answer.text is None and answer.status == "unfinished_thinking"
    # R1-distill style: the prompt opened <think>, the text has no </think>.
    answer = extract_math_answer("so it is \\boxed{4} and", prompt_opened_think=True)
    assert answer.text is None and answer.status == "unfinished_thinking"
    # The same text from a non-thinking model is a normal answer.
    assert extract_math_answer("so it is \\boxed{4}").text == "4"


def test_cut_off_response_scores_wrong(judge: MathJudge) -> None:
    assert not score_math_response("<think>it is \\boxed{4}", "4", judge=judge).correct
    assert score_math_response("<think>hmm</think>\\boxed{4}", "4", judge=judge).correct


# ---------------------------------------------------------------- equivalence table

EQUIVALENCE_TABLE = [
    # fractions, decimals, LaTeX spellings
    ("\\frac{1}{2}", "0.5", True),
    ("\\frac{1}{2}", "1/2", True),
    ("\\dfrac{1}{2}", "\\frac12", True),
    ("\\tfrac{3}{4}", "0.75", True),
    ("\\frac{1}{2}", "\\frac{1}{3}", False),
    ("\\frac{1}{3}", "0.333", False),
    ("-\\frac{2}{3}", "\\frac{-2}{3}", True),
    ("\\frac{2}{3}", "-\\frac{2}{3}", False),
    ("\\frac{9}{7}", "1\\frac{2}{7}", True),
    # radicals, pi, symbolic forms
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", True),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{2}}{2}", False),
    ("3\\pi", "3 \\pi", True),
    ("\\pi", "3.14", False),
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2+2x+1", "(x-1)^2", False),
    ("2^{10}", "1024", True),
    # \left \right, spacing
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
    ("\\left[ 1, 2 \\right]", "[1,2]", True),
    # degrees, units, currency
    ("30^\\circ", "30", True),
    ("30^{\\circ}", "30", True),
    ("45^\\circ", "30^\\circ", False),
    ("5\\text{ cm}", "5", True),
    ("12 \\text{ square units}", "12", True),
    ("5 \\text{ cm}^2", "6", False),
    ("\\$18.90", "18.90", True),
    ("\\$18.90", "18.9", True),
    ("1,000", "1000", True),
    ("1{,}000", "1000", True),
    ("10,\\!000", "10000", True),
    # percentages: MATH drops the percent sign
    ("10\\%", "10", True),
    ("10", "10\\%", True),
    ("12.5\\%", "12.5", True),
    ("10\\%", "0.1", False),
    # intervals
    ("[2,5)", "[2, 5)", True),
    ("[2,5)", "(2,5)", False),
    ("(-\\infty, 3]", "(-\\infty,3]", True),
    ("(-\\infty, 3]", "(-\\infty, 3)", False),
    ("(-\\infty,-2)\\cup(2,\\infty)", "(-\\infty, -2) \\cup (2, \\infty)", True),
    # tuples / points / vectors
    ("(1,2)", "(1, 2)", True),
    ("(1,2)", "(2,1)", False),
    ("(3,-1,2)", "\\left(3, -1, 2\\right)", True),
    # matrices
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
    (
        "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
        "\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}",
        False,
    ),
    ("\\begin{pmatrix} 1/2 \\\\ 0 \\end{pmatrix}", "\\begin{pmatrix} 0.5 \\\\ 0 \\end{pmatrix}", True),
    # sets and lists of solutions (order-free)
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("1, 2", "2, 1", True),
    ("1,2,3", "1,2", False),
    ("-3, 3", "3, -3", True),
    # equations vs values
    ("x=3", "3", True),
    ("3", "x = 3", True),
    ("y=2x+3", "y = 3 + 2x", True),
    ("x=3", "4", False),
    # text answers
    ("\\text{Tuesday}", "\\text{Tuesday}", True),
    ("\\text{Tuesday}", "Tuesday", True),
    ("\\text{even}", "\\text{odd}", False),
    ("\\text{(C)}", "C", True),
    ("\\text{(C)}", "\\text{(D)}", False),
    # plain numbers
    ("5", "5.0", True),
    ("5", "6", False),
    ("-1", "1", False),
    ("0.25", "\\frac14", True),
    ("6", "6.", True),
    # complex numbers
    ("1+2i", "2i+1", True),
    ("1+2i", "1-2i", False),
]


def test_table_is_large_and_balanced() -> None:
    assert len(EQUIVALENCE_TABLE) >= 60
    assert sum(1 for *_, eq in EQUIVALENCE_TABLE if not eq) >= 20


@pytest.mark.parametrize(("gold", "pred", "equal"), EQUIVALENCE_TABLE)
def test_equivalence_table(judge: MathJudge, gold: str, pred: str, equal: bool) -> None:
    verdict = judge.judge(pred, gold)
    assert not verdict.timed_out
    assert verdict.equal is equal, (gold, pred, verdict)


def test_no_answer_is_never_equal(judge: MathJudge) -> None:
    assert not judge.judge(None, "5").equal
    assert not judge.judge("   ", "5").equal


# ---------------------------------------------------------------- timeouts and threads


def test_hard_timeout_kills_and_recovers() -> None:
    # The budget is below the worker's own (whole-second) soft timeout, so only the hard kill of
    # the helper process can end this slow symbolic comparison in time.
    fast = MathJudge(timeout_s=0.3)
    try:
        assert fast.judge("1", "1").equal  # worker started and warm
        start = time.monotonic()
        verdict = fast.judge("(x+1)^{3000}-(x+2)^{3000}", "(x+1)^{3000}-(x+3)^{3000}")
        assert verdict.timed_out and not verdict.equal
        assert time.monotonic() - start < 5
        assert fast._workers[0].restarts == 1
        assert fast.judge("\\frac{1}{2}", "0.5").equal  # a fresh worker takes over
    finally:
        fast.close()


def test_judge_works_off_the_main_thread(judge: MathJudge) -> None:
    # math-verify's own timeout is signal based and refuses to run in a thread; ours does not care.
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(judge.judge("0.5", "\\frac12").equal))
    thread.start()
    thread.join(60)
    assert results == [True]


# ---------------------------------------------------------------- the real data


def _math_rows(shared_data: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (shared_data / "math" / name).read_text().splitlines()]


@pytest.mark.slow
def test_every_math_gold_solution_scores_correct(shared_data: Path) -> None:
    """All 5,000 test solutions: the full solution text, scored against its own boxed answer."""
    rows = _math_rows(shared_data, "test.jsonl")
    assert len(rows) == 5000
    pairs = []
    for row in rows:
        gold = last_boxed(row["solution"])
        assert gold, row["idx"]
        pairs.append((extract_math_answer(row["solution"]).text, gold))
    judge = MathJudge(workers=2)
    try:
        verdicts = judge.judge_many(pairs)
    finally:
        judge.close()
    wrong = [(row["idx"], pair) for row, pair, v in zip(rows, pairs, verdicts) if not v.equal]
    assert not wrong, wrong[:10]


def test_math500_answer_field_matches_solution(shared_data: Path, judge: MathJudge) -> None:
    """MATH-500's separate `answer` field against the boxed answer of its solution (different text)."""
    rows = _math_rows(shared_data, "math500.jsonl")
    assert len(rows) == 500
    pairs = [(last_boxed(row["solution"]), row["answer"]) for row in rows]
    wrong = [p for p, v in zip(pairs, judge.judge_many(pairs)) if not v.equal]
    assert not wrong, wrong[:10]


def _perturb(answer: str, rng: random.Random) -> str | None:
    """A wrong answer: one number in it changed; None when it has no digit."""
    numbers = list(re.finditer(r"\d+", answer))
    if not numbers:
        return None
    m = rng.choice(numbers)
    changed = str(int(m.group(0)) + rng.choice([1, 2, 3, 7]))
    return answer[: m.start()] + changed + answer[m.end() :]


def test_perturbed_math_answers_score_wrong(shared_data: Path, judge: MathJudge) -> None:
    rng = random.Random(0)
    rows = rng.sample(_math_rows(shared_data, "math500.jsonl"), 150)
    pairs = []
    for row in rows:
        wrong = _perturb(row["answer"], rng)
        if wrong is not None:
            pairs.append((wrong, row["answer"]))
    # A different boxed expression altogether: another problem's answer.
    for a, b in zip(rows, rows[1:]):
        if a["answer"].replace(" ", "") != b["answer"].replace(" ", ""):
            pairs.append((b["answer"], a["answer"]))
    assert len(pairs) > 200
    accepted = [p for p, v in zip(pairs, judge.judge_many(pairs)) if v.equal]
    # Numbers changed inside e.g. "x^{2}" can still be equal by chance only in degenerate cases.
    assert not accepted, accepted
