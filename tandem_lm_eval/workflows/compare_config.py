"""The ``compare`` config: what a TOML/YAML file may say, read and checked into a ``CompareConfig``.

The file names the models, the tasks, a limit and the rows (the format is in workflows/compare.py's
docstring and docs/leaderboard.md). Every value is checked here, with one ``CompareError`` line naming
it; what needs the models or the tasks (each row's model_args as ``TandemLM`` reads them, classifiers,
questions) is checked by ``compare.preflight`` before any model loads. Imports only common/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem_lm_eval.common.errors import TandemError
from tandem_lm_eval.common.options import as_bool, as_int, as_str, parse_model_args

REPLAYED = ("intern_only", "fixed", "tandem", "route", "oracle", "agreement", "router")
#: what a replayed row's own model_args may set (what replay reads); everything else is the shared collect's
REPLAYED_ROW_KEYS = ("classifier", "thresholds")
STORE_FILE = "store.sqlite"


class CompareError(TandemError, ValueError):
    """A compare config that cannot run (unknown keys, a bad mode, rows that cannot be computed)."""


@dataclass
class CompareRow:
    name: str
    mode: str
    model_args: dict[str, str] = field(default_factory=dict)  # added to the shared model_args
    live: bool = False  # run through lm-eval even when the mode could be replayed (to check replay)

    @property
    def replayed(self) -> bool:
        return not self.live and self.mode.split(":")[0] in REPLAYED


@dataclass
class CompareConfig:
    output: Path
    tasks: list[str]
    rows: list[CompareRow]
    model_args: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    max_gen_toks: int | None = None
    include_path: str | None = None
    confirm_run_unsafe_code: bool = False
    chunk: int = 32
    resamples: int = 2000  # bootstrap resamples of the questions (intervals, comparisons)
    seed: int = 0  # the bootstrap's seed

    KEYS = (
        "output",
        "tasks",
        "rows",
        "model_args",
        "limit",
        "max_gen_toks",
        "include_path",
        "confirm_run_unsafe_code",
        "chunk",
        "resamples",
        "seed",
    )


def load_config(path: str | Path) -> CompareConfig:
    path = Path(path)
    if not path.is_file():
        raise CompareError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parser error is the user's file
        raise CompareError(f"{path}: cannot parse ({type(exc).__name__}: {exc})") from None
    return config_from_dict(data or {}, base=path.parent)


def config_from_dict(data: dict[str, Any], base: Path = Path(".")) -> CompareConfig:
    from tandem_lm_eval.cascade.policies import check_mode

    unknown = set(data) - set(CompareConfig.KEYS)
    if unknown:
        raise CompareError(f"unknown config keys {sorted(unknown)}; valid: {', '.join(CompareConfig.KEYS)}")
    for key in ("output", "tasks", "rows"):
        if key not in data:
            raise CompareError(f"the config needs {key!r}")
    tasks = data["tasks"]
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and t.strip() for t in tasks):
        raise CompareError(f"tasks must be a list of task names, got {data['tasks']!r}")
    tasks = [t.strip() for t in tasks]
    twice = sorted({t for t in tasks if tasks.count(t) > 1})
    if twice:  # its rows would be computed twice and its entries counted twice on the board
        error = CompareError(f"tasks lists {', '.join(twice)} more than once: give each task once")
        error.check = "compare-task-twice"  # the kind of check (harness/plan.py CHECKS)
        raise error
    if not isinstance(data["rows"], list) or not data["rows"]:
        raise CompareError("rows must be a list of [[rows]] entries, each with a mode")
    try:  # the numbers and switches of the config, each named when it is wrong
        limit = None if data.get("limit") is None else as_int("limit", data["limit"], minimum=1)
        max_gen_toks = (
            None
            if data.get("max_gen_toks") is None
            else as_int("max_gen_toks", data["max_gen_toks"], minimum=1)
        )
        chunk = as_int("chunk", data.get("chunk", 32), minimum=1)
        resamples = as_int("resamples", data.get("resamples", 2000), minimum=100)
        seed = as_int("seed", data.get("seed", 0), minimum=0)
        unsafe = as_bool("confirm_run_unsafe_code", data.get("confirm_run_unsafe_code", False))
        include_path = (
            None if data.get("include_path") is None else as_str("include_path", data["include_path"])
        )
    except TandemError as exc:
        raise CompareError(str(exc)) from None
    rows = []
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or "mode" not in row:
            raise CompareError(f"rows[{i}] needs a mode")
        extra = set(row) - {"name", "mode", "model_args", "live"}
        if extra:
            raise CompareError(f"rows[{i}]: unknown keys {sorted(extra)} (name, mode, model_args, live)")
        mode = str(row["mode"]).strip()
        if mode != "oracle":
            try:
                check_mode(mode)
            except TandemError as exc:
                raise CompareError(f"rows[{i}]: {exc}") from None
        if mode == "oracle" and row.get("live") is True:
            raise CompareError(
                f"rows[{i}]: the oracle is a reference computed from records, it cannot run live"
            )
        try:
            live = as_bool(f"rows[{i}].live", row.get("live", False))
        except TandemError as exc:
            raise CompareError(str(exc)) from None
        rows.append(CompareRow(str(row.get("name", mode)), mode, _args(row.get("model_args")), live))
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise CompareError(f"row names must be unique: {names}")
    shared = _args(data.get("model_args"))
    if "mode" in shared:
        raise CompareError("the shared model_args must not set mode: each row has its own")
    output = Path(data["output"])
    return CompareConfig(
        output=output if output.is_absolute() else base / output,
        tasks=list(tasks),
        rows=rows,
        model_args=shared,
        limit=limit,
        max_gen_toks=max_gen_toks,
        include_path=include_path,
        confirm_run_unsafe_code=unsafe,
        chunk=chunk,
        resamples=resamples,
        seed=seed,
    )


def _args(value) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return parse_model_args(str(value))
