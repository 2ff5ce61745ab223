"""The stock lm_eval CLI finds --model tandem and the package's tasks, with no heavy start-up import."""

import subprocess
import sys
from pathlib import Path

from tandem_lm_eval.data.resources import classifiers_dir, tasks_dir


def python(code: str, **env) -> str:
    import os

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_startup_hook_imports_nothing_heavy():
    out = python(
        "import sys; print(sorted(m for m in ('lm_eval', 'torch', 'transformers', 'vllm', 'numpy') if m in sys.modules));"
        "print('tandem_lm_eval._startup' in sys.modules)"
    )
    assert out.splitlines() == ["[]", "True"]


def test_registry_has_tandem_and_keeps_builtins():
    out = python(
        "from lm_eval.api.registry import get_model, model_registry;"
        "cls = get_model('tandem'); print(cls.__module__, cls.__name__);"
        "print(all(n in model_registry for n in ('hf', 'vllm', 'local-completions', 'dummy')));"
        # the name earlier versions registered still imports the same class
        "from tandem_lm_eval.model import TandemLM; print(TandemLM is cls)"
    )
    assert out.splitlines() == ["tandem_lm_eval.harness.lm TandemLM", "True", "True"]


def test_task_manager_indexes_package_tasks_before_user_paths(tmp_path):
    out = python(
        "from lm_eval.tasks import TaskManager;"
        f"tm = TaskManager(include_path={str(tmp_path)!r}); print(tm.include_path)"
    )
    assert out == str([str(tasks_dir()), str(tmp_path)])


def test_hook_can_be_disabled():
    out = python(
        "import lm_eval.models; from lm_eval.api.registry import model_registry; print('tandem' in model_registry)",
        TANDEM_LM_EVAL_NO_HOOK="1",
    )
    assert out == "False"


def test_data_folders_exist():
    assert tasks_dir().is_dir() and classifiers_dir().is_dir()


def test_results_folder_is_named_after_the_pair():
    # lm-eval names the folder after pretrained=/model=/path=... in model_args, else a random id: a
    # tandem run is named after its pair (trace_path= no longer names it), other models as before
    out = python(
        "from lm_eval.loggers.evaluation_tracker import GeneralConfigTracker as T\n"
        "for source, args in (('tandem', 'mentor=org/big,intern=org/small,trace_path=runs/t.jsonl'),"
        " ('tandem', ''), ('tandem', {'mentor': 'a', 'intern': 'b'}), ('hf', 'pretrained=org/m')):\n"
        "    t = T(); t.log_experiment_args(source, args, None, None, False); print(t.model_name_sanitized)"
    )
    assert out.splitlines() == ["tandem__org__big+org__small", "tandem__demo+demo", "tandem__a+b", "org__m"]


def test_the_console_script_runs():
    """The installed ``tandem-lm-eval`` command (pyproject's [project.scripts]) reaches the subcommands'
    parser (it once pointed at a module that had become a package)."""
    script = Path(sys.executable).with_name("tandem-lm-eval")
    assert script.is_file(), f"{script} is not installed: run scripts/setup.sh"
    out = subprocess.run([str(script), "collect", "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage: tandem-lm-eval collect")
