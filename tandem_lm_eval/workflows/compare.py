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
(``intern_only``, ``fixed:k``, ``tandem``, ``route``, ``agreement``, ``router`` (the collect then also
records the mentor's own answer to each question), and the ``oracle`` reference) is replayed from
one ``collect`` run per task: the mentor writes every stage once, the intern scores and answers every
stage, the task's own filters and metric judge each answer (records under ``<output>/records``).
Rows where the mentor answers (``mentor_only``, ``budget_forcing:B``) run through lm-eval's own
evaluator (``<output>/live``). Both are keyed by what determines them (model_args, task, answer
budget): a second run with nothing changed loads everything and calls no model; a changed setting
recomputes only what it touches. Outputs: ``leaderboard.md``, ``.csv``, ``.json`` and one
``<task>.png`` of accuracy against TFLOPs with the Pareto front; every number with its 95% paired
bootstrap interval over questions, the paired comparisons and verdicts, the frontier (hull, AIQ,
APGR) and the audit block (board_stats.py, board_audit.py, docs/leaderboard.md; the config's
``resamples`` and ``seed`` set the bootstrap).

Latency (paper Table 13): a live row's is measured, each question's share of the run's batched
calls (``tandem_latency_s``; an output the run store already held, e.g. the collect's, brings the
seconds it took when it was computed); a replayed row's is the sum of exactly the phases its policy's path
ran, as the collect recorded them for that question (calibration/replay.py). So that both are
shares of calls of the same size, the collect answers stage by stage and the live rows run with
``chunk_size`` = the config's ``chunk`` (unless their model_args set one). ``chunk = 1``: one
question at a time, the paper's per-sample latency (docs/cost-reporting.md).

Before any model loads, ``preflight`` checks every value of the config as the run would meet it (each
row's model_args as ``TandemLM`` reads them, the classifiers' files and budgets, the tasks and their
questions against each classifier's training questions, the output folder, matplotlib for the plots):
a bad one is one line, never an error after the work. Nothing generated is lost: every model writes
into a run store, ``<output>/store.sqlite`` (unless the shared model_args name ``store=``; ``none``:
off), so a rerun after a failure (a broken filter in a task YAML, an interrupted run) computes nothing
twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tandem_lm_eval.common.errors import TandemError
from tandem_lm_eval.judgment.training_guard import QuestionIdentity
from tandem_lm_eval.judgment.training_guard import overlap as training_overlap
from tandem_lm_eval.workflows.board_stats import board_stats, task_markdown
from tandem_lm_eval.workflows.compare_config import (
    REPLAYED_ROW_KEYS,
    STORE_FILE,
    CompareConfig,
    CompareError,
    CompareRow,
    config_from_dict,
    load_config,
)
from tandem_lm_eval.workflows.judges_board import JudgedRows, judges_by_task, table8_markdown
from tandem_lm_eval.workflows.leaderboard import (
    BoardEntry,
    passes_markdown,
    plot_task,
    sorted_outcomes,
    to_csv,
    to_json,
    to_markdown,
)

# Public names of the config and of Table 8, imported from here by the CLI and by users' scripts.
__all__ = [
    "CompareConfig",
    "CompareError",
    "CompareRow",
    "JudgedRows",
    "config_from_dict",
    "judges_by_task",
    "load_config",
    "replayed_entry",
    "run_compare",
    "table8_markdown",
]

logger = logging.getLogger(__name__)

#: the row kinds that read a classifier (and time a judgment)
JUDGED = ("tandem", "route", "router")


def _close(*backends) -> None:
    """Close each distinct backend once (one engine may serve both roles)."""
    for backend in {id(b): b for b in backends if b is not None}.values():
        backend.close()


def _key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --- the two ways a row is computed -------------------------------------------------------------------
def task_questions(config: CompareConfig, task: str):
    """The first ``limit`` documents of ``task`` as lm-eval asks them, and the task's source (no model)."""
    from tandem_lm_eval.harness.task_questions import load_task_questions

    return load_task_questions(
        [task],
        include_path=config.include_path,
        limit=config.limit,
        sampling="first",
        max_gen_toks=config.max_gen_toks,
        confirm_run_unsafe_code=config.confirm_run_unsafe_code,
    )


def store_args(config: CompareConfig) -> dict[str, str]:
    """The run store every model of the comparison writes to: ``<output>/store.sqlite``, unless the
    shared model_args name one (``store=none`` turns it off). Not part of any cache key: where work is
    kept does not change what it is."""
    if "store" in config.model_args:
        return {}
    return {"store": str(config.output / STORE_FILE)}


def records_for_task(config: CompareConfig, task: str, loaded=None, plans=None):
    """The collect records of the first ``limit`` documents of ``task`` (collected if missing), the
    task's source, and the questions (with their documents) the records answer, in the same order.
    ``loaded``: ``task_questions``' result, when the caller has it already."""
    from tandem_lm_eval.data.records import load_records
    from tandem_lm_eval.workflows.collect import collect, collect_plan, make_explorer

    path = records_path(config, task)
    questions, source = loaded if loaded is not None else task_questions(config, task)
    wanted = {(q.task, q.doc_hash) for q in questions}
    have = {(r.task, r.doc_hash) for r in load_records([path])} if path.is_file() else set()
    needs = hidden_needs(config, plans)
    if not wanted <= have:
        logger.info("compare: collecting %d questions of %s", len(wanted - have), task)
        layers = ",".join(sorted({str(h.layer) for _, h in needs})) or None
        plan = collect_plan({**config.model_args, **store_args(config)})
        explorer = make_explorer(plan, hidden_layers=layers)
        try:
            # answers stage by stage: each answer's time is a share of a call as large as a live run's
            collect(
                explorer,
                questions,
                source,
                path,
                chunk=config.chunk,
                answers_by_stage=True,
                mentor_answers=needs_mentor_answers(config),
            )
        finally:  # free the engines (GPU memory) before the live rows load theirs
            _close(explorer.cascade.mentor, explorer.cascade.intern)
    by_key = {(r.task, r.doc_hash): r for r in load_records([path])}
    records = [by_key[(q.task, q.doc_hash)] for q in questions]
    complete_for_judges(config, records, questions, path, needs)
    return records, source, questions


def needs_mentor_answers(config: CompareConfig) -> bool:
    """A replayed ``router`` row needs the mentor's own answers in the collect (``--mentor-answers``)."""
    return any(r.replayed and r.mode == "router" for r in config.rows)


def records_path(config: CompareConfig, task: str) -> Path:
    extra = ("mentor_answers",) if needs_mentor_answers(config) else ()  # other configs keep their keys
    key = _key(config.model_args, task, config.max_gen_toks, config.include_path, *extra)
    return config.output / "records" / f"{task}-{key}.jsonl"


def hidden_needs(config: CompareConfig, plans=None) -> list[tuple[Path, object]]:
    """(classifier folder, hidden reading) of each replayed row whose judge reads hidden vectors
    (``plans``: preflight's, each row's classifier read once; made here when not given)."""
    plans = plans if plans is not None else row_plans(config)
    out = []
    for row in config.rows:
        clf = plans[row.name].classifier
        if row.replayed and clf is not None and clf.card.hidden is not None:
            out.append((clf.folder, clf.card.hidden))
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
    from tandem_lm_eval.workflows.complete_hidden import intern_plan

    intern, identity, thinking = intern_for(intern_plan(config.model_args))
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
    # the chunk sets how many questions share a call, hence the measured latency: part of the key
    chunk_size = row.model_args.get("chunk_size") or config.model_args.get("chunk_size") or str(config.chunk)
    key = _key(
        config.model_args, row.model_args, row.mode, task, config.max_gen_toks, config.limit, chunk_size
    )
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
    lm = TandemLM(
        **{
            "progress": "true",
            **config.model_args,
            **store_args(config),
            **row.model_args,
            "chunk_size": chunk_size,
            "mode": row.mode,
        }
    )
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
        # outputs the run store served bring the seconds they took when computed: the row says so
        store = lm.get_model_info()["tandem"]["store"] or {}
    finally:
        lm.close()  # its engines, or its replicas' workers
    served = sum(c["generations_served"] + c["scores_served"] for c in (store.get("counts") or {}).values())
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
                "full_pass_tflops": float(s["tandem_full_pass_tflops"]),
                "censored": float(s["tandem_censored"]),
                "stop_stage": float(s["tandem_stop_stage"]),
                "latency_s": float(s["tandem_latency_s"]),
                "judgment_s": float(s["tandem_judgment_s"]),
                "store_served": served,
                # the answer as generated (before the task's filters): what a replay is checked against
                "answer": str(s["resps"][0][0]) if s.get("resps") and s["resps"][0] else None,
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return samples


def replayed_entry(
    row: CompareRow,
    task: str,
    records,
    metric: str,
    config: CompareConfig,
    questions=None,
    source=None,
    plans=None,
) -> tuple[BoardEntry, JudgedRows | None]:
    """A row computed from collect records: no model call. ``questions`` (the records' TaskQuestions,
    in order) let a per-group classifier find each question's group by its own rule, as a live run does;
    ``source`` (the task's TaskSource) gives ``agreement`` the task's filters.
    Returns the board entry and, for a row with a judge, what the judge said (None otherwise)."""
    from tandem_lm_eval.calibration.analysis import replay_each, scores_of
    from tandem_lm_eval.calibration.replay import agreement, fixed_stage, oracle, route, router
    from tandem_lm_eval.calibration.tables import hidden_vectors, mentor_answers, row_table, stage_table

    kind = row.mode.split(":")[0]
    plan = (plans if plans is not None else row_plans(config))[row.name]
    judges = plan.classifier is not None
    if judges:
        clf = plan.classifier.classifier  # read once, by the row's plan
        _check_classifier_fits(clf, records, row)
        records = _grouped_as_live(clf, records, questions)
        hidden = None
        if clf.card.hidden is not None:
            hidden, _ = hidden_vectors([records_path(config, task)], clf.card.hidden.key)
        rows = row_table(records, clf.card.feature_span, clf.card.spec, hidden)
        scored: list[np.ndarray] = []

        def scores(r):  # scored inside stage_table, which times the classifier as part of each judgment
            scored.append(scores_of(clf, r, records))
            return scored[-1]

        table = stage_table(records, scores, rows)
        judged = JudgedRows(
            clf.card.feature_set,
            np.asarray(rows.y),
            np.asarray(rows.stage),
            np.asarray(scored[-1], dtype=float),
            question=np.asarray(rows.question),
        )
        thresholds = _thresholds(row, plan, clf, records)
        if plan.policy.name == "route":  # each question's own τ_0: a per-group router has one per group
            result = route(table, np.array([t[0] for t in thresholds]))
        elif kind == "router":  # the intern alone, or the mentor's own recorded answer
            result = router(table, mentor_answers(records), np.array([t[0] for t in thresholds]))
        else:
            result = replay_each(table, thresholds)
    else:
        rows = row_table(records, "prompt")
        table = stage_table(records, lambda r: np.zeros(len(r)), rows)
        if row.mode == "oracle":
            result = oracle(table)
        elif kind == "agreement":
            result = agreement(table, answer_keys(records, questions, source, task))
        else:
            result = fixed_stage(table, plan.policy.last_stage(table.num_stages))
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
        mean_latency_s=result.mean_latency_s,
        mean_judgment_s=result.mean_judgment_s if judges else None,
        mean_full_pass_tflops=result.mean_full_pass_tflops,
        censored=result.censored_count,
        accuracy_uncensored=result.accuracy_uncensored,
        # records made before the mentor's calls were kept cannot count regenerated tokens
        counts_regenerated=all(
            st.mentor_regenerated_tokens is not None for r in records for st in r.stages[1:]
        ),
        latency_from="collect" if result.latency is not None else None,
        per_question=sorted_outcomes(
            [q.doc_id for q in questions] if questions is not None else np.arange(result.num_questions),
            result.correct,
            result.tflops,
            result.mentor_paid,
            result.intern_tokens,
            result.latency,
        ),
    )
    return entry, judged


def answer_keys(records, questions, source, task: str) -> np.ndarray:
    """(Q, T) each stage's recorded answer keyed by the task's own filters (harness/answer_keys.py), as
    ``mode=agreement`` keys them live; None where a stage has no answer."""
    from tandem_lm_eval.harness.answer_keys import filtered_answer

    if source is None or questions is None:
        raise CompareError(f"{task}: the agreement row needs the task's filters (its TaskSource)")
    lm_task, filter_name = source.tasks[task], source.filter_of(task)
    keys = np.full((len(records), len(records[0].stages)), None, dtype=object)
    for q, (r, tq) in enumerate(zip(records, questions)):
        for t, st in enumerate(r.stages):
            if st.usable and st.answer is not None:
                keys[q, t] = filtered_answer(lm_task, tq.doc, st.answer, filter_name)
    return keys


def live_entry(
    row: CompareRow, task: str, samples: list[dict], metric: str, threshold: float = 1.0, judges: bool = False
) -> BoardEntry:
    """A row computed by lm-eval's evaluator; ``judges``: its plan has a classifier (a judgment time)."""
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
        mean_latency_s=_mean_of(samples, "latency_s"),
        mean_judgment_s=_mean_of(samples, "judgment_s") if row.mode.split(":")[0] in JUDGED else None,
        mean_full_pass_tflops=_mean_of(samples, "full_pass_tflops"),
        censored=None
        if _mean_of(samples, "censored") is None
        else int(sum(s["censored"] > 0 for s in samples)),
        accuracy_uncensored=_uncensored_accuracy(samples, threshold),
        latency_from=None
        if _mean_of(samples, "latency_s") is None
        else ("store" if any(s.get("store_served", 0) for s in samples) else "measured"),
        per_question=sorted_outcomes(
            [s["doc_id"] for s in samples],
            [s["metric"] >= threshold - 1e-9 for s in samples],
            [s["tflops"] for s in samples],
            [s["mentor_tokens"] for s in samples],
            [s["intern_tokens"] for s in samples],
            None if _mean_of(samples, "latency_s") is None else [s["latency_s"] for s in samples],
        ),
    )


def _uncensored_accuracy(samples: list[dict], threshold: float) -> float | None:
    kept = [s for s in samples if s.get("censored") is not None and s["censored"] == 0]
    if not kept:
        return None
    return float(np.mean([s["metric"] >= threshold - 1e-9 for s in kept]))


def _mean_of(samples: list[dict], key: str) -> float | None:
    """The mean of a per-sample value, None when samples cached by an earlier version lack it."""
    if any(s.get(key) is None for s in samples):
        return None
    return float(np.mean([s[key] for s in samples]))


def _check_classifier_fits(clf, records, row: CompareRow) -> None:
    card, first = clf.card, records[0]
    problems = []
    if list(card.budgets) != list(first.budgets):
        problems.append(f"budgets {card.budgets} vs the records' {first.budgets}")
    from tandem_lm_eval.judgment.card import intern_mismatch

    problems += intern_mismatch(card, first.intern_model, first.entropy_method)  # lm_eval's rule
    if problems:
        raise CompareError(
            f"row {row.name!r}: the classifier does not fit the collected records: " + "; ".join(problems)
        )
    found = training_overlap([QuestionIdentity.of_record(r) for r in records], card.training_questions)
    if found:
        raise CompareError(
            f"row {row.name!r}: {len(found)} questions are among the classifier's training questions"
        )


def _grouped_as_live(clf, records, questions):
    """The records with each question's group by the classifier's own rule (``group_by``), as
    ``TandemLM`` finds it at run time; compare's collect groups by task, a per-group classifier may
    group by a document field (MATH's subject)."""
    group_by = clf.group_by
    if group_by is None or questions is None:
        return records
    from dataclasses import replace

    from tandem_lm_eval.judgment.grouped import group_of

    return [replace(r, group=group_of(group_by, q.task, q.doc)) for r, q in zip(records, questions)]


def _thresholds(row: CompareRow, plan, clf, records) -> list[tuple[float, ...]]:
    """Each question's thresholds: the row's own (as its plan read them) for every question, else
    the classifier's (a per-group classifier's by each question's group)."""
    from tandem_lm_eval.calibration.analysis import question_thresholds

    if row.model_args.get("thresholds"):
        return [tuple(plan.thresholds)] * len(records)
    return question_thresholds(clf, records)


# --- before any model loads ---------------------------------------------------------------------------
def row_plan(config: CompareConfig, row: CompareRow | None):
    """The run plan a row runs with (``None``: the shared collect's), made as TandemLM makes it."""
    from tandem_lm_eval.harness.plan import plan_run
    from tandem_lm_eval.workflows.collect import collect_plan

    if row is None:  # the collect runs every stage
        return collect_plan(dict(config.model_args))
    mode = "fixed:1" if row.mode == "oracle" else row.mode  # the oracle is a reference, not a mode
    return plan_run({**config.model_args, **row.model_args, "mode": mode})


def row_plans(config: CompareConfig) -> dict:
    """Each row's plan (its classifier folder resolved and read once), by row name; a problem is one
    CompareError line naming the row."""
    plans = {}
    for i, row in enumerate(config.rows):
        try:
            plans[row.name] = row_plan(config, row)
        except TandemError as exc:  # ConfigError, ClassifierError: the message names the key or file
            raise CompareError(f"rows[{i}] {row.name!r}: {exc}") from None
    return plans


@dataclass(frozen=True)
class Preflight:
    """What preflight settled: each task's questions and source, and each row's plan."""

    tasks: dict[str, tuple]
    plans: dict


def preflight(config: CompareConfig) -> Preflight:
    """Check every value of ``config`` before any model loads: one CompareError line naming the row or
    key and what to do. Returns each task's ``task_questions`` (loaded without a model) and each row's
    plan, for the run."""
    import importlib.util

    from tandem_lm_eval.common.paths import output_dir

    try:
        output_dir("output", config.output)
    except TandemError as exc:
        raise CompareError(str(exc)) from None
    if importlib.util.find_spec("matplotlib") is None:
        raise CompareError(
            "compare draws <task>.png with matplotlib, which is not installed: "
            "pip install 'tandem-lm-eval[plot]' (or matplotlib), then run compare again"
        )
    replayed = [r for r in config.rows if r.replayed]
    try:
        collect = row_plan(config, None) if replayed else None  # the shared collect runs in this process
        if collect is not None:
            from tandem_lm_eval.workflows.collect import refuse_replicas

            refuse_replicas(collect)
            if needs_mentor_answers(config) and collect.mentor.backend == "recorded":
                raise CompareError(
                    "a replayed router row needs the mentor's own answers, which a recorded mentor "
                    "(mentor_backend=recorded) cannot give: use the mentor model, or drop the router row"
                )
    except TandemError as exc:
        raise CompareError(f"model_args: {exc}") from None
    for i, row in enumerate(config.rows):
        extra = sorted(set(row.model_args) - set(REPLAYED_ROW_KEYS))
        if row.replayed and extra:
            raise CompareError(
                f"rows[{i}] {row.name!r} is replayed from the shared collect, so its model_args may set only "
                f"{', '.join(REPLAYED_ROW_KEYS)} (got {', '.join(extra)}): put the others in the "
                "shared model_args, or give the row live = true"
            )
    plans = row_plans(config)
    classifiers = {}  # row name -> (classifier, what to do about training questions)
    for i, row in enumerate(config.rows):
        plan = plans[row.name]
        if plan.classifier is None:
            continue
        clf = plan.classifier.classifier
        if row.replayed and clf.card.budgets and list(clf.card.budgets) != list(collect.budgets):
            raise CompareError(
                f"rows[{i}] {row.name!r}: classifier {plan.classifier.folder} was made for budgets "
                f"{list(clf.card.budgets)}, the collect runs {list(collect.budgets)} (the shared model_args' "
                f"budgets): give budgets={list(clf.card.budgets)} in the shared model_args, or a classifier "
                "made for these budgets"
            )
        overlap_ok = (
            None
            if plan.allow_training_overlap
            else (
                "give the row live = true with allow_training_overlap=true in its model_args"
                if row.replayed
                else "give allow_training_overlap=true in the row's model_args"
            )
        )
        classifiers[row.name] = (clf, overlap_ok)
    loaded = {}
    for task in config.tasks:
        questions, source = loaded[task] = task_questions(config, task)
        identities = [QuestionIdentity(q.question.key, q.question.content_key(q.doc)) for q in questions]
        for name, (clf, remedy) in classifiers.items():
            found = training_overlap(identities, clf.card.training_questions)
            if found and remedy is not None:
                raise CompareError(
                    f"row {name!r}: {len(found)} of {len(identities)} questions of {task} are among its classifier's "
                    f"training questions (scores on them would be inflated): choose other questions, or {remedy}"
                )
        source.check()  # a task without a metric or filter fails here, not after its collect
    return Preflight(loaded, plans)


# --- the whole run ------------------------------------------------------------------------------------
def run_compare(config: CompareConfig) -> list[BoardEntry]:
    checked = preflight(config)
    loaded, plans = checked.tasks, checked.plans
    entries: list[BoardEntry] = []
    judged_rows: dict[tuple[str, str], JudgedRows] = {}
    for task in config.tasks:
        if any(r.replayed for r in config.rows):
            records, source, questions = records_for_task(config, task, loaded[task], plans)
        else:
            (_, source), records, questions = loaded[task], None, None
        metric = source.metric_of(task)
        for row in config.rows:
            if row.replayed:
                entry, judged = replayed_entry(row, task, records, metric, config, questions, source, plans)
                entries.append(entry)
                if judged is not None:
                    judged_rows[(row.name, task)] = judged
            else:
                samples = live_samples(config, row, task, source)
                judges = plans[row.name].classifier is not None
                entries.append(live_entry(row, task, samples, metric, source.threshold, judges))
    out = config.output
    out.mkdir(parents=True, exist_ok=True)
    table8 = judges_by_task(config, entries, judged_rows)
    stats = board_stats(entries, config.resamples, config.seed)
    sections = {task: task_markdown(stats, task) for task in config.tasks}
    (out / "leaderboard.md").write_text(
        to_markdown(entries, intervals=stats.intervals, sections=sections)
        + "\n"
        + passes_markdown(entries)
        + "\n"
        + table8_markdown(table8)
    )
    (out / "leaderboard.csv").write_text(to_csv(entries))
    extra = {
        "tasks": config.tasks,
        "limit": config.limit,
        "intervals": stats.method(),
        "comparisons": [c.to_dict() for c in stats.comparisons],
        "frontier": stats.frontier,
        "audit": audit(config, loaded, plans),
        "table8": table8,
    }
    (out / "leaderboard.json").write_text(to_json(entries, extra, stats.row_fields))
    for task in config.tasks:
        plot_task(
            [e for e in entries if e.task == task],
            out / f"{task}.png",
            intervals=stats.intervals,
            frontier=stats.frontier.get(task),
        )
    return entries


def audit(config: CompareConfig, loaded: dict[str, tuple], plans: dict) -> list[dict]:
    """The audit block (workflows/board_audit.py): per row and task, what its thresholds or router were
    chosen on and the training-question check on the evaluated questions."""
    from tandem_lm_eval.workflows.board_audit import row_audit

    out = []
    for task in config.tasks:
        questions, _ = loaded[task]
        identities = [QuestionIdentity(q.question.key, q.question.content_key(q.doc)) for q in questions]
        for row in config.rows:
            judged = plans[row.name].classifier if row.name in plans else None  # the row's plan read it
            clf = judged.classifier if judged is not None else None
            folder = judged.folder if judged is not None else None
            out.append(
                row_audit(
                    row.name,
                    row.mode,
                    task,
                    identities,
                    classifier=clf,
                    folder=folder,
                    given_thresholds=row.model_args.get("thresholds"),
                    overlap_allowed=row.name in plans and plans[row.name].allow_training_overlap,
                )
            )
    return out
