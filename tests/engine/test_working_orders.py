"""Closing or retargeting a position nets the working orders of earlier bars (issue 24, item 4).

Under a volume participation cap a market order can stay working for several bars. Closing the
position (or ordering a target on the other side) must cancel that working order, not leave a
buy and a sell working side by side, both filling every bar.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.strategy import Strategy
from tests.engine.helpers import make_panel, run, ts

FLAT = (10.0, 10.0, 10.0, 10.0)


def _signed_fills_per_bar(fills: pl.DataFrame) -> pl.DataFrame:
    return fills.group_by("timestamp", "symbol").agg(
        (pl.col("quantity") > 0).any().alias("buy"), (pl.col("quantity") < 0).any().alias("sell")
    )


def test_close_position_cancels_the_working_buy_of_earlier_bars() -> None:
    # 100 shares a bar at most (10 % of 1,000): a 500-share buy works for five bars
    result = run(
        make_panel({"AAA": [FLAT] * 8}, volume=1_000.0),
        {0: lambda s: s.buy("AAA", 500), 2: lambda s: s.close_position("AAA")},
        max_volume_participation=0.1,
    )
    buys = result.fills.filter(pl.col("quantity") > 0)
    sells = result.fills.filter(pl.col("quantity") < 0)
    # decided at bar 2's close, after two 100-share fills: the 300 left are cancelled and the
    # 200 held are sold at 100 a bar
    assert buys["timestamp"].to_list() == [ts(1), ts(2)]
    assert sells["timestamp"].to_list() == [ts(3), ts(4)]
    assert sells["quantity"].sum() == -buys["quantity"].sum() == -200.0
    both = _signed_fills_per_bar(result.fills).filter(pl.col("buy") & pl.col("sell"))
    assert both.height == 0, both
    cancelled = result.rejections.filter(pl.col("event") == "cancelled")
    assert cancelled["reason"].to_list() == ["netted_by_close_position"]
    assert result.open_positions.height == 0


def test_order_target_on_the_other_side_cancels_the_working_order() -> None:
    def retarget(s: Strategy) -> None:
        s.order_target_value("AAA", 0.0)

    result = run(
        make_panel({"AAA": [FLAT] * 8}, volume=1_000.0),
        {0: lambda s: s.buy("AAA", 500), 2: retarget},
        max_volume_participation=0.1,
    )
    both = _signed_fills_per_bar(result.fills).filter(pl.col("buy") & pl.col("sell"))
    assert both.height == 0, both
    assert result.rejections["reason"].to_list() == ["netted_by_new_order"]
    assert result.open_positions.height == 0


def test_same_bar_buy_and_close_both_kept_as_the_strategy_asked() -> None:
    def both(s: Strategy) -> None:
        s.buy("AAA", 10)
        s.close_position("AAA")

    result = run(make_panel({"AAA": [FLAT] * 3}), {0: both})
    assert result.fills["quantity"].to_list() == [10.0, -10.0]
    assert result.rejections.height == 0


@settings(max_examples=40, deadline=None)
@given(
    targets=st.lists(
        st.one_of(st.none(), st.sampled_from([-1, 0.0, 2_000.0, 5_000.0, 9_000.0])),
        min_size=4,
        max_size=10,
    ),
    cap=st.sampled_from([0.01, 0.05, 0.2]),
)
def test_no_bar_fills_a_buy_and_a_sell_of_one_symbol(
    targets: list[float | None], cap: float
) -> None:
    """One call per bar (a target value, or -1 = close the position, or nothing): no bar fills
    both a buy and a sell of the symbol, whatever the cap."""
    plan: dict[int, Callable[[Strategy], object]] = {}
    for k, target in enumerate(targets):
        if target is None:
            continue
        if target < 0:
            plan[k] = lambda s: s.close_position("AAA")
        else:
            plan[k] = lambda s, v=target: s.order_target_value("AAA", v)
    result = run(
        make_panel({"AAA": [FLAT] * (len(targets) + 3)}, volume=5_000.0),
        plan,
        max_volume_participation=cap,
        initial_cash=20_000.0,
        allow_short=False,
    )
    if result.fills.height:
        both = _signed_fills_per_bar(result.fills).filter(pl.col("buy") & pl.col("sell"))
        assert both.height == 0, both
