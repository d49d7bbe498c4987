"""``reporting.benchmark``: alpha, beta, information ratio, tracking error and capture against an
index ETF read offline, equal to empyrical-reloaded's on real returns.

Conventions matched term by term (ours: :func:`ml4t_pipeline.lib.performance.benchmark_comparison`):

- Alignment: both series are joined on the exact bar-close timestamp; empyrical receives the
  already aligned arrays.
- Beta: cov / var of excess returns in both (empyrical uses population moments for both, the
  ratio is the same as with ``ddof=1``).
- Alpha: the same per-bar mean ``mean(r - rf - beta (b - rf))``; ours annualises it
  arithmetically (``× P``), empyrical compounds it (``(1 + m) ** P - 1``), so the test converts.
- Information ratio: ours is empyrical's ``excess_sharpe`` (per bar) × √P.
- Capture: both are ratios of annualised compound returns over the up (down) bars.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ml4t_pipeline.config import ExperimentConfig, data_paths
from ml4t_pipeline.lib import performance
from ml4t_pipeline.lib.benchmark import benchmark_equity_curve, load_benchmark_returns
from ml4t_pipeline.lib.io import load_prices_file

empyrical = pytest.importorskip("empyrical", reason="empyrical-reloaded is in the dev extra")

RTOL = 1e-10
DATA_ROOT = Path(os.environ.get("ML4T_DATA_ROOT", "../shared/data"))
SP500 = DATA_ROOT / "sp500_5yr_daily_ohlcv.parquet"
LEAN = DATA_ROOT / "lean_daily_ohlcv_unadjusted.parquet"
LEAN_FACTORS = DATA_ROOT / "lean_factor_files.parquet"
CASH = 1_000_000.0
P = 252.0

pytestmark = pytest.mark.skipif(
    not (SP500.is_file() and LEAN.is_file()) and not os.environ.get("CI"),
    reason=f"real data files not under {DATA_ROOT}",
)


@pytest.fixture(scope="module")
def spy() -> pl.DataFrame:
    return load_benchmark_returns(LEAN, "SPY")


@pytest.fixture(scope="module")
def states() -> pl.DataFrame:
    """A real equity curve: CASH held in an equal mix of AAPL and XOM, rebalanced daily."""
    prices = load_prices_file(SP500).filter(pl.col("symbol").is_in(["AAPL", "XOM"]))
    daily = (
        prices.sort("symbol", "timestamp")
        .with_columns((pl.col("close") / pl.col("close").shift(1).over("symbol") - 1).alias("r"))
        .group_by("timestamp")
        .agg(pl.col("r").mean())
        .sort("timestamp")
        .with_columns(pl.col("r").fill_null(0.0))
    )
    return daily.select("timestamp", (CASH * (1.0 + pl.col("r")).cum_prod()).alias("equity"))


def _aligned(states: pl.DataFrame, spy: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    joined = performance.strategy_returns(states, CASH).join(spy, on="timestamp", how="inner")
    return joined["return"].to_numpy(), joined["benchmark_return"].to_numpy()


@pytest.mark.parametrize("rf_annual", [0.0, 0.02])
def test_benchmark_comparison_real_returns_equal_empyrical(states, spy, rf_annual):
    ours = performance.benchmark_comparison(
        performance.strategy_returns(states, CASH), spy, P, rf_annual
    )
    r, b = _aligned(states, spy)
    rf = (1.0 + rf_annual) ** (1.0 / P) - 1.0
    alpha_e, beta_e = empyrical.alpha_beta(r, b, risk_free=rf, annualization=P)
    assert ours["bench_bars"] == r.size == states.height  # every S&P session has a SPY bar
    assert ours["bench_missing_bars"] == 0
    assert 0.5 < ours["bench_beta"] < 1.5  # a real large-cap mix against the index
    assert ours["bench_beta"] == pytest.approx(beta_e, rel=RTOL)
    assert (1.0 + ours["bench_alpha"] / P) ** P - 1.0 == pytest.approx(alpha_e, rel=RTOL)
    assert ours["bench_information_ratio"] / math.sqrt(P) == pytest.approx(
        empyrical.excess_sharpe(r, b), rel=RTOL
    )
    assert ours["bench_up_capture"] == pytest.approx(
        empyrical.up_capture(r, b, period="daily")  # P = 252, rel=RTOL
    )
    assert ours["bench_down_capture"] == pytest.approx(
        empyrical.down_capture(r, b, period="daily"), rel=RTOL
    )
    te = np.std(r - b, ddof=1) * math.sqrt(P)
    assert ours["bench_tracking_error"] == pytest.approx(te, rel=RTOL)
    total = empyrical.cum_returns_final(b)
    assert ours["bench_total_return"] == pytest.approx(total, rel=RTOL)


def test_benchmark_comparison_missing_benchmark_bar_reported_not_filled(states, spy):
    gap = states["timestamp"][100]
    holed = spy.filter(pl.col("timestamp") != gap)
    returns = performance.strategy_returns(states, CASH)
    ours = performance.benchmark_comparison(returns, holed, P)
    assert ours["bench_missing_bars"] == 1
    assert ours["bench_bars"] == states.height - 1
    assert performance.missing_benchmark_bars(returns, holed)["timestamp"].to_list() == [gap]
    curve = benchmark_equity_curve(states["timestamp"], holed, CASH)
    assert curve.filter(pl.col("bench_missing"))["timestamp"].to_list() == [gap]


def test_benchmark_equity_curve_compounds_from_initial_cash(states, spy):
    curve = benchmark_equity_curve(states["timestamp"], spy, CASH)
    r, b = _aligned(states, spy)
    assert curve["bench_equity"][-1] == pytest.approx(CASH * np.prod(1.0 + b), rel=RTOL)


def test_load_benchmark_returns_unknown_symbol_lists_symbols():
    with pytest.raises(ValueError, match=r"'SPX' not in .*'SPY'"):
        load_benchmark_returns(LEAN, "SPX")


def test_benchmark_comparison_without_benchmark_is_nan_with_zero_bars(states):
    ours = performance.benchmark_comparison(performance.strategy_returns(states, CASH), None, P)
    assert ours["bench_bars"] == 0 and math.isnan(ours["bench_alpha"])


def test_reporting_benchmark_path_is_a_confined_data_path():
    cfg = ExperimentConfig.model_validate(
        {"name": "b", "reporting": {"benchmark": {"symbol": "SPY", "path": "x.parquet"}}}
    )
    assert ("reporting.benchmark.path", "x.parquet") in data_paths(cfg)


def test_load_benchmark_returns_total_return_reinvests_each_dividend(spy):
    from ml4t_pipeline.lib.corporate_actions import load_actions

    total = load_benchmark_returns(LEAN, "SPY", corporate_actions=(LEAN_FACTORS, "lean"))
    raw_closes = load_prices_file(LEAN).filter(pl.col("symbol") == "SPY").sort("timestamp")
    actions, _ = load_actions(LEAN_FACTORS, "lean", raw_closes)
    actions = actions.filter(pl.col("symbol") == "SPY")
    dividends = actions.filter(pl.col("dividend") > 0)
    assert dividends.height >= 20  # quarterly since the file's start
    assert (actions["split_ratio"] == 1.0).all()  # SPY never split
    joined = spy.join(total, on="timestamp", suffix="_tr").with_columns(
        pl.col("timestamp").dt.convert_time_zone("America/New_York").dt.date().alias("day")
    )
    by_day = dict(zip(dividends["ex_date"].to_list(), dividends["dividend"].to_list(), strict=True))
    closes = joined["benchmark_close"].to_list()
    checked = 0
    for k, row in enumerate(joined.iter_rows(named=True)):
        if k == 0:
            continue
        dividend = by_day.get(row["day"])
        if dividend is None:  # no dividend: the same close-to-close return as the raw file
            assert row["benchmark_return_tr"] == pytest.approx(row["benchmark_return"], rel=1e-9)
        else:  # ex-date: the previous close net of the dividend, C_t / (C_{t-1} - D) - 1
            expected = closes[k] / (closes[k - 1] - dividend) - 1.0
            assert row["benchmark_return_tr"] == pytest.approx(expected, rel=1e-9)
            checked += 1
    assert checked == dividends.filter(pl.col("ex_date") > joined["day"][0]).height
    growth = (1.0 + joined["benchmark_return"].fill_null(0.0)).product()
    growth_tr = (1.0 + joined["benchmark_return_tr"].fill_null(0.0)).product()
    years = (joined["day"][-1] - joined["day"][0]).days / 365.25
    # SPY's dividend yield was ~1.5-2.5 % a year over the file's span
    assert 0.01 < (growth_tr / growth) ** (1.0 / years) - 1.0 < 0.03


def test_reporting_benchmark_corporate_actions_path_is_confined():
    cfg = ExperimentConfig.model_validate(
        {
            "name": "b",
            "reporting": {
                "benchmark": {
                    "symbol": "SPY",
                    "path": "x.parquet",
                    "corporate_actions": {"path": "f.parquet", "format": "lean"},
                }
            },
        }
    )
    assert ("reporting.benchmark.corporate_actions.path", "f.parquet") in data_paths(cfg)
    plain = cfg.model_copy(
        update={"reporting": cfg.reporting.model_copy(update={"benchmark": None})}
    )
    assert cfg.config_hash() != plain.config_hash()


def test_experiment_metrics_with_reporting_benchmark_adds_bench_keys(states, spy, monkeypatch):
    from ml4t_pipeline.lib.experiment import experiment_metrics

    monkeypatch.setenv("ML4T_DATA_ROOT", str(DATA_ROOT))
    cfg = ExperimentConfig.model_validate(
        {
            "name": "b",
            "execution": {"initial_cash": CASH},
            "reporting": {"benchmark": {"symbol": "SPY", "path": LEAN.name}},
        }
    )
    values = experiment_metrics(cfg, states, pl.DataFrame(), pl.DataFrame())
    expected = performance.benchmark_comparison(
        performance.strategy_returns(states, CASH), spy, 252, 0.0
    )
    assert {k: values[k] for k in performance.BENCH_METRIC_KEYS} == expected
    assert math.isnan(values["alpha"])  # no prices given: no equal-weight comparison
