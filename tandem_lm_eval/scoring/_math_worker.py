"""Child process that compares math answers with math-verify (started by ``math_answer.MathJudge``).

Protocol: one JSON object per line on stdin, ``{"id": n, "pred": "...", "gold": "..."}``; one reply per
line on stdout, ``{"id": n, "equal": bool, "error": str | null}``. The first line written is
``{"ready": true}``, once the heavy imports are done.

It runs in its own process because sympy can hang inside C code (``9^{9^{9}}`` computes a huge
integer) where no signal-based timeout can interrupt it: the parent kills and restarts this process
instead. This file is run by path and imports only the standard library and math-verify, so it does
not depend on how the package is installed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import sys
from functools import lru_cache

# A runaway sympy computation must fail here rather than push the host into swap.
_MEMORY_LIMIT = int(os.environ.get("TANDEM_MATH_WORKER_MEMORY", str(4 << 30)))

# MATH convention (Hendrycks et al. reference normalisation): a percent sign is dropped, so "10\%"
# and "10" are the same answer (and "0.1" is not).
_PERCENT = re.compile(r"\\?%")
# "\text{ cm}" style units are removed by math-verify; "\mbox" is the same thing in older LaTeX.
_MBOX = re.compile(r"\\mbox\s*\{")


def normalize_for_parse(answer: str) -> str:
    """Answer text adjusted for the MATH conventions that math-verify does not apply itself."""
    text = _PERCENT.sub("", answer)
    text = _MBOX.sub(r"\\text{", text)
    text = text.strip().rstrip(".").strip()
    return text


def _soft_timeout(total: float) -> int:
    # math-verify's own signal alarms take whole seconds; they stop slow pure-Python sympy work
    # without a restart. Three calls (two parses, one verify) share the parent's hard budget.
    return max(1, int(total // 3))


@lru_cache(maxsize=4096)
def _parse(answer: str, soft: int):
    from math_verify import parse

    # Wrapped in \boxed{} so math-verify applies its answer normalisation (units, \text, degrees).
    return parse("\\boxed{" + normalize_for_parse(answer) + "}", parsing_timeout=soft)


def _plain(answer: str) -> str:
    """Whitespace- and wrapper-free string form, for answers that do not parse (names, words)."""
    text = normalize_for_parse(answer)
    text = re.sub(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}", r"\1", text)
    text = text.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    return re.sub(r"\s+", "", text)


def compare(pred: str, gold: str, timeout_s: float) -> bool:
    from math_verify import verify

    soft = _soft_timeout(timeout_s)
    gold_parsed = _parse(gold, soft)
    pred_parsed = _parse(pred, soft)
    if gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=soft):
        return True
    # Text answers ("\text{Tuesday}", "(C)") may not become sympy objects: compare them as strings.
    return bool(_plain(pred)) and _plain(pred) == _plain(gold)


def main() -> None:
    try:
        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))
    except (ValueError, OSError):
        pass
    # math-verify logs every timeout and a one-off warning; stdout is our protocol channel.
    logging.disable(logging.WARNING)
    timeout_s = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    # Imports and first-use set-up (LaTeX grammar, sympy caches) take about a second: do them before
    # saying ready, so that the parent's per-comparison timeout measures comparisons only.
    for pred, gold in (
        ("\\frac{1}{2}", "0.5"),
        ("1024", "2^{10}"),
        ("(x+1)^2", "x^2+2x+1"),
        ("[1,2)", "[1, 2)"),
    ):
        compare(pred, gold, timeout_s)
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            equal, error = compare(request["pred"], request["gold"], timeout_s), None
        except MemoryError:
            equal, error = False, "memory limit"
        except Exception as exc:  # a crash in sympy is a failed comparison, not a failed run
            equal, error = False, f"{type(exc).__name__}: {exc}"[:500]
        out.write(json.dumps({"id": request["id"], "equal": equal, "error": error}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
