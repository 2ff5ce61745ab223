"""``tandem-lm-eval --help`` lists the subcommands, one line each, and says where everything else goes;
tried as a user runs it, in a process of its own (the installed command where there is one)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tandem_lm_eval.cli.commands import SUBCOMMANDS


def _command() -> list[str]:
    installed = shutil.which("tandem-lm-eval")
    return [installed] if installed else [sys.executable, "-m", "tandem_lm_eval"]


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_command(), *argv], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_subcommand_with_its_line(flag):
    proc = _run(flag)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name, line in SUBCOMMANDS.items():
        # one line each: the name, then its description
        assert any(row.split() == [name, *line.split()] for row in lines), (name, proc.stdout)
    assert "usage: lm-eval" not in proc.stdout  # not lm-eval's help instead of ours
    assert "Anything else goes to lm-eval's command line" in proc.stdout
    assert "tandem-lm-eval run --help" in proc.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_listed_is_one_the_command_runs(name):
    proc = _run(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: tandem-lm-eval {name}"), proc.stdout[:200]


def test_python_m_help_is_the_same_as_the_installed_command():
    proc = subprocess.run(
        [sys.executable, "-m", "tandem_lm_eval", "--help"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _run("--help").stdout


def test_lm_evals_own_help_is_still_reached():
    proc = _run("run", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: lm-eval run" in proc.stdout
