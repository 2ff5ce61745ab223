"""Threshold search on a synthetic stage table: the whole grid, each objective, the Pareto front.

    python benchmarks/bench_thresholds.py [--questions 5000] [--stages 4 [5 ...]] [--repeat 5]
        [--seed 0] [--json docs/bench-thresholds.json]

The table imitates a collected one (``Cascade.explore``): each question has a difficulty, the
intern's chance of answering correctly grows with the mentor's stages, the classifier's score is a
noisy, roughly calibrated estimate of that chance, the mentor writes cumulative budgets of
100, 500, 1000, 2000, ... tokens (and sometimes finishes early), a few late stages do not fit the
intern's context (NaN score), and Eq. 12 uses a 32B mentor and a 7B intern.

Timed (best of ``--repeat``): ``threshold_grid`` over the paper's 19-point grid at every stage,
``choose_thresholds`` for each objective (each call builds its own grid), and ``pareto_front``.
Then 100 random grid cells are replayed one by one with ``replay``, and the largest difference
from the grid is reported (accuracy, mean TFLOPs relative, mean mentor tokens). Results go to
stdout as a markdown table and to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tandem_lm_eval.calibration.front import pareto_front
from tandem_lm_eval.calibration.objectives import Objective, choose_thresholds
from tandem_lm_eval.calibration.replay import StageTable, fixed_stage, oracle, replay
from tandem_lm_eval.calibration.threshold_grid import THRESHOLD_GRID, threshold_grid

OBJECTIVES = {
    "max_accuracy": Objective("max_accuracy"),
    "max_accuracy (cost <= 50% of fixed:last)": Objective("max_accuracy", max_cost_fraction=0.5),
    "min_cost (accuracy >= 95% of fixed:last)": Objective("min_cost", min_accuracy_fraction=0.95),
    "per_stage": Objective("per_stage"),
}


def synthetic_table(questions: int, stages: int, seed: int) -> StageTable:
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.5, questions)
    # logit of P(correct) rises with the stage, with diminishing returns
    gain = np.concatenate(([0.0], np.cumsum(1.2 * 0.6 ** np.arange(stages - 1))))
    logit = gain[None, :] - difficulty[:, None] + rng.normal(0, 0.5, (questions, stages))
    p = 1 / (1 + np.exp(-logit))
    correct = rng.random((questions, stages)) < p
    # the classifier sees p through noise: useful but imperfect
    scores = 1 / (1 + np.exp(-(logit + rng.normal(0, 1.0, (questions, stages)))))
    budgets = np.array([0, 100, 500, 1000] + [1000 * 2**i for i in range(1, max(0, stages - 4) + 1)])[:stages]
    # the mentor sometimes ends its insights before the budget: I_t = I_{t-1} from then on
    finish = rng.lognormal(np.log(700), 0.8, questions)
    mentor = np.minimum(budgets[None, :], np.round(finish)[:, None])
    mentor[:, 0] = 0
    # a long question leaves no room for the longest insights (the prompt does not fit)
    unusable = (rng.random(questions) < 0.02)[:, None] & (np.arange(stages) >= max(1, stages - 1))[None, :]
    scores[unusable] = np.nan
    intern = np.round(rng.lognormal(np.log(350), 0.5, (questions, stages)) * 0.9 ** np.arange(stages))
    return StageTable(scores, correct, mentor, intern, mentor_params=32e9, intern_params=7e9)


def best_of(repeat: int, fn):
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def run(questions: int, stages: int, repeat: int, seed: int) -> dict:
    table = synthetic_table(questions, stages, seed)
    seconds, grid = best_of(repeat, lambda: threshold_grid(table))
    timings = {"threshold_grid": seconds}
    choices = {}
    for name, objective in OBJECTIVES.items():
        seconds, choice = best_of(repeat, lambda o=objective: choose_thresholds(table, o))
        timings[f"choose_thresholds: {name}"] = seconds
        choices[name] = choice
    seconds, front = best_of(repeat, lambda: pareto_front(grid))
    timings["pareto_front"] = seconds

    rng = np.random.default_rng(seed + 1)
    diff = {"accuracy": 0.0, "mean_tflops_relative": 0.0, "mean_mentor_tokens": 0.0}
    start = time.perf_counter()
    for _ in range(100):
        index = tuple(int(i) for i in rng.integers(0, len(THRESHOLD_GRID), stages))
        r = replay(table, grid.thresholds_at(index))
        diff["accuracy"] = max(diff["accuracy"], abs(r.accuracy - grid.accuracy[index]))
        diff["mean_tflops_relative"] = max(
            diff["mean_tflops_relative"], abs(r.mean_tflops - grid.mean_tflops[index]) / r.mean_tflops
        )
        diff["mean_mentor_tokens"] = max(
            diff["mean_mentor_tokens"], abs(r.mean_mentor_tokens - grid.mean_mentor_tokens[index])
        )
    replay_seconds = (time.perf_counter() - start) / 100
    return {
        "questions": questions,
        "stages": stages,
        "grid_points": len(THRESHOLD_GRID),
        "grid_cells": grid.size,
        "seconds": timings,
        "replay_seconds_per_cell": replay_seconds,
        "max_difference_vs_replay": diff,
        "pareto_points": len(front),
        "baselines": {
            **{f"fixed:{t}": fixed_stage(table, t).summary() for t in range(stages)},
            "oracle": oracle(table).summary(),
        },
        "choices": {name: c.to_dict() for name, c in choices.items()},
    }


def markdown(runs: list[dict]) -> str:
    lines = [
        "| questions | stages | grid cells | threshold_grid (s) | choose max_acc / capped / min_cost / "
        "per_stage (s) | pareto_front (s) | replay one cell (s) | max diff acc / TFLOPs rel / mentor tok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s = r["seconds"]
        chooses = " / ".join(f"{v:.4f}" for k, v in s.items() if k.startswith("choose"))
        d = r["max_difference_vs_replay"]
        lines.append(
            f"| {r['questions']:,} | {r['stages']} | {r['grid_cells']:,} | {s['threshold_grid']:.4f} | "
            f"{chooses} | {s['pareto_front']:.4f} | {r['replay_seconds_per_cell']:.5f} | "
            f"{d['accuracy']:.1e} / {d['mean_tflops_relative']:.1e} / {d['mean_mentor_tokens']:.1e} |"
        )
    lines += [
        "",
        "| stages | objective | thresholds | accuracy | mean TFLOPs | feasible |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        for name, c in r["choices"].items():
            lines.append(
                f"| {r['stages']} | {name} | {', '.join(f'{t:.2f}' for t in c['thresholds'])} | "
                f"{c['summary']['accuracy']:.4f} | {c['summary']['mean_tflops']:.3f} | {c['feasible']} |"
            )
        for name, b in r["baselines"].items():
            lines.append(
                f"| {r['stages']} | baseline {name} | - | {b['accuracy']:.4f} | {b['mean_tflops']:.3f} | - |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=5000)
    parser.add_argument("--stages", type=int, nargs="+", default=[4], help="one run per value")
    parser.add_argument("--repeat", type=int, default=5, help="timings are the best of this many calls")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("docs/bench-thresholds.json"))
    args = parser.parse_args()
    runs = [run(args.questions, stages, max(1, args.repeat), args.seed) for stages in args.stages]
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    print(json.dumps(machine))
    print(markdown(runs))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"command": " ".join(["python", *sys.argv]), "machine": machine, "runs": runs}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
