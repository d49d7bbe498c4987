"""Core behaviour on tiny hand-built inputs, every expected number worked out in the comments.

These cases do not need ``../shared/data``: the stop trigger at exactly the stop price, the
drawdown's running peak, and quarantine of invalid price rows (issue 14). Only the public API of
``engine`` (and ``ml4t_pipeline.lib`` for quarantine) is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from engine import (
    BacktestEngine,
    BacktestResult,
    BarBatch,
    ExecutionConfig,
    MarketData,
    PriceBasedStopLoss,
    RiskManager,
    Strategy,
    compute_metrics,
)
from ml4t_pipeline.lib.features import compute_features
from ml4t_pipeline.lib.io import to_prices_contract
from ml4t_pipeline.lib.panel import build_market_panel
from ml4t_pipeline.lib.schemas import validate_prices

T0 = datetime(2024, 1, 2, 21, tzinfo=UTC)  # a 16:00 New York close in winter


def bar_time(k: int) -> datetime:
    return T0 + timedelta(days=k)


def panel(bars: Sequence[tuple[float, float, float, float]], symbol: str = "AAA") -> pl.DataFrame:
    """One symbol's daily bars (open, high, low, close), volume 1e6."""
    return pl.DataFrame(
        {
            "timestamp": [bar_time(k) for k in range(len(bars))],
            "symbol": [symbol] * len(bars),
            "open": [b[0] for b in bars],
            "high": [b[1] for b in bars],
            "low": [b[2] for b in bars],
            "close": [b[3] for b in bars],
            "volume": [1e6] * len(bars),
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )


class BuyOnFirstBar(Strategy):
    """Buys ``quantity`` of AAA at the first bar's decision, then does nothing."""

    def __init__(self, quantity: float) -> None:
        self.quantity = quantity
        self.bought = False

    def on_start(self) -> None:
        self.bought = False

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        if not self.bought:
            self.buy("AAA", self.quantity)
            self.bought = True


def run(
    frame: pl.DataFrame, quantity: float, rules: list[object] | None = None, **config: object
) -> BacktestResult:
    risk = RiskManager(list(rules)) if rules else None  # type: ignore[arg-type]
    engine = BacktestEngine(
        MarketData.from_frame(frame),
        BuyOnFirstBar(quantity),
        risk,
        ExecutionConfig(**config),  # type: ignore[arg-type]
    )
    return engine.run()


# --- the stop trigger at exactly the stop price ----------------------------------------------
# Bar 0 decides to buy 10; next_open fills at bar 1's open, 100. A 25 % stop sits at
# 100 * (1 - 0.25) = 75 (exact in binary floating point), active from bar 2 (not on the entry
# bar). Bar 2 decides the case.

DECIDE = (100.0, 101.0, 99.0, 100.0)
ENTRY = (100.0, 102.0, 98.0, 100.0)
AFTER = (78.0, 79.0, 77.0, 78.0)


def stop_run(bar2: tuple[float, float, float, float]) -> BacktestResult:
    return run(panel([DECIDE, ENTRY, bar2, AFTER]), 10, [PriceBasedStopLoss(0.25)])


def test_stop_loss_low_exactly_at_stop_fills_at_stop() -> None:
    # low == 75 touches the level: the stop fills at 75 on bar 2; pnl = 10 * (75 - 100) = -250.
    result = stop_run((80.0, 81.0, 75.0, 78.0))
    trade = result.trades.row(0, named=True)
    assert trade["exit_timestamp"] == bar_time(2)
    assert trade["exit_price"] == 75.0
    assert trade["exit_reason"] == "PriceBasedStopLoss"
    assert trade["pnl_net"] == pytest.approx(-250.0)


def test_stop_loss_low_one_cent_above_stop_does_not_fill() -> None:
    # low 75.01 > 75: not touched on bar 2, and bar 3's low 77 neither; only the entry fills.
    result = stop_run((80.0, 81.0, 75.01, 78.0))
    assert result.fills.height == 1
    assert result.fills["price"].to_list() == [100.0]
    closed = result.trades.filter(pl.col("exit_reason") == "PriceBasedStopLoss")
    assert closed.height == 0


def test_stop_loss_gap_below_stop_fills_at_open() -> None:
    # bar 2 opens at 74, already below the 75 stop: the exit fills at the open, 74, not at 75;
    # pnl = 10 * (74 - 100) = -260.
    result = stop_run((74.0, 76.0, 73.0, 75.0))
    trade = result.trades.row(0, named=True)
    assert trade["exit_timestamp"] == bar_time(2)
    assert trade["exit_price"] == 74.0
    assert trade["pnl_net"] == pytest.approx(-260.0)


# --- the drawdown's running peak -------------------------------------------------------------


def test_drawdown_measured_from_running_peak() -> None:
    # Cash 2000; buy 10 at bar 0's close 100 (fill: close) leaves 1000 cash, so
    # equity = 1000 + 10 * close:
    #   closes  100   110   99    105   120   90
    #   equity  2000  2100  1990  2050  2200  1900
    #   peak    2000  2100  2100  2100  2200  2200   (running max, starting at the cash 2000)
    #   dd      0     0     -10/210 -5/210 0  -300/2200
    # A peak frozen at the start would give bar 5 1900/2000 - 1 = -0.05; a peak taken over the
    # whole series (look-ahead) would give bar 2 1990/2200 - 1.
    closes = [100.0, 110.0, 99.0, 105.0, 120.0, 90.0]
    bars = [(c, c + 1, c - 1, c) for c in closes]
    result = run(panel(bars), 10, fill="close", initial_cash=2000.0)
    states = result.portfolio_states
    assert states["equity"].to_list() == pytest.approx([2000, 2100, 1990, 2050, 2200, 1900])
    expected = [0.0, 0.0, 1990 / 2100 - 1, 2050 / 2100 - 1, 0.0, 1900 / 2200 - 1]
    assert states["drawdown"].to_list() == pytest.approx(expected)
    metrics = compute_metrics(states, result.trades, initial_cash=2000.0)
    assert metrics["max_drawdown"] == pytest.approx(-3 / 22)  # 1900 / 2200 - 1


# --- quarantine ------------------------------------------------------------------------------


def test_quarantine_keeps_invalid_rows_with_reason_and_leaves_them_out_of_the_panel() -> None:
    # Two symbols x 3 days; two bad rows:
    #   row 1 (A, day 1): high 99 < low 101 (and high < open/close, low > open/close);
    #   row 4 (B, day 1): open is null.
    # The prices asset's quarantine policy = validate_prices -> invalid (kept with reason)
    # + drop_invalid (left for the panel).
    raw = pl.DataFrame(
        {
            "timestamp": [datetime(2024, 1, d) for d in (2, 3, 4)] * 2,
            "symbol": ["A"] * 3 + ["B"] * 3,
            "open": [10.0, 100.0, 10.0, 20.0, None, 20.0],
            "high": [11.0, 99.0, 11.0, 21.0, 21.0, 21.0],
            "low": [9.0, 101.0, 9.0, 19.0, 19.0, 19.0],
            "close": [10.0, 100.0, 10.0, 20.0, 20.0, 20.0],
            "volume": [1e3] * 6,
        }
    )
    prices = to_prices_contract(raw)  # sorted (timestamp, symbol): A1 at row 2, B1 at row 3
    report = validate_prices(prices)
    quarantine = report.invalid.sort("row_index")
    assert quarantine["row_index"].to_list() == [2, 3]
    assert quarantine["symbol"].to_list() == ["A", "B"]
    assert quarantine["reason"].to_list() == [
        "high_at_or_above_open_close; low_at_or_below_open_close; high_at_or_above_low",
        "ohlcv_not_null",
    ]
    assert quarantine["open"].to_list() == [100.0, None]  # original values kept, not repaired
    kept = report.drop_invalid(prices)
    assert kept.height == 4 and report.valid.height == 4
    signals = pl.DataFrame(
        schema={
            "timestamp": pl.Datetime("us", "UTC"),
            "symbol": pl.String,
            "available_at": pl.Datetime("us", "UTC"),
            "score": pl.Float64,
        }
    )
    market = build_market_panel(kept, compute_features(kept), signals)
    day1 = prices["timestamp"][2]
    assert market.height == 4
    assert market.filter(pl.col("timestamp") == day1).height == 0  # both day-1 rows left out
