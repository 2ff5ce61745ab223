"""A full disk is one line, and nothing generated is lost (issue 21 item 7): one rule (common/disk.py) for
the run store, the trace and its rank parts, records and lm-eval's results files. Unit tests inject the
fault; the end-to-end test fills a real small tmpfs under the stock ``lm_eval`` command."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from test_e2e_cli import arith_args, lm_eval, results_and_samples
from test_secrets import ScriptedChat

from tandem_lm_eval.common import disk
from tandem_lm_eval.common.disk import DiskFullError, append_whole, is_disk_full
from tandem_lm_eval.data.records import QuestionRecord, iter_records, write_records
from tandem_lm_eval.harness.trace import merge_parts, sort_prefix
from tandem_lm_eval.store.run_store import RunStore, StoreEntry


def record(i: int) -> QuestionRecord:
    return QuestionRecord(question_hash=f"q{i}", question=f"question {i} " + "x" * 200, stages=[])


def failing_write(after_bytes: int, code: int = errno.ENOSPC):
    """os.write that writes ``after_bytes`` then fails with ``code`` (a disk that fills mid-write)."""
    real = os.write
    left = [after_bytes]

    def write(fd, data):
        if left[0] <= 0:
            raise OSError(code, os.strerror(code))
        n = real(fd, bytes(data[: left[0]]))
        left[0] -= n
        return n

    return write


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_an_append_that_meets_a_full_disk_leaves_the_file_as_it_was(tmp_path, monkeypatch, code):
    path = tmp_path / "records.jsonl"
    write_records(path, [record(0), record(1)])
    before = path.read_bytes()
    monkeypatch.setattr(disk.os, "write", failing_write(150, code))  # a torn third line, on disk
    with pytest.raises(DiskFullError) as info:
        write_records(path, [record(2), record(3)])
    assert path.read_bytes() == before  # no torn line: the two records kept whole
    assert [r.question_hash for r in iter_records(path)] == ["q0", "q1"]
    line = str(info.value)
    assert "\n" not in line and str(path) in line and "keeps every whole record" in line
    assert isinstance(info.value, OSError) and info.value.errno == code


def test_another_write_error_is_not_this_rules(tmp_path, monkeypatch):
    monkeypatch.setattr(disk.os, "write", failing_write(0, errno.EIO))
    with pytest.raises(OSError) as info:
        append_whole(tmp_path / "x", b"data\n")
    assert not isinstance(info.value, DiskFullError) and info.value.errno == errno.EIO


def test_a_merge_that_meets_a_full_disk_keeps_the_trace_and_the_parts(tmp_path, monkeypatch):
    trace = tmp_path / "trace.jsonl"
    write_records(trace, [record(0)])
    before = trace.read_bytes()
    parts = []
    for rank in range(2):
        part = tmp_path / f"trace.jsonl.rank{rank}-of-2.part"
        lines = "".join(f"{sort_prefix(0, d, d)}{record(d).to_json()}\n" for d in range(rank, 6, 2))
        part.write_text(lines)
        parts.append((part, part.stat().st_size))
    monkeypatch.setattr(disk.os, "write", failing_write(300))
    with pytest.raises(DiskFullError, match="rank parts .* are left beside it"):
        merge_parts(trace, parts)
    assert trace.read_bytes() == before
    assert all(p.is_file() and p.stat().st_size == n for p, n in parts)
    monkeypatch.undo()  # space freed: the same merge completes
    written, missing = merge_parts(trace, parts)
    assert written == 6 and not missing
    assert [r.question_hash for r in iter_records(trace)] == ["q0", *(f"q{d}" for d in range(6))]


def test_sqlites_full_error_is_a_full_disk():
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = 13  # as sqlite3 sets it (SQLITE_FULL)
    assert is_disk_full(exc)
    other = sqlite3.OperationalError("database is locked")
    other.sqlite_errorcode = 5
    assert not is_disk_full(other) and not is_disk_full(ValueError("x"))


def entry(i: int, size: int = 100) -> StoreEntry:
    return StoreEntry(f"k{i}", "generation", "mentor", "m", "fp", os.urandom(size), {})


def test_the_store_on_a_full_disk_stops_and_keeps_its_committed_entries(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "store.sqlite")
    store.put_many([entry(0), entry(1)])

    real_write = store._write

    def full(fn, what):
        def failing(conn):
            raise _sqlite_full()

        return real_write(failing, what)

    monkeypatch.setattr(store, "_write", full)
    with pytest.raises(DiskFullError, match=r"store\.sqlite .*keeps every entry committed before"):
        store.put_many([entry(2)])
    monkeypatch.undo()
    assert sorted(store.get_many(["k0", "k1", "k2"])) == ["k0", "k1"]


def _sqlite_full() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = 13
    return exc


def test_a_results_file_lm_eval_cannot_finish_is_removed_and_one_line(tmp_path, monkeypatch):
    import lm_eval.loggers.evaluation_tracker as tracker_module

    from tandem_lm_eval.harness.registration import patch_results_folder

    patch_results_folder(tracker_module)
    tracker = tracker_module.EvaluationTracker(output_path=str(tmp_path / "out"))
    tracker.general_config_tracker.log_experiment_args(
        "tandem", {"mentor": "m", "intern": "i"}, None, None, False
    )
    real = Path.write_text

    def torn(self, text, *args, **kwargs):
        real(self, text[:10], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", torn)
    results = {"config": {"model_args": {"mentor": "m"}}, "results": {}, "configs": {}}
    with pytest.raises(SystemExit) as info:
        tracker.save_results_aggregated(results=results, samples=None)
    line = str(info.value)
    assert line.startswith("tandem: disk full writing ") and "results_" in line and "\n" not in line
    assert not list((tmp_path / "out").rglob("results_*.json"))  # no torn results file left


# --- a real small tmpfs, the stock lm_eval command ---------------------------------------------------
class LongAnswers(ScriptedChat):
    answer = "The answer is 4. " + "Reasoning goes on and on. " * 3000  # ~80 KB per answer


LONG = ["--gen_kwargs", "max_gen_toks=20000"]  # the task's 12-token answers would never fill a disk


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_run_that_fills_the_disk_ends_in_one_line_and_resumes(tmp_path, small_tmpfs, tiny_model_dir):
    server = ThreadingHTTPServer(("127.0.0.1", 0), LongAnswers)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    trace, store = small_tmpfs / "trace.jsonl", small_tmpfs / "store.sqlite"
    model_args = (
        f"mentor=scripted,mentor_backend=openai,mentor_base_url=http://127.0.0.1:{port}/v1,mentor_server=openai,"
        f"mentor_endpoint=chat,mentor_tokenizer={tiny_model_dir},mentor_max_context=100000,mentor_num_params=2e9,"
        f"intern={tiny_model_dir},mode=mentor_only,progress=false,chunk_size=1,trace_path={trace},store={store}"
    )
    try:
        proc = lm_eval(arith_args(model_args, limit=6) + LONG, tmp_path, timeout=600)
        assert proc.returncode != 0
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("tandem: disk full writing "), proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        assert "No space left on device" in last or "disk is full" in last
        # what was written is whole: every trace line parses, the store opens with sound entries
        lines = trace.read_bytes().split(b"\n") if trace.exists() else [b""]
        assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
        kept = RunStore(store).count()
        assert kept >= 1 and len(lines) - 1 <= kept
        # space freed: the same command completes, serving what the store kept
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
        again = lm_eval(arith_args(model_args, limit=6) + LONG, tmp_path, timeout=600)
        assert again.returncode == 0, again.stderr[-2000:]
        data, samples = results_and_samples(tmp_path)
        assert len(samples["tandem_test_arith"]) == 6
        assert data["config"]["tandem"]["store"]["counts"]["mentor"]["generations_served"] == kept
        assert [r.question_hash for r in iter_records(trace)]  # the trace, whole
    finally:
        server.shutdown()
        server.server_close()
