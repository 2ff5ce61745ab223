"""The two prompts of the cascade: the mentor's (Figure 6 / Appendix D) and the intern's x_t = Q ⊕ I_t.

A task's request arrives as chat messages (``--apply_chat_template``) or as one context string; either
way the question Q is the conversation the task built, and each role renders it with its own chat
template (see backends/rendering.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tandem_lm_eval.backends.base import Message, Prompt, Segment
from tandem_lm_eval.cascade.errors import CascadeError
from tandem_lm_eval.common.question_content import question_key
from tandem_lm_eval.common.question_hash import question_hash
from tandem_lm_eval.common.thinking import strip_think_tags
from tandem_lm_eval.judgment.features import INSIGHTS, QUESTION

# Figure 6 of the paper, as the mentor's system prompt.
MENTOR_SYSTEM_PROMPT = """You are a reasoning assistant. Analyze the given problem and follow the structured [Thinking Insights] below.

[Thinking Insights]
1. Goal: <objective, constraints, and required output form>
2. Planning: <high-level strategy; subproblem decomposition; edge cases>
3. Retrieval: <relevant facts, formulas, or definitions; N/A if none>
4. Action: <concrete steps and intermediate calculations>

CONSTRAINTS
- Keep each component concise.
- Maintain notational consistency with the original problem."""

# Marks a context that TandemLM.apply_chat_template serialized, so the messages can be rebuilt.
CHAT_SENTINEL = "\x00tandem-chat\x00"

INSIGHTS_HEADER = "[Thinking Insights]"
INSIGHTS_FOOTER = "Use these insights from a mentor to answer the question above."


@dataclass(frozen=True)
class Question:
    """One request's question Q: the conversation the task built, plus its generation settings."""

    messages: tuple[Message, ...]
    until: tuple[str, ...] = ()
    max_gen_toks: int = 8192
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    # Which of a request's ``repeats`` samples this is (0 for the first): with sampling, k repeats are k
    # draws, so the run store keys each one apart instead of serving the first k times.
    sample: int = 0
    # The request's group (task name or a document field, see classifier.group_of): picks the
    # member of a per-group classifier.
    group: str | None = None

    def __post_init__(self) -> None:
        if not self.messages or not any(m.content.strip() for m in self.messages if m.role == "user"):
            raise CascadeError("empty prompt: the request has no question text")

    @property
    def system(self) -> str | None:
        return next((m.content for m in self.messages if m.role == "system"), None)

    def dialogue(self) -> tuple[Message, ...]:
        """The conversation without the task's system message (few-shot turns kept)."""
        return tuple(m for m in self.messages if m.role != "system")

    @property
    def key(self) -> str:
        """``question_hash`` of this question's dialogue."""
        return question_hash(self.dialogue())

    def content_key(self, doc=None) -> str | None:
        """The key of this question's content (common/question_content.py): its task document's
        question text, else its last user turn, however the task rendered it."""
        last_user = next((m.content for m in reversed(self.messages) if m.role == "user"), None)
        return question_key(doc, last_user)


def serialize_chat(chat_history: list[dict[str, str]]) -> str:
    """lm-eval's chat history as one context string that ``question_from_request`` turns back into
    messages: each role renders the conversation with its own chat template later."""
    return CHAT_SENTINEL + json.dumps([{"role": m["role"], "content": m["content"]} for m in chat_history])


def question_from_request(
    context: str, gen_kwargs: dict | None, default_max_gen_toks: int, group: str | None = None
) -> Question:
    """A ``Question`` from an lm-eval generation request's ``(context, gen_kwargs)``."""
    from tandem_lm_eval.backends.base import Message as _Message

    gen_kwargs = dict(gen_kwargs or {})
    until = gen_kwargs.pop("until", None) or ()
    if isinstance(until, str):
        until = (until,)
    try:  # lm-eval's gen_kwargs, as the task or --gen_kwargs gave them
        max_gen = int(gen_kwargs.pop("max_gen_toks", default_max_gen_toks))
        do_sample = bool(gen_kwargs.pop("do_sample", False))
        temperature = float(gen_kwargs.pop("temperature", 0.0) or 0.0)
        top_p = float(gen_kwargs.pop("top_p", 1.0) or 1.0)
    except (TypeError, ValueError) as exc:
        raise CascadeError(f"gen_kwargs: {exc}") from None
    if not do_sample:
        temperature = 0.0
    seed = gen_kwargs.pop("seed", None)
    if context.startswith(CHAT_SENTINEL):
        messages = tuple(_Message(m["role"], m["content"]) for m in json.loads(context[len(CHAT_SENTINEL) :]))
    else:
        if not context.strip():
            raise CascadeError("empty prompt")
        messages = (_Message("user", context),)
    return Question(
        messages=messages,
        until=tuple(u for u in until if u),
        max_gen_toks=max_gen,
        temperature=temperature,
        top_p=top_p,
        seed=int(seed) if seed is not None else None,
        group=group,
    )


def mentor_prompt(question: Question, thinking: bool | None) -> Prompt:
    """Figure 6 as the system message; the task's own system text, if any, is kept after it."""
    system = MENTOR_SYSTEM_PROMPT
    if question.system:
        system = f"{system}\n\n{question.system}"
    return Prompt(messages=(Message("system", system), *question.dialogue()), thinking=thinking)


def insights_text(mentor_output: str) -> str:
    """The insight text I_t handed to the intern: the mentor's output without think tags."""
    return strip_think_tags(mentor_output)


def intern_prompt(question: Question, insights: str, thinking: bool | None) -> Prompt:
    """x_t = Q ⊕ I_t: the insights follow the question in the last user turn; I_0 = ∅ is Q alone.

    Segments mark Q (the content of every non-system turn the task wrote) and I_t (the insight text,
    without the header and footer that introduce it), so the intern's features can be computed over
    Q ⊕ I_t as Eq. 6 defines x_t, not over the chat template and our own wording around them.
    """
    messages = list(question.messages)
    segments = [Segment(QUESTION, i, 0, len(m.content)) for i, m in enumerate(messages) if m.role != "system"]
    if insights:
        last_user = max(i for i, m in enumerate(messages) if m.role == "user")
        head = f"{messages[last_user].content}\n\n{INSIGHTS_HEADER}\n"
        content = f"{head}{insights}\n\n{INSIGHTS_FOOTER}"
        messages[last_user] = Message("user", content)
        segments.append(Segment(INSIGHTS, last_user, len(head), len(head) + len(insights)))
    return Prompt(messages=tuple(messages), thinking=thinking, segments=tuple(segments))
