import math

import pytest

from tandem_lm_eval.cost.pricing import TokenPrices, parse_price, per_thousand_samples, token_cost_usd


def test_cost_is_linear_in_tokens_at_prices_per_million():
    # GPT-4o-mini list prices: $0.15 / 1M input, $0.60 / 1M output.
    assert token_cost_usd(1_000_000, 0, 0.15, 0.60) == pytest.approx(0.15)
    assert token_cost_usd(0, 1_000_000, 0.15, 0.60) == pytest.approx(0.60)
    assert token_cost_usd(1200, 350, 0.15, 0.60) == pytest.approx((1200 * 0.15 + 350 * 0.60) / 1e6)
    assert token_cost_usd(0, 0, 3.0, 15.0) == 0.0


def test_token_prices_match_the_function_and_reject_bad_prices():
    prices = TokenPrices(input_per_million=2.5, output_per_million=10.0)
    assert (
        prices.cost(4000, 1000) == pytest.approx(token_cost_usd(4000, 1000, 2.5, 10.0)) == pytest.approx(0.02)
    )
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="input_per_million"):
            TokenPrices(bad, 1.0)
    with pytest.raises(ValueError, match="token counts"):
        prices.cost(-1, 0)


def test_parse_price_accepts_model_args_strings_and_names_the_key():
    assert parse_price("mentor_price_in", "0.15") == 0.15
    assert parse_price("mentor_price_in", " $0.6 ") == 0.6
    assert parse_price("mentor_price_out", 2) == 2.0
    with pytest.raises(ValueError, match="mentor_price_out"):
        parse_price("mentor_price_out", "cheap")
    with pytest.raises(ValueError, match="mentor_price_in"):
        parse_price("mentor_price_in", "-0.1")


def test_per_thousand_samples():
    assert per_thousand_samples(0.031, 100) == pytest.approx(0.31)
    with pytest.raises(ValueError):
        per_thousand_samples(1.0, 0)
