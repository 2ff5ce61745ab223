"""What a judge reads: the *feature set* a classifier's card names, and how its input vector is built.

The paper compares three readers of the same intern (Appendix E, Table 8), "all using MLP classifiers
with different inputs":

- ``tandem-v2`` (**Statistics**): Eq. 7's 17 perplexity/entropy statistics over a span of the prompt
  (``features.py``);
- ``hidden`` (**Hidden**): "the last-layer hidden state at the final token position";
- ``hidden_lora`` (**Hidden w/ LoRA**): "same as Hidden, but additionally finetuning the SLM with LoRA
  before extracting hidden states" (the adapter ships with the classifier, ``card.py``);
- ``tandem-v2+hidden``: both, concatenated (an option beyond the paper).

Where the paper is silent, a hidden reading (``HiddenReading``) records its choices in the card:

- **layer**: an index into the model's hidden states, 0 = the embeddings, ``num_layers`` = the last
  layer's output (after the final norm, as transformers' ``hidden_states[-1]`` and vLLM's pooler
  give it). Default: the last (the paper's words); ``layer_of("0.7", 30)`` picks a fraction of the
  depth (probes of correctness peak in middle layers, docs/judges-study.md).
- **position**: ``prompt_end`` (default): the last token of the rendered intern prompt, i.e. the
  position the answer would be generated from (the assistant turn's opening); or
  ``question_insights_end``: the last token of Q ⊕ I_t, the input Eq. 6 defines. Both read "the final
  token position"; the first sees the template's cue to answer, the second the content alone.

Pure functions and dataclasses: no model here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from tandem_lm_eval.common.errors import TandemError
from tandem_lm_eval.common.hidden_keys import HIDDEN_POSITIONS, hidden_key
from tandem_lm_eval.judgment.features import DEFAULT_SPAN, FEATURE_NAMES, FEATURE_SET, check_span

STATISTICS = FEATURE_SET  # "tandem-v2"
HIDDEN = "hidden"
HIDDEN_LORA = "hidden_lora"
# Every feature set a classifier may read; combinations join parts with "+".
FEATURE_SETS: tuple[str, ...] = (STATISTICS, HIDDEN, HIDDEN_LORA, f"{STATISTICS}+{HIDDEN}")

PROMPT_END, QUESTION_INSIGHTS_END = HIDDEN_POSITIONS
DEFAULT_POSITION = PROMPT_END
DEFAULT_LAYER = "last"


class JudgeError(TandemError, ValueError):
    """A feature set, layer or position that cannot be read as asked."""


def check_feature_set(name: str) -> str:
    if name not in FEATURE_SETS:
        raise JudgeError(f"unknown feature set {name!r}; valid: {', '.join(FEATURE_SETS)}")
    return name


def feature_set_parts(name: str) -> tuple[str, ...]:
    return tuple(check_feature_set(name).split("+"))


def needs_hidden(name: str) -> bool:
    return any(p in (HIDDEN, HIDDEN_LORA) for p in feature_set_parts(name))


def needs_statistics(name: str) -> bool:
    return STATISTICS in feature_set_parts(name)


def needs_adapter(name: str) -> bool:
    return HIDDEN_LORA in feature_set_parts(name)


def layer_of(spec: str | int | float, num_layers: int) -> int:
    """A layer index 0..num_layers from ``last``, an index (negative counts from the last, -1 = last),
    or a fraction of the depth in (0, 1) such as ``0.7``."""
    text = str(spec).strip().lower()
    if text in ("last", ""):
        return num_layers
    try:
        if "." in text:
            fraction = float(text)
            if not 0.0 < fraction < 1.0:
                raise JudgeError(f"a layer fraction must be in (0, 1), got {spec!r}")
            return max(1, min(num_layers, round(fraction * num_layers)))
        index = int(text)
    except ValueError:
        raise JudgeError(f"layer {spec!r}: give 'last', an index or a fraction of the depth (0.7)") from None
    if index < 0:
        index = num_layers + 1 + index
    if not 0 <= index <= num_layers:
        raise JudgeError(f"layer {spec!r} is outside 0..{num_layers} (the model has {num_layers} layers)")
    return index


def check_position(position: str) -> str:
    if position not in HIDDEN_POSITIONS:
        raise JudgeError(f"unknown hidden position {position!r}; valid: {', '.join(HIDDEN_POSITIONS)}")
    return position


@dataclass(frozen=True)
class HiddenReading:
    """Which hidden vector a judge reads (recorded in the classifier's card)."""

    layer: int
    num_layers: int
    hidden_size: int
    position: str = DEFAULT_POSITION
    # the LoRA adapter's identity (``hidden_lora``): sha256 of its weights file, rank, alpha, ...
    adapter: dict | None = None

    def __post_init__(self) -> None:
        check_position(self.position)
        if not 0 <= self.layer <= self.num_layers or self.hidden_size < 1:
            raise JudgeError(
                f"bad hidden reading: layer {self.layer} of {self.num_layers}, size {self.hidden_size}"
            )

    @property
    def adapter_id(self) -> str | None:
        return None if not self.adapter else str(self.adapter["sha256"])

    @property
    def key(self) -> str:
        return hidden_key(self.layer, self.position, self.adapter_id)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HiddenReading:
        try:
            return cls(
                layer=int(data["layer"]),
                num_layers=int(data["num_layers"]),
                hidden_size=int(data["hidden_size"]),
                position=str(data.get("position", DEFAULT_POSITION)),
                adapter=data.get("adapter"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise JudgeError(f"bad hidden reading {data!r}: {exc}") from None


@dataclass(frozen=True)
class JudgeSpec:
    """A classifier's input: the feature set, the span of the statistics, the hidden reading."""

    feature_set: str = STATISTICS
    span: str = DEFAULT_SPAN
    hidden: HiddenReading | None = None

    def __post_init__(self) -> None:
        check_feature_set(self.feature_set)
        check_span(self.span)
        if needs_hidden(self.feature_set) and self.hidden is None:
            raise JudgeError(
                f"feature set {self.feature_set!r} needs a hidden reading (layer, position, size)"
            )
        if needs_adapter(self.feature_set) != bool(self.hidden and self.hidden.adapter):
            raise JudgeError(
                f"feature set {self.feature_set!r}: an adapter goes with hidden_lora, and only with it"
            )

    @property
    def width(self) -> int:
        stats = len(FEATURE_NAMES) if needs_statistics(self.feature_set) else 0
        return stats + (self.hidden.hidden_size if self.hidden is not None else 0)

    def statistics_names(self) -> list[str]:
        return list(FEATURE_NAMES) if needs_statistics(self.feature_set) else []

    def column_names(self) -> list[str]:
        hidden = [f"h{i}" for i in range(self.hidden.hidden_size)] if self.hidden is not None else []
        return self.statistics_names() + hidden

    def log_columns(self) -> np.ndarray:
        """Columns a classifier puts on a signed log scale: perplexity statistics and the length
        (heavy-tailed); hidden units are left as they are (standardized by the classifier)."""
        stats = [n.startswith("ppl_") or n == "length" for n in self.statistics_names()]
        return np.array(stats + [False] * (self.width - len(stats)), dtype=bool)


def judge_input(
    spec: JudgeSpec, features: np.ndarray | None, hidden: dict[str, np.ndarray] | None
) -> np.ndarray:
    """The classifier's input for one stage: the statistics over ``spec.span`` and/or the hidden vector."""
    parts = []
    if needs_statistics(spec.feature_set):
        if features is None:
            raise JudgeError("this judge reads Eq. 7 statistics, none were computed")
        parts.append(np.asarray(features, dtype=np.float64))
    if spec.hidden is not None:
        vector = (hidden or {}).get(spec.hidden.key)
        if vector is None:
            raise JudgeError(
                f"this judge reads the hidden vector {spec.hidden.key!r}, which is missing "
                f"(have: {sorted(hidden or {}) or 'none'})"
            )
        if len(vector) != spec.hidden.hidden_size:
            raise JudgeError(
                f"hidden vector {spec.hidden.key!r} has {len(vector)} units, the judge reads {spec.hidden.hidden_size}"
            )
        parts.append(np.asarray(vector, dtype=np.float64))
    return np.concatenate(parts)
