"""One evaluation over several processes: the same answers, stop stages and costs as one process, and a
killed rank resumed from the run store.

    python benchmarks/bench_ranks.py                       # demo pair, 4 GSM8K test questions, 2 ranks
    python benchmarks/bench_ranks.py --limit 6 --nproc 2 --json docs/bench-ranks.json

Runs the stock ``lm_eval`` command three ways on the same questions (``--model tandem``, the demo pair
with its classifier and budgets, small answers):

1. one process;
2. ``torchrun --standalone --nproc_per_node N -m lm_eval ...`` with a run store and a trace;
3. the same launch with a fresh store, rank 1's process killed (SIGKILL) once the store holds a
   seeded number of entries, then the same launch again (it resumes from the store).

Per document it compares the logged samples (responses, filtered answers, the task's metric, every
``tandem_*`` cost metric) and the trace records (stop stage, early stop, the cost without wall times,
the mentor's output) with the one-process run, and counts trace records per document and the run
summary's requests. Prints a table and writes JSON (results: docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tandem_lm_eval.harness.reporting import COST_METRICS as COST_KEYS  # noqa: E402
from tandem_lm_eval.store.run_store import RunStore, StoreError  # noqa: E402

BIN = Path(sys.executable).parent


def lm_eval_args(task: str, limit: int, max_gen_toks: int, model_args: str, out: Path) -> list[str]:
    return [
        "--model", "tandem", "--model_args", model_args, "--tasks", task, "--limit", str(limit),
        "--gen_kwargs", f"max_gen_toks={max_gen_toks}", "--log_samples", "--output_path", str(out),
    ]  # fmt: skip


def launch(cmd: list[str], workdir: Path) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "log.txt").open("a")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    # one thread per process, as torchrun sets for its workers: on a loaded 2-core machine two spinning
    # OpenMP threads make a process many times slower (shared/notes/PLATFORM.md)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)


def entries(store: Path) -> int:
    """Entries in the store so far (a reader beside the run's writers; 0 before the file exists)."""
    try:
        with RunStore(store, create=False) as st:
            return st.count()
    except StoreError:
        return 0


def rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The PID of the worker process the launcher started as ``rank`` (read from its environment)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().split(") ")[1].split()[1]) != launcher.pid:
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


def collect(out: Path, trace: Path | None) -> dict:
    results = sorted(out.rglob("results_*.json"))
    if not results:
        raise SystemExit(f"no results under {out}")
    data = json.loads(results[-1].read_text())
    samples = {}
    for f in out.rglob("samples_*.jsonl"):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            samples[row["doc_id"]] = {
                "resps": row["resps"],
                "filtered_resps": row["filtered_resps"],
                "exact_match": row.get("exact_match"),
                # every cost metric but those in seconds: wall times differ between any two runs
                **{k: row[k] for k in COST_KEYS if not k.endswith("_s")},
            }
    per_doc: dict[int, list] = {}
    if trace is not None and trace.exists():
        for line in trace.read_text().splitlines():
            r = json.loads(line)
            cost = {k: v for k, v in r["cost"].items() if k != "times"}
            per_doc.setdefault(r["doc_id"], []).append(
                {
                    "chosen_stage": r["chosen_stage"],
                    "stopped_early": r["stopped_early"],
                    "cost": cost,
                    "mentor": r["mentor"]["text"] if r["mentor"] else None,
                    "answer": next((s["answer"] for s in r["stages"] if s["answer"] is not None), None),
                }
            )
    summary = data["config"]["tandem"]["summary"]
    return {"samples": samples, "trace": per_doc, "summary": summary, "tandem": data["config"]["tandem"]}


def same(a: dict, b: dict) -> dict:
    docs = sorted(a["samples"])
    return {
        "documents": len(docs),
        "same_documents": sorted(b["samples"]) == docs,
        "same_samples": all(a["samples"][d] == b["samples"].get(d) for d in docs),
        "same_trace": all(a["trace"].get(d) == b["trace"].get(d) for d in docs) if b["trace"] else None,
        "trace_records_per_document": sorted({len(v) for v in b["trace"].values()}) if b["trace"] else None,
        "summary_requests": b["summary"]["requests"],
        "same_summary_tokens_and_stages": all(
            a["summary"][k] == b["summary"][k] for k in ("mentor_tokens", "intern_tokens", "stage_counts")
        ),
    }


def run_parser(name: str, doc: str, *, limit: int, max_gen_toks: int) -> argparse.ArgumentParser:
    """The options every lm_eval-comparing benchmark takes (``name``: its workdir and JSON; ``doc``: its
    help text)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="tandem_gsm8k")
    ap.add_argument("--limit", type=int, default=limit)
    ap.add_argument("--max-gen-toks", type=int, default=max_gen_toks)
    # batch size 1 and chunk_size=1: every prompt alone in its forward pass, as in any process layout, so
    # equal answers show the distribution and not how padding in a batch rounds
    ap.add_argument(
        "--model-args",
        default="progress=false,mentor_batch_size=1,intern_batch_size=1,chunk_size=1",
        help="extra --model_args (demo pair by default)",
    )
    ap.add_argument("--workdir", type=Path, default=Path(f"runs/{name}"))
    ap.add_argument("--json", type=Path, default=REPO / "docs" / f"{name}.json")
    return ap


def fresh_workdir(workdir: Path) -> Path:
    work = workdir.resolve()
    if work.exists():
        import shutil

        shutil.rmtree(work)
    return work


def report_head(args: argparse.Namespace, **extra) -> dict:
    """What a report starts with: when, where, and what was run."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "task": args.task,
        "limit": args.limit,
        "max_gen_toks": args.max_gen_toks,
        **extra,
        "model_args": args.model_args,
        "runs": {},
    }


def main() -> None:
    ap = run_parser("bench-ranks", __doc__, limit=4, max_gen_toks=64)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = fresh_workdir(args.workdir)
    lm_eval, torchrun = str(BIN / "lm_eval"), str(BIN / "torchrun")
    dist = [torchrun, "--standalone", "--nproc_per_node", str(args.nproc), "-m", "lm_eval"]
    report = report_head(args, nproc=args.nproc)

    def run(name: str, cmd_head: list[str], extra: str, *, kill_at: int | None = None) -> dict:
        d = work / name
        trace, store = d / "trace.jsonl", d / "store.sqlite"
        ma = f"{args.model_args},trace_path={trace}" + (f",store={store}" if "store" in extra else "")
        cmd = cmd_head + lm_eval_args(args.task, args.limit, args.max_gen_toks, ma, d / "out")
        t0 = time.perf_counter()
        killed = None
        if kill_at is not None:
            proc = launch(cmd, d)
            while proc.poll() is None and entries(store) < kill_at:
                time.sleep(0.05)
            pid = rank_pid(proc, 1)
            if proc.poll() is None and pid is not None:
                killed = {"entries_at_kill": entries(store), "rank": 1}
                os.kill(pid, signal.SIGKILL)
            killed_rc = proc.wait(900)
            if killed:
                killed["launcher_exit_code"] = killed_rc
                trace.unlink(missing_ok=True)  # the records of the killed run: the rerun writes them all
        proc = launch(cmd, d)
        rc = proc.wait(1800)
        wall = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"{name}: exit {rc}; log: {d / 'log.txt'}")
        got = collect(d / "out", trace)
        got["wall_s"] = round(wall, 1)
        got["killed"] = killed
        return got

    single = run("one_process", [lm_eval], "")
    ranks = run("ranks", dist, "store")
    rng = random.Random(args.seed)
    # a kill while the first stages are being stored: expected entries per question are ~5 to 8
    kill_at = rng.randint(2, max(3, 3 * args.limit))
    resumed = run("ranks_killed_then_resumed", dist, "store", kill_at=kill_at)
    rows = []
    for name, got in (("ranks", ranks), ("ranks_killed_then_resumed", resumed)):
        cmp = same(single, got)
        report["runs"][name] = {
            **cmp,
            "wall_s": got["wall_s"],
            "killed": got["killed"],
            "store": {k: v for k, v in got["tandem"]["store"].items() if k != "path"},  # no machine paths
        }
        rows.append((name, cmp, got))
    report["runs"]["one_process"] = {"wall_s": single["wall_s"], "summary": single["summary"]}
    print(f"{'run':28} {'docs':>4} {'samples':>8} {'trace':>6} {'rec/doc':>8} {'requests':>8} {'wall s':>7}")
    print(f"{'one process':28} {len(single['samples']):>4} {'-':>8} {'-':>6} {'-':>8} "
          f"{single['summary']['requests']:>8} {single['wall_s']:>7}")  # fmt: skip
    for name, cmp, got in rows:
        print(
            f"{name:28} {cmp['documents']:>4} {str(cmp['same_samples']):>8} {str(cmp['same_trace']):>6} "
            f"{str(cmp['trace_records_per_document']):>8} {cmp['summary_requests']:>8} {got['wall_s']:>7}"
        )
    if resumed["killed"]:
        print(f"killed rank 1 at {resumed['killed']['entries_at_kill']} stored entries; resumed: "
              f"{resumed['tandem']['store']['counts']}")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
