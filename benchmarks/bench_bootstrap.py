"""The leaderboard's paired bootstrap at scale: 10^5 questions x 10 rows x 2,000 resamples.

    python benchmarks/bench_bootstrap.py [--questions 100000] [--rows 10] [--resamples 2000]
        [--repeat 3] [--seed 0] [--json docs/bench-bootstrap.json]

Synthetic per-question arrays shaped as compare's (calibration/bootstrap.py, workflows/board_stats.py):
each row has a 0/1 accuracy, a TFLOPs value and a mentor-token count per question (3 series per row,
30 in all for 10 rows), correlated across rows through a per-question difficulty, as rows answering
the same questions are. Timed (best of ``--repeat``, wall seconds):

- ``resampled_means``: the counts of every resample, chunked, times every series (the core);
- ``board``: all of ``board_stats`` on the same rows as ``BoardEntry`` objects: the paired means,
  every row's intervals, the comparisons against the Tandem row and fixed-high, and the frontier
  with its AIQ interval (one hull per resample).

Also reported: the peak of the chunked counts (MiB) against one index matrix of resamples x
questions, and the machine, date and load average beside the numbers. Results go to stdout as a
Markdown table and to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tandem_lm_eval.calibration.bootstrap import CHUNK_ELEMENTS, resampled_means
from tandem_lm_eval.workflows.board_stats import board_stats
from tandem_lm_eval.workflows.leaderboard import BoardEntry, sorted_outcomes

MODES = ["intern_only", "fixed:low", "fixed:medium", "fixed:high", "route", "tandem", "oracle"]


def synthetic_rows(questions: int, rows: int, seed: int) -> list[BoardEntry]:
    """``rows`` rows on the same ``questions``: accuracy and cost grow with the row's index."""
    rng = np.random.default_rng(seed)
    difficulty = rng.random(questions)
    out = []
    for i in range(rows):
        p = 0.05 + 0.5 * i / max(rows - 1, 1)
        correct = (difficulty < p) ^ (rng.random(questions) < 0.03)
        mentor = np.minimum(rng.poisson(10 * i, questions), 96).astype(float)
        tflops = 2e-12 * (32e9 * mentor + 135e6 * 200.0)
        mode = MODES[i] if i < len(MODES) else f"fixed:{i}"
        out.append(
            BoardEntry(
                name=f"row {i} ({mode})",
                mode=mode,
                task="synthetic",
                metric="exact_match",
                questions=questions,
                accuracy=float(correct.mean()),
                mean_mentor_tokens=float(mentor.mean()),
                mean_intern_tokens=200.0,
                mean_tflops=float(tflops.mean()),
                source="replay",
                per_question=sorted_outcomes(
                    np.arange(questions), correct, tflops, mentor, np.full(questions, 200.0)
                ),
            )
        )
    return out


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    rows = synthetic_rows(args.questions, args.rows, args.seed)
    core = np.stack(
        [
            v
            for e in rows
            for k, v in e.per_question.series().items()
            if k in ("accuracy", "tflops", "mentor_tokens")
        ]
    )
    load_before = os.getloadavg()
    t_core = best_of(args.repeat, lambda: resampled_means(core, args.resamples, args.seed))
    t_board = best_of(args.repeat, lambda: board_stats(rows, args.resamples, args.seed))
    load_after = os.getloadavg()
    per_chunk = max(1, min(args.resamples, CHUNK_ELEMENTS // args.questions))
    result = {
        "benchmark": "bench_bootstrap",
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
        "numpy": np.__version__,
        "threads": {
            k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        },
        "load_average_1_5_15_before": list(load_before),
        "load_average_1_5_15_after": list(load_after),
        "questions": args.questions,
        "rows": args.rows,
        "series": int(core.shape[0]),
        "resamples": args.resamples,
        "repeat": args.repeat,
        "resampled_means_s": t_core,
        "board_stats_s": t_board,
        "resamples_per_chunk": per_chunk,
        "chunk_counts_mib": per_chunk * args.questions * 8 / 2**20,
        "one_index_matrix_mib": args.resamples * args.questions * 8 / 2**20,
        "under_10_s": t_board < 10.0,
    }
    print(
        f"| questions | rows | series | resamples | resampled_means (s) | board_stats (s) | chunk (MiB) "
        f"| one index matrix (MiB) | load (1 min) |\n|---|---|---|---|---|---|---|---|---|\n"
        f"| {args.questions} | {args.rows} | {core.shape[0]} | {args.resamples} | {t_core:.2f} | "
        f"{t_board:.2f} | {result['chunk_counts_mib']:.0f} | {result['one_index_matrix_mib']:.0f} | "
        f"{load_before[0]:.2f} -> {load_after[0]:.2f} |"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
