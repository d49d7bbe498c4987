"""Metrics of ml4t_pipeline.lib.performance against numbers worked out by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ml4t_pipeline.lib import performance as perf

P = 252.0


def _states(equity: list[float], start: datetime | None = None) -> pl.DataFrame:
    """Daily bars at 21:00 UTC, one per calendar day, with n_positions = 1."""
    start = start or datetime(2020, 1, 1, 21, tzinfo=UTC)
    return pl.DataFrame(
        {
            "timestamp": [start + timedelta(days=i) for i in range(len(equity))],
            "equity": equity,
            "n_positions": [1] * len(equity),
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )


def _trades(pnl_gross: list[float], commission: list[float], slippage: list[float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "pnl_gross": pnl_gross,
            "commission": commission,
            "slippage": slippage,
            "pnl_net": [g - c for g, c in zip(pnl_gross, commission, strict=True)],
        }
    )


NO_TRADES = _trades([], [], [])


def test_performance_flat_series_all_zero() -> None:
    states = _states([100.0, 100.0, 100.0])
    bench = pl.DataFrame({"timestamp": states["timestamp"], "benchmark_return": [0.0, 0.0, 0.0]})
    m = perf.compute_performance(
        states, NO_TRADES, benchmark=bench, periods_per_year=P, initial_cash=100.0
    )
    for key in ("total_return", "cagr", "annual_volatility", "sharpe", "sortino"):
        assert m[key] == 0.0, key
    assert m["max_drawdown"] == 0.0
    assert m["max_drawdown_duration_bars"] == 0
    assert m["max_drawdown_duration_days"] == 0.0
    assert m["calmar"] == 0.0
    assert m["expectancy"] == 0.0 and m["n_trades"] == 0
    assert m["benchmark_total_return"] == 0.0
    assert m["beta"] == 0.0 and m["alpha"] == 0.0
    assert m["information_ratio"] == 0.0 and m["tracking_error"] == 0.0
    assert math.isnan(m["correlation"])  # undefined for two constant series
    assert m["benchmark_bars"] == 3


def test_performance_all_losing_series_hand_values() -> None:
    # every bar loses 10 %: 100 -> 90 -> 81 -> 72.9
    states = _states([90.0, 81.0, 72.9])
    trades = _trades([-10.0, -20.0], [1.0, 2.0], [0.5, 0.5])
    m = perf.compute_performance(states, trades, periods_per_year=P, initial_cash=100.0)
    assert m["total_return"] == pytest.approx(-0.271)
    assert m["annual_volatility"] == pytest.approx(0.0, abs=1e-12)  # constant returns
    assert math.isnan(m["sharpe"])  # mean -0.1 over a zero deviation: undefined, not inf
    # downside deviation = sqrt(mean((-0.1)^2)) = 0.1 -> sortino = -0.1 / 0.1 * sqrt(252)
    assert m["sortino"] == pytest.approx(-math.sqrt(P))
    assert m["max_drawdown"] == pytest.approx(-0.271)
    # under water from the first bar to the end: 3 bars, 2 days from bar 0 to bar 2
    assert m["max_drawdown_duration_bars"] == 3
    assert m["max_drawdown_duration_days"] == pytest.approx(2.0)
    assert m["win_rate"] == 0.0
    assert m["profit_factor"] == 0.0  # no gains over 33 of losses
    assert m["expectancy"] == pytest.approx((-11.0 - 22.0) / 2)
    assert m["avg_win"] == 0.0
    assert m["avg_loss"] == pytest.approx(-16.5)
    assert m["payoff_ratio"] == 0.0
    # before costs: (-10 + 0.5) + (-20 + 0.5) = -29; costs 1 + 2 + 0.5 + 0.5 = 4
    assert m["pnl_before_costs_total"] == pytest.approx(-29.0)
    assert m["cost_drag"] == pytest.approx(4.0 / -29.0)
    assert m["pnl_net_total"] == pytest.approx(-33.0)
    assert m["total_costs"] == pytest.approx(4.0)
    assert m["cost_to_initial_equity"] == pytest.approx(0.04)


def test_performance_one_bar_hand_values() -> None:
    states = _states([110.0])
    m = perf.compute_performance(states, NO_TRADES, periods_per_year=P, initial_cash=100.0)
    assert m["total_return"] == pytest.approx(0.1)
    assert m["cagr"] == pytest.approx(1.1**P - 1.0)  # one bar = 1/252 of a year
    assert m["annual_volatility"] == 0.0
    assert math.isnan(m["sharpe"])  # mean 0.1, no deviation from one bar
    assert m["max_drawdown"] == 0.0
    assert m["max_drawdown_duration_bars"] == 0


def test_performance_one_bar_without_frequency_raises() -> None:
    with pytest.raises(ValueError, match="at least 2 timestamps"):
        perf.compute_performance(_states([110.0]), NO_TRADES, initial_cash=100.0)


def test_performance_drawdown_duration_counts_bars_below_peak() -> None:
    # peaks 100, 110, 110, 110, 121: under water at bars 2 and 3, recovered at bar 4
    states = _states([100.0, 110.0, 99.0, 108.9, 121.0])
    m = perf.compute_performance(states, NO_TRADES, periods_per_year=P, initial_cash=100.0)
    assert m["max_drawdown"] == pytest.approx(99.0 / 110.0 - 1.0)
    assert m["max_drawdown_duration_bars"] == 2
    assert m["max_drawdown_duration_days"] == pytest.approx(3.0)  # bar 1 (peak) to bar 4
    # sharpe of returns [0, .1, -.1, .1, 121/108.9 - 1] computed by hand from its definition
    r = np.array([0.0, 0.1, -0.1, 0.1, 121.0 / 108.9 - 1.0])
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(P))


def test_performance_benchmark_alpha_beta_information_ratio() -> None:
    b = [0.01, -0.02, 0.005, 0.015]
    r = [2 * x + 0.001 for x in b]  # beta 2, alpha 0.001 per bar
    equity = list(100.0 * np.cumprod(1.0 + np.array(r)))
    states = _states(equity)
    bench = pl.DataFrame({"timestamp": states["timestamp"], "benchmark_return": b})
    m = perf.compute_performance(
        states, NO_TRADES, benchmark=bench, periods_per_year=P, initial_cash=100.0
    )
    assert m["beta"] == pytest.approx(2.0)
    assert m["alpha"] == pytest.approx(0.001 * P)
    assert m["correlation"] == pytest.approx(1.0)
    # active return r - b = b + 0.001 = [.011, -.019, .006, .016]: mean .0035,
    # squared deviations .0075² + .0225² + .0025² + .0125² = .000725
    assert m["information_ratio"] == pytest.approx(0.0035 / math.sqrt(0.000725 / 3) * math.sqrt(P))
    assert m["tracking_error"] == pytest.approx(math.sqrt(0.000725 / 3) * math.sqrt(P))
    assert m["benchmark_total_return"] == pytest.approx(1.01 * 0.98 * 1.005 * 1.015 - 1.0)


def test_performance_benchmark_missing_bars_are_counted_not_filled() -> None:
    states = _states([101.0, 102.01, 103.0301])
    bench = pl.DataFrame({"timestamp": states["timestamp"], "benchmark_return": [None, 0.02, 0.01]})
    m = perf.compute_performance(
        states, NO_TRADES, benchmark=bench, periods_per_year=P, initial_cash=100.0
    )
    assert m["benchmark_bars"] == 2
    assert m["benchmark_total_return"] == pytest.approx(1.02 * 1.01 - 1.0)


def test_performance_risk_free_rate_lowers_sharpe() -> None:
    states = _states([101.0, 101.5, 103.0, 103.2])
    base = perf.compute_performance(states, NO_TRADES, periods_per_year=P, initial_cash=100.0)
    rf = perf.compute_performance(
        states, NO_TRADES, periods_per_year=P, initial_cash=100.0, risk_free_rate=0.05
    )
    r = np.array([0.01, 101.5 / 101 - 1, 103 / 101.5 - 1, 103.2 / 103 - 1])
    x = r - (1.05 ** (1 / P) - 1)
    assert rf["sharpe"] == pytest.approx(x.mean() / x.std(ddof=1) * math.sqrt(P))
    assert rf["sharpe"] < base["sharpe"]
    assert rf["risk_free_rate"] == 0.05


def test_infer_periods_per_year_daily_calendar_is_365_25() -> None:
    ts = _states([1.0] * 366)["timestamp"]  # 365 one-day steps over 365 days
    assert perf.infer_periods_per_year(ts) == pytest.approx(365.25)


def test_infer_periods_per_year_unsorted_raises_naming_position() -> None:
    ts = _states([1.0, 1.0, 1.0])["timestamp"].reverse()
    with pytest.raises(ValueError, match="strictly increasing; position 1"):
        perf.infer_periods_per_year(ts)


def test_monthly_returns_compound_within_month() -> None:
    start = datetime(2021, 1, 30, 21, tzinfo=UTC)
    returns = pl.DataFrame(
        {
            "timestamp": [start + timedelta(days=i) for i in range(4)],  # Jan 30, 31, Feb 1, 2
            "return": [0.1, -0.1, 0.02, 0.03],
        }
    )
    out = perf.monthly_returns(returns)
    assert out["month"].to_list() == [1, 2]
    assert out["return"].to_list() == pytest.approx([1.1 * 0.9 - 1, 1.02 * 1.03 - 1])
    assert out["n_bars"].to_list() == [2, 2]


def test_rolling_sharpe_window_matches_definition() -> None:
    r = [0.01, -0.02, 0.03, 0.0]
    frame = pl.DataFrame({"timestamp": list(range(4)), "return": r})
    out = perf.rolling_sharpe(frame, 3, P)["rolling_sharpe"].to_list()
    assert out[:2] == [None, None]
    w = np.array(r[1:4])
    assert out[3] == pytest.approx(w.mean() / w.std(ddof=1) * math.sqrt(P))


def test_strategy_returns_nonpositive_equity_raises() -> None:
    with pytest.raises(ValueError, match="non-positive equity"):
        perf.strategy_returns(_states([50.0, 0.0, 10.0]), 100.0)


def test_performance_engine_keys_equal_engine_compute_metrics() -> None:
    import engine

    states = _states([100.0, 104.0, 101.0, 107.0])
    trades = _trades([5.0, -2.0], [0.1, 0.1], [0.0, 0.0])
    ours = perf.compute_performance(states, trades, periods_per_year=P, initial_cash=100.0)
    theirs = engine.compute_metrics(states, trades, periods_per_year=P, initial_cash=100.0)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, nan_ok=True), key
