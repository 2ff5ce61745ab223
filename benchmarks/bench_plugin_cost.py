"""The plugin's own cost per question, at up to 10^5 questions, with the engines replaced by instant fakes.

    python benchmarks/bench_plugin_cost.py --sweep                       # 1e3, 1e4, 1e5; no store / store
    python benchmarks/bench_plugin_cost.py --sweep --sizes 1000 --json runs/plugin-cost.json
    torchrun --standalone --nproc_per_node 2 benchmarks/bench_plugin_cost.py --questions 100000

What it runs: ``TandemLM.generate_until`` (``--model tandem`` as lm-eval calls it) on N GSM8K-sized
questions, mode ``tandem`` with the shipped demo classifier (real MLP, real features, real stop rule) and
the paper's budgets 100/500/1000 and thresholds 1.0 that no score exceeds (every question goes through
every stage and the argmax fallback picks one: the most work per question), the mentor and the intern being *instant* fakes: a "token" is 4
characters, the mentor writes between 60 and 1,500 tokens per question (so some stop before a budget),
the intern's scores are slices of one random array, its answers 200 tokens. So every second measured is
the plugin's: prompts, token counting calls, features, the classifier, the policy, the cost ledger, the
responses lm-eval keeps, and with ``--store`` the run store (keys, encoding, SQLite).

Each measurement runs in a fresh process; memory is the resident set (RSS) after the call minus before it,
with the responses still held (what the run keeps per question), and the peak RSS during the call. Under
a launcher each rank takes every world_size-th question, as lm-eval's evaluator gives them, and the run
summary and store counts are gathered as in a real run.

Before/after: run the same script with ``PYTHONPATH`` pointing at another checkout of the package.
Prints a table and writes JSON (results: docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

CHARS_PER_TOKEN = 4
ANSWER_TOKENS = 200
QUESTION = (
    "Natalia sold clips to {n} of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Each clip costs {c} cents and she "
    "gives a discount of {d} percent to friends who buy more than ten clips at once."
)


def _rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class InstantBackend:
    """A Backend that answers at once: see the module docstring. Imported by name through the backend
    registry, so TandemLM builds it like any engine."""

    name = "instant"
    entropy_method = "exact"
    _noise = np.random.default_rng(0).normal(-1.5, 1.0, 1 << 16).astype(np.float32)

    def __init__(self, model: str, **_options) -> None:
        self._model = model

    model_name = property(lambda self: self._model)
    num_parameters = property(lambda self: 7_000_000_000 if "intern" in self._model else 32_000_000_000)
    max_context = property(lambda self: 32768)

    @staticmethod
    def _tokens(text: str) -> int:
        return max(1, len(text) // CHARS_PER_TOKEN)

    def count_tokens(self, prompt) -> int:
        return sum(self._tokens(m.content) + 4 for m in prompt.messages) + 2

    def generate(self, requests: Sequence) -> list:
        from tandem_lm_eval.backends.base import Generation

        out = []
        for req in requests:
            before = req.prefix.token_ids if req.prefix else ()
            if req.insights:  # the mentor: a question-dependent total length
                text0 = req.prompt.messages[-1].content
                total = 60 + int(hashlib.blake2b(text0.encode(), digest_size=4).hexdigest(), 16) % 1440
            else:
                total = len(before) + ANSWER_TOKENS
            n_new = max(0, min(req.max_new_tokens, total - len(before)))
            start = len(before)
            ids = before + tuple(1000 + (start + k) * 7919 % 48000 for k in range(n_new))
            text = (req.prefix.text if req.prefix else "") + "tok " * n_new
            finish = "stop" if len(ids) >= total else "length"
            out.append(Generation(text, ids, n_new, finish, prompt_tokens=self.count_tokens(req.prompt)))
        return out

    def score(self, prompts: Sequence) -> list:
        from tandem_lm_eval.backends.base import PromptScores

        out = []
        for p in prompts:
            n = self.count_tokens(p)
            # token spans of the segments: message offsets in tokens, then characters / 4
            offsets, at = [], 1
            for m in p.messages:
                offsets.append(at + 3)
                at += self._tokens(m.content) + 4
            spans: dict[str, list] = {}
            for seg in p.segments:
                a = offsets[seg.message] + seg.start // CHARS_PER_TOKEN
                b = offsets[seg.message] + max(seg.end // CHARS_PER_TOKEN, seg.start // CHARS_PER_TOKEN)
                spans.setdefault(seg.name, []).append((a, min(b, n)))
            lp = self._noise[: n - 1]
            out.append(
                PromptScores(lp, -lp, n, spans={k: tuple(v) for k, v in spans.items()} if spans else None)
            )
        return out

    def loglikelihood(self, pairs):
        return [(-1.0, True) for _ in pairs]

    def close(self) -> None:
        pass


class FakeRequest:
    def __init__(self, i: int) -> None:
        q = QUESTION.format(n=40 + i, c=5 + i % 50, d=i % 30)
        self.args = (f"Solve the problem and put the final answer in \\boxed{{}}.\n\n{q} (#{i})", {
            "until": ["Question:"], "max_gen_toks": ANSWER_TOKENS, "do_sample": False,
        })  # fmt: skip
        self.task_name, self.doc_id, self.idx, self.repeats = "bench", i, 0, 1
        self.doc = {"question": q, "i": i}


def measure(n: int, store: Path | None, chunk_size: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tandem_lm_eval.backends import BACKENDS

    BACKENDS["instant"] = "bench_plugin_cost:InstantBackend"
    from tandem_lm_eval.harness.lm import TandemLM

    model_args = {
        "mentor": "instant-mentor", "intern": "instant-intern", "mentor_backend": "instant",
        "intern_backend": "instant", "classifier": "smollm2-135m-gsm8k", "classifier_strict": "false",
        "budgets": "100/500/1000", "thresholds": "1/1/1/1", "progress": "false",
        "chunk_size": str(chunk_size), "max_gen_toks": str(ANSWER_TOKENS),
    }  # fmt: skip
    if store is not None:
        model_args["store"] = str(store)
    lm = TandemLM(**model_args)
    requests = [FakeRequest(i) for i in range(n)][lm.rank :: lm.world_size]
    gc.collect()
    rss0 = _rss_kb()
    t0 = time.perf_counter()
    responses = lm.generate_until(requests)
    wall = time.perf_counter() - t0
    gc.collect()
    rss1 = _rss_kb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    info = lm.get_model_info()["tandem"]
    mine = len(requests)
    row = {
        "questions": n,
        "world_size": lm.world_size,
        "rank": lm.rank,
        "questions_this_rank": mine,
        "store": store is not None,
        "chunk_size": chunk_size,
        "wall_s": wall,
        "ms_per_question": 1000 * wall / mine,
        "kept_kb_per_question": (rss1 - rss0) / mine,
        "peak_rss_mb": peak / 1024,
        "peak_over_start_kb_per_question": (peak - rss0) / mine,
        "answers": len(responses),
        "summary_requests": (info.get("summary") or {}).get("requests"),
        "stop_stages": (info.get("summary") or {}).get("stage_counts"),
        "mentor_tokens_per_question": ((info.get("summary") or {}).get("mentor_tokens") or 0) / n,
    }
    if store is not None and lm.rank == 0:
        lm.store.close()
        import sqlite3

        conn = sqlite3.connect(store)
        values, rows = conn.execute("SELECT coalesce(sum(size), 0), count(*) FROM entries").fetchone()
        conn.close()
        size = sum(p.stat().st_size for p in store.parent.glob(store.name + "*"))
        row.update(
            entries=rows,
            store_file_bytes=size,
            store_value_bytes=values,
            store_bytes_per_question=size / n,
            store_file_over_values=size / values if values else None,
        )
    return row


def sweep(sizes: list[int], chunk_size: int, json_path: Path, args_label: str) -> None:
    rows = []
    for n in sizes:
        for with_store in (False, True):
            cmd = [sys.executable, __file__, "--questions", str(n), "--chunk-size", str(chunk_size)]
            with tempfile.TemporaryDirectory() as tmp:
                if with_store:
                    cmd += ["--store", str(Path(tmp) / "store.sqlite")]
                out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if out.returncode:
                raise SystemExit(out.stderr[-3000:])
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"n={n:>7} store={str(with_store):5} {row['ms_per_question']:7.3f} ms/q  "
                f"kept {row['kept_kb_per_question']:7.2f} KB/q  peak {row['peak_rss_mb']:7.1f} MB"
                + (
                    f"  store {row['store_bytes_per_question'] / 1024:6.2f} KiB/q "
                    f"(file/values {row['store_file_over_values']:.2f})"
                    if with_store
                    else ""
                ),
                flush=True,
            )
    for n in sizes:
        a = next(r for r in rows if r["questions"] == n and not r["store"])
        b = next(r for r in rows if r["questions"] == n and r["store"])
        b["store_ms_per_question"] = b["ms_per_question"] - a["ms_per_question"]
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": os.getloadavg(),
        "checkout": args_label,
        "rows": rows,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {json_path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", "--n", type=int, default=1000, help="questions (all ranks together)")
    ap.add_argument("--store", type=Path, default=None, help="a run store file (fresh) to write")
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--sweep", action="store_true", help="every size, without and with a store")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "bench-plugin-cost.json")
    ap.add_argument("--label", default="", help="which checkout of the package ran (recorded in the JSON)")
    args = ap.parse_args()
    if args.sweep:
        sweep(args.sizes, args.chunk_size, args.json, args.label)
        return
    import logging

    logging.disable(logging.WARNING)
    print(json.dumps(measure(args.questions, args.store, args.chunk_size)))


if __name__ == "__main__":
    main()
