"""Where the package's data folders are: inside the wheel, or at the repository root in a checkout.

The wheel carries ``tasks/`` and ``classifiers/`` as ``tandem_lm_eval/tasks`` and
``tandem_lm_eval/classifiers``; an editable install reads them from the repository root.
"""

from __future__ import annotations

from pathlib import Path

# this file is tandem_lm_eval/data/resources.py
_PACKAGE = Path(__file__).resolve().parent.parent


def _data_dir(name: str) -> Path:
    packaged = _PACKAGE / name
    if packaged.is_dir():
        return packaged
    return _PACKAGE.parent / name


def tasks_dir() -> Path:
    return _data_dir("tasks")


def classifiers_dir() -> Path:
    return _data_dir("classifiers")
