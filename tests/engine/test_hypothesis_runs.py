"""Accounting invariants over generated runs with stop-loss, take-profit and time exits.

The generator is built so the runs are not vacuous: volatile random walks (1.5-4 % daily
moves), rule levels scaled to the volatility (stop and target 1-2.5 daily standard deviations
from the entry, a 2-4 bar time exit, so each of the three can come first) and a strategy that
re-enters every symbol as soon as it is flat. ``test_generated_runs_exercise_fills_and_each_exit``
checks that claim on a fixed, seeded sample of the same generator: at least 80 % of the runs fill
an order, and each of the three exits happens in most runs.

The same invariants are checked for the built-in TopN strategy on a random score, through the
compiled whole-run path and through the per-timestamp loop.

Invariants checked on every run, each from the fills alone (not from the engine's own totals):

- cash at every bar = initial cash - sum over fills so far of (signed quantity x price +
  commission);
- equity = cash + sum of positions (cumulated signed fill quantities) x that bar's close;
- cash never negative and no position below zero (long-only, no margin);
- every fill price lies within its bar's low-high range;
- sum of trades' pnl_net + sum of open positions' unrealized pnl = final equity - initial cash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine import (
    BacktestEngine,
    BacktestResult,
    BarBatch,
    ExecutionConfig,
    MarketData,
    PercentageCommission,
    PriceBasedStopLoss,
    PriceBasedTakeProfit,
    RiskManager,
    Strategy,
    TimeBasedExit,
    TopNStrategy,
)

T0 = datetime(2024, 1, 2, 21, tzinfo=UTC)
INITIAL_CASH = 100_000.0
EXITS = ("PriceBasedStopLoss", "PriceBasedTakeProfit", "TimeBasedExit")


@dataclass(frozen=True)
class Case:
    """One generated run: market parameters, rule levels and the noise seed."""

    n_symbols: int
    n_bars: int
    vol: float  # daily standard deviation of log returns
    drift: float  # daily mean log return
    stop_vols: float  # stop distance in daily standard deviations
    take_profit_vols: float
    max_bars: int
    weight: float  # fraction of equity per entry
    fill: str
    seed: int


def case_from_rng(rng: np.random.Generator) -> Case:
    """The generator as a plain function of a NumPy generator (for the seeded sample)."""
    return Case(
        n_symbols=int(rng.integers(1, 5)),
        n_bars=int(rng.integers(30, 81)),
        vol=float(rng.uniform(0.015, 0.04)),
        drift=float(rng.uniform(-0.003, 0.003)),
        stop_vols=float(rng.uniform(1.0, 2.5)),
        take_profit_vols=float(rng.uniform(1.0, 2.5)),
        max_bars=int(rng.integers(2, 5)),
        weight=float(rng.uniform(0.05, 0.3)),
        fill=str(rng.choice(["next_open", "close"])),
        seed=int(rng.integers(0, 2**31)),
    )


cases = st.builds(
    Case,
    n_symbols=st.integers(1, 4),
    n_bars=st.integers(30, 80),
    vol=st.floats(0.015, 0.04),
    drift=st.floats(-0.003, 0.003),
    stop_vols=st.floats(1.0, 2.5),
    take_profit_vols=st.floats(1.0, 2.5),
    max_bars=st.integers(2, 4),
    weight=st.floats(0.05, 0.3),
    fill=st.sampled_from(["next_open", "close"]),
    seed=st.integers(0, 2**31 - 1),
)
"""The same distribution as :func:`case_from_rng`, for hypothesis (shrinkable)."""


def make_panel(case: Case) -> pl.DataFrame:
    """Random-walk OHLC bars: gap open, close from the open, high/low beyond both."""
    rng = np.random.default_rng(case.seed)
    n, k = case.n_bars, case.n_symbols
    start = rng.uniform(20, 200, size=k)
    gap = rng.normal(0, case.vol / 3, size=(n, k))
    body = rng.normal(case.drift, case.vol, size=(n, k))
    wick_up = np.abs(rng.normal(0, case.vol / 2, size=(n, k)))
    wick_down = np.abs(rng.normal(0, case.vol / 2, size=(n, k)))
    close = np.empty((n, k))
    opn = np.empty((n, k))
    prev = start
    for t in range(n):
        opn[t] = prev * np.exp(gap[t])
        close[t] = opn[t] * np.exp(body[t])
        prev = close[t]
    high = np.maximum(opn, close) * np.exp(wick_up)
    low = np.minimum(opn, close) * np.exp(-wick_down)
    rows = {
        "timestamp": [T0 + timedelta(days=t) for t in range(n) for _ in range(k)],
        "symbol": [f"S{j}" for _ in range(n) for j in range(k)],
        "open": opn.ravel(),
        "high": high.ravel(),
        "low": low.ravel(),
        "close": close.ravel(),
        "volume": np.full(n * k, 1e6),
    }
    return pl.DataFrame(rows, schema_overrides={"timestamp": pl.Datetime("us", "UTC")})


class ReenterWhenFlat(Strategy):
    """Buys ``floor(weight x equity / close)`` of every symbol that is flat with no open order."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        equity = self.equity
        for symbol, close in zip(batch.symbols, batch.close, strict=True):
            sym = str(symbol)
            if self.get_position(sym) != 0 or self.open_orders(sym):
                continue
            quantity = math.floor(self.weight * equity / close)
            if quantity >= 1:
                self.buy(sym, quantity)


def run_case(case: Case) -> tuple[pl.DataFrame, BacktestResult]:
    panel = make_panel(case)
    rules = RiskManager(
        [
            PriceBasedStopLoss(case.stop_vols * case.vol),
            PriceBasedTakeProfit(case.take_profit_vols * case.vol),
            TimeBasedExit(case.max_bars),
        ]
    )
    config = ExecutionConfig(
        fill=case.fill, commission=PercentageCommission(0.001), initial_cash=INITIAL_CASH
    )
    result = BacktestEngine(
        MarketData.from_frame(panel), ReenterWhenFlat(case.weight), rules, config
    ).run()
    return panel, result


def run_top_n(
    case: Case, n: int, rebalance_every: int, compiled: bool
) -> tuple[pl.DataFrame, BacktestResult, str | None]:
    """The built-in TopN on a random score column (the compiled path qualifies for it)."""
    panel = make_panel(case)
    score = np.random.default_rng(case.seed + 1).normal(size=panel.height)
    panel = panel.with_columns(pl.Series("score", score))
    rules = RiskManager(
        [
            PriceBasedStopLoss(case.stop_vols * case.vol),
            PriceBasedTakeProfit(case.take_profit_vols * case.vol),
            TimeBasedExit(case.max_bars),
        ]
    )
    config = ExecutionConfig(
        fill="next_open", commission=PercentageCommission(0.001), initial_cash=INITIAL_CASH
    )
    engine = BacktestEngine(
        MarketData.from_frame(panel, signal_columns=["score"]),
        TopNStrategy("score", n=n, rebalance_every=rebalance_every),
        rules,
        config,
        compiled=compiled,
    )
    return panel, engine.run(), engine.compiled_reason


def check_accounting(panel: pl.DataFrame, result: BacktestResult) -> None:
    states = result.portfolio_states.sort("timestamp")
    fills = result.fills
    # Cash and positions per bar, rebuilt from the fills.
    flows = fills.group_by("timestamp").agg(
        (-(pl.col("quantity") * pl.col("price")) - pl.col("commission")).sum().alias("flow")
    )
    cash = (
        states.select("timestamp")
        .join(flows, on="timestamp", how="left")
        .sort("timestamp")
        .select(INITIAL_CASH + pl.col("flow").fill_null(0.0).cum_sum())
        .to_series()
    )
    assert np.allclose(states["cash"].to_numpy(), cash.to_numpy(), rtol=0, atol=1e-6)
    held = (
        panel.select("timestamp", "symbol", "close")
        .join(
            fills.group_by("timestamp", "symbol").agg(pl.col("quantity").sum().alias("q")),
            on=["timestamp", "symbol"],
            how="left",
        )
        .sort("symbol", "timestamp")
        .with_columns(pl.col("q").fill_null(0.0).cum_sum().over("symbol").alias("position"))
    )
    assert held["position"].min() >= 0  # type: ignore[operator]
    marked = (
        held.group_by("timestamp")
        .agg((pl.col("position") * pl.col("close")).sum().alias("positions_value"))
        .sort("timestamp")
    )
    equity = states["cash"].to_numpy() + marked["positions_value"].to_numpy()
    assert np.allclose(states["equity"].to_numpy(), equity, rtol=1e-12, atol=1e-6)
    assert states["cash"].min() >= -1e-9  # type: ignore[operator]
    # Every fill (no slippage here) is at a price the bar traded: low <= price <= high.
    priced = fills.join(panel, on=["timestamp", "symbol"], how="left")
    assert priced["low"].null_count() == 0
    assert (priced["price"] >= priced["low"] - 1e-9).all()
    assert (priced["price"] <= priced["high"] + 1e-9).all()
    final = float(states["equity"][-1])
    realized = float(result.trades["pnl_net"].sum())
    unrealized = float(result.open_positions["unrealized_pnl"].sum())
    assert realized + unrealized == pytest.approx(final - INITIAL_CASH, abs=1e-6)


def exits_of(result: BacktestResult) -> set[str]:
    return set(result.trades["exit_reason"].to_list()) & set(EXITS)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(case=cases)
def test_generated_runs_keep_cash_positions_and_equity_consistent(case: Case) -> None:
    panel, result = run_case(case)
    check_accounting(panel, result)
    event(f"filled an order: {result.fills.height > 0}")
    for name in EXITS:
        event(f"{name} exit: {name in exits_of(result)}")


def test_generated_runs_exercise_fills_and_each_exit() -> None:
    # A fixed sample of 40 runs of the same generator (seeded, so the same cases every time).
    rng = np.random.default_rng(20261203)
    results = [run_case(case_from_rng(rng))[1] for _ in range(40)]
    filled = sum(r.fills.height > 0 for r in results) / len(results)
    assert filled >= 0.8
    for name in EXITS:
        share = sum(name in exits_of(r) for r in results) / len(results)
        assert share > 0.5, f"{name} exits happen in only {share:.0%} of the runs"


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    case=cases,
    n=st.integers(1, 3),
    rebalance_every=st.integers(1, 4),
    compiled=st.booleans(),
)
def test_generated_top_n_runs_keep_accounting_on_both_paths(
    case: Case, n: int, rebalance_every: int, compiled: bool
) -> None:
    # The same invariants for the built-in TopN strategy, through the compiled whole-run path
    # and through the per-timestamp loop.
    panel, result, reason = run_top_n(case, min(n, case.n_symbols), rebalance_every, compiled)
    assert (reason is None) == compiled, reason
    check_accounting(panel, result)
    event(f"compiled={compiled} filled: {result.fills.height > 0}")
