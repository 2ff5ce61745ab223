"""A full disk, one rule everywhere: stop with one line naming the file, and keep the work so far whole.

Every file a run writes (the run store, the trace and its rank parts, collect's records, lm-eval's results
and samples of a tandem run) meets a full disk the same way: the write that fails is undone (an appended
JSONL file is cut back to the size it had, so no torn line is left; a store transaction rolls back, so
every committed entry stays), and the run stops with ``DiskFullError``: one line naming the file, what it
still holds and how to resume. Going on without the trace would not save anything: the store and the
results live on the same disks, and generations kept only in memory are lost at the next failure.

"Full" is ENOSPC (no space), EDQUOT (the user's quota) and EFBIG (the file-size limit, ``ulimit -f``),
and SQLite's SQLITE_FULL, which is how those reach the run store. Any other write error is not this
rule's: it propagates unchanged.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tandem_lm_eval.common.errors import TandemError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
SQLITE_FULL = 13  # sqlite3's primary result code for "database or disk is full"


class DiskFullError(TandemError, OSError):
    """A write met a full disk (or quota, or file-size limit): one line naming the file and what is kept.

    An ``OSError`` too (with the original errno), so callers that report OSErrors in one line do."""

    def __init__(self, path: str | Path, reason: str, kept: str, code: int = errno.ENOSPC) -> None:
        super().__init__(code, reason)
        self.path, self.reason, self.kept = Path(path), reason, kept
        self.filename = str(path)

    def __str__(self) -> str:
        return self.line()

    def line(self, resume: str | None = None) -> str:
        """The one line; ``resume`` says what a rerun finds (the run store's state) where the caller knows."""
        head = f"disk full writing {self.path} ({self.reason}): {self.kept}"
        return f"{head}; free space and rerun the same command" if resume is None else f"{head}; {resume}"

    def __reduce__(self):  # raised in a replica worker, it reaches the parent whole
        return (type(self), (self.path, self.reason, self.kept, self.errno))


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is a full disk: an OSError with ENOSPC / EDQUOT / EFBIG, or SQLite's SQLITE_FULL."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    code = getattr(exc, "sqlite_errorcode", None)  # sqlite3.Error (Python 3.11+)
    if isinstance(code, int):
        return code & 0xFF == SQLITE_FULL
    return "database or disk is full" in str(exc)


def reason_of(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def append_whole(path: str | Path, data: bytes, kept: str | None = None) -> int:
    """Append ``data`` to ``path`` (created if missing) as one piece: on a full disk the file is cut back
    to its size before the write (no torn last line) and ``DiskFullError`` says so. Returns the bytes
    written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:  # os.write may write less than asked (a signal, a nearly full disk)
                view = view[os.write(fd, view) :]
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            os.ftruncate(fd, start)  # freeing blocks needs no space
            raise DiskFullError(path, reason_of(exc), kept or _kept_lines(path), exc.errno) from None
    finally:
        os.close(fd)
    return len(data)


def _kept_lines(path: Path) -> str:
    return f"{path.name} keeps every whole record written before this one"


@contextmanager
def disk_full_is_one_line(path: str | Path, kept: str) -> Iterator[None]:
    """Turn a full disk met inside the block (an OSError or SQLite's SQLITE_FULL) into ``DiskFullError``
    naming ``path``; the block undoes its own partial write (a rollback, a truncation) before leaving."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:  # noqa: BLE001 - only a full disk is translated; anything else re-raised as is
        if not is_disk_full(exc):
            raise
        code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.ENOSPC
        raise DiskFullError(path, reason_of(exc), kept, code) from None
