"""``trace_path`` in every mode, through the stock lm_eval command: the records it writes are JSON,
feed ``analyze``, and serve as a recorded mentor that reproduces the run without the mentor model."""

import json

import pytest
from test_e2e_cli import arith_args, lm_eval, results_and_samples

from tandem_lm_eval.cli.commands import run_subcommand
from tandem_lm_eval.data.records import load_records
from tandem_lm_eval.judgment.features import FEATURE_SPANS, NUM_FEATURES


def run(tmp_path, model_args: str, name: str):
    out = tmp_path / name
    out.mkdir()
    proc = lm_eval(arith_args(model_args, limit=3), out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, samples = results_and_samples(out)
    return [row["resps"][0][0] for row in sorted(samples["tandem_test_arith"], key=lambda r: r["doc_id"])]


@pytest.mark.slow
def test_trace_in_every_mode_feeds_analyze_and_the_recorded_mentor(
    tmp_path, tiny_model_dir, tiny_classifier_dir, capsys
):
    base = (
        f"mentor={tiny_model_dir},intern={tiny_model_dir},budgets=[8,16],mentor_num_params=2e9,dtype=float32"
    )
    traces = {}
    answers = {}
    for mode in ("tandem", "fixed:2", "intern_only"):
        trace = tmp_path / f"trace-{mode.replace(':', '')}.jsonl"
        extra = f",classifier={tiny_classifier_dir}" if mode == "tandem" else ""
        answers[mode] = run(tmp_path, f"{base},mode={mode},trace_path={trace}{extra}", mode.replace(":", ""))
        traces[mode] = load_records([trace])

    for mode, records in traces.items():
        assert len(records) == 3 and all(r.kind == "trace" and r.mode == mode for r in records)
        for r in records:
            chosen = r.stages[r.chosen_stage]
            assert chosen.answer is not None and chosen.intern_tokens == r.cost["intern_tokens"]
            assert all(s.answer is None for s in r.stages if s.stage != r.chosen_stage)
            assert r.task == "tandem_test_arith" and r.doc_hash and r.question_hash
    # tandem mode scored every stage it ran: features over every span, and the classifier's score
    for r in traces["tandem"]:
        for s in r.stages:
            assert set(s.features) == set(FEATURE_SPANS) and all(
                len(v) == NUM_FEATURES for v in s.features.values()
            )
            assert s.score is not None and s.spans["question"]
    # fixed:2 ran the mentor through both stages and recorded its whole output
    for r in traces["fixed:2"]:
        assert [s.mentor_tokens for s in r.stages][-1] == len(r.mentor.token_ids) <= 16
        assert r.chosen_stage == 2 and r.mentor.num_params == 2e9
    assert all(r.mentor is None and len(r.stages) == 1 for r in traces["intern_only"])

    # the fixed:2 trace as a recorded mentor: the same answers, and no mentor model is loaded
    recorded = (
        f"mentor={tmp_path / 'trace-fixed2.jsonl'},mentor_backend=recorded,mentor_tokenizer={tiny_model_dir},"
        f"mentor_num_params=2e9,intern={tiny_model_dir},budgets=[8,16],dtype=float32,mode=fixed:2"
    )
    assert run(tmp_path, recorded, "replayed") == answers["fixed:2"]

    # analyze reads traces (no labels: the summary part)
    assert run_subcommand(["analyze", "--records", str(tmp_path / "trace-tandem.jsonl")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{") : printed.rindex("}") + 1])
    assert summary["questions"] == 3 and summary["modes"] == ["tandem"]
    assert abs(sum(summary["stage_distribution"]) - 1) < 1e-9
