"""From a checked ``TandemConfig`` to the running parts: the classifier (its files checked before any
model loads, its fit to the intern after), the two backends (behind the run store when ``store=``),
their parameter counts for Eq. 12, the stop policy of each group, and the cascade that joins them
(``build_replica``: one whole replica, as ``TandemLM`` runs it in its own process and each
``data_parallel_size`` worker in its own, harness/replicas.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tandem_lm_eval.backends import Backend, make_backend
from tandem_lm_eval.backends.base import HiddenRequest
from tandem_lm_eval.cascade.policies import StopPolicy, answerer_of, make_policy
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.data.checkpoint import configured_hidden_shape
from tandem_lm_eval.data.resources import classifiers_dir
from tandem_lm_eval.harness.config import ConfigError, RoleConfig, TandemConfig
from tandem_lm_eval.judgment.card import intern_mismatch
from tandem_lm_eval.judgment.classifier import Classifier
from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.loading import adapter_of, load_classifier_folder
from tandem_lm_eval.store.export import StoreRecordedBackend, is_run_store
from tandem_lm_eval.store.keys import fingerprint
from tandem_lm_eval.store.run_store import RunStore
from tandem_lm_eval.store.stored_backend import StoredBackend, store_of

logger = logging.getLogger(__name__)

# Store files opened by this process: both roles (and a second TandemLM on the same file) share one.
_open_stores: dict[str, RunStore] = {}

DEMO_CLASSIFIER = "smollm2-135m-gsm8k"


@dataclass
class Replica:
    """One whole cascade: the classifier, both backends (one engine when they are the same model),
    their |θ| for Eq. 12, and the ``Cascade`` that runs questions through them."""

    cascade: Cascade
    mentor: Backend | None
    intern: Backend | None
    mentor_params: float
    intern_params: float
    classifier: object | None
    thresholds: tuple[float, ...] | None

    @property
    def entropy_method(self) -> str:
        return getattr(self.intern, "entropy_method", "exact")

    @property
    def store(self) -> RunStore | None:
        return store_of(self.mentor, self.intern)

    def store_counts(self) -> dict[str, dict[str, int]]:
        """Per role: requests served from the store and computed by the backend, over this replica's life."""
        return {
            b.role: b.counts.as_dict() for b in (self.mentor, self.intern) if isinstance(b, StoredBackend)
        }

    def latency_sources(self) -> dict[str, str]:
        """Per role: how its requests' seconds were timed, by the engine's own clock (``engine``, vLLM
        with per-request metrics) or as an equal share of each batched call (``call share``)."""
        return {
            role: getattr(b, "latency_source", "call share")
            for role, b in (("mentor", self.mentor), ("intern", self.intern))
            if b is not None
        }

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """Multiple-choice requests: the intern answers them (the mentor when it answers itself)."""
        answerer = self.intern if self.intern is not None else self.mentor
        return answerer.loglikelihood(pairs)

    def close(self) -> None:
        """Free each distinct engine once (one engine may serve both roles)."""
        for backend in {id(b): b for b in (self.mentor, self.intern) if b is not None}.values():
            backend.close()


def build_replica(cfg: TandemConfig) -> Replica:
    """The classifier (its files read first: a bad one is reported before any model loads), both
    backends, the classifier's fit to the loaded intern, the policy, and the cascade."""
    classifier, thresholds = load_classifier(cfg)
    mentor, intern, mentor_params, intern_params = build_backends(cfg)
    if classifier is not None:  # does it fit the intern that was loaded?
        check_classifier_fits_intern(cfg, classifier, classifier_path(cfg), intern)
    policy = make_policy(cfg.mode, thresholds, budget_forcing_close=cfg.budget_forcing_close)
    cascade = Cascade(
        mentor=mentor,
        intern=intern,
        policy=policy,
        budgets=cfg.budgets,
        classifier=classifier,
        mentor_params=mentor_params,
        intern_params=intern_params,
        mentor_thinking=cfg.mentor.thinking,
        intern_thinking=cfg.intern.thinking,
        progress=cfg.progress,
        mentor_prices=cfg.mentor.prices,
        intern_prices=cfg.intern.prices,
        group_policies=group_policies(cfg, classifier),
        all_feature_spans=bool(cfg.trace_path),  # a trace records every span; a run reads one
        hidden=hidden_request_for(classifier, classifier_path(cfg)),
    )
    return Replica(cascade, mentor, intern, mentor_params, intern_params, classifier, thresholds)


def open_store(path: str) -> RunStore:
    """The run store at ``path``, opened once per process (both roles, and every model of the process
    on the same file, share one connection)."""
    store = _open_stores.get(path)
    if store is None:
        store = _open_stores[path] = RunStore(path)
    return store


def classifier_path(cfg: TandemConfig) -> Path:
    """Where ``classifier=`` (a folder path, or a name under ``classifiers/``) points."""
    name = cfg.classifier or DEMO_CLASSIFIER
    path = Path(name).expanduser()
    return path if path.exists() else classifiers_dir() / name


def load_classifier(
    cfg: TandemConfig, intern: Backend | None = None
) -> tuple[Classifier | None, tuple[float, ...] | None]:
    """The sufficiency classifier and per-stage thresholds for this run (None for baseline modes).

    ``classifier`` is a folder path or a name under ``classifiers/``; the demo intern gets the shipped
    demo classifier. Thresholds from model_args override the classifier's (every group's). When
    model_args give no budgets, the classifier's are used: its thresholds were chosen for those stages.
    """
    if cfg.mode not in ("tandem", "route", "router"):
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
    check_judge_before_load(cfg, card, path)
    if not cfg.budgets_given and card.budgets and tuple(card.budgets) != tuple(cfg.budgets):
        logger.info(
            "tandem: budgets %s from classifier %s (no budgets in model_args)", card.budgets, path.name
        )
        cfg.budgets = tuple(int(b) for b in card.budgets)
    if intern is not None:  # else the caller checks once the intern is loaded
        check_classifier_fits_intern(cfg, clf, path, intern)
    thresholds = cfg.thresholds or tuple(card.thresholds)
    for label, member_card in [("", card), *((f" (group {g})", m.card) for g, m in clf.members.items())]:
        if cfg.mode in ("route", "router"):  # τ_0 only: it judges the question alone, whatever the budgets
            if not cfg.thresholds and not member_card.thresholds:
                raise ConfigError(f"classifier {path.name}{label} has no thresholds: give thresholds=[τ_0]")
            if member_card.policy != cfg.mode:
                logger.info(
                    "tandem: classifier %s%s: its thresholds were chosen for the %s rule; mode=%s uses "
                    "its τ_0 (fit --policy %s chooses one for it)",
                    path.name,
                    label,
                    member_card.policy,
                    cfg.mode,
                    cfg.mode,
                )
            continue
        if not cfg.thresholds and len(member_card.thresholds) != cfg.num_stages:
            raise ConfigError(
                f"classifier {path.name}{label} has {len(member_card.thresholds)} thresholds but budgets "
                f"{list(cfg.budgets)} make {cfg.num_stages} stages: give thresholds=[...] with "
                f"{cfg.num_stages} values"
            )
    return clf, thresholds


def group_policies(cfg: TandemConfig, classifier: Classifier | None) -> dict[str, StopPolicy]:
    """Each group's own thresholds, for a per-group classifier in mode=tandem or route (unless model_args
    give thresholds, which then hold for every group)."""
    if (
        classifier is None
        or cfg.mode not in ("tandem", "route", "router")
        or not classifier.members
        or cfg.thresholds
    ):
        return {}
    return {group: make_policy(cfg.mode, tuple(m.card.thresholds)) for group, m in classifier.members.items()}


def check_judge_before_load(cfg: TandemConfig, card, path: Path) -> None:
    """A hidden-state judge's needs that can be checked before any model loads: an intern backend that
    has hidden states, the adapter's files, and the intern's hidden size where its config is at hand."""
    if card.hidden is None:
        return
    if cfg.intern.backend == "openai":
        raise ClassifierError(
            f"classifier {path.name} reads the intern's hidden states ({card.feature_set}), which an "
            "OpenAI-compatible server does not give: use intern_backend=hf or vllm"
        )
    if card.hidden.adapter is not None:
        adapter_of(path, card.hidden)
    shape = configured_hidden_shape(cfg.intern.model, cfg.intern.options.get("revision"))
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


def hidden_request_for(classifier: Classifier | None, path: Path) -> HiddenRequest | None:
    """What the cascade asks the intern's scoring pass for: the judge's layer (with its adapter)."""
    if classifier is None or classifier.card.hidden is None:
        return None
    h = classifier.card.hidden
    folder, adapter_id = adapter_of(path, h) if h.adapter is not None else (None, None)
    return HiddenRequest((h.layer,), adapter=folder, adapter_id=adapter_id)


def check_classifier_fits_intern(cfg: TandemConfig, clf, path: Path, intern: Backend) -> None:
    if clf.card.hidden is not None:
        check_hidden_shape(clf.card, path, intern.hidden_shape())
    clf_budgets = tuple(clf.card.budgets)
    if clf_budgets and clf_budgets != tuple(cfg.budgets):
        logger.warning(
            "tandem: classifier %s was trained with budgets %s, this run uses %s: its thresholds were "
            "chosen for other stages",
            path.name,
            list(clf_budgets),
            list(cfg.budgets),
        )
    problems = intern_mismatch(
        clf.card, intern_identity(cfg.intern, intern), getattr(intern, "entropy_method", "exact")
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
    shares = _shared_gpu_shares(cfg)  # before any load: two vLLM engines on one GPU get explicit shares
    intern = _build_backend("intern", cfg.intern, shares.get("intern"))
    mentor: Backend | None = None
    if cfg.mode != "intern_only":
        mentor = (
            intern
            if _same_engine(cfg.mentor, cfg.intern)
            else _build_backend("mentor", cfg.mentor, shares.get("mentor"))
        )
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
    return StoredBackend(
        backend,
        open_store(cfg.store),
        role,
        fingerprint(rc, backend),
        num_params=params,
        model_label=rc.model,
    )


def _build_backend(role: str, rc: RoleConfig, extra: dict | None = None) -> Backend:
    logger.info("tandem: loading %s %s on %s", role, rc.model, rc.backend)
    path = Path(rc.model).expanduser()
    if rc.backend == "recorded" and path.is_file() and is_run_store(path):
        return StoreRecordedBackend(rc.model, **rc.options, **(extra or {}))  # a store someone else filled
    return make_backend(rc.backend, rc.model, **rc.options, **(extra or {}))


def _shared_gpu_shares(cfg: TandemConfig) -> dict[str, dict]:
    """Each role's derived memory share when both run vLLM engines of their own (backends/vllm_memory.py)."""
    if cfg.mode == "intern_only" or cfg.mentor.backend != "vllm" or cfg.intern.backend != "vllm":
        return {}
    if _same_engine(cfg.mentor, cfg.intern):
        return {}
    from tandem_lm_eval.backends.vllm_memory import RoleEngine, shared_gpu_shares

    return shared_gpu_shares(
        [
            RoleEngine(role, rc.model, rc.options, rc.num_params)
            for role, rc in (("mentor", cfg.mentor), ("intern", cfg.intern))
        ]
    )


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
        from tandem_lm_eval.data.demo_model import DEMO_FOLDER

        return DEMO_FOLDER
    return backend.model_name
