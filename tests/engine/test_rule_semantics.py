"""Risk rules do what their names say (issue 24): ``CompositeRule`` AND gates its price-level
members; ``MaxDrawdownRule(action="halt")`` re-arms as its ``reset`` setting says."""

from __future__ import annotations

import polars as pl
import pytest

from engine import (
    CompositeRule,
    PriceBasedStopLoss,
    PriceBasedTakeProfit,
    TimeBasedExit,
)
from tests.engine.conftest import make_panel, run, ts

FLAT = (100.0, 100.0, 100.0, 100.0)
DIP = (97.0, 97.5, 96.5, 97.0)  # closes 3 % under the entry price 100


def _bars(dips: set[int], n: int = 20) -> list[tuple[float, float, float, float]]:
    return [DIP if k in dips else FLAT for k in range(n)]


def _seeds_and() -> CompositeRule:
    """The seeds' example: AND(TimeBasedExit(10), 2 % stop)."""
    return CompositeRule([TimeBasedExit(10), PriceBasedStopLoss(0.02)], mode="all")


BUY = {0: lambda s: s.buy("AAA", 10)}  # decided at bar 0's close, filled at bar 1's open (100)


def test_composite_and_stop_alone_before_time_limit_no_exit() -> None:
    # closes 3 % under entry on bars 3-4 (stop alone would fire), recovers; held to the end
    result = run(make_panel({"AAA": _bars({3, 4})}), BUY, rules=[_seeds_and()])
    assert result.trades.height == 0
    assert result.fills.height == 1  # only the entry


def test_composite_or_same_path_stop_exits_at_the_dip() -> None:
    rule = CompositeRule([TimeBasedExit(10), PriceBasedStopLoss(0.02)], mode="any")
    result = run(make_panel({"AAA": _bars({3, 4})}), BUY, rules=[rule])
    trade = result.trades.row(0, named=True)
    # the OR stop (98) is an intrabar level: bar 3 opens at 97 below it, fills at the open
    assert trade["exit_reason"] == "PriceBasedStopLoss"
    assert trade["exit_timestamp"] == ts(3) and trade["exit_price"] == 97.0


def test_composite_and_time_alone_without_stop_no_exit() -> None:
    result = run(make_panel({"AAA": _bars(set(), n=25)}), BUY, rules=[_seeds_and()])
    assert result.trades.height == 0  # held 23 bars, never 2 % down: the AND never holds


def test_composite_and_both_hold_exits_named_after_composite() -> None:
    # entry bar 1 (bars_held 0); bar 11 is the first close with bars_held >= 10. The dip at
    # bar 5 does nothing; the dip at bar 13 (held 12) is the first close where both hold.
    result = run(make_panel({"AAA": _bars({5, 13, 14})}), BUY, rules=[_seeds_and()])
    trade = result.trades.row(0, named=True)
    assert trade["exit_reason"] == "CompositeALL(TimeBasedExit+PriceBasedStopLoss)"
    # a market exit decided at bar 13's close fills at bar 14's open
    assert trade["exit_timestamp"] == ts(14) and trade["exit_price"] == 97.0
    assert result.trades.height == 1


def test_composite_and_custom_name_is_the_exit_reason() -> None:
    rule = CompositeRule([TimeBasedExit(10), PriceBasedStopLoss(0.02)], mode="all", name="LateStop")
    result = run(make_panel({"AAA": _bars({13})}), BUY, rules=[rule])
    assert result.trades["exit_reason"].to_list() == ["LateStop"]


def test_composite_and_take_profit_member_acts_at_a_close_at_or_above_target() -> None:
    up = (103.0, 103.5, 102.5, 103.0)
    bars = [up if k in (2, 12) else FLAT for k in range(20)]
    rule = CompositeRule([TimeBasedExit(10), PriceBasedTakeProfit(0.03)], mode="all")
    result = run(make_panel({"AAA": bars}), BUY, rules=[rule])
    # bar 2 closes at the 103 target but has been held 1 bar; bar 12 (held 11) exits
    assert result.trades["exit_timestamp"].to_list() == [ts(13)]


def test_composite_and_decision_lists_members_in_metadata() -> None:
    from engine import FunctionRule, RiskDecision

    seen: list[RiskDecision] = []
    rule = _seeds_and()

    def spy(context: object) -> RiskDecision:
        seen.append(rule.evaluate(context))  # type: ignore[arg-type]
        return RiskDecision.hold()

    run(make_panel({"AAA": _bars({13})}), BUY, rules=[FunctionRule(spy, "Spy")])
    exits = [d for d in seen if d.should_exit]
    assert exits, "the AND composite never decided to exit"
    assert exits[0].rule == rule.name
    assert exits[0].metadata["members"] == ["TimeBasedExit", "PriceBasedStopLoss"]
    assert set(exits[0].metadata["member_reasons"]) == {"TimeBasedExit", "PriceBasedStopLoss"}


def test_composite_and_sets_no_intrabar_level() -> None:
    rule = _seeds_and()
    assert not rule.sets_levels_on_entry and rule.evaluates_positions
    result = run(make_panel({"AAA": _bars(set())}), BUY, rules=[rule])
    assert result.open_positions["stop_loss"].is_nan().all()


def test_composite_unknown_mode_raises() -> None:
    with pytest.raises(ValueError, match="mode"):
        CompositeRule([TimeBasedExit(1)], mode="both")


def test_composite_and_on_sp500_no_exit_before_ten_bars_and_every_exit_below_stop(
    sp500_panel: pl.DataFrame,
) -> None:
    """The seeds' AND(TimeBasedExit(10), 2 % stop) on the top 25 by 20-day return, 2014: each
    risk exit is the composite's, decided at a close >= 10 bars after entry and 2 % under it
    (on this setup the old code gave stop exits from the first days of a position)."""
    from engine import (
        BacktestEngine,
        ExecutionConfig,
        MarketData,
        RiskManager,
        TopNStrategy,
    )

    panel = (
        sp500_panel.sort("symbol", "timestamp")
        .with_columns((pl.col("close") / pl.col("close").shift(20).over("symbol") - 1).alias("s"))
        .filter(pl.col("timestamp").dt.year() == 2014)
    )
    data = MarketData.from_frame(panel, signal_columns=["s"])
    rule = _seeds_and()
    result = BacktestEngine(
        data,
        TopNStrategy(signal="s", n=25, rebalance_every=5),
        RiskManager([rule]),
        ExecutionConfig(initial_cash=1e6),
    ).run()
    trades = result.trades
    reasons = set(trades["exit_reason"].to_list())
    assert rule.name in reasons and "PriceBasedStopLoss" not in reasons
    risk_exits = trades.filter(pl.col("exit_reason") == rule.name)
    closes = panel.select("timestamp", "symbol", "close")
    # the decision bar is the bar before the exit fill (market exit at the next open)
    decided = risk_exits.join(
        closes.with_columns(pl.col("timestamp").shift(-1).over("symbol").alias("next_ts")),
        left_on=["symbol", "exit_timestamp"],
        right_on=["symbol", "next_ts"],
    ).with_columns((pl.col("close") / pl.col("entry_price") - 1).alias("decision_return"))
    assert decided.height == risk_exits.height > 0
    assert (decided["decision_return"] <= -0.02 + 1e-12).all()
    assert (risk_exits["bars_held"] >= 11).all()  # decided at bars_held >= 10, filled a bar on
