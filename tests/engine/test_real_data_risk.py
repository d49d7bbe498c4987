"""Risk scenarios on the S&P 500 file with VIX context (issue 5)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from engine import (
    BacktestEngine,
    ExecutionConfig,
    MarketData,
    MaxDrawdownRule,
    PercentageCommission,
    RegimeDependentRule,
    RiskManager,
    TopNStrategy,
    VolatilityScaledStopLoss,
)
from tests.engine.helpers import atr_14, vix_context


@pytest.fixture(scope="module")
def vix_data(sp500_panel: pl.DataFrame, data_root: Path) -> MarketData:
    """Momentum score, ATR-14 (simple mean of true range) and VIX as context.

    VIX closes at 16:15 New York, after the 16:00 equity close, so it is stamped 16:15 and
    joined backward: an equity bar sees the previous session's VIX (no look-ahead).
    """
    panel = sp500_panel.sort("symbol", "timestamp").with_columns(
        (pl.col("close") / pl.col("close").shift(20).over("symbol") - 1).alias("mom_20"),
        atr_14(),
    )
    context = vix_context(panel, data_root)
    return MarketData.from_frame(
        panel, signal_columns=["mom_20"], indicator_columns=["atr_14"], context=context
    )


CFG = ExecutionConfig(commission=PercentageCommission(0.001))


def test_volatility_scaled_stops_through_vix_spikes(vix_data: MarketData) -> None:
    rule = RegimeDependentRule(
        "vix", 18.0, above=VolatilityScaledStopLoss(3.0), below=VolatilityScaledStopLoss(2.0)
    )
    result = BacktestEngine(vix_data, TopNStrategy("mom_20", 25), RiskManager([rule]), CFG).run()
    stops = result.trades.filter(pl.col("exit_reason") == "VolatilityScaledStopLoss")
    # stop distance = k × ATR of the decision bar, k chosen by the VIX regime at that bar
    k = (stops["entry_price"] - stops["stop_loss_at_exit"]) / stops["entry_atr_14"]
    expected = (stops["entry_vix"] > 18.0).cast(pl.Float64) + 2.0
    assert ((k - expected).abs() < 1e-9).all()
    assert (expected == 3.0).any() and (expected == 2.0).any()
    assert (stops["exit_price"] <= stops["stop_loss_at_exit"] + 1e-9).all()
    day = pl.col("exit_timestamp").dt.date()
    for start, end in (("2015-08-20", "2015-09-01"), ("2018-02-01", "2018-02-08")):
        window = stops.filter(day.cast(pl.String).is_between(pl.lit(start), pl.lit(end)))
        assert window.height >= 5, (start, end)


@pytest.mark.parametrize(("action", "slack"), [("halt", 0.05), ("flatten", 0.05)])
def test_max_drawdown_rule_holds_drawdown_near_limit(
    vix_data: MarketData, action: str, slack: float
) -> None:
    free = BacktestEngine(vix_data, TopNStrategy("mom_20", 25), None, CFG).run().metrics()
    limited = BacktestEngine(
        vix_data,
        TopNStrategy("mom_20", 25),
        RiskManager([MaxDrawdownRule(0.10, action=action)]),
        CFG,
    ).run()
    m = limited.metrics()
    assert free["max_drawdown"] < -0.30
    assert -0.10 - slack <= m["max_drawdown"] <= -0.10 + 1e-9
    halted = limited.rejections.filter(pl.col("rule") == "MaxDrawdownRule")
    assert halted.height > 0
    # once breached, no new entry fills happen: equity stays flat after the last fill
    last_fill = limited.fills["timestamp"].max()
    after = limited.portfolio_states.filter(pl.col("timestamp") > last_fill)
    assert after["n_positions"].max() == 0
