"""Scoring throughput: all 5,000 MATH gold solutions and all 164 HumanEval canonical solutions.

    python benchmarks/bench_scoring.py [--data DIR] [--workers N] [--json OUT]

MATH is scored twice: with one helper process, one answer at a time (what ``process_results`` does
inside an lm-eval run) and with ``--workers`` processes in parallel. HumanEval runs every program in
the sandbox, ``--workers`` at a time (what the task's filter does). Times include starting the helper
processes. Results go to stdout (and to ``--json``); docs/bench-scoring.md records them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tandem_lm_eval.data.benchmarks import load_humaneval, load_math
from tandem_lm_eval.scoring.code_answer import build_test_program, extract_program
from tandem_lm_eval.scoring.code_exec import run_programs
from tandem_lm_eval.scoring.math_answer import MathJudge, extract_math_answer


@dataclass
class Timing:
    what: str
    items: int
    correct: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.items / self.seconds


def bench_math(workers: int, data_dir: str | None) -> Timing:
    rows = load_math("test", data_dir=data_dir)
    pairs = [(extract_math_answer(row["solution"]).text, row["answer"]) for row in rows]
    start = time.perf_counter()
    judge = MathJudge(workers=workers)
    try:
        verdicts = judge.judge_many(pairs)
    finally:
        judge.close()
    seconds = time.perf_counter() - start
    return Timing(f"MATH gold, {workers} worker(s)", len(pairs), sum(v.equal for v in verdicts), seconds)


def bench_humaneval(workers: int, data_dir: str | None) -> Timing:
    rows = load_humaneval(data_dir=data_dir)
    programs = []
    for row in rows:
        program = extract_program(row["canonical_solution"], row["prompt"], row["entry_point"]).program
        assert program is not None
        programs.append(build_test_program(program, row["test"], row["entry_point"]))
    start = time.perf_counter()
    results = run_programs(programs, workers=workers)
    seconds = time.perf_counter() - start
    return Timing(
        f"HumanEval canonical, {workers} worker(s)", len(programs), sum(r.passed for r in results), seconds
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=None, help="local data folder (default: $TANDEM_DATA_DIR, else the hub)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    timings = [
        bench_math(1, args.data),
        bench_math(args.workers, args.data),
        bench_humaneval(args.workers, args.data),
    ]
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(machine))
    for t in timings:
        print(
            f"{t.what:36s} {t.items:5d} items  {t.correct:5d} correct  {t.seconds:7.1f} s  {t.per_second:7.1f}/s"
        )
    if args.json:
        payload = {
            "machine": machine,
            "timings": [{**asdict(t), "per_second": t.per_second} for t in timings],
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
