"""``TandemLM``: the lm-eval model behind ``--model tandem``.

request -> cascade (stages) -> backends (mentor generates, intern scores) -> features -> classifier
-> policy decision -> intern answers -> cost ledger -> results.

``generate_until`` runs the cascade on the call's requests in chunks (``chunk_size``). With ``store=``
each backend sits behind the run store (store.py, backends/stored.py): a rerun of a killed run serves
what was computed and computes only the rest. ``loglikelihood`` requests
(multiple-choice tasks) are answered by the intern alone: there is nothing to generate, so there is
no mentor stage and no cost metric for them. ``loglikelihood_rolling`` (perplexity tasks) is refused.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lm_eval.api.model import LM

from .backends import Backend, make_backend
from .backends.base import BackendError
from .backends.stored import StoredBackend, fingerprint, store_of
from .cascade import Cascade, CascadeResult
from .classifier import ClassifierError, group_of, load_classifier_folder, normalize_model_name
from .config import ConfigError, RoleConfig, TandemConfig
from .cost import RequestCost, RunSummary
from .policies import StopPolicy, answerer_of, make_policy
from .prompts import question_from_request, serialize_chat
from .reporting import TandemResponse, install_task_patches
from .resources import classifiers_dir
from .store import RunStore, StoreError

logger = logging.getLogger(__name__)

DEMO_CLASSIFIER = "smollm2-135m-gsm8k"


class TandemLM(LM):
    def __init__(self, **model_args) -> None:
        super().__init__()
        try:
            self.config = TandemConfig.from_model_args(model_args)
        except ConfigError as exc:
            raise SystemExit(f"tandem: bad model_args: {exc}") from None
        cfg = self.config
        if cfg.is_demo:
            logger.warning(
                "tandem: no mentor/intern given: running the offline DEMO pair (SmolLM2-135M-Instruct as "
                "mentor and intern, %s backend). Name your models with --model_args mentor=...,intern=...",
                cfg.intern.backend,
            )
        try:
            # the classifier's files first: a bad one is reported before any model loads
            self.classifier, thresholds = load_classifier(cfg)
            self.mentor, self.intern, self.mentor_params, self.intern_params = build_backends(cfg)
            if self.classifier is not None:  # does it fit the intern that was loaded?
                _check_classifier(cfg, self.classifier, classifier_path(cfg), self.intern)
            policy = make_policy(cfg.mode, thresholds, budget_forcing_close=cfg.budget_forcing_close)
            self.cascade = Cascade(
                mentor=self.mentor,
                intern=self.intern,
                policy=policy,
                budgets=cfg.budgets,
                classifier=self.classifier,
                mentor_params=self.mentor_params,
                intern_params=self.intern_params,
                mentor_thinking=cfg.mentor.thinking,
                intern_thinking=cfg.intern.thinking,
                progress=cfg.progress,
                mentor_prices=cfg.mentor.prices,
                intern_prices=cfg.intern.prices,
                group_policies=group_policies(cfg, self.classifier),
            )
        except (ConfigError, ClassifierError, BackendError, ValueError) as exc:
            raise SystemExit(f"tandem: {exc}") from None
        self.thresholds = thresholds
        self.store = store_of(self.mentor, self.intern)
        self._costs: list[RequestCost] = []
        install_task_patches()

    # --- lm-eval interface ----------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        questions = []
        for req in requests:
            context, gen_kwargs = req.args
            try:
                questions.append(
                    question_from_request(context, gen_kwargs, self.config.max_gen_toks, self._group_of(req))
                )
            except ValueError as exc:
                raise SystemExit(f"tandem: request {_describe(req)}: {exc}") from None
        self._refuse_training_questions(requests, questions)
        t0 = time.perf_counter()
        self.cascade.progress = self.config.progress and not disable_tqdm
        results: list[CascadeResult] = []
        # In chunks: memory stays bounded and, with a store, each chunk's work is on disk before the next
        # starts. The cascade treats every question on its own, so the answers are those of one call.
        size = self.config.chunk_size
        try:
            for start in range(0, len(questions), size):
                results.extend(self.cascade.run(questions[start : start + size]))
        except (BackendError, StoreError) as exc:
            raise SystemExit(f"tandem: {exc}") from None
        except KeyboardInterrupt:
            raise SystemExit(self._interrupted(len(results), len(questions))) from None
        wall = time.perf_counter() - t0
        self._costs.extend(r.cost for r in results)
        summary = RunSummary.of([r.cost for r in results], self.config.num_stages)
        logger.info("%s\n  wall %.2f s", summary.format(), wall)
        if self.store is not None:
            logger.info("tandem: run store %s: %s", self.store.path, self._store_counts())
        if self.config.trace_path:
            self._write_trace(requests, results)
        return [TandemResponse(r.answer, r.cost) for r in results]

    def _store_counts(self) -> dict[str, dict[str, int]]:
        """Per role: requests served from the store and computed by the backend, over this model's life."""
        return {
            b.role: b.counts.as_dict() for b in (self.mentor, self.intern) if isinstance(b, StoredBackend)
        }

    def _interrupted(self, done: int, total: int) -> str:
        """The one line a Ctrl-C leaves: what is kept, and how to resume."""
        where = f"after {done} of {total} requests of this call"
        if self.store is None:
            return (
                f"tandem: interrupted {where}; nothing was kept (no store= given): a rerun starts over. "
                "Give store=PATH (or store=default) to make a run resumable"
            )
        try:
            held = f"holds {self.store.count()} entries ({self.store.file_bytes() / 1e6:.1f} MB)"
        except StoreError:
            held = "holds what was computed so far"
        computed = sum(
            c["generations_computed"] + c["scores_computed"] for c in self._store_counts().values()
        )
        return (
            f"tandem: interrupted {where}; the run store {self.store.path} {held}, {computed} of them "
            "computed by this run. Rerun the same command with the same store= to resume: stored work is "
            "served, only the rest is computed"
        )

    def _group_of(self, req) -> str | None:
        group_by = getattr(self.classifier, "group_by", None)
        if group_by is None:
            return None
        return group_of(group_by, getattr(req, "task_name", None), getattr(req, "doc", None))

    def _refuse_training_questions(self, requests, questions) -> None:
        """Leakage guard: a question the classifier (or its thresholds) was fit on must not be scored."""
        seen = self.classifier.card.training_questions if self.classifier is not None else frozenset()
        if not seen or self.config.allow_training_overlap:
            return
        overlap = [(req, q) for req, q in zip(requests, questions) if q.key in seen]
        if overlap:
            req, _ = overlap[0]
            raise SystemExit(
                f"tandem: {len(overlap)} of {len(questions)} questions (first: {_describe(req)}) are among "
                "the classifier's training questions: scores on them would be inflated. Evaluate on "
                "other questions, or give allow_training_overlap=true to run anyway"
            )

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [req.args for req in requests]
        answerer = self.intern if self.intern is not None else self.mentor  # the mentor answers itself
        try:
            return answerer.loglikelihood(pairs)
        except BackendError as exc:
            raise SystemExit(f"tandem: {exc}") from None

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise SystemExit(
            "tandem: loglikelihood_rolling (perplexity tasks) has no mentor/intern cascade to run; "
            "evaluate the intern alone with --model hf"
        )

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        # Each role renders with its own template later; keep the messages intact until then.
        return serialize_chat(chat_history)

    def chat_template(self, chat_template=False) -> str:
        return "tandem: per-role chat templates"

    @property
    def tokenizer_name(self) -> str:
        return f"tandem:{self.config.mentor.model}+{self.config.intern.model}"

    def get_model_info(self) -> dict:
        summary = RunSummary.of(self._costs, self.config.num_stages) if self._costs else None
        return {
            "tandem": {
                "config": self.config.public_dict(),
                "mentor_params": self.mentor_params,
                "intern_params": self.intern_params,
                "thresholds": list(self.thresholds) if self.thresholds else None,
                "summary": summary.as_dict() if summary else None,
                "store": None
                if self.store is None
                else {"path": str(self.store.path), "counts": self._store_counts()},
            }
        }

    def _write_trace(self, requests, results: list[CascadeResult]) -> None:
        from .records import MentorOutput, QuestionRecord, doc_hash, stage_entry, write_records

        records = []
        for req, res in zip(requests, results):
            question = question_from_request(*req.args, self.config.max_gen_toks, self._group_of(req))
            mentor = None
            if res.mentor is not None:
                mentor = MentorOutput(
                    text=res.mentor.text,
                    token_ids=list(res.mentor.token_ids),
                    finished=res.mentor.finished,
                    model=self.config.mentor.model,
                    num_params=self.mentor_params,
                )
            stages = []
            for rec in res.stages:
                answered = rec.stage == res.cost.stop_stage
                stages.append(
                    stage_entry(
                        rec,
                        answer=res.answer if answered else None,
                        intern_tokens=res.cost.intern_tokens if answered else None,
                        finish_reason=res.answer_finish_reason if answered else None,
                    )
                )
            records.append(
                QuestionRecord(
                    question_hash=question.key,
                    question="\n\n".join(m.content for m in question.dialogue()),
                    stages=stages,
                    kind="trace",
                    task=getattr(req, "task_name", None),
                    group=question.group if question.group is not None else getattr(req, "task_name", None),
                    group_by=getattr(self.classifier, "group_by", "task"),
                    doc_id=getattr(req, "doc_id", None),
                    doc_hash=doc_hash(getattr(req, "doc", None)),
                    budgets=list(self.config.budgets),
                    mentor=mentor,
                    intern_model=self.config.intern.model,
                    intern_num_params=self.intern_params,
                    entropy_method=getattr(self.intern, "entropy_method", "exact"),
                    mode=self.config.mode,
                    chosen_stage=res.cost.stop_stage,
                    stopped_early=res.cost.stopped_early,
                    cost=res.cost.as_dict(),
                )
            )
        write_records(self.config.trace_path, records)


def classifier_path(cfg: TandemConfig) -> Path:
    """Where ``classifier=`` (a folder path, or a name under ``classifiers/``) points."""
    name = cfg.classifier or DEMO_CLASSIFIER
    path = Path(name).expanduser()
    return path if path.exists() else classifiers_dir() / name


def load_classifier(
    cfg: TandemConfig, intern: Backend | None = None
) -> tuple[object | None, tuple[float, ...] | None]:
    """The sufficiency classifier and per-stage thresholds for this run (None for baseline modes).

    ``classifier`` is a folder path or a name under ``classifiers/``; the demo intern gets the shipped
    demo classifier. Thresholds from model_args override the classifier's (every group's). When
    model_args give no budgets, the classifier's are used: its thresholds were chosen for those stages.
    """
    if cfg.mode not in ("tandem", "route"):
        return None, cfg.thresholds
    name = cfg.classifier or (DEMO_CLASSIFIER if cfg.intern.model == "demo" else None)
    if name is None:
        raise ConfigError(
            f"mode={cfg.mode} needs a sufficiency classifier trained for your intern: give classifier=PATH "
            f"(or a name under {classifiers_dir()}), train one with `tandem-lm-eval collect` and "
            "`tandem-lm-eval fit` (docs/classifier.md), or run a baseline mode (intern_only, fixed:<k>)"
        )
    path = classifier_path(cfg)
    if not path.exists():
        shipped = sorted(p.name for p in classifiers_dir().glob("*/") if p.is_dir())
        raise ClassifierError(
            f"classifier {name!r} not found (not a path; shipped: {', '.join(shipped) or 'none'})"
        )
    clf = load_classifier_folder(path)
    card = clf.card
    if not cfg.budgets_given and card.budgets and tuple(card.budgets) != tuple(cfg.budgets):
        logger.info(
            "tandem: budgets %s from classifier %s (no budgets in model_args)", card.budgets, path.name
        )
        cfg.budgets = tuple(int(b) for b in card.budgets)
    if intern is not None:  # else the caller checks once the intern is loaded
        _check_classifier(cfg, clf, path, intern)
    thresholds = cfg.thresholds or tuple(card.thresholds)
    members = getattr(clf, "members", {})
    for label, member_card in [("", card), *((f" (group {g})", m.card) for g, m in members.items())]:
        if cfg.mode == "route":  # τ_0 only: it judges the question alone, whatever the budgets
            if not cfg.thresholds and not member_card.thresholds:
                raise ConfigError(f"classifier {path.name}{label} has no thresholds: give thresholds=[τ_0]")
            if member_card.policy != "route":
                logger.info(
                    "tandem: classifier %s%s: its thresholds were chosen for the %s rule; mode=route uses "
                    "its τ_0 (fit --policy route chooses one for routing)",
                    path.name,
                    label,
                    member_card.policy,
                )
            continue
        if not cfg.thresholds and len(member_card.thresholds) != cfg.num_stages:
            raise ConfigError(
                f"classifier {path.name}{label} has {len(member_card.thresholds)} thresholds but budgets "
                f"{list(cfg.budgets)} make {cfg.num_stages} stages: give thresholds=[...] with "
                f"{cfg.num_stages} values"
            )
    return clf, thresholds


def group_policies(cfg: TandemConfig, classifier) -> dict[str, StopPolicy]:
    """Each group's own thresholds, for a per-group classifier in mode=tandem or route (unless model_args
    give thresholds, which then hold for every group)."""
    members = getattr(classifier, "members", None)
    if cfg.mode not in ("tandem", "route") or not members or cfg.thresholds:
        return {}
    return {group: make_policy(cfg.mode, tuple(m.card.thresholds)) for group, m in members.items()}


def _check_classifier(cfg: TandemConfig, clf, path: Path, intern: Backend) -> None:
    problems = []
    clf_budgets = tuple(clf.card.budgets)
    if clf_budgets and clf_budgets != tuple(cfg.budgets):
        logger.warning(
            "tandem: classifier %s was trained with budgets %s, this run uses %s: its thresholds were "
            "chosen for other stages",
            path.name,
            list(clf_budgets),
            list(cfg.budgets),
        )
    want_intern = normalize_model_name(intern_identity(cfg.intern, intern))
    if clf.card.intern_model and normalize_model_name(clf.card.intern_model) != want_intern:
        problems.append(
            f"it was trained for intern {clf.card.intern_model!r}, this run's intern is {want_intern!r}"
        )
    method = getattr(intern, "entropy_method", "exact")
    if clf.card.entropy_method != method:
        problems.append(
            f"its features used {clf.card.entropy_method!r} entropy, the intern backend gives {method!r}"
        )
    if not problems:
        return
    message = f"classifier {path.name}: " + "; ".join(problems)
    if cfg.classifier_strict:
        raise ClassifierError(message + " (classifier_strict=false to use it anyway)")
    logger.warning("tandem: %s; using it anyway (classifier_strict=false)", message)


def build_backends(cfg: TandemConfig) -> tuple[Backend | None, Backend | None, float, float]:
    """(mentor, intern, |θL|, |θS|). One engine serves both roles when they name the same model and
    options; no mentor is loaded for intern-only runs, and no intern when the mentor answers itself
    (mentor_only, budget_forcing:B; |θS| is then 0 unless intern_num_params gives it)."""
    if answerer_of(cfg.mode) == "mentor":
        if cfg.mentor.backend == "recorded":
            raise ConfigError(
                f"mode={cfg.mode}: the mentor answers the task's prompt itself, which a recorded mentor "
                "(insights replayed from a file) cannot do; give a live mentor"
            )
        mentor = _build_backend("mentor", cfg.mentor)
        params = _param_count(cfg.mentor, mentor), _param_count(cfg.intern, None)
        return _with_store(cfg, mentor, "mentor", params[0]), None, *params
    intern = _build_backend("intern", cfg.intern)
    mentor: Backend | None = None
    if cfg.mode != "intern_only":
        mentor = intern if _same_engine(cfg.mentor, cfg.intern) else _build_backend("mentor", cfg.mentor)
    params = _param_count(cfg.mentor, mentor), _param_count(cfg.intern, intern)
    # One engine may serve both roles: each role gets its own wrapper (role, fingerprint), one engine.
    return (
        _with_store(cfg, mentor, "mentor", params[0]),
        _with_store(cfg, intern, "intern", params[1]),
        *params,
    )


def _with_store(cfg: TandemConfig, backend: Backend | None, role: str, params: float) -> Backend | None:
    """``backend`` behind the run store when ``store=`` is given (one RunStore per file and process)."""
    if backend is None or cfg.store is None:
        return backend
    rc: RoleConfig = getattr(cfg, role)
    store = _open_stores.get(cfg.store)
    if store is None:
        store = _open_stores[cfg.store] = RunStore(cfg.store)
    return StoredBackend(
        backend, store, role, fingerprint(rc, backend), num_params=params, model_label=rc.model
    )


# Store files opened by this process: both roles (and a second TandemLM on the same file) share one.
_open_stores: dict[str, RunStore] = {}


def _build_backend(role: str, rc: RoleConfig) -> Backend:
    logger.info("tandem: loading %s %s on %s", role, rc.model, rc.backend)
    return make_backend(rc.backend, rc.model, **rc.options)


def _same_engine(a: RoleConfig, b: RoleConfig) -> bool:
    return a.model == b.model and a.backend == b.backend and a.options == b.options


def _param_count(rc: RoleConfig, backend: Backend | None) -> float:
    if rc.num_params is not None:
        return float(rc.num_params)
    if backend is None:
        return 0.0
    return float(backend.num_parameters)


def intern_identity(rc: RoleConfig, backend: Backend) -> str:
    if rc.model == "demo":
        from .demo import DEMO_FOLDER

        return DEMO_FOLDER
    return backend.model_name


def _describe(req) -> str:
    return f"{getattr(req, 'task_name', '?')} doc {getattr(req, 'doc_id', '?')}"
