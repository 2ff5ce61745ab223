"""One error root: every exception class of the package descends from ``TandemError``; the command line
and ``TandemLM`` turn only those into one line, and anything else (a bug) keeps its traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import tandem_lm_eval
from tandem_lm_eval.cli import commands
from tandem_lm_eval.cli.commands import run_subcommand
from tandem_lm_eval.common.errors import TandemError

# __main__ runs the command line when imported
NOT_IMPORTED = {"tandem_lm_eval.__main__"}


def _package_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(tandem_lm_eval.__path__, "tandem_lm_eval.")]
    return sorted(n for n in names if n not in NOT_IMPORTED)


def _exception_classes() -> dict[str, type[BaseException]]:
    found = {}
    for name in _package_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__  # defined here, not imported
            ):
                found[f"{name}.{attr}"] = value
    return found


def test_every_exception_class_the_package_defines_descends_from_tandem_error():
    classes = _exception_classes()
    # the walk reaches the rooms' errors (a sample of them: the walk must not come back empty)
    assert {"OptionError", "BackendError", "StoreError", "ClassifierError", "CompareError"} <= {
        c.__name__ for c in classes.values()
    }
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, TandemError))
    assert not outside, f"exception classes outside TandemError: {outside}"


def test_the_errors_keep_the_built_in_base_their_except_clauses_rely_on():
    from tandem_lm_eval.backends.base import BackendError
    from tandem_lm_eval.common.options import OptionError
    from tandem_lm_eval.harness.config import ConfigError
    from tandem_lm_eval.store.run_store import StoreError

    assert issubclass(ConfigError, ValueError) and issubclass(OptionError, ValueError)
    assert issubclass(StoreError, ValueError) and issubclass(BackendError, RuntimeError)


def test_a_tandem_error_is_one_line_and_exit_status_2(capsys, monkeypatch):
    def refuse(args):
        raise commands.CommandError("the value 'x' of --thing is wrong")

    monkeypatch.setattr(commands, "check_arguments", refuse)
    assert run_subcommand(["store", "stats", "--store", "s.sqlite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "tandem-lm-eval store: the value 'x' of --thing is wrong"


@pytest.mark.parametrize("bug", [ValueError, RuntimeError, KeyError, OSError])
def test_a_bug_keeps_its_traceback_through_the_command_line(monkeypatch, bug):
    """A ValueError the package did not mean for a user (a bug) is not turned into one line."""

    def broken(args):
        raise bug("an internal invariant broke")

    monkeypatch.setattr(commands, "check_arguments", broken)
    with pytest.raises(bug, match="an internal invariant broke"):
        run_subcommand(["store", "stats", "--store", "s.sqlite"])


def test_a_bug_keeps_its_traceback_through_the_installed_command(tmp_path):
    """End to end, in a process of its own: a bug's traceback reaches the terminal, exit status 1."""
    script = (
        "import sys\n"
        "from tandem_lm_eval.cli import commands\n"
        "def broken(args):\n"
        "    raise ValueError('an internal invariant broke')\n"
        "commands.check_arguments = broken\n"
        "from tandem_lm_eval.cli.main import main\n"
        "main(['store', 'stats', '--store', sys.argv[1]])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "s.sqlite")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ValueError: an internal invariant broke" in proc.stderr


def test_tandem_lm_turns_only_tandem_errors_into_one_line(monkeypatch):
    from tandem_lm_eval.harness import lm
    from tandem_lm_eval.store.run_store import StoreError

    def refused(plan):
        raise StoreError("run store /x/s.sqlite: not a run store")

    monkeypatch.setattr(lm, "LocalReplica", refused)  # the replica this process builds from its plan
    with pytest.raises(SystemExit) as info:
        lm.TandemLM(progress="false")
    assert str(info.value) == "tandem: run store /x/s.sqlite: not a run store"

    def broken(plan):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(lm, "LocalReplica", broken)
    with pytest.raises(ValueError, match="an internal invariant broke"):
        lm.TandemLM(progress="false")
