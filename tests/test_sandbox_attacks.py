"""The attacks table of docs/tasks.md ("The code sandbox: attacks"): hostile programs run through the
sandbox API in every mode this machine can run, each asserted blocked or contained -- or, where a
mode cannot stop it, skipped with the reason, after asserting that the isolation report says which
protection is missing (so the warning and ``TANDEM_SANDBOX_REQUIRE`` catch it).

Modes (``SandboxLimits``): ``full`` = root: network/PID/mount namespaces and a uid from the pool;
``userns`` = the path a non-root user gets (a user namespace with a one-uid map; here as root, the
launcher first becomes a pool uid); ``docker_root`` = no namespaces, pool uid (root in a default
Docker container); ``bare`` = no namespaces and the evaluator's own uid (a non-root user on a kernel
without unprivileged user namespaces; here root itself, so only attacks that cannot harm the
machine run in it).
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tandem_lm_eval.scoring.code_exec import (
    ExecResult,
    LauncherReport,
    SandboxError,
    SandboxLimits,
    parse_report,
    run_program,
    run_programs,
)

IS_ROOT = os.geteuid() == 0
POOL = range(2_000_000_000, 2_000_000_000 + 1024)


def _userns_available() -> bool:
    if not IS_ROOT:
        return False
    return run_program("pass", SandboxLimits(timeout_s=5, namespaces="user")).isolation.user_namespace


MODES = {
    "full": SandboxLimits(timeout_s=4.0),
    "userns": SandboxLimits(timeout_s=4.0, namespaces="user"),
    "docker_root": SandboxLimits(timeout_s=4.0, namespaces="off"),
    "bare": SandboxLimits(timeout_s=4.0, namespaces="off", sub_uid=False),
}
# What each mode protects (the reason a row is skipped names the missing protection).
NEEDS = {
    "uid": {"full", "userns", "docker_root"},
    "pidns": {"full", "userns"},
    "netns": {"full", "userns"},
    "private_tmp": {"full", "userns"},
    "disk_total": {"full", "userns"},
    "cgroup": set(),  # no memory/pids controller is delegated on this machine (cgroup v1 hybrid)
}
MISSING_NAME = {
    "uid": "uid",
    "pidns": "pid",
    "netns": "network",
    "private_tmp": "mount",
    "disk_total": "mount",
}
MISSING_NAME["cgroup"] = "cgroup"


@dataclass
class Context:
    tmp: Path
    victim: Path  # a file of the user's the program must not change
    secret: Path  # a root-only file the program must not read
    evaluator_pid: int  # a stand-in evaluator with OPENAI_API_KEY in its environ, a token in argv
    listener_port: int  # a server on 127.0.0.1 the program must not reach
    connections: list


SECRET_KEY = "sk-test-0123456789abcdef"
SECRET_TOKEN = "tok-SeCrEt-in-argv"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attacks")
    os.chmod(tmp, 0o755)
    victim = tmp / "victim.txt"
    victim.write_text("keep me")
    victim.chmod(0o644)
    secret = tmp / "secret.txt"
    secret.write_text("TOP-SECRET-FILE")
    secret.chmod(0o600)
    env = {"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": SECRET_KEY}
    stand_in = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", f"base_url=http://u:{SECRET_TOKEN}@h/v1"],
        env=env,
    )
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    connections: list = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            connections.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield Context(tmp, victim, secret, stand_in.pid, server.getsockname()[1], connections)
    finally:
        stand_in.kill()
        stand_in.wait()
        server.close()


@dataclass(frozen=True)
class Attack:
    name: str
    kind: str  # forging | host side | neighbours | secrets | resources | outliving
    program: Callable[[Context], str]
    check: Callable[[ExecResult, Context], None]
    needs: str | None = None  # the protection it takes (see NEEDS); None: every mode
    harmful_as_root: bool = False  # never run where the program has the evaluator's root


def failed(result: ExecResult, ctx: Context) -> None:
    assert result.status == "failed", (result.status, result.output_tail[-500:])


def failed_victim_intact(result: ExecResult, ctx: Context) -> None:
    assert not result.passed, result.output_tail[-500:]
    assert ctx.victim.read_text() == "keep me"


def no_secret(result: ExecResult, ctx: Context) -> None:
    assert not result.passed, result.output_tail[-500:]
    for secret in (SECRET_KEY, SECRET_TOKEN, "TOP-SECRET-FILE"):
        assert secret not in result.output_tail


def no_connection(result: ExecResult, ctx: Context) -> None:
    assert not result.passed, result.output_tail[-500:]
    time.sleep(0.1)  # the accept thread has seen any connection made before the program ended
    assert not ctx.connections


def not_left_behind(marker: str):
    def check(result: ExecResult, ctx: Context) -> None:
        assert result.passed, result.output_tail[-500:]  # it did write them, inside its sandbox
        assert not any(marker in name for folder in ("/tmp", "/dev/shm", "/var/tmp") for name in _ls(folder))

    return check


def _ls(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def no_pool_process_left(result: ExecResult, ctx: Context) -> None:
    # Killed processes disappear once reaped: allow the reaping its moment (a bound, not a race).
    deadline = time.monotonic() + 10
    while (leftovers := _pool_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leftovers, leftovers


def _pool_processes() -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) in POOL]


def _uid_of(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def forked_at_most(limit: int):
    def check(result: ExecResult, ctx: Context) -> None:
        counts = [
            int(line.split()[1]) for line in result.output_tail.splitlines() if line.startswith("forked ")
        ]
        assert counts and counts[-1] < limit, result.output_tail[-500:]
        assert not result.passed
        no_pool_process_left(result, ctx)

    return check


def disk_capped(result: ExecResult, ctx: Context) -> None:
    written = [
        int(line.split()[1]) for line in result.output_tail.splitlines() if line.startswith("written ")
    ]
    assert written and written[-1] <= result.isolation.disk_limit_bytes, result.output_tail[-500:]


WRONG = "\nassert 1 + 1 == 3  # the answer itself is wrong\n"
FORK = "import ctypes\nlibc = ctypes.CDLL(None)\n"

ATTACKS = [
    # ------------------------------------------------------------ forging the pass signal
    Attack(
        "forge: write PASSED and a passing report to every descriptor, argv and frames searched for a nonce",
        "forging",
        lambda c: (
            "import os, sys, json, gc\n"
            "words = ' '.join(sys.argv) + ' '.join(str(f.f_locals) for f in [sys._getframe()])\n"
            "fake = json.dumps({'version': 1, 'status': 'passed', 'returncode': 0})\n"
            "for fd in range(0, 1024):\n"
            "    try:\n"
            "        os.write(fd, ('PASSED ' + words + '\\n' + fake + '\\n').encode())\n"
            "    except OSError:\n"
            "        pass\n" + WRONG
        ),
        failed,
    ),
    Attack(
        "forge: sys.exit(0) before the tests", "forging", lambda c: "import sys\nsys.exit(0)" + WRONG, failed
    ),
    Attack(
        "forge: os._exit(0) before the tests", "forging", lambda c: "import os\nos._exit(0)" + WRONG, failed
    ),
    Attack("forge: posix._exit(0)", "forging", lambda c: "import posix\nposix._exit(0)" + WRONG, failed),
    Attack(
        "forge: exec /bin/true in place of the program",
        "forging",
        lambda c: "import os\nos.execv('/bin/true', ['true'])" + WRONG,
        failed,
    ),
    Attack(
        "forge: a passing report printed on its own output",
        "forging",
        lambda c: 'print(\'{"version": 1, "status": "passed", "returncode": 0}\')' + WRONG,
        failed,
    ),
    Attack(
        "forge: kill its own interpreter (SIGKILL) before the tests",
        "forging",
        lambda c: "import signal, ctypes\nctypes.CDLL(None).kill(ctypes.CDLL(None).getpid(), 9)" + WRONG,
        failed,
    ),
    # ------------------------------------------------------------ breaking the host side
    Attack(
        "host: output file swapped for a directory",
        "host side",
        lambda c: "import os\nfor n in ('output.txt', 'program.py'):\n    os.mkdir(n)" + WRONG,
        failed,
    ),
    Attack(
        "host: output file swapped for a FIFO (a reader would block forever)",
        "host side",
        lambda c: "import os\nfor n in ('output.txt', 'program.py'):\n    os.mkfifo(n)" + WRONG,
        failed,
    ),
    Attack(
        "host: bad bytes and a malformed line on stdout and stderr",
        "host side",
        lambda c: "import os\nos.write(1, b'\\xff\\xfe{not json\\n')\nos.write(2, b'\\x00' * 100)" + WRONG,
        failed,
    ),
    Attack(
        "host: 300 MiB on its output",
        "host side",
        lambda c: "import os\nblock = b'x' * (1 << 20)\nfor _ in range(300):\n    os.write(1, block)" + WRONG,
        failed,
    ),
    Attack(
        "host: write to the launcher's report pipe through /proc/<ppid>/fd/1",
        "host side",
        lambda c: (
            (
                "import os\nfor p in (os.getppid(), 1):\n    try:\n"
                "        fd = os.open(f'/proc/{p}/fd/1', os.O_WRONLY)\n"
                '        os.write(fd, b\'{"version": 1, "status": "passed"}\\n\')\n    except OSError:\n        pass\n'
            )
            + WRONG
        ),
        failed,
        needs="uid",
    ),
    Attack(
        "host: output linked to a root-only file",
        "host side",
        lambda c: (
            f"import ctypes\nctypes.CDLL(None).symlink({str(c.secret).encode()!r}, b'output.txt')" + WRONG
        ),
        no_secret,
    ),
    # ------------------------------------------------------------ neighbours (see also the concurrent test)
    Attack(
        "neighbours: signal every process it can (kill -1)",
        "neighbours",
        lambda c: FORK + "libc.kill(-1, 9)" + WRONG,
        failed,
        needs="uid",
        harmful_as_root=True,
    ),
    # ------------------------------------------------------------ reading secrets
    Attack(
        "secrets: OPENAI_API_KEY from the evaluator's /proc/<pid>/environ",
        "secrets",
        lambda c: f"print(open('/proc/{c.evaluator_pid}/environ', 'rb').read())" + WRONG,
        no_secret,
        needs="uid",
    ),
    Attack(
        "secrets: any environ under /proc with an API key",
        "secrets",
        lambda c: (
            (
                "import os\nfor p in os.listdir('/proc'):\n    try:\n"
                "        print(open(f'/proc/{p}/environ', 'rb').read())\n    except OSError:\n        pass\n"
            )
            + WRONG
        ),
        no_secret,
        needs="uid",
    ),
    Attack(
        "secrets: a token in the evaluator's command line (/proc/<pid>/cmdline)",
        "secrets",
        lambda c: f"print(open('/proc/{c.evaluator_pid}/cmdline', 'rb').read())" + WRONG,
        no_secret,
        needs="pidns",
    ),
    Attack(
        "secrets: a root-only file",
        "secrets",
        lambda c: f"import ctypes\nprint(open({str(c.secret)!r}).read())" + WRONG,
        no_secret,
        needs="uid",
    ),
    Attack(
        "secrets: send to 127.0.0.1 through socket",
        "secrets",
        lambda c: (
            f"import socket\nsocket.create_connection(('127.0.0.1', {c.listener_port}), timeout=1)" + WRONG
        ),
        no_connection,
    ),
    Attack(
        "secrets: send to 127.0.0.1 through _socket.socket",
        "secrets",
        lambda c: (
            f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {c.listener_port}))" + WRONG
        ),
        no_connection,
    ),
    Attack(
        "secrets: send to 127.0.0.1 through a raw libc socket",
        "secrets",
        lambda c: (
            (
                FORK + "import struct\nfd = libc.socket(2, 1, 0)\n"
                f"addr = struct.pack('!HH4s8x', 2, {c.listener_port}, bytes([127, 0, 0, 1]))\n"
                "print('connect', libc.connect(fd, addr, 16))"
            )
            + WRONG
        ),
        no_connection,
        needs="netns",
    ),
    # ------------------------------------------------------------ the user's files
    Attack(
        "files: delete a file of the user's through posix.unlink",
        "neighbours",
        lambda c: f"import posix\nposix.unlink({str(c.victim)!r})" + WRONG,
        failed_victim_intact,
    ),
    Attack(
        "files: overwrite a file of the user's through _io.FileIO",
        "neighbours",
        lambda c: f"import _io\n_io.FileIO({str(c.victim)!r}, 'w').write(b'gone')" + WRONG,
        failed_victim_intact,
    ),
    Attack(
        "files: delete a file of the user's through libc",
        "neighbours",
        lambda c: FORK + f"libc.unlink({str(c.victim).encode()!r})" + WRONG,
        failed_victim_intact,
        needs="uid",
        harmful_as_root=True,
    ),
    # ------------------------------------------------------------ exhausting resources
    Attack(
        "resources: fork bomb through libc, counted for the sandbox's own uid",
        "resources",
        lambda c: (
            FORK
            + (
                "n = 0\nfor _ in range(200):\n    pid = libc.fork()\n    if pid == 0:\n        libc.pause()\n"
                "    if pid < 0:\n        break\n    n += 1\nprint('forked', n, flush=True)"
            )
            + WRONG
        ),
        forked_at_most(16),
        needs="uid",
        harmful_as_root=True,
    ),
    Attack(
        "resources: 10 GB in one allocation",
        "resources",
        lambda c: "x = bytearray(10 * 1024**3)\n",
        lambda r, c: (
            (failed(r, c), None)[1] if "MemoryError" in r.output_tail else pytest.fail(r.output_tail)
        ),
    ),
    Attack(
        "resources: an endless loop",
        "resources",
        lambda c: "while True:\n    pass\n",
        lambda r, c: None if r.status == "timeout" else pytest.fail(r.status),
    ),
    Attack(
        "resources: 200 MiB written in 10 MiB files (the disk cap holds in total)",
        "resources",
        lambda c: (
            "import os\nn = 0\ntry:\n    for i in range(20):\n        with open(f'f{i}', 'wb') as h:\n"
            "            h.write(b'x' * (10 << 20))\n        n += 10 << 20\n"
            "finally:\n    print('written', n, flush=True)\n"
        ),
        disk_capped,
        needs="disk_total",
    ),
    Attack(
        "resources: 4 processes holding 700 MiB each (memory in total)",
        "resources",
        lambda c: (
            FORK
            + (
                "import time\nfor _ in range(4):\n    if libc.fork() == 0:\n        x = bytearray(700 << 20)\n"
                "        print('held', flush=True)\n        libc.pause()\ntime.sleep(2)\n"
            )
        ),
        lambda r, c: (
            None
            if r.output_tail.count("held") * (700 << 20) <= (r.isolation.cgroup_memory_bytes or 0)
            else pytest.fail(r.output_tail[-300:])
        ),
        needs="cgroup",
    ),
    # ------------------------------------------------------------ outliving the run
    Attack(
        "outliving: files in /tmp and /dev/shm",
        "outliving",
        lambda c: (
            FORK
            + (
                "for d in (b'/tmp', b'/dev/shm', b'/var/tmp'):\n"
                "    assert libc.open(d + b'/tandem-attack-leftover', 0o101, 0o644) >= 0\n"
                "assert libc.mkdir(b'/tmp/tandem-attack-leftover-dir', 0o755) == 0\n"
            )
        ),
        not_left_behind("tandem-attack-leftover"),
        needs="uid",
    ),
    Attack(
        "outliving: a daemon (fork + setsid through libc) that sleeps on",
        "outliving",
        lambda c: FORK + "if libc.fork() == 0:\n    libc.setsid()\n    libc.sleep(60)\n",
        no_pool_process_left,
        needs="uid",
        harmful_as_root=True,
    ),
]


def _skip_reason(attack: Attack, mode: str) -> tuple[str | None, str | None]:
    """(why the row is skipped in this mode, the protection the isolation report must say is missing)."""
    if mode == "userns" and not USERNS:
        return "this machine refuses user namespaces", None
    if not IS_ROOT and mode != "bare":
        return "a uid pool needs root", None
    if attack.harmful_as_root and mode == "bare" and IS_ROOT:
        return "in bare mode the program has the evaluator's root: not run here", None
    if attack.needs is not None and mode not in NEEDS[attack.needs]:
        return f"{mode} mode has no {attack.needs} protection (the isolation report says so)", MISSING_NAME[
            attack.needs
        ]
    return None, None


USERNS = _userns_available()
_PROBES: dict[str, ExecResult] = {}


def _probe(mode: str) -> ExecResult:
    if mode not in _PROBES:
        _PROBES[mode] = run_program("pass", MODES[mode])
    return _PROBES[mode]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(
    "attack", ATTACKS, ids=[a.name.split(":")[0] + ":" + str(i) for i, a in enumerate(ATTACKS)]
)
def test_attack(attack: Attack, mode: str, ctx: Context) -> None:
    reason, missing = _skip_reason(attack, mode)
    if reason is not None:
        if missing is not None:
            # What a mode lacks is reported: that is what the warning and TANDEM_SANDBOX_REQUIRE use.
            assert missing in _probe(mode).isolation.missing
        pytest.skip(reason)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    result = run_program(attack.program(ctx), MODES[mode])
    attack.check(result, ctx)
    # The host stays small and on time whatever the program did.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB
    assert time.monotonic() - start < MODES[mode].timeout_s + 15


def test_at_least_25_attacks_across_every_kind() -> None:
    kinds = {a.kind for a in ATTACKS}
    assert len(ATTACKS) >= 25
    assert {"forging", "host side", "neighbours", "secrets", "resources", "outliving"} <= kinds


def test_the_attacks_table_in_the_docs_lists_every_attack() -> None:
    text = (Path(__file__).parents[1] / "docs" / "tasks.md").read_text()
    missing = [a.name for a in ATTACKS if a.name not in text]
    assert not missing, missing


# ------------------------------------------------------------ what no in-process checker stops


@pytest.mark.parametrize(
    "program",
    [
        # An object equal to everything passes any assert of equality: the program lies about itself.
        "class Any:\n    def __eq__(self, other):\n        return True\n"
        "def add(a, b):\n    return Any()\nassert add(2, 3) == 5\nassert add(2, 2) == 5\n",
        # A raw _exit(0) system call ends the process 'cleanly' before the tests.
        FORK + "libc._exit(0)" + WRONG,
    ],
)
@pytest.mark.parametrize("mode", list(MODES))
def test_documented_limit_a_program_can_lie_about_itself(program: str, mode: str) -> None:
    """The docs say pass@1 assumes a non-adversarial model: these pass, and the table says so."""
    if (mode == "userns" and not USERNS) or (not IS_ROOT and mode != "bare"):
        pytest.skip("mode not available on this machine")
    assert run_program(program, MODES[mode]).passed


# ------------------------------------------------------------ neighbours at the same time


def _wait_for_pool_process(deadline: float) -> bool:
    while time.monotonic() < deadline:
        if any(p.isdigit() and _uid_of(p) in POOL for p in os.listdir("/proc")):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("mode", ["full", "userns", "docker_root"])
def test_a_program_cannot_tamper_with_a_neighbour_running_beside_it(mode: str) -> None:
    if not IS_ROOT or (mode == "userns" and not USERNS):
        pytest.skip("needs root (a uid pool) / user namespaces")
    limits = SandboxLimits(timeout_s=10.0, namespaces=MODES[mode].namespaces)
    victim_program = (
        "import os, time\nopen('mine.txt', 'w').write('mine')\ntime.sleep(4)\n"
        "assert open('mine.txt').read() == 'mine', 'rewritten'\nassert sorted(os.listdir('.')) == ['mine.txt']\n"
    )
    results: list[ExecResult] = []
    thread = threading.Thread(target=lambda: results.append(run_program(victim_program, limits)))
    thread.start()
    assert _wait_for_pool_process(time.monotonic() + 20), "the neighbour never started"
    attacker = (
        FORK + "import os, glob\nhits = 0\n"
        "for d in glob.glob('/tmp/tandem-sandbox-*') + [f'/proc/{p}/cwd' for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    try:\n        if os.path.realpath(d) == os.getcwd():\n            continue\n"
        "    except OSError:\n        continue\n"
        "    for name in ('mine.txt', 'evil.txt'):\n"
        "        fd = libc.open(os.path.join(d, name).encode(), 0o1101, 0o644)\n"
        "        if fd >= 0:\n            libc.write(fd, b'owned', 5)\n            hits += 1\n"
        "libc.kill(-1, 9)\nprint('hits', hits)\n"
    )
    attack = run_program(attacker, limits)
    thread.join()
    assert attack.passed and "hits 0" in attack.output_tail, attack.output_tail[-500:]
    assert results[0].passed, results[0].output_tail[-500:]


# ------------------------------------------------------------ the host reads reports it can trust


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json\n",
        b'{"version": 1, "status": "passed"}\n',  # fields missing
        b'{"version": 2, "status": "passed"}\n',
        b"[1, 2]\n",
        b"\xff\xfe\n",
        b'{"version": 1}\n{"version": 1}\n',
        b"x" * (1 << 17),
    ],
)
def test_a_malformed_report_is_a_failure_reason(raw: bytes) -> None:
    assert isinstance(parse_report(raw), str)


def test_a_wellformed_report_parses() -> None:
    raw = run_program_report()
    assert isinstance(raw, LauncherReport) and raw.status == "passed"


def run_program_report() -> LauncherReport | str:
    import json

    iso = {k: False for k in ("network_namespace", "pid_namespace", "mount_namespace", "user_namespace")}
    iso.update(distinct_uid=False, fresh_proc=False, cgroup=False, uid=None, disk_limit_bytes=None)
    iso.update(cgroup_memory_bytes=None, cgroup_max_processes=None, private_tmp=[], notes=[])
    report = {
        "version": 1,
        "status": "passed",
        "returncode": 0,
        "duration_s": 0.1,
        "output_tail": "",
        "isolation": iso,
    }
    return parse_report((json.dumps(report) + "\n").encode())


# ------------------------------------------------------------ isolation: reported and enforceable


def test_missing_protections_are_refused_when_required(monkeypatch) -> None:
    # cgroup limits are not available on this machine (no delegated cgroup v2): requiring them refuses.
    monkeypatch.setenv("TANDEM_SANDBOX_REQUIRE", "all")
    monkeypatch.delenv("TANDEM_SANDBOX_CGROUP", raising=False)
    with pytest.raises(SandboxError, match="refusing to run model-written code without .*cgroup"):
        run_program("open('ran', 'w')", SandboxLimits(timeout_s=3))
    monkeypatch.setenv("TANDEM_SANDBOX_REQUIRE", "network,bogus")
    with pytest.raises(SandboxError, match="unknown protection"):
        run_program("pass", SandboxLimits(timeout_s=3))


@pytest.mark.skipif(not IS_ROOT, reason="the full mode needs root here")
def test_full_mode_reports_every_namespace_and_its_uid(monkeypatch) -> None:
    monkeypatch.setenv("TANDEM_SANDBOX_REQUIRE", "network,pid,mount,uid")
    result = run_program(
        "import os\nprint(os.getuid(), os.getpid(), oct(os.stat('.').st_mode & 0o777))",
        SandboxLimits(timeout_s=3),
    )
    assert result.passed
    active = result.isolation.active
    assert active["network"] and active["pid"] and active["mount"] and active["uid"]
    assert result.isolation.fresh_proc and "/tmp" in result.isolation.private_tmp
    uid, pid, mode = result.output_tail.split()[:3]
    assert int(uid) in POOL and pid == "1" and mode == "0o700"


@pytest.mark.parametrize("mode", ["full", "userns", "docker_root"])
def test_each_sandbox_running_at_once_has_a_uid_and_a_0700_folder_of_its_own(mode: str) -> None:
    if not IS_ROOT or (mode == "userns" and not USERNS):
        pytest.skip("needs root (a uid pool) / user namespaces")
    program = (
        "import os, time\nst = os.stat('.')\nprint('me', st.st_uid, oct(st.st_mode & 0o777))\ntime.sleep(1)\n"
    )
    results = run_programs([program] * 4, MODES[mode], workers=4)
    seen = [
        line.split()[1:] for r in results for line in r.output_tail.splitlines() if line.startswith("me ")
    ]
    assert len(seen) == 4 and all(perm == "0o700" for _, perm in seen)
    if mode != "userns":  # inside a user namespace every sandbox sees its own mapped uid (1000)
        assert all(int(uid) in POOL for uid, _ in seen)
    assert all(r.isolation.uid in POOL for r in results)


def test_the_uid_pool_never_hands_one_uid_to_two_holders() -> None:
    from tandem_lm_eval.scoring.code_exec import UidPool

    ours, another_evaluator = UidPool(), UidPool()  # two processes' pools, one machine
    held = [ours.acquire() for _ in range(4)]
    theirs = [another_evaluator.acquire() for _ in range(4)]
    try:
        assert len(set(held + theirs)) == 8 and all(uid in POOL for uid in held + theirs)
        ours.release(held[0])
        assert another_evaluator.acquire() == held[0]  # free again once released
    finally:
        for uid in held[1:]:
            ours.release(uid)
        for uid in [*theirs, held[0]]:
            another_evaluator.release(uid)


def test_a_cgroup_directory_without_controllers_is_one_line(monkeypatch, tmp_path) -> None:
    (tmp_path / "cgroup.subtree_control").write_text("cpu io\n")
    monkeypatch.setenv("TANDEM_SANDBOX_CGROUP", str(tmp_path))
    with pytest.raises(SandboxError, match="'memory' and 'pids' must be enabled"):
        run_program("pass", SandboxLimits(timeout_s=3))


def test_the_warning_names_what_is_missing(caplog) -> None:
    from tandem_lm_eval.scoring import code_exec

    code_exec._warn_once.__defaults__[0].clear()  # type: ignore[index]
    with caplog.at_level("WARNING"):
        run_program("pass", MODES["bare"])
        run_program("pass", MODES["bare"])
    lines = [r.getMessage() for r in caplog.records if "code sandbox" in r.getMessage()]
    assert len(lines) == 1 and "network, pid, mount, uid, cgroup" in lines[0]


# ------------------------------------------------------------ every pipe is read with a bound


def test_the_line_worker_reads_a_reply_with_a_bound(tmp_path) -> None:
    from tandem_lm_eval.scoring.line_worker import LineWorker, WorkerCrashed

    script = tmp_path / "worker.py"
    script.write_text(
        "import sys, json\nprint(json.dumps({'ready': True}), flush=True)\nfor line in sys.stdin:\n"
        "    req = json.loads(line)\n"
        "    if req['kind'] == 'flood':\n        sys.stdout.write('x' * (64 << 20)); sys.stdout.flush()\n"
        "    elif req['kind'] == 'bad':\n        print('not json', flush=True)\n"
        "    else:\n        print(json.dumps({'ok': 1}), flush=True)\n"
    )
    worker = LineWorker([str(script)], max_line_bytes=1 << 20)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(WorkerCrashed, match="without a newline"):
            worker.request({"kind": "flood"}, timeout_s=60)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 32 * 1024  # KiB
        with pytest.raises(WorkerCrashed):
            worker.request({"kind": "bad"}, timeout_s=60)
        assert worker.request({"kind": "fine"}, timeout_s=60) == {"ok": 1}  # restarted, still serving
        assert worker.restarts == 2
    finally:
        worker.close()


def test_an_oversized_program_fails_without_running() -> None:
    from tandem_lm_eval.scoring.code_exec import MAX_PROGRAM_CHARS

    result = run_program("x = 1\n" + "#" * MAX_PROGRAM_CHARS, MODES["bare"])
    assert result.status == "failed" and "exceeds" in result.reason


def test_a_cgroup_that_cannot_be_set_up_is_reported_missing(monkeypatch, tmp_path) -> None:
    # Not a real cgroup file system: creating the sandbox's cgroup fails, the program still runs
    # (nothing required), and the report says there was no cgroup, and why.
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
    monkeypatch.setenv("TANDEM_SANDBOX_CGROUP", str(tmp_path))
    result = run_program("pass", MODES["bare"])
    assert result.passed and not result.isolation.cgroup and "cgroup" in result.isolation.missing
    assert any("memory.max" in note for note in result.isolation.notes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cgroup.subtree_control"]  # nothing left
    monkeypatch.setenv("TANDEM_SANDBOX_REQUIRE", "cgroup")
    with pytest.raises(SandboxError, match="without cgroup"):
        run_program("pass", MODES["bare"])


def test_the_humaneval_task_refuses_before_generation(monkeypatch) -> None:
    from tandem_lm_eval.harness.task_functions import humaneval_dataset

    monkeypatch.setenv("TANDEM_SANDBOX_REQUIRE", "all")
    monkeypatch.delenv("TANDEM_SANDBOX_CGROUP", raising=False)
    with pytest.raises(SandboxError, match="TANDEM_SANDBOX_REQUIRE=network,pid,mount,uid,cgroup"):
        humaneval_dataset(data_dir="/nonexistent")  # refused before the data is even read


def test_the_run_summary_names_the_protections() -> None:
    from tandem_lm_eval.scoring.code_exec import isolation_summary

    run_program("pass", MODES["bare"])
    summary = isolation_summary()
    assert summary is not None and summary["programs"] >= 1
    assert set(summary["protections"]) == {"network", "pid", "mount", "uid", "cgroup"}
    assert set(summary["missing"]) == {
        "network",
        "pid",
        "mount",
        "uid",
        "cgroup",
    }  # a bare run was among them
    assert any(
        setup["missing"] == ["network", "pid", "mount", "uid", "cgroup"] for setup in summary["setups"]
    )
