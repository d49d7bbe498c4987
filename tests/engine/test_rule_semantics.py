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
from tests.engine.helpers import make_panel, run, ts

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


# --- MaxDrawdownRule resets ----------------------------------------------------------------
# 10,000 cash; 50 shares bought at bar 0's close (100); bars 1-4 close at 78: equity 8,900,
# an 11 % drawdown past the 10 % limit. The strategy then tries to buy 1 share at every close
# 2..8 (fill="close"). Bar 5 closes at 70, bars 6-8 at 58.
DD_PRICES = [100.0, 78.0, 78.0, 78.0, 78.0, 70.0, 58.0, 58.0, 58.0]
DD_PLAN = {0: lambda s: s.buy("AAA", 50), **{k: lambda s: s.buy("AAA", 1) for k in range(2, 9)}}


def _drawdown_run(rule: object) -> tuple[list[int], object]:
    from engine import MaxDrawdownRule

    assert isinstance(rule, MaxDrawdownRule)
    bars = [(p, p, p, p) for p in DD_PRICES]
    result = run(
        make_panel({"AAA": bars}), DD_PLAN, rules=[rule], initial_cash=10_000.0, fill="close"
    )
    stamps = result.rejections.filter(pl.col("rule") == "MaxDrawdownRule")["timestamp"]
    return [[ts(k) for k in range(len(DD_PRICES))].index(t) for t in stamps.to_list()], result


def test_max_drawdown_reset_never_refuses_every_entry_after_the_breach() -> None:
    from engine import MaxDrawdownRule

    rejected, _ = _drawdown_run(MaxDrawdownRule(0.1))
    # the book is 50 shares + cash: equity (8,900 down to 7,900) never gets back within 10 %
    # of 10,000
    assert rejected == [2, 3, 4, 5, 6, 7, 8]


def test_max_drawdown_reset_bars_resumes_after_n_bars_from_a_new_peak() -> None:
    from engine import MaxDrawdownRule

    rejected, result = _drawdown_run(MaxDrawdownRule(0.1, reset="bars", resume_after_bars=3))
    # halted bars 1-3; re-armed at bar 4 with peak 8,900 (buys at 4 and 5 pass; bar 5:
    # 4,922 + 51 × 70 = 8,492 = −4.6 %); bar 6: 4,852 cash + 52 shares × 58 = 7,868
    # = −11.6 % from 8,900 → halted bars 6-8
    assert rejected == [2, 3, 6, 7, 8]
    reason = result.rejections["reason"][0]
    assert "breached at bar 1" in reason and "until bar 4" in reason


def test_max_drawdown_reset_peak_at_halt_measures_from_the_halt_equity() -> None:
    from engine import MaxDrawdownRule

    rejected, _ = _drawdown_run(MaxDrawdownRule(0.1, reset="peak_at_halt"))
    # halted at bar 1 only; peak reset to 8,900. Buys at 2-5 pass (bar 5: 4,766 + 53 × 70
    # = 8,476 = −4.8 %); bar 6: 4,696 + 54 × 58 = 7,828 = −12.0 % from 8,900 → halt, bar 6
    # only; bar 7 measures from 7,828 and passes
    assert rejected == [6]


def test_max_drawdown_flatten_with_reset_bars_flattens_then_resumes() -> None:
    from engine import MaxDrawdownRule

    rule = MaxDrawdownRule(0.1, action="flatten", reset="bars", resume_after_bars=2)
    rejected, result = _drawdown_run(rule)
    assert result.trades["exit_reason"].to_list()[0] == "MaxDrawdownRule"  # closed at bar 1
    assert rejected == [2]  # halted bars 1-2; bar 3 re-armed from the flat book's 8,900
    assert result.fills.filter(pl.col("quantity") == 1.0).height == 6  # buys at bars 3-8


def test_max_drawdown_reset_settings_checked() -> None:
    from engine import MaxDrawdownRule

    with pytest.raises(ValueError, match="resume_after_bars"):
        MaxDrawdownRule(0.1, reset="bars")
    with pytest.raises(ValueError, match="resume_after_bars"):
        MaxDrawdownRule(0.1, resume_after_bars=3)
    with pytest.raises(ValueError, match="reset"):
        MaxDrawdownRule(0.1, reset="daily")
    with pytest.raises(ValueError, match="resume_after_bars"):
        MaxDrawdownRule(0.1, reset="bars", resume_after_bars=0)
    assert MaxDrawdownRule(0.1, reset="peak_at_halt").resume_after_bars == 1


def test_max_drawdown_reset_takes_the_loop_not_the_compiled_run() -> None:
    from engine import ExecutionConfig, MarketData, MaxDrawdownRule, RiskManager, TopNStrategy
    from engine.compiled.plan import compiled_reason

    bars = [(p, p, p, p) for p in DD_PRICES]
    data = MarketData.from_frame(
        make_panel({"AAA": bars}, signals={"s": {"AAA": [1.0] * len(bars)}}),
        signal_columns=["s"],
    )
    strategy = TopNStrategy(signal="s", n=1)
    plain = RiskManager([MaxDrawdownRule(0.1)])
    reset = RiskManager([MaxDrawdownRule(0.1, reset="bars", resume_after_bars=5)])
    assert compiled_reason(data, strategy, plain, ExecutionConfig()) is None
    reason = compiled_reason(data, strategy, reset, ExecutionConfig())
    assert reason is not None and "reset='bars'" in reason


def test_composite_and_takes_the_loop_not_the_compiled_run() -> None:
    from engine import ExecutionConfig, MarketData, RiskManager, TopNStrategy
    from engine.compiled.plan import compiled_reason

    bars = _bars(set(), n=5)
    data = MarketData.from_frame(
        make_panel({"AAA": bars}, signals={"s": {"AAA": [1.0] * len(bars)}}),
        signal_columns=["s"],
    )
    reason = compiled_reason(
        data, TopNStrategy(signal="s", n=1), RiskManager([_seeds_and()]), ExecutionConfig()
    )
    assert reason is not None and "has no compiled form" in reason
