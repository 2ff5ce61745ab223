"""The Tandem cascade (section 2): stages of mentor insight, intern judgment, intern answer.

All questions of a call move through the stages together, one batched backend call per phase:

    stage 0:  intern scores x_0 = Q                      -> s_0 -> stop?
    stage t:  mentor continues its generation to budget B_t (never restarts; finished mentors stop)
              intern scores x_t = Q ⊕ I_t                -> s_t -> stop?
    answer:   intern generates from x_t* (t* = first s_t > τ_t, else argmax s_t)

The policy (cascade/policies/) decides when to stop; the classifier only runs for policies that need scores.
A per-group classifier gives each request the member (and thresholds) of its group. Features are
computed over the span the classifier reads; over every span the backend could locate
(features.FEATURE_SPANS) only when someone records them (``all_feature_spans``: a trace, and
``explore`` for collect), since the others were ~80% of the cascade's own CPU. Backends are used only through the
Backend interface: no engine-specific code here.

Time: each phase is one batched call; its wall time is shared equally by the requests in it and
added to each request's ``RequestCost.times`` and to the stage's own ``StageRecord.times``
(cost/ledger.py); an output a run store served brings the seconds it took when computed
(``ledger.call_seconds``). Features over spans the classifier does not read, computed only to be
recorded (a trace, ``explore``), are outside every phase: a run that records none computes none. ``explore`` answers every stage of the chunk in one call, or, with
``answers_by_stage``, one call per stage, as a live run answers (so the recorded answer times are
shares of calls of the same size as a live run's).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tandem_lm_eval.backends.base import (
    Backend,
    BackendError,
    Generation,
    GenerationRequest,
    HiddenRequest,
    Prompt,
)
from tandem_lm_eval.cascade.errors import CascadeError
from tandem_lm_eval.cascade.outcomes import CascadeResult, Exploration, StageOutcome, StageRecord
from tandem_lm_eval.cascade.policies.base import StopPolicy
from tandem_lm_eval.cascade.progress import progress_bar
from tandem_lm_eval.cascade.prompts import Question, insights_text, intern_prompt, mentor_prompt
from tandem_lm_eval.cascade.roles import Role
from tandem_lm_eval.cost import ledger
from tandem_lm_eval.cost.ledger import RequestCost
from tandem_lm_eval.judgment.features import DEFAULT_SPAN, FEATURE_SPANS, features_of
from tandem_lm_eval.judgment.judges import JudgeError, judge_input, needs_statistics
from tandem_lm_eval.store.stored_backend import StoredBackend

logger = logging.getLogger(__name__)

# Smallest answer room a stage prompt must leave in the intern's context to be usable.
MIN_ANSWER_TOKENS = 16


@dataclass
class _State:
    question: Question
    mentor: Generation | None = None
    stages: list[StageRecord] = field(default_factory=list)
    prompts: list[Prompt] = field(default_factory=list)  # x_t per stage
    chosen: int | None = None
    early: bool = False
    cost: RequestCost = field(default_factory=RequestCost)
    mentor_call: Generation | None = None  # the mentor call of the current stage (its record's tokens)

    @property
    def scores(self) -> list[float]:
        return [s.score if (s.score is not None and s.usable) else -1.0 for s in self.stages]


class Cascade:
    #: ``answer_key(question, text)``: an answer's key for a policy that compares answers (``agreement``):
    #: the request's task's filters (harness/answer_keys.py); None: the stripped text
    answer_key = None

    def __init__(
        self,
        mentor: Role | Backend | None,
        intern: Role | Backend,
        policy: StopPolicy,
        budgets: Sequence[int],
        classifier=None,
        *,
        progress: bool = True,
        group_policies: dict[str, StopPolicy] | None = None,
        all_feature_spans: bool = False,
        hidden: HiddenRequest | None = None,
    ) -> None:
        """``mentor``, ``intern``: the two roles (``Role``: engine, |θ|, thinking, prices; a bare
        engine is a role with none of them); ``classifier``: a classifier (``sufficiency(X)``) or a
        ``GroupedClassifier`` (``for_group``); ``group_policies``: the stop policy of each group
        (thresholds differ per group), ``policy`` for every other request; ``hidden``: the intern's
        hidden vectors to read in the scoring pass (a hidden-state judge's, or a collect's)."""
        mentor_role, intern_role = Role.of(mentor), Role.of(intern)
        mentor, intern = mentor_role.backend, intern_role.backend
        budgets = tuple(int(b) for b in budgets)
        if any(b <= 0 for b in budgets) or any(b2 <= b1 for b1, b2 in zip(budgets, budgets[1:])):
            raise CascadeError(f"stage budgets must be positive and increasing (cumulative), got {budgets}")
        self.num_stages = len(budgets) + 1
        self.last_stage = policy.last_stage(self.num_stages)
        if (self.last_stage > 0 or policy.answerer == "mentor" or policy.routes_to_mentor) and mentor is None:
            raise CascadeError(f"the {policy.name} policy needs a mentor")
        if policy.needs_scores and classifier is None:
            raise CascadeError(f"the {policy.name} policy needs a sufficiency classifier")
        self.mentor, self.intern, self.policy, self.classifier = mentor, intern, policy, classifier
        self.group_policies = dict(group_policies or {})
        card = classifier.card if classifier is not None else None
        self.feature_span = card.feature_span if card is not None else DEFAULT_SPAN
        self.judge = card.spec if card is not None else None  # what the classifier reads (judges.py)
        if self.judge is not None and self.judge.hidden is not None and hidden is None:
            raise CascadeError(f"the classifier reads hidden vectors ({self.judge.hidden.key}): give hidden=")
        self.hidden = hidden
        self.budgets = budgets
        self.mentor_params, self.intern_params = float(mentor_role.params), float(intern_role.params)
        self.mentor_thinking, self.intern_thinking = mentor_role.thinking, intern_role.thinking
        self.progress = progress
        self.mentor_prices, self.intern_prices = mentor_role.prices, intern_role.prices
        # features over every span (for records), or only over the classifier's (the run needs no more)
        self.all_feature_spans = all_feature_spans
        for backend in (mentor, intern):  # a run store times the calls it sends on with the phase clock
            if isinstance(backend, StoredBackend):
                backend.clock = _phase_clock

    # ------------------------------------------------------------------------------------------------
    def run(self, questions: Sequence[Question]) -> list[CascadeResult]:
        if self.policy.answerer == "mentor":  # mentor_only, budget_forcing: no stages, no intern
            from tandem_lm_eval.cascade.mentor_answers import answer_with_mentor

            return answer_with_mentor(
                self.mentor,
                questions,
                self.policy,
                mentor_params=self.mentor_params,
                intern_params=self.intern_params,
                mentor_thinking=self.mentor_thinking,
                mentor_prices=self.mentor_prices,
                progress=self.progress,
            )
        states = [_State(q) for q in questions]
        if not states:
            return []
        if self.policy.answers_each_stage:  # agreement: an answer at every stage visited
            return self._run_answering(states)
        if self.policy.routes_to_mentor:  # router: the intern alone or the mentor alone
            return self._run_routing(states)
        bar = progress_bar(len(states) * (self.last_stage + 2), self.progress)
        active = list(range(len(states)))
        for stage in range(self.last_stage + 1):
            mentor_seconds = self._mentor_stage(states, active, stage) if stage > 0 else {}
            self._add_stage_prompts(states, active, stage, mentor_seconds)
            if self.policy.scores_stage(stage):
                self._score_stage(states, active, stage)
            still = []
            for i in active:
                st = states[i]
                if st.stages[stage].usable and self._policy(st).stop_after(stage, st.scores):
                    st.chosen, st.early = stage, self.policy.needs_scores  # a classifier decision
                else:
                    still.append(i)
            bar.update(len(active))
            active = still
            if not active:
                break
        for i in active:
            st = states[i]
            st.chosen = self._policy(st).final_stage(st.scores, self.num_stages)
            if not st.stages[st.chosen].usable:  # e.g. fixed:k whose prompt does not fit: last usable stage
                st.chosen = max(s.stage for s in st.stages if s.usable)
        results = self._answer(states)
        bar.update(len(states) * (self.last_stage + 2) - bar.n)
        bar.close()
        return results

    def explore(self, questions: Sequence[Question], answers_by_stage: bool = False) -> list[Exploration]:
        """Every stage of every question: features of x_t and the intern's answer from x_t.

        This is how classifier training data is made (section 3.1: a stage is labelled sufficient
        when the intern answers correctly from it). The mentor runs through all stages once,
        continuing between stages; the intern scores and answers each distinct x_t once: in one
        batched call for every stage (the fastest on a batching engine), or with
        ``answers_by_stage`` one call per stage (each answer's time is then a share of a call as
        large as a live run's answer call, which a replayed latency needs).
        """
        states = [_State(q) for q in questions]
        if not states:
            return []
        active = list(range(len(states)))
        bar = progress_bar(len(states) * (self.num_stages + 1), self.progress)
        for stage in range(self.num_stages):
            mentor_seconds = self._mentor_stage(states, active, stage) if stage > 0 else {}
            self._add_stage_prompts(states, active, stage, mentor_seconds)
            self._score_stage(states, active, stage, all_spans=True)  # collect records every span
            bar.update(len(states))
        pairs = [
            (i, t)
            for i, st in enumerate(states)
            for t in range(self.num_stages)
            if st.stages[t].usable and not _same_as_previous(st, t)
        ]
        calls = (
            [[p for p in pairs if p[1] == t] for t in range(self.num_stages)] if answers_by_stage else [pairs]
        )
        answers: dict[tuple[int, int], tuple[Generation, float]] = {}
        for call in calls:
            if not call:
                continue
            t0 = ledger.clock()
            gens = self.intern.generate([self._answer_request(states[i], t) for i, t in call])
            seconds = _call_seconds(self.intern, t0, len(call))
            answers.update({pair: (gen, sec) for pair, gen, sec in zip(call, gens, seconds)})
        bar.update(len(states))
        bar.close()
        out = []
        for i, st in enumerate(states):
            rows, last = [], None
            for t, rec in enumerate(st.stages):
                # a stage that adds nothing reuses the previous answer, and its time: a live run
                # stopping there would generate that same answer
                answered = answers.get((i, t), last if rec.usable else None)
                last = answered if rec.usable else last
                gen = None
                if answered is not None:
                    gen, rec.times.intern_generate = answered
                rows.append(
                    StageOutcome(
                        record=rec,
                        answer=gen.text if gen is not None else None,
                        intern_tokens=gen.new_tokens if gen is not None else 0,
                        finish_reason=gen.finish_reason if gen is not None else None,
                    )
                )
            out.append(Exploration(rows, st.mentor))
        return out

    def _run_answering(self, states: list[_State]) -> list[CascadeResult]:
        """A policy that reads the intern's answers (``agreement``): at each stage the mentor continues,
        the intern answers from x_t (one batched call per stage; a stage that adds no insight reuses
        the previous answer, as ``explore`` does), and the policy decides from the answers' keys
        (``answer_key``: the task's filters). The returned answer is the chosen stage's: no answer is
        generated twice; every generated one is in the cost."""
        bar = progress_bar(len(states) * (self.last_stage + 1), self.progress)
        key_of = self.answer_key or (lambda question, text: text.strip())
        answers: list[list[Generation | None]] = [[] for _ in states]
        keys: list[list[str | None]] = [[] for _ in states]
        active = list(range(len(states)))
        for stage in range(self.last_stage + 1):
            mentor_seconds = self._mentor_stage(states, active, stage) if stage > 0 else {}
            self._add_stage_prompts(states, active, stage, mentor_seconds)
            todo = [
                i
                for i in active
                if states[i].stages[stage].usable and not _same_as_previous(states[i], stage)
            ]
            if todo:
                t0 = ledger.clock()
                gens = self.intern.generate([self._answer_request(states[i], stage) for i in todo])
                shares = _call_seconds(self.intern, t0, len(todo))
                for i, gen, share in zip(todo, gens, shares):
                    st = states[i]
                    st.cost.intern_tokens += gen.new_tokens
                    st.cost.bill(self.intern_prices, gen.prompt_tokens or 0, gen.new_tokens)
                    st.cost.add_intern_answer_call(
                        prompt_tokens=gen.prompt_tokens, cached_prompt_tokens=gen.cached_prompt_tokens
                    )
                    st.cost.times.intern_generate += share
                    st.stages[stage].times.intern_generate = share
            done = dict(zip(todo, gens)) if todo else {}
            still = []
            for i in active:
                st = states[i]
                if i in done:
                    gen = done[i]
                    answers[i].append(gen)
                    keys[i].append(key_of(st.question, gen.text))
                elif st.stages[stage].usable and stage > 0:  # same x_t as before: the same answer
                    answers[i].append(answers[i][-1])
                    keys[i].append(keys[i][-1])
                else:
                    answers[i].append(None)
                    keys[i].append(None)
                if self.policy.stop_on_answers(stage, keys[i]):
                    st.chosen, st.early = stage, True
                else:
                    still.append(i)
            bar.update(len(active))
            active = still
            if not active:
                break
        results = []
        for i, st in enumerate(states):
            if st.chosen is None:  # no agreement: the last stage that has an answer
                st.chosen = max(t for t, gen in enumerate(answers[i]) if gen is not None)
            gen = answers[i][st.chosen]
            cost = st.cost
            cost.intern_discarded_tokens = cost.intern_tokens - gen.new_tokens
            cost.censored = gen.finish_reason == "length"
            cost.stop_stage, cost.stopped_early = st.chosen, st.early
            cost.finalize(self.mentor_params, self.intern_params)
            results.append(CascadeResult(gen.text, cost, st.stages, gen.finish_reason, st.mentor))
        bar.update(bar.total - bar.n)
        bar.close()
        return results

    def _run_routing(self, states: list[_State]) -> list[CascadeResult]:
        """A policy that sends each question to the intern alone or to the mentor alone (``router``):
        the intern reads the question (its scoring pass over x_0, the judgment), the policy decides,
        the intern answers its questions from stage 0 and the mentor answers the others itself
        (``mentor_answers.py``, as ``mode=mentor_only``); the reading is in both costs."""
        from tandem_lm_eval.cascade.mentor_answers import answer_with_mentor
        from tandem_lm_eval.cascade.policies.mentor import MentorOnlyPolicy

        everyone = list(range(len(states)))
        self._add_stage_prompts(states, everyone, 0, {})
        self._score_stage(states, everyone, 0)
        to_intern = [i for i in everyone if self._policy(states[i]).intern_answers(states[i].scores)]
        to_mentor = [i for i in everyone if i not in set(to_intern)]
        for i in to_intern:
            states[i].chosen, states[i].early = 0, True
        results: list[CascadeResult | None] = [None] * len(states)
        for i, res in zip(to_intern, self._answer([states[i] for i in to_intern]) if to_intern else []):
            results[i] = res
        answered = (
            answer_with_mentor(
                self.mentor,
                [states[i].question for i in to_mentor],
                MentorOnlyPolicy(),
                mentor_params=self.mentor_params,
                intern_params=self.intern_params,
                mentor_thinking=self.mentor_thinking,
                mentor_prices=self.mentor_prices,
                progress=False,
            )
            if to_mentor
            else []
        )
        for i, res in zip(to_mentor, answered):
            reading, cost = states[i].cost, res.cost  # the intern's reading of the question joins the cost
            cost.intern_scored_tokens += reading.intern_scored_tokens
            cost.scored_stages += reading.scored_stages
            cost.times.intern_score += reading.times.intern_score
            cost.times.classify += reading.times.classify
            cost.stage_scores = [s.score for s in states[i].stages if s.score is not None]
            if reading.usd is not None:
                cost.usd = (cost.usd or 0.0) + reading.usd
            cost.finalize(self.mentor_params, self.intern_params)
            results[i] = CascadeResult(
                res.answer, cost, states[i].stages, res.answer_finish_reason, res.mentor
            )
        return results  # type: ignore[return-value]

    def _policy(self, st: _State) -> StopPolicy:
        return self.group_policies.get(st.question.group, self.policy) if self.group_policies else self.policy

    # --- phases -------------------------------------------------------------------------------------
    def _mentor_stage(self, states: list[_State], active: list[int], stage: int) -> dict[int, float]:
        """Continue the mentor of every active question to this stage's budget; returns each
        question's share of the call's time (none for a mentor that had already finished)."""
        budget = self.budgets[stage - 1]
        seconds: dict[int, float] = {}
        todo = []
        for i in active:
            st = states[i]
            st.mentor_call = None
            if st.mentor is not None and st.mentor.finished:
                continue  # the mentor already ended its insights: I_t = I_{t-1}, nothing to generate
            done = len(st.mentor.token_ids) if st.mentor else 0
            todo.append((i, budget - done))
        if todo:
            requests = [
                GenerationRequest(
                    prompt=mentor_prompt(states[i].question, self.mentor_thinking),
                    max_new_tokens=n_new,
                    prefix=states[i].mentor,
                    insights=True,
                )
                for i, n_new in todo
            ]
            t0 = ledger.clock()
            gens = self.mentor.generate(requests)
            shares = _call_seconds(self.mentor, t0, len(todo))
            for (i, n_new), gen, share in zip(todo, gens, shares):
                st = states[i]
                before = len(st.mentor.token_ids) if st.mentor else 0
                if len(gen.token_ids) - before != gen.new_tokens or gen.new_tokens > n_new:
                    raise BackendError(
                        f"mentor backend returned {gen.new_tokens} new tokens for a budget of {n_new} "
                        f"(had {before}, now {len(gen.token_ids)})"
                    )
                st.mentor = gen
                st.cost.times.mentor_generate += share
                seconds[i] = share
                st.mentor_call = gen
                st.cost.add_mentor_call(
                    self.mentor_prices,
                    new_tokens=gen.new_tokens,
                    regenerated_tokens=gen.regenerated_tokens,
                    prompt_tokens=gen.prompt_tokens,
                    cached_prompt_tokens=gen.cached_prompt_tokens,
                )
        for i in active:
            st = states[i]
            st.cost.mentor_tokens = len(st.mentor.token_ids) if st.mentor else 0
        return seconds

    def _add_stage_prompts(
        self, states: list[_State], active: list[int], stage: int, mentor_seconds: dict[int, float]
    ) -> None:
        for i in active:
            st = states[i]
            insights = insights_text(st.mentor.text) if (stage > 0 and st.mentor) else ""
            prompt = intern_prompt(st.question, insights, self.intern_thinking)
            n = self.intern.count_tokens(prompt)
            usable = n + MIN_ANSWER_TOKENS <= self.intern.max_context
            if not usable:
                if stage == 0:
                    raise BackendError(
                        f"the question alone is {n} tokens, longer than the intern's context of "
                        f"{self.intern.max_context} tokens (minus {MIN_ANSWER_TOKENS} for the answer)"
                    )
                logger.warning(
                    "stage %d prompt of %d tokens does not fit the intern's context (%d): stage skipped",
                    stage,
                    n,
                    self.intern.max_context,
                )
            record = StageRecord(
                stage, st.cost.mentor_tokens if stage else 0, insights, None, usable, prompt_tokens=n
            )
            record.times.mentor_generate = mentor_seconds.get(i, 0.0)
            call = st.mentor_call if stage > 0 else None
            if call is not None:
                record.mentor_prompt_tokens = call.prompt_tokens or 0
                record.mentor_cached_tokens = call.cached_prompt_tokens or 0
                record.mentor_regenerated_tokens = call.regenerated_tokens
            st.stages.append(record)
            st.prompts.append(prompt)

    def _score_stage(
        self, states: list[_State], active: list[int], stage: int, all_spans: bool = False
    ) -> None:
        todo = []
        for i in active:
            st = states[i]
            rec = st.stages[stage]
            if not rec.usable:
                continue
            if _same_as_previous(st, stage):
                # same x_t as before: same features, same s_t
                prev = st.stages[stage - 1]
                rec.score, rec.features = prev.score, prev.features
                rec.features_by_span, rec.spans = prev.features_by_span, prev.spans
                rec.hidden, rec.judge_input = prev.hidden, prev.judge_input
                continue
            todo.append(i)
        if not todo:
            return
        t0 = ledger.clock()
        prompts = [states[i].prompts[stage] for i in todo]
        scores = (
            self.intern.score(prompts) if self.hidden is None else self.intern.score(prompts, self.hidden)
        )
        score_seconds = _call_seconds(self.intern, t0, len(todo))
        t1 = ledger.clock()
        reads_statistics = self.judge is None or needs_statistics(self.judge.feature_set)
        for i, sc in zip(todo, scores):
            rec = states[i].stages[stage]
            rec.spans = sc.spans
            rec.features_by_span = _features_by_span(sc, (self.feature_span,))  # what the judgment reads
            rec.hidden = dict(sc.hidden or {})
            if reads_statistics and self.feature_span not in rec.features_by_span:
                raise BackendError(
                    f"the classifier reads features over span {self.feature_span!r}, which the intern "
                    f"backend {self.intern.name!r} could not locate (no token spans of Q and I_t)"
                )
            rec.features = rec.features_by_span.get(self.feature_span)
            rec.judge_input = rec.features
            if self.judge is not None and self.judge.hidden is not None:
                try:
                    rec.judge_input = judge_input(self.judge, rec.features, rec.hidden)
                except JudgeError as exc:
                    raise BackendError(f"intern backend {self.intern.name!r}: {exc}") from None
        if self.classifier is not None:
            X = np.stack([states[i].stages[stage].judge_input for i in todo])
            groups = [states[i].question.group for i in todo]
            s = self.classifier.sufficiency(X, groups)  # a per-group classifier judges by group
            for i, value in zip(todo, s):
                states[i].stages[stage].score = float(value)
        t2 = ledger.clock()
        if all_spans or self.all_feature_spans:  # the other spans, for the records only: untimed
            for i, sc in zip(todo, scores):
                rec = states[i].stages[stage]
                rec.features_by_span = _features_by_span(sc, None, rec.features_by_span)
        for i, sc, scored in zip(todo, scores, score_seconds):
            st = states[i]
            st.cost.intern_scored_tokens += sc.num_tokens
            st.cost.scored_stages += 1
            st.cost.bill(self.intern_prices, sc.num_tokens, 0)
            times = st.stages[stage].times
            times.intern_score, times.classify = scored, (t2 - t1) / len(todo)
            st.cost.times.intern_score += times.intern_score
            st.cost.times.classify += times.classify

    def _answer_request(self, st: _State, stage: int) -> GenerationRequest:
        prompt = st.prompts[stage]
        room = self.intern.max_context - self.intern.count_tokens(prompt)
        max_new = min(st.question.max_gen_toks, room)
        if max_new < st.question.max_gen_toks:
            logger.info(
                "answer capped at %d tokens (asked %d): the intern's context is %d tokens",
                max_new,
                st.question.max_gen_toks,
                self.intern.max_context,
            )
        return GenerationRequest(
            prompt=prompt,
            max_new_tokens=max_new,
            stop=st.question.until,
            temperature=st.question.temperature,
            top_p=st.question.top_p,
            seed=st.question.seed,
            sample=st.question.sample,
        )

    def _answer(self, states: list[_State]) -> list[CascadeResult]:
        requests = [self._answer_request(st, st.chosen) for st in states]
        t0 = ledger.clock()
        gens = self.intern.generate(requests)
        shares = _call_seconds(self.intern, t0, len(states))
        results = []
        for st, gen, share in zip(states, gens, shares):
            cost = st.cost
            cost.intern_tokens = gen.new_tokens
            cost.bill(self.intern_prices, gen.prompt_tokens or 0, gen.new_tokens)
            cost.add_intern_answer_call(
                prompt_tokens=gen.prompt_tokens, cached_prompt_tokens=gen.cached_prompt_tokens
            )
            cost.censored = gen.finish_reason == "length"
            cost.stop_stage = st.chosen
            cost.stopped_early = st.early
            cost.stage_scores = [s.score for s in st.stages if s.score is not None]
            cost.times.intern_generate += share
            st.stages[st.chosen].times.intern_generate = share
            cost.finalize(self.mentor_params, self.intern_params)
            results.append(CascadeResult(gen.text, cost, st.stages, gen.finish_reason, st.mentor))
        return results


def _features_by_span(
    scores, wanted: Sequence[str] | None = None, have: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """f_t over each span of ``wanted`` (None: every span) that this prompt's scores allow (``prompt``
    always; the others need spans), in FEATURE_SPANS order; spans in ``have`` are not computed again."""
    spans = FEATURE_SPANS if scores.spans is not None else ("prompt",)
    have = have or {}
    return {
        span: have[span] if span in have else features_of(scores, span)
        for span in spans
        if wanted is None or span in wanted
    }


def _phase_clock() -> float:
    return ledger.clock()  # looked up at each call: the clock a test puts in place is the one used


def _call_seconds(backend, t0: float, n: int) -> list[float]:
    """Each of a batched call's ``n`` requests' seconds, the call having started at ``t0``."""
    return ledger.call_seconds(ledger.clock() - t0, n, getattr(backend, "last_seconds", None))


def _same_as_previous(st: _State, stage: int) -> bool:
    """Stage ``stage`` adds nothing to the previous one (the mentor had already finished)."""
    return (
        stage > 0
        and st.stages[stage].insights == st.stages[stage - 1].insights
        and st.stages[stage - 1].usable
    )
