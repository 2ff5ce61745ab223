"""How the stock ``lm_eval`` command finds this package: the ``tandem`` model in lm-eval's registry,
this package's task folder in every ``TaskManager``, and a results folder named after the pair. Light
imports only: the start-up hook (``_startup.py``) calls these once lm-eval's own modules are imported."""

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


def pair_name(model_args) -> str:
    """What a ``--model tandem`` run is called in lm-eval's results: ``tandem:<mentor>+<intern>`` (``demo``
    for a role not named), as a ``pretrained=`` run is called after its model."""
    args: dict = {}
    if isinstance(model_args, dict):
        args = model_args
    elif isinstance(model_args, str):
        from tandem_lm_eval.common.options import parse_model_args

        try:
            args = parse_model_args(model_args)
        except ValueError:  # not key=value text: TandemLM reports it; the name falls back to the pair's roles
            args = {}
    from tandem_lm_eval.common.redaction import redact_urls

    mentor, intern = (redact_urls(str(args.get(role) or "demo")) for role in ("mentor", "intern"))
    return f"{MODEL_NAME}:{mentor}+{intern}"


def patch_results_folder(tracker_module=None) -> None:
    """Name a tandem run's results folder after its pair (idempotent).

    lm-eval names the folder under ``--output_path`` after ``peft=``/``delta=``/``pretrained=``/``model=``/
    ``path=``/``engine=`` in model_args, else a random id: ``mentor=...,intern=...`` runs landed in a new
    random folder each time (and ``trace_path=`` named the folder after the trace file). Runs of the same
    pair now share one folder, named like any other model's."""
    if tracker_module is None:
        import lm_eval.loggers.evaluation_tracker as tracker_module
    cls = tracker_module.GeneralConfigTracker
    if getattr(cls.log_experiment_args, "_tandem_patched", False):
        return
    original = cls.log_experiment_args

    def log_experiment_args(self, model_source, model_args, *args, **kwargs):
        if model_source == MODEL_NAME:
            from tandem_lm_eval.common.redaction import redact, redact_in_place

            # the model is built by now: lm-eval's own copy of model_args (the dict it later writes into
            # the results and prints) loses its URL credentials (common/redaction.py)
            if isinstance(model_args, dict):
                redact_in_place(model_args)
            else:
                model_args = redact(model_args)
        original(self, model_source, model_args, *args, **kwargs)
        if model_source == MODEL_NAME:
            self.model_name = pair_name(model_args)
            self.model_name_sanitized = tracker_module.sanitize_model_name(self.model_name)

    log_experiment_args._tandem_patched = True  # type: ignore[attr-defined]
    cls.log_experiment_args = log_experiment_args
    from tandem_lm_eval.common.redaction import install_log_redaction
    from tandem_lm_eval.harness.results_files import patch_results_writes

    install_log_redaction()
    patch_results_writes(tracker_module, MODEL_NAME)
