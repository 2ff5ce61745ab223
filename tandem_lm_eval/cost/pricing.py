"""Dollar cost of API calls from per-token prices, reported beside TFLOPs (paper Table 4: $/1K samples).

Prices are quoted the way providers publish them: US dollars per 1,000,000 tokens, input and output
separately (``mentor_price_in=0.15,mentor_price_out=0.60`` for GPT-4o-mini). Input tokens are every
prompt token a call sends: a continued generation resends its prompt and earlier output, so each
stage pays for them again; output tokens include hidden reasoning tokens a hosted API bills.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tandem_lm_eval.common.options import OptionError

PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class TokenPrices:
    """US dollars per 1M input tokens and per 1M output tokens."""

    input_per_million: float
    output_per_million: float

    def __post_init__(self) -> None:
        for name in ("input_per_million", "output_per_million"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise OptionError(f"{name} must be a finite price >= 0, got {value!r}")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return token_cost_usd(input_tokens, output_tokens, self.input_per_million, self.output_per_million)


def token_cost_usd(
    input_tokens: int, output_tokens: int, price_in_per_million: float, price_out_per_million: float
) -> float:
    """Cost in US dollars of ``input_tokens`` + ``output_tokens`` at the given prices per 1M tokens."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got {input_tokens} and {output_tokens}")
    return (input_tokens * price_in_per_million + output_tokens * price_out_per_million) / PER_TOKENS


def parse_price(key: str, value: Any) -> float:
    """A price per 1M tokens from ``model_args`` (a string such as ``0.15`` or ``$0.15``)."""
    text = str(value).strip().lstrip("$").strip()
    try:
        price = float(text)
    except ValueError:
        raise OptionError(
            f"{key} must be a price in US dollars per 1M tokens such as 0.15, got {value!r}"
        ) from None
    if not math.isfinite(price) or price < 0:
        raise OptionError(f"{key} must be a price >= 0 in US dollars per 1M tokens, got {value!r}")
    return price


def per_thousand_samples(total_usd: float, samples: int) -> float:
    """Table 4's unit: dollars per 1,000 samples."""
    if samples <= 0:
        raise ValueError(f"samples must be > 0, got {samples}")
    return total_usd * 1000 / samples
