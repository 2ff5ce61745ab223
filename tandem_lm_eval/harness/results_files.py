"""lm-eval's results files of a tandem run: written with URL credentials redacted, and a full disk is one
line, as everywhere else (common/disk.py).

lm-eval 0.4.13's ``EvaluationTracker.save_results_aggregated`` / ``save_results_samples`` catch every
exception, log a warning and leave whatever they had written: a full disk ended a run with a torn
``results_*.json`` and a zero exit code. For a tandem run (and only for one) both are wrapped: the
results they are given are redacted first (``common/redaction.py``: lm-eval echoes ``model_args`` into
``config.model_args`` and, through its TaskManager metadata, into every task's ``configs``); the
exception they swallow is seen through their logger; a file they left torn is cut back (the samples file
to its size before, the results file removed) and the run stops with ``DiskFullError``'s one line.
Light imports only: this is installed at lm-eval's import time (harness/registration.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tandem_lm_eval.common.disk import DISK_FULL_ERRNOS, DiskFullError
from tandem_lm_eval.common.redaction import redact, redact_in_place

# repr(OSError(28, 'No space left on device')) as lm-eval logs it
_OS_ERROR = re.compile(r"Error\((\d+), '([^']*)'")


class _SeeingLogger:
    """lm-eval's tracker logger, passed through, keeping the repr of the exception it is told about."""

    def __init__(self, logger) -> None:
        self._logger = logger
        self.errors: list[str] = []

    def info(self, msg, *args, **kwargs):
        if isinstance(msg, str) and _OS_ERROR.search(msg):
            self.errors.append(msg)
        return self._logger.info(msg, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._logger, name)


def _disk_full(errors: list[str]) -> tuple[int, str] | None:
    for text in errors:
        m = _OS_ERROR.search(text)
        if m and int(m.group(1)) in DISK_FULL_ERRNOS:
            return int(m.group(1)), m.group(2)
    return None


def _folder(tracker) -> Path:
    path = Path(tracker.output_path)
    if path.suffix == ".json":
        return path.parent
    return path / str(tracker.general_config_tracker.model_name_sanitized)


def _results_file(tracker) -> Path:
    path = Path(tracker.output_path)
    if path.suffix == ".json":
        return path.with_name(f"{path.stem}_{tracker.date_id}.json")
    return _folder(tracker) / f"results_{tracker.date_id}.json"


def patch_results_writes(tracker_module, model_name: str) -> None:
    """Wrap the tracker's two writers for runs of ``model_name`` (idempotent)."""
    cls = tracker_module.EvaluationTracker
    if getattr(cls.save_results_aggregated, "_tandem_patched", False):
        return
    aggregated, per_task = cls.save_results_aggregated, cls.save_results_samples

    def ours(tracker) -> bool:
        return bool(tracker.output_path) and tracker.general_config_tracker.model_source == model_name

    def call_seeing(fn, *args, **kwargs) -> list[str]:
        seeing = _SeeingLogger(tracker_module.eval_logger)
        tracker_module.eval_logger = seeing
        try:
            fn(*args, **kwargs)
        finally:
            tracker_module.eval_logger = seeing._logger
        return seeing.errors

    def save_results_aggregated(self, results: dict, samples: dict | None = None) -> None:
        if not ours(self):
            return aggregated(self, results=results, samples=samples)
        config = results.get("config")
        if isinstance(config, dict) and isinstance(config.get("model_args"), dict):
            redact_in_place(config["model_args"])  # the same dict lm-eval's closing line prints
        errors = call_seeing(aggregated, self, results=redact(results), samples=samples)
        full = _disk_full(errors)
        if full is not None:
            path = _results_file(self)
            path.unlink(missing_ok=True)  # a torn results file is worse than none
            kept = (
                "the torn file is removed; with store= every answer is in the store and the rerun serves it"
            )
            raise SystemExit(f"tandem: {DiskFullError(path, full[1], kept, full[0])}")

    def save_results_samples(self, task_name: str, samples) -> None:
        if not ours(self):
            return per_task(self, task_name=task_name, samples=samples)
        path = _folder(self) / f"samples_{task_name}_{self.date_id}.jsonl"
        before = path.stat().st_size if path.is_file() else None
        full = _disk_full(call_seeing(per_task, self, task_name=task_name, samples=samples))
        if full is not None:
            if before is None:
                path.unlink(missing_ok=True)
            elif path.is_file():
                os.truncate(path, before)
            kept = f"{path.name} is cut back to its last whole sample; the results file beside it is whole"
            raise SystemExit(f"tandem: {DiskFullError(path, full[1], kept, full[0])}")

    save_results_aggregated._tandem_patched = True  # type: ignore[attr-defined]
    cls.save_results_aggregated = save_results_aggregated
    cls.save_results_samples = save_results_samples
