"""The leaderboard modes end to end through the stock ``lm_eval`` command, on the tiny random model.

Each run checks the per-sample cost metrics against its mode's rule: the mentor alone pays
2e-12·|θL|·L_L; the cascades pay Eq. 12 with the intern reading the mentor's tokens.
"""

from __future__ import annotations

import json

import pytest
from test_e2e_cli import arith_args, lm_eval, results_and_samples

MENTOR_PARAMS = 2e9
MAX_GEN_TOKS = 12  # tandem_test_arith's generation_kwargs
TASK = "tandem_test_arith"


def run_mode(tmp_path, tiny_model_dir, extra: str, limit: int = 3):
    model_args = (
        f"mentor={tiny_model_dir},intern={tiny_model_dir},budgets=[8,16],"
        f"mentor_num_params={MENTOR_PARAMS:g},dtype=float32,{extra}"
    )
    proc = lm_eval(arith_args(model_args, limit=limit), tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, samples = results_and_samples(tmp_path)
    rows = samples[TASK]
    assert len(rows) == limit
    res = data["results"][TASK]
    assert "exact_match,none" in res and "tandem_tflops,none" in res
    assert res["tandem_tflops,none"] == pytest.approx(sum(r["tandem_tflops"] for r in rows) / limit)
    return data, rows


def response(row) -> str:
    resp = row["resps"][0]
    return resp[0] if isinstance(resp, list) else resp


@pytest.mark.slow
def test_mentor_only(tmp_path, tiny_model_dir):
    data, rows = run_mode(tmp_path, tiny_model_dir, "mode=mentor_only")
    info = data["config"]["tandem"]
    assert info["intern_params"] == 0.0  # no intern was loaded
    for row in rows:
        tokens = row["tandem_mentor_tokens"]
        assert 0 < tokens <= MAX_GEN_TOKS and row["tandem_intern_tokens"] == 0
        assert row["tandem_tflops"] == pytest.approx(2e-12 * MENTOR_PARAMS * tokens)
        assert row["tandem_stop_stage"] == 0 and row["tandem_early_stop"] == 0
        assert row["tandem_length"] == tokens
    assert info["summary"]["requests"] == 3 and info["summary"]["intern_tokens"] == 0


@pytest.mark.slow
def test_budget_forcing(tmp_path, tiny_model_dir):
    data, rows = run_mode(tmp_path, tiny_model_dir, "mode=budget_forcing:8")
    assert data["config"]["tandem"]["intern_params"] == 0.0
    for row in rows:
        tokens = row["tandem_mentor_tokens"]
        # at most B reasoning tokens, then at most max_gen_toks after the forced end of reasoning
        assert 0 < tokens <= 8 + MAX_GEN_TOKS and row["tandem_intern_tokens"] == 0
        assert row["tandem_tflops"] == pytest.approx(2e-12 * MENTOR_PARAMS * tokens)
        assert row["tandem_stop_stage"] == 0 and row["tandem_early_stop"] == 0
        if tokens > 8:  # cut at B: the end of reasoning was forced (the tiny model thinks in no tags)
            assert "Final answer: " in response(row)


@pytest.mark.slow
@pytest.mark.parametrize("tau0", [None, 1.0], ids=["card", "model_args"])
def test_route(tmp_path, tiny_model_dir, tiny_classifier_dir, tau0):
    """τ_0 from the tiny card (0.5: the tiny intern's s_0 lies above it) or thresholds=[1.0] (never
    passed: every question goes through the mentor's last budget)."""
    trace = tmp_path / "trace.jsonl"
    extra = f"mode=route,classifier={tiny_classifier_dir},trace_path={trace}"
    if tau0 is not None:
        extra += f",thresholds=[{tau0}]"
    data, rows = run_mode(tmp_path, tiny_model_dir, extra, limit=4)
    tiny_params = data["config"]["tandem"]["intern_params"]
    assert tiny_params > 0
    for row in rows:
        m, s = row["tandem_mentor_tokens"], row["tandem_intern_tokens"]
        assert row["tandem_tflops"] == pytest.approx(2e-12 * (MENTOR_PARAMS * m + tiny_params * (m + s)))
        # one decision: the question alone (a classifier stop) or the last stage, nothing between
        assert row["tandem_stop_stage"] in (0, 2)
        assert row["tandem_early_stop"] == (1 if row["tandem_stop_stage"] == 0 else 0)
        assert (m == 0) == (row["tandem_stop_stage"] == 0) and m <= 16
    # the rule, from the trace: stage 0 iff s_0 > τ_0 (the card's thresholds[0] = 0.5 unless given);
    # only s_0 is scored
    threshold = 0.5 if tau0 is None else tau0
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(records) == 4
    for rec in records:
        scores = rec["cost"]["stage_scores"]
        assert len(scores) == 1
        assert rec["chosen_stage"] == (0 if scores[0] > threshold else 2)
    if tau0 == 1.0:
        assert all(row["tandem_stop_stage"] == 2 and row["tandem_mentor_tokens"] > 0 for row in rows)


@pytest.mark.slow
def test_fixed_low(tmp_path, tiny_model_dir):
    data, rows = run_mode(tmp_path, tiny_model_dir, "mode=fixed:low")
    tiny_params = data["config"]["tandem"]["intern_params"]
    for row in rows:
        m, s = row["tandem_mentor_tokens"], row["tandem_intern_tokens"]
        assert row["tandem_stop_stage"] == 1 and row["tandem_early_stop"] == 0
        assert 0 < m <= 8 and s <= MAX_GEN_TOKS
        assert row["tandem_tflops"] == pytest.approx(2e-12 * (MENTOR_PARAMS * m + tiny_params * (m + s)))
