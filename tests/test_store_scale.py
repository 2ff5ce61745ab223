"""The run store at scale: a version-1 store migrated in place, the file close to the data it holds,
``store merge`` (other nodes' stores into one), two processes writing one store at once, and the
store's write path (no deep copy of token ids, the same bytes as before)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import asdict, fields

import pytest

from tandem_lm_eval.backends.base import Generation
from tandem_lm_eval.store.codec import canonical_json, decode_generation, encode_generation
from tandem_lm_eval.store.run_store import SCHEMA_VERSION, RunStore, StoreEntry, checksum


def entry(i: int, size: int = 1400, role: str = "mentor") -> StoreEntry:
    value = os.urandom(size // 2).hex().encode()[:size]
    return StoreEntry(f"{i:064x}", "generation", role, "m", "f" * 64, value, {"q": i})


V1_SCHEMA = """
CREATE TABLE entries (key TEXT PRIMARY KEY, kind TEXT NOT NULL, role TEXT NOT NULL, model TEXT NOT NULL,
  fingerprint TEXT NOT NULL, meta TEXT NOT NULL, value BLOB NOT NULL, size INTEGER NOT NULL,
  checksum TEXT NOT NULL, created REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX entries_model ON entries (role, kind, fingerprint);
"""


def test_a_version_1_store_is_migrated_with_every_entry(tmp_path):
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute("PRAGMA application_id=0x54414E44")
    conn.execute("PRAGMA user_version=1")
    rows = [entry(i) for i in range(50)]
    conn.executemany(
        "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?)",
        [
            (
                e.key,
                e.kind,
                e.role,
                e.model,
                e.fingerprint,
                "{}",
                e.value,
                len(e.value),
                checksum(e.value),
                7.0,
            )
            for e in rows
        ],
    )
    conn.commit()
    conn.close()
    with RunStore(path) as store:
        assert store.get_many([e.key for e in rows]) == {e.key: e.value for e in rows}
        assert {e.created for e in store.iter_entries()} == {7.0}  # kept, not re-stamped
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert (
        "WITHOUT ROWID"
        not in conn.execute("SELECT sql FROM sqlite_master WHERE name='entries'").fetchone()[0]
    )
    conn.close()
    with RunStore(path) as store:  # opening it again changes nothing
        assert store.count() == 50


def test_the_file_is_close_to_the_values_it_holds(tmp_path):
    """Version 1 (WITHOUT ROWID, 4 KB pages) kept ~1 KB of each row in its page and spilled the rest
    to an overflow page of its own: 1.9x to 3.4x the values. Rows of a few KB now pack into 64 KB pages."""
    with RunStore(tmp_path / "s.sqlite") as store:
        for start in range(0, 1000, 250):
            store.put_many([entry(i, size=4000) for i in range(start, start + 250)])
        store.vacuum()
        values = store.stats()["bytes"]
        assert values == 1000 * 4000
        assert store.file_bytes() / values < 1.3


def test_merge_copies_what_is_missing_and_skips_corrupted_entries(tmp_path, caplog):
    a, b, out = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "out.sqlite"
    with RunStore(a) as sa, RunStore(b) as sb, RunStore(out) as so:
        sa.put_many([entry(i) for i in range(0, 30)])
        sb.put_many([entry(i) for i in range(20, 50)])  # 20..29 in both, with other values
        so.put_many([entry(i) for i in range(45, 55)])
    conn = sqlite3.connect(b)
    conn.execute("UPDATE entries SET value = ? WHERE key = ?", (b"x" * 1400, f"{30:064x}"))  # corrupt
    conn.commit()
    conn.close()
    with RunStore(out) as so, RunStore(a) as sa, RunStore(b) as sb:
        c1 = so.merge_from(sa)
        held_a = sa.get_many([f"{i:064x}" for i in range(30)])
        c2 = so.merge_from(sb)
        assert (c1.read, c1.added, c1.already_held) == (30, 30, 0)
        assert (c2.read, c2.added, c2.already_held) == (29, 14, 15)  # 30 skipped; 20..29, 45..49 held
        got = so.get_many([f"{i:064x}" for i in range(60)])
        assert set(got) == {f"{i:064x}" for i in range(55) if i != 30}
        assert all(got[k] == v for k, v in held_a.items())  # the entry already held is kept
    assert "corrupted" in caplog.text


def test_store_merge_command(tmp_path):
    a, b, out = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "all.sqlite"
    with RunStore(a) as sa, RunStore(b) as sb:
        sa.put_many([entry(i) for i in range(10)])
        sb.put_many([entry(i) for i in range(5, 15)])
    cli = [sys.executable, "-m", "tandem_lm_eval", "store", "merge"]
    proc = subprocess.run([*cli, str(a), str(b), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "holds 15 entries" in proc.stdout
    proc = subprocess.run(
        [*cli, str(tmp_path / "nope.sqlite"), "--out", str(out)], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "no run store at" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*cli, str(out), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode != 0 and "is also --out" in proc.stderr


WRITER = """
import sys
from tandem_lm_eval.store.run_store import RunStore, StoreEntry
path, rank = sys.argv[1], int(sys.argv[2])
store = RunStore(path)
# as two ranks do: each writes its own documents' entries, batch by batch, and both write the shared ones
for start in range(0, 400, 20):
    keys = [i for i in range(start, start + 20) if i % 2 == rank or i % 10 == 0]
    store.put_many([StoreEntry(f"{i:064x}", "scores", "intern", "m", "f" * 64, str(i).encode() * 50) for i in keys])
print(store.count())
"""


def test_two_writers_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(r)], stdout=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    assert [p.wait(120) for p in procs] == [0, 0]
    with RunStore(path) as store:
        got = store.get_many([f"{i:064x}" for i in range(400)])
    assert len(got) == 400 and all(got[f"{i:064x}"] == str(i).encode() * 50 for i in range(400))


def test_generation_encoding_has_every_field_and_the_old_bytes():
    gen = Generation("some text", tuple(range(40000, 40100)), 60, "length", 12, 300)
    blob = encode_generation(gen)
    old = asdict(gen)
    old["token_ids"] = [int(i) for i in gen.token_ids]
    assert blob == canonical_json(old)  # stored entries keep matching
    assert set(json.loads(blob)) == {f.name for f in fields(Generation)}
    assert decode_generation(blob) == gen
    import numpy as np

    np_gen = Generation("t", tuple(np.arange(3, dtype=np.int64)), 3, "stop")
    assert decode_generation(encode_generation(np_gen)) == Generation("t", (0, 1, 2), 3, "stop")


@pytest.mark.parametrize("trace", [False, True])
def test_features_only_over_the_span_the_classifier_reads(trace):
    """The run computes f_t over the classifier's span; a trace (and collect) asks for every span."""
    from fakes import LengthClassifier, ScriptedBackend

    from tandem_lm_eval.backends.base import Message
    from tandem_lm_eval.cascade.policies import make_policy
    from tandem_lm_eval.cascade.prompts import Question
    from tandem_lm_eval.cascade.stages import Cascade
    from tandem_lm_eval.judgment.features import DEFAULT_SPAN, FEATURE_SPANS

    cascade = Cascade(
        ScriptedBackend(),
        ScriptedBackend(),
        make_policy("tandem", (0.99, 0.99, 0.99)),
        (4, 8),
        LengthClassifier(),
        progress=False,
        all_feature_spans=trace,
    )
    (res,) = cascade.run([Question((Message("user", "what is two plus two"),), max_gen_toks=4)])
    want = set(FEATURE_SPANS) if trace else {DEFAULT_SPAN}
    assert all(set(s.features_by_span) == want for s in res.stages)
    (row,) = cascade.explore([Question((Message("user", "what is two plus two"),), max_gen_toks=4)])
    assert all(set(o.record.features_by_span) == set(FEATURE_SPANS) for o in row.stages)
