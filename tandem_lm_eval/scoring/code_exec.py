"""Run untrusted Python programs (model-written code plus its tests) in a limited child process.

The host side of the sandbox. It trusts nothing that comes back: the program's source goes to the
launcher (``_sandbox_launcher.py``) on a pipe and the launcher's one-line JSON report comes back on
another, read with a size cap and a deadline; the host never opens a file of the program's. A report
that is missing, too long, not JSON or not of the expected shape makes that answer ``failed``: a
program can fail itself, never the run. Which protections were active is recorded in every result
(``ExecResult.isolation``), warned about once when one is missing, and can be required
(``TANDEM_SANDBOX_REQUIRE``). The layers and their limits: docs/tasks.md, "The code sandbox".

Containment for benchmark code written by a model, not a proof against a model trying to cheat: a
program can always lie about its own result from inside its process (an object whose ``__eq__``
answers True passes any ``assert``), so pass@1 assumes a non-adversarial model.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from tandem_lm_eval.common.errors import TandemError

_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_launcher.py")
_OUTPUT_TAIL = 2000
_BACKSTOP_S = 10.0  # the launcher enforces the limit; this catches a launcher that hangs itself
_REPORT_CAP = 64 << 10  # the launcher's report: the output tail and a few fields
_STDERR_CAP = 4096
MAX_PROGRAM_CHARS = 8 << 20  # far above any answer; the launcher reads at most 64 MiB
PROTECTIONS = ("network", "pid", "mount", "uid", "cgroup")
REQUIRE_ENV = "TANDEM_SANDBOX_REQUIRE"
CGROUP_ENV = "TANDEM_SANDBOX_CGROUP"
UID_BASE_ENV = "TANDEM_SANDBOX_UID_BASE"
_DEFAULT_UID_BASE = 2_000_000_000  # far above any real account; 1024 uids from here
_UID_POOL_SIZE = 1024
_log = logging.getLogger(__name__)


class SandboxError(TandemError):
    """The sandbox cannot run code as the user asked (a required protection is unavailable, a bad
    ``TANDEM_SANDBOX_*`` value)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one program run."""

    timeout_s: float = 10.0  # wall clock, whole sandbox; CPU time is capped at about the same
    memory_bytes: int = 1 << 30  # address space per process; in total where a cgroup is delegated
    max_processes: int = 16  # counted for the sandbox's own uid (or user namespace, or cgroup)
    max_file_bytes: int = 16 << 20  # largest single file the program may write
    max_disk_bytes: int = 64 << 20  # working directory + /tmp + /dev/shm together (private tmpfs)
    max_open_files: int = 256
    # "auto": as root, network/PID/mount namespaces and a uid from the pool; otherwise a user
    # namespace. "user": always through a user namespace with a one-uid map (what a non-root user
    # gets). "off": none (what a default Docker container or a locked-down kernel allows).
    namespaces: Literal["auto", "user", "off"] = "auto"
    # As root: run as a uid of its own from the pool (False runs as the host's uid: tests only).
    sub_uid: bool = True
    # Protections that must be active, else nothing runs (None: from $TANDEM_SANDBOX_REQUIRE).
    require: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Isolation:
    """Which protections were active for one run (as the launcher set them up)."""

    network_namespace: bool = False
    pid_namespace: bool = False
    mount_namespace: bool = False
    user_namespace: bool = False
    uid: int | None = None  # the uid the program ran as (seen from the host), when not the host's
    distinct_uid: bool = False  # a uid of this sandbox's own (root's pool)
    fresh_proc: bool = False
    private_tmp: tuple[str, ...] = ()
    disk_limit_bytes: int | None = None  # the private tmpfs' size
    cgroup: bool = False
    cgroup_memory_bytes: int | None = None
    cgroup_max_processes: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def active(self) -> dict[str, bool]:
        return {
            "network": self.network_namespace,
            "pid": self.pid_namespace and self.fresh_proc,  # hides the evaluator only with its own /proc
            "mount": self.mount_namespace,
            "uid": self.distinct_uid or self.user_namespace,
            "cgroup": self.cgroup,
        }

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(name for name, on in self.active.items() if not on)

    def as_dict(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "missing": list(self.missing),
            "uid": self.uid,
            "fresh_proc": self.fresh_proc,
            "private_tmp": list(self.private_tmp),
            "disk_limit_bytes": self.disk_limit_bytes,
            "cgroup_memory_bytes": self.cgroup_memory_bytes,
            "cgroup_max_processes": self.cgroup_max_processes,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class ExecResult:
    # "passed": ran to the end without an exception; "failed": an exception, a crash, a limit or a
    # report the host could not trust; "timeout": killed at the wall-clock limit.
    status: str
    returncode: int | None
    duration_s: float
    output_tail: str
    isolation: Isolation = field(default_factory=Isolation)
    reason: str = ""  # why the host failed it, when the report itself was unusable

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# ---------------------------------------------------------------- options


def required_protections(limits: SandboxLimits) -> tuple[str, ...]:
    """The protections that must be active: ``limits.require`` or ``$TANDEM_SANDBOX_REQUIRE``
    (comma-separated names, or ``all``)."""
    if limits.require is not None:
        names = tuple(limits.require)
    else:
        text = os.environ.get(REQUIRE_ENV, "").strip()
        names = PROTECTIONS if text == "all" else tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in PROTECTIONS]
    if unknown:
        raise SandboxError(
            f"{REQUIRE_ENV}: unknown protection(s) {', '.join(unknown)}; choose from {', '.join(PROTECTIONS)} or 'all'"
        )
    return names


def _cgroup_parent() -> str | None:
    """The delegated cgroup v2 directory named by ``$TANDEM_SANDBOX_CGROUP`` (memory and pids in
    its ``cgroup.subtree_control``), or None."""
    path = os.environ.get(CGROUP_ENV, "").strip()
    if not path:
        return None
    try:
        with open(os.path.join(path, "cgroup.subtree_control"), encoding="ascii") as handle:
            controllers = handle.read().split()
    except OSError as exc:
        raise SandboxError(f"{CGROUP_ENV}={path}: not a cgroup v2 directory ({exc.strerror})") from None
    if not {"memory", "pids"} <= set(controllers):
        raise SandboxError(
            f"{CGROUP_ENV}={path}: 'memory' and 'pids' must be enabled in its cgroup.subtree_control"
        )
    return path


class UidPool:
    """One uid per concurrent sandbox (root only). A uid is taken by binding an abstract unix socket
    named after it, so evaluator processes on one machine never share one; the kernel frees the
    name when the holder exits, so a crashed evaluator leaks nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, socket.socket] = {}

    def _base(self) -> int:
        text = os.environ.get(UID_BASE_ENV, "")
        try:
            base = int(text) if text else _DEFAULT_UID_BASE
        except ValueError:
            raise SandboxError(f"{UID_BASE_ENV}={text!r}: not an integer uid") from None
        if not 1000 <= base <= (1 << 32) - 2 - _UID_POOL_SIZE:
            raise SandboxError(
                f"{UID_BASE_ENV}={base}: must be between 1000 and {(1 << 32) - 2 - _UID_POOL_SIZE}"
            )
        return base

    def acquire(self) -> int:
        base = self._base()
        with self._lock:
            for uid in range(base, base + _UID_POOL_SIZE):
                if uid in self._held:
                    continue
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.bind(f"\0tandem-lm-eval-sandbox-uid-{uid}")
                except OSError:
                    sock.close()
                    continue
                self._held[uid] = sock
                return uid
        raise SandboxError(f"all {_UID_POOL_SIZE} sandbox uids from {base} are in use ({UID_BASE_ENV})")

    def release(self, uid: int) -> None:
        with self._lock:
            sock = self._held.pop(uid, None)
        if sock is not None:
            sock.close()


_POOL = UidPool()


# ---------------------------------------------------------------- reading what comes back


def _read_bounded(
    proc: subprocess.Popen[bytes], request: bytes, deadline: float
) -> tuple[bytes, bytes, bool]:
    """Send the request, then read the launcher's stdout (first ``_REPORT_CAP`` bytes, then a marker
    that it overflowed) and stderr (last ``_STDERR_CAP`` bytes) until both close or the deadline.
    Returns (stdout, stderr tail, timed out)."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(request)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    out, err = bytearray(), bytearray()
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    for fd in streams:
        os.set_blocking(fd, False)
    overflow = False
    while streams:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(out), bytes(err), True
        ready, _, _ = select.select(list(streams), [], [], remaining)
        for fd in ready:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                del streams[fd]
                continue
            buffer = streams[fd]
            if buffer is out:
                if len(out) + len(chunk) > _REPORT_CAP:
                    overflow = True
                out.extend(chunk[: max(0, _REPORT_CAP - len(out))])
            else:
                err.extend(chunk)
                del err[:-_STDERR_CAP]
    return (bytes(out) + b"\n<overflow>" if overflow else bytes(out)), bytes(err), False


_BOOL_FIELDS = ("network_namespace", "pid_namespace", "mount_namespace", "user_namespace", "distinct_uid")
_BOOL_FIELDS += ("fresh_proc", "cgroup")
_OPTIONAL_INT_FIELDS = ("uid", "disk_limit_bytes", "cgroup_memory_bytes", "cgroup_max_processes")


@dataclass(frozen=True)
class LauncherReport:
    status: str
    returncode: int | None
    duration_s: float
    output_tail: str
    isolation: Isolation
    missing: tuple[str, ...]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_report(raw: bytes) -> LauncherReport | str:
    """The launcher's report, or why it is unusable (the answer then fails)."""
    if len(raw) > _REPORT_CAP or b"<overflow>" in raw[-16:]:
        return "the report exceeds its size limit"
    lines = raw.split(b"\n")
    if len(lines) != 2 or lines[1]:
        return "the report is not exactly one line"
    try:
        data = json.loads(lines[0].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "the report is not JSON"
    if not isinstance(data, dict) or data.get("version") != 1:
        return "the report has no version 1 object"
    iso = data.get("isolation")
    status, code, tail = data.get("status"), data.get("returncode"), data.get("output_tail")
    ok = (
        status in ("passed", "failed", "timeout", "refused")
        and (code is None or _is_int(code))
        and isinstance(tail, str)
        and isinstance(data.get("duration_s"), (int, float))
        and isinstance(iso, dict)
        and all(isinstance(iso.get(k), bool) for k in _BOOL_FIELDS)
        and all(iso.get(k) is None or _is_int(iso.get(k)) for k in _OPTIONAL_INT_FIELDS)
        and isinstance(iso.get("private_tmp"), list)
        and all(isinstance(p, str) for p in iso["private_tmp"])
        and isinstance(iso.get("notes"), list)
        and all(isinstance(n, str) for n in iso["notes"])
        and isinstance(data.get("missing", []), list)
    )
    if not ok:
        return "the report has fields of the wrong kind"
    isolation = Isolation(
        **{k: iso[k] for k in _BOOL_FIELDS + _OPTIONAL_INT_FIELDS},
        private_tmp=tuple(iso["private_tmp"]),
        notes=tuple(iso["notes"]),
    )
    missing = tuple(str(m) for m in data.get("missing", []))
    return LauncherReport(status, code, float(data["duration_s"]), tail, isolation, missing)


# ---------------------------------------------------------------- running


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int) -> None:
    """The host's backstop when the launcher itself had to be killed: every process of the pool uid."""
    kill = shutil.which("kill", path="/usr/bin:/bin")
    if kill is None:
        return
    try:
        subprocess.run(
            [kill, "-9", "-1"], user=uid, group=uid, extra_groups=[], capture_output=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        pass


def _warn_once(isolation: Isolation, _seen: set = set()) -> None:  # noqa: B006 - process-wide memo
    missing = isolation.missing
    if missing and missing not in _seen:
        _seen.add(missing)
        _log.warning(
            "code sandbox: running model-written code without %s isolation (%s=%s refuses that; docs/tasks.md)",
            ", ".join(missing),
            REQUIRE_ENV,
            ",".join(missing),
        )


class _IsolationRecord:
    """Every isolation seen in this process, for the run's results (``isolation_summary``): the
    distinct setups (the uid aside: each sandbox running at once has its own) with their counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._uids: dict[str, set[int]] = {}
        self.required: tuple[str, ...] = ()

    def add(self, isolation: Isolation, required: tuple[str, ...]) -> None:
        setup = isolation.as_dict()
        uid = setup.pop("uid")
        key = json.dumps(setup, sort_keys=True)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            if uid is not None:
                self._uids.setdefault(key, set()).add(uid)
            self.required = required

    def summary(self) -> dict[str, Any] | None:
        with self._lock:
            counts = dict(self._counts)
            uids = {key: sorted(found) for key, found in self._uids.items()}
        if not counts:
            return None
        setups = [
            {**json.loads(key), "uids": uids.get(key, []), "programs": n} for key, n in sorted(counts.items())
        ]
        protections = {name: all(s["active"][name] for s in setups) for name in PROTECTIONS}
        return {
            "programs": sum(counts.values()),
            "protections": protections,  # True: active for every program of the run
            "missing": [name for name, on in protections.items() if not on],
            "required": list(self.required),
            "setups": setups,
        }


_RECORD = _IsolationRecord()


def isolation_summary() -> dict[str, Any] | None:
    """Which protections were active for the programs this process ran (None: it ran none)."""
    return _RECORD.summary()


def check_sandbox(limits: SandboxLimits | None = None) -> Isolation:
    """Validate the ``TANDEM_SANDBOX_*`` options and run one empty program: raises ``SandboxError``
    (one line) when a required protection is unavailable, before any model-written code exists."""
    return run_program("pass", limits, record=False).isolation


def run_program(program: str, limits: SandboxLimits | None = None, *, record: bool = True) -> ExecResult:
    """Execute ``program`` (complete Python source) in a fresh sandbox. ``record``: count its
    isolation in ``isolation_summary`` (the run's results).

    Raises ``SandboxError`` when a required protection is unavailable (nothing runs then)."""
    limits = limits or SandboxLimits()
    require = required_protections(limits)
    if len(program) > MAX_PROGRAM_CHARS:
        return ExecResult(
            "failed", None, 0.0, "", reason=f"the program exceeds {MAX_PROGRAM_CHARS} characters"
        )
    cgroup_parent = _cgroup_parent()
    uid = _POOL.acquire() if os.geteuid() == 0 and limits.sub_uid else None
    workdir = tempfile.mkdtemp(prefix="tandem-sandbox-")  # 0700, ours
    try:
        config = {
            "timeout_s": limits.timeout_s,
            "memory_bytes": limits.memory_bytes,
            "max_processes": limits.max_processes,
            "max_file_bytes": limits.max_file_bytes,
            "max_disk_bytes": limits.max_disk_bytes,
            "max_open_files": limits.max_open_files,
            "namespaces": limits.namespaces,
            "uid": uid,
            "workdir": workdir,
            "require": list(require),
            "cgroup_parent": cgroup_parent,
            "output_tail": _OUTPUT_TAIL,
        }
        request = json.dumps({"config": config, "program": program}).encode()
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        start = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", _LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            close_fds=True,
            start_new_session=True,
        )
        hung = True
        try:
            raw, err, hung = _read_bounded(proc, request, start + limits.timeout_s + _BACKSTOP_S)
        finally:
            _kill_group(proc)  # leftovers of a program that shares the launcher's session
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            if uid is not None and (hung or proc.returncode != 0):
                _kill_uid(uid)  # the launcher does this itself, unless it was killed
        duration = time.monotonic() - start
        stderr_tail = err.decode(errors="replace")[-_OUTPUT_TAIL:]
        if hung:
            return ExecResult("timeout", None, duration, stderr_tail, reason="the launcher did not finish")
        report = parse_report(raw)
        if isinstance(report, str):
            return ExecResult("failed", proc.returncode, duration, stderr_tail, reason=report)
        _warn_once(report.isolation)
        if record:
            _RECORD.add(report.isolation, require)
        if report.status == "refused":
            raise SandboxError(
                f"code sandbox: refusing to run model-written code without {', '.join(report.missing)} "
                f"isolation ({REQUIRE_ENV}={','.join(require)}); docs/tasks.md says what each needs"
            )
        status = report.status if proc.returncode == 0 else "failed"
        return ExecResult(
            status, report.returncode, duration, report.output_tail + stderr_tail, report.isolation
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if uid is not None:
            _POOL.release(uid)


def run_programs(
    programs: Sequence[str], limits: SandboxLimits | None = None, *, workers: int | None = None
) -> list[ExecResult]:
    """Run many programs, ``workers`` at a time (default: the number of CPUs)."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(programs) < 2:
        return [run_program(p, limits) for p in programs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: run_program(p, limits), programs))
