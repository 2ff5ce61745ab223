"""End to end through the stock ``lm_eval`` command in a subprocess, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE_TASKS = Path(__file__).parent / "fixtures" / "tasks"
COST_KEYS = (
    "tandem_tflops,none",
    "tandem_mentor_tokens,none",
    "tandem_intern_tokens,none",
    "tandem_stop_stage,none",
)


def lm_eval(args: list[str], tmp_path: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    lm_eval_bin = Path(sys.executable).with_name("lm_eval")
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets")}
    return subprocess.run(
        [str(lm_eval_bin), *args, "--output_path", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )


def arith_args(model_args: str, limit: int | None = None) -> list[str]:
    """``lm_eval`` arguments for --model tandem on the fixture task tandem_test_arith, samples logged."""
    args = ["--model", "tandem", "--model_args", model_args, "--tasks", "tandem_test_arith"]
    args += ["--include_path", str(FIXTURE_TASKS), "--log_samples"]
    return args + (["--limit", str(limit)] if limit is not None else [])


def results_and_samples(tmp_path: Path):
    results = sorted((tmp_path / "out").rglob("results_*.json"))
    assert results, "no results file written"
    data = json.loads(results[-1].read_text())
    samples = {}
    for f in (tmp_path / "out").rglob("samples_*.jsonl"):
        task = f.name[len("samples_") :].rsplit("_", 1)[0]
        samples[task] = [json.loads(line) for line in f.read_text().splitlines()]
    return data, samples


@pytest.mark.slow
def test_tandem_on_local_task_with_tiny_model(tmp_path, tiny_model_dir, tiny_classifier_dir):
    model_args = (
        f"mentor={tiny_model_dir},intern={tiny_model_dir},classifier={tiny_classifier_dir},"
        "budgets=[8,16],mentor_num_params=2e9,dtype=float32"
    )
    proc = lm_eval(arith_args(model_args, limit=4), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, samples = results_and_samples(tmp_path)
    res = data["results"]["tandem_test_arith"]
    for key in COST_KEYS:
        assert key in res, res
    assert "exact_match,none" in res
    # the printed table shows the cost beside the task metric
    assert "tandem_tflops" in proc.stdout and "exact_match" in proc.stdout
    rows = samples["tandem_test_arith"]
    assert len(rows) == 4
    tiny_params = data["config"]["tandem"]["intern_params"]
    for row in rows:
        assert row["tandem_mentor_tokens"] in (0, 8, 16)
        expected = 2e-12 * (
            2e9 * row["tandem_mentor_tokens"]
            + tiny_params * (row["tandem_mentor_tokens"] + row["tandem_intern_tokens"])
        )
        assert row["tandem_tflops"] == pytest.approx(expected)
        assert row["tandem_length"] == row["tandem_mentor_tokens"] + row["tandem_intern_tokens"]
        assert 0 <= row["tandem_stop_stage"] <= 2
    summary = data["config"]["tandem"]["summary"]
    assert summary["requests"] == 4
    assert sum(summary["stage_counts"].values()) == 4
    # the results folder is named after the pair, as lm-eval names any other model's
    from lm_eval.utils import sanitize_model_name

    pair = sanitize_model_name(f"tandem:{tiny_model_dir}+{tiny_model_dir}")
    assert [p.name for p in (tmp_path / "out").iterdir()] == [pair]
    assert res["tandem_tflops,none"] == pytest.approx(sum(r["tandem_tflops"] for r in rows) / 4)


@pytest.mark.slow
def test_bad_model_args_give_one_clear_line(tmp_path):
    proc = lm_eval(
        [
            "--model",
            "tandem",
            "--model_args",
            "mentr=x",
            "--tasks",
            "tandem_test_arith",
            "--include_path",
            str(FIXTURE_TASKS),
            "--limit",
            "1",
        ],
        tmp_path,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "tandem: bad model_args: unknown model_args key 'mentr'" in proc.stderr
    assert "Traceback" not in proc.stderr


def stock_gsm8k_on_local_data(tmp_path: Path, shared: Path) -> Path:
    """The stock lm-eval `gsm8k` task, unchanged except that it reads ../shared/data (no hub here)."""
    import lm_eval

    stock = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"
    folder = tmp_path / "stock_tasks"
    folder.mkdir()
    (folder / "gsm8k_local.yaml").write_text(
        f"include: {stock}\n"
        "task: gsm8k_local\n"
        "dataset_path: json\n"
        "dataset_name: null\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    train: {shared / 'gsm8k' / 'train.jsonl'}\n"
        f"    test: {shared / 'gsm8k' / 'test.jsonl'}\n"
    )
    return folder


@pytest.mark.slow
def test_demo_pair_on_stock_gsm8k_with_real_smollm2(tmp_path, shared_data):
    """No model_args: the embedded demo (real SmolLM2-135M-Instruct as mentor and intern, shipped
    classifier, transformers backend) on the stock gsm8k task, cost metrics in the results JSON."""
    folder = stock_gsm8k_on_local_data(tmp_path, shared_data)
    proc = lm_eval(
        [
            "--model",
            "tandem",
            "--tasks",
            "gsm8k_local",
            "--include_path",
            str(folder),
            "--limit",
            "2",
            "--log_samples",
            "--gen_kwargs",
            "max_gen_toks=64",
        ],
        tmp_path,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "running the offline DEMO pair" in proc.stderr
    data, samples = results_and_samples(tmp_path)
    res = data["results"]["gsm8k_local"]
    # the stock task has two filters: every metric is reported per filter
    for filt in ("strict-match", "flexible-extract"):
        assert f"exact_match,{filt}" in res
        for key in COST_KEYS:
            assert key.replace(",none", f",{filt}") in res, res
    rows = samples["gsm8k_local"]
    assert (
        sorted(r["filter"] for r in rows) == ["flexible-extract"] * 2 + ["strict-match"] * 2
    )  # 2 docs x 2 filters
    info = data["config"]["tandem"]
    assert info["intern_params"] == info["mentor_params"] == 134_515_008
    for row in rows:
        assert row["tandem_mentor_tokens"] <= 1000 and 0 <= row["tandem_stop_stage"] <= 3
        # the stock task's regex filters made new strings: the cost came through the ledger
        assert row["tandem_intern_tokens"] <= 64
    assert info["summary"]["requests"] == 2
