"""Our Sharpe, Sortino, max drawdown, CAGR and Calmar equal empyrical-reloaded's on real returns.

empyrical-reloaded (Apache-2.0) is an independent implementation of the same textbook formulas.
The conventions, compared term by term (``engine.compute_metrics`` vs ``empyrical.stats``):

- Returns: both take the bar returns ``r_t = E_t / E_{t-1} - 1`` with ``E_0`` the initial cash;
  we pass empyrical exactly the series :func:`ml4t_pipeline.lib.performance.strategy_returns`
  gives, so the first bar's return (from the initial cash) is included in both.
- Annualisation: both use a fixed number of bars per year ``P`` (``annualization=P``): ours is
  ``reporting.periods_per_year`` (252 by default), never a calendar-day count. When
  ``compute_performance`` is called without ``periods_per_year`` it infers ``P`` from the
  timestamps (:func:`~ml4t_pipeline.lib.performance.infer_periods_per_year`); the matched
  comparison then passes that ``P`` to empyrical.
- Sharpe: ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(P)`` in both.
- Sortino: both use the downside deviation over **all** bars (``sqrt(mean(min(r - rf, 0)^2))``,
  Sortino & Price 1994), not the standard deviation of the negative bars only.
- Risk-free rate: ours is an annual rate ``R_f`` turned into ``rf = (1 + R_f)^(1/P) - 1`` per
  bar; empyrical takes the per-bar rate, so we pass it ``rf`` (and ``required_return=rf``
  for Sortino).
- CAGR: ``(E_n / E_0)^(P / n) - 1`` with ``n`` bars in both (empyrical compounds the returns,
  we divide the end equity by the start; the same number up to rounding).
- Max drawdown: both anchor the running peak at the starting value, so a loss on the first bar
  is a drawdown. Calmar: CAGR / |max drawdown| in both.

With the conventions matched the formulas are identical, so the comparison tolerance is the
rounding of two summation orders (relative 1e-10), not a modelling allowance.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import engine
from ml4t_pipeline import DataPreparer
from ml4t_pipeline.lib import performance
from ml4t_pipeline.lib.io import load_demo_prices

empyrical = pytest.importorskip("empyrical", reason="empyrical-reloaded is in the dev extra")

RTOL = 1e-10
DATA_ROOT = Path(os.environ.get("ML4T_DATA_ROOT", "../shared/data"))
SP500 = DATA_ROOT / "sp500_5yr_daily_ohlcv.parquet"
CASH = 1_000_000.0


def _momentum_run(prices: pl.DataFrame, n: int) -> engine.BacktestResult:
    """Top-n by 20-bar return, 5 % stop, 0.1 % commission: a real strategy's equity curve."""
    data = DataPreparer(prices).add_features().validate(invalid_rows="quarantine").to_market_data()
    return engine.BacktestEngine(
        data,
        engine.TopNStrategy("ret_20", n=n),
        risk_manager=engine.RiskManager([engine.PriceBasedStopLoss(0.05)]),
        config=engine.ExecutionConfig(
            commission=engine.PercentageCommission(0.001), initial_cash=CASH
        ),
    ).run()


@pytest.fixture(scope="module")
def runs() -> dict[str, pl.DataFrame]:
    out = {"demo_top2": _momentum_run(load_demo_prices(), n=2).portfolio_states}
    if SP500.is_file():
        raw = pl.read_parquet(SP500)
        symbols = sorted(raw["symbol"].unique().to_list())[::5]  # 101 symbols, every day
        out["sp500_top10"] = _momentum_run(raw.filter(pl.col("symbol").is_in(symbols)), 10)
        out["sp500_top10"] = out["sp500_top10"].portfolio_states
    elif os.environ.get("CI"):
        pytest.fail(f"CI=true but {SP500} is missing")
    return out


def _returns(states: pl.DataFrame) -> np.ndarray:
    return performance.strategy_returns(states, CASH)["return"].to_numpy()


def _expected(returns: np.ndarray, ppy: float, rf_annual: float) -> dict[str, float]:
    rf = (1.0 + rf_annual) ** (1.0 / ppy) - 1.0
    return {
        "sharpe": empyrical.sharpe_ratio(returns, risk_free=rf, annualization=ppy),
        "sortino": empyrical.sortino_ratio(returns, required_return=rf, annualization=ppy),
        "max_drawdown": empyrical.max_drawdown(returns),
        "cagr": empyrical.annual_return(returns, annualization=ppy),
        "calmar": empyrical.calmar_ratio(returns, annualization=ppy),
        "annual_volatility": empyrical.annual_volatility(returns, annualization=ppy),
    }


@pytest.mark.parametrize("rf_annual", [0.0, 0.02])
@pytest.mark.parametrize("run", ["demo_top2", "sp500_top10"])
def test_engine_metrics_real_returns_equal_empyrical(runs, run, rf_annual):
    if run not in runs:
        pytest.skip(f"no S&P file under {DATA_ROOT}")
    states = runs[run]
    ours = engine.compute_metrics(states, pl.DataFrame(), 252.0, rf_annual, initial_cash=CASH)
    theirs = _expected(_returns(states), 252.0, rf_annual)
    assert ours["max_drawdown"] < -0.05  # a real curve with real drawdowns
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, rel=RTOL), name


@pytest.mark.parametrize("run", ["demo_top2", "sp500_top10"])
def test_compute_performance_inferred_bars_per_year_equals_empyrical_with_same_p(runs, run):
    if run not in runs:
        pytest.skip(f"no S&P file under {DATA_ROOT}")
    states = runs[run]
    ours = performance.compute_performance(states, pl.DataFrame(), initial_cash=CASH)
    ppy = performance.infer_periods_per_year(states["timestamp"])
    assert ours["periods_per_year"] == ppy and 245 < ppy < 255
    theirs = _expected(_returns(states), ppy, 0.0)
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, rel=RTOL), name


def test_metrics_loss_on_first_bar_counts_as_drawdown_like_empyrical():
    # Start 100, then 90, 95, 80, 120: the first bar's loss is part of the drawdown (peak 100).
    states = pl.DataFrame({"equity": [90.0, 95.0, 80.0, 120.0]})
    ours = engine.compute_metrics(states, pl.DataFrame(), 252.0, initial_cash=100.0)
    returns = np.array([90 / 100, 95 / 90, 80 / 95, 120 / 80]) - 1.0
    assert ours["max_drawdown"] == pytest.approx(-0.2, rel=RTOL)
    assert empyrical.max_drawdown(returns) == pytest.approx(-0.2, rel=RTOL)
    assert ours["cagr"] == pytest.approx(empyrical.annual_return(returns), rel=RTOL)
    assert ours["sortino"] == pytest.approx(empyrical.sortino_ratio(returns), rel=RTOL)
