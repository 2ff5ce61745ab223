"""RunStore: round trips, corruption (reported, deleted, recomputed), files that are not stores, several
processes writing one store, prune/stats numbers, and the export of mentor insights as a recorded
mentor that RecordedBackend replays."""

import json
import logging
import multiprocessing
import os
import sqlite3
import time

import numpy as np
import pytest
from fakes import ScriptedBackend

from tandem_lm_eval.backends.base import Generation, GenerationRequest, Message, PromptScores
from tandem_lm_eval.cascade.prompts import Question, mentor_prompt
from tandem_lm_eval.cascade.roles import Role
from tandem_lm_eval.store.codec import (
    decode_generation,
    decode_scores,
    encode_generation,
    encode_scores,
)
from tandem_lm_eval.store.export import export_recorded_mentor
from tandem_lm_eval.store.run_store import (
    SCHEMA_VERSION,
    RunStore,
    StoreEntry,
    StoreError,
    checksum,
    default_store_path,
)
from tandem_lm_eval.store.stored_backend import StoredBackend


def entry(key, kind="generation", role="mentor", model="m", fp="f" * 64, value=None, **meta):
    return StoreEntry(
        key, kind, role, model, fp, value if value is not None else f"value of {key}".encode(), meta
    )


def sample_scores(dtype=np.float64, bounds=True):
    rng = np.random.default_rng(0)
    lp = -np.abs(rng.normal(size=7)).astype(dtype)
    ent = np.abs(rng.normal(size=7)).astype(dtype)
    return PromptScores(
        lp,
        ent,
        8,
        entropy_method="topk" if bounds else "exact",
        entropy_bounds=(ent * 0.5, ent * 2) if bounds else None,
        spans={"question": ((1, 4),), "insights": ((5, 7), (7, 8))},
    )


def test_round_trip_of_both_kinds(tmp_path):
    gen = Generation("a b", (5, 6, 7), 2, "length", cached_prompt_tokens=3, prompt_tokens=11)
    scores = [sample_scores(), sample_scores(np.float32, bounds=False)]
    store = RunStore(tmp_path / "s.sqlite")
    assert store.put_many([entry("g", value=encode_generation(gen))]) == 1
    assert (
        store.put_many(
            [entry(f"s{i}", "scores", "intern", value=encode_scores(s)) for i, s in enumerate(scores)]
        )
        == 2
    )
    store.close()

    back = RunStore(tmp_path / "s.sqlite").get_many(["g", "s0", "s1", "missing"])
    assert set(back) == {"g", "s0", "s1"}
    assert decode_generation(back["g"]) == gen
    for i, want in enumerate(scores):
        got = decode_scores(back[f"s{i}"])
        assert got.token_logprobs.dtype == want.token_logprobs.dtype
        assert got.token_logprobs.tobytes() == want.token_logprobs.tobytes()
        assert got.entropies.tobytes() == want.entropies.tobytes()
        assert got.num_tokens == want.num_tokens and got.entropy_method == want.entropy_method
        assert got.spans == want.spans
        if want.entropy_bounds is None:
            assert got.entropy_bounds is None
        else:
            assert all(g.tobytes() == w.tobytes() for g, w in zip(got.entropy_bounds, want.entropy_bounds))
    # not pickle: a decoder fed anything else refuses it
    with pytest.raises(ValueError, match="undecodable scores"):
        decode_scores(back["s0"][:-3])
    with pytest.raises(ValueError, match="undecodable generation"):
        decode_generation(b'{"text": 1}')


def test_a_key_written_twice_is_one_entry_and_the_first_value_stays(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    assert store.put_many([entry("k", value=b"one")]) == 1
    assert store.put_many([entry("k", value=b"two"), entry("k2")]) == 1
    assert store.get_many(["k"]) == {"k": b"one"} and store.count() == 2


def flip_byte_with_sql(path, key):
    conn = sqlite3.connect(str(path))
    (value,) = conn.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
    bad = bytearray(value)
    bad[len(bad) // 2] ^= 0xFF
    conn.execute("UPDATE entries SET value = ? WHERE key = ?", (bytes(bad), key))
    conn.commit()
    conn.close()


def flip_byte_in_file(path, marker: bytes):
    """Corrupt the file itself: flip one byte inside a value, found by its unique text."""
    data = bytearray(path.read_bytes())
    at = data.find(marker)
    assert at > 0 and data.find(marker, at + 1) == -1
    data[at + 3] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["sql", "file"])
def test_a_corrupted_entry_is_reported_once_deleted_and_missing(tmp_path, caplog, how):
    path = tmp_path / "s.sqlite"
    store = RunStore(path)
    store.put_many([entry("good"), entry("bad", value=b"UNIQUE-MARKER-" + os.urandom(32))])
    store.vacuum()  # everything in the main file (not the WAL), so the file edit hits the value
    store.close()
    if how == "sql":
        flip_byte_with_sql(path, "bad")
    else:
        flip_byte_in_file(path, b"UNIQUE-MARKER-")

    store = RunStore(path)
    with caplog.at_level(logging.WARNING, logger="tandem_lm_eval.store.run_store"):
        found = store.get_many(["good", "bad"])
        again = store.get_many(["good", "bad"])
    assert set(found) == set(again) == {"good"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "bad" in warnings[0] and str(path) in warnings[0] and "checksum" in warnings[0]
    assert store.count() == 1 and store.stats()["entries"] == 1


def test_a_corrupted_entry_is_recomputed_not_used(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    fp = {"model": "x"}
    b = StoredBackend(ScriptedBackend(), store, "mentor", fp)
    req = GenerationRequest(mentor_prompt(question("q"), None), 4)
    (first,) = b.generate([req])
    (key,) = [e.key for e in store.iter_entries()]
    flip_byte_with_sql(store.path, key)
    inner = ScriptedBackend()
    b2 = StoredBackend(inner, store, "mentor", fp)
    (second,) = b2.generate([req])
    assert len(inner.generate_calls) == 1 and second == first
    assert b2.counts.generations_computed == 1 and store.count() == 1


def question(text):
    return Question(messages=(Message("user", text),))


def test_files_that_are_not_stores_give_one_clear_error(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match=f"{junk} is not a usable tandem-lm-eval run store"):
        RunStore(junk)

    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(str(other))
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=f"{other} is an SQLite database but not a tandem-lm-eval run store"):
        RunStore(other)

    old = tmp_path / "old.sqlite"
    RunStore(old).close()
    conn = sqlite3.connect(str(old))
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=f"run store {old} has schema version {SCHEMA_VERSION + 1}"):
        RunStore(old)

    with pytest.raises(StoreError, match="no run store at"):
        RunStore(tmp_path / "missing.sqlite", create=False)
    with pytest.raises(StoreError, match="is a folder"):
        RunStore(tmp_path)
    assert issubclass(StoreError, ValueError)
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")  # an empty file is a new store
    assert RunStore(empty).count() == 0


def test_default_location(monkeypatch, tmp_path):
    monkeypatch.delenv("TANDEM_STORE", raising=False)
    monkeypatch.setenv("TANDEM_CACHE_DIR", str(tmp_path / "cache"))
    assert default_store_path() == tmp_path / "cache" / "store.sqlite"
    monkeypatch.setenv("TANDEM_STORE", str(tmp_path / "x.sqlite"))
    assert default_store_path() == tmp_path / "x.sqlite"


def test_model_args_store_and_chunk_size(monkeypatch, tmp_path):
    from tandem_lm_eval.harness.config import ConfigError, TandemConfig

    def cfg(**kw):
        return TandemConfig.from_model_args({"mentor": "/m", "intern": "/i", "mode": "fixed:1", **kw})

    assert cfg().store is None and cfg().chunk_size == 256  # off unless asked for
    assert cfg(store="none").store is None and cfg(store=None).store is None
    assert cfg(store=str(tmp_path / "s.sqlite")).store == str(tmp_path / "s.sqlite")
    monkeypatch.setenv("TANDEM_STORE", str(tmp_path / "env.sqlite"))
    assert cfg(store="default").store == str(tmp_path / "env.sqlite")
    assert cfg(chunk_size="4").chunk_size == 4
    with pytest.raises(ConfigError, match="chunk_size must be >= 1"):
        cfg(chunk_size=0)
    with pytest.raises(ConfigError, match="store must be a file path"):
        cfg(store=3)


# --- several processes, one file ----------------------------------------------------------------
def value_of(key: str) -> bytes:
    return (key * 7).encode()


def writer(path: str, keys: list[str], seed: int, errors) -> None:
    import random

    rng = random.Random(seed)
    try:
        store = RunStore(path, timeout=60)
        i = 0
        while i < len(keys):  # many small transactions, reads between them
            n = rng.randint(1, 4)
            part = keys[i : i + n]
            store.get_many(part)
            store.put_many([entry(k, value=value_of(k)) for k in part])
            i += n
        store.close()
    except BaseException as exc:  # reported to the parent: "database is locked" must not happen
        errors.put(f"{type(exc).__name__}: {exc}")
        raise


def test_processes_writing_one_store_at_once(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    n_proc, per = 4, 120
    # overlapping key sets: process p writes keys [40p, 40p + 120): most keys by two or three processes
    sets = [[f"k{j:04d}" for j in range(40 * p, 40 * p + per)] for p in range(n_proc)]
    procs = [ctx.Process(target=writer, args=(path, keys, p, errors)) for p, keys in enumerate(sets)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    elapsed = time.perf_counter() - t0
    reported = []
    while not errors.empty():
        reported.append(errors.get())
    assert not reported, reported
    assert [p.exitcode for p in procs] == [0] * n_proc
    wanted = sorted({k for keys in sets for k in keys})
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT key, value, checksum FROM entries ORDER BY key").fetchall()
    conn.close()
    assert [r[0] for r in rows] == wanted  # every key once
    assert all(bytes(v) == value_of(k) and c == checksum(value_of(k)) for k, v, c in rows)
    assert elapsed < 100


# --- stats and prune ----------------------------------------------------------------------------
def test_stats_and_prune_numbers(tmp_path):
    store = RunStore(tmp_path / "s.sqlite")
    a, b = "a" * 64, "b" * 64
    store.put_many(
        [entry(f"ga{i}", fp=a, model="big", value=b"x" * 10) for i in range(3)]
        + [entry(f"sa{i}", "scores", "intern", fp=a, model="big", value=b"y" * 100) for i in range(2)]
        + [entry(f"gb{i}", fp=b, model="small", value=b"z" * 7) for i in range(4)]
    )
    stats = store.stats()
    assert stats["entries"] == 9 and stats["bytes"] == 30 + 200 + 28
    assert stats["file_bytes"] == store.file_bytes() > 0
    groups = {(g["kind"], g["role"], g["model"]): (g["entries"], g["bytes"]) for g in stats["groups"]}
    assert groups == {
        ("generation", "mentor", "big"): (3, 30),
        ("scores", "intern", "big"): (2, 200),
        ("generation", "mentor", "small"): (4, 28),
    }
    assert store.prune(kind="scores") == 2
    assert store.prune(model="bbbbbbbb") == 4  # a fingerprint prefix
    assert store.prune(model="bbb") == 0  # too short to mean a fingerprint
    conn = sqlite3.connect(str(store.path))
    conn.execute("UPDATE entries SET created = ? WHERE key = 'ga0'", (time.time() - 10 * 86400,))
    conn.commit()
    conn.close()
    assert store.prune(older_than_days=5) == 1
    assert store.prune(model="big", kind="generation") == 2
    assert store.count() == 0
    before = store.file_bytes()
    store.vacuum()
    assert store.file_bytes() < before  # the deleted entries' space is given back


# --- export as a recorded mentor ------------------------------------------------------------------
SCRIPT = {"question one": 5, "question two": 30, "question three": 12}


def run_stored_mentor(store, fp_name="mentor"):
    from tandem_lm_eval.cascade.policies import make_policy
    from tandem_lm_eval.cascade.stages import Cascade

    mentor = StoredBackend(
        ScriptedBackend(script_len=dict(SCRIPT)), store, "mentor", {"model": fp_name}, num_params=32e9
    )
    intern = StoredBackend(ScriptedBackend(default_len=3), store, "intern", {"model": "intern"})
    cascade = Cascade(
        Role(mentor, params=32e9),
        Role(intern, params=7),
        make_policy("fixed:2"),
        (8, 16),
        None,
        progress=False,
    )
    return cascade.run([question(t) for t in SCRIPT])


def test_export_is_a_recorded_mentor_that_serves_the_same_tokens(tmp_path, tiny_model_dir):
    from tandem_lm_eval.backends.recorded_mentor import RecordedBackend
    from tandem_lm_eval.cascade.policies import make_policy
    from tandem_lm_eval.cascade.stages import Cascade
    from tandem_lm_eval.cli.commands import run_subcommand
    from tandem_lm_eval.data.records import load_records

    store = RunStore(tmp_path / "s.sqlite")
    live = run_stored_mentor(store)
    out = tmp_path / "mentor.jsonl"
    assert (
        run_subcommand(["store", "export", "--store", str(store.path), "--role", "mentor", "--out", str(out)])
        == 0
    )
    records = load_records([out])
    assert len(records) == 3
    by_len = sorted(len(r.mentor.token_ids) for r in records)
    assert by_len == [5, 12, 16]  # the longest generation of each question
    assert {r.mentor.finished for r in records if len(r.mentor.token_ids) < 16} == {True}
    assert all(r.mentor.num_params == 32e9 and r.mentor.model == "scripted" for r in records)

    recorded = RecordedBackend(str(out), tokenizer=str(tiny_model_dir))
    cascade = Cascade(
        Role(recorded, params=32e9),
        Role(ScriptedBackend(default_len=3), params=7),
        make_policy("fixed:2"),
        (8, 16),
        None,
        progress=False,
    )
    replay = cascade.run([question(t) for t in SCRIPT])
    assert [r.mentor.token_ids for r in replay] == [r.mentor.token_ids for r in live]
    assert [r.mentor.finished for r in replay] == [r.mentor.finished for r in live]
    assert [r.cost.mentor_tokens for r in replay] == [r.cost.mentor_tokens for r in live]
    assert recorded.num_parameters == 32e9


def test_export_never_mixes_mentors_and_store_commands(tmp_path, capsys):
    from tandem_lm_eval.cli.commands import run_subcommand

    store = RunStore(tmp_path / "s.sqlite")
    run_stored_mentor(store, "mentor-a")
    run_stored_mentor(store, "mentor-b")
    out = tmp_path / "m.jsonl"
    args = ["store", "export", "--store", str(store.path), "--role", "mentor", "--out", str(out)]
    assert run_subcommand(args) == 2
    assert "holds generations of 2 mentors" in capsys.readouterr().err and not out.exists()
    with pytest.raises(StoreError, match="holds generations of 2 mentors"):
        export_recorded_mentor(store, out)
    fps = {g["fingerprint"] for g in store.stats()["groups"] if g["role"] == "mentor"}
    assert export_recorded_mentor(store, out, model=sorted(fps)[0][:12]) == 3

    assert run_subcommand(["store", "stats", "--store", str(store.path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["entries"] == store.count() > 0
    assert run_subcommand(["store", "stats", "--store", str(store.path)]) == 0
    assert "entries" in capsys.readouterr().out
    assert run_subcommand(["store", "prune", "--store", str(store.path)]) == 2  # no filter: refused
    assert "give a filter" in capsys.readouterr().err
    intern_entries = sum(g["entries"] for g in store.stats()["groups"] if g["role"] == "intern")
    assert run_subcommand(["store", "prune", "--store", str(store.path), "--role", "intern"]) == 0
    assert f"deleted {intern_entries} entries" in capsys.readouterr().out
    assert run_subcommand(["store", "prune", "--store", str(store.path), "--all"]) == 0
    assert store.count() == 0
    assert run_subcommand(["store", "stats", "--store", str(tmp_path / "nope.sqlite")]) == 2
    assert "no run store at" in capsys.readouterr().err
