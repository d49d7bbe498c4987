"""An order that rounds to zero shares is never placed, but leaves a rejection row (issue 25).

Both drivers write the same row: ``order_id`` -1, event ``rejected``, reason
``rounds_to_zero_shares``, the unrounded shares as the quantity.
"""

from __future__ import annotations

import math

import polars as pl

from engine import (
    BacktestEngine,
    ExecutionConfig,
    MarketData,
    PartialProfitTaking,
    RiskManager,
    TopNStrategy,
)
from tests.engine.helpers import make_panel, run

FRAMES = ("fills", "trades", "portfolio_states", "open_positions", "orders", "rejections")
HUGE = 1e300


def _huge_price_panel() -> pl.DataFrame:
    """Three symbols over four bars; ``BIG`` trades near 1e300 and always scores highest."""
    bars = {
        "AAA": [(10.0, 10.5, 9.5, 10.0)] * 4,
        "BBB": [(20.0, 20.5, 19.5, 20.0)] * 4,
        "BIG": [(HUGE, HUGE, HUGE, HUGE)] * 4,
    }
    scores = {"score": {"AAA": [1.0] * 4, "BBB": [2.0] * 4, "BIG": [3.0] * 4}}
    return make_panel(bars, signals=scores)


def test_topn_huge_price_symbol_records_zero_share_rejection_in_both_drivers() -> None:
    data = MarketData.from_frame(_huge_price_panel(), signal_columns=["score"])
    config = ExecutionConfig(initial_cash=10_000.0)
    results = [
        BacktestEngine(
            data, TopNStrategy(signal="score", n=2), None, config, compiled=compiled
        ).run()
        for compiled in (True, False)
    ]
    fast, slow = results
    assert fast.compiled and not slow.compiled
    rows = slow.rejections.filter(pl.col("symbol") == "BIG")
    # TopN re-tries the unaffordable symbol at every bar: one row per bar
    assert rows.height == 4
    assert rows["reason"].unique().to_list() == ["rounds_to_zero_shares"]
    assert rows["event"].unique().to_list() == ["rejected"]
    assert rows["order_id"].unique().to_list() == [-1]
    # the unrounded shares: half the equity over 1e300
    assert math.isclose(rows["quantity"][0], 5_000.0 / HUGE, rel_tol=1e-12)
    assert "BIG" not in slow.fills["symbol"].to_list()
    for name in FRAMES:
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.equals(b), name


def _flat_panel() -> pl.DataFrame:
    return make_panel({"AAA": [(100.0, 101.0, 99.0, 100.0)] * 3})


def test_buy_percent_below_one_share_records_rejection_and_places_no_order() -> None:
    # 0.5 % of 1,000 is 5 currency: 0.05 of a 100-currency share
    result = run(_flat_panel(), {1: lambda s: s.buy_percent("AAA", 0.005)}, initial_cash=1_000.0)
    assert result.orders.height == 0
    row = result.rejections.row(0, named=True)
    assert result.rejections.height == 1
    assert (row["order_id"], row["reason"], row["symbol"]) == (-1, "rounds_to_zero_shares", "AAA")
    assert math.isclose(row["quantity"], 0.05)


def test_sell_percent_below_one_share_records_negative_quantity() -> None:
    result = run(
        _flat_panel(),
        {1: lambda s: s.sell("AAA", percent=0.005)},
        initial_cash=1_000.0,
        allow_short=True,
    )
    assert result.orders.height == 0
    assert math.isclose(result.rejections["quantity"][0], -0.05)


def test_order_target_value_below_one_share_from_flat_records_rejection() -> None:
    result = run(_flat_panel(), {1: lambda s: s.order_target_value("AAA", 40.0)})
    assert result.orders.height == 0
    assert result.rejections["reason"].to_list() == ["rounds_to_zero_shares"]
    assert math.isclose(result.rejections["quantity"][0], 0.4)


def test_order_target_value_already_at_rounded_target_records_nothing() -> None:
    # 10.4 shares wanted, 10 held: no trade needed, nothing was refused
    plan = {
        0: lambda s: s.buy("AAA", 10.0),
        1: lambda s: s.order_target_value("AAA", 1_040.0),
    }
    result = run(_flat_panel(), plan)
    assert result.orders.height == 1
    assert result.rejections.height == 0


def test_fractional_shares_place_the_small_order() -> None:
    result = run(
        _flat_panel(),
        {1: lambda s: s.buy_percent("AAA", 0.005)},
        initial_cash=1_000.0,
        fractional_shares=True,
    )
    assert result.orders["quantity"].to_list() == [0.05]
    assert result.rejections.height == 0


def test_reduce_position_below_one_share_records_rejection() -> None:
    plan = {
        0: lambda s: s.buy("AAA", 1.0),
        1: lambda s: s.reduce_position("AAA", 0.5),
    }
    result = run(_flat_panel(), plan)
    assert result.orders.height == 1
    assert result.rejections["reason"].to_list() == ["rounds_to_zero_shares"]
    assert math.isclose(result.rejections["quantity"][0], -0.5)


def test_partial_exit_below_one_share_records_rule_rejection_in_both_drivers() -> None:
    # 2 shares bought at 100; the close at 110 reaches the 5 % level, whose 30 % is 0.6 share
    bars = {
        "AAA": [
            (100.0, 100.0, 100.0, 100.0),
            (100.0, 101.0, 99.0, 100.0),
            (104.0, 110.0, 103.0, 110.0),
            (110.0, 111.0, 109.0, 110.0),
        ],
    }
    panel = make_panel(bars, signals={"score": {"AAA": [1.0] * 4}})
    data = MarketData.from_frame(panel, signal_columns=["score"])
    config = ExecutionConfig(initial_cash=250.0)
    results = [
        BacktestEngine(
            data,
            TopNStrategy(signal="score", n=1),
            RiskManager([PartialProfitTaking([(0.05, 0.3)])]),
            config,
            compiled=compiled,
        ).run()
        for compiled in (True, False)
    ]
    fast, slow = results
    assert fast.compiled and not slow.compiled
    row = slow.rejections.row(0, named=True)
    assert slow.rejections.height == 1
    assert (row["order_id"], row["reason"], row["rule"]) == (
        -1,
        "rounds_to_zero_shares",
        "PartialProfitTaking",
    )
    assert math.isclose(row["quantity"], -0.6)
    for name in FRAMES:
        assert getattr(fast, name).equals(getattr(slow, name)), name
