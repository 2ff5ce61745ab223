"""The run store's cost and what it survives.

    python benchmarks/bench_store.py                 # overhead + size on the demo pair, 5 crash runs
    python benchmarks/bench_store.py --crash-runs 10 --questions 32

1. Overhead: the demo pair (SmolLM2-135M-Instruct as mentor and intern, transformers backend, one
   thread per engine as in CI) runs every stage of N GSM8K test questions (fixed:3, budgets
   24/48/96, 64-token answers) three ways: without a store; with an empty store (everything computed
   and written); again (everything served). The time spent in the store (key hashing, encoding,
   SQLite reads and writes) is measured inside StoredBackend's calls and reported per request and as
   a ratio to the backend's own time for those requests. Size: the store file after VACUUM, per
   question.
2. Crashes: the stock ``lm_eval`` command on the tiny random model (fast) with ``store=``, killed with
   SIGKILL at a random number of stored entries (seeded), then rerun to completion; the per-sample
   answers and costs are compared with an uninterrupted run without a store.

Prints a table and writes JSON (default docs/bench-store.json). Results: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TANDEM_DATA_DIR", str(REPO.parent / "shared" / "data"))


# --- 1. overhead ------------------------------------------------------------------------------------
def overhead(questions: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from tandem_lm_eval.backends import make_backend
    from tandem_lm_eval.backends.base import Message
    from tandem_lm_eval.cascade.policies import make_policy
    from tandem_lm_eval.cascade.prompts import Question
    from tandem_lm_eval.cascade.roles import Role
    from tandem_lm_eval.cascade.stages import Cascade
    from tandem_lm_eval.data.benchmarks import load_gsm8k
    from tandem_lm_eval.harness.config import TandemConfig
    from tandem_lm_eval.scoring.prompts import math_prompt
    from tandem_lm_eval.store.keys import fingerprint
    from tandem_lm_eval.store.run_store import RunStore
    from tandem_lm_eval.store.stored_backend import StoredBackend

    rows = load_gsm8k("test")[:questions]
    qs = [Question((Message("user", math_prompt(r["question"])),), max_gen_toks=64) for r in rows]
    inner = make_backend("hf", "demo", dtype="float32", batch_size=8)
    cfg = TandemConfig.from_model_args(
        {"mentor": "demo", "intern": "demo", "mentor_backend": "hf", "intern_backend": "hf"}
    )

    def cascade(mentor, intern):
        return Cascade(
            Role(mentor, params=1.35e8),
            Role(intern, params=1.35e8),
            make_policy("fixed:3"),
            (24, 48, 96),
            progress=False,
        )

    t0 = time.perf_counter()
    plain = cascade(inner, inner).run(qs)
    plain_wall = time.perf_counter() - t0

    tmp = Path(tempfile.mkdtemp())
    store = RunStore(tmp / "store.sqlite")
    timers = {"store": 0.0, "backend": 0.0, "requests": 0}

    class Timed:
        """Wraps the inner backend to time its calls (backend time) apart from the store's."""

        def __init__(self, b):
            self.b = b

        def __getattr__(self, name):
            attr = getattr(self.b, name)
            if name not in ("generate", "score"):
                return attr

            def call(items, _f=attr):
                t = time.perf_counter()
                out = _f(items)
                timers["backend"] += time.perf_counter() - t
                return out

            return call

    def wrapped(role):
        return StoredBackend(Timed(inner), store, role, fingerprint(getattr(cfg, role), inner))

    runs = {}
    for label in ("computed", "served"):
        mentor, intern = wrapped("mentor"), wrapped("intern")
        timers.update(backend=0.0)
        calls = []
        for b in (mentor, intern):
            for name in ("generate", "score"):
                original = getattr(b, name)

                def timed(items, _f=original, _calls=calls):
                    t = time.perf_counter()
                    out = _f(items)
                    _calls.append((time.perf_counter() - t, len(items)))
                    return out

                setattr(b, name, timed)
        t0 = time.perf_counter()
        result = cascade(mentor, intern).run(qs)
        wall = time.perf_counter() - t0
        total = sum(t for t, _ in calls)
        requests = sum(n for _, n in calls)
        same = [r.answer for r in result] == [r.answer for r in plain] and [
            r.cost.tflops for r in result
        ] == [r.cost.tflops for r in plain]
        runs[label] = {
            "wall_s": wall,
            "backend_s": timers["backend"],
            "store_s": total - timers["backend"],
            "requests": requests,
            "store_ms_per_request": 1000 * (total - timers["backend"]) / max(requests, 1),
            "store_to_backend_ratio": (total - timers["backend"]) / timers["backend"]
            if timers["backend"]
            else None,
            "same_results_as_without_store": same,
        }
    store.vacuum()
    size = (tmp / "store.sqlite").stat().st_size
    return {
        "questions": questions,
        "without_store_wall_s": plain_wall,
        "runs": runs,
        "store_bytes_after_vacuum": size,
        "store_bytes_per_question": size / questions,
        "entries": store.count(),
    }


# --- 2. crashes --------------------------------------------------------------------------------------
def _lm_eval(out: Path, model_args: str) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    args = [
        str(Path(sys.executable).with_name("lm_eval")),
        "--model",
        "tandem",
        "--model_args",
        model_args,
        "--tasks",
        "tandem_test_arith",
        "--include_path",
        str(REPO / "tests" / "fixtures" / "tasks"),
        "--log_samples",
        "--output_path",
        str(out / "out"),
    ]
    log = (out / "log.txt").open("w")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=out)


def _samples(out: Path) -> dict:
    (f,) = (out / "out").rglob("samples_*.jsonl")
    keys = ("resps", "exact_match", "tandem_tflops", "tandem_mentor_tokens", "tandem_intern_tokens")
    return {r["doc_id"]: {k: r[k] for k in keys} for r in map(json.loads, f.read_text().splitlines())}


def _entries(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    except sqlite3.Error:
        return 0


def crashes(runs: int, seed: int) -> dict:
    tmp = Path(tempfile.mkdtemp())
    from tandem_lm_eval.data.demo_model import build_tiny_model

    tiny = build_tiny_model(tmp / "tiny")
    base = f"mentor={tiny},intern={tiny},budgets=[8,16],mentor_num_params=2e9,dtype=float32,mode=fixed:2,mentor_batch_size=1,intern_batch_size=1,chunk_size=2,progress=false"
    reference = _lm_eval(tmp / "reference", base)
    assert reference.wait() == 0, (tmp / "reference" / "log.txt").read_text()[-2000:]
    expected = _samples(tmp / "reference")
    rng = random.Random(seed)
    results = []
    for run in range(runs):
        store = tmp / f"store-{run}.sqlite"
        target = rng.randint(1, 20)
        proc = _lm_eval(tmp / f"crash-{run}", f"{base},store={store}")
        killed = False
        while proc.poll() is None:
            if _entries(store) >= target:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.05)
        proc.wait()
        at = _entries(store)
        rerun = _lm_eval(tmp / f"resume-{run}", f"{base},store={store}")
        ok = rerun.wait() == 0 and _samples(tmp / f"resume-{run}") == expected
        results.append(
            {"kill_at_entries": target, "killed": killed, "entries_when_killed": at, "identical": ok}
        )
    return {
        "runs": results,
        "survived": sum(r["identical"] for r in results),
        "killed": sum(r["killed"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--crash-runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "bench-store.json")
    args = parser.parse_args()
    report = {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": os.getloadavg()[0],
        },
        "overhead": overhead(args.questions),
        "crashes": crashes(args.crash_runs, args.seed),
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    o = report["overhead"]
    print(
        "| run | wall s | backend s | store s | requests | store ms/request | store / backend | same results |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(f"| without store | {o['without_store_wall_s']:.1f} | | | | | | |")
    for label, r in o["runs"].items():
        ratio = "n/a" if r["store_to_backend_ratio"] is None else f"{r['store_to_backend_ratio']:.4f}"
        print(
            f"| {label} | {r['wall_s']:.1f} | {r['backend_s']:.1f} | {r['store_s']:.3f} | {r['requests']} | "
            f"{r['store_ms_per_request']:.2f} | {ratio} | {r['same_results_as_without_store']} |"
        )
    print(
        f"store: {o['entries']} entries, {o['store_bytes_per_question'] / 1024:.1f} KiB per question after VACUUM"
    )
    c = report["crashes"]
    print(
        f"crashes: {c['killed']} of {len(c['runs'])} runs killed mid-run, {c['survived']} resumed to identical results"
    )


if __name__ == "__main__":
    main()
