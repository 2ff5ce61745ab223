"""``TandemLM``: the lm-eval model behind ``--model tandem``.

request -> cascade (stages) -> backends (mentor generates, intern scores) -> features -> classifier
-> policy decision -> intern answers -> cost ledger -> results.

``generate_until`` runs the cascade on the call's requests in chunks (``chunk_size``). With ``store=``
each backend sits behind the run store (store/run_store.py, store/stored_backend.py): a rerun of a killed run serves
what was computed and computes only the rest. ``loglikelihood`` requests
(multiple-choice tasks) are answered by the intern alone: there is nothing to generate, so there is
no mentor stage and no cost metric for them. ``loglikelihood_rolling`` (perplexity tasks) is refused.

Under a launcher (``torchrun``, ``accelerate launch``) each process is one rank (harness/ranks.py):
lm-eval's evaluator gives it every world_size-th document and gathers samples and metrics through
``gather_object``; each process claims its GPU group before its engines start. At the end of each
``generate_until`` the ranks' run summaries, store counts and trace parts go to rank 0, so
``results["config"]["tandem"]`` and the trace cover every rank, written once. The requests the
evaluator repeats only to even out the ranks (padding) are answered from the first run, at no cost.

With ``data_parallel_size=N`` the process runs no engine itself: N worker processes, each a whole
replica (harness/replicas.py), answer each call's questions, dealt round-robin; the results come back in
order, and the summary, store counts and trace cover every replica. Under a launcher each rank runs
its own N replicas over its share of the documents and its GPUs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from lm_eval.api.model import LM

from tandem_lm_eval.backends.base import BackendError
from tandem_lm_eval.cascade.outcomes import CascadeResult
from tandem_lm_eval.cascade.prompts import Question, question_from_request, serialize_chat
from tandem_lm_eval.common.disk import DiskFullError
from tandem_lm_eval.common.errors import TandemError
from tandem_lm_eval.common.options import parse_model_args
from tandem_lm_eval.common.redaction import redact, redact_urls
from tandem_lm_eval.cost.ledger import RunSummary
from tandem_lm_eval.data.records import QuestionRecord, write_records
from tandem_lm_eval.harness.answer_cache import (
    AnswerCacheError,
    check_answer_cache,
    configuration_fingerprint,
)
from tandem_lm_eval.harness.answer_keys import request_keys
from tandem_lm_eval.harness.assembly import Replica
from tandem_lm_eval.harness.config import ConfigError
from tandem_lm_eval.harness.plan import check_gen_kwargs, checking, open_store, plan_run
from tandem_lm_eval.harness.ranks import RankError, RankGroup, claim_gpus
from tandem_lm_eval.harness.replicas import (
    LocalReplica,
    ReplicaError,
    ReplicaPool,
    replica_gpu_groups,
    sum_counts,
)
from tandem_lm_eval.harness.reporting import PaddingResponse, TandemResponse, install_task_patches
from tandem_lm_eval.harness.trace import merge_parts, part_path, sort_prefix, trace_record, write_part
from tandem_lm_eval.judgment.grouped import group_of
from tandem_lm_eval.judgment.training_guard import QuestionIdentity
from tandem_lm_eval.judgment.training_guard import overlap as training_overlap
from tandem_lm_eval.scoring.code_exec import isolation_summary
from tandem_lm_eval.store.run_store import StoreError

logger = logging.getLogger(__name__)


class TandemLM(LM):
    def __init__(self, **model_args) -> None:
        super().__init__()
        try:
            # every value and path, resolved and checked: no model has loaded before this line
            self.plan = plan_run(model_args)
        except TandemError as exc:  # a user's input: one line; anything else is a bug (traceback)
            raise SystemExit(redact_urls(f"tandem: {_refusal(exc)}")) from None
        self.config = self.plan  # the name earlier versions gave it
        plan = self.plan
        if plan.policy.name == "agreement" and plan.data_parallel_size > 1:
            # its answers are keyed by the tasks' filters, which live in this process, not in the replicas
            raise SystemExit(
                "tandem: bad model_args: mode=agreement runs in one replica per process: drop "
                f"data_parallel_size={plan.data_parallel_size} (or run several processes under a launcher)"
            )
        try:
            # every rank reaches the launcher's store before any model loads; then each claims its GPUs
            self.ranks = RankGroup.from_env()
            claim_gpus(self.ranks.info, plan.gpus_per_rank)
            # and, with replicas, splits them among its replicas (one line if they do not split)
            gpu_groups = replica_gpu_groups(plan) if plan.data_parallel_size > 1 else None
        except (RankError, ConfigError) as exc:
            raise SystemExit(redact_urls(f"tandem: {exc}")) from None
        self._rank, self._world_size = self.ranks.rank, self.ranks.world_size
        if plan.is_demo:
            logger.warning(
                "tandem: no mentor/intern given: running the offline DEMO pair (SmolLM2-135M-Instruct as "
                "mentor and intern, %s backend). Name your models with --model_args mentor=...,intern=...",
                plan.intern.backend,
            )
        self.classifier = plan.classifier.classifier if plan.classifier is not None else None
        self.thresholds = plan.thresholds
        self.store = open_store(plan.store) if plan.store else None  # the plan opened it: the same one
        self._entries_at_start = self.store.count() if self.store is not None else 0
        try:
            # one replica in this process, or N in workers (each building what this process would)
            self.replicas = LocalReplica(plan) if gpu_groups is None else ReplicaPool(plan, gpu_groups)
        except TandemError as exc:  # ReplicaError too: a replica that failed to load, named
            raise SystemExit(redact_urls(f"tandem: {exc}")) from None
        first = self.replicas.infos[0]
        self.mentor_params, self.intern_params = first.mentor_params, first.intern_params
        self.entropy_method = first.entropy_method
        # Totals, not every request's cost: memory per question stays what lm-eval itself keeps.
        self._run_summary = RunSummary.of([], plan.num_stages)  # every rank's requests (on rank 0)
        self._rank_store_counts: list[dict[str, dict[str, int]]] = []  # per rank (rank 0)
        self._replica_store_counts: list[list[dict[str, dict[str, int]]]] = []  # per rank, per replica
        install_task_patches()

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> TandemLM:
        """lm-eval's Python API hands model_args as one string and splits it on every comma, so
        ``budgets=[8,16,32]`` became keys '16' and '32]'; split as the command line does instead."""
        try:
            with checking("model-args-string"):
                args = parse_model_args(arg_string or "")
        except TandemError as exc:
            raise SystemExit(redact_urls(f"tandem: {_refusal(exc)}")) from None
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**args, **extra)

    # this process's own engines and cascade (None with data_parallel_size > 1: they live in workers)
    @property
    def _local(self) -> Replica | None:
        return getattr(self.replicas, "replica", None)

    @property
    def mentor(self):
        return self._local.mentor if self._local is not None else None

    @property
    def intern(self):
        return self._local.intern if self._local is not None else None

    @property
    def cascade(self):
        return self._local.cascade if self._local is not None else None

    # --- lm-eval interface ----------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        runs, padding = split_padding(requests)
        questions = {}
        draws: dict[int, int] = {}  # id(request) -> how many of its repeats came before
        for i in runs:
            req = requests[i]
            context, gen_kwargs = req.args
            try:
                check_gen_kwargs(gen_kwargs)  # --gen_kwargs arrive per request: checked before any model call
                question = question_from_request(
                    context, gen_kwargs, self.plan.max_gen_toks, self._group_of(req)
                )
            except TandemError as exc:
                raise SystemExit(f"tandem: request {_describe(req)}: {exc}") from None
            # the k-th of a request's repeats is its k-th draw: sampled, each is its own stored entry
            questions[i] = dataclasses.replace(question, sample=draws.get(id(req), 0))
            draws[id(req)] = draws.get(id(req), 0) + 1
        self._refuse_training_questions([requests[i] for i in runs], [questions[i] for i in runs])
        if self.plan.recorded_mentor is not None:
            try:
                self.plan.recorded_mentor.check_questions(
                    [questions[i].key for i in runs], [_describe(requests[i]) for i in runs]
                )
            except ConfigError as exc:
                raise SystemExit(f"tandem: {exc}") from None
        if self.cascade is not None and self.cascade.policy.answers_each_stage:
            # agreement compares answers by each request's task filters (harness/answer_keys.py)
            keys, position = request_keys(requests), {id(questions[i]): i for i in runs}
            self.cascade.answer_key = lambda question, text: keys(position[id(question)], text)
        t0 = time.perf_counter()
        progress = self.plan.progress and not disable_tqdm and self.rank == 0
        responses: list[str | None] = [None] * len(requests)
        summaries: list[RunSummary] = []
        trace = _TraceSink(self, requests) if self.plan.trace_path else None
        # In chunks: memory stays bounded and, with a store, each chunk's work is on disk before the next
        # starts. The cascade treats every question on its own, so the answers are those of one call.
        # Only the answers and costs outlive a chunk (the mentor's token ids, the stages and their
        # features are written to the trace, if any, and dropped).
        done = 0
        try:
            for replica, chunk, results in self._chunks(runs, questions, progress, trace is not None):
                for i, res in zip(chunk, results):
                    responses[i] = TandemResponse(res.answer, res.cost)
                summaries.append(RunSummary.of([r.cost for r in results], self.plan.num_stages))
                if trace is not None:
                    trace.write(chunk, [questions[i] for i in chunk], results, replica)
                done += len(chunk)
                del results
        except (BackendError, StoreError) as exc:
            raise SystemExit(redact_urls(f"tandem: {exc}")) from None
        except DiskFullError as exc:  # one rule for every file the run writes (common/disk.py)
            raise SystemExit(f"tandem: {exc.line(self._kept())}") from None
        except ReplicaError as exc:
            raise SystemExit(
                f"tandem: {exc}, after {done} of {len(runs)} requests of this call; {self._kept()}"
            ) from None
        except KeyboardInterrupt:
            raise SystemExit(self._interrupted(done, len(runs))) from None
        for i, source in padding.items():
            responses[i] = PaddingResponse(str(responses[source]))
        wall = time.perf_counter() - t0
        call = RunSummary.combine(summaries, self.plan.num_stages)
        where = f" (rank {self.rank} of {self.world_size})" if self.world_size > 1 else ""
        logger.info("%s%s\n  wall %.2f s", call.format(), where, wall)
        if self.store is not None:
            logger.info("tandem: run store %s: %s%s", self.store.path, self._store_counts(), where)
        self._gather_call(call, trace)
        return responses  # type: ignore[return-value]

    def _chunks(
        self, runs: list[int], questions: dict[int, Question], progress: bool, keep_records: bool
    ) -> Iterator[tuple[int, list[int], list[CascadeResult]]]:
        """(replica, request positions, their results), chunk by chunk: from this process's cascade in
        request order, or from the replicas as each finishes a chunk of its share."""
        for replica, positions, results in self.replicas.run(
            [questions[i] for i in runs], keep_records=keep_records, progress=progress
        ):
            yield replica, [runs[j] for j in positions], results

    def _gather_call(self, call: RunSummary, trace: _TraceSink | None) -> None:
        """Rank 0 learns every rank's share of this call (summary, store counts, trace parts) and
        writes the trace once; a single process has only its own."""
        mine = {
            "summary": call,
            "store": self._store_counts(),
            "store_by_replica": [dict(c) for c in self.replicas.counts] if self.replicas.parallel else None,
            "parts": [] if trace is None else [(str(p), n) for p, n in trace.parts()],
        }
        gathered = self.ranks.gather_object(mine, dst=0, tag="generate_until")
        if gathered is None:  # not rank 0
            return
        parts = [g["summary"] for g in gathered]
        self._run_summary = RunSummary.combine([self._run_summary, *parts], self.plan.num_stages)
        self._rank_store_counts = [g["store"] for g in gathered]
        self._replica_store_counts = [g["store_by_replica"] for g in gathered if g["store_by_replica"]]
        if self.world_size > 1:
            total = RunSummary.combine(parts, self.plan.num_stages)
            logger.info("%s (all %d ranks)", total.format(), self.world_size)
        every_part = [(Path(p), n) for g in gathered for p, n in g["parts"]]
        if every_part:
            try:
                _, missing = merge_parts(self.plan.trace_path, every_part)
            except DiskFullError as exc:
                raise SystemExit(f"tandem: {exc.line(self._kept())}") from None
            if missing:
                logger.warning(
                    "tandem: trace parts %s are not visible from rank 0 (trace_path must be on a file "
                    "system every node sees); they are kept where their ranks wrote them, records of "
                    "the same format as %s",
                    ", ".join(str(p) for p in missing),
                    self.plan.trace_path,
                )

    # --- distributed: what lm-eval's evaluator calls -------------------------------------------------
    def all_gather(self, tensor):
        """lm-eval gathers each rank's request count as a tensor; concatenated in rank order."""
        if self.world_size <= 1:
            return tensor
        import torch

        parts = self.ranks.all_gather_object(tensor.detach().cpu(), tag="all_gather")
        if all(p.dim() == 0 for p in parts):
            counts = [int(p) for p in parts]
            if min(counts) == 0 < max(counts) and self.rank == 0:
                logger.warning(
                    "tandem: a task gives %s documents to the %d ranks: a rank with none of them skips "
                    "that task's requests, which lm-eval's evaluator does not expect; use --limit of "
                    "at least the number of processes",
                    counts,
                    self.world_size,
                )
            return torch.stack(parts)
        return torch.cat(parts)

    def gather_object(self, obj, dst: int = 0):
        return self.ranks.gather_object(obj, dst=dst, tag="evaluator")

    def barrier(self) -> None:
        self.ranks.barrier(tag="evaluator")

    def _store_counts(self) -> dict[str, dict[str, int]]:
        """Per role: requests served from the store and computed by the backend, over this model's life
        (summed over the replicas)."""
        return self.replicas.store_counts()

    def _interrupted(self, done: int, total: int) -> str:
        """The one line a Ctrl-C leaves: what is kept, and how to resume."""
        self.replicas.stop()
        return f"tandem: interrupted after {done} of {total} requests of this call; {self._kept()}"

    def _kept(self) -> str:
        """What an interrupted or failed call leaves: the store's contents, and how to resume."""
        if self.store is None:
            return (
                "nothing was kept (no store= given): a rerun starts over. Give store=PATH (or "
                "store=default) to make a run resumable"
            )
        try:
            held = f"holds {self.store.count()} entries ({self.store.file_bytes() / 1e6:.1f} MB)"
        except StoreError:
            held = "holds what was computed so far"
        if self.replicas.parallel:  # a replica's counts arrive with its chunks: count the file instead
            try:
                new = f"{self.store.count() - self._entries_at_start} of them written since this run started"
            except StoreError:
                new = "some of them written by this run"
        else:
            computed = sum(
                c["generations_computed"] + c["scores_computed"] for c in self._store_counts().values()
            )
            new = f"{computed} of them computed by this run"
        return (
            f"the run store {self.store.path} {held}, {new}. Rerun the "
            "same command with the same store= to resume: stored work is served, only the rest is computed"
        )

    def _group_of(self, req) -> str | None:
        group_by = self.classifier.group_by if self.classifier is not None else None
        if group_by is None:
            return None
        return group_of(group_by, getattr(req, "task_name", None), getattr(req, "doc", None))

    def _refuse_training_questions(self, requests, questions) -> None:
        """Leakage guard: a question the classifier (or its thresholds) was fit on must not be scored."""
        seen = self.classifier.card.training_questions if self.classifier is not None else frozenset()
        if not seen or self.config.allow_training_overlap:
            return
        identities = [
            QuestionIdentity(q.key, q.content_key(getattr(req, "doc", None)))
            for req, q in zip(requests, questions)
        ]
        found = training_overlap(identities, seen)
        if found:
            req = requests[found[0]]
            raise SystemExit(
                f"tandem: {len(found)} of {len(questions)} questions (first: {_describe(req)}) are among "
                "the classifier's training questions: scores on them would be inflated. Evaluate on "
                "other questions, or give allow_training_overlap=true to run anyway"
            )

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [req.args for req in requests]
        try:
            return self.replicas.loglikelihood(pairs)  # the intern (the mentor when it answers itself)
        except BackendError as exc:
            raise SystemExit(f"tandem: {exc}") from None
        except ReplicaError as exc:
            raise SystemExit(f"tandem: {exc}; {self._kept()}") from None

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
        return f"tandem:{self.plan.mentor.model}+{self.plan.intern.model}"

    def set_cache_hook(self, cache_hook) -> None:
        """lm-eval's ``--use_cache`` wraps this model and hands it the cache: a cache that another tandem
        configuration filled is refused here, before any request is served from it (answer_cache.py)."""
        super().set_cache_hook(cache_hook)
        cache = getattr(cache_hook, "dbdict", None)
        if cache is None:
            return
        folder = self.plan.classifier.folder if self.plan.classifier is not None else None
        try:
            check_answer_cache(
                cache, str(getattr(cache, "filename", "?")), configuration_fingerprint(self.plan, folder)
            )
        except AnswerCacheError as exc:
            raise SystemExit(f"tandem: {exc}") from None

    def get_model_info(self) -> dict:
        """The run summary over every rank (lm-eval asks rank 0 only, after the gathers)."""
        summary = self._run_summary if self._run_summary.requests else None
        sandbox = isolation_summary()
        return {
            # Which protections the code sandbox had (HumanEval), present when code ran.
            **({"sandbox_isolation": sandbox} if sandbox is not None else {}),
            "tandem": {
                "config": redact(self.plan.public_dict()),  # no URL credentials (common/redaction.py)
                "mentor_params": self.mentor_params,
                "intern_params": self.intern_params,
                "thresholds": list(self.thresholds) if self.thresholds else None,
                "summary": summary.as_dict() if summary else None,
                # per role, how request seconds were timed (replicas: in their worker processes, not known here)
                "latency_timing": self._local.latency_sources() if self._local is not None else None,
                "store": None
                if self.store is None
                else {
                    "path": str(self.store.path),
                    "counts": sum_counts(self._rank_store_counts) or self._store_counts(),
                    "counts_by_rank": self._rank_store_counts if self.world_size > 1 else None,
                    # rank by rank, replica by replica
                    "counts_by_replica": [c for rank in self._replica_store_counts for c in rank]
                    if self.replicas.parallel
                    else None,
                },
                "ranks": {"world_size": self.world_size, "nodes": self.ranks.info.nodes},
                "replicas": None
                if not self.replicas.parallel
                else {
                    "data_parallel_size": self.replicas.size,  # per rank
                    "total": self.replicas.size * self.world_size,
                    # this rank's replicas (rank 0's under a launcher): each one's GPUs
                    "visible_devices": [info.visible_devices for info in self.replicas.infos],
                },
            },
        }

    def close(self) -> None:
        """Free the engines: stop the replicas' workers, or close this process's backends."""
        self.replicas.close()


class _TraceSink:
    """Where one call's trace records go as each chunk finishes: the trace itself when one process
    answers everything in order; else one part file per rank and replica (records arrive as each
    replica finishes a chunk), merged in one process's order by rank 0 at the end of the call."""

    def __init__(self, lm: TandemLM, requests) -> None:
        self.lm, self.requests = lm, requests
        replicas = lm.replicas.size
        self.paths: dict[int, Path] = {}
        self.bytes: dict[int, int] = {}
        if lm.world_size > 1 or replicas > 1:
            for k in range(replicas):
                path = part_path(lm.config.trace_path, lm.rank, lm.world_size, k, replicas)
                path.unlink(missing_ok=True)  # a killed run's part: its records are computed again
                self.paths[k], self.bytes[k] = path, 0
            tasks: dict[str, int] = {}
            for req in requests:
                tasks.setdefault(getattr(req, "task_name", None) or "", len(tasks))
            self.task_position = tasks

    def parts(self) -> list[tuple[Path, int]]:
        """(part file, bytes written) of each replica that wrote records in this call."""
        return [(path, self.bytes[k]) for k, path in self.paths.items() if self.bytes[k]]

    def write(self, indices: list[int], questions, results: list[CascadeResult], replica: int = 0) -> None:
        lm = self.lm
        records: list[QuestionRecord] = [
            trace_record(
                self.requests[i],
                res,
                q,
                plan=lm.plan,
                group_by=(lm.classifier and lm.classifier.group_by) or "task",
                mentor_params=lm.mentor_params,
                intern_params=lm.intern_params,
                entropy_method=lm.entropy_method,
            )
            for i, q, res in zip(indices, questions, results)
        ]
        if not self.paths:
            write_records(lm.config.trace_path, records)
            return
        keyed = [
            (
                sort_prefix(
                    self.task_position[getattr(self.requests[i], "task_name", None) or ""], r.doc_id, i
                ),
                r,
            )
            for i, r in zip(indices, records)
        ]
        self.bytes[replica] += write_part(self.paths[replica], keyed)


def split_padding(requests) -> tuple[list[int], dict[int, int]]:
    """(positions to run, {padding position: the position whose answer it repeats}).

    lm-eval's evaluator gives a request with ``repeats=k`` k times, and under several ranks appends
    copies of a rank's last request so every rank has as many as the busiest one (padding for
    collective forward passes, which this model does not make). A request seen more often than its
    ``repeats`` is padding: it is answered from the request's first run."""
    seen: dict[int, tuple[int, int]] = {}  # id(request) -> (times seen, first position)
    runs: list[int] = []
    padding: dict[int, int] = {}
    for pos, req in enumerate(requests):
        times, first = seen.get(id(req), (0, pos))
        repeats = getattr(req, "repeats", None)
        if isinstance(repeats, int) and times >= max(repeats, 1):
            padding[pos] = first
        else:
            runs.append(pos)
        seen[id(req)] = (times + 1, first)
    return runs, padding


def _refusal(exc: Exception) -> str:
    """The line a refused input ends with: model_args' own values say so."""
    return (
        f"bad model_args: {exc}"
        if getattr(exc, "check", None) in ("model-args", "model-args-string")
        else str(exc)
    )


def _describe(req) -> str:
    return f"{getattr(req, 'task_name', '?')} doc {getattr(req, 'doc_id', '?')}"
