"""``tandem-lm-eval compare CONFIG``: Tandem against its baselines, one command, one leaderboard.

The config file (TOML or YAML) names the models, the tasks, a limit and the rows::

    output = "results/compare-demo"
    tasks = ["tandem_gsm8k"]
    limit = 50                      # the first 50 documents of each task, as lm_eval --limit
    max_gen_toks = 256              # the intern's (and a mentor's) answer budget
    model_args = "mentor=...,intern=...,budgets=[24,48,96],mentor_num_params=32e9"

    [[rows]]
    name = "Intern only"
    mode = "intern_only"

    [[rows]]
    name = "Tandem"
    mode = "tandem"
    model_args = "classifier=classifiers/smollm2-135m-gsm8k"

Work is shared where the prompts are the same. Every row whose intern answers from a stage
(``intern_only``, ``fixed:k``, ``tandem``, ``route``, and the ``oracle`` reference) is replayed from
one ``collect`` run per task: the mentor writes every stage once, the intern scores and answers every
stage, the task's own filters and metric judge each answer (records under ``<output>/records``).
Rows where the mentor answers (``mentor_only``, ``budget_forcing:B``) run through lm-eval's own
evaluator (``<output>/live``). Both are keyed by what determines them (model_args, task, answer
budget): a second run with nothing changed loads everything and calls no model; a changed setting
recomputes only what it touches. Outputs: ``leaderboard.md``, ``.csv``, ``.json`` and one
``<task>.png`` of accuracy against TFLOPs with the Pareto front.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tandem_lm_eval.common.options import parse_model_args
from tandem_lm_eval.workflows.leaderboard import BoardEntry, plot_task, to_csv, to_json, to_markdown

logger = logging.getLogger(__name__)

REPLAYED = ("intern_only", "fixed", "tandem", "route", "oracle")


class CompareError(ValueError):
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
            except ValueError as exc:
                raise CompareError(f"rows[{i}]: {exc}") from None
        if mode == "oracle" and row.get("live"):
            raise CompareError(
                f"rows[{i}]: the oracle is a reference computed from records, it cannot run live"
            )
        rows.append(
            CompareRow(
                str(row.get("name", mode)), mode, _args(row.get("model_args")), bool(row.get("live", False))
            )
        )
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
        limit=None if data.get("limit") is None else int(data["limit"]),
        max_gen_toks=None if data.get("max_gen_toks") is None else int(data["max_gen_toks"]),
        include_path=data.get("include_path"),
        confirm_run_unsafe_code=bool(data.get("confirm_run_unsafe_code", False)),
        chunk=int(data.get("chunk", 32)),
    )


def _args(value) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return parse_model_args(str(value))


def _close(*backends) -> None:
    """Close each distinct backend once (one engine may serve both roles)."""
    for backend in {id(b): b for b in backends if b is not None}.values():
        backend.close()


def _key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --- the two ways a row is computed -------------------------------------------------------------------
def task_source(config: CompareConfig, task: str):
    """The task's TaskSource (its metric and filter), without building its questions."""
    from tandem_lm_eval.harness.task_questions import load_task_questions

    _, source = load_task_questions(
        [task],
        include_path=config.include_path,
        limit=1,
        sampling="first",
        confirm_run_unsafe_code=config.confirm_run_unsafe_code,
    )
    return source


def records_for_task(config: CompareConfig, task: str):
    """The collect records of the first ``limit`` documents of ``task`` (collected if missing), and
    the task's source."""
    from tandem_lm_eval.data.records import load_records
    from tandem_lm_eval.harness.task_questions import load_task_questions
    from tandem_lm_eval.workflows.collect import collect, make_explorer

    path = records_path(config, task)
    questions, source = load_task_questions(
        [task],
        include_path=config.include_path,
        limit=config.limit,
        sampling="first",
        max_gen_toks=config.max_gen_toks,
        confirm_run_unsafe_code=config.confirm_run_unsafe_code,
    )
    wanted = {(q.task, q.doc_hash) for q in questions}
    have = {(r.task, r.doc_hash) for r in load_records([path])} if path.is_file() else set()
    needs = hidden_needs(config)
    if not wanted <= have:
        logger.info("compare: collecting %d questions of %s", len(wanted - have), task)
        layers = ",".join(sorted({str(h.layer) for _, h in needs})) or None
        explorer = make_explorer(config.model_args, hidden_layers=layers)
        try:
            collect(explorer, questions, source, path, chunk=config.chunk)
        finally:  # free the engines (GPU memory) before the live rows load theirs
            _close(explorer.cascade.mentor, explorer.cascade.intern)
    by_key = {(r.task, r.doc_hash): r for r in load_records([path])}
    records = [by_key[(q.task, q.doc_hash)] for q in questions]
    complete_for_judges(config, records, questions, path, needs)
    return records, source


def records_path(config: CompareConfig, task: str) -> Path:
    key = _key(config.model_args, task, config.max_gen_toks, config.include_path)
    return config.output / "records" / f"{task}-{key}.jsonl"


def hidden_needs(config: CompareConfig) -> list[tuple[Path, object]]:
    """(classifier folder, hidden reading) of each replayed row whose judge reads hidden vectors."""
    from tandem_lm_eval.judgment.loading import load_classifier_folder

    out = []
    for row in config.rows:
        if row.replayed and row.mode.split(":")[0] in ("tandem", "route"):
            folder = _classifier_path(row, config)
            hidden = load_classifier_folder(folder).card.hidden
            if hidden is not None:
                out.append((folder, hidden))
    return out


def complete_for_judges(config: CompareConfig, records, questions, path: Path, needs) -> None:
    """Add the hidden vectors a judge reads but the records' side file lacks (a collect made before, or
    a LoRA-adapted intern's): intern forward passes only."""
    from tandem_lm_eval.data.hidden_file import HiddenFile, hidden_path_for
    from tandem_lm_eval.judgment.loading import adapter_of
    from tandem_lm_eval.workflows.complete_hidden import complete_hidden, intern_for

    side = hidden_path_for(path)
    have = {}
    if side.is_file():
        with HiddenFile(side) as f:
            have = f.keys()
    usable = sum(s.usable for r in records for s in r.stages)
    todo = [(folder, h) for folder, h in needs if have.get(h.key, 0) < usable]
    if not todo:
        return
    by_key = {(q.task, q.doc_hash): q for q in questions}
    intern, identity, thinking = intern_for(config.model_args)
    try:
        for folder, h in todo:
            adapter = adapter_of(folder, h) if h.adapter is not None else None
            complete_hidden(
                records, by_key, path, intern, identity, str(h.layer), thinking=thinking, adapter=adapter
            )
    finally:
        _close(intern)


def live_samples(config: CompareConfig, row: CompareRow, task: str, source) -> list[dict]:
    """Per-document results of ``row`` on ``task`` through lm-eval's evaluator (cached by settings)."""
    key = _key(config.model_args, row.model_args, row.mode, task, config.max_gen_toks, config.limit)
    path = config.output / "live" / f"{task}-{row.mode.replace(':', '_')}-{key}.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text().split("\n") if line.strip()]
    import lm_eval
    import lm_eval.tasks.manager as manager
    from lm_eval.tasks import TaskManager

    from tandem_lm_eval.harness.lm import TandemLM
    from tandem_lm_eval.harness.registration import patch_task_manager

    patch_task_manager(manager)
    metric, filter_name = source.metric_of(task), source.filter_of(task)
    lm = TandemLM(**{"progress": "true", **config.model_args, **row.model_args, "mode": row.mode})
    try:
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=[task],
            limit=config.limit,
            log_samples=True,
            gen_kwargs=f"max_gen_toks={config.max_gen_toks}" if config.max_gen_toks else None,
            task_manager=TaskManager(include_path=config.include_path)
            if config.include_path
            else TaskManager(),
            confirm_run_unsafe_code=config.confirm_run_unsafe_code,
        )
    finally:
        _close(lm.mentor, lm.intern)
    samples = []
    for s in out["samples"][task]:
        if s.get("filter", filter_name) != filter_name:
            continue
        samples.append(
            {
                "doc_id": s["doc_id"],
                "metric": float(s[metric]),
                "mentor_tokens": float(s["tandem_mentor_tokens"]),
                "intern_tokens": float(s["tandem_intern_tokens"]),
                "tflops": float(s["tandem_tflops"]),
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return samples


def replayed_entry(row: CompareRow, task: str, records, metric: str, config: CompareConfig) -> BoardEntry:
    """A row computed from collect records: no model call."""
    from tandem_lm_eval.calibration.analysis import replay_each, scores_of
    from tandem_lm_eval.calibration.replay import fixed_stage, oracle, route
    from tandem_lm_eval.calibration.tables import hidden_vectors, row_table, stage_table
    from tandem_lm_eval.cascade.policies import make_policy
    from tandem_lm_eval.judgment.loading import load_classifier_folder

    kind = row.mode.split(":")[0]
    if kind in ("tandem", "route"):
        clf = load_classifier_folder(_classifier_path(row, config))
        _check_classifier_fits(clf, records, row)
        hidden = None
        if clf.card.hidden is not None:
            hidden, _ = hidden_vectors([records_path(config, task)], clf.card.hidden.key)
        rows = row_table(records, clf.card.feature_span, clf.card.spec, hidden)
        s = scores_of(clf, rows, records)
        judged = {
            "feature_set": clf.card.feature_set,
            "y": rows.y.tolist(),
            "stage": rows.stage.tolist(),
            "s": [float(x) for x in s],
        }
        table = stage_table(records, lambda r: s, rows)
        thresholds = _thresholds(row, clf, records)
        result = route(table, thresholds[0][0]) if kind == "route" else replay_each(table, thresholds)
    else:
        rows = row_table(records, "prompt")
        table = stage_table(records, lambda r: np.zeros(len(r)), rows)
        if kind == "oracle":
            result = oracle(table)
        else:
            policy = make_policy(row.mode)
            result = fixed_stage(table, policy.last_stage(table.num_stages))
        judged = None
    entry = BoardEntry(
        name=row.name,
        mode=row.mode,
        task=task,
        metric=metric,
        questions=table.num_questions,
        accuracy=result.accuracy,
        mean_mentor_tokens=result.mean_mentor_tokens,
        mean_intern_tokens=result.mean_intern_tokens,
        mean_tflops=result.mean_tflops,
        source="replay",
    )
    if judged is not None:
        JUDGED[(row.name, task)] = judged
    return entry


# The judged rows of the last replay of each (row, task): labels, stages and scores, for Table 8's AUCs.
JUDGED: dict[tuple[str, str], dict] = {}


def live_entry(
    row: CompareRow, task: str, samples: list[dict], metric: str, threshold: float = 1.0
) -> BoardEntry:
    if not samples:
        raise CompareError(f"row {row.name!r} on {task}: the evaluation returned no samples")
    return BoardEntry(
        name=row.name,
        mode=row.mode,
        task=task,
        metric=metric,
        questions=len(samples),
        accuracy=float(np.mean([s["metric"] >= threshold - 1e-9 for s in samples])),
        mean_mentor_tokens=float(np.mean([s["mentor_tokens"] for s in samples])),
        mean_intern_tokens=float(np.mean([s["intern_tokens"] for s in samples])),
        mean_tflops=float(np.mean([s["tflops"] for s in samples])),
        source="live",
    )


def _classifier_path(row: CompareRow, config: CompareConfig) -> Path:
    from tandem_lm_eval.data.resources import classifiers_dir
    from tandem_lm_eval.harness.assembly import DEMO_CLASSIFIER

    name = row.model_args.get("classifier") or config.model_args.get("classifier")
    if name is None:
        intern = row.model_args.get("intern", config.model_args.get("intern", "demo"))
        if intern != "demo":
            raise CompareError(f"row {row.name!r} ({row.mode}) needs a classifier in its model_args")
        name = DEMO_CLASSIFIER
    path = Path(name).expanduser()
    return path if path.exists() else classifiers_dir() / name


def _check_classifier_fits(clf, records, row: CompareRow) -> None:
    card, first = clf.card, records[0]
    problems = []
    if list(card.budgets) != list(first.budgets):
        problems.append(f"budgets {card.budgets} vs the records' {first.budgets}")
    if card.entropy_method != first.entropy_method:
        problems.append(f"entropy {card.entropy_method!r} vs {first.entropy_method!r}")
    from tandem_lm_eval.judgment.card import normalize_model_name

    if card.intern_model and normalize_model_name(card.intern_model) != normalize_model_name(
        first.intern_model
    ):
        problems.append(f"intern {card.intern_model!r} vs {first.intern_model!r}")
    if problems:
        raise CompareError(
            f"row {row.name!r}: the classifier does not fit the collected records: " + "; ".join(problems)
        )
    overlap = sum(r.question_hash in card.training_questions for r in records)
    if overlap:
        raise CompareError(
            f"row {row.name!r}: {overlap} questions are among the classifier's training questions"
        )


def _thresholds(row: CompareRow, clf, records) -> list[tuple[float, ...]]:
    from tandem_lm_eval.calibration.analysis import question_thresholds

    given = row.model_args.get("thresholds")
    if given:
        from tandem_lm_eval.common.options import as_float, as_list

        values = tuple(as_float("thresholds", t, minimum=0, maximum=1) for t in as_list("thresholds", given))
        return [values] * len(records)
    return question_thresholds(clf, records)


# --- Table 8 ------------------------------------------------------------------------------------------
def judges_by_task(config: CompareConfig, entries: list[BoardEntry]) -> dict:
    """Paper Table 8 from the leaderboard: each row's accuracy per task (the group) and overall, mean
    TFLOPs, and for every judge (a replayed tandem/route row) its AUC over all rows and per stage."""
    from tandem_lm_eval.calibration.analysis import bootstrap_auc

    rows = {}
    for row in config.rows:
        mine = [e for e in entries if e.name == row.name]
        if not mine:
            continue
        judged = next((JUDGED[(row.name, t)] for t in config.tasks if (row.name, t) in JUDGED), None)
        rows[row.name] = {
            "mode": row.mode,
            "judge_input": judged["feature_set"] if judged else "",
            "accuracy": {**{e.task: e.accuracy for e in mine}, "all": _weighted(mine, "accuracy")},
            "mean_tflops": _weighted(mine, "mean_tflops"),
        }
    aucs = {}
    for row in config.rows:
        judged = [JUDGED[(row.name, t)] for t in config.tasks if (row.name, t) in JUDGED]
        if not judged:
            continue
        y = np.concatenate([np.array(j["y"]) for j in judged])
        stage = np.concatenate([np.array(j["stage"]) for j in judged])
        s = np.concatenate([np.array(j["s"]) for j in judged])
        per = {"all": bootstrap_auc(y, s)}
        for t in sorted(set(stage.tolist())):
            per[str(t)] = bootstrap_auc(y[stage == t], s[stage == t])
        aucs[row.name] = per
    return {"groups": list(config.tasks), "rows": rows, "auc": aucs}


def _weighted(entries: list[BoardEntry], field_name: str) -> float:
    n = sum(e.questions for e in entries)
    return float(sum(getattr(e, field_name) * e.questions for e in entries) / max(n, 1))


def table8_markdown(table8: dict) -> str:
    from tandem_lm_eval.calibration.judges_table import judges_markdown

    rows = {name: {"kind": v["judge_input"] or "baseline", **v} for name, v in table8["rows"].items()}
    text = judges_markdown({**table8, "rows": rows})
    return text.replace(
        "\nMentor only: not in collect records (the mentor never answers there); `compare` adds it.\n", "\n"
    )


# --- the whole run ------------------------------------------------------------------------------------
def run_compare(config: CompareConfig) -> list[BoardEntry]:
    entries = []
    for task in config.tasks:
        if any(r.replayed for r in config.rows):
            records, source = records_for_task(config, task)
        else:
            records, source = None, task_source(config, task)
        metric = source.metric_of(task)
        for row in config.rows:
            if row.replayed:
                entries.append(replayed_entry(row, task, records, metric, config))
            else:
                samples = live_samples(config, row, task, source)
                entries.append(live_entry(row, task, samples, metric, source.threshold))
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    table8 = judges_by_task(config, entries)
    (out / "leaderboard.md").write_text(to_markdown(entries) + "\n" + table8_markdown(table8))
    (out / "leaderboard.csv").write_text(to_csv(entries))
    (out / "leaderboard.json").write_text(
        to_json(entries, {"tasks": config.tasks, "limit": config.limit, "table8": table8})
    )
    for task in config.tasks:
        plot_task([e for e in entries if e.task == task], out / f"{task}.png")
    return entries
