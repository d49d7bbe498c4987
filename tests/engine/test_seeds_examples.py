"""The seeds' Python examples, run as written (issue 24, item 8).

Each test copies one example of the seeds' documents (/work/shared/seeds, cited per test)
verbatim, except: the import line (``ml4t.backtest...`` → ``engine``), data (the seeds read
files that do not exist or leave ``[...]`` placeholders; here real files under
``$ML4T_DATA_ROOT`` or small hand-written panels, and dates inside the data's range), and the
lines the project refuses, each marked ``# refused:`` with our equivalent
(docs/reference/seeds-compatibility.md). Then it checks a result that can be checked by hand.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from engine import (
    BacktestEngine,
    CompositeRule,
    DynamicTrailingStop,
    ExecutionConfig,
    FunctionRule,
    MarketData,
    MarketEvent,
    MaxDailyLossRule,
    MaxDrawdownRule,
    PriceBasedStopLoss,
    RegimeDependentRule,
    RiskContext,
    RiskDecision,
    RiskManager,
    RiskRule,
    Strategy,
    TimeBasedExit,
    VolatilityScaledStopLoss,
)
from tests.engine.helpers import Script, atr_14, make_context, make_panel, ts, vix_context

# ------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def seeds_data(sp500_panel: pl.DataFrame, data_root: Path) -> MarketData:
    """40 S&P 500 stocks, 2014-2016: ``ml_score`` (20-bar return), ``atr_14`` (14-bar mean
    true range), ``sma_20``/``sma_50`` (closes), all known at the bar's close; context ``vix``
    (CBOE close stamped 16:15 New York, joined backward: an equity bar sees the previous
    session's VIX)."""
    symbols = sorted(sp500_panel["symbol"].unique().to_list())[:40]
    panel = (
        sp500_panel.filter(
            pl.col("symbol").is_in(symbols),
            pl.col("timestamp").is_between(
                datetime(2014, 1, 1, tzinfo=UTC), datetime(2016, 12, 31, tzinfo=UTC)
            ),
        )
        .sort("symbol", "timestamp")
        .with_columns(
            (pl.col("close") / pl.col("close").shift(20).over("symbol") - 1).alias("ml_score"),
            pl.col("close").rolling_mean(20).over("symbol").alias("sma_20"),
            pl.col("close").rolling_mean(50).over("symbol").alias("sma_50"),
            atr_14(),
        )
    )
    context = vix_context(panel, data_root)
    return MarketData.from_frame(
        panel,
        signal_columns=["ml_score"],
        indicator_columns=["atr_14", "sma_20", "sma_50"],
        context=context,
    )


# ---------------------------------------------------------------- 000 §9.1 (Top 25 ML strategy)


class Top25MLStrategy(Strategy):
    def on_timestamp_batch(
        self,
        timestamp: datetime,
        events: list[MarketEvent],
        context: dict[str, float],
    ):
        # VIX filtering: don't trade if VIX > 30
        vix = context.get("vix", 0)
        if vix > 30:
            return  # Skip trading

        # Rank by ML score
        ranked = sorted(events, key=lambda e: e.signals.get("ml_score", 0), reverse=True)

        # Select top 25
        top_25 = ranked[:25]

        # Equal weight allocation (4% per position)
        for event in top_25:
            if not self.has_position(event.asset_id):
                self.buy_percent(event.asset_id, 0.04)


@pytest.mark.filterwarnings("ignore:rules .* all set a stop-loss level")
def test_seeds_000_9_1_top25_runs_in_window_with_registered_rules(seeds_data: MarketData) -> None:
    """000 §9.1: strategy, ``register_rule`` and ``engine.run(start_date=, end_date=)``."""
    # refused: RiskManager(feature_provider=...) -> features are the MarketData's columns
    risk_manager = RiskManager()
    risk_manager.register_rule(
        VolatilityScaledStopLoss(atr_multiplier=2.0)  # SL = entry - 2×ATR
    )
    risk_manager.register_rule(
        DynamicTrailingStop(
            initial_trail_pct=0.05,  # 5% initial trail
            tighten_rate=0.001,  # Tightens 0.1% per bar
        )
    )
    risk_manager.register_rule(
        TimeBasedExit(max_bars=60)  # Exit after 60 bars (3 months if daily)
    )

    # refused: BacktestEngine(data_feed=..., initial_capital=...) -> data first, ExecutionConfig
    engine = BacktestEngine(
        seeds_data,
        Top25MLStrategy(),
        risk_manager,
        ExecutionConfig(initial_cash=1_000_000),
    )

    results = engine.run(
        start_date=datetime(2015, 1, 1),  # the seeds' 2020-2024 is outside the data
        end_date=datetime(2015, 12, 31),
    )

    states = results.portfolio_states
    assert states["timestamp"].min().date() >= datetime(2015, 1, 1).date()
    assert states["timestamp"].max().date() == datetime(2015, 12, 31).date()
    assert [r.name for r in risk_manager.rules] == [
        "VolatilityScaledStopLoss",
        "DynamicTrailingStop",
        "TimeBasedExit",
    ]
    assert risk_manager.rules[1].tighten_per_bar == 0.001
    fills = results.fills.filter(pl.col("side") == "buy")
    assert fills.height > 25
    # each entry is 4 % of the equity at the decision bar's close, in whole shares
    value = fills["quantity"] * fills["price_before_slippage"]
    assert (value < 0.05 * states["equity"].max()).all()
    trades = results.trades
    assert set(trades["exit_reason"].unique()) <= {
        "VolatilityScaledStopLoss",
        "DynamicTrailingStop",
        "TimeBasedExit",
        "end_of_data",
    }
    # the trail tightens 0.1 % a bar from 5 % down to 0.1 % (bar 49): every position leaves
    # by it before the 60-bar time exit; the 2-ATR stop is looser than the trail here
    assert set(trades["exit_reason"]) == {"DynamicTrailingStop"}
    assert trades.height > 100 and trades["bars_held"].max() < 60
    # no entry decided on a bar whose VIX is above 30 (August 2015 had such bars)
    vix = pl.DataFrame(
        {"submitted": seeds_data.datetimes, "vix": seeds_data.context["vix"]}
    ).with_columns(pl.col("submitted").cast(pl.Datetime("us", "UTC")))
    buys = results.orders.filter(pl.col("quantity") > 0).join(vix, on="submitted")
    assert buys.height == results.orders.filter(pl.col("quantity") > 0).height > 25
    assert (buys["vix"] <= 30).all()
    assert (vix.filter(pl.col("submitted").dt.year() == 2015)["vix"] > 30).any()


# ------------------------------------------------------------------------- 000 §9.2 use case 1


class MACrossover(Strategy):
    def on_market_data(self, event: MarketEvent):
        sma_fast = event.indicators.get("sma_20", 0)
        sma_slow = event.indicators.get("sma_50", 0)

        if sma_fast > sma_slow and not self.has_position(event.asset_id):
            self.buy(event.asset_id, 100)


def test_seeds_000_9_2_ma_crossover_holds_100_shares_20_bars(seeds_data: MarketData) -> None:
    """000 §9.2 use case 1: 100 shares when SMA-20 > SMA-50, out after 20 bars."""
    risk_manager = RiskManager()
    risk_manager.register_rule(TimeBasedExit(max_bars=20))

    results = BacktestEngine(seeds_data, MACrossover(), risk_manager).run(
        start_date=datetime(2015, 1, 1), end_date=datetime(2015, 6, 30)
    )
    trades = results.trades.filter(pl.col("exit_reason") == "TimeBasedExit")
    assert trades.height > 10
    assert (trades["quantity"].abs() == 100).all()
    # decided at the close of the 20th bar held, filled at the next open: 21 bars
    assert (trades["bars_held"] == 21).all()
    assert (trades["entry_sma_20"] > trades["entry_sma_50"]).all()


# ------------------------------------------------------------------------- 000 §9.2 use case 2


def test_seeds_000_9_2_regime_dependent_stops_follow_vix(seeds_data: MarketData) -> None:
    """000 §9.2 use case 2: stop 1.5 ATR below entry when VIX > 25, else 2.5 ATR."""
    risk_manager = RiskManager()
    regime_rule = RegimeDependentRule(
        regime_source="vix",
        high_vol_threshold=25,
        rules={
            "high_vol": VolatilityScaledStopLoss(atr_multiplier=1.5),  # Tight
            "low_vol": VolatilityScaledStopLoss(atr_multiplier=2.5),  # Wide
        },
    )
    risk_manager.register_rule(regime_rule)

    results = BacktestEngine(seeds_data, Top25MLStrategy(), risk_manager).run(
        start_date=datetime(2015, 6, 1), end_date=datetime(2016, 3, 31)
    )
    stops = results.trades.filter(pl.col("exit_reason") == "VolatilityScaledStopLoss")
    k = (stops["entry_price"] - stops["stop_loss_at_exit"]) / stops["entry_atr_14"]
    expected = pl.Series([1.5 if v > 25 else 2.5 for v in stops["entry_vix"]])
    assert stops.height > 20
    assert ((k - expected).abs() < 1e-9).all()


# ------------------------------------------------------------------------- 000 §9.2 use case 3


def test_seeds_000_9_2_portfolio_constraints_halt_new_entries() -> None:
    """000 §9.2 use case 3: after a 10 % drawdown, new buys are rejected."""
    risk_manager = RiskManager()
    risk_manager.register_rule(MaxDailyLossRule(max_loss_pct=0.02))  # -2% daily limit
    risk_manager.register_rule(MaxDrawdownRule(max_dd_pct=0.10))  # -10% DD limit
    # Trading halts automatically when limits breached

    falling = [(100, 100, 100, 100), (100, 100, 100, 100)] + [(97, 97, 97, 97)] * 2
    falling += [(88, 88, 88, 88)] * 4
    panel = make_panel({"AAA": falling, "BBB": [(50, 50, 50, 50)] * 8})
    data = MarketData.from_frame(panel)
    plan = {0: lambda s: s.buy("AAA", 1000), 5: lambda s: s.buy("BBB", 10)}
    result = BacktestEngine(
        data, Script(plan), risk_manager, ExecutionConfig(initial_cash=100_000)
    ).run()
    # 1000 shares bought at 100; at 88 equity is 88,000: a 12 % drawdown at bar 5
    assert risk_manager.rules[1].max_drawdown == 0.10
    rejected = result.rejections
    assert rejected.height == 1 and rejected["rule"][0] == "MaxDrawdownRule"
    assert result.fills.filter(pl.col("symbol") == "BBB").height == 0


# ------------------------------------------------------------------------- 003 §2.4 pattern 1


def test_seeds_003_pattern_1_builtin_rules_exit_by_time_or_atr_stop(
    seeds_data: MarketData,
) -> None:
    """003 §2.4 pattern 1: time exit after 20 bars, stop 2 ATR under the entry."""
    risk_manager = RiskManager()
    risk_manager.register_rule(TimeBasedExit(max_bars=20))
    risk_manager.register_rule(VolatilityScaledStopLoss(atr_multiplier=2.0))

    # refused: BacktestEngine(data_feed=feed, ...) -> BacktestEngine(data, ...)
    engine = BacktestEngine(
        seeds_data,
        Top25MLStrategy(),
        risk_manager=risk_manager,
    )
    trades = engine.run(start_date=datetime(2015, 1, 1), end_date=datetime(2015, 12, 31)).trades
    timed = trades.filter(pl.col("exit_reason") == "TimeBasedExit")
    stopped = trades.filter(pl.col("exit_reason") == "VolatilityScaledStopLoss")
    assert timed.height > 0 and stopped.height > 0
    assert (timed["bars_held"] == 21).all()
    k = (stopped["entry_price"] - stopped["stop_loss_at_exit"]) / stopped["entry_atr_14"]
    assert ((k - 2.0).abs() < 1e-9).all()


# ------------------------------------------------------------------------- 003 §2.4 pattern 2


def my_custom_rule(context: RiskContext) -> RiskDecision:
    if context.unrealized_pnl / context.portfolio_equity > 0.10:
        return RiskDecision(should_exit=True, reason="Position P&L exceeds 10% of portfolio")
    return RiskDecision()


def test_seeds_003_pattern_2_function_rule_exits_past_10pct_of_equity() -> None:
    """003 §2.4 pattern 2: exit once the position's P&L exceeds 10 % of equity."""
    risk_manager = RiskManager()
    risk_manager.register_rule(FunctionRule(my_custom_rule))

    # 1000 shares at 100 with 100,000 cash: P&L / equity = 1000 (c - 100) / (1000 c)
    # c = 111: 11,000 / 111,000 = 9.9 %; c = 112: 12,000 / 112,000 = 10.7 % -> exit next open
    closes = [100, 100, 105, 111, 112, 113, 114]
    panel = make_panel({"AAA": [(c, c, c, c) for c in closes]})
    result = BacktestEngine(
        MarketData.from_frame(panel),
        Script({0: lambda s: s.buy("AAA", 1000)}),
        risk_manager,
        ExecutionConfig(initial_cash=100_000),
    ).run()
    trade = result.trades.row(0, named=True)
    assert trade["exit_reason"] == "my_custom_rule"
    assert trade["exit_timestamp"] == ts(5)
    assert trade["exit_price"] == 113.0


# ------------------------------------------------------------------------- 003 §2.4 pattern 3


class CustomStopLoss(RiskRule):
    def __init__(self, max_loss_pct: float):
        self.max_loss_pct = max_loss_pct

    def evaluate(self, context: RiskContext) -> RiskDecision:
        loss_pct = context.unrealized_pnl / context.entry_price
        if loss_pct <= -self.max_loss_pct:
            return RiskDecision(
                should_exit=True, reason=f"Loss {loss_pct:.2%} exceeds {self.max_loss_pct:.2%}"
            )
        return RiskDecision()


def test_seeds_003_pattern_3_subclass_without_super_init_exits() -> None:
    """003 §2.4 pattern 3: a RiskRule subclass that never calls ``super().__init__``."""
    risk_manager = RiskManager()
    risk_manager.register_rule(CustomStopLoss(max_loss_pct=0.05))

    # 10 shares at 100: loss_pct = 10 (c - 100) / 100, <= -5 % from c <= 99.5
    closes = [100, 100, 99.8, 99.6, 99.5, 99.0, 98.0]
    panel = make_panel({"AAA": [(c, c, c, c) for c in closes]})
    result = BacktestEngine(
        MarketData.from_frame(panel), Script({0: lambda s: s.buy("AAA", 10)}), risk_manager
    ).run()
    trade = result.trades.row(0, named=True)
    assert trade["exit_reason"] == "CustomStopLoss"
    assert trade["exit_timestamp"] == ts(5)  # decided at bar 4's close (99.5), filled at 5
    assert risk_manager.rules[0].priority == 0


# ------------------------------------------------------------------------- 003 §2.4 pattern 4


def test_seeds_003_pattern_4_composites_and_or() -> None:
    """003 §2.4 pattern 4: the seeds' AND/OR modes and ``sl_pct``."""
    # All rules must agree to exit (AND logic)
    conservative_exit = CompositeRule(
        rules=[
            TimeBasedExit(max_bars=20),
            PriceBasedStopLoss(sl_pct=0.03),
        ],
        mode="AND",
    )

    # Any rule triggers exit (OR logic)
    aggressive_exit = CompositeRule(
        rules=[
            TimeBasedExit(max_bars=10),
            PriceBasedStopLoss(sl_pct=0.02),
        ],
        mode="OR",
    )

    assert conservative_exit.mode == "all" and aggressive_exit.mode == "any"
    assert conservative_exit.rules[1].stop_pct == 0.03
    # OR: the 2 % stop (level 98) fires intrabar at bar 3 though 10 bars have not passed
    bars = [(100, 100, 100, 100)] * 3 + [(99, 99, 97, 98)] + [(98, 98, 98, 98)] * 3
    result = BacktestEngine(
        MarketData.from_frame(make_panel({"AAA": bars})),
        Script({0: lambda s: s.buy("AAA", 10)}),
        RiskManager([aggressive_exit]),
    ).run()
    trade = result.trades.row(0, named=True)
    assert trade["exit_reason"] == "PriceBasedStopLoss"
    assert trade["exit_price"] == pytest.approx(98.0)
    # AND: the same bars, no exit: the stop's close condition holds but 20 bars have not passed
    result = BacktestEngine(
        MarketData.from_frame(make_panel({"AAA": bars})),
        Script({0: lambda s: s.buy("AAA", 10)}),
        RiskManager([conservative_exit]),
    ).run()
    assert result.trades.filter(pl.col("exit_reason") != "end_of_data").height == 0


# ---------------------------------------------------------------------- 002 TASK-DA-005 / 011


class BothModes(Strategy):
    def on_market_data(self, event: MarketEvent) -> None:
        pass

    def on_timestamp_batch(self, timestamp, asset_batch, context) -> None:  # type: ignore[no-untyped-def]
        pass


def test_seeds_002_da005_one_callback_auto_detected_both_refused() -> None:
    """002 TASK-DA-005: the engine detects the overridden callback and refuses both."""
    data = MarketData.from_frame(make_panel({"AAA": [(1, 1, 1, 1)] * 2}))
    with pytest.raises(TypeError, match="override exactly one"):
        BacktestEngine(data, BothModes())
    assert BacktestEngine(data, Top25MLStrategy()).batch_mode
    assert not BacktestEngine(data, MACrossover()).batch_mode


def test_seeds_002_da011_strategy_helpers_quantity_percent_positions() -> None:
    """002 TASK-DA-011: ``get_position``, ``get_all_positions`` (polars), ``buy``/``sell``
    with ``quantity`` or ``percent``, ``close_position``, ``calculate_position_size``."""
    seen: dict[str, object] = {}

    def decide(s: Strategy) -> None:
        s.buy("AAA", quantity=10)
        s.buy("BBB", percent=0.25)  # 25 % of 100,000 at a close of 50: 500 shares

    def look(s: Strategy) -> None:
        seen["positions"] = s.get_all_positions()
        seen["aaa"] = s.get_position("AAA")
        seen["size"] = s.calculate_position_size(price=50.0, atr=2.0)  # risk_pct 0.02
        s.sell("BBB", percent=0.1)  # 10 % of equity at 50: 200 shares
        s.close_position("AAA")

    panel = make_panel({"AAA": [(100, 100, 100, 100)] * 4, "BBB": [(50, 50, 50, 50)] * 4})
    result = BacktestEngine(
        MarketData.from_frame(panel),
        Script({0: decide, 2: look}),
        config=ExecutionConfig(initial_cash=100_000),
    ).run()
    positions = seen["positions"]
    assert isinstance(positions, pl.DataFrame)
    assert dict(zip(positions["symbol"], positions["quantity"], strict=True)) == {
        "AAA": 10.0,
        "BBB": 500.0,
    }
    assert seen["aaa"] == 10.0
    assert seen["size"] == 1000.0  # 0.02 × 100,000 / 2.0
    sells = result.fills.filter(pl.col("side") == "sell")
    assert dict(zip(sells["symbol"], sells["quantity"].abs(), strict=True)) == {
        "AAA": 10.0,
        "BBB": 200.0,
    }


def test_seeds_002_da011_buy_needs_exactly_one_of_quantity_percent() -> None:
    errors: list[str] = []

    def both(s: Strategy) -> None:
        for call in (
            lambda: s.buy("AAA", 10, percent=0.1),
            lambda: s.buy("AAA"),
            lambda: s.buy("AAA", percent=4),
        ):
            try:
                call()
            except ValueError as exc:
                errors.append(str(exc))

    panel = make_panel({"AAA": [(100, 100, 100, 100)] * 2})
    BacktestEngine(MarketData.from_frame(panel), Script({0: both})).run()
    assert len(errors) == 3
    assert "exactly one of quantity and percent" in errors[0]
    assert "fraction of equity in (0, 1]" in errors[2]


# --------------------------------------------------------------------------- 004 examples 1 / 3


class SimpleMLStrategy(Strategy):
    def on_market_data(self, event, context):
        pred = event.signals.get("ml_pred", 0)
        conf = event.signals.get("confidence", 0)
        position = self.get_position(event.asset_id)

        # Entry
        if pred > 0.8 and conf > 0.7 and position == 0:
            self.buy_percent(event.asset_id, 0.95)

        # Exit
        elif position > 0:
            pnl = self.get_unrealized_pnl_pct(event.asset_id)
            if pred < 0.4 or pnl < -0.05 or pnl > 0.15:
                self.close_position(event.asset_id)


def test_seeds_004_example_1_simple_ml_strategy_enters_and_exits_on_prediction() -> None:
    """004 appendix example 1: ``on_market_data(self, event, context)``."""
    closes = [100, 100, 101, 102, 103, 104, 105]
    preds = [0.5, 0.9, 0.9, 0.6, 0.3, 0.9, 0.9]
    panel = make_panel(
        {"AAPL": [(c, c, c, c) for c in closes]},
        signals={"ml_pred": {"AAPL": preds}, "confidence": {"AAPL": [0.85] * 7}},
    )
    data = MarketData.from_frame(panel, signal_columns=["ml_pred", "confidence"])
    result = BacktestEngine(
        data, SimpleMLStrategy(), config=ExecutionConfig(initial_cash=100_000)
    ).run()
    # buy at bar 1's close (pred 0.9): 95 % of 100,000 at 100 = 950 shares, filled at bar 2's
    # open (101); exit decided at bar 4 (pred 0.3) and filled at bar 5; re-entry at bar 5's
    # close, filled at bar 6 (still open at the end)
    trades = result.trades
    first = trades.row(0, named=True)
    assert first["quantity"] == 950.0 and first["entry_price"] == 101.0
    assert first["exit_timestamp"] == ts(5) and first["exit_reason"] == "strategy"
    assert trades.height == 1
    still_open = result.open_positions.row(0, named=True)
    # cash 100,000 − 950 × 101 + 950 × 104 = 102,850; 95 % of it at 104 = 939.5 → 939 shares
    assert still_open["entry_timestamp"] == ts(6) and still_open["quantity"] == 939.0


class MultiAssetMLStrategy(Strategy):
    def on_market_data(self, event, context):
        # Asset-specific
        pred = event.signals["ml_pred"]
        position = self.get_position(event.asset_id)

        # Market context (shared)
        vix = context.get("VIX")
        spy_trend = context.get("SPY_trend")  # noqa: F841 - as in the seeds

        # Regime-dependent logic
        if vix > 30:
            if position > 0:
                self.reduce_position(event.asset_id, 0.5)
            return

        # ML logic
        if pred > 0.8 and position == 0:
            size = 0.02 if vix < 20 else 0.01
            self.buy_percent(event.asset_id, size)


def test_seeds_004_example_3_reduce_position_halves_on_high_vix() -> None:
    """004 appendix example 3: ``reduce_position`` when VIX > 30, sizes by VIX."""
    n = 6
    panel = make_panel(
        {"AAA": [(100, 100, 100, 100)] * n, "BBB": [(50, 50, 50, 50)] * n},
        signals={"ml_pred": {"AAA": [0.9] * n, "BBB": [0.9] * n}},
    )
    context = make_context({"VIX": [15.0, 25.0, 35.0, 35.0, 35.0, 15.0], "SPY_trend": [0.0] * n})
    data = MarketData.from_frame(panel, signal_columns=["ml_pred"], context=context)
    result = BacktestEngine(
        data, MultiAssetMLStrategy(), config=ExecutionConfig(initial_cash=100_000)
    ).run()
    buys = result.fills.filter(pl.col("side") == "buy").sort("symbol")
    # bar 0, VIX 15: 2 % of 100,000 -> AAA 20 shares at 100, BBB 40 shares at 50
    assert buys["quantity"].to_list() == [20.0, 40.0]
    sells = result.fills.filter(pl.col("side") == "sell").sort("timestamp", "symbol")
    # VIX 35 at bars 2, 3, 4: half of the position each time (whole shares), filled next open
    assert sells.filter(pl.col("symbol") == "AAA")["quantity"].abs().to_list() == [10, 5, 2]
    assert sells.filter(pl.col("symbol") == "BBB")["quantity"].abs().to_list() == [20, 10, 5]


# ------------------------------------------------------------------ the aliases' own contracts


def _flat_data(n: int = 6) -> MarketData:
    return MarketData.from_frame(make_panel({"AAA": [(100, 100, 100, 100)] * n}))


def test_run_start_date_end_date_equal_start_end_and_refuse_both_names() -> None:
    data = _flat_data()
    plan = {0: lambda s: s.buy("AAA", 1)}
    by_seeds = BacktestEngine(data, Script(plan)).run(
        start_date=datetime(2024, 1, 4), end_date=datetime(2024, 1, 6)
    )
    ours = BacktestEngine(data, Script(plan)).run(
        start=datetime(2024, 1, 4).date(), end=datetime(2024, 1, 6).date()
    )
    assert by_seeds.portfolio_states.equals(ours.portfolio_states)
    assert by_seeds.portfolio_states["timestamp"].to_list() == [ts(2), ts(3), ts(4)]
    with pytest.raises(ValueError, match="start/end or start_date/end_date"):
        BacktestEngine(data, Script()).run(start=ts(1), start_date=ts(1))
    with pytest.raises(ValueError, match="has no timezone"):
        BacktestEngine(data, Script()).run(start_date=datetime(2024, 1, 4, 12))


def test_register_rule_refuses_a_non_rule_and_orders_by_priority() -> None:
    manager = RiskManager()
    manager.register_rule(TimeBasedExit(5, priority=1))
    manager.register_rule(PriceBasedStopLoss(sl_pct=0.1, priority=7))
    assert [r.name for r in manager.rules] == ["PriceBasedStopLoss", "TimeBasedExit"]
    assert [r.name for r in manager.position_rules] == ["TimeBasedExit"]
    with pytest.raises(ValueError, match="RiskRule instances"):
        manager.register_rule("stop")  # type: ignore[arg-type]


def test_rule_seeds_name_with_engine_name_refused_and_table_shared_with_yaml() -> None:
    from engine.risk.rules import aliases
    from ml4t_pipeline import config

    with pytest.raises(ValueError, match=r"give 'stop_pct' only \('sl_pct' is its seeds' name\)"):
        PriceBasedStopLoss(sl_pct=0.02, stop_pct=0.02)
    with pytest.raises(ValueError, match="high_vol/low_vol"):
        RegimeDependentRule(regime_source="vix", high_vol_threshold=1, rules={"calm": None})
    assert config.RULE_PARAM_ALIASES is aliases.RULE_PARAM_ALIASES


def test_reduce_position_short_buys_back_and_fraction_checked() -> None:
    errors: list[str] = []

    def bad(s: Strategy) -> None:
        try:
            s.reduce_position("AAA", 0.0)
        except ValueError as exc:
            errors.append(str(exc))
        s.reduce_position("AAA", 0.5)  # short 9 since bar 1's open: buy back 4

    plan = {0: lambda s: s.sell("AAA", 9), 1: bad, 2: lambda s: s.reduce_position("AAA", 0.5)}
    data = _flat_data()
    result = BacktestEngine(data, Script(plan), config=ExecutionConfig(allow_short=True)).run()
    assert errors == ["fraction must be in (0, 1], got 0.0"]
    # half of 9 rounded down (4, filled at bar 2), then half of the 5 left (2, at bar 3)
    buys = result.fills.filter(pl.col("side") == "buy")
    assert buys["quantity"].abs().to_list() == [4.0, 2.0]
    assert buys["timestamp"].to_list() == [ts(2), ts(3)]


def test_risk_context_seeds_names_equal_ours() -> None:
    seen: list[tuple[object, ...]] = []

    def record(context: RiskContext) -> RiskDecision:
        seen.append(
            (
                context.portfolio_equity == context.equity,
                context.portfolio_cash == context.cash,
                context.current_leverage == context.leverage,
                context.entry_bars_ago == context.bars_held,
                context.asset_id == context.symbol,
                context.market_price == context.close,
                context.position_quantity == context.quantity,
                context.max_favorable_excursion == context.mfe,
                context.max_adverse_excursion == context.mae,
                math.isnan(context.bid_price) and math.isnan(context.ask_price),
            )
        )
        return RiskDecision()

    BacktestEngine(
        _flat_data(), Script({0: lambda s: s.buy("AAA", 3)}), RiskManager([FunctionRule(record)])
    ).run()
    assert len(seen) == 5 and all(all(row) for row in seen)


def test_dynamic_trailing_stop_tighten_without_floor_tightens_to_one_step() -> None:
    """The seeds' ``tighten_rate`` alone used to do nothing (floor = initial trail)."""
    rule = DynamicTrailingStop(initial_trail_pct=0.05, tighten_rate=0.01)
    assert [rule.trail(k) for k in (0, 2, 4, 10)] == pytest.approx([0.05, 0.03, 0.01, 0.01])
    assert DynamicTrailingStop(0.05).trail(100) == 0.05  # no tightening asked: none
    assert DynamicTrailingStop(0.05, tighten_per_bar=0.2).min_trail_pct == 0.05
