"""GSM8K scoring: number extraction from free-form responses, and every gold answer scoring correct."""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

import pytest

from tandem_lm_eval.scoring.gsm8k_answer import (
    extract_gsm8k_answer,
    gsm8k_gold,
    parse_number,
    score_gsm8k_response,
)


@pytest.mark.parametrize(
    ("response", "value", "source"),
    [
        ("So she makes \\boxed{18} dollars.", 18, "boxed"),
        ("The total is $\\boxed{\\$1,080}$.", 1080, "boxed"),
        ("\\boxed{18 \\text{ dollars}}", 18, "boxed"),
        ("\\boxed{x = 15}", 15, "boxed"),
        ("\\boxed{\\frac{15}{2}}", Fraction(15, 2), "boxed"),
        ("Maybe 4, then \\boxed{7}. Double check: 3 + 4 = 7", 7, "boxed"),
        ("The answer is 18.", 18, "answer_is"),
        ("The answer is $1,080.50.", Fraction(216100, 200), "answer_is"),
        ("The answer is: 18 dollars. Since 2 of them ...", 18, "answer_is"),
        ("Final answer: 42", 42, "answer_is"),
        ("answer = -3", -3, "answer_is"),
        ("She has 3 left.\n#### 72", 72, "hashes"),
        ("#### 1,450,000", 1450000, "hashes"),
        ("she makes 9 * 2 = $18 every day.", 18, "last_number"),
        ("It is 25%.", 25, "last_number"),
        ("The temperature fell to −5", -5, "last_number"),
        ("1/2 of 10 is 5", 5, "last_number"),
        ("half of it: 7/2", Fraction(7, 2), "last_number"),
        ("It costs .5 dollars", Fraction(1, 2), "last_number"),
        ("I have no idea.", None, "none"),
        ("<think>it is 5</think>So the answer is 6.", 6, "answer_is"),
        ("<think>it is 5, so \\boxed{5}", None, "unfinished_thinking"),
    ],
)
def test_extraction(response: str, value, source: str) -> None:
    answer = extract_gsm8k_answer(response)
    assert answer.source == source
    assert answer.value == (None if value is None else Fraction(value))


def test_cut_off_reasoning_with_prompt_opened_think() -> None:
    assert extract_gsm8k_answer("it is 5 so", prompt_opened_think=True).value is None
    assert extract_gsm8k_answer("it is 5 so</think>\\boxed{5}", prompt_opened_think=True).value == 5


@pytest.mark.parametrize(
    ("token", "value"),
    [
        ("1,080", 1080),
        ("18.00", 18),
        ("-3.5", Fraction(-7, 2)),
        ("7/2", Fraction(7, 2)),
        ("abc", None),
        ("1/0", None),
    ],
)
def test_parse_number(token: str, value) -> None:
    assert parse_number(token) == (None if value is None else Fraction(value))


def test_equal_values_in_other_spellings() -> None:
    assert score_gsm8k_response("The answer is 18.00", "18")
    assert score_gsm8k_response("\\boxed{1,000}", "1000")
    assert not score_gsm8k_response("\\boxed{1,001}", "1000")
    assert not score_gsm8k_response("", "0")


def test_gold_needs_hashes() -> None:
    with pytest.raises(ValueError):
        gsm8k_gold("no final line")


def _rows(shared_data: Path) -> list[dict]:
    return [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()]


def test_every_gsm8k_gold_answer_scores_correct(shared_data: Path) -> None:
    rows = _rows(shared_data)
    assert len(rows) == 1319
    wrong = [
        row["answer"][-60:]
        for row in rows
        if not score_gsm8k_response(row["answer"], gsm8k_gold(row["answer"]))
    ]
    assert not wrong, wrong[:10]
    # The same answers as a model would write them: boxed, and as an "answer is" sentence.
    for row in rows:
        gold = gsm8k_gold(row["answer"])
        body = row["answer"].rsplit("####", 1)[0]
        assert score_gsm8k_response(f"{body}\nSo the final answer is $\\boxed{{{gold}}}$.", gold)
        assert score_gsm8k_response(f"<think>{body}</think>The answer is {int(gold):,}.", gold)


def test_perturbed_gsm8k_answers_score_wrong(shared_data: Path) -> None:
    rng = random.Random(0)
    for row in _rows(shared_data):
        gold = gsm8k_gold(row["answer"])
        wrong = gold + rng.choice([1, -1, 10, 2])
        body = row["answer"].rsplit("####", 1)[0]
        assert not score_gsm8k_response(f"{body}\n#### {wrong}", gold)
        assert not score_gsm8k_response(f"{body}\nThe answer is \\boxed{{{wrong}}}.", gold)
