"""How the stock ``lm_eval`` command finds this package: the ``tandem`` model in lm-eval's registry and
this package's task folder in every ``TaskManager``. Light imports only: the start-up hook
(``_startup.py``) calls these once lm-eval's own modules are imported."""

from __future__ import annotations

MODEL_NAME = "tandem"


MODEL_TARGET = "tandem_lm_eval.harness.lm:TandemLM"


def register_model() -> None:
    """Register ``tandem`` in lm-eval's model registry (idempotent; call after lm_eval.models)."""
    import lm_eval.models  # noqa: F401  - fills the registry with the built-ins first
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


def patch_task_manager(manager_module=None) -> None:
    """Make TaskManager index the package's tasks folder (idempotent)."""
    if manager_module is None:
        import lm_eval.tasks.manager as manager_module
    cls = manager_module.TaskManager
    if getattr(cls.__init__, "_tandem_patched", False):
        return
    original = cls.__init__

    def __init__(self, verbosity=None, include_path=None, include_defaults=True, metadata=None, **kwargs):
        from tandem_lm_eval.data.resources import tasks_dir

        user_paths = list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
        paths = [str(tasks_dir())] + [p for p in user_paths if p]
        original(self, verbosity, paths, include_defaults, metadata, **kwargs)

    __init__._tandem_patched = True  # type: ignore[attr-defined]
    cls.__init__ = __init__
