"""A helper process spoken to in JSON lines, with a hard wall-clock timeout per request.

Used where a computation can hang inside C code (sympy on a huge power) that no in-process timeout
(signal alarm, thread) can interrupt: on a timeout the process is killed and started again. Each
request is one line out and one line back (a line over ``max_line_bytes`` counts as a crash: the
reply is read with a bound); a lock makes one worker safe to share between threads.
The worker is a plain ``python FILE`` subprocess, not ``multiprocessing``, so it never re-imports the
caller's ``__main__`` script (scripts without an ``if __name__ == "__main__"`` guard stay safe).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from tandem_lm_eval.common.errors import TandemError


class WorkerTimeout(TandemError):
    """The worker did not answer in time (it has been killed)."""


class WorkerCrashed(TandemError):
    """The worker exited or wrote something that is not a reply (it has been killed)."""


class LineWorker:
    """One helper process; started lazily, restarted after a timeout or crash."""

    def __init__(
        self, argv: Sequence[str], *, startup_timeout_s: float = 120.0, max_line_bytes: int = 16 << 20
    ) -> None:
        self._argv = [sys.executable, *argv]
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self.restarts = 0
        self.max_line_bytes = max_line_bytes

    def _read_line(self, deadline: float) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerTimeout
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise WorkerTimeout
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerCrashed("worker exited")
            self._buffer += chunk
            if len(self._buffer) > self.max_line_bytes:
                # A reply is a short JSON line; whatever this is, it is not one: never hold it all.
                raise WorkerCrashed(f"worker wrote over {self.max_line_bytes} bytes without a newline")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _start(self) -> None:
        self._buffer = b""
        # stderr is inherited: a worker's traceback is worth seeing in the run's log.
        self._proc = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        try:
            hello = json.loads(self._read_line(time.monotonic() + self._startup_timeout_s))
        except (WorkerTimeout, WorkerCrashed, ValueError) as exc:
            self._kill()
            raise WorkerCrashed(f"worker {self._argv[1:]} did not start: {exc!r}") from exc
        if not hello.get("ready"):
            self._kill()
            raise WorkerCrashed(f"unexpected worker greeting {hello!r}")

    def _kill(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            os.killpg(proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def request(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request and wait at most ``timeout_s`` for its reply (start-up not counted)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._kill()
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps(payload).encode() + b"\n")
                self._proc.stdin.flush()
                reply = json.loads(self._read_line(time.monotonic() + timeout_s))
            except WorkerTimeout:
                self._kill()
                self.restarts += 1
                raise
            except (WorkerCrashed, BrokenPipeError, ValueError) as exc:
                self._kill()
                self.restarts += 1
                raise WorkerCrashed(repr(exc)) from exc
            return reply

    def close(self) -> None:
        with self._lock:
            self._kill()
