"""Start-up hook, run by the installed ``tandem_lm_eval.pth`` file in every interpreter.

lm-eval 0.4.13 has no plugin discovery, so ``lm_eval --model tandem`` can only find the model if
something registers it inside the ``lm_eval`` process. This hook does that lazily: it imports
nothing heavy (no lm_eval, torch or transformers), it only installs a meta-path finder that waits
for two lm-eval modules to be imported and then
- after ``lm_eval.models`` has filled the model registry with the built-in models, registers
  ``tandem`` as a lazy entry (registering before would make the built-ins vanish);
- after ``lm_eval.tasks.manager`` is imported, makes every ``TaskManager`` also index this
  package's task folder, after lm-eval's own tasks and before a user's ``--include_path``.
- after ``lm_eval.loggers.evaluation_tracker`` is imported, names a tandem run's results folder
  after its pair (``tandem__<mentor>+<intern>``) instead of a random id.

Set ``TANDEM_LM_EVAL_NO_HOOK=1`` to disable it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Callable


def _register_model(module) -> None:
    from tandem_lm_eval.harness.registration import register_model

    register_model()


def _patch_task_manager(module) -> None:
    from tandem_lm_eval.harness.registration import patch_task_manager

    patch_task_manager(module)


def _patch_results_folder(module) -> None:
    from tandem_lm_eval.harness.registration import patch_results_folder

    patch_results_folder(module)


_AFTER_IMPORT: dict[str, Callable] = {
    "lm_eval.models": _register_model,
    "lm_eval.tasks.manager": _patch_task_manager,
    "lm_eval.loggers.evaluation_tracker": _patch_results_folder,
}


class _LoaderWrapper(importlib.abc.Loader):
    def __init__(self, loader, callback: Callable) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        try:
            self._callback(module)
        except Exception as exc:  # never break lm_eval itself because of the plugin
            print(f"tandem-lm-eval: start-up hook failed: {exc!r}", file=sys.stderr)

    def __getattr__(self, name):  # get_data, get_filename, is_package, ...
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        callback = _AFTER_IMPORT.get(fullname)
        if callback is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _LoaderWrapper(spec.loader, callback)
        return spec


def install() -> None:
    if os.environ.get("TANDEM_LM_EVAL_NO_HOOK"):
        return
    if any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _PostImportFinder())
    # Already imported (the hook installed late, e.g. from an interactive session): apply now.
    if "lm_eval.models" in sys.modules:
        _register_model(sys.modules["lm_eval.models"])
    if "lm_eval.tasks.manager" in sys.modules:
        _patch_task_manager(sys.modules["lm_eval.tasks.manager"])
    if "lm_eval.loggers.evaluation_tracker" in sys.modules:
        _patch_results_folder(sys.modules["lm_eval.loggers.evaluation_tracker"])


install()
