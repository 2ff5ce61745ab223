"""``TandemLM``: the lm-eval model behind ``--model tandem``.

request -> cascade (stages) -> backends (mentor generates, intern scores) -> features -> classifier
-> policy decision -> intern answers -> cost ledger -> results.

``generate_until`` runs the cascade on all requests of the call at once. ``loglikelihood`` requests
(multiple-choice tasks) are answered by the intern alone: there is nothing to generate, so there is
no mentor stage and no cost metric for them. ``loglikelihood_rolling`` (perplexity tasks) is refused.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from lm_eval.api.model import LM

from .backends import Backend, Message, make_backend
from .backends.base import BackendError
from .cascade import Cascade, CascadeResult
from .classifier import ClassifierError, SufficiencyClassifier, normalize_model_name
from .config import ConfigError, RoleConfig, TandemConfig
from .cost import RequestCost, RunSummary
from .policies import make_policy
from .prompts import Question
from .reporting import TandemResponse, install_task_patches
from .resources import classifiers_dir

logger = logging.getLogger(__name__)

DEMO_CLASSIFIER = "smollm2-135m-gsm8k"
# Marks a context that our apply_chat_template serialized, so generate_until gets the messages back.
_CHAT_SENTINEL = "\x00tandem-chat\x00"


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
            self.mentor, self.intern, self.mentor_params, self.intern_params = build_backends(cfg)
            self.classifier, thresholds = load_classifier(cfg, self.intern)
            policy = make_policy(cfg.mode, thresholds)
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
            )
        except (ConfigError, ClassifierError, BackendError, ValueError) as exc:
            raise SystemExit(f"tandem: {exc}") from None
        self.thresholds = thresholds
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
                questions.append(self._question(context, gen_kwargs))
            except ValueError as exc:
                raise SystemExit(f"tandem: request {_describe(req)}: {exc}") from None
        t0 = time.perf_counter()
        self.cascade.progress = self.config.progress and not disable_tqdm
        try:
            results = self.cascade.run(questions)
        except BackendError as exc:
            raise SystemExit(f"tandem: {exc}") from None
        wall = time.perf_counter() - t0
        self._costs.extend(r.cost for r in results)
        summary = RunSummary.of([r.cost for r in results], self.config.num_stages)
        logger.info("%s\n  wall %.2f s", summary.format(), wall)
        if self.config.trace_path:
            self._write_trace(requests, results)
        return [TandemResponse(r.answer, r.cost) for r in results]

    def _question(self, context: str, gen_kwargs: dict) -> Question:
        gen_kwargs = dict(gen_kwargs or {})
        until = gen_kwargs.pop("until", None) or ()
        if isinstance(until, str):
            until = (until,)
        max_gen = int(gen_kwargs.pop("max_gen_toks", self.config.max_gen_toks))
        do_sample = bool(gen_kwargs.pop("do_sample", False))
        temperature = float(gen_kwargs.pop("temperature", 0.0) or 0.0)
        if not do_sample:
            temperature = 0.0
        top_p = float(gen_kwargs.pop("top_p", 1.0) or 1.0)
        seed = gen_kwargs.pop("seed", None)
        if context.startswith(_CHAT_SENTINEL):
            messages = tuple(
                Message(m["role"], m["content"]) for m in json.loads(context[len(_CHAT_SENTINEL) :])
            )
        else:
            if not context.strip():
                raise ValueError("empty prompt")
            messages = (Message("user", context),)
        return Question(
            messages=messages,
            until=tuple(u for u in until if u),
            max_gen_toks=max_gen,
            temperature=temperature,
            top_p=top_p,
            seed=int(seed) if seed is not None else None,
        )

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [req.args for req in requests]
        try:
            return self.intern.loglikelihood(pairs)
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
        return _CHAT_SENTINEL + json.dumps(
            [{"role": m["role"], "content": m["content"]} for m in chat_history]
        )

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
            }
        }

    def _write_trace(self, requests, results: list[CascadeResult]) -> None:
        path = Path(self.config.trace_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            for req, res in zip(requests, results):
                row = {
                    "task": getattr(req, "task_name", None),
                    "doc_id": getattr(req, "doc_id", None),
                    "answer": res.answer,
                    "cost": res.cost.as_dict(),
                    "stages": [s.__dict__ for s in res.stages],
                }
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def load_classifier(
    cfg: TandemConfig, intern: Backend
) -> tuple[SufficiencyClassifier | None, tuple[float, ...] | None]:
    """The sufficiency classifier and per-stage thresholds for this run (None for baseline modes).

    ``classifier`` is a folder path or a name under ``classifiers/``; the demo intern gets the shipped
    demo classifier. Thresholds from model_args override the classifier's.
    """
    if cfg.mode != "tandem":
        return None, cfg.thresholds
    name = cfg.classifier or (DEMO_CLASSIFIER if cfg.intern.model == "demo" else None)
    if name is None:
        raise ConfigError(
            "mode=tandem needs a sufficiency classifier trained for your intern: give classifier=PATH "
            f"(or a name under {classifiers_dir()}), train one with `python -m tandem_lm_eval.train_classifier`, "
            "or run a baseline mode (intern_only, fixed:<k>)"
        )
    path = Path(name).expanduser()
    if not path.exists():
        path = classifiers_dir() / name
    if not path.exists():
        shipped = sorted(p.name for p in classifiers_dir().glob("*/") if p.is_dir())
        raise ClassifierError(
            f"classifier {name!r} not found (not a path; shipped: {', '.join(shipped) or 'none'})"
        )
    clf = SufficiencyClassifier.load(path)
    _check_classifier(cfg, clf, path, intern)
    thresholds = cfg.thresholds or tuple(clf.card.thresholds)
    if len(thresholds) != cfg.num_stages:
        raise ConfigError(
            f"classifier {path.name} has {len(thresholds)} thresholds but budgets {list(cfg.budgets)} make "
            f"{cfg.num_stages} stages: give thresholds=[...] with {cfg.num_stages} values"
        )
    return clf, thresholds


def _check_classifier(cfg: TandemConfig, clf: SufficiencyClassifier, path: Path, intern: Backend) -> None:
    problems = []
    want_intern = normalize_model_name(_intern_identity(cfg.intern, intern))
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


def build_backends(cfg: TandemConfig) -> tuple[Backend | None, Backend, float, float]:
    """(mentor, intern, |θL|, |θS|). One engine serves both roles when they name the same model and
    options; no mentor is loaded for intern-only runs."""
    intern = _build_backend("intern", cfg.intern)
    mentor: Backend | None = None
    if cfg.mode != "intern_only":
        mentor = intern if _same_engine(cfg.mentor, cfg.intern) else _build_backend("mentor", cfg.mentor)
    return mentor, intern, _param_count(cfg.mentor, mentor), _param_count(cfg.intern, intern)


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


def _intern_identity(rc: RoleConfig, backend: Backend) -> str:
    if rc.model == "demo":
        from .demo import DEMO_FOLDER

        return DEMO_FOLDER
    return backend.model_name


def _describe(req) -> str:
    return f"{getattr(req, 'task_name', '?')} doc {getattr(req, 'doc_id', '?')}"
