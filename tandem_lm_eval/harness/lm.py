"""``TandemLM``: the lm-eval model behind ``--model tandem``.

request -> cascade (stages) -> backends (mentor generates, intern scores) -> features -> classifier
-> policy decision -> intern answers -> cost ledger -> results.

``generate_until`` runs the cascade on the call's requests in chunks (``chunk_size``). With ``store=``
each backend sits behind the run store (store/run_store.py, backends/store_backed.py): a rerun of a killed run serves
what was computed and computes only the rest. ``loglikelihood`` requests
(multiple-choice tasks) are answered by the intern alone: there is nothing to generate, so there is
no mentor stage and no cost metric for them. ``loglikelihood_rolling`` (perplexity tasks) is refused.
"""

from __future__ import annotations

import logging
import time

from lm_eval.api.model import LM

from tandem_lm_eval.backends.base import BackendError
from tandem_lm_eval.backends.store_backed import StoredBackend, store_of
from tandem_lm_eval.cascade.outcomes import CascadeResult
from tandem_lm_eval.cascade.policies import make_policy
from tandem_lm_eval.cascade.prompts import question_from_request, serialize_chat
from tandem_lm_eval.cascade.stages import Cascade
from tandem_lm_eval.cost.ledger import RequestCost, RunSummary
from tandem_lm_eval.data.records import write_records
from tandem_lm_eval.harness.assembly import (
    build_backends,
    check_classifier_fits_intern,
    classifier_path,
    group_policies,
    hidden_request_for,
    load_classifier,
)
from tandem_lm_eval.harness.config import ConfigError, TandemConfig
from tandem_lm_eval.harness.reporting import TandemResponse, install_task_patches
from tandem_lm_eval.harness.trace import trace_record
from tandem_lm_eval.judgment.errors import ClassifierError
from tandem_lm_eval.judgment.grouped import group_of
from tandem_lm_eval.store.run_store import StoreError

logger = logging.getLogger(__name__)


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
                check_classifier_fits_intern(cfg, self.classifier, classifier_path(cfg), self.intern)
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
                hidden=hidden_request_for(self.classifier, classifier_path(cfg)),
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
        records = [
            trace_record(
                req,
                res,
                question_from_request(*req.args, self.config.max_gen_toks, self._group_of(req)),
                config=self.config,
                group_by=getattr(self.classifier, "group_by", "task"),
                mentor_params=self.mentor_params,
                intern_params=self.intern_params,
                entropy_method=getattr(self.intern, "entropy_method", "exact"),
            )
            for req, res in zip(requests, results)
        ]
        write_records(self.config.trace_path, records)


def _describe(req) -> str:
    return f"{getattr(req, 'task_name', '?')} doc {getattr(req, 'doc_id', '?')}"
