"""The hidden vectors of a record file, in a side file next to it: ``runs/train.jsonl`` ->
``runs/train.hidden.sqlite``.

``collect --hidden-layers`` writes the intern's hidden vectors of every (question, stage) here, and
``complete-hidden`` adds them to an existing collect (or the vectors of a LoRA-adapted intern), so one
collect serves every judge (``tandem-v2``, ``hidden``, ``hidden_lora``). A JSONL line per question
would be the wrong place: 4 stages x 2 positions x 3,584 units of a 7B intern are 28,672 numbers.

Each vector is one row keyed by (question hash, stage, vector name); the name says the layer, the
position and the adapter (``common/hidden_keys.py``). Values are float16 (the judges standardize their
inputs; float16 keeps 3 significant digits), or float32 for a vector with a value beyond float16's
range (some models have "massive activations" in middle layers). SQLite (stdlib), one transaction per
write: a killed run keeps every chunk written before, and the record file is written after its vectors,
so a record in the file has its vectors. ``meta`` holds the intern's name, layer count and hidden size.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tandem_lm_eval.common.errors import TandemError

_FLOAT16_MAX = float(np.finfo(np.float16).max)
# A rowid table with large pages: a vector's bytes stay on the row's page (a WITHOUT ROWID table, or
# small pages, would put each kB-sized vector on an overflow page of its own: ~4x the bytes).
_SCHEMA = """
PRAGMA page_size = 16384;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (
    question_hash TEXT NOT NULL,
    stage INTEGER NOT NULL,
    key TEXT NOT NULL,            -- layer<L>@<position>[+lora:<adapter>]
    prompt_tokens INTEGER NOT NULL,  -- the rendered intern prompt's length (a check, not a key)
    dtype TEXT NOT NULL,          -- '<f2' or '<f4'
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS vectors_row ON vectors (question_hash, stage, key);
CREATE INDEX IF NOT EXISTS vectors_key ON vectors (key);
"""


class HiddenFileError(TandemError, ValueError):
    """A hidden side file that is missing, unreadable, or for another intern."""


@dataclass(frozen=True)
class HiddenRow:
    question_hash: str
    stage: int
    key: str
    prompt_tokens: int
    vector: np.ndarray


def hidden_path_for(records_path: str | Path) -> Path:
    """The side file of a record file: ``x.jsonl`` / ``x.jsonl.gz`` -> ``x.hidden.sqlite``."""
    path = Path(records_path)
    name = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return path.with_name(name + ".hidden.sqlite")


def encode_vector(vector: np.ndarray) -> tuple[str, bytes]:
    """float16 bytes, or float32 when a value does not fit float16 (never an inf)."""
    v = np.asarray(vector, dtype=np.float32)
    if not np.isfinite(v).all():
        raise HiddenFileError("a hidden vector has NaN or infinite values")
    dtype = "<f2" if float(np.abs(v).max(initial=0.0)) < _FLOAT16_MAX else "<f4"
    return dtype, v.astype(dtype).tobytes()


def decode_vector(dtype: str, data: bytes) -> np.ndarray:
    if dtype not in ("<f2", "<f4"):
        raise HiddenFileError(f"unknown vector dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype).astype(np.float32)


class HiddenFile:
    """One side file of hidden vectors (see the module docstring)."""

    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise HiddenFileError(
                f"no hidden vectors at {self.path}: collect with --hidden-layers, or add them to the records "
                "with `tandem-lm-eval complete-hidden` (docs/classifier.md)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), timeout=60)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise HiddenFileError(f"{self.path}: not a hidden-vector file ({exc})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> HiddenFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- meta ---------------------------------------------------------------------------------------
    def meta(self) -> dict:
        return {name: json.loads(value) for name, value in self._db.execute("SELECT name, value FROM meta")}

    def set_meta(self, **values) -> None:
        """Record the intern's identity; refuses values that differ from ones already there."""
        have = self.meta()
        for name, value in values.items():
            if name in have and have[name] != value:
                raise HiddenFileError(
                    f"{self.path} holds vectors with {name}={have[name]!r}, this run has {value!r}: "
                    "use another file for another intern"
                )
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    # --- vectors ------------------------------------------------------------------------------------
    def put_many(self, rows: Iterable[HiddenRow]) -> int:
        data = []
        for r in rows:
            dtype, blob = encode_vector(r.vector)
            data.append((r.question_hash, int(r.stage), r.key, int(r.prompt_tokens), dtype, blob))
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors (question_hash, stage, key, prompt_tokens, dtype, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                data,
            )
        return len(data)

    def read_key(self, key: str) -> dict[tuple[str, int], np.ndarray]:
        """Every vector named ``key``, by (question hash, stage)."""
        rows = self._db.execute("SELECT question_hash, stage, dtype, data FROM vectors WHERE key = ?", (key,))
        return {(q, int(t)): decode_vector(d, b) for q, t, d, b in rows}

    def prompt_tokens(self, key: str) -> dict[tuple[str, int], int]:
        rows = self._db.execute(
            "SELECT question_hash, stage, prompt_tokens FROM vectors WHERE key = ?", (key,)
        )
        return {(q, int(t)): int(n) for q, t, n in rows}

    def keys(self) -> dict[str, int]:
        """Vector names and how many vectors each has."""
        return dict(self._db.execute("SELECT key, COUNT(*) FROM vectors GROUP BY key ORDER BY key"))

    def has_all(self, question_hash: str, stages: Sequence[int], keys: Sequence[str]) -> bool:
        """Whether every (stage, name) has a vector, whatever prompt it was made from."""
        return self.has_current(question_hash, {int(t): 0 for t in stages}, keys)

    def has_current(self, question_hash: str, prompt_tokens: dict[int, int], keys: Sequence[str]) -> bool:
        """Whether every stage of ``prompt_tokens`` (stage -> the record's prompt length) has a vector
        of every name in ``keys``, made from a prompt of that length: a vector of another length is stale
        (made from another x_t, e.g. of an earlier collect into the same file) and does not count."""
        rows = self._db.execute(
            "SELECT stage, key, prompt_tokens FROM vectors WHERE question_hash = ?", (question_hash,)
        ).fetchall()
        have = {(int(t), k): int(n) for t, k, n in rows}
        return all(
            (t, k) in have and (not n or have[(t, k)] == n) for t, n in prompt_tokens.items() for k in keys
        )

    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def copy_to(self, path: str | Path, keys: Sequence[str] | None = None) -> HiddenFile:
        """A new side file with the same meta and vectors (all, or those named ``keys``)."""
        other = HiddenFile(path, create=True)
        other.set_meta(**self.meta())
        for key in keys if keys is not None else list(self.keys()):
            tokens = self.prompt_tokens(key)
            other.put_many(
                HiddenRow(q, t, key, tokens[(q, t)], v) for (q, t), v in self.read_key(key).items()
            )
        return other


def stale_vectors(
    expected: dict[tuple[str, int], int], stored: dict[tuple[str, int], int]
) -> list[tuple[str, int]]:
    """(question hash, stage) of the stored vectors whose prompt length is not the record's: ``expected``
    and ``stored`` map (question hash, stage) to a prompt length in tokens (0 in a record: unknown)."""
    return sorted(k for k, n in stored.items() if expected.get(k) and expected[k] != n)
