"""Several processes, one evaluation (harness/ranks.py, harness/lm.py, harness/trace.py): the launcher's
environment, the collectives over its key-value store, each process's GPU group, the evaluator's
padding, the trace parts merged once; and end to end through ``torchrun -m lm_eval`` on the tiny model:
the same samples, stop stages, costs and trace as one process, a resume with another world size served
from the shared store, and a killed rank resumed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_e2e_cli import arith_args, results_and_samples
from test_store_crash import entries

from tandem_lm_eval.harness.lm import split_padding
from tandem_lm_eval.harness.ranks import LaunchInfo, RankError, claim_gpus, gpu_group
from tandem_lm_eval.harness.trace import merge_parts, sort_prefix

BIN = Path(sys.executable).parent


# --- the launcher's environment and GPU groups ----------------------------------------------------------
def test_launch_info_from_env():
    assert LaunchInfo.from_env({}) == LaunchInfo(0, 1, 0, 1)
    info = LaunchInfo.from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (info.rank, info.world_size, info.local_rank, info.nodes) == (3, 8, 1, 4)
    with pytest.raises(RankError, match="RANK=2, WORLD_SIZE=2"):
        LaunchInfo.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(RankError, match="not an integer"):
        LaunchInfo.from_env({"RANK": "one", "WORLD_SIZE": "2"})


def test_gpu_groups_split_a_node_evenly():
    gpus = [str(i) for i in range(8)]
    assert [gpu_group(gpus, r, 4, "auto") for r in range(4)] == [
        ["0", "1"],
        ["2", "3"],
        ["4", "5"],
        ["6", "7"],
    ]
    assert gpu_group(gpus, 3, 8, "auto") == ["3"]
    assert gpu_group(["a", "b"], 0, 2, "all") == ["a", "b"]  # the launcher isolated them already
    assert gpu_group(gpus, 1, 2, "3") == ["3", "4", "5"]
    assert gpu_group([], 1, 2, "auto") == []  # CPU
    with pytest.raises(RankError, match="do not split evenly"):
        gpu_group(gpus[:6], 0, 4, "auto")
    with pytest.raises(RankError, match="do not fit"):
        gpu_group(gpus, 0, 4, "3")


def test_claim_gpus_narrows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert claim_gpus(LaunchInfo(rank=5, world_size=8, local_rank=1, local_world_size=2)) == ["6", "7"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6,7"


def test_bad_gpus_per_rank_is_one_line():
    from tandem_lm_eval.harness.config import ConfigError, TandemConfig

    with pytest.raises(ConfigError, match="gpus_per_rank must be auto, all or a number"):
        TandemConfig.from_model_args({"gpus_per_rank": "many"})
    assert TandemConfig.from_model_args({"gpus_per_rank": "2"}).gpus_per_rank == "2"


# --- padding ---------------------------------------------------------------------------------------------
class Req:
    def __init__(self, repeats: int = 1) -> None:
        self.repeats = repeats


def test_padding_is_answered_from_the_first_run():
    a, b, c = Req(), Req(2), Req()
    # lm-eval: b twice (repeats=2), then two padding copies of the last request c
    runs, padding = split_padding([a, b, b, c, c, c])
    assert runs == [0, 1, 2, 3]
    assert padding == {4: 3, 5: 3}
    assert split_padding([a, b, b]) == ([0, 1, 2], {})


# --- collectives over the launcher's store, two real processes -----------------------------------------
WORKER = """
import json, sys
from tandem_lm_eval.harness.ranks import RankGroup
g = RankGroup.from_env(timeout_s=60)
got = g.gather_object({"rank": g.rank, "payload": list(range(g.rank * 3))}, dst=0)
every = g.all_gather_object(g.rank * 10)
g.barrier()
again = g.gather_object(g.rank, dst=1)
print(json.dumps({"gather": got, "all": every, "again": again}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rank_group_collectives_between_two_processes():
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}
        env.update(LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(
            subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdout=subprocess.PIPE, text=True)
        )
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0]["gather"] == [{"rank": 0, "payload": []}, {"rank": 1, "payload": [0, 1, 2]}]
    assert outs[1]["gather"] is None
    assert outs[0]["all"] == outs[1]["all"] == [0, 10]
    assert outs[0]["again"] is None and outs[1]["again"] == [0, 1]


def test_a_rank_without_a_rendezvous_address_is_one_line(monkeypatch):
    from tandem_lm_eval.harness.ranks import RankGroup

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    # vLLM's CPU platform writes LOCAL_WORLD_SIZE into os.environ when an engine starts in this process
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    with pytest.raises(RankError, match="MASTER_ADDR and MASTER_PORT not set"):
        RankGroup.from_env()


# --- trace parts ------------------------------------------------------------------------------------------
def test_trace_parts_merge_in_one_process_order(tmp_path):
    def line(task_pos, doc, serial):
        return f"{sort_prefix(task_pos, doc, serial)}{json.dumps({'doc_id': doc, 'task': task_pos})}\n"

    r0, r1 = tmp_path / "t.rank0-of-2.part", tmp_path / "t.rank1-of-2.part"
    r0.write_text(line(0, 0, 0) + line(0, 2, 1) + line(1, 0, 2))
    r1.write_text(line(0, 1, 0) + line(0, 3, 1) + line(1, 1, 2) + '000001 000000000003 00000000\t{"torn')
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"earlier": 1}\n{"torn by a kill')
    gone = tmp_path / "t.rank2-of-3.part"
    written, missing = merge_parts(trace, [(r0, r0.stat().st_size), (r1, r1.stat().st_size), (gone, 10)])
    assert (written, missing) == (6, [gone])
    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    assert lines[0] == {"earlier": 1}
    assert [(x["task"], x["doc_id"]) for x in lines[1:]] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    assert not r0.exists() and not r1.exists()


# --- end to end: torchrun -m lm_eval on the tiny model ----------------------------------------------------
SAMPLE_KEYS = ("resps", "filtered_resps", "exact_match", "tandem_tflops", "tandem_mentor_tokens")
SAMPLE_KEYS += ("tandem_intern_tokens", "tandem_length", "tandem_stop_stage", "tandem_early_stop")


def launch(tmp_path: Path, name: str, model_args: str, nproc: int, limit: int) -> subprocess.Popen:
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    head = [str(BIN / "lm_eval")]
    if nproc > 1:
        head = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(nproc), "-m", "lm_eval"]
    args = [*head, *arith_args(model_args, limit=limit), "--output_path", str(out / "out")]
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets")}
    log = (out / "log.txt").open("a")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=out)


def finished(proc: subprocess.Popen, tmp_path: Path, name: str) -> tuple[dict, dict]:
    assert proc.wait(900) == 0, (tmp_path / name / "log.txt").read_text()[-3000:]
    data, samples = results_and_samples(tmp_path / name)
    rows = {r["doc_id"]: {k: r[k] for k in SAMPLE_KEYS} for r in samples["tandem_test_arith"]}
    return data["config"]["tandem"], rows


def trace_by_doc(path: Path) -> dict[int, list]:
    out: dict[int, list] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        r["cost"].pop("times")  # wall-clock seconds differ from run to run: the request's and each stage's
        stages = [{k: v for k, v in st.items() if k != "seconds"} for st in r["stages"]]
        out.setdefault(r["doc_id"], []).append(
            (r["chosen_stage"], r["stopped_early"], r["cost"], stages, r["mentor"])
        )
    return out


def worker_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    for proc in Path("/proc").iterdir():
        try:
            if (
                not proc.name.isdigit()
                or int((proc / "stat").read_text().split(") ")[1].split()[1]) != launcher.pid
            ):
                continue
            if f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except (OSError, IndexError, ValueError):
            continue
    return None


@pytest.mark.slow
def test_two_ranks_equal_one_process_and_share_one_store(tmp_path, tiny_model_dir, tiny_classifier_dir):
    base = (
        f"mentor={tiny_model_dir},intern={tiny_model_dir},classifier={tiny_classifier_dir},"
        "budgets=[8,16],mentor_num_params=2e9,dtype=float32,mentor_batch_size=1,intern_batch_size=1,"
        # one prompt per forward pass and per classifier call, as in any process layout
        "chunk_size=1,progress=false,thresholds=[0.99,0.99,0.99]"
    )
    limit = 5  # odd: lm-eval pads rank 1 with a copy of its last request
    one_cfg, one = finished(
        launch(tmp_path, "one", f"{base},trace_path={tmp_path / 'one.jsonl'}", 1, limit), tmp_path, "one"
    )
    store = tmp_path / "store.sqlite"
    two_args = f"{base},trace_path={tmp_path / 'two.jsonl'},store={store}"
    two_cfg, two = finished(launch(tmp_path, "two", two_args, 2, limit), tmp_path, "two")

    assert sorted(two) == list(range(limit))
    assert two == one  # answers (the padded document's too), metrics and costs per document
    assert trace_by_doc(tmp_path / "two.jsonl") == trace_by_doc(tmp_path / "one.jsonl")
    assert {len(v) for v in trace_by_doc(tmp_path / "two.jsonl").values()} == {1}
    assert not list(tmp_path.glob("two.jsonl.rank*"))  # parts merged and removed
    for key in ("requests", "mentor_tokens", "intern_tokens", "stage_counts", "early_stops"):
        assert two_cfg["summary"][key] == one_cfg["summary"][key], key
    assert two_cfg["summary"]["requests"] == limit
    assert two_cfg["ranks"] == {"world_size": 2, "nodes": 1}
    by_rank = two_cfg["store"]["counts_by_rank"]
    assert len(by_rank) == 2 and all(c["intern"]["scores_computed"] > 0 for c in by_rank)
    total = two_cfg["store"]["counts"]
    assert total["intern"]["generations_computed"] == limit  # padding computed nothing
    assert total["mentor"]["generations_served"] == total["intern"]["scores_served"] == 0

    # a resume with another world size (one process) finds every entry the two ranks wrote
    again_cfg, again = finished(
        launch(tmp_path, "again", f"{base},store={store}", 1, limit), tmp_path, "again"
    )
    assert again == one
    counts = again_cfg["store"]["counts"]
    assert sum(c["generations_computed"] + c["scores_computed"] for c in counts.values()) == 0
    assert counts["intern"]["generations_served"] == limit


@pytest.mark.slow
def test_a_killed_rank_resumes_from_the_store(tmp_path, tiny_model_dir, tiny_classifier_dir):
    base = (
        f"mentor={tiny_model_dir},intern={tiny_model_dir},classifier={tiny_classifier_dir},"
        "budgets=[8,16],mentor_num_params=2e9,dtype=float32,mentor_batch_size=1,intern_batch_size=1,"
        "chunk_size=1,progress=false,thresholds=[0.99,0.99,0.99]"
    )
    limit = 6  # every document of the fixture task: 3 per rank
    _, one = finished(launch(tmp_path, "one", base, 1, limit), tmp_path, "one")
    store = tmp_path / "store.sqlite"
    args = f"{base},store={store},trace_path={tmp_path / 'trace.jsonl'}"
    proc = launch(tmp_path, "two", args, 2, limit)
    deadline = time.monotonic() + 600
    killed = False
    while proc.poll() is None and time.monotonic() < deadline:
        if (
            entries(store) >= 6
        ):  # a question stores 4 to 6 entries (2 mentor stages, 1-3 scorings, the answer)
            pid = worker_pid(proc, 1)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.01)
    code = proc.wait(300)
    assert killed and code != 0, "the run ended before rank 1 could be killed"
    stored = entries(store)
    assert 6 <= stored < 4 * limit  # killed before the end
    (tmp_path / "trace.jsonl").unlink(missing_ok=True)
    cfg, resumed = finished(launch(tmp_path, "two", args, 2, limit), tmp_path, "two")
    assert resumed == one
    counts = cfg["store"]["counts"]
    assert sum(c["generations_served"] + c["scores_served"] for c in counts.values()) == stored
    assert {len(v) for v in trace_by_doc(tmp_path / "trace.jsonl").values()} == {1}
    assert len(trace_by_doc(tmp_path / "trace.jsonl")) == limit


def test_run_summaries_combine_to_the_summary_of_all_requests():
    """Rank 0 reports the combination of every rank's and call's summary: it must equal the summary of
    all their requests (every field, so a total added later is combined too)."""
    import dataclasses
    import random

    from tandem_lm_eval.cost.ledger import PhaseTimes, RequestCost, RunSummary

    rng = random.Random(0)
    costs = [
        RequestCost(
            mentor_tokens=rng.randint(0, 900),
            intern_tokens=rng.randint(1, 200),
            stop_stage=rng.randint(0, 3),
            stopped_early=rng.random() < 0.4,
            times=PhaseTimes(*(rng.random() for _ in dataclasses.fields(PhaseTimes))),
            tflops=rng.random(),
            usd=rng.random() if i % 3 else None,
        )
        for i in range(30)
    ]
    whole = dataclasses.asdict(RunSummary.of(costs, 4))
    parts = [RunSummary.of(costs[a:b], 4) for a, b in ((0, 7), (7, 7), (7, 20), (20, 30))]
    combined = dataclasses.asdict(RunSummary.combine(parts, 4))
    assert set(combined) == set(whole)
    for key, value in whole.items():
        if isinstance(value, float):
            assert combined[key] == pytest.approx(value), key
        elif isinstance(value, dict) and key == "times":
            assert combined[key] == pytest.approx(value), key
        else:
            assert combined[key] == value, key
    assert RunSummary.combine([], 4).requests == 0 and RunSummary.combine([], 4).usd is None
