"""Commission and slippage models hand-checked for buys and sells (issue 6)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import polars as pl
import pytest

from engine import (
    FixedBpsSlippage,
    FixedPercentageSlippage,
    MarketData,
    NoCommission,
    NoSlippage,
    OrderTypeDependentSlippage,
    PercentageCommission,
    PerShareCommission,
    PerTradeCommission,
    SpreadAwareSlippage,
    TieredCommission,
    VolumeAwareSlippage,
    build_commission,
    build_slippage,
)
from engine.costs.slippage import corwin_schultz_spread
from engine.data import BarView
from tests.engine.helpers import make_panel, run

JAN = int(datetime(2024, 1, 5, tzinfo=UTC).timestamp() * 1e6)
FEB = int(datetime(2024, 2, 5, tzinfo=UTC).timestamp() * 1e6)


@pytest.mark.parametrize("quantity", [100.0, -100.0])
def test_percentage_commission_both_sides(quantity: float) -> None:
    assert PercentageCommission(0.001).compute(quantity, 50.0, JAN) == pytest.approx(5.0)
    assert NoCommission().compute(quantity, 50.0, JAN) == 0.0


@pytest.mark.parametrize(
    ("quantity", "price", "expected"),
    [
        (1000, 50.0, 5.0),  # 1000 × 0.005
        (10, 50.0, 1.0),  # minimum 1.0
        (10, 5.0, 0.5),  # cap 1 % of 50 notional = 0.5 beats the minimum
        (-1000, 50.0, 5.0),  # sells priced the same
    ],
)
def test_per_share_commission_minimum_and_cap(
    quantity: float, price: float, expected: float
) -> None:
    model = PerShareCommission(cost=0.005, minimum=1.0, maximum_pct=0.01)
    assert model.compute(quantity, price, JAN) == pytest.approx(expected)


def test_per_trade_commission_flat_fee() -> None:
    assert PerTradeCommission(4.95).compute(-3, 10.0, JAN) == 4.95
    assert PerTradeCommission(4.95).compute(0, 10.0, JAN) == 0.0


def test_tiered_commission_rate_falls_with_monthly_volume_and_resets() -> None:
    model = TieredCommission([(0, 0.001), (10_000, 0.0005)])
    assert model.compute(100, 100.0, JAN) == pytest.approx(10.0)  # month volume 0 → 10 bps
    assert model.compute(100, 100.0, JAN) == pytest.approx(5.0)  # 10 000 traded → 5 bps
    assert model.compute(100, 100.0, FEB) == pytest.approx(10.0)  # new month
    model.reset()
    assert model.compute(100, 100.0, FEB) == pytest.approx(10.0)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: PercentageCommission(-0.1),
        lambda: PercentageCommission(1.0),
        lambda: PerShareCommission(-1.0),
        lambda: TieredCommission([(5, 0.001)]),
        lambda: TieredCommission([(0, 0.001), (0, 0.002)]),
        lambda: FixedPercentageSlippage(1.0),
        lambda: FixedBpsSlippage(-1),
        lambda: VolumeAwareSlippage(max_impact=0.0),
        lambda: OrderTypeDependentSlippage({"iceberg": NoSlippage()}),
    ],
)
def test_cost_model_bad_arguments_raise(factory: object) -> None:
    with pytest.raises(ValueError):
        factory()  # type: ignore[operator]


def test_cost_model_repr_shows_parameters() -> None:
    assert repr(PerShareCommission(0.005, 1.0)) == (
        "PerShareCommission(cost=0.005, minimum=1.0, maximum_pct=None)"
    )
    assert repr(FixedBpsSlippage(5)) == "FixedBpsSlippage(bps=5.0)"


def _bar(
    bid: float | None = None, ask: float | None = None, at_close: bool = False, **extra: float
) -> BarView:
    bars = {"AAA": [(100, 102, 98, 100), (100, 101, 99, 100)]}
    panel = make_panel(bars, volume=10_000.0)
    if bid is not None and ask is not None:
        panel = panel.with_columns(pl.lit(bid).alias("bid"), pl.lit(ask).alias("ask"))
    for name, value in extra.items():
        panel = panel.with_columns(pl.lit(value).alias(name))
    data = MarketData.from_frame(panel, indicator_columns=list(extra))
    return BarView(data, 1, at_close=at_close)


@pytest.mark.parametrize(("quantity", "expected"), [(10.0, 100.1), (-10.0, 99.9)])
def test_fixed_percentage_and_bps_slippage_against_trader(quantity: float, expected: float) -> None:
    bar = _bar()
    assert FixedPercentageSlippage(0.001).fill_price(100.0, quantity, bar, "market") == (
        pytest.approx(expected)
    )
    assert FixedBpsSlippage(10).fill_price(100.0, quantity, bar, "market") == pytest.approx(
        expected
    )


@pytest.mark.parametrize(("quantity", "expected"), [(10.0, 100.05), (-10.0, 99.95)])
def test_spread_aware_uses_quotes_when_present(quantity: float, expected: float) -> None:
    bar = _bar(bid=99.95, ask=100.05)
    model = SpreadAwareSlippage(spread_fraction=0.5)
    assert model.fill_price(100.0, quantity, bar, "market") == pytest.approx(expected)


def test_spread_aware_falls_back_to_corwin_schultz_without_quotes() -> None:
    # a fill at bar 1's close knows the pair (bar 0, bar 1); bar 0's close 100 lies inside
    # bar 1's range, so no overnight adjustment (look-ahead rules: test_costs_lookahead.py)
    at_close = _bar(at_close=True)
    spread = corwin_schultz_spread(101, 99, 102, 98, prev_close=100)
    assert spread > 0.0
    model = SpreadAwareSlippage(spread_fraction=0.5, window=1)
    assert model.fill_price(100.0, 10, at_close, "market") == pytest.approx(
        100 * (1 + 0.5 * spread)
    )


def test_corwin_schultz_hand_computed() -> None:
    k = 3 - 2 * math.sqrt(2)
    beta = math.log(1.02 / 1.0) ** 2 + math.log(1.03 / 1.01) ** 2
    gamma = math.log(1.03 / 1.0) ** 2
    alpha = (math.sqrt(2 * beta) - math.sqrt(beta)) / k - math.sqrt(gamma / k)
    expected = max(2 * (math.exp(alpha) - 1) / (1 + math.exp(alpha)), 0.0)
    assert corwin_schultz_spread(1.02, 1.0, 1.03, 1.01) == pytest.approx(expected)
    assert math.isnan(corwin_schultz_spread(1.0, 0.0, 1.0, 1.0))


def test_volume_aware_square_root_impact() -> None:
    bar = _bar(vol_20=0.02)
    model = VolumeAwareSlippage(coefficient=1.0, volatility_column="vol_20")
    # impact = 1 × 0.02 × sqrt(2500 / 10000) = 0.01
    assert model.fill_price(100.0, 2500, bar, "market") == pytest.approx(101.0)
    assert model.fill_price(100.0, -2500, bar, "market") == pytest.approx(99.0)
    # without a volatility column: the previous bar's range (102 − 98) / 100 = 0.04 → 0.02
    assert VolumeAwareSlippage().fill_price(100.0, 2500, bar, "market") == pytest.approx(102.0)


def test_order_type_dependent_slippage_dispatches() -> None:
    model = build_slippage(
        {
            "type": "OrderTypeDependent",
            "models": {"market": {"type": "FixedBps", "bps": 10}},
            "default": {"type": "None"},
        }
    )
    bar = _bar()
    assert model.fill_price(100.0, 1, bar, "market") == pytest.approx(100.1)
    assert model.fill_price(100.0, 1, bar, "limit") == 100.0


def test_fills_record_slippage_and_commission_separately() -> None:
    bars = {"AAA": [(10, 10, 10, 10), (20, 21, 19, 20), (30, 31, 29, 30)]}
    result = run(
        make_panel(bars),
        {0: lambda s: s.buy("AAA", 10), 1: lambda s: s.sell("AAA", 10)},
        commission=build_commission({"type": "PerShare", "cost": 0.01, "minimum": 1.0}),
        slippage=FixedPercentageSlippage(0.01),
    )
    fills = result.fills
    assert fills["price_before_slippage"].to_list() == [20.0, 30.0]
    assert fills["price"].to_list() == pytest.approx([20.2, 29.7])
    assert fills["slippage"].to_list() == pytest.approx([2.0, 3.0])
    assert fills["commission"].to_list() == [1.0, 1.0]
    trade = result.trades.row(0, named=True)
    assert trade["slippage"] == pytest.approx(5.0) and trade["commission"] == 2.0
    assert trade["total_cost"] == pytest.approx(7.0)
    assert trade["pnl_gross"] == pytest.approx((29.7 - 20.2) * 10)
