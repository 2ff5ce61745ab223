"""Paths a user gives, checked before any work starts: a file to write is not a folder and can be written
where it is; a folder to write is not a file; a file to read exists. Each check names the option and says
what to do, in one line (``OptionError``, the same error as every other bad option value).

Pure checks on the file system as it is: nothing is created or written here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tandem_lm_eval.common.options import OptionError


def _path(name: str, value: Any) -> Path:
    if value is None or not str(value).strip():
        raise OptionError(f"{name} must be a path, got {value!r}")
    return Path(str(value).strip()).expanduser()


def _check_writable(name: str, path: Path, what: str) -> None:
    """``path`` (a file or folder, by ``what``) can be written: it is writable, or its nearest existing
    ancestor is a writable folder where it can be made."""
    if path.exists():
        access = os.W_OK | (os.X_OK if what == "folder" else 0)
        if not os.access(path, access):
            raise OptionError(f"{name} {path} is not writable; give a {what} you can write to")
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OptionError(
            f"{name} {path}: {parent} is a file, so the {what} cannot be made there; give another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OptionError(f"{name} {path}: folder {parent} is not writable; give a path you can write to")


def output_file(name: str, value: Any, example: str = "records.jsonl") -> Path:
    """A file that will be written (or appended to): not a folder, writable or creatable. ``example``: a
    file name the message suggests inside a folder given by mistake."""
    path = _path(name, value)
    if path.is_dir():
        raise OptionError(f"{name} {path} is a folder: give a file path (e.g. {path / example})")
    _check_writable(name, path, "file")
    return path


def output_dir(name: str, value: Any) -> Path:
    """A folder that will be written into: not a file, writable or creatable."""
    path = _path(name, value)
    if path.exists() and not path.is_dir():
        raise OptionError(f"{name} {path} is a file: give a folder path (it is created if missing)")
    _check_writable(name, path, "folder")
    return path


def input_file(name: str, value: Any) -> Path:
    """A file that will be read: it exists and is a file."""
    path = _path(name, value)
    if not path.exists():
        raise OptionError(f"{name} {path} does not exist; check the path")
    if path.is_dir():
        raise OptionError(f"{name} {path} is a folder: give the file inside it")
    return path
