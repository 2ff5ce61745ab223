"""A resumable, model-keyed run store: every generation and every scoring a backend computed, on disk.

A paper-sized run is hours of GPU time. Without a store all of it lives in memory and a crash loses it;
lm-eval's own ``--use_cache`` keys on the request alone, so it would serve one model's answers to
another. Here each entry is keyed by the sha256 of *everything that determines its value*: the model's
fingerprint (weights, engine, dtype, output-changing options, see ``store/keys.py``) and the whole
request. A rerun of the same command serves what is stored and computes only what is missing; a run
with another intern still reuses every mentor entry, because the mentor's keys never mention the intern.

SQLite (stdlib ``sqlite3``) in WAL mode, so several processes can write one file at once: readers never
block writers, every write is one short ``BEGIN IMMEDIATE`` transaction (no read-to-write lock upgrade,
so no deadlock), ``busy_timeout`` makes a writer wait for another instead of failing, and
``INSERT OR IGNORE`` makes a key written by two processes one entry. WAL needs a local file system
(not NFS). ``synchronous=NORMAL``: a killed process (kill -9) loses nothing committed; only a power cut
may lose the last transactions, which are then simply recomputed.

Every value carries its length and sha256, checked on every read: a corrupted entry is reported once,
deleted and treated as missing, so it is recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem_lm_eval.common.disk import DiskFullError, is_disk_full, reason_of
from tandem_lm_eval.common.errors import TandemError

logger = logging.getLogger(__name__)

# "TAND" in the SQLite header (PRAGMA application_id): tells a store from any other SQLite file.
APPLICATION_ID = 0x54414E44
# PRAGMA user_version: bump when the table layout changes (a newer store is then refused, not misread;
# an older one is migrated when opened, see _migrate_v1).
SCHEMA_VERSION = 2
KINDS = ("generation", "scores")
# SQLite's limit on host parameters per statement is 32766 (>= 3.32); stay far below it.
_BATCH = 500

# SQLite's largest page: rows (a few hundred bytes to tens of KB) stay in their page and pack densely
# (appended in rowid order, pages fill up); only rows past ~64 KB spill to overflow pages.
PAGE_SIZE = 65536
# Version 2 keeps rows in a rowid table: version 1's WITHOUT ROWID table stored each row in an index
# b-tree, which keeps at most ~1 KB of a row in its page and spills the rest to an overflow page of its
# own, so a 1.4 KB entry took two 4 KB pages (the file was 1.9x to 3.4x the values it held, measured). A rowid
# table fills pages with whole rows and spills only past ~4 KB.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,     -- the rowid
    key TEXT NOT NULL UNIQUE,   -- sha256 hex of everything that determines the value
    kind TEXT NOT NULL,         -- 'generation' | 'scores'
    role TEXT NOT NULL,         -- 'mentor' | 'intern'
    model TEXT NOT NULL,        -- the model's name as the run gave it (for people: stats, prune)
    fingerprint TEXT NOT NULL,  -- sha256 hex of the model fingerprint (for machines)
    meta TEXT NOT NULL,         -- small JSON: question hash, budget, ... (stats and export)
    value BLOB NOT NULL,
    size INTEGER NOT NULL,      -- len(value)
    checksum TEXT NOT NULL,     -- sha256 hex of value, checked on every read
    created REAL NOT NULL       -- unix time (prune --older-than-days)
);
CREATE INDEX IF NOT EXISTS entries_model ON entries (role, kind, fingerprint);
"""


class StoreError(TandemError, ValueError):
    """A store file that cannot be used (not a store, another schema version, unreadable); the
    message names the file."""


@dataclass(frozen=True)
class StoreEntry:
    """One stored value and what it belongs to (``value``: bytes whose format ``kind`` defines)."""

    key: str
    kind: str
    role: str
    model: str
    fingerprint: str
    value: bytes
    meta: dict[str, Any] = field(default_factory=dict)
    created: float | None = None  # set on read; put_many stamps the current time


@dataclass
class MergeCounts:
    """What ``RunStore.merge_from`` did: sound entries read from the source, added, already held."""

    read: int = 0
    added: int = 0
    already_held: int = 0


def default_store_path() -> Path:
    """``$TANDEM_STORE`` if set, else ``store.sqlite`` in the package's cache folder
    (``$TANDEM_CACHE_DIR``, default ``~/.cache/tandem-lm-eval``, as the demo model uses)."""
    env = os.environ.get("TANDEM_STORE")
    if env:
        return Path(env).expanduser()
    from tandem_lm_eval.data.demo_model import cache_dir

    return cache_dir() / "store.sqlite"


def checksum(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


class RunStore:
    """A store file. ``create=False`` refuses a missing file (the ``store`` subcommands read an existing
    store; a typo should not silently make a new empty one)."""

    def __init__(self, path: str | Path, *, create: bool = True, timeout: float = 120.0) -> None:
        self.path = Path(path).expanduser()
        self.timeout = float(timeout)
        if not self.path.exists():
            if not create:
                raise StoreError(f"no run store at {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif self.path.is_dir():
            raise StoreError(f"run store {self.path} is a folder; give a file path")
        self._lock = threading.Lock()
        self._conn_: sqlite3.Connection | None = None
        self._pid = -1
        self._connect()

    # --- connection -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """The connection of this process (a connection inherited through fork must not be used)."""
        if self._conn_ is not None and self._pid == os.getpid():
            return self._conn_
        try:
            conn = sqlite3.connect(
                str(self.path), timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open run store {self.path}: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            # takes effect only on a new (empty) file, before its first table: large pages pack rows of
            # a few KB with little slack; an existing store keeps its page size
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self._check_or_init(conn)
        except BaseException:
            conn.close()
            raise
        self._conn_, self._pid = conn, os.getpid()
        return conn

    def _check_or_init(self, conn: sqlite3.Connection) -> None:
        def header() -> tuple[int, int]:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            return int(app), int(conn.execute("PRAGMA user_version").fetchone()[0])

        app, version = self._sql(header, "read")
        if app == 0:
            # A new (empty) file: make it a store. Two processes may get here at once: the check is
            # repeated inside the write transaction, and the loser finds the winner's store.
            def init() -> None:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    app2, _ = header()
                    if app2 == 0:
                        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                        if tables:
                            raise StoreError(
                                f"{self.path} is an SQLite database but not a tandem-lm-eval run store; "
                                "give another store= path"
                            )
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise

            self._sql(init, "initialize")
            app, version = self._sql(header, "read")
        if app != APPLICATION_ID:
            raise StoreError(
                f"{self.path} is an SQLite database but not a tandem-lm-eval run store "
                f"(application id {app:#x}); give another store= path"
            )
        if version == 1:
            self._sql(lambda: _migrate_v1(conn), "migrate to schema version 2")
            version = SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"run store {self.path} has schema version {version}; this tandem-lm-eval reads version "
                f"{SCHEMA_VERSION}: use another store= path (or the tandem-lm-eval that wrote it)"
            )
        # WAL persists in the file; setting it again is a no-op. It cannot change inside a transaction.
        mode = self._sql(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0], "set WAL mode")
        if str(mode).lower() != "wal":
            raise StoreError(f"run store {self.path}: could not switch to WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous=NORMAL")

    def _sql(self, fn, what: str):
        """Run ``fn``; SQLite errors become one StoreError naming the file. A lock that outlasts the
        busy timeout on a schema or journal-mode change (SQLite does not always wait there) is retried
        until the timeout, then reported."""
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                return fn()
            except StoreError:
                raise
            except sqlite3.OperationalError as exc:
                if is_disk_full(exc):  # the transaction rolled back: every committed entry is intact
                    raise DiskFullError(
                        self.path,
                        reason_of(exc),
                        f"the store keeps every entry committed before ({what} rolled back)",
                    ) from None
                if "locked" in str(exc) or "busy" in str(exc):
                    if time.monotonic() < deadline:
                        time.sleep(delay)
                        delay = min(delay * 2, 0.5)
                        continue
                    raise StoreError(
                        f"run store {self.path}: {what}: still locked by another process after "
                        f"{self.timeout:.0f} s ({exc})"
                    ) from None
                raise StoreError(f"run store {self.path}: {what}: {exc}") from None
            except sqlite3.DatabaseError as exc:
                if any(s in str(exc) for s in ("not a database", "malformed", "encrypted")):
                    raise StoreError(
                        f"{self.path} is not a usable tandem-lm-eval run store ({exc}); give another "
                        "store= path, or delete the file to start an empty store"
                    ) from None
                raise StoreError(f"run store {self.path}: {what}: {exc}") from None

    def _write(self, fn, what: str):
        """``fn(conn)`` in one short write transaction (BEGIN IMMEDIATE: the write lock is taken up
        front, so two writers queue on busy_timeout instead of deadlocking on a lock upgrade)."""

        def txn():
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                _rollback(conn)
                raise

        with self._lock:
            return self._sql(txn, what)

    def _read(self, fn, what: str):
        with self._lock:
            return self._sql(lambda: fn(self._connect()), what)

    # --- entries --------------------------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The stored value of each key that has a sound entry; corrupted entries are reported once,
        deleted and left out (so their values are computed again)."""
        return {key: value for key, (value, _) in self.get_many_with_meta(keys).items()}

    def get_many_with_meta(self, keys: Iterable[str]) -> dict[str, tuple[bytes, dict[str, Any]]]:
        """``get_many`` with each entry's meta (an undecodable meta reads as empty: the value is sound)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, tuple[bytes, dict[str, Any]]] = {}
        bad: list[tuple[str, str, str]] = []
        for start in range(0, len(wanted), _BATCH):
            part = wanted[start : start + _BATCH]
            marks = ",".join("?" * len(part))
            rows = self._read(
                lambda conn, part=part, marks=marks: conn.execute(
                    f"SELECT key, value, size, checksum, meta FROM entries WHERE key IN ({marks})", part
                ).fetchall(),
                "read entries",
            )
            for key, value, size, digest, meta in rows:
                problem = _problem(value, size, digest)
                if problem:
                    bad.append((key, digest, problem))
                else:
                    found[key] = (bytes(value), _meta_of(meta))
        for key, digest, problem in bad:
            self._drop(key, digest, problem)
        return found

    def discard(self, key: str, reason: str) -> None:
        """Delete an entry whose value could not be decoded (reported once, like a checksum error)."""
        self._drop(key, None, reason)

    def _drop(self, key: str, digest: str | None, reason: str) -> None:
        logger.warning(
            "run store %s: entry %s is corrupted (%s): deleted, it will be computed again",
            self.path,
            key,
            reason,
        )
        if digest is None:
            self._write(lambda conn: conn.execute("DELETE FROM entries WHERE key = ?", (key,)), "delete")
        else:  # only the bad version: never a sound one another process may have written meanwhile
            self._write(
                lambda conn: conn.execute(
                    "DELETE FROM entries WHERE key = ? AND checksum = ?", (key, digest)
                ),
                "delete",
            )

    def put_many(self, entries: Sequence[StoreEntry]) -> int:
        """Write entries in one transaction; a key already stored (by this or another process) is kept
        as it is. Returns how many were new."""
        if not entries:
            return 0
        now = time.time()
        rows = []
        for e in entries:  # an entry read from another store (merge) keeps the time it was made
            if e.kind not in KINDS:
                raise ValueError(f"store entry kind must be one of {KINDS}, got {e.kind!r}")
            value = bytes(e.value)
            rows.append(
                (
                    e.key,
                    e.kind,
                    e.role,
                    e.model,
                    e.fingerprint,
                    json.dumps(e.meta, sort_keys=True, separators=(",", ":")),
                    value,
                    len(value),
                    checksum(value),
                    now if e.created is None else float(e.created),
                )
            )

        def insert(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(f"INSERT OR IGNORE INTO entries ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            return conn.total_changes - before

        return self._write(insert, "write entries")

    def iter_entries(
        self, *, kind: str | None = None, role: str | None = None, fingerprint: str | None = None
    ) -> Iterator[StoreEntry]:
        """Sound entries matching the filters (checksums checked; corrupted ones dropped as in get_many)."""
        where, params = _where(kind=kind, role=role, fingerprint=fingerprint)
        keys = self._read(
            lambda conn: [r[0] for r in conn.execute(f"SELECT key FROM entries{where}", params)],
            "list entries",
        )
        bad = []
        for start in range(0, len(keys), _BATCH):
            part = keys[start : start + _BATCH]
            marks = ",".join("?" * len(part))
            rows = self._read(
                lambda conn, part=part, marks=marks: conn.execute(
                    "SELECT key, kind, role, model, fingerprint, meta, value, size, checksum, created "
                    f"FROM entries WHERE key IN ({marks})",
                    part,
                ).fetchall(),
                "read entries",
            )
            for key, k, r, model, fp, meta, value, size, digest, created in rows:
                problem = _problem(value, size, digest)
                try:
                    meta_dict = json.loads(meta)
                except ValueError:
                    problem = problem or "undecodable meta"
                if problem:
                    bad.append((key, digest, problem))
                    continue
                yield StoreEntry(key, k, r, model, fp, bytes(value), meta_dict, created)
        for key, digest, problem in bad:
            self._drop(key, digest, problem)

    def merge_from(self, source: RunStore) -> MergeCounts:
        """Copy every sound entry of ``source`` that this store lacks (streaming, one transaction per
        batch, so several processes may keep using both files). An entry this store already holds is
        kept as it is: same key, same inputs; for a deterministic engine the same value."""
        counts = MergeCounts()
        batch: list[StoreEntry] = []

        def flush() -> None:
            added = self.put_many(batch)
            counts.added += added
            counts.already_held += len(batch) - added
            batch.clear()

        for entry in source.iter_entries():
            counts.read += 1
            batch.append(entry)
            if len(batch) >= _BATCH:
                flush()
        flush()
        return counts

    # --- housekeeping ---------------------------------------------------------------------------
    def count(self) -> int:
        return int(
            self._read(lambda conn: conn.execute("SELECT count(*) FROM entries").fetchone()[0], "count")
        )

    def file_bytes(self) -> int:
        """The store's size on disk: the database, its write-ahead log and shared-memory index."""
        return sum(
            p.stat().st_size
            for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
            if p.exists()
        )

    def stats(self) -> dict[str, Any]:
        """Entries and value bytes in all and by (kind, role, model, fingerprint); the file size."""
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT kind, role, model, fingerprint, count(*), sum(size), min(created), max(created) "
                "FROM entries GROUP BY kind, role, model, fingerprint ORDER BY role, model, kind"
            ).fetchall(),
            "stats",
        )
        groups = [
            {
                "kind": kind,
                "role": role,
                "model": model,
                "fingerprint": fp,
                "entries": int(n),
                "bytes": int(size or 0),
                "oldest": first,
                "newest": last,
            }
            for kind, role, model, fp, n, size, first, last in rows
        ]
        return {
            "path": str(self.path),
            "file_bytes": self.file_bytes(),
            "entries": sum(g["entries"] for g in groups),
            "bytes": sum(g["bytes"] for g in groups),
            "groups": groups,
        }

    def prune(
        self,
        model: str | None = None,
        kind: str | None = None,
        older_than_days: float | None = None,
        *,
        role: str | None = None,
    ) -> int:
        """Delete the entries matching every given filter (none given: all entries); returns how many.

        ``model`` matches the model's name or its fingerprint (the whole digest or a prefix of at least
        8 characters). The file shrinks only after ``vacuum()``.
        """
        if kind is not None and kind not in KINDS:
            raise StoreError(f"kind must be one of {KINDS}, got {kind!r}")
        clauses, params = [], []
        if model is not None:
            clauses.append("(model = ? OR fingerprint = ? OR (length(?) >= 8 AND fingerprint LIKE ? || '%'))")
            params += [model, model, model, model]
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        if role is not None:
            clauses.append("role = ?")
            params.append(role)
        if older_than_days is not None:
            if older_than_days < 0:
                raise StoreError(f"older_than_days must be >= 0, got {older_than_days}")
            clauses.append("created < ?")
            params.append(time.time() - older_than_days * 86400.0)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return int(
            self._write(lambda conn: conn.execute(f"DELETE FROM entries{where}", params).rowcount, "prune")
        )

    def vacuum(self) -> None:
        """Give the space of deleted entries back to the file system (waits for other writers)."""

        def run() -> None:
            conn = self._connect()
            conn.execute("VACUUM")
            # VACUUM writes through the write-ahead log: fold it into the file and cut it to zero
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        with self._lock:
            self._sql(run, "vacuum")

    def close(self) -> None:
        """Close the connection (a later call opens it again)."""
        with self._lock:
            if self._conn_ is not None and self._pid == os.getpid():
                self._conn_.close()
            self._conn_ = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"


_COLUMNS = "key, kind, role, model, fingerprint, meta, value, size, checksum, created"


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """A version-1 store (WITHOUT ROWID) becomes version 2 in one transaction, every entry kept; several
    processes may open it at once: the version is checked again inside the write lock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if int(conn.execute("PRAGMA user_version").fetchone()[0]) == 1:
            conn.execute("ALTER TABLE entries RENAME TO entries_v1")
            conn.execute("DROP INDEX IF EXISTS entries_model")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"INSERT INTO entries ({_COLUMNS}) SELECT {_COLUMNS} FROM entries_v1")
            conn.execute("DROP TABLE entries_v1")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    logger.info(
        "run store: migrated to schema version %d (the file shrinks at the next vacuum)", SCHEMA_VERSION
    )


def _meta_of(text: str | None) -> dict[str, Any]:
    try:
        meta = json.loads(text or "{}")
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _problem(value: bytes | None, size: int, digest: str) -> str | None:
    if value is None:
        return "no value"
    if len(value) != size:
        return f"length {len(value)}, recorded {size}"
    if checksum(bytes(value)) != digest:
        return "checksum mismatch"
    return None


def _where(**filters: str | None) -> tuple[str, list[str]]:
    clauses = [f"{name} = ?" for name, v in filters.items() if v is not None]
    params = [v for v in filters.values() if v is not None]
    return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # no transaction was open (BEGIN itself failed)
