"""Output schemas: the engine's fills, trades and portfolio states, valid and broken."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

import engine
from ml4t_pipeline.lib.output_schemas import (
    FillsSchema,
    PortfolioStatesSchema,
    TradesSchema,
    validate_output,
)


def _ts(day: int) -> datetime:
    return datetime(2021, 3, day, 21, tzinfo=UTC)


@pytest.fixture(scope="module")
def result() -> engine.BacktestResult:
    """A tiny real engine run: buy A on day 1's close, stop it out on day 3."""
    panel = pl.DataFrame(
        {
            "timestamp": [_ts(d) for d in (1, 2, 3, 4)],
            "symbol": ["A"] * 4,
            "open": [10.0, 10.0, 9.8, 9.0],
            "high": [10.2, 10.4, 9.9, 9.5],
            "low": [9.9, 9.8, 9.0, 8.8],
            "close": [10.0, 10.1, 9.2, 9.1],
            "volume": [1e6] * 4,
            "score": [1.0, 1.0, 1.0, 1.0],
        }
    )
    data = engine.MarketData.from_frame(panel, signal_columns=["score"])
    return engine.BacktestEngine(
        data,
        engine.TopNStrategy("score", n=1, rebalance_every=100, weight=0.5),
        risk_manager=engine.RiskManager([engine.PriceBasedStopLoss(0.05)]),
        config=engine.ExecutionConfig(
            commission=engine.PercentageCommission(0.001), initial_cash=1000.0
        ),
    ).run()


def test_output_schemas_accept_engine_outputs(result: engine.BacktestResult) -> None:
    assert result.trades.height == 1  # bought at 10.0 on day 2, stopped at 9.5 on day 3
    trade = result.trades.row(0, named=True)
    assert trade["exit_reason"] == "PriceBasedStopLoss"
    # floor(0.5 × 1000 / 10) = 50 shares at day 2's open 10.0; stop 9.5 touched on day 3
    assert (trade["quantity"], trade["entry_price"], trade["exit_price"]) == (50, 10.0, 9.5)
    assert trade["commission"] == pytest.approx(0.001 * 50 * (10.0 + 9.5))
    assert trade["pnl_net"] == pytest.approx(-25.0 - 0.001 * 50 * 19.5)
    for frame, model in (
        (result.fills, FillsSchema),
        (result.trades, TradesSchema),
        (result.portfolio_states, PortfolioStatesSchema),
    ):
        assert validate_output(frame, model).height == 0


def test_trades_schema_rejects_exit_before_entry(result: engine.BacktestResult) -> None:
    broken = result.trades.with_columns(pl.col("entry_timestamp").alias("exit_timestamp"))
    broken = broken.with_columns(pl.lit(_ts(1)).alias("exit_timestamp"))
    failures = validate_output(broken, TradesSchema)
    assert "exit_not_before_entry" in failures["check"].to_list()


def test_fills_schema_rejects_negative_commission(result: engine.BacktestResult) -> None:
    broken = result.fills.with_columns(pl.lit(-1.0).alias("commission"))
    failures = validate_output(broken, FillsSchema)
    assert set(failures["column"].drop_nulls().to_list()) == {"commission"}


def test_portfolio_states_schema_rejects_positive_drawdown_and_bad_equity(
    result: engine.BacktestResult,
) -> None:
    broken = result.portfolio_states.with_columns(
        pl.lit(0.1).alias("drawdown"), (pl.col("equity") + 5.0).alias("equity")
    )
    checks = set(validate_output(broken, PortfolioStatesSchema)["check"].to_list())
    assert "less_than_or_equal_to(0)" in checks
    assert "equity_is_cash_plus_positions" in checks
