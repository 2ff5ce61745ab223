"""The two prompts of the cascade: the mentor's (Figure 6 / Appendix D) and the intern's x_t = Q ⊕ I_t.

A task's request arrives as chat messages (``--apply_chat_template``) or as one context string; either
way the question Q is the conversation the task built, and each role renders it with its own chat
template (see backends/rendering.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from .backends.base import Message, Prompt
from .thinking import strip_think_tags

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

    def __post_init__(self) -> None:
        if not self.messages or not any(m.content.strip() for m in self.messages if m.role == "user"):
            raise ValueError("empty prompt: the request has no question text")

    @property
    def system(self) -> str | None:
        return next((m.content for m in self.messages if m.role == "system"), None)

    def dialogue(self) -> tuple[Message, ...]:
        """The conversation without the task's system message (few-shot turns kept)."""
        return tuple(m for m in self.messages if m.role != "system")


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
    """x_t = Q ⊕ I_t: the insights follow the question in the last user turn; I_0 = ∅ is Q alone."""
    messages = list(question.messages)
    if insights:
        last_user = max(i for i, m in enumerate(messages) if m.role == "user")
        content = f"{messages[last_user].content}\n\n{INSIGHTS_HEADER}\n{insights}\n\n{INSIGHTS_FOOTER}"
        messages[last_user] = Message("user", content)
    return Prompt(messages=tuple(messages), thinking=thinking)
