"""compute_metrics on small hand-computed series."""

from __future__ import annotations

import math

import polars as pl
import pytest

from engine import METRIC_KEYS, compute_metrics


def _states(equity: list[float], n_positions: list[int] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "equity": equity,
            "n_positions": n_positions if n_positions is not None else [1] * len(equity),
        }
    )


def _trades(pnl: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"pnl_net": pnl}, schema={"pnl_net": pl.Float64})


def test_metrics_hand_computed_three_bars() -> None:
    # returns +10 %, -10 %, +10 % from 100
    m = compute_metrics(
        _states([110.0, 99.0, 108.9], [1, 0, 1]),
        _trades([10.0, -5.0, 2.0]),
        periods_per_year=252,
        initial_cash=100.0,
    )
    assert set(METRIC_KEYS) == set(m)
    assert m["total_return"] == pytest.approx(0.089)
    assert m["cagr"] == pytest.approx(1.089 ** (252 / 3) - 1)
    r = [0.1, -0.1, 0.1]
    mean = sum(r) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / 2)
    assert m["annual_volatility"] == pytest.approx(std * math.sqrt(252))
    assert m["sharpe"] == pytest.approx(mean / std * math.sqrt(252))
    downside = math.sqrt(0.01 / 3)
    assert m["sortino"] == pytest.approx(mean / downside * math.sqrt(252))
    assert m["max_drawdown"] == pytest.approx(99 / 110 - 1)
    assert m["calmar"] == pytest.approx(m["cagr"] / abs(99 / 110 - 1))
    assert m["win_rate"] == pytest.approx(2 / 3)
    assert m["profit_factor"] == pytest.approx(12 / 5)
    assert m["n_trades"] == 3 and isinstance(m["n_trades"], int)
    assert m["final_equity"] == 108.9
    assert m["exposure"] == pytest.approx(2 / 3)


def test_metrics_flat_series_zero_not_nan() -> None:
    m = compute_metrics(_states([100.0] * 5, [0] * 5), _trades([]), initial_cash=100.0)
    for key in (
        "total_return",
        "cagr",
        "annual_volatility",
        "sharpe",
        "sortino",
        "max_drawdown",
        "calmar",
        "win_rate",
        "profit_factor",
        "exposure",
        "turnover",
    ):
        assert m[key] == 0.0, key
    assert m["n_trades"] == 0


def test_metrics_one_bar_defined_values() -> None:
    m = compute_metrics(_states([110.0]), _trades([]), initial_cash=100.0)
    assert m["total_return"] == pytest.approx(0.1)
    assert m["annual_volatility"] == 0.0
    assert math.isnan(m["sharpe"])  # positive mean over zero volatility is undefined
    assert m["max_drawdown"] == 0.0 and m["final_equity"] == 110.0


def test_metrics_all_losing_trades() -> None:
    m = compute_metrics(_states([100.0, 95.0], [1, 0]), _trades([-3.0, -2.0]), initial_cash=100.0)
    assert m["win_rate"] == 0.0 and m["profit_factor"] == 0.0
    assert m["max_drawdown"] == pytest.approx(-0.05)
    assert m["total_return"] == pytest.approx(-0.05)


def test_metrics_infers_initial_equity_from_return_column() -> None:
    states = pl.DataFrame({"equity": [110.0, 121.0], "return": [0.1, 0.1]})
    m = compute_metrics(states, _trades([]))
    assert m["total_return"] == pytest.approx(0.21)


def test_metrics_turnover_from_fills() -> None:
    fills = pl.DataFrame({"quantity": [10.0, -10.0], "price": [10.0, 12.0]})
    m = compute_metrics(_states([100.0] * 252), _trades([]), fills=fills, initial_cash=100.0)
    assert m["turnover"] == pytest.approx(220.0 / 100.0)


def test_metrics_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="equity"):
        compute_metrics(pl.DataFrame({"x": [1.0]}), _trades([]))
    with pytest.raises(ValueError, match="periods_per_year"):
        compute_metrics(_states([1.0]), _trades([]), periods_per_year=0)
