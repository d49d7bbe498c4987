"""The cost formulas of engine.core.costs: hand-checked values, and each compiled form equal
to its Python source (the Python cost objects call the source, the compiled driver the
compiled form)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import costs

_PAIRS = [
    (costs.adverse_price, costs.adverse_price_nb),
    (costs.quoted_spread, costs.quoted_spread_nb),
    (costs.spread_price, costs.spread_price_nb),
    (costs.range_volatility, costs.range_volatility_nb),
    (costs.impact_price, costs.impact_price_nb),
    (costs.percentage_commission, costs.percentage_commission_nb),
    (costs.per_share_commission, costs.per_share_commission_nb),
    (costs.per_trade_commission, costs.per_trade_commission_nb),
]

_price = st.floats(0.01, 1e4)
_qty = st.sampled_from([-250.0, -1.0, -0.5, 0.0, 0.5, 3.0, 1e4])
_maybe = st.one_of(st.just(math.nan), st.floats(0.0, 0.05))


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(deadline=None)
@given(_price, _qty, _maybe, _maybe, _maybe, st.floats(0.0, 1.0))
def test_costs_compiled_formulas_equal_their_python_source(
    price: float, q: float, a: float, b: float, c: float, frac: float
) -> None:
    args = {
        costs.adverse_price: (price, q, frac),
        costs.quoted_spread: (price, price + a if not math.isnan(a) else a),
        costs.spread_price: (price, q, frac, a, b, c if not math.isnan(c) else 0.0),
        costs.range_volatility: (price * (1 + frac), price, price * (1 + frac / 2)),
        costs.impact_price: (price, q, 1.5, a, 1e3 * frac, 0.1),
        costs.percentage_commission: (frac / 10, q, price),
        costs.per_share_commission: (0.005, 1.0, a, q, price),
        costs.per_trade_commission: (frac, q),
    }
    for py, nb in _PAIRS:
        assert _same(py(*args[py]), nb(*args[py])), py.__name__


def test_costs_spread_price_prefers_quote_then_estimate_then_fallback() -> None:
    assert costs.spread_price(100.0, 10, 0.5, 0.2, 0.01, 0.001) == 100.1
    assert costs.spread_price(100.0, -10, 0.5, math.nan, 0.01, 0.001) == 100.0 * (1 - 0.005)
    assert costs.spread_price(100.0, -10, 0.5, math.nan, math.nan, 0.001) == 100.0 * 0.999
    assert costs.spread_price(100.0, 0, 0.5, 0.2, 0.01, 0.001) == 100.0
    assert math.isnan(costs.quoted_spread(10.0, 9.0))  # crossed quote
    assert math.isnan(costs.quoted_spread(0.0, 1.0))


def test_costs_impact_price_square_root_law_capped() -> None:
    # 1.0 * 0.02 * sqrt(400 / 10_000) = 0.004
    assert costs.impact_price(50.0, 400, 1.0, 0.02, 10_000.0, 0.1) == pytest.approx(50.2)
    assert costs.impact_price(50.0, -400, 1.0, 0.02, 10_000.0, 0.001) == 50.0 * 0.999
    assert costs.impact_price(50.0, 400, 1.0, math.nan, 10_000.0, 0.05) == 50.0 * 1.05
    assert costs.impact_price(50.0, 400, 1.0, 0.02, 0.0, 0.05) == 50.0 * 1.05


def test_costs_per_share_commission_minimum_and_cap() -> None:
    assert costs.per_share_commission(0.005, 1.0, math.nan, 100, 10.0) == 1.0  # minimum
    assert costs.per_share_commission(0.005, 1.0, math.nan, -1000, 10.0) == 5.0
    assert costs.per_share_commission(0.005, 1.0, 0.0005, 1000, 10.0) == 5.0 * 1.0  # 0.05 % of 10k
    assert costs.per_share_commission(0.005, 1.0, 0.01, 0, 10.0) == 0.0


@settings(deadline=None)
@given(st.integers(-(2**52), 2**52))
def test_costs_month_number_equals_calendar_month(timestamp_us: int) -> None:
    day = date(1970, 1, 1) + timedelta(days=timestamp_us // 86_400_000_000)
    expected = day.year * 12 + day.month - 1
    assert costs.month_number(timestamp_us) == expected
    assert costs.month_number_nb(timestamp_us) == expected


def test_costs_tiered_commission_resets_each_month_and_compiled_form_agrees() -> None:
    tiers = np.array([[0.0, 0.01], [1_000.0, 0.001]])
    jan = costs.month_number(int(datetime(2020, 1, 31, tzinfo=UTC).timestamp() * 1e6))
    feb = jan + 1
    for tiered in (costs.tiered_commission, costs.tiered_commission_nb):
        state = np.array([math.nan, 0.0])
        got = [
            tiered(tiers, state, 10, 100.0, jan),  # 1 % of 1000, month total 1000
            tiered(tiers, state, -10, 100.0, jan),  # second tier: 0.1 %
            tiered(tiers, state, 10, 100.0, feb),  # new month: first tier again
        ]
        assert got == pytest.approx([10.0, 1.0, 10.0])
        assert state[costs.TIER_VOLUME] == 1_000.0
