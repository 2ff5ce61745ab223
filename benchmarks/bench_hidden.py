"""What a hidden-state judge costs: its scoring pass on each backend path, and its records' size.

    python benchmarks/bench_hidden.py --records runs/judges/train.jsonl.gz --prompts 24 --out docs/bench-hidden

The intern prompts x_t of the first questions of a collect (question + recorded insights, every usable
distinct stage) are scored by the demo intern (SmolLM2-135M-Instruct, fp32, CPU) through:

- ``hf``: statistics only, then statistics + the last-layer vector from the same pass;
- ``vllm`` with exact entropies through transformers (``intern_exact_entropy=transformers``, what the
  demo classifier uses): statistics only, then + vectors (``hidden_states=transformers``: the same pass);
- ``vllm`` with top-k entropies: + vectors from the transformers side pass, or from vLLM's pooling
  runner (``hidden_states=pooling``);
- hidden vectors only (what ``complete-hidden`` asks): hf, and vLLM's pooling runner.

Each path is timed twice after a warm-up call, best of two (the machine is shared). The size of the
hidden side file next to the records gives bytes per question, extrapolated to 5,000 questions x
4 stages x 3,584 units (a 7B intern). Writes ``<out>.json`` and ``<out>.md``.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tandem_lm_eval.backends.base import HiddenRequest, Message  # noqa: E402
from tandem_lm_eval.cascade.prompts import Question, intern_prompt  # noqa: E402
from tandem_lm_eval.data.hidden_file import HiddenFile, hidden_path_for  # noqa: E402
from tandem_lm_eval.data.records import load_records  # noqa: E402


def prompts_of(records, n: int):
    out = []
    for r in records:
        q = Question(messages=(Message("user", r.question),))
        seen = set()
        for s in r.stages:
            if s.usable and s.insights not in seen:
                seen.add(s.insights)
                out.append(intern_prompt(q, s.insights, None))
        if len(out) >= n:
            return out[:n]
    return out


def timed(fn, repeats: int = 2) -> float:
    fn()  # warm-up (lazy loads: the transformers copy, the pooling engine)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("docs/bench-hidden"))
    args = parser.parse_args()
    import torch

    from tandem_lm_eval.backends.hf import HFBackend
    from tandem_lm_eval.backends.vllm import VLLMBackend
    from tandem_lm_eval.data.demo_model import demo_model_dir

    records = load_records([args.records])
    prompts = prompts_of(records, args.prompts)
    model = str(demo_model_dir())
    last = HiddenRequest((30,))
    only = HiddenRequest((30,), statistics=False)
    rows: dict[str, float] = {}
    hf = HFBackend(model, dtype="float32")
    rows["hf: statistics"] = timed(lambda: hf.score(prompts))
    rows["hf: statistics + hidden (same pass)"] = timed(lambda: hf.score(prompts, last))
    rows["hf: hidden only"] = timed(lambda: hf.score(prompts, only))
    hf.close()
    ex = VLLMBackend(model, exact_entropy="transformers", max_model_len=2048)
    rows["vllm, exact entropy via transformers: statistics"] = timed(lambda: ex.score(prompts))
    rows["vllm, exact entropy via transformers: statistics + hidden (same transformers pass)"] = timed(
        lambda: ex.score(prompts, last)
    )
    ex.close()
    tk = VLLMBackend(model, entropy="topk", max_model_len=2048)
    rows["vllm, top-k entropy: statistics"] = timed(lambda: tk.score(prompts))
    rows["vllm, top-k entropy: + hidden from the transformers side pass"] = timed(
        lambda: tk.score(prompts, last)
    )
    tk.hidden_states = "pooling"
    rows["vllm, top-k entropy: + hidden from the pooling runner"] = timed(lambda: tk.score(prompts, last))
    rows["vllm pooling runner: hidden only"] = timed(lambda: tk.score(prompts, only))
    tk.close()

    tokens = sum(hf_count for hf_count in (len(p.messages[0].content) for p in prompts))
    side = hidden_path_for(args.records)
    size = None
    if side.is_file():
        import tempfile

        # measured on a fresh copy in the current file format (an older file may have another layout)
        copy = Path(tempfile.mkdtemp()) / "copy.hidden.sqlite"
        with HiddenFile(side) as original:
            original.copy_to(copy).close()
        with HiddenFile(copy) as f:
            keys, meta = f.keys(), f.meta()
        questions = len({r.question_hash for r in records})
        vectors = sum(keys.values())
        per_vector = f.size_bytes() / max(vectors, 1)
        size = {
            "file": str(side.name),
            "bytes": f.size_bytes(),
            "questions": questions,
            "vectors": vectors,
            "vector_names": len(keys),
            "hidden_size": meta.get("hidden_size"),
            "bytes_per_question": f.size_bytes() / max(questions, 1),
            "bytes_per_vector": per_vector,
            "bytes_per_unit": per_vector / max(int(meta.get("hidden_size", 1)), 1),
        }
        # 5,000 questions x 4 stages x 3,584 units, one vector name (the judge's) or all 6 kept here
        unit = size["bytes_per_unit"]
        size["extrapolated_7b_5000x4_one_name_gb"] = 5000 * 4 * 3584 * unit / 1e9
        size["extrapolated_7b_5000x4_all_names_gb"] = 5000 * 4 * 3584 * unit * len(keys) / 1e9
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared, loaded), torch threads {torch.get_num_threads()}",
        "prompts": len(prompts),
        "prompt_characters": tokens,
        "seconds": rows,
        "ms_per_prompt": {k: 1000 * v / len(prompts) for k, v in rows.items()},
        "side_file": size,
    }
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Hidden-state judges: scoring cost and record size",
        "",
        f"{report['date']}, {report['machine']}; `benchmarks/bench_hidden.py`, demo intern (SmolLM2-135M, fp32), "
        f"{len(prompts)} GSM8K intern prompts (question + recorded insights), best of 2 after a warm-up.",
        "",
        "| path | ms per prompt |",
        "|---|---|",
        *(f"| {k} | {v:.0f} |" for k, v in report["ms_per_prompt"].items()),
    ]
    if size:
        lines += [
            "",
            f"Side file {size['file']}: {size['bytes'] / 1e6:.1f} MB for {size['questions']} questions, "
            f"{size['vectors']} vectors ({size['vector_names']} names: layers x positions) of {size['hidden_size']} "
            f"units: {size['bytes_per_question'] / 1e3:.1f} kB per question, {size['bytes_per_unit']:.2f} bytes per "
            f"unit. Extrapolated to 5,000 questions x 4 stages x 3,584 units (a 7B intern): "
            f"{size['extrapolated_7b_5000x4_one_name_gb']:.2f} GB for one vector name (the judge's), "
            f"{size['extrapolated_7b_5000x4_all_names_gb']:.2f} GB for all {size['vector_names']}.",
        ]
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
