"""HumanEval execution: program extraction, the sandbox against hostile programs, and every
canonical solution passing (and failing once broken)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tandem_lm_eval.scoring.code_answer import build_test_program, extract_program
from tandem_lm_eval.scoring.code_exec import SandboxLimits, run_program, run_programs

LIMITS = SandboxLimits(timeout_s=3.0)
# The kernel layers exist only where this process may create namespaces / switch uid (root here).
IS_ROOT = os.geteuid() == 0


# ---------------------------------------------------------------- extraction

PROMPT = 'from typing import List\n\n\ndef add(a: int, b: int) -> int:\n    """Add."""\n'
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n"


@pytest.mark.parametrize(
    ("response", "source", "passes"),
    [
        ("Here:\n```python\ndef add(a, b):\n    return a + b\n```\nDone.", "code_block", True),
        ("```python\ndef add(a, b):\n    return a - b\n```", "code_block", False),
        (
            "First try:\n```python\ndef add(a, b):\n    return 0\n```\nBetter:\n```python\ndef add(a, b):\n    return a + b\n```",
            "code_block",
            True,
        ),
        ("```python\n    return a + b\n```", "code_block", True),
        ("```\ndef add(a, b):\n    return a + b\n```", "code_block", True),
        ("    return a + b\n\ndef unrelated():\n    pass\n", "completion", True),
        ("    return a + b\nprint('noise')\n", "completion", True),
        ("def add(a, b):\n    return a + b\n", "full_definition", True),
        (
            "<think>\ndef add(a, b): return a * b\n</think>\n```python\ndef add(a, b):\n    return a + b\n```",
            "code_block",
            True,
        ),
        ("```python\ndef add(a, b):\n    return a + b", "code_block", True),  # fence cut off at the end
    ],
)
def test_extract_and_run(response: str, source: str, passes: bool) -> None:
    answer = extract_program(response, PROMPT, "add")
    assert answer.source == source
    assert answer.program is not None
    assert run_program(build_test_program(answer.program, TEST, "add"), LIMITS).passed is passes


def test_cut_off_thinking_has_no_program() -> None:
    assert extract_program("<think>\ndef add(a, b):\n    return a + b\n", PROMPT, "add").program is None
    answer = extract_program("def add(a, b):\n    return a + b\n", PROMPT, "add", prompt_opened_think=True)
    assert answer.program is None and answer.source == "unfinished_thinking"


# ---------------------------------------------------------------- the sandbox


def _run(program: str) -> tuple:
    start = time.monotonic()
    result = run_program(program, LIMITS)
    return result, time.monotonic() - start


def test_passing_program_and_its_output() -> None:
    result, _ = _run("import math, hashlib\nprint(hashlib.md5(b'x').hexdigest())\nassert math.gcd(4, 6) == 2")
    assert result.passed and result.returncode == 0
    assert "9dd4e461268c8034f5c8564e155c67a6" in result.output_tail


@pytest.mark.parametrize(
    "program",
    [
        "assert 1 + 1 == 3",
        "raise ValueError('no')",
        "import sys\nsys.exit(0)",  # a clean exit before the tests ran is not a pass
        "import os\nos._exit(0)",
        "def f(:\n    pass",
    ],
)
def test_failures_are_failures(program: str) -> None:
    result, _ = _run(program)
    assert result.status == "failed"


@pytest.mark.parametrize("program", ["while True:\n    pass", "import time\ntime.sleep(60)"])
def test_infinite_loop_times_out(program: str) -> None:
    result, elapsed = _run(program)
    assert result.status == "timeout"
    assert elapsed < LIMITS.timeout_s + 5


def test_huge_allocation_fails_fast() -> None:
    result, elapsed = _run("x = bytearray(10 * 1024**3)\n")
    assert result.status == "failed" and "MemoryError" in result.output_tail
    assert elapsed < LIMITS.timeout_s


# A fork bomb on a loaded 2-core box can delay the kill; the host's backstop (5 s after the limit)
# bounds it in every case.
FORK_BOMB_BOUND_S = LIMITS.timeout_s + 5 + 3


def test_fork_bomb_is_contained() -> None:
    result, elapsed = _run("import os\nwhile True:\n    os.fork()\n")
    assert not result.passed and elapsed < FORK_BOMB_BOUND_S


@pytest.mark.skipif(not IS_ROOT, reason="process-count limit and PID namespace need root here")
def test_fork_bomb_through_ctypes_leaves_no_process_behind() -> None:
    # ctypes gets past the Python guard: the uid's process limit and the PID namespace must hold.
    result, elapsed = _run("import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()\n")
    assert not result.passed and elapsed < FORK_BOMB_BOUND_S
    time.sleep(0.5)
    uids = range(2_000_000_000, 2_000_000_000 + 1024)  # the sandbox uid pool
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) in uids]
    assert not leftovers


def _uid_of(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def test_deleting_files_outside_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.chmod(tmp_path, 0o755)
    for program in (
        f"import os\nos.remove({str(victim)!r})",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"open({str(victim)!r}, 'w').write('gone')",
        # Straight to libc, past the Python guards: only the uid switch stops this one.
        f"import ctypes\nassert ctypes.CDLL(None).unlink({str(victim).encode()!r}) == 0",
    ):
        if "ctypes" in program and not IS_ROOT:
            continue
        result, _ = _run(program)
        assert result.status == "failed", program
        assert victim.read_text() == "keep me"


def test_files_inside_its_directory_are_allowed_and_thrown_away() -> None:
    result, _ = _run(
        "import os\nopen('x.txt', 'w').write('ok')\nos.remove('x.txt')\nos.mkdir('d')\nprint(os.getcwd())"
    )
    assert result.passed
    workdir = result.output_tail.strip().splitlines()[0]
    assert "tandem-sandbox-" in workdir and not os.path.exists(workdir)


@pytest.mark.parametrize(
    "program",
    [
        "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)",
        "import urllib.request\nurllib.request.urlopen('http://1.1.1.1', timeout=1)",
    ],
)
def test_socket_connection_is_refused(program: str) -> None:
    result, elapsed = _run(program)
    assert result.status == "failed" and elapsed < LIMITS.timeout_s


@pytest.mark.skipif(not IS_ROOT, reason="a network namespace needs root (or user namespaces) here")
def test_raw_socket_through_ctypes_has_no_network() -> None:
    program = (
        "import ctypes, struct\nlibc = ctypes.CDLL(None)\nfd = libc.socket(2, 1, 0)\nassert fd >= 0\n"
        "addr = struct.pack('!HH4s8x', 2, 53, bytes([1, 1, 1, 1]))\nassert libc.connect(fd, addr, 16) == 0\n"
    )
    result, _ = _run(program)
    assert result.status == "failed"
    assert result.isolation.network_namespace


def test_python_guards_alone_still_refuse_the_common_calls(tmp_path: Path) -> None:
    """The non-root fallback: no namespaces, no uid switch; the Python-level guards remain."""
    limits = SandboxLimits(timeout_s=3.0, namespaces="off", sub_uid=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for program in (
        f"import os\nos.unlink({str(victim)!r})",
        "import socket\nsocket.socket()",
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.system('true')",
        "import os\nos.fork()",
    ):
        result = run_program(program, limits)
        assert result.status == "failed", program
        assert "PermissionError" in result.output_tail
        assert set(result.isolation.missing) == {"network", "pid", "mount", "uid", "cgroup"}
    assert victim.read_text() == "keep me"


def test_host_survives_everything() -> None:
    # After all the above, this process still runs programs normally and fast.
    result, elapsed = _run("print('still fine')")
    assert result.passed and elapsed < 3


# ---------------------------------------------------------------- the real data


def _humaneval(shared_data: Path) -> list[dict]:
    path = shared_data / "humaneval" / "HumanEval.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _programs(rows: list[dict], solutions: list[str]) -> list[str]:
    out = []
    for row, solution in zip(rows, solutions):
        answer = extract_program(solution, row["prompt"], row["entry_point"])
        assert answer.program is not None
        out.append(build_test_program(answer.program, row["test"], row["entry_point"]))
    return out


@pytest.mark.slow
def test_every_canonical_solution_passes(shared_data: Path) -> None:
    rows = _humaneval(shared_data)
    assert len(rows) == 164
    # As a plain completion (base-model style) ...
    results = run_programs(_programs(rows, [r["canonical_solution"] for r in rows]), workers=2)
    failed = [(r["task_id"], res.output_tail[-300:]) for r, res in zip(rows, results) if not res.passed]
    assert not failed, failed[:5]
    # ... and as a chat answer with a full definition in a code block (every fourth problem: the
    # extraction differs, the execution does not).
    some = rows[::4]
    fenced = [f"Sure.\n```python\n{r['prompt']}{r['canonical_solution']}```\n" for r in some]
    results = run_programs(_programs(some, fenced), workers=2)
    failed = [r["task_id"] for r, res in zip(some, results) if not res.passed]
    assert not failed, failed


def _break_one_line(solution: str) -> str:
    """The last ``return X`` now returns a value that differs from X in value and truthiness."""
    lines = solution.splitlines()
    i = max(i for i, line in enumerate(lines) if line.strip().startswith("return"))
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    value = lines[i].strip()[len("return") :].strip() or "None"
    lines[i] = f"{indent}return (None if ({value}) else 1)"
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_broken_canonical_solutions_fail(shared_data: Path) -> None:
    rows = _humaneval(shared_data)
    broken = [_break_one_line(r["canonical_solution"]) for r in rows]
    results = run_programs(_programs(rows, broken), workers=2)
    passed = [r["task_id"] for r, res in zip(rows, results) if res.passed]
    assert not passed, passed


@pytest.mark.skipif(not IS_ROOT, reason="only matters when the host could read a file as root")
def test_output_symlink_does_not_leak_host_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    secret.chmod(0o600)
    os.chmod(tmp_path, 0o755)
    # Through ctypes: os.symlink to a path outside is refused by the guards already. The host never
    # opens a file of the program's: the output comes back on a pipe.
    program = (
        f"import ctypes\nassert ctypes.CDLL(None).symlink({str(secret).encode()!r}, b'output.txt') == 0\n"
    )
    result, _ = _run(program)
    assert result.passed  # the link itself was made ...
    assert "TOP-SECRET" not in result.output_tail  # ... but nobody followed it
