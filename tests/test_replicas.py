"""``data_parallel_size=N`` (harness/replicas.py): N worker processes, each a whole replica of the cascade,
started once and pinned to their GPUs. With the tiny real model: two replicas give per request the same
answers, stop stages and costs as one process, their trace and store cover both, a resume in one process
finds every entry; a replica killed with -9 ends the call with one line naming it and the store; and
through the stock ``lm_eval`` command, Ctrl-C and a killed replica leave one line each, no worker behind,
and the rerun resumes to one process's results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_e2e_cli import arith_args
from test_ranks import BIN, SAMPLE_KEYS, trace_by_doc
from test_store_crash import entries

from tandem_lm_eval.harness.config import ConfigError, TandemConfig
from tandem_lm_eval.harness.ranks import RankError
from tandem_lm_eval.harness.replicas import replica_gpu_groups


# --- values and placement, checked before anything starts ---------------------------------------------
def test_data_parallel_size_is_a_count_of_whole_replicas():
    assert TandemConfig.from_model_args({}).data_parallel_size == 1
    assert TandemConfig.from_model_args({"data_parallel_size": "4"}).data_parallel_size == 4
    with pytest.raises(ConfigError, match="data_parallel_size must be >= 1, got '0'"):
        TandemConfig.from_model_args({"data_parallel_size": "0"})
    with pytest.raises(ConfigError, match="data_parallel_size must be an integer, got '1.5'"):
        TandemConfig.from_model_args({"data_parallel_size": "1.5"})
    # a role's own replicas make no sense (a replica is mentor and intern together): named, with the fix
    for backend in ("hf", "vllm"):
        args = {"mentor": "m", "intern": "demo", "mentor_backend": backend, "mentor_data_parallel_size": "4"}
        with pytest.raises(ConfigError, match="mentor_data_parallel_size=4: .*give data_parallel_size=4"):
            TandemConfig.from_model_args(args)


def config(**args) -> TandemConfig:
    return TandemConfig.from_model_args({"mentor": "m", "intern": "i", **args})


def test_each_replica_gets_an_equal_share_of_the_gpus():
    eight = {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
    assert replica_gpu_groups(config(data_parallel_size=4), eight) == [
        ["0", "1"],
        ["2", "3"],
        ["4", "5"],
        ["6", "7"],
    ]
    assert replica_gpu_groups(config(data_parallel_size=8), eight) == [[str(i)] for i in range(8)]
    # a launcher's rank already narrowed CUDA_VISIBLE_DEVICES to its group: its replicas split that
    assert replica_gpu_groups(config(data_parallel_size=2), {"CUDA_VISIBLE_DEVICES": "4,5"}) == [["4"], ["5"]]
    # no GPU: nothing to pin, every replica on the CPU
    assert replica_gpu_groups(config(data_parallel_size=3), {"CUDA_VISIBLE_DEVICES": ""}) == [None] * 3
    # both roles behind servers: no GPU of this machine is theirs, any N
    served = config(data_parallel_size=16, mentor_backend="openai", intern_backend="openai")
    assert replica_gpu_groups(served, eight) == [None] * 16
    with pytest.raises(RankError, match="data_parallel_size=16 and 8 visible GPUs"):
        replica_gpu_groups(config(data_parallel_size=16), eight)
    with pytest.raises(RankError, match="a divisor of 8"):
        replica_gpu_groups(config(data_parallel_size=3), eight)
    tp2 = config(data_parallel_size=8, mentor_backend="vllm", mentor_tensor_parallel_size=2)
    with pytest.raises(RankError, match="gives each replica 1, but the mentor needs 2"):
        replica_gpu_groups(tp2, eight)
    tp2.data_parallel_size = 4
    assert len(replica_gpu_groups(tp2, eight)) == 4


# --- two replicas against one process, in process --------------------------------------------------------
class Req:
    def __init__(self, context, doc_id):
        self.args = (context, {"until": ["Question:"], "max_gen_toks": 6})
        self.task_name, self.doc_id = "t", doc_id


REQS = [Req(f"Question: what is {i} plus {i + 1}?\nAnswer:", i) for i in range(5)]


class LLReq:
    def __init__(self, args):
        self.args = args


LL_REQS = [LLReq((f"{i} plus {i} is", f" {2 * i}")) for i in range(3)]


def tiny_lm(tiny_model_dir, tiny_classifier_dir, **extra):
    from tandem_lm_eval.harness.lm import TandemLM

    return TandemLM(
        mentor=str(tiny_model_dir),
        intern=str(tiny_model_dir),
        classifier=str(tiny_classifier_dir),
        budgets="[8,16]",
        mentor_num_params="2e9",
        progress=False,
        dtype="float32",
        batch_size=1,  # one prompt per forward pass and per classifier call, in any layout
        chunk_size=1,
        thresholds="[0.99,0.99,0.99]",  # no early stop: each question's argmax, which differ
        **extra,
    )


def answers(out):
    return [(str(r), {k: v for k, v in r.tandem.items() if k != "times"}) for r in out]


def test_two_replicas_give_one_process_results(tmp_path, tiny_model_dir, tiny_classifier_dir, monkeypatch):
    one = tiny_lm(tiny_model_dir, tiny_classifier_dir, trace_path=str(tmp_path / "one.jsonl"))
    expected = answers(one.generate_until(REQS))
    expected_ll = one.loglikelihood(LL_REQS)
    one_info = one.get_model_info()["tandem"]
    one.close()
    # every request's costs differ (its stage scores): an answer put back in the wrong place would show
    assert len({tuple(cost["stage_scores"]) for _, cost in expected}) == len(REQS)

    store = tmp_path / "store.sqlite"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # no GPU here: the pinning is what is checked
    two = tiny_lm(
        tiny_model_dir,
        tiny_classifier_dir,
        data_parallel_size=2,
        store=str(store),
        trace_path=str(tmp_path / "two.jsonl"),
    )
    assert two.mentor is None and two.intern is None  # this process loads no model
    assert answers(two.generate_until(REQS)) == expected  # answers, stop stages, costs, in order
    assert two.loglikelihood(LL_REQS) == expected_ll
    info = two.get_model_info()["tandem"]
    assert info["replicas"] == {"data_parallel_size": 2, "total": 2, "visible_devices": ["0", "1"]}
    for key in ("requests", "mentor_tokens", "intern_tokens", "stage_counts", "early_stops", "tflops"):
        assert info["summary"][key] == pytest.approx(one_info["summary"][key]), key
    assert info["mentor_params"] == one_info["mentor_params"] == 2e9
    by_replica = info["store"]["counts_by_replica"]
    assert [c["intern"]["generations_computed"] for c in by_replica] == [3, 2]  # questions 0,2,4 and 1,3
    assert info["store"]["counts"]["intern"]["generations_computed"] == len(REQS)
    # the trace: one record per request, as one process writes it; no part file left
    assert trace_by_doc(tmp_path / "two.jsonl") == trace_by_doc(tmp_path / "one.jsonl")
    assert not list(tmp_path.glob("two.jsonl.*"))

    # a resume in one process (another N) finds every entry the replicas wrote
    resumed = tiny_lm(tiny_model_dir, tiny_classifier_dir, store=str(store))
    assert answers(resumed.generate_until(REQS)) == expected
    counts = resumed.get_model_info()["tandem"]["store"]["counts"]
    assert sum(c["generations_computed"] + c["scores_computed"] for c in counts.values()) == 0
    resumed.close()

    # a replica killed with -9 (out of memory, say): the next call ends with one line, nothing hangs
    victim = two.replicas.infos[1].pid
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(SystemExit) as exc:
        two.generate_until(REQS)
    message = str(exc.value)
    assert message.startswith(f"tandem: replica 1 of 2 (pid {victim}, GPUs 1) was killed by SIGKILL"), message
    assert f"the run store {store} holds" in message and "Rerun the same command" in message
    assert "\n" not in message
    assert two.replicas.alive() == [False, False]  # the other one was stopped too


def test_a_replica_that_cannot_load_is_one_line_and_leaves_no_worker(tiny_model_dir):
    """An error while a replica loads (here the demo classifier does not fit the tiny intern, found only
    once the intern is loaded) ends the start with one line naming the replica; no worker stays."""
    from tandem_lm_eval.harness.lm import TandemLM

    with pytest.raises(SystemExit) as exc:
        TandemLM(
            mentor=str(tiny_model_dir),
            intern=str(tiny_model_dir),
            dtype="float32",
            progress=False,
            classifier="smollm2-135m-gsm8k",  # the shipped demo classifier, trained for SmolLM2
            data_parallel_size=2,
        )
    message = str(exc.value)
    assert message.startswith("tandem: replica ") and " of 2: classifier " in message, message
    assert "it was trained for intern" in message and "\n" not in message
    assert replica_pids(os.getpid()) == {}


# --- through the stock lm_eval command -------------------------------------------------------------------
def launch(tmp_path: Path, name: str, model_args: str, limit: int) -> subprocess.Popen:
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    args = [str(BIN / "lm_eval"), *arith_args(model_args, limit=limit), "--output_path", str(out / "out")]
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets")}
    log = (out / "log.txt").open("a")
    # a session of its own: Ctrl-C is sent to its process group, as a terminal does
    return subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=out, start_new_session=True
    )


def samples(tmp_path: Path, name: str) -> tuple[dict, dict]:
    out = tmp_path / name / "out"
    data = json.loads(sorted(out.rglob("results_*.json"))[-1].read_text())
    rows = {}
    for f in out.rglob("samples_tandem_test_arith_*.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            rows[r["doc_id"]] = {k: r[k] for k in SAMPLE_KEYS}
    return data["config"]["tandem"], rows


def replica_pids(parent: int) -> dict[int, int]:
    """{replica: pid} of the workers ``parent`` started (they carry TANDEM_REPLICA=<k>)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if (
                not proc.name.isdigit()
                or int((proc / "stat").read_text().split(") ")[1].split()[1]) != parent
            ):
                continue
            for var in (proc / "environ").read_bytes().split(b"\0"):
                if var.startswith(b"TANDEM_REPLICA="):
                    found[int(var.split(b"=", 1)[1])] = int(proc.name)
        except (OSError, IndexError, ValueError):
            continue
    return found


def stop_when_stored(proc: subprocess.Popen, store: Path, at_least: int, act) -> bool:
    """Once the store holds ``at_least`` entries and both replicas run, ``act(pids)``; False if the
    run ended first."""
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        pids = replica_pids(proc.pid)
        if entries(store) >= at_least and len(pids) == 2:
            act(pids)
            return True
        time.sleep(0.01)
    return False


def last_line(tmp_path: Path, name: str) -> str:
    return (tmp_path / name / "log.txt").read_text().strip().splitlines()[-1]


@pytest.mark.slow
def test_replicas_through_lm_eval_stop_cleanly_and_resume(tmp_path, tiny_model_dir, tiny_classifier_dir):
    base = (
        f"mentor={tiny_model_dir},intern={tiny_model_dir},classifier={tiny_classifier_dir},"
        "budgets=[8,16],mentor_num_params=2e9,dtype=float32,mentor_batch_size=1,intern_batch_size=1,"
        "chunk_size=1,progress=false"
    )
    limit = 6  # every document of the fixture task
    one = launch(tmp_path, "one", base, limit)
    assert one.wait(600) == 0, (tmp_path / "one" / "log.txt").read_text()[-3000:]
    _, expected = samples(tmp_path, "one")

    store = tmp_path / "store.sqlite"
    args = f"{base},data_parallel_size=2,store={store},trace_path={tmp_path / 'trace.jsonl'}"
    # Ctrl-C in the terminal: the whole process group gets SIGINT; the workers leave with the parent
    proc = launch(tmp_path, "interrupted", args, limit)
    seen: dict[int, int] = {}
    assert stop_when_stored(
        proc, store, 2, lambda pids: (seen.update(pids), os.killpg(proc.pid, signal.SIGINT))
    )
    assert proc.wait(300) != 0
    line = last_line(tmp_path, "interrupted")
    assert line.startswith("tandem: interrupted after ") and f"the run store {store} holds" in line, line
    assert not any(Path(f"/proc/{pid}").exists() for pid in seen.values())  # no worker left behind

    # a replica killed with -9 mid-run: one line naming it and the store
    proc = launch(tmp_path, "killed", args, limit)
    assert stop_when_stored(proc, store, entries(store) + 2, lambda pids: os.kill(pids[1], signal.SIGKILL))
    assert proc.wait(300) != 0
    line = last_line(tmp_path, "killed")
    assert line.startswith("tandem: replica 1 of 2 (pid ") and "was killed by SIGKILL" in line, line
    assert f"the run store {store} holds" in line, line
    stored = entries(store)
    assert stored < 5 * limit  # stopped before the end (a question stores 4 to 6 entries)

    # the same command again: one process's results, every stored entry served
    proc = launch(tmp_path, "resumed", args, limit)
    assert proc.wait(600) == 0, (tmp_path / "resumed" / "log.txt").read_text()[-3000:]
    cfg, resumed = samples(tmp_path, "resumed")
    assert resumed == expected
    counts = cfg["store"]["counts"]
    assert sum(c["generations_served"] + c["scores_served"] for c in counts.values()) == stored
    assert cfg["summary"]["requests"] == limit
    assert {len(v) for v in trace_by_doc(tmp_path / "trace.jsonl").values()} == {1}
    assert len(trace_by_doc(tmp_path / "trace.jsonl")) == limit


@pytest.mark.slow
def test_replicas_under_a_launcher_give_one_process_results(tmp_path, tiny_model_dir, tiny_classifier_dir):
    """torchrun with 2 ranks, each running 2 replicas over its share of the documents: 4 replicas in all
    give one process's samples and trace, and the summary and store counts cover every replica."""
    from test_ranks import finished
    from test_ranks import launch as launch_ranks

    base = (
        f"mentor={tiny_model_dir},intern={tiny_model_dir},classifier={tiny_classifier_dir},"
        "budgets=[8,16],mentor_num_params=2e9,dtype=float32,mentor_batch_size=1,intern_batch_size=1,"
        "chunk_size=1,progress=false,thresholds=[0.99,0.99,0.99]"
    )
    limit = 5  # odd: the evaluator pads rank 1 with a copy of its last request
    one_cfg, one = finished(
        launch_ranks(tmp_path, "one", f"{base},trace_path={tmp_path / 'one.jsonl'}", 1, limit),
        tmp_path,
        "one",
    )
    args = (
        f"{base},data_parallel_size=2,store={tmp_path / 'store.sqlite'},trace_path={tmp_path / 'four.jsonl'}"
    )
    cfg, four = finished(launch_ranks(tmp_path, "four", args, 2, limit), tmp_path, "four")

    assert four == one  # answers, metrics and costs per document
    assert trace_by_doc(tmp_path / "four.jsonl") == trace_by_doc(tmp_path / "one.jsonl")
    assert not list(tmp_path.glob("four.jsonl.*"))  # every rank's replica parts merged and removed
    for key in ("requests", "mentor_tokens", "intern_tokens", "stage_counts", "early_stops"):
        assert cfg["summary"][key] == one_cfg["summary"][key], key
    assert cfg["replicas"]["data_parallel_size"] == 2 and cfg["replicas"]["total"] == 4
    by_replica = cfg["store"]["counts_by_replica"]
    assert len(by_replica) == 4 and all(c["intern"]["generations_computed"] >= 1 for c in by_replica)
    assert cfg["store"]["counts"]["intern"]["generations_computed"] == limit  # padding computed nothing
