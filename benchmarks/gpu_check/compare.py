"""Compare one run of the GPU check with the CPU reference: per question, token counts and costs.

    python3 compare.py --run OUT/gpu --reference cpu_reference.json --out compare.json
    python3 compare.py --run OUT/cpu --record cpu_reference.json --machine "..."   (record a reference)

Reads lm-eval's ``samples_*.jsonl`` under ``--run``. Token counts (mentor, intern, length, stop stage)
are compared exactly; TFLOPs (Eq. 12, a function of the token counts) and seconds side by side. bf16
on CUDA and bf16 on a CPU round differently, so greedy outputs may part somewhere: the table says
where, it does not hide it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TOKENS = ("tandem_mentor_tokens", "tandem_intern_tokens", "tandem_length", "tandem_stop_stage")
COSTS = ("tandem_tflops", "tandem_latency_s", "tandem_judgment_s")


def read_run(folder: Path) -> dict[str, dict]:
    files = sorted(folder.rglob("samples_*.jsonl"))
    if not files:
        raise SystemExit(f"no samples_*.jsonl under {folder}")
    out = {}
    for line in files[-1].read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        row = {k: sample[k] for k in (*TOKENS, *COSTS, "exact_match") if k in sample}
        resps = sample.get("filtered_resps") or sample.get("resps") or [""]
        row["answer"] = resps[0] if isinstance(resps[0], str) else str(resps[0])
        out[str(sample["doc_id"])] = row
    return out


def compare(run: dict[str, dict], reference: dict[str, dict]) -> dict:
    rows = []
    for doc, ref in sorted(reference.items(), key=lambda kv: int(kv[0])):
        got = run.get(doc)
        if got is None:
            rows.append({"doc_id": doc, "missing": True})
            continue
        same_tokens = all(got.get(k) == ref.get(k) for k in TOKENS)
        rows.append(
            {
                "doc_id": doc,
                "same_tokens": same_tokens,
                "same_answer": got["answer"] == ref["answer"],
                **{f"{k}": [ref.get(k), got.get(k)] for k in (*TOKENS, *COSTS)},
            }
        )
    return {
        "questions": len(rows),
        "same_tokens": sum(bool(r.get("same_tokens")) for r in rows),
        "same_answer": sum(bool(r.get("same_answer")) for r in rows),
        "rows": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--record", type=Path, help="write this run as the reference instead")
    parser.add_argument("--machine", default="")
    args = parser.parse_args()
    run = read_run(args.run)
    if args.record:
        args.record.write_text(
            json.dumps({"machine": args.machine, "samples": run}, indent=2) + "\n", encoding="utf-8"
        )
        print(f"recorded {len(run)} questions as the reference -> {args.record}")
        return 0
    if args.reference is None or not args.reference.is_file():
        # no CPU reference in the bundle: report this run alone, so its numbers are not lost
        print(f"no CPU reference at {args.reference}: this run's numbers alone")
        for doc, row in sorted(run.items(), key=lambda kv: int(kv[0])):
            print(
                f"{doc:>4} "
                + "  ".join(f"{k.removeprefix('tandem_')}={row.get(k)}" for k in (*TOKENS, *COSTS))
            )
        if args.out:
            args.out.write_text(
                json.dumps({"reference": None, "run": run}, indent=2) + "\n", encoding="utf-8"
            )
        return 0
    reference = json.loads(args.reference.read_text(encoding="utf-8"))
    result = compare(run, reference["samples"])
    result["reference_machine"] = reference.get("machine")
    print(f"reference: {reference.get('machine')}")
    print(
        f"{'doc':>4} {'tokens':>7} {'answer':>7}  mentor ref/run  intern ref/run  TFLOPs ref/run  latency s ref/run"
    )
    for r in result["rows"]:
        if r.get("missing"):
            print(f"{r['doc_id']:>4} missing from the run")
            continue
        m, i, f, s = (
            r[k]
            for k in ("tandem_mentor_tokens", "tandem_intern_tokens", "tandem_tflops", "tandem_latency_s")
        )
        print(
            f"{r['doc_id']:>4} {'same' if r['same_tokens'] else 'DIFFER':>7} {'same' if r['same_answer'] else 'DIFFER':>7}  "
            f"{m[0]}/{m[1]}  {i[0]}/{i[1]}  {f[0]:.4g}/{f[1]:.4g}  {s[0]:.2f}/{s[1]:.2f}"
        )
    print(
        f"same token counts: {result['same_tokens']}/{result['questions']}, same answers: {result['same_answer']}/{result['questions']}"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
