"""The run plan: every value and path of one run, resolved and checked once, before any model loads.

``plan_run(model_args)`` is the one place where what a user gives becomes what a run does. It parses
model_args (``config.py``), parses the mode once into a ``PolicySpec``, resolves the classifier folder
once and reads its files (card, thresholds and a hidden-state judge's needs, checked against the
stages), settles the final budgets (model_args', else the classifier card's) and thresholds, reads a
recorded mentor's file, opens the run store (its schema checked), proves every output path writable
by creating it, and says which roles load. The result is frozen: the assembly (``assembly.py``), the
replicas, ``TandemLM`` and the subcommands read it and never parse a string or rewrite a value again.

The rule: no model loads before a plan exists (``assembly.build_backends`` takes a ``RunPlan``, and
is the only caller of ``make_backend``), and every value and path a user gives is in it. Each check
has a kind (``CHECKS``); docs/bad-inputs.md lists them and tests/test_bad_inputs.py holds one test per
kind, checked against this table.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem_lm_eval.backends.base import BackendError, HiddenRequest
from tandem_lm_eval.backends.recorded_mentor import recorded_outputs
from tandem_lm_eval.cascade.policies import FixedStagePolicy, PolicySpec, parse_mode
from tandem_lm_eval.cascade.policies.spec import FIRST_ONLY, spec_of
from tandem_lm_eval.common.options import as_bool, as_float, as_int
from tandem_lm_eval.cost.pricing import TokenPrices
from tandem_lm_eval.data.checkpoint import configured_hidden_shape
from tandem_lm_eval.data.resources import classifiers_dir
from tandem_lm_eval.harness.config import DEFAULT_BUDGETS, ConfigError, RoleConfig, TandemConfig
from tandem_lm_eval.judgment.card import META_FILE
from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.loading import adapter_of, load_classifier_folder
from tandem_lm_eval.store.export import is_run_store, store_records
from tandem_lm_eval.store.run_store import RunStore

logger = logging.getLogger(__name__)

DEMO_CLASSIFIER = "smollm2-135m-gsm8k"

#: what a run is for: an evaluation (``lm_eval --model tandem``, a compare row: the mode decides), a
#: collect (every stage of every question: both roles, no classifier), or an intern-only pass
#: (``complete-hidden``)
EVALUATE, COLLECT, INTERN_ONLY = "evaluate", "collect", "intern_only"

#: every kind of check the plan makes (docs/bad-inputs.md "The run plan's checks" lists the same kinds)
CHECKS: dict[str, str] = {
    "model-args": "every model_args key and value (config.py): names, numbers, lists, switches, the mode "
    "parsed once, the backends and their options",
    "model-args-string": "a model_args string from lm-eval's Python API is split as the command line "
    "splits it (commas inside [...] kept together), not on every comma",
    "mode-options": "an option the mode would not read: refused when only other modes read it "
    "(budget_forcing_close), else a warning and left out of the plan (never recorded as used)",
    "classifier": "the classifier folder, resolved once (a path, else a name under classifiers/; the demo "
    "intern's default), its files read, a hidden-state judge's needs (backend, adapter, hidden size)",
    "classifier-stages": "the classifier card's thresholds against the run's stages (the message names "
    "the card's file); the budgets are model_args', else the card's, settled once",
    "recorded-mentor": "a recorded mentor's file read (it exists, holds mentor outputs), its tokenizer "
    "given, and a mode it can serve",
    "recorded-questions": "the run's questions against the recorded mentor file's question keys, before "
    "the first model call",
    "store": "the run store opened and its schema checked",
    "output-path": "every file a run writes (trace_path, store) proven writable by creating it",
    "store-is-trace": "store and trace_path naming the same file",
    "gen-kwargs": "lm-eval's gen_kwargs of every request (max_gen_toks, temperature, top_p, do_sample, "
    "until), before the first model call",
    "compare-task-twice": "a task listed twice in a compare config",
}

#: the options only a classifier-reading mode uses
CLASSIFIER_OPTIONS = ("classifier", "thresholds", "classifier_strict", "allow_training_overlap")

# Store files opened by this process: both roles (and a second TandemLM on the same file) share one.
_open_stores: dict[str, RunStore] = {}


@contextlib.contextmanager
def checking(kind: str) -> Iterator[None]:
    """Tag an error raised inside with the kind of check it is (``exc.check``); its type and message
    are kept, so every caller's ``except`` is unchanged."""
    if kind not in CHECKS:
        raise KeyError(f"unknown check kind {kind!r}")
    try:
        yield
    except Exception as exc:
        if getattr(exc, "check", None) is None:
            with contextlib.suppress(AttributeError):
                exc.check = kind
        raise


def refuse(kind: str, message: str) -> None:
    """A user's input the plan refuses, as a ``ConfigError`` tagged with its kind of check."""
    with checking(kind):
        raise ConfigError(message)


@dataclass(frozen=True)
class RolePlan:
    """One role, resolved: its weights, engine, |θ| override, thinking, prices, engine options, and
    whether this run loads it."""

    role: str
    model: str
    backend: str
    num_params: float | None
    thinking: bool | None
    prices: TokenPrices | None
    options: dict[str, Any]
    loads: bool

    @classmethod
    def of(cls, role: str, rc: RoleConfig, loads: bool) -> RolePlan:
        return cls(role, rc.model, rc.backend, rc.num_params, rc.thinking, rc.prices, dict(rc.options), loads)

    def same_engine(self, other: RolePlan) -> bool:
        return self.model == other.model and self.backend == other.backend and self.options == other.options


@dataclass(frozen=True)
class ClassifierPlan:
    """The classifier a run judges with: its folder (resolved once), the loaded classifier, the run's
    thresholds, each group's own, and the hidden reading it asks of the intern."""

    folder: Path
    classifier: Any = field(repr=False, compare=False)
    thresholds: tuple[float, ...]
    group_thresholds: dict[str, tuple[float, ...]]
    hidden: HiddenRequest | None

    @property
    def card(self):
        return self.classifier.card

    @property
    def card_file(self) -> Path:
        return self.folder / META_FILE

    @property
    def group_by(self) -> str | None:
        return getattr(self.classifier, "group_by", None)


@dataclass(frozen=True)
class RecordedMentorPlan:
    """A recorded mentor's file and the question keys it holds."""

    path: Path
    questions: frozenset[str]

    def check_questions(self, keys: Sequence[str], describe: Sequence[str]) -> None:
        """Refuse a run whose questions the file does not hold (before the first model call)."""
        missing = [d for k, d in zip(keys, describe) if k not in self.questions]
        if missing:
            refuse(
                "recorded-questions",
                f"{len(missing)} of {len(keys)} questions (first: {missing[0]}) are not in the recorded mentor "
                f"file {self.path} ({len(self.questions)} questions): record them first, or evaluate only "
                "recorded questions",
            )


@dataclass(frozen=True)
class RunPlan:
    """Every resolved value of one run (see the module's docstring). Built by ``plan_run`` only."""

    config: TandemConfig  # model_args as parsed (kept for the record; the plan's values are final)
    purpose: str
    mentor: RolePlan
    intern: RolePlan
    policy: PolicySpec
    budgets: tuple[int, ...]
    classifier: ClassifierPlan | None
    thresholds: tuple[float, ...] | None  # the run's: model_args', else the classifier card's
    recorded_mentor: RecordedMentorPlan | None
    store: str | None
    trace_path: str | None
    unread_options: tuple[str, ...]  # given, but the mode does not read them (warned, not used)
    max_gen_toks: int
    progress: bool
    chunk_size: int
    gpus_per_rank: str
    data_parallel_size: int
    classifier_strict: bool
    allow_training_overlap: bool
    budget_forcing_close: str
    is_demo: bool

    @property
    def mode(self) -> str:
        return self.policy.mode

    @property
    def num_stages(self) -> int:
        return len(self.budgets) + 1

    def public_dict(self) -> dict[str, Any]:
        """What results["config"]["tandem"] records: model_args as given, with the plan's final values."""
        out = self.config.public_dict()
        for option in self.unread_options:
            out[option] = None  # given, not read: never recorded as used
        out.update(
            budgets=list(self.budgets),
            mode=self.mode,
            classifier_folder=str(self.classifier.folder) if self.classifier is not None else None,
            unread_options=list(self.unread_options),
        )
        for role in ("mentor", "intern"):
            out[role]["loads"] = getattr(self, role).loads
        return out


def plan_run(model_args: Mapping[str, Any] | TandemConfig, purpose: str = EVALUATE) -> RunPlan:
    """The frozen plan of a run from its model_args (see the module's docstring); every problem is one
    error naming the value, option or file, raised before any model loads."""
    with checking("model-args"):
        cfg = (
            model_args
            if isinstance(model_args, TandemConfig)
            else TandemConfig.from_model_args(dict(model_args))
        )
    if purpose == COLLECT:  # every stage of every question: both roles, no classifier
        policy = spec_of(FixedStagePolicy(len(cfg.budgets)), f"fixed:{len(cfg.budgets)}")
    elif purpose == INTERN_ONLY:
        policy = parse_mode("intern_only")
    else:
        policy = cfg.policy
    unread = _unread_options(cfg, policy, purpose)

    classifier = None
    budgets = tuple(cfg.budgets)
    thresholds = cfg.thresholds if policy.thresholds != "none" else None
    if policy.needs_classifier:
        with checking("classifier"):
            folder = resolve_classifier(cfg.classifier, cfg.intern.model, policy.mode)
            clf = load_classifier_folder(folder)
            check_judge_before_load(cfg.intern, clf.card, folder)
        with checking("classifier-stages"):
            if not cfg.budgets_given and clf.card.budgets:
                if tuple(clf.card.budgets) != budgets:
                    logger.info(
                        "tandem: budgets %s from classifier %s (no budgets in model_args)",
                        clf.card.budgets,
                        folder.name,
                    )
                budgets = tuple(int(b) for b in clf.card.budgets)
            thresholds, groups = stage_thresholds(policy, cfg.thresholds, clf, folder, budgets)
            try:
                policy.last_stage(len(budgets) + 1)
            except ValueError as exc:
                raise ConfigError(f"mode: {exc}") from None
        classifier = ClassifierPlan(folder, clf, thresholds, groups, hidden_request_for(clf, folder))

    num_stages = len(budgets) + 1
    mentor_loads = policy.loads_mentor(num_stages)
    roles = (
        RolePlan.of("mentor", cfg.mentor, mentor_loads),
        RolePlan.of("intern", cfg.intern, policy.loads_intern),
    )

    recorded = None
    if cfg.mentor.backend == "recorded" and mentor_loads:
        with checking("recorded-mentor"):
            if policy.answerer == "mentor":
                raise ConfigError(
                    f"mode={policy.mode}: the mentor answers the task's prompt itself, which a recorded mentor "
                    "(insights replayed from a file) cannot do; give a live mentor"
                )
            source = Path(cfg.mentor.model).expanduser()
            # a run store someone else filled is a recorded mentor too: the store room reads it
            reader = store_records if source.is_file() and is_run_store(source) else None
            outputs = recorded_outputs(cfg.mentor.model, reader)
            if cfg.mentor.options.get("tokenizer") is None:
                raise BackendError(
                    "a recorded mentor needs the mentor's tokenizer to cut its outputs at each budget: "
                    "give mentor_tokenizer= (a model folder, hub id, or demo)"
                )
            recorded = RecordedMentorPlan(Path(cfg.mentor.model).expanduser(), frozenset(outputs))

    if cfg.store is not None and cfg.trace_path is not None:
        if Path(cfg.store).resolve() == Path(cfg.trace_path).resolve():
            refuse(
                "store-is-trace",
                f"store and trace_path both name {cfg.store}: the store is a SQLite file and the trace a "
                "JSON-lines file, one would corrupt the other; give two paths",
            )
    if cfg.trace_path is not None:
        with checking("output-path"):
            prove_writable("trace_path", Path(cfg.trace_path))
    if cfg.store is not None:
        with checking("output-path"):
            prove_writable("store", Path(cfg.store), keep=True)
        with checking("store"):
            open_store(cfg.store)

    return RunPlan(
        config=cfg,
        purpose=purpose,
        mentor=roles[0],
        intern=roles[1],
        policy=policy,
        budgets=budgets,
        classifier=classifier,
        thresholds=thresholds,
        recorded_mentor=recorded,
        store=cfg.store,
        trace_path=cfg.trace_path,
        unread_options=unread,
        max_gen_toks=cfg.max_gen_toks,
        progress=cfg.progress,
        chunk_size=cfg.chunk_size,
        gpus_per_rank=cfg.gpus_per_rank,
        data_parallel_size=cfg.data_parallel_size,
        classifier_strict=cfg.classifier_strict,
        allow_training_overlap=cfg.allow_training_overlap and policy.needs_classifier,
        budget_forcing_close=cfg.budget_forcing_close,
        is_demo=cfg.is_demo,
    )


def _unread_options(cfg: TandemConfig, policy: PolicySpec, purpose: str) -> tuple[str, ...]:
    """The classifier's options given to a run that reads no classifier: warned about, left out."""
    if policy.needs_classifier:
        return ()
    unread = tuple(o for o in CLASSIFIER_OPTIONS if o in cfg.given)
    if unread:
        with checking("mode-options"):
            what = f"mode={policy.mode}" if purpose == EVALUATE else purpose.replace("_", "-")
            logger.warning(
                "tandem: %s reads no classifier: %s ignored (not used, not recorded as used)",
                what,
                ", ".join(unread),
            )
    return unread


def resolve_classifier(name: str | None, intern_model: str, mode: str) -> Path:
    """The classifier folder ``classifier=`` names (a folder path, else a name under ``classifiers/``);
    the demo intern's default is the shipped demo classifier. The only place a folder is resolved."""
    if name is None:
        if intern_model != "demo":
            raise ConfigError(
                f"mode={mode} needs a sufficiency classifier trained for your intern: give classifier=PATH "
                f"(or a name under {classifiers_dir()}), train one with `tandem-lm-eval collect` and "
                "`tandem-lm-eval fit` (docs/classifier.md), or run a baseline mode (intern_only, fixed:<k>)"
            )
        name = DEMO_CLASSIFIER
    path = Path(name).expanduser()
    if path.exists():
        return path
    shipped = classifiers_dir() / name
    if shipped.exists():
        return shipped
    names = sorted(p.name for p in classifiers_dir().glob("*/") if p.is_dir())
    raise ClassifierError(
        f"classifier {name!r} not found (not a path; shipped: {', '.join(names) or 'none'})"
    )


def stage_thresholds(
    policy: PolicySpec, given: tuple[float, ...] | None, clf, folder: Path, budgets: tuple[int, ...]
) -> tuple[tuple[float, ...], dict[str, tuple[float, ...]]]:
    """(the run's thresholds, each group's own): model_args' hold for every group; else each card's,
    checked against the stages (a mode that reads τ_0 alone needs only one)."""
    card_file, num_stages = folder / META_FILE, len(budgets) + 1
    members = getattr(clf, "members", {}) or {}
    for label, card in [("", clf.card), *((f" (group {g})", m.card) for g, m in members.items())]:
        if policy.thresholds == FIRST_ONLY:  # τ_0 only: it judges the question alone, whatever the budgets
            if not given and not card.thresholds:
                raise ConfigError(
                    f"classifier card {card_file}{label} has no thresholds: give thresholds=[τ_0]"
                )
            if card.policy != policy.name:
                logger.info(
                    "tandem: classifier %s%s: its thresholds were chosen for the %s rule; mode=%s uses "
                    "its τ_0 (fit --policy %s chooses one for it)",
                    folder.name,
                    label,
                    card.policy,
                    policy.mode,
                    policy.name,
                )
            continue
        if not given and len(card.thresholds) != num_stages:
            raise ConfigError(
                f"classifier card {card_file}{label} has {len(card.thresholds)} thresholds but budgets "
                f"{list(budgets)} make {num_stages} stages: give thresholds=[...] with {num_stages} values"
            )
    if given:
        return tuple(given), {}
    groups = {g: tuple(m.card.thresholds) for g, m in members.items()}
    return tuple(clf.card.thresholds), groups


def check_judge_before_load(intern: RoleConfig, card, path: Path) -> None:
    """A hidden-state judge's needs that can be checked before any model loads: an intern backend that
    has hidden states, the adapter's files, and the intern's hidden size where its config is at hand."""
    if card.hidden is None:
        return
    if intern.backend == "openai":
        raise ClassifierError(
            f"classifier {path.name} reads the intern's hidden states ({card.feature_set}), which an "
            "OpenAI-compatible server does not give: use intern_backend=hf or vllm"
        )
    if card.hidden.adapter is not None:
        adapter_of(path, card.hidden)
    shape = configured_hidden_shape(intern.model, intern.options.get("revision"))
    if shape is not None:
        check_hidden_shape(card, path, shape)


def check_hidden_shape(card, path: Path, shape: tuple[int, int]) -> None:
    """Refuse a hidden-state judge whose layer or hidden size is not the intern's (never overridable:
    its input would not have the classifier's width)."""
    num_layers, hidden_size = shape
    h = card.hidden
    if h.hidden_size != hidden_size or h.num_layers != num_layers:
        raise ClassifierError(
            f"classifier {path.name} reads {h.hidden_size}-unit hidden states of a {h.num_layers}-layer intern; "
            f"this intern has {hidden_size} units and {num_layers} layers: train one for this intern"
        )


def hidden_request_for(classifier, path: Path) -> HiddenRequest | None:
    """What the cascade asks the intern's scoring pass for: the judge's layer (with its adapter)."""
    card = getattr(classifier, "card", None)
    if card is None or card.hidden is None:
        return None
    h = card.hidden
    folder, adapter_id = adapter_of(path, h) if h.adapter is not None else (None, None)
    return HiddenRequest((h.layer,), adapter=folder, adapter_id=adapter_id)


def prove_writable(name: str, path: Path, keep: bool = False) -> None:
    """Create ``path`` (and its missing folders) to prove it can be written: ``os.access`` is no proof
    (it says yes to root, and nothing of names too long or file systems that refuse). What this made is
    removed again unless ``keep``; an existing file is opened for appending, never truncated."""
    missing: list[Path] = []
    made: list[Path] = []
    existed = True  # until known: nothing is removed that this did not make
    try:
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        existed = path.exists()
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        with path.open("a"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{name} {path} cannot be written ({exc.strerror or exc}); give a path you can write to"
        ) from None
    finally:
        if not keep:
            if not existed:
                path.unlink(missing_ok=True)
            for folder in reversed(made):
                with contextlib.suppress(OSError):
                    folder.rmdir()


def open_store(path: str) -> RunStore:
    """The run store at ``path``, opened once per process (both roles, and every model of the process
    on the same file, share one connection)."""
    store = _open_stores.get(path)
    if store is None:
        store = _open_stores[path] = RunStore(path)
    return store


def check_gen_kwargs(gen_kwargs: Mapping[str, Any] | None) -> None:
    """lm-eval's generation settings of one request (``--gen_kwargs`` arrive here, per request), checked
    as model_args' are: a bad one would run every mentor stage for nothing."""
    with checking("gen-kwargs"):
        g = dict(gen_kwargs or {})
        if g.get("max_gen_toks") is not None:
            as_int("gen_kwargs max_gen_toks", g["max_gen_toks"], minimum=1)
        if g.get("temperature") is not None:
            t = as_float("gen_kwargs temperature", g["temperature"], minimum=0)
            if not math.isfinite(t):
                raise ConfigError(f"gen_kwargs temperature must be a finite number, got {g['temperature']!r}")
        if g.get("top_p") is not None:
            top_p = as_float("gen_kwargs top_p", g["top_p"], minimum=0, maximum=1)
            if top_p == 0:
                raise ConfigError("gen_kwargs top_p must be in (0, 1], got 0")
        if g.get("do_sample") is not None:
            as_bool("gen_kwargs do_sample", g["do_sample"])
        until = g.get("until")
        if until is not None and not isinstance(until, str):
            if not isinstance(until, (list, tuple)) or not all(isinstance(u, str) for u in until):
                raise ConfigError(f"gen_kwargs until must be a text or a list of texts, got {until!r}")


__all__ = [
    "CHECKS",
    "COLLECT",
    "DEFAULT_BUDGETS",
    "DEMO_CLASSIFIER",
    "EVALUATE",
    "INTERN_ONLY",
    "ClassifierPlan",
    "RecordedMentorPlan",
    "RolePlan",
    "RunPlan",
    "check_gen_kwargs",
    "checking",
    "open_store",
    "plan_run",
    "prove_writable",
    "refuse",
]
