"""From a ``RunPlan`` (harness/plan.py: every value resolved and checked before any model loads) to
the running parts: the two backends (behind the run store when ``store=``), their parameter counts for
Eq. 12, the classifier's fit to the loaded intern, the stop policy of each group, and the cascade that
joins them (``build_replica``: one whole replica, as ``TandemLM`` runs it in its own process and each
``data_parallel_size`` worker in its own, harness/replicas.py). This is the only file that loads a
model (``make_backend``), and it takes a plan, never model_args."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tandem_lm_eval.backends import Backend, make_backend
from tandem_lm_eval.cascade.policies import StopPolicy
from tandem_lm_eval.cascade.roles import Role
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.harness.config import TandemConfig
from tandem_lm_eval.harness.plan import (
    DEMO_CLASSIFIER,
    RolePlan,
    RunPlan,
    check_hidden_shape,
    open_store,
    plan_run,
)
from tandem_lm_eval.judgment.card import intern_mismatch
from tandem_lm_eval.judgment.classifier import Classifier
from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.store.export import StoreRecordedBackend, is_run_store
from tandem_lm_eval.store.keys import fingerprint
from tandem_lm_eval.store.run_store import RunStore
from tandem_lm_eval.store.stored_backend import StoredBackend, store_of

logger = logging.getLogger(__name__)

__all__ = [
    "DEMO_CLASSIFIER",
    "Replica",
    "build_backends",
    "build_replica",
    "check_classifier_fits_intern",
    "group_policies",
    "intern_identity",
    "load_classifier",
    "open_store",
]


@dataclass
class Replica:
    """One whole cascade: the classifier, both backends (one engine when they are the same model),
    their |θ| for Eq. 12, and the ``Cascade`` that runs questions through them."""

    cascade: Cascade
    mentor: Backend | None
    intern: Backend | None
    mentor_params: float
    intern_params: float
    classifier: Classifier | None
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


def build_replica(plan: RunPlan) -> Replica:
    """Both backends, the classifier's fit to the loaded intern, the policy, and the cascade."""
    clf_plan = plan.classifier
    classifier = clf_plan.classifier if clf_plan is not None else None
    mentor, intern, mentor_params, intern_params = build_backends(plan)
    if classifier is not None:  # does it fit the intern that was loaded?
        check_classifier_fits_intern(plan, intern)
    policy = plan.policy.make(plan.thresholds, budget_forcing_close=plan.budget_forcing_close)
    cascade = Cascade(
        Role(mentor, params=mentor_params, thinking=plan.mentor.thinking, prices=plan.mentor.prices),
        Role(intern, params=intern_params, thinking=plan.intern.thinking, prices=plan.intern.prices),
        policy=policy,
        budgets=plan.budgets,
        classifier=classifier,
        progress=plan.progress,
        group_policies=group_policies(plan),
        all_feature_spans=bool(plan.trace_path),  # a trace records every span; a run reads one
        hidden=clf_plan.hidden if clf_plan is not None else None,
    )
    return Replica(cascade, mentor, intern, mentor_params, intern_params, classifier, plan.thresholds)


def load_classifier(
    cfg: TandemConfig | RunPlan, intern: Backend | None = None
) -> tuple[object | None, tuple[float, ...] | None]:
    """(classifier, the run's thresholds) of a plan (made from ``cfg`` when given a config); with
    ``intern``, also checked against the loaded intern. (None, thresholds) for a mode without one."""
    plan = cfg if isinstance(cfg, RunPlan) else plan_run(cfg)
    if plan.classifier is None:
        return None, plan.thresholds
    if intern is not None:
        check_classifier_fits_intern(plan, intern)
    return plan.classifier.classifier, plan.thresholds


def group_policies(plan: RunPlan) -> dict[str, StopPolicy]:
    """Each group's own thresholds, for a per-group classifier (unless model_args give thresholds,
    which then hold for every group: the plan has no group thresholds then)."""
    if plan.classifier is None:
        return {}
    return {g: plan.policy.make(t) for g, t in plan.classifier.group_thresholds.items()}


def check_classifier_fits_intern(plan: RunPlan, intern: Backend) -> None:
    """What needs the loaded intern: its hidden size, its name and its entropy method against the card."""
    clf, path = plan.classifier.classifier, plan.classifier.folder
    if clf.card.hidden is not None:
        check_hidden_shape(clf.card, path, intern.hidden_shape())
    problems = []
    clf_budgets = tuple(clf.card.budgets)
    if clf_budgets and clf_budgets != tuple(plan.budgets):
        logger.warning(
            "tandem: classifier %s was trained with budgets %s, this run uses %s: its thresholds were "
            "chosen for other stages",
            path.name,
            list(clf_budgets),
            list(plan.budgets),
        )
    problems += intern_mismatch(
        clf.card, intern_identity(plan.intern, intern), getattr(intern, "entropy_method", "exact")
    )
    if not problems:
        return
    message = f"classifier {path.name}: " + "; ".join(problems)
    if plan.classifier_strict:
        raise ClassifierError(message + " (classifier_strict=false to use it anyway)")
    logger.warning("tandem: %s; using it anyway (classifier_strict=false)", message)


def build_backends(plan: RunPlan) -> tuple[Backend | None, Backend | None, float, float]:
    """(mentor, intern, |θL|, |θS|): the roles the plan loads. One engine serves both roles when they
    name the same model and options; |θ| of a role not loaded is its num_params, else 0."""
    if not isinstance(plan, RunPlan):  # the rule: no model loads before the plan exists
        raise TypeError(f"build_backends takes a RunPlan (harness/plan.py), got {type(plan).__name__}")
    shares = _shared_gpu_shares(plan)  # before any load: two vLLM engines on one GPU get explicit shares
    intern = _build_backend(plan.intern, shares.get("intern")) if plan.intern.loads else None
    mentor: Backend | None = None
    if plan.mentor.loads:
        same = intern is not None and plan.mentor.same_engine(plan.intern)
        mentor = intern if same else _build_backend(plan.mentor, shares.get("mentor"))
    params = _param_count(plan.mentor, mentor), _param_count(plan.intern, intern)
    # One engine may serve both roles: each role gets its own wrapper (role, fingerprint), one engine.
    return (
        _with_store(plan, mentor, plan.mentor, params[0]),
        _with_store(plan, intern, plan.intern, params[1]),
        *params,
    )


def _with_store(plan: RunPlan, backend: Backend | None, rp: RolePlan, params: float) -> Backend | None:
    """``backend`` behind the run store when ``store=`` is given (one RunStore per file and process)."""
    if backend is None or plan.store is None:
        return backend
    return StoredBackend(
        backend,
        open_store(plan.store),
        rp.role,
        fingerprint(rp, backend),
        num_params=params,
        model_label=rp.model,
    )


def _build_backend(rp: RolePlan, extra: dict | None = None) -> Backend:
    """``extra``: engine options the plan derived (a vLLM engine's memory share), beside the user's."""
    logger.info("tandem: loading %s %s on %s", rp.role, rp.model, rp.backend)
    path = Path(rp.model).expanduser()
    if rp.backend == "recorded" and path.is_file() and is_run_store(path):
        return StoreRecordedBackend(rp.model, **rp.options, **(extra or {}))  # a store someone else filled
    return make_backend(rp.backend, rp.model, **rp.options, **(extra or {}))


def _shared_gpu_shares(plan: RunPlan) -> dict[str, dict]:
    """Each role's derived memory share when both run vLLM engines of their own (backends/vllm_memory.py)."""
    roles = (plan.mentor, plan.intern)
    if not all(rp.loads and rp.backend == "vllm" for rp in roles) or plan.mentor.same_engine(plan.intern):
        return {}
    from tandem_lm_eval.backends.vllm_memory import RoleEngine, shared_gpu_shares

    return shared_gpu_shares([RoleEngine(rp.role, rp.model, rp.options, rp.num_params) for rp in roles])


def _param_count(rp: RolePlan, backend: Backend | None) -> float:
    if rp.num_params is not None:
        return float(rp.num_params)
    if backend is None:
        return 0.0
    return float(backend.num_parameters)


def intern_identity(rp, backend: Backend) -> str:
    if rp.model == "demo":
        from tandem_lm_eval.data.demo_model import DEMO_FOLDER

        return DEMO_FOLDER
    return backend.model_name
