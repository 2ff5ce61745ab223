"""``data_parallel_size=N`` against one process: the same answers, stop stages and costs per document, and
the wall time of each.

    python benchmarks/bench_replicas.py                    # demo pair, 8 GSM8K test questions, N=1 vs N=2
    python benchmarks/bench_replicas.py --limit 8 --replicas 2 --json docs/bench-replicas.json

Runs the stock ``lm_eval`` command twice on the same questions (``--model tandem``, the demo pair with its
classifier and budgets, small answers, a run store and a trace each): once in one process
(``data_parallel_size=1``), once with N replicas (``data_parallel_size=N``). Per document it compares
the logged samples (responses, filtered answers, the task's metric, every ``tandem_*`` cost metric) and
the trace records (stop stage, early stop, the cost without wall times, the mentor's output, the answer),
counts trace records per document and the run summary's requests, and records each run's wall time and
the machine's load average around it (the machine is shared: read the times with the load). Prints a
table and writes JSON (results: docs/scale-out.md).
"""

from __future__ import annotations

import json
import os
import sys
import time

from bench_ranks import BIN, collect, fresh_workdir, launch, lm_eval_args, report_head, run_parser, same


def main() -> None:
    ap = run_parser("bench-replicas", __doc__, limit=8, max_gen_toks=32)
    ap.add_argument("--replicas", type=int, default=2)
    args = ap.parse_args()
    work = fresh_workdir(args.workdir)
    report = report_head(args, replicas=args.replicas)

    def run(name: str, replicas: int) -> dict:
        d = work / name
        trace, store = d / "trace.jsonl", d / "store.sqlite"
        model_args = f"{args.model_args},data_parallel_size={replicas},trace_path={trace},store={store}"
        cmd = [
            str(BIN / "lm_eval"),
            *lm_eval_args(args.task, args.limit, args.max_gen_toks, model_args, d / "out"),
        ]
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        rc = launch(cmd, d).wait(3600)
        wall = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"{name}: exit {rc}; log: {d / 'log.txt'}")
        got = collect(d / "out", trace)
        got["wall_s"] = round(wall, 1)
        got["load_1min"] = [round(load_before[0], 1), round(os.getloadavg()[0], 1)]  # before, after
        return got

    single = run("one_process", 1)
    many = run(f"replicas_{args.replicas}", args.replicas)
    cmp = same(single, many)
    info = many["tandem"]
    report["runs"]["one_process"] = {
        "wall_s": single["wall_s"],
        "load_1min_before_after": single["load_1min"],
        "summary": single["summary"],
    }
    report["runs"][f"replicas_{args.replicas}"] = {
        **cmp,
        "wall_s": many["wall_s"],
        "load_1min_before_after": many["load_1min"],
        "replicas": info["replicas"],
        "store": {k: v for k, v in info["store"].items() if k != "path"},  # no machine paths
    }
    print(
        f"{'run':16} {'docs':>4} {'samples':>8} {'trace':>6} {'rec/doc':>8} {'requests':>8} {'wall s':>7} load"
    )
    print(
        f"{'one process':16} {len(single['samples']):>4} {'-':>8} {'-':>6} {'-':>8} "
        f"{single['summary']['requests']:>8} {single['wall_s']:>7} {single['load_1min']}"
    )
    print(
        f"{f'{args.replicas} replicas':16} {cmp['documents']:>4} {str(cmp['same_samples']):>8} "
        f"{str(cmp['same_trace']):>6} {str(cmp['trace_records_per_document']):>8} "
        f"{cmp['summary_requests']:>8} {many['wall_s']:>7} {many['load_1min']}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
