"""The one small interface every backend implements, for either role.

The mentor *generates* (and continues its own generation from stage to stage); the intern *scores*
prompts (exact log-probability of each prompt token plus the entropy of each predictive
distribution) and then *generates* the final answer. vLLM, transformers and OpenAI-compatible
servers all sit behind this interface, so the cascade never branches on the backend.

Prompts are chat conversations (or raw text for models without a chat template): each backend
renders them with its own tokenizer and chat template, because mentor and intern are usually
different model families. A continuation carries the tokens a backend produced before, so a stage
never regenerates them: local backends resubmit ``prompt ids + previous output ids`` (a prefix
cache hit), servers resend the previous text.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tandem_lm_eval.common.errors import TandemError
from tandem_lm_eval.common.hidden_keys import hidden_key

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length"]


class BackendError(TandemError, RuntimeError):
    """A backend could not do what was asked (bad model path, server error after retries, ...)."""


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Segment:
    """A named piece of a prompt's text: characters ``[start, end)`` of message ``message``'s content
    (``message=-1``: of ``raw_text``). The intern's features are computed over the tokens of the
    ``question`` and ``insights`` segments (x_t = Q ⊕ I_t), not over the chat template around them."""

    name: str
    message: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"segment {self.name!r}: bad character range [{self.start}, {self.end})")


@dataclass(frozen=True)
class Prompt:
    """What a model reads: a chat conversation, rendered by the backend's chat template.

    ``raw_text`` bypasses the chat template (base models, or a context the task already rendered).
    ``thinking`` switches a reasoning model's thinking mode where the template supports it
    (Qwen3 ``enable_thinking``); ``None`` leaves the template's default. ``segments`` name pieces
    of the text whose token spans ``Backend.score`` reports (``PromptScores.spans``).
    """

    messages: tuple[Message, ...] = ()
    raw_text: str | None = None
    thinking: bool | None = None
    segments: tuple[Segment, ...] = ()

    def __post_init__(self) -> None:
        if (self.raw_text is None) == (not self.messages):
            raise ValueError("a Prompt needs either messages or raw_text, not both or neither")
        for seg in self.segments:
            text = self.segment_source(seg)
            if seg.end > len(text):
                raise ValueError(
                    f"segment {seg.name!r} ends at character {seg.end}, its text has {len(text)} characters"
                )

    def segment_source(self, seg: Segment) -> str:
        """The text a segment's character offsets refer to."""
        if seg.message == -1:
            if self.raw_text is None:
                raise ValueError(f"segment {seg.name!r} refers to raw_text, the prompt has messages")
            return self.raw_text
        if not 0 <= seg.message < len(self.messages):
            raise ValueError(f"segment {seg.name!r} refers to message {seg.message} of {len(self.messages)}")
        return self.messages[seg.message].content

    def without(self, seg: Segment, replacement: str = "") -> Prompt:
        """The same prompt with the segment's characters replaced (default: removed), no segments."""
        text = self.segment_source(seg)
        cut = text[: seg.start] + replacement + text[seg.end :]
        if seg.message == -1:
            return Prompt(raw_text=cut, thinking=self.thinking)
        messages = list(self.messages)
        messages[seg.message] = Message(messages[seg.message].role, cut)
        return Prompt(messages=tuple(messages), thinking=self.thinking)

    @classmethod
    def chat(cls, *messages: tuple[Role, str], thinking: bool | None = None) -> Prompt:
        return cls(messages=tuple(Message(r, c) for r, c in messages), thinking=thinking)


@dataclass(frozen=True)
class Generation:
    """Everything a backend generated for one request, prefix included.

    ``token_ids`` are the model's own tokens (for servers that do not return ids, the backend's best
    tokenization; ``len(token_ids)`` is always the count used for cost). ``new_tokens`` is how many
    of them this call produced, so a continuation can be checked to never regenerate.
    """

    text: str
    token_ids: tuple[int, ...]
    new_tokens: int
    finish_reason: FinishReason
    # Prompt tokens served from a prefix cache for this call (None: the backend cannot tell).
    cached_prompt_tokens: int | None = None
    prompt_tokens: int | None = None
    # Tokens of the prefix this call generated again: an API that cannot continue an assistant message
    # regenerates the whole answer (backends/openai/backend.py). Computed and billed, not new.
    regenerated_tokens: int = 0

    @property
    def finished(self) -> bool:
        """True when the model stopped by itself (EOS or a stop string), not by the token budget."""
        return self.finish_reason == "stop"


@dataclass(frozen=True)
class GenerationRequest:
    """Generate up to ``max_new_tokens`` more tokens for ``prompt``.

    With ``prefix`` the backend continues after that earlier generation of the same prompt: the
    prefix's tokens are context, not regenerated, and the returned Generation contains prefix + new.
    ``stop`` strings end generation (the stop string itself is not returned).

    ``forced_text`` (only with a prefix) is put after the prefix as context before generating, e.g.
    the end of a reasoning block that budget forcing imposes. It is tokenized with the model's own
    tokenizer (no special tokens); its tokens are context, not generated: the returned Generation has
    ``token_ids`` = prefix + forced ids + new ids, ``new_tokens`` = the new ones only, and ``text``
    decoded from all of them. Stop strings are searched in the new text only. A backend that cannot
    place text in the model's context raises BackendError.

    ``insights`` marks a mentor request of the cascade's stages (insights, not an answer). It changes
    nothing a backend computes; the run store labels such entries so a store can serve as a recorded
    mentor.
    """

    prompt: Prompt
    max_new_tokens: int
    prefix: Generation | None = None
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    forced_text: str = ""
    insights: bool = False
    # Which draw of the same sampled request this is (lm-eval's ``repeats``): two draws are two results,
    # so the run store keys them apart. Greedy requests ignore it (every draw is the same).
    sample: int = 0

    def __post_init__(self) -> None:
        if self.forced_text and self.prefix is None:
            raise ValueError("forced_text continues an earlier generation: give the prefix it follows")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


EntropyMethod = Literal["exact", "topk"]


@dataclass(frozen=True)
class HiddenRequest:
    """Ask ``Backend.score`` for the intern's hidden states too, from the same forward pass.

    ``layers`` index the model's hidden states (0 = the embeddings, ``num_layers`` = the last layer's
    output after the final norm). For every layer the backend returns the vector at both positions of
    ``common.hidden_keys.HIDDEN_POSITIONS`` (``question_insights_end`` only when it located the spans). ``adapter`` is a
    LoRA adapter folder (peft format) applied for this pass only; ``adapter_id`` names it in the keys.
    """

    layers: tuple[int, ...]
    adapter: str | None = None
    adapter_id: str | None = None
    # False: only the hidden vectors are wanted (complete-hidden): a backend may skip the per-token
    # log-probabilities and entropies (the scores' arrays are then empty) and the LM head.
    statistics: bool = True

    def __post_init__(self) -> None:
        if not self.layers or any(int(x) < 0 for x in self.layers):
            raise ValueError(f"hidden layers must be non-negative indices, got {self.layers}")
        if (self.adapter is None) != (self.adapter_id is None):
            raise ValueError("an adapter needs its adapter_id (and only an adapter has one)")

    def key(self, layer: int, position: str) -> str:
        return hidden_key(layer, position, self.adapter_id)


def hidden_positions(num_tokens: int, spans: dict | None) -> dict[str, int]:
    """Token index of each hidden position of a rendered prompt of ``num_tokens`` tokens."""
    out = {"prompt_end": num_tokens - 1}
    if spans:
        ends = [b for name in ("question", "insights") for a, b in spans.get(name, ()) if b > a]
        if ends:
            out["question_insights_end"] = max(ends) - 1
    return out


@dataclass(frozen=True)
class PromptScores:
    """The intern's view of a prompt: one value per predicted prompt token (positions 2..n).

    ``token_logprobs[i]`` is log P(x_{i+1} | x_{<=i}) of the actual token, exact on every backend.
    ``entropies[i]`` is the entropy of that predictive distribution: exact over the full vocabulary
    (``entropy_method="exact"``) or a top-k estimate (``"topk"``) with ``entropy_bounds`` giving the
    lower/upper bound arrays of the estimate. ``num_tokens`` is n, the prompt's length in tokens.
    ``spans`` maps each segment name of the prompt to its token ranges ``[a, b)`` in the rendered
    prompt (one per segment of that name, in order); None when the backend could not locate them.
    """

    token_logprobs: np.ndarray
    entropies: np.ndarray
    num_tokens: int
    entropy_method: EntropyMethod = "exact"
    entropy_bounds: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False)
    spans: dict[str, tuple[tuple[int, int], ...]] | None = field(default=None, compare=False)
    # Hidden vectors asked for with a ``HiddenRequest``, by ``HiddenRequest.key`` (float32, one per unit).
    hidden: dict[str, np.ndarray] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.token_logprobs.shape != self.entropies.shape:
            raise ValueError("token_logprobs and entropies must have the same shape")
        if self.token_logprobs.ndim != 1:
            raise ValueError("token_logprobs must be one-dimensional")


class Backend(abc.ABC):
    """One model behind one engine. Subclasses: ``hf`` (transformers), ``vllm``, ``openai``."""

    #: registry name, e.g. "hf"
    name: str = ""

    @property
    @abc.abstractmethod
    def model_name(self) -> str:
        """A name that identifies the weights (path or hub id); recorded in classifier cards."""

    @property
    @abc.abstractmethod
    def num_parameters(self) -> int:
        """|θ| for Eq. 12, counted from the loaded weights (servers: given by the user)."""

    @property
    @abc.abstractmethod
    def max_context(self) -> int:
        """Longest prompt + generation the model accepts, in tokens."""

    @abc.abstractmethod
    def count_tokens(self, prompt: Prompt) -> int:
        """Length of the rendered prompt in this model's tokens."""

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate for all requests as one batch; results in request order."""

    @abc.abstractmethod
    def score(self, prompts: Sequence[Prompt], hidden: HiddenRequest | None = None) -> list[PromptScores]:
        """Per-token log-probabilities and entropies of each rendered prompt; one batch. With
        ``hidden``, also the hidden vectors it asks for (``PromptScores.hidden``), or a BackendError
        when this backend cannot give them."""

    def hidden_shape(self) -> tuple[int, int]:
        """(number of layers, hidden size) of the model, for hidden-state judges."""
        raise BackendError(f"the {self.name} backend gives no hidden states")

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """lm-eval's loglikelihood on raw text: (sum log P(continuation | context), is_greedy)."""
        raise BackendError(f"the {self.name} backend does not answer loglikelihood requests")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free engine resources (GPU memory, server connections)."""
