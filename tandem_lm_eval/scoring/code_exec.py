"""Run untrusted Python programs (model-written code plus its tests) in a limited child process.

Each program gets a fresh temporary working directory, a wall-clock timeout that kills its whole
process group, CPU, memory, file-size, open-file and process limits, and -- where the kernel allows
it -- no network and a PID namespace of its own; as root it also runs as ``nobody``. The exact layers
and their limits are described in ``_sandbox_launcher.py`` and docs/tasks.md. This is a containment
for benchmark code, not a hardened sandbox: without root (or user namespaces) the network and
file-system protections are Python-level only. For untrusted models run evaluations in a container.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

_LAUNCHER = str(Path(__file__).with_name("_sandbox_launcher.py"))
_PROGRAM_FILE = "program.py"
_OUTPUT_TAIL = 2000
_BACKSTOP_S = 5.0


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one program run."""

    timeout_s: float = 10.0  # wall clock, whole process group; CPU time is capped at about the same
    memory_bytes: int = 1 << 30  # address space per process
    max_processes: int = 16  # on top of what the user already runs (exactly this many as nobody)
    max_file_bytes: int = 16 << 20  # largest file the program may write (its output included)
    max_open_files: int = 256
    # Used only when this process runs as root: the uid the program runs as (65534 = nobody).
    sandbox_uid: int | None = 65534
    # Try network / PID namespaces (falls back silently where the kernel refuses).
    isolate: bool = True


@dataclass(frozen=True)
class ExecResult:
    # "passed": ran to the end without an exception; "failed": an exception, a crash or a limit;
    # "timeout": killed at the wall-clock limit.
    status: str
    returncode: int | None
    duration_s: float
    output_tail: str
    # Which kernel-level layers were in force (e.g. ("netns", "pidns", "uid")).
    isolation: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_tail(path: str) -> str:
    """The end of the program's output file. O_NOFOLLOW: the program may have swapped the file for
    a symlink to something only we (root) can read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(fd).st_size
        handle.seek(max(0, size - _OUTPUT_TAIL))
        return handle.read().decode(errors="replace")


def run_program(program: str, limits: SandboxLimits | None = None) -> ExecResult:
    """Execute ``program`` (complete Python source) in a fresh sandboxed process."""
    limits = limits or SandboxLimits()
    workdir = tempfile.mkdtemp(prefix="tandem-sandbox-")
    try:
        Path(workdir, _PROGRAM_FILE).write_text(program, encoding="utf-8")
        if os.geteuid() == 0 and limits.sandbox_uid is not None:
            # The unprivileged program must be able to use its own directory, and nothing else.
            for path in (workdir, os.path.join(workdir, _PROGRAM_FILE)):
                os.chown(path, limits.sandbox_uid, limits.sandbox_uid)
        nonce = secrets.token_hex(16)
        cfg = {**asdict(limits), "workdir": workdir, "program_file": _PROGRAM_FILE, "nonce": nonce}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", _LAUNCHER, json.dumps(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
        timed_out = False
        try:
            # The launcher enforces the limit itself (and cleans up the PID namespace); this is the
            # backstop should the launcher itself hang.
            stdout, stderr = proc.communicate(timeout=limits.timeout_s + _BACKSTOP_S)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            try:
                stdout, stderr = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                # Something outside the group still holds our pipes: stop reading, do not hang.
                for stream in (proc.stdout, proc.stderr):
                    if stream is not None:
                        stream.close()
                proc.wait()
                stdout, stderr = b"", b""
        duration = time.monotonic() - start
        _kill_group(proc)  # leftovers of a program that exited normally (no PID namespace)
        lines = stdout.decode(errors="replace").splitlines()
        reports = [json.loads(line) for line in lines if line.startswith("{")]
        isolation = tuple(reports[0].get("isolation", ())) if reports else ()
        timed_out = timed_out or any(report.get("timed_out") for report in reports)
        passed = not timed_out and proc.returncode == 0 and f"PASSED {nonce}" in lines
        output = (
            _read_tail(os.path.join(workdir, "output.txt")) + stderr.decode(errors="replace")[-_OUTPUT_TAIL:]
        )
        status = "timeout" if timed_out else "passed" if passed else "failed"
        return ExecResult(status, None if timed_out else proc.returncode, duration, output, isolation)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_programs(
    programs: Sequence[str], limits: SandboxLimits | None = None, *, workers: int | None = None
) -> list[ExecResult]:
    """Run many programs, ``workers`` at a time (default: the number of CPUs)."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(programs) < 2:
        return [run_program(p, limits) for p in programs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: run_program(p, limits), programs))
