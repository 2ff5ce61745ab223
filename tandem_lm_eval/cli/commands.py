"""The subcommands of ``tandem-lm-eval``: argument parsing and wiring only; the work is in
``workflows/collect.py``, ``workflows/oracle.py``, ``calibration/fitting.py`` and
``calibration/analysis.py``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tandem_lm_eval.common.errors import TandemError

logger = logging.getLogger("tandem_lm_eval")


class CommandError(TandemError):
    """A problem with the command's inputs: printed as one line, exit status 2."""


# The subcommands in the order of the workflow (docs/classifier.md), each with its one line: the parser's
# help and ``tandem-lm-eval --help`` read them from here.
SUBCOMMANDS: dict[str, str] = {
    "oracle-mentor": "write a recorded mentor from a task's reference solutions",
    "collect": "run a mentor/intern pair over a task's questions, every stage, labelled",
    "complete-hidden": "add the intern's hidden vectors to collected records (intern passes only)",
    "fit": "train a sufficiency classifier and choose thresholds by an objective",
    "analyze": "held-out report of a classifier on collected records (no model calls)",
    "compare": "Tandem and its baselines on tasks: leaderboard (md/csv/json) and plots",
    "store": "the run store (model_args store=): stats, prune, export, merge",
}


def overview() -> str:
    """``tandem-lm-eval --help``: the subcommands, one line each, and where everything else goes."""
    width = max(len(name) for name in SUBCOMMANDS)
    lines = [
        "usage: tandem-lm-eval SUBCOMMAND [options]   the classifier workflow (docs/classifier.md)",
        "       tandem-lm-eval [lm_eval options]      lm-eval's command line, with tandem registered",
        "",
        "subcommands:",
        *(f"  {name:<{width}}  {line}" for name, line in SUBCOMMANDS.items()),
        "",
        "tandem-lm-eval SUBCOMMAND --help shows a subcommand's options.",
        "Anything else goes to lm-eval's command line (the same flags as lm_eval), with the tandem model",
        "and its tasks registered, e.g.",
        "  tandem-lm-eval --model tandem --model_args mentor=...,intern=... --tasks tandem_gsm8k",
        "lm-eval's own options: tandem-lm-eval run --help",
    ]
    return "\n".join(lines)


def run_subcommand(argv: Sequence[str]) -> int:
    parser = _parser()
    args = parser.parse_args(list(argv))
    args.argv = list(argv)  # recorded in model cards as the command that made them
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        check_arguments(args)  # every path and number the command was given, before it does anything
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("tandem-lm-eval: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except TandemError as exc:  # a user's input: one line; anything else is a bug and keeps its traceback
        print(f"tandem-lm-eval {args.command}: {exc}", file=sys.stderr)
        return 2


def _analysis_output(name: str, value) -> Path:
    """``analyze --out X`` writes X.md and X.json."""
    from tandem_lm_eval.common.paths import output_file

    output_file(name, f"{value}.md")
    return Path(value)


def _at_least_one(name: str, value) -> int:
    from tandem_lm_eval.common.options import as_int

    return as_int(name, value, minimum=1)


def _argument_checks() -> dict[str, dict[str, Callable[[str, Any], Any]]]:
    """Per subcommand: each argument that names a path or a count, and its check (common/paths.py,
    common/options.py). ``check_arguments`` runs them before the command starts, so a bad one is one
    line before any model loads, never an error after the work (docs/bad-inputs.md)."""
    from tandem_lm_eval.common.paths import input_file, output_dir, output_file

    return {
        "collect": {
            "out": output_file,
            "chunk": _at_least_one,
            "limit": _at_least_one,
            "answer_max_tokens": _at_least_one,
        },
        "oracle-mentor": {"out": output_file, "limit": _at_least_one},
        "fit": {"records": input_file, "out": output_dir},
        "analyze": {"records": input_file, "out": _analysis_output, "resamples": _at_least_one},
        "compare": {"config": input_file},
        # --store: RunStore(create=False) names a missing store itself ("no run store at ...")
        "store": {"out": output_file},
    }


def check_arguments(args) -> None:
    """Check ``args`` by the table of ``_argument_checks``; an OptionError names the option."""
    for dest, check in _argument_checks().get(args.command, {}).items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        option = "--" + dest.replace("_", "-") if dest not in ("config",) else dest
        for one in value if isinstance(value, list) else [value]:
            check(option, one)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tandem-lm-eval", description="Tandem classifier workflow")
    sub = parser.add_subparsers(dest="command", required=True)

    def task_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tasks", required=True, help="comma-separated lm-eval task or group names")
        p.add_argument("--include_path", default=None, help="a folder of extra task YAMLs (as lm_eval)")
        p.add_argument("--limit", type=int, default=None, help="questions in all, balanced across groups")
        p.add_argument("--seed", type=int, default=0, help="seed of the balanced sampling")
        p.add_argument(
            "--group-by",
            default="task",
            help="what a group is: 'task' or 'doc:<field>' (e.g. doc:subject for MATH subjects)",
        )
        p.add_argument("--apply_chat_template", action="store_true", help="as lm_eval's flag")
        p.add_argument(
            "--confirm_run_unsafe_code",
            action="store_true",
            help="as lm_eval's flag (tasks that run model code)",
        )

    c = sub.add_parser("collect", help=SUBCOMMANDS["collect"])
    task_args(c)
    c.add_argument(
        "--model_args",
        default="",
        help="as for lm_eval --model tandem: mentor=...,intern=...,budgets=[...],<role>_<option>=...",
    )
    c.add_argument("--answer-max-tokens", type=int, default=None, help="default: the task's max_gen_toks")
    c.add_argument("--metric", default=None, help="the task metric that labels answers (default: its first)")
    c.add_argument("--filter", default=None, help="the task filter to apply first (default: its first)")
    c.add_argument("--label-threshold", type=float, default=1.0, help="correct when metric >= this")
    c.add_argument(
        "--chunk", type=int, default=32, help="questions per batch (records are written per chunk)"
    )
    c.add_argument(
        "--answers-by-stage",
        action="store_true",
        help="answer each stage in its own batched call, as a live run does: the recorded answer times are "
        "then shares of calls of a live run's size (what a replayed latency needs); slower on batching engines",
    )
    c.add_argument(
        "--mentor-answers",
        action="store_true",
        help="the mentor also answers each question itself (as mode=mentor_only), judged by the task: "
        "the training data of fit --policy router (kept in each record's mentor_answer)",
    )
    c.add_argument("--out", type=Path, required=True, help="JSONL records; an existing file is resumed")
    c.add_argument(
        "--hidden-layers",
        default=None,
        help="also keep the intern's hidden vectors of these layers ('last', an index, a fraction of the "
        "depth such as 0.7; comma-separated) in <out>.hidden.sqlite, for hidden-state judges",
    )
    c.set_defaults(func=_collect)

    h = sub.add_parser("complete-hidden", help=SUBCOMMANDS["complete-hidden"])
    task_args(h)
    h.add_argument("--records", type=Path, required=True, help="the collect's JSONL records")
    h.add_argument(
        "--model_args", default="", help="the intern as the collect named it: intern=...,<role>_..."
    )
    h.add_argument("--hidden-layers", default="last", help="layers to keep (as collect --hidden-layers)")
    h.add_argument(
        "--classifier",
        default=None,
        help="a hidden_lora classifier: the vectors of the intern with its adapter",
    )
    h.add_argument("--out", type=Path, default=None, help="the side file (default: <records>.hidden.sqlite)")
    h.add_argument("--chunk", type=int, default=32, help="questions per batch (as the collect's --chunk)")
    h.set_defaults(func=_complete_hidden)

    o = sub.add_parser("oracle-mentor", help=SUBCOMMANDS["oracle-mentor"])
    task_args(o)
    o.add_argument("--solution-field", required=True, help="the document field with the solution text")
    o.add_argument("--keep-final-answer", action="store_true", help="keep GSM8K's '#### <answer>' line")
    o.add_argument("--out", type=Path, required=True)
    o.set_defaults(func=_oracle)

    from tandem_lm_eval.cli.fit_command import add_fit_arguments

    f = sub.add_parser("fit", help=SUBCOMMANDS["fit"])
    add_fit_arguments(f)
    f.set_defaults(func=_fit)

    from tandem_lm_eval.cli.analyze_command import add_analyze_arguments

    a = sub.add_parser("analyze", help=SUBCOMMANDS["analyze"])
    add_analyze_arguments(a)
    a.set_defaults(func=_analyze)

    m = sub.add_parser("compare", help=SUBCOMMANDS["compare"])
    m.add_argument("config", type=Path, help="TOML or YAML file: output, tasks, limit, model_args, rows")
    m.set_defaults(func=_compare)

    st = sub.add_parser("store", help=SUBCOMMANDS["store"])
    st_sub = st.add_subparsers(dest="store_command", required=True)

    def store_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--store",
            type=Path,
            default=None,
            help="the store file (default: $TANDEM_STORE, else ~/.cache/tandem-lm-eval/store.sqlite)",
        )

    s_stats = st_sub.add_parser("stats", help="entries and bytes by kind, role and model; the file size")
    store_arg(s_stats)
    s_stats.add_argument("--json", action="store_true", help="print the numbers as JSON")
    s_stats.set_defaults(func=_store_stats)

    s_prune = st_sub.add_parser("prune", help="delete entries by model, kind, role or age, then compact")
    store_arg(s_prune)
    s_prune.add_argument("--model", default=None, help="a model name or fingerprint (8+ leading characters)")
    s_prune.add_argument("--kind", choices=("generation", "scores"), default=None)
    s_prune.add_argument("--role", choices=("mentor", "intern"), default=None)
    s_prune.add_argument("--older-than-days", type=float, default=None, help="entries written before then")
    s_prune.add_argument("--all", action="store_true", help="delete every entry (no filter needed)")
    s_prune.set_defaults(func=_store_prune)

    s_export = st_sub.add_parser(
        "export", help="write the stored mentor insights as a recorded mentor (mentor_backend=recorded)"
    )
    store_arg(s_export)
    s_export.add_argument("--role", choices=("mentor",), required=True, help="only the mentor is replayable")
    s_export.add_argument("--out", type=Path, required=True, help="the recorded-mentor JSONL file to write")
    s_export.add_argument(
        "--model", default=None, help="which mentor, when the store holds several (name or fingerprint)"
    )
    s_export.set_defaults(func=_store_export)

    s_merge = st_sub.add_parser(
        "merge",
        help="copy the entries of other stores (other nodes' or ranks') into one store",
        description="Copy every sound entry of each SOURCE store into --out (made if missing); an entry "
        "--out already holds is kept. Corrupted entries are reported and skipped (and dropped from their "
        "store, as any read of a store does). Use it before resuming a multi-node run whose nodes kept their own stores "
        "(docs/scale-out.md).",
    )
    s_merge.add_argument("sources", type=Path, nargs="+", help="store files to read")
    s_merge.add_argument("--out", type=Path, required=True, help="the store to write (may be one of a run)")
    s_merge.set_defaults(func=_store_merge)
    return parser


def _task_questions(args, **extra):
    import lm_eval.tasks.manager as manager

    from tandem_lm_eval.harness.registration import patch_task_manager
    from tandem_lm_eval.harness.task_questions import load_task_questions

    patch_task_manager(manager)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    return load_task_questions(
        tasks,
        include_path=args.include_path,
        limit=args.limit,
        seed=args.seed,
        group_by=args.group_by,
        apply_chat_template=args.apply_chat_template,
        confirm_run_unsafe_code=args.confirm_run_unsafe_code,
        **extra,
    )


def _collect(args) -> int:
    from tandem_lm_eval.common.options import parse_model_args
    from tandem_lm_eval.workflows.collect import collect, collect_plan, default_store, make_explorer

    model_args = parse_model_args(args.model_args)
    if "store" not in model_args:  # keep what is generated: a failed judging step loses nothing
        model_args["store"] = str(default_store(args.out))
    config = collect_plan(model_args)  # every value and path, before the task and any model load
    if args.mentor_answers and config.mentor.backend == "recorded":
        raise CommandError(
            "--mentor-answers: a recorded mentor (mentor_backend=recorded) serves recorded insights, it "
            "cannot answer a question itself: collect the mentor's answers with the mentor model"
        )
    default_max = config.max_gen_toks
    questions, source = _task_questions(
        args,
        max_gen_toks=args.answer_max_tokens,
        default_max_gen_toks=default_max,
        metric=args.metric,
        filter_name=args.filter,
        threshold=args.label_threshold,
    )
    source.check()  # --metric and --filter exist, before any model loads
    if config.recorded_mentor is not None:  # every question recorded, before any model loads
        config.recorded_mentor.check_questions(
            [q.question.key for q in questions], [f"{q.task} doc {q.doc_id}" for q in questions]
        )
    explorer = make_explorer(config, hidden_layers=args.hidden_layers)
    stats = collect(
        explorer,
        questions,
        source,
        args.out,
        chunk=args.chunk,
        answers_by_stage=args.answers_by_stage,
        mentor_answers=args.mentor_answers,
    )
    kept = f"; model outputs kept in the run store {config.store}" if config.store else ""
    print(
        f"collect: wrote {stats.questions} records to {args.out} in {stats.seconds:.0f} s "
        f"({stats.skipped} already there){kept}"
    )
    return 0


def _complete_hidden(args) -> int:
    from tandem_lm_eval.common.options import parse_model_args
    from tandem_lm_eval.data.records import load_records
    from tandem_lm_eval.workflows.complete_hidden import complete_hidden, intern_for, intern_plan

    records = load_records([args.records])  # the inputs first: a bad file is reported before any model loads
    model_args = parse_model_args(args.model_args)
    plan = intern_plan(model_args)  # every value and path, before any model loads
    adapter, layers = None, args.hidden_layers
    if args.classifier:
        adapter, layers = _classifier_adapter(args.classifier)
    questions, _ = _task_questions(args)
    by_key = {(q.task, q.doc_hash): q for q in questions}
    intern, identity, thinking = intern_for(plan)
    try:
        stats = complete_hidden(
            records,
            by_key,
            args.records,
            intern,
            identity,
            layers,
            thinking=thinking,
            adapter=adapter,
            out=args.out,
            chunk=args.chunk,
        )
    finally:
        intern.close()
    print(
        f"complete-hidden: {stats.questions} questions completed ({stats.prompts_scored} prompts scored, "
        f"{stats.skipped} already complete) in {stats.seconds:.0f} s -> {stats.path}"
    )
    return 0


def _classifier_adapter(name: str) -> tuple[tuple[str, str], str]:
    """(adapter folder, adapter id) and the layer of a hidden_lora classifier."""
    from tandem_lm_eval.cli.analyze_command import classifier_folder
    from tandem_lm_eval.judgment.loading import adapter_of, load_classifier_folder

    folder = classifier_folder(name)
    clf = load_classifier_folder(folder)
    hidden = clf.card.hidden
    if hidden is None or hidden.adapter is None:
        raise CommandError(f"classifier {name} has no LoRA adapter (it is not a hidden_lora classifier)")
    return adapter_of(folder, hidden), str(hidden.layer)


def _oracle(args) -> int:
    from tandem_lm_eval.workflows.oracle import write_oracle

    questions, _ = _task_questions(args)
    n = write_oracle(questions, args.solution_field, args.out, args.keep_final_answer)
    print(f"oracle-mentor: wrote {n} recorded mentor outputs to {args.out}")
    return 0


def _fit(args) -> int:
    from tandem_lm_eval.cli.fit_command import run_fit

    report = run_fit(args)
    print(json.dumps(report, indent=2, default=str)[:4000])
    return 0


def _compare(args) -> int:
    from tandem_lm_eval.workflows.compare import load_config, run_compare

    config = load_config(args.config)
    entries = run_compare(config)
    print(f"compare: {len(entries)} rows; leaderboard and plots in {config.output}")
    print((config.output / "leaderboard.md").read_text())
    return 0


def _analyze(args) -> int:
    from tandem_lm_eval.cli.analyze_command import run_analyze

    return run_analyze(args)


def _open_store(args):
    from tandem_lm_eval.store.run_store import RunStore, default_store_path

    return RunStore(args.store if args.store is not None else default_store_path(), create=False)


def _store_stats(args) -> int:
    with _open_store(args) as store:
        stats = store.stats()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(
        f"{stats['path']}: {stats['entries']} entries, {stats['bytes'] / 1e6:.2f} MB of values, "
        f"{stats['file_bytes'] / 1e6:.2f} MB on disk"
    )
    for g in stats["groups"]:
        print(
            f"  {g['role']:<7} {g['kind']:<11} {g['entries']:>9} entries {g['bytes'] / 1e6:>10.2f} MB  "
            f"{g['model']} [{g['fingerprint'][:12]}]"
        )
    return 0


def _store_prune(args) -> int:
    if not (args.all or args.model or args.kind or args.role or args.older_than_days is not None):
        raise CommandError("give a filter (--model, --kind, --role, --older-than-days) or --all")
    with _open_store(args) as store:
        n = store.prune(
            model=args.model, kind=args.kind, older_than_days=args.older_than_days, role=args.role
        )
        store.vacuum()
        left = store.count()
    print(f"store prune: deleted {n} entries; {left} left")
    return 0


def _store_merge(args) -> int:
    from tandem_lm_eval.store.run_store import RunStore

    out_path = args.out.expanduser().resolve()
    for src in args.sources:
        if src.expanduser().resolve() == out_path:
            raise CommandError(f"store merge: {src} is also --out; give the other stores as sources")
    sources = [RunStore(src, create=False) for src in args.sources]  # every source checked first
    with RunStore(args.out) as out:
        for src in sources:
            with src:
                c = out.merge_from(src)
            print(
                f"store merge: {src.path}: {c.read} entries read, {c.added} added, {c.already_held} already held"
            )
        print(f"store merge: {out.path} holds {out.count()} entries ({out.file_bytes() / 1e6:.2f} MB)")
    return 0


def _store_export(args) -> int:
    from tandem_lm_eval.store.export import export_recorded_mentor

    with _open_store(args) as store:
        n = export_recorded_mentor(store, args.out, model=args.model)
    print(
        f"store export: wrote {n} recorded mentor outputs to {args.out} "
        f"(replay with mentor_backend=recorded,mentor={args.out},mentor_tokenizer=<the mentor model>)"
    )
    return 0
