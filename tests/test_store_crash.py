"""Crash and resume through the stock ``lm_eval`` command: a run with ``store=`` killed (kill -9) at
random points, and once interrupted with Ctrl-C, then rerun to completion, gives exactly the answers,
cost metrics and trace of an uninterrupted run without a store, and the last rerun computes only what
was missing."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_e2e_cli import arith_args, results_and_samples

from tandem_lm_eval.data.records import load_records
from tandem_lm_eval.store.run_store import RunStore

SAMPLE_KEYS = (
    "resps",
    "exact_match",
    "tandem_tflops",
    "tandem_mentor_tokens",
    "tandem_intern_tokens",
    "tandem_length",
    "tandem_stop_stage",
    "tandem_early_stop",
)


def start(tmp_path: Path, name: str, model_args: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / name
    out.mkdir()
    lm_eval_bin = Path(sys.executable).with_name("lm_eval")
    args = [str(lm_eval_bin), *arith_args(model_args), "--output_path", str(out / "out")]
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets")}
    log = (out / "log.txt").open("w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=out)
    return proc, out


def entries(path: Path) -> int:
    """Entries in the store, read as any other process would (0 while the file or table is not there)."""
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def stop_when(proc: subprocess.Popen, store: Path, at_least: int, sig: int, timeout: float = 600) -> bool:
    """Send ``sig`` once the store holds ``at_least`` entries; False when the run ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if entries(store) >= at_least:
            proc.send_signal(sig)
            proc.wait(120)
            return True
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("the run neither wrote the entries nor ended")


def finish(proc: subprocess.Popen, out: Path) -> None:
    assert proc.wait(900) == 0, (out / "log.txt").read_text()[-3000:]


def per_sample(out: Path) -> dict[int, dict]:
    _, samples = results_and_samples(out)
    return {row["doc_id"]: {k: row[k] for k in SAMPLE_KEYS} for row in samples["tandem_test_arith"]}


def per_question(trace: Path) -> dict:
    """The trace's last record per document (a killed run may have written one before it died),
    without wall-clock times."""
    out = {}
    for r in load_records([trace]):
        cost = dict(r.cost)
        cost.pop("times")
        stages = [json.dumps({**s.__dict__, "seconds": None}, sort_keys=True) for s in r.stages]
        out[r.doc_id] = (r.chosen_stage, r.stopped_early, json.dumps(cost, sort_keys=True), stages, r.mentor)
    return out


def expected_entries(trace: Path) -> int:
    """What a run computes, from its trace: per question each mentor stage it generated, each distinct
    stage prompt the intern scored (a stage whose insights add nothing is not scored again), the answer."""
    n = 0
    for r in load_records([trace]):
        n += len({s.mentor_tokens for s in r.stages if s.mentor_tokens > 0})
        n += len({s.insights for s in r.stages if s.usable})
        n += 1
    return n


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path, tiny_model_dir, tiny_classifier_dir):
    base = (
        f"mentor={tiny_model_dir},intern={tiny_model_dir},classifier={tiny_classifier_dir},"
        # batch_size=1: one prompt per forward pass, so a resumed run's smaller batches give the same bits
        "budgets=[8,16],mentor_num_params=2e9,dtype=float32,mentor_batch_size=1,intern_batch_size=1,progress=false,"
        # no s_t of the tiny classifier reaches 0.99: every question goes through every stage (the
        # mentor generates twice), then the intern answers from argmax s_t
        "thresholds=[0.99,0.99,0.99]"
    )
    # chunk_size=2 here too: the classifier scores a chunk's questions as one float32 batch, and another
    # batch size may round s_t differently in its last bits (answers and costs would still match)
    proc, plain_out = start(tmp_path, "plain", f"{base},chunk_size=2,trace_path={tmp_path / 'plain.jsonl'}")
    finish(proc, plain_out)
    plain = per_sample(plain_out)
    assert len(plain) == 6

    store = tmp_path / "s.sqlite"
    trace = tmp_path / "stored.jsonl"
    args = f"{base},store={store},chunk_size=2,trace_path={trace}"
    rng = random.Random(20240611)
    killed = 0
    # once early (model loading or the first chunk), then twice after a few more entries
    proc, _ = start(tmp_path, "run0", args)
    time.sleep(rng.uniform(1.0, 4.0))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait(60) == -signal.SIGKILL
    for n in (1, 2):
        proc, _ = start(tmp_path, f"run{n}", args)
        killed += stop_when(proc, store, entries(store) + rng.randint(1, 6), signal.SIGKILL)
    assert killed >= 2, "the runs ended before they could be killed"

    # Ctrl-C, deterministically: on a fresh store whose write lock this test holds, the run cannot
    # finish (everything it computes must be written); SIGINT goes once the cascade has started (its
    # progress bar is in the log), then the lock is released so the blocked write returns and the
    # interrupt is raised inside the run. One line says what is stored and how to resume.
    ctrl_store = tmp_path / "c.sqlite"
    RunStore(ctrl_store).close()
    lock = sqlite3.connect(ctrl_store, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    ctrl_args = f"{base.replace('progress=false', 'progress=true')},store={ctrl_store},chunk_size=2"
    proc, out = start(tmp_path, "interrupted", ctrl_args)
    deadline = time.monotonic() + 600
    while "Tandem cascade" not in (out / "log.txt").read_text():
        assert proc.poll() is None, (out / "log.txt").read_text()[-3000:]
        assert time.monotonic() < deadline, "the cascade did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    lock.execute("ROLLBACK")
    lock.close()
    proc.wait(120)
    log = (out / "log.txt").read_text()
    assert proc.returncode != 0, log[-3000:]
    assert f"the run store {ctrl_store} holds" in log and "Rerun the same command with the same store=" in log
    assert "Traceback" not in log
    proc, ctrl_final = start(tmp_path, "after-ctrl-c", ctrl_args.replace("progress=true", "progress=false"))
    finish(proc, ctrl_final)
    assert per_sample(ctrl_final) == plain

    before = entries(store)
    assert before > 0
    proc, final_out = start(tmp_path, "final", args)
    finish(proc, final_out)
    after = entries(store)

    assert per_sample(final_out) == plain
    assert per_question(trace) == per_question(tmp_path / "plain.jsonl")
    # the last rerun computed exactly the missing entries and served the rest
    data, _ = results_and_samples(final_out)
    counts = data["config"]["tandem"]["store"]["counts"]
    computed = sum(c["generations_computed"] + c["scores_computed"] for c in counts.values())
    served = sum(c["generations_served"] + c["scores_served"] for c in counts.values())
    assert computed == after - before
    assert after == expected_entries(tmp_path / "plain.jsonl")
    assert served >= before > 0
    disk = sum(p.stat().st_size for p in store.parent.glob("s.sqlite*"))
    print(
        f"final rerun: {served} served, {computed} computed; {killed} kills; {after} entries, {disk} B on disk"
    )
