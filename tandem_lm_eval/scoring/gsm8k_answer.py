"""GSM8K answers: a number, found in a free-form response and compared exactly.

Where the answer is looked for, in order: the last ``\\boxed{}``; the last "answer is ..." /
"Answer: ..." phrase; the last ``#### ...`` line (the dataset's own format); and else the last
number of the text. Numbers may carry thousands separators (``1,080``), currency (``$18``,
``\\$18``), units (``18 dollars``), percent signs and a trailing period; values are compared as exact
rationals, so ``18.00`` = ``18`` and ``7/2`` = ``3.5``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from tandem_lm_eval.common.thinking import split_thinking
from tandem_lm_eval.scoring.boxed import last_boxed

# A number: sign, digits with optional thousands separators, optional decimals; or a bare ".5".
# A trailing "." (end of sentence) is not part of it because a decimal point needs digits after it.
_NUMBER = re.compile(r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)|(?<![\w.])[-−]?\.\d+")
_FRACTION = re.compile(r"\\[dt]?frac\s*\{\s*([-−]?[\d.,]+)\s*\}\s*\{\s*([\d.,]+)\s*\}")
_SLASH = re.compile(r"(?<![\w.])([-−]?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)(?![\w.])")
_ANSWER_IS = re.compile(r"answer\s*(?:is\s*:?|[:=])\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(.+)")


def parse_number(token: str) -> Fraction | None:
    """An exact value for one number token ("1,080", "-3.50", "7/2"); None when it is not one."""
    token = token.strip().replace("−", "-").replace(",", "")
    try:
        if "/" in token:
            num, den = token.split("/", 1)
            return Fraction(num.strip()) / Fraction(den.strip())
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def _numbers(text: str) -> list[Fraction]:
    """Every number in ``text`` in order; LaTeX and a/b fractions count as one number."""
    found: list[tuple[int, Fraction]] = []
    taken: list[tuple[int, int]] = []
    for pattern in (_FRACTION, _SLASH):
        for m in pattern.finditer(text):
            value = parse_number(f"{m.group(1)}/{m.group(2)}")
            if value is not None:
                found.append((m.start(), value))
                taken.append(m.span())
    for m in _NUMBER.finditer(text):
        if any(a <= m.start() < b for a, b in taken):
            continue
        value = parse_number(m.group(0))
        if value is not None:
            found.append((m.start(), value))
    return [value for _, value in sorted(found, key=lambda item: item[0])]


def _first_number(text: str) -> Fraction | None:
    values = _numbers(text)
    return values[0] if values else None


@dataclass(frozen=True)
class Gsm8kAnswer:
    value: Fraction | None
    # "boxed", "answer_is", "hashes", "last_number", "none" or "unfinished_thinking".
    source: str


def extract_gsm8k_answer(response: str, *, prompt_opened_think: bool = False) -> Gsm8kAnswer:
    """The number a response gives as its final answer."""
    split = split_thinking(response, prompt_opened_think=prompt_opened_think)
    if not split.completed:
        return Gsm8kAnswer(None, "unfinished_thinking")
    text = split.answer
    boxed = last_boxed(text)
    if boxed is not None:
        # "\boxed{x = 18}" or "\boxed{\$1,080}": the first number inside the box.
        value = _first_number(boxed)
        if value is not None:
            return Gsm8kAnswer(value, "boxed")
    for source, pattern in (("answer_is", _ANSWER_IS), ("hashes", _HASHES)):
        matches = list(pattern.finditer(text))
        if matches:
            # The phrase's own sentence: "The answer is 18. Since 2 ..." must give 18, not 2.
            sentence = re.split(r"\.(?:\s|$)|\n", matches[-1].group(1))[0]
            value = _first_number(sentence)
            if value is not None:
                return Gsm8kAnswer(value, source)
    values = _numbers(text)
    if values:
        return Gsm8kAnswer(values[-1], "last_number")
    return Gsm8kAnswer(None, "none")


def gsm8k_gold(answer_field: str) -> Fraction:
    """The gold number of a GSM8K ``answer`` field (the text after ``####``)."""
    _, sep, tail = answer_field.rpartition("####")
    value = parse_number(tail) if sep else None
    if value is None:
        raise ValueError(f"no '#### <number>' in GSM8K answer: {answer_field[-80:]!r}")
    return value


def score_gsm8k_response(response: str, gold: Fraction | str, *, prompt_opened_think: bool = False) -> bool:
    """Is the response's final number equal to the gold one (a value or its string form)?"""
    target = gold if isinstance(gold, Fraction) else parse_number(str(gold))
    answer = extract_gsm8k_answer(response, prompt_opened_think=prompt_opened_think)
    return answer.value is not None and answer.value == target
