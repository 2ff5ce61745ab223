"""A scripted backend for unit tests of the cascade (fault injection and call accounting).

It is not a language model: it "generates" word tokens from a fixed script per prompt and "scores"
with numbers derived from the prompt length. Real-model tests live beside these (test_cascade_real.py,
test_e2e_cli.py).
"""

from __future__ import annotations

import numpy as np

from tandem_lm_eval.backends.base import Backend, Generation, GenerationRequest, Prompt, PromptScores
from tandem_lm_eval.backends.rendering import segment_spans
from tandem_lm_eval.judgment.card import ClassifierCard
from tandem_lm_eval.judgment.classifier import Classifier


def render_words(prompt: Prompt) -> list[str]:
    """A word-level "chat template": a start marker, then per message its role, words and an end marker."""
    if prompt.raw_text is not None:
        return ["<s>", *prompt.raw_text.split()]
    out = ["<s>"]
    for m in prompt.messages:
        out += [f"<{m.role}>", *m.content.split(), "</m>"]
    return out


class ScriptedBackend(Backend):
    name = "scripted"

    def __init__(
        self,
        script_len: dict[str, int] | None = None,
        default_len: int = 10_000,
        params: int = 1000,
        model_name: str = "scripted",
        entropy_method: str = "exact",
    ):
        # script_len: question text -> how many tokens the "model" writes before EOS
        self.script_len = script_len or {}
        self.default_len = default_len
        self.params = params
        self._model_name = model_name
        self.entropy_method = entropy_method
        self.generate_calls: list[list[GenerationRequest]] = []
        self.score_calls: list[list[Prompt]] = []
        self.generated_total = 0

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def num_parameters(self) -> int:
        return self.params

    @property
    def max_context(self) -> int:
        return 100_000

    def count_tokens(self, prompt: Prompt) -> int:
        return len(render_words(prompt))

    def _question(self, prompt: Prompt) -> str:
        return [m for m in prompt.messages if m.role == "user"][-1].content.split("\n\n")[0]

    def generate(self, requests):
        self.generate_calls.append(list(requests))
        out = []
        for req in requests:
            q = self._question(req.prompt)
            total = self.script_len.get(q, self.default_len)
            start = len(req.prefix.token_ids) if req.prefix else 0
            n_new = min(req.max_new_tokens, max(total - start, 0))
            new_ids = tuple(range(start, start + n_new))
            self.generated_total += n_new
            ids = (req.prefix.token_ids if req.prefix else ()) + new_ids
            text = " ".join(f"w{i}" for i in ids)
            finished = start + n_new >= total
            out.append(Generation(text, ids, n_new, "stop" if finished else "length", prompt_tokens=5))
        return out

    def score(self, prompts):
        self.score_calls.append(list(prompts))
        out = []
        for p in prompts:
            words = render_words(p)
            n = len(words)
            lp = -np.linspace(1.0, 0.1, n - 1)
            spans = segment_spans(render_words, p, words) if p.segments else None
            out.append(PromptScores(lp, -lp, n, spans=spans))
        return out


class LengthClassifier(Classifier):
    """s_t grows with the prompt length: more insight, more sufficient (for stop-rule wiring tests)."""

    kind = "length"

    def __init__(self, scale: float = 200.0):
        self.scale = scale
        self.card = ClassifierCard()

    def sufficiency(self, X, groups=None):
        return np.clip(X[:, -1] / self.scale, 0, 1)
