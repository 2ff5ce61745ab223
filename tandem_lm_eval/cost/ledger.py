"""The per-request cost ledger: tokens, Eq. 12 (``flops.py``), dollars, phase times; run totals.

When the mentor answers by itself (``mode=mentor_only``, ``budget_forcing:B``) the intern reads
nothing (``RequestCost.intern_reads_mentor = False``): TFLOPs = 2e-12 · |θL| · L_L, the paper's
single-model rows (Table 1, 32B).

Latency (the paper's second cost, Table 13). Every phase is one batched backend call over the
requests that need it (the mentor's stage t, the intern's scoring of stage t, the judgment, the
answer); its wall time, read with :func:`clock`, is shared equally by the requests of the call. A
request's latency is the sum of its shares (:attr:`RequestCost.latency_s`). With one request per
call (``chunk_size=1``) that is the time the question took, phase by phase; with many, it is the
run's time per question (the inverse throughput), not what a single user would wait
(docs/cost-reporting.md). An output a run store serves counts the seconds it took when it was
computed (:func:`call_seconds`), as it counts its tokens: latency, like TFLOPs, describes the method,
not the cache.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

from tandem_lm_eval.cost.flops import tflops
from tandem_lm_eval.cost.passes import PassTokens, full_pass_tflops
from tandem_lm_eval.cost.pricing import TokenPrices


def clock() -> float:
    """The clock every phase is timed with (one place, so a test can replace it)."""
    return time.perf_counter()


def call_seconds(elapsed: float, n: int, reported: Sequence[float | None] | None = None) -> list[float]:
    """Each of the ``n`` requests' seconds of one batched call that took ``elapsed``: an equal share,
    except where the backend reported a request's own (``reported``, one per request, None where it
    has none): a run store's served output brings the seconds it took when it was computed
    (store/stored_backend.py), so reading it back is never mistaken for computing it."""
    if reported is None or len(reported) != n:
        return [elapsed / n] * n
    return [elapsed / n if s is None else float(s) for s in reported]


#: The phases a request's time is split into (``PhaseTimes`` fields), in the order they run.
PHASES = ("mentor_generate", "intern_score", "classify", "intern_generate")


@dataclass
class PhaseTimes:
    """Wall seconds by phase. A batched call's time is shared equally by the requests in the batch."""

    mentor_generate: float = 0.0
    intern_score: float = 0.0
    classify: float = 0.0
    intern_generate: float = 0.0

    @property
    def backend(self) -> float:
        return self.mentor_generate + self.intern_score + self.intern_generate

    @property
    def judgment(self) -> float:
        """The continual judgment: the intern's scoring pass over Q ⊕ I_t, the features, the classifier."""
        return self.intern_score + self.classify

    @property
    def total(self) -> float:
        """Every phase: the request's latency."""
        return self.mentor_generate + self.intern_score + self.classify + self.intern_generate

    def add(self, other: PhaseTimes) -> None:
        for name in PHASES:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class RequestCost:
    """What one request cost; one row of the ledger."""

    mentor_tokens: int = 0  # L_L
    # tokens the mentor generated again: a hosted chat API that cannot continue a message regenerates
    # the whole answer at every stage. Billed (``usd``) and computed (``tflops``), not in L_L.
    mentor_regenerated_tokens: int = 0
    intern_tokens: int = 0  # L_S
    stop_stage: int = 0  # t*: 0 = question alone, k = after the k-th mentor stage
    stage_scores: list[float] = field(default_factory=list)  # s_t for every stage that was scored
    stopped_early: bool = False  # s_t > tau_t at t*; False when t* came from the argmax fallback
    intern_scored_tokens: int = 0
    scored_stages: int = 0  # scoring passes of the intern (a stage that adds no insight is not rescored)
    mentor_prompt_tokens: int = 0
    mentor_cached_tokens: int = 0
    # the prefill of every intern answer call, and its part a prefix cache served (passes.py)
    intern_prompt_tokens: int = 0
    intern_cached_tokens: int = 0
    # answer tokens of answers the policy generated but did not return (``agreement`` answers at every
    # stage it visits): in L_S (``intern_tokens``) and so in Eq. 12; this is the part not returned
    intern_discarded_tokens: int = 0
    # the returned answer ended at the length limit (finish_reason "length"): a censored answer
    censored: bool = False
    times: PhaseTimes = field(default_factory=PhaseTimes)
    tflops: float = 0.0
    # every forward pass of both models (passes.py), beside Eq. 12; and the prompt tokens a prefix
    # cache served, counted apart
    full_pass_tflops: float = 0.0
    cached_pass_tflops: float = 0.0
    usd: float | None = None
    # False when no intern read the mentor's tokens (the mentor answered itself): Eq. 12 then has no
    # |θS|·L_L term
    intern_reads_mentor: bool = True

    def bill(self, prices: TokenPrices | None, input_tokens: int, output_tokens: int) -> None:
        """Add an API call's $ cost: every call pays for all the prompt tokens it sends (cost/pricing.py)."""
        if prices is not None:
            self.usd = (self.usd or 0.0) + prices.cost(input_tokens, output_tokens)

    def add_mentor_call(
        self,
        prices: TokenPrices | None,
        *,
        new_tokens: int,
        regenerated_tokens: int = 0,
        prompt_tokens: int | None = None,
        cached_prompt_tokens: int | None = None,
    ) -> None:
        """One mentor generation call: billed for its prompt and for every token it output, the
        regenerated ones included (what an API charges); L_L itself is set by the caller."""
        self.mentor_regenerated_tokens += regenerated_tokens
        self.bill(prices, prompt_tokens or 0, new_tokens + regenerated_tokens)
        if prompt_tokens is not None:
            self.mentor_prompt_tokens += prompt_tokens
        if cached_prompt_tokens:
            self.mentor_cached_tokens += cached_prompt_tokens

    def add_intern_answer_call(self, *, prompt_tokens: int | None, cached_prompt_tokens: int | None) -> None:
        """The prefill of one intern answer call (the answer tokens themselves are ``intern_tokens``)."""
        self.intern_prompt_tokens += prompt_tokens or 0
        self.intern_cached_tokens += cached_prompt_tokens or 0

    def pass_tokens(self) -> PassTokens:
        """Every token this request's passes processed, by model (``passes.py``)."""
        return PassTokens(
            mentor_prompt=self.mentor_prompt_tokens,
            mentor_generated=self.mentor_tokens + self.mentor_regenerated_tokens,
            mentor_cached=self.mentor_cached_tokens,
            intern_scored=self.intern_scored_tokens,
            intern_prompt=self.intern_prompt_tokens,
            intern_generated=self.intern_tokens,
            intern_cached=self.intern_cached_tokens,
        )

    def finalize(self, mentor_params: float, intern_params: float) -> None:
        passes = full_pass_tflops(mentor_params, intern_params, self.pass_tokens())
        self.full_pass_tflops, self.cached_pass_tflops = passes.computed, passes.cached
        regenerated = self.mentor_regenerated_tokens
        if self.intern_reads_mentor:
            self.tflops = tflops(
                mentor_params, intern_params, self.mentor_tokens, self.intern_tokens, regenerated
            )
        else:
            self.tflops = tflops(mentor_params, 0.0, self.mentor_tokens, 0, regenerated) + tflops(
                0.0, intern_params, 0, self.intern_tokens
            )

    @property
    def latency_s(self) -> float:
        """Seconds this request took: the sum of its shares of every phase (module docstring)."""
        return self.times.total

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunSummary:
    """Totals over a run: what the log prints and ``get_model_info`` reports."""

    requests: int
    mentor_tokens: int
    intern_tokens: int
    tflops: float
    stage_counts: dict[int, int]
    early_stops: int
    times: PhaseTimes
    usd: float | None = None
    scored_stages: int = 0
    mentor_regenerated_tokens: int = 0

    @property
    def mean_latency_s(self) -> float:
        """Mean seconds per request (the sum of every phase over the run, per request)."""
        return self.times.total / max(self.requests, 1)

    @property
    def judgment_share(self) -> float | None:
        """The judgment's share of the run's time (the paper's "< 2%"); None before any time was taken."""
        return self.times.judgment / self.times.total if self.times.total > 0 else None

    @property
    def classifier_share(self) -> float | None:
        """The share of the features and the classifier alone (no scoring pass)."""
        return self.times.classify / self.times.total if self.times.total > 0 else None

    @property
    def judgment_s_per_stage(self) -> float | None:
        """Mean seconds of one judgment (scoring pass, features, classifier) per scored stage."""
        return self.times.judgment / self.scored_stages if self.scored_stages else None

    @classmethod
    def of(cls, costs: Sequence[RequestCost], num_stages: int) -> RunSummary:
        counts = {t: 0 for t in range(num_stages)}
        times = PhaseTimes()
        usd = None
        for c in costs:
            counts[c.stop_stage] = counts.get(c.stop_stage, 0) + 1
            times.add(c.times)
            if c.usd is not None:
                usd = (usd or 0.0) + c.usd
        return cls(
            requests=len(costs),
            mentor_tokens=sum(c.mentor_tokens for c in costs),
            intern_tokens=sum(c.intern_tokens for c in costs),
            tflops=float(sum(c.tflops for c in costs)),
            stage_counts=counts,
            early_stops=sum(c.stopped_early for c in costs),
            times=times,
            usd=usd,
            scored_stages=sum(c.scored_stages for c in costs),
            mentor_regenerated_tokens=sum(c.mentor_regenerated_tokens for c in costs),
        )

    @classmethod
    def combine(cls, parts: Sequence[RunSummary], num_stages: int) -> RunSummary:
        """One summary of several (the calls of a run, the ranks of a distributed run): totals add
        up, so the combined summary equals ``of`` over all their requests' costs. Field by field, so a
        total added to the summary (or a phase to ``PhaseTimes``) is combined without a change here."""
        total = cls.of([], num_stages)
        for p in parts:
            for f in fields(cls):
                mine, theirs = getattr(total, f.name), getattr(p, f.name)
                if f.name == "stage_counts":
                    for t, c in theirs.items():
                        mine[int(t)] = mine.get(int(t), 0) + c
                elif isinstance(theirs, PhaseTimes):
                    for g in fields(PhaseTimes):
                        setattr(mine, g.name, getattr(mine, g.name) + getattr(theirs, g.name))
                elif theirs is None:
                    continue  # e.g. no $ price: stays None unless a part has one
                else:
                    setattr(total, f.name, (mine or 0) + theirs)
        return total

    def format(self) -> str:
        n = max(self.requests, 1)
        dist = ", ".join(f"stage {t}: {c} ({100 * c / n:.1f}%)" for t, c in sorted(self.stage_counts.items()))
        lines = [
            f"Tandem run: {self.requests} requests, {self.tflops:.3f} TFLOPs "
            f"({self.tflops / n:.4f} per request), mentor tokens {self.mentor_tokens}, "
            f"intern tokens {self.intern_tokens}",
            f"  stop stage: {dist}; stopped by the classifier: {self.early_stops}",
            f"  time (s): mentor generate {self.times.mentor_generate:.2f}, intern score "
            f"{self.times.intern_score:.2f}, classify {self.times.classify:.3f}, intern generate "
            f"{self.times.intern_generate:.2f}",
            f"  latency: {self.mean_latency_s:.3f} s per request (its share of each batched call, summed)",
        ]
        if self.scored_stages:
            lines.append(
                f"  judgment: {self.judgment_s_per_stage:.4f} s per scored stage ({self.scored_stages} "
                f"stages), {100 * (self.judgment_share or 0):.2f}% of the time (features and classifier "
                f"alone {100 * (self.classifier_share or 0):.2f}%)"
            )
        if self.mentor_regenerated_tokens:
            lines.append(
                f"  mentor tokens generated again (an API that cannot continue): "
                f"{self.mentor_regenerated_tokens}, in TFLOPs and $"
            )
        if self.usd is not None:
            lines.append(f"  API cost: ${self.usd:.4f}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["stage_counts"] = {str(k): v for k, v in self.stage_counts.items()}
        d["mean_latency_s"] = self.mean_latency_s
        d["judgment"] = {
            "seconds": self.times.judgment,
            "seconds_per_scored_stage": self.judgment_s_per_stage,
            "share_of_time": self.judgment_share,
            "classifier_share_of_time": self.classifier_share,
        }
        return d
