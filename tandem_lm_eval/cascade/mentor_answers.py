"""The mentor answers the question itself: ``mode=mentor_only`` and ``mode=budget_forcing:B``.

No stages, no insights, no intern: the mentor reads the task's own prompt (the question's messages,
not the Figure 6 insight prompt) and answers with the task's stop strings and sampling, up to the
question's ``max_gen_toks``. These rows of a leaderboard carry the same cost ledger as Tandem's
(``RequestCost``): L_L = every token the mentor generated, L_S = 0, and no intern reads them
(``intern_reads_mentor=False``), so TFLOPs = 2e-12 · |θL| · L_L (paper Table 1, the 32B row).

``budget_forcing:B`` (s1, Muennighoff et al. 2025; paper Table 6), for every question in one batch
per phase:

1. The mentor generates at most B tokens, without the task's stop strings (they may occur inside a
   reasoning trace). If it ended by itself (EOS) within B, that is its output.
2. Otherwise, if its text already closed the reasoning (``</think>``), it continues (``prefix``) for
   up to ``max_gen_toks`` more tokens with the task's stop strings; if not, the end of reasoning is
   forced (``GenerationRequest.forced_text``: ``\\n</think>\\n\\n`` after a ``<think>`` trace, else
   ``\\n\\nFinal answer: ``, or ``budget_forcing_close``) and it continues from there the same way.
   Forced tokens are context, not generated: they are not in L_L. An output whose answer part (after
   ``</think>``; all of it when the model does not think in tags) already holds a stop string of the
   task has answered: it is cut there and not continued.

The answer is the mentor's whole output (reasoning, forced text, answer), as the task's scorer reads
any thinking model's output (``<think>reasoning</think>answer``). Every generated token counts in
L_L, those phase 1 wrote past a stop string of the task included (it ran without them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from tandem_lm_eval.backends.base import Backend, BackendError, Generation, GenerationRequest, Prompt
from tandem_lm_eval.cascade.errors import CascadeError
from tandem_lm_eval.cascade.outcomes import CascadeResult
from tandem_lm_eval.cascade.policies.base import StopPolicy
from tandem_lm_eval.cascade.progress import progress_bar
from tandem_lm_eval.cascade.prompts import Question
from tandem_lm_eval.common.thinking import THINK_CLOSE, THINK_OPEN
from tandem_lm_eval.cost import ledger
from tandem_lm_eval.cost.ledger import RequestCost
from tandem_lm_eval.cost.pricing import TokenPrices

logger = logging.getLogger(__name__)


def mentor_answer_prompt(question: Question, thinking: bool | None) -> Prompt:
    """The task's own prompt as the mentor reads it when it answers (no insight instructions)."""
    return Prompt(messages=question.messages, thinking=thinking)


@dataclass
class _Item:
    question: Question
    prompt: Prompt
    prompt_tokens: int
    gen: Generation | None = None
    # the answer when phase 1's text had to be cut at a stop string of the task (else gen.text)
    text: str | None = None
    finish: str | None = None
    cost: RequestCost = field(default_factory=RequestCost)


def answer_with_mentor(
    mentor: Backend | None,
    questions: Sequence[Question],
    policy: StopPolicy,
    *,
    mentor_params: float,
    intern_params: float = 0.0,
    mentor_thinking: bool | None = None,
    mentor_prices: TokenPrices | None = None,
    progress: bool = True,
) -> list[CascadeResult]:
    """One CascadeResult per question (request order), its RequestCost filled and finalized.

    ``policy``: a mentor-answer policy (``policies.mentor``); its ``reasoning_budget`` (None for
    ``mentor_only``) and ``close_text`` drive budget forcing.
    """
    if mentor is None:
        raise CascadeError(f"the {policy.name} policy needs a mentor")
    if not questions:
        return []
    budget = getattr(policy, "reasoning_budget", None)
    phases = 1 if budget is None else 2
    items = []
    for q in questions:
        prompt = mentor_answer_prompt(q, mentor_thinking)
        n = mentor.count_tokens(prompt)
        if n >= mentor.max_context:
            raise BackendError(
                f"the question alone is {n} tokens, as long as the mentor's context of {mentor.max_context}"
            )
        items.append(_Item(q, prompt, n))
    bar = progress_bar(len(items) * phases, progress)
    bar.set_description("Mentor answers")

    def request(it: _Item, max_new: int, stop: tuple[str, ...], prefix=None, forced="") -> GenerationRequest:
        q = it.question
        return GenerationRequest(
            prompt=it.prompt,
            max_new_tokens=max_new,
            prefix=prefix,
            stop=stop,
            temperature=q.temperature,
            top_p=q.top_p,
            seed=q.seed,
            sample=q.sample,
            forced_text=forced,
        )

    # phase 1: the whole answer (mentor_only), or at most B tokens of it without stop strings
    first = []
    for it in items:
        limit = it.question.max_gen_toks if budget is None else budget
        room = mentor.max_context - it.prompt_tokens
        stop = it.question.until if budget is None else ()
        first.append((it, request(it, min(limit, room), stop)))
    _generate(mentor, first, mentor_prices)
    bar.update(len(items))

    if budget is not None:
        second = []
        for it in items:
            gen = it.gen
            assert gen is not None
            start = _answer_start(gen.text)
            at = -1 if start is None else _first_stop(gen.text, it.question.until, start)
            if at != -1:  # already answered: the answer part holds a stop string of the task
                it.text, it.finish = gen.text[:at], "stop"
                continue
            if gen.finished:  # ended by itself within B
                continue
            # the reasoning closed but was cut: continue it; else force its end, then continue
            forced = "" if THINK_CLOSE in gen.text else policy.close_text(gen.text)  # type: ignore[attr-defined]
            # forced text is at most one token per byte (byte-level tokenizers)
            room = mentor.max_context - it.prompt_tokens - len(gen.token_ids) - len(forced.encode("utf-8"))
            max_new = min(it.question.max_gen_toks, room)
            if max_new <= 0:
                logger.warning(
                    "budget forcing: no room left in the mentor's context (%d tokens) for an answer",
                    mentor.max_context,
                )
                continue
            second.append((it, request(it, max_new, it.question.until, prefix=gen, forced=forced)))
        if second:
            _generate(mentor, second, mentor_prices)
        bar.update(len(items))

    results = []
    for it in items:
        gen = it.gen
        assert gen is not None
        text = it.text if it.text is not None else gen.text
        finish = it.finish or gen.finish_reason
        cost = it.cost
        cost.intern_tokens = 0
        cost.intern_reads_mentor = False
        cost.stop_stage = 0
        cost.stopped_early = False
        cost.censored = finish == "length"
        cost.finalize(mentor_params, intern_params)
        results.append(CascadeResult(text, cost, [], finish, gen))
    bar.update(bar.total - bar.n)
    bar.close()
    return results


def _generate(
    mentor: Backend, batch: list[tuple[_Item, GenerationRequest]], prices: TokenPrices | None
) -> None:
    """One batched mentor call; each item's generation replaced, its cost and time added."""
    t0 = ledger.clock()
    gens = mentor.generate([req for _, req in batch])
    shares = ledger.call_seconds(ledger.clock() - t0, len(batch), getattr(mentor, "last_seconds", None))
    for (it, req), gen, share in zip(batch, gens, shares):
        if gen.new_tokens > req.max_new_tokens or gen.new_tokens < 0:
            raise BackendError(
                f"mentor backend returned {gen.new_tokens} new tokens for a budget of {req.max_new_tokens}"
            )
        it.gen = gen
        it.cost.mentor_tokens += gen.new_tokens  # L_L: generated tokens only, never forced ones
        it.cost.times.mentor_generate += share
        it.cost.add_mentor_call(
            prices,
            new_tokens=gen.new_tokens,
            regenerated_tokens=gen.regenerated_tokens,
            prompt_tokens=gen.prompt_tokens,
            cached_prompt_tokens=gen.cached_prompt_tokens,
        )


def _answer_start(text: str) -> int | None:
    """Where the answer part of an output starts: after the last ``</think>``; 0 for an output that
    does not think in tags; None for a reasoning trace that has not closed (no answer yet)."""
    close = text.rfind(THINK_CLOSE)
    if close != -1:
        return close + len(THINK_CLOSE)
    return None if text.lstrip().startswith(THINK_OPEN) else 0


def _first_stop(text: str, stops: Sequence[str], start: int) -> int:
    """Position of the first stop string in ``text[start:]``, or -1."""
    hits = [at for at in (text.find(s, start) for s in stops if s) if at != -1]
    return min(hits) if hits else -1
