"""Performance metrics of a backtest: returns, risk, trades, costs and the benchmark.

Everything here is Dagster-free and works on the engine's output frames (``portfolio_states``,
``trades``, ``fills``) plus an optional benchmark return series. Where a figure is the same as
:func:`engine.compute_metrics` (total return, CAGR, volatility, Sharpe, Sortino, max drawdown,
Calmar, win rate, profit factor, exposure, turnover) that function is called, not re-implemented;
this module adds the rest and the time series the report plots.

Notation used in the formulas below: ``E0`` the equity before the first bar (the initial cash),
``E_t`` the equity at bar t's close, ``r_t = E_t / E_{t-1} - 1`` the bar return (fraction),
``b_t`` the benchmark's bar return, ``P`` the bars per year, ``rf = (1 + R_f) ** (1 / P) - 1``
the per-bar risk-free rate for an annual rate ``R_f``. Sample standard deviations use
``ddof = 1``. Annualisation: means ``× P``, standard deviations ``× √P`` (the usual i.i.d.
scaling, e.g. Sharpe 1994, "The Sharpe Ratio", J. Portfolio Management; Lo 2002 discusses its
limits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

import engine
from engine.metrics import METRIC_KEYS
from ml4t_pipeline.lib.context import market_context_from_prices

__all__ = [
    "BENCH_METRIC_KEYS",
    "EXTRA_METRIC_KEYS",
    "benchmark_comparison",
    "missing_benchmark_bars",
    "benchmark_equity",
    "compute_performance",
    "drawdown_duration",
    "equal_weight_benchmark",
    "infer_periods_per_year",
    "initial_equity",
    "metric_items",
    "monthly_returns",
    "rolling_sharpe",
    "strategy_returns",
]

#: Metric keys this module adds to :data:`engine.metrics.METRIC_KEYS`.
EXTRA_METRIC_KEYS = (
    "periods_per_year",
    "risk_free_rate",
    "max_drawdown_duration_bars",
    "max_drawdown_duration_days",
    "expectancy",
    "avg_win",
    "avg_loss",
    "payoff_ratio",
    "pnl_before_costs_total",
    "pnl_gross_total",
    "pnl_net_total",
    "total_commission",
    "total_slippage",
    "total_costs",
    "cost_drag",
    "cost_to_initial_equity",
    "benchmark_total_return",
    "benchmark_cagr",
    "alpha",
    "beta",
    "correlation",
    "tracking_error",
    "information_ratio",
    "benchmark_bars",
    "up_capture",
    "down_capture",
)

#: Keys of the comparison with a configured benchmark (``reporting.benchmark``), see
#: :func:`benchmark_comparison`.
BENCH_METRIC_KEYS = (
    "bench_total_return",
    "bench_cagr",
    "bench_alpha",
    "bench_beta",
    "bench_correlation",
    "bench_tracking_error",
    "bench_information_ratio",
    "bench_up_capture",
    "bench_down_capture",
    "bench_bars",
    "bench_missing_bars",
)

_DAYS_PER_YEAR = 365.25
_US_PER_DAY = 86_400e6


def infer_periods_per_year(timestamps: pl.Series) -> float:
    """Bars per year implied by the bar timestamps.

    ``P = (n - 1) / years`` with ``years = (t_last - t_first) / 365.25 days``: the average bar
    frequency over the sample, so trading days, weekends and holidays are accounted for
    (5 years of NYSE daily bars give about 252).

    Parameters
    ----------
    timestamps : pl.Series
        Datetime (any time zone) or Date values, one per bar, strictly increasing.

    Returns
    -------
    float
        Bars per year (> 0).

    Raises
    ------
    ValueError
        Fewer than two timestamps, nulls, or timestamps that are not strictly increasing.
    """
    if timestamps.len() < 2:
        raise ValueError(
            f"need at least 2 timestamps to infer the bar frequency, got {timestamps.len()}; "
            "pass periods_per_year explicitly"
        )
    if timestamps.null_count():
        raise ValueError(f"timestamps contain {timestamps.null_count()} null(s)")
    ts = timestamps.cast(pl.Datetime("us")) if timestamps.dtype == pl.Date else timestamps
    micros = ts.dt.epoch("us").to_numpy().astype(np.float64)
    steps = np.diff(micros)
    if (steps <= 0).any():
        first = int(np.flatnonzero(steps <= 0)[0])
        raise ValueError(
            f"timestamps must be strictly increasing; position {first + 1} "
            f"({timestamps[first + 1]}) is not after {timestamps[first]}"
        )
    years = (micros[-1] - micros[0]) / _US_PER_DAY / _DAYS_PER_YEAR
    return float((len(micros) - 1) / years)


def strategy_returns(
    portfolio_states: pl.DataFrame, initial_cash: float | None = None
) -> pl.DataFrame:
    """Bar returns of the strategy, ``r_t = E_t / E_{t-1} - 1`` with ``E_0`` the initial cash.

    Parameters
    ----------
    portfolio_states : pl.DataFrame
        ``timestamp`` and ``equity`` (Float64, currency), one row per bar, in time order.
    initial_cash : float, optional
        Equity before the first bar. Default: ``equity[0] / (1 + return[0])`` when a ``return``
        column exists, else ``equity[0]`` (the first bar then has return 0).

    Returns
    -------
    pl.DataFrame
        ``timestamp`` and ``return`` (Float64, fraction), same rows and order.

    Raises
    ------
    ValueError
        Missing columns, or a non-positive previous equity (the return is undefined).
    """
    _need(portfolio_states, ("timestamp", "equity"), "portfolio_states")
    equity = portfolio_states["equity"].cast(pl.Float64).to_numpy()
    e0 = initial_equity(portfolio_states, initial_cash)
    prev = np.concatenate(([e0], equity[:-1]))
    if (prev <= 0).any():
        bad = int(np.flatnonzero(prev <= 0)[0])
        raise ValueError(
            f"equity before bar {bad} ({portfolio_states['timestamp'][bad]}) is {prev[bad]}: "
            "bar returns are undefined for a non-positive equity"
        )
    return pl.DataFrame({"timestamp": portfolio_states["timestamp"], "return": equity / prev - 1.0})


def equal_weight_benchmark(prices: pl.DataFrame) -> pl.DataFrame:
    """The equal-weight universe as a benchmark: mean close-to-close return over symbols.

    Calls :func:`ml4t_pipeline.lib.context.market_context_from_prices`: ``b_t`` is the mean of
    ``close_t / close_prev - 1`` over the symbols with a previous bar (daily rebalanced equal
    weight). The first timestamp has no return (null).

    Parameters
    ----------
    prices : pl.DataFrame
        ``timestamp``, ``symbol``, ``close``; unique (timestamp, symbol).

    Returns
    -------
    pl.DataFrame
        ``timestamp`` (as in ``prices``) and ``benchmark_return`` (Float64 fraction, null at the
        first timestamp), sorted by time.
    """
    market = market_context_from_prices(prices)
    return market.select("timestamp", pl.col("market_return").alias("benchmark_return"))


def benchmark_equity(
    portfolio_states: pl.DataFrame,
    benchmark: pl.DataFrame,
    initial_cash: float | None = None,
) -> pl.DataFrame:
    """Strategy and benchmark equity on the strategy's bars, both starting from ``E0``.

    ``B_t = E0 × Π_{s ≤ t} (1 + b_s)``; a bar without a benchmark return (e.g. the universe's
    first bar) counts as ``b = 0`` there, and ``benchmark_missing`` marks it.

    Returns
    -------
    pl.DataFrame
        ``timestamp``, ``equity``, ``benchmark_equity`` (currency), ``benchmark_missing``
        (Boolean).
    """
    _need(benchmark, ("timestamp", "benchmark_return"), "benchmark")
    e0 = initial_equity(portfolio_states, initial_cash)
    joined = portfolio_states.select("timestamp", pl.col("equity").cast(pl.Float64)).join(
        benchmark.select("timestamp", "benchmark_return"), on="timestamp", how="left"
    )
    return joined.with_columns(
        (e0 * (1.0 + pl.col("benchmark_return").fill_null(0.0)).cum_prod()).alias(
            "benchmark_equity"
        ),
        pl.col("benchmark_return").is_null().alias("benchmark_missing"),
    ).drop("benchmark_return")


def drawdown_duration(
    portfolio_states: pl.DataFrame, initial_cash: float | None = None
) -> tuple[int, float]:
    """Longest drawdown: bars spent below the running peak, and its calendar length.

    A drawdown spell is a maximal run of consecutive bars with ``E_t < max(E0, E_1..E_t)``.
    Its length in bars is the number of such bars; its length in days runs from the last bar
    at the peak (or the first bar, if the spell starts there) to the bar that regains the peak,
    or to the last bar when it never recovers.

    Returns
    -------
    tuple[int, float]
        ``(bars, days)`` of the longest spell by bars (``(0, 0.0)`` with no drawdown).
    """
    _need(portfolio_states, ("timestamp", "equity"), "portfolio_states")
    equity = portfolio_states["equity"].cast(pl.Float64).to_numpy()
    if equity.size == 0:
        return 0, 0.0
    e0 = initial_equity(portfolio_states, initial_cash)
    peak = np.maximum.accumulate(np.concatenate(([e0], equity)))[1:]
    under = equity < peak
    micros = _micros(portfolio_states["timestamp"])
    best_bars, best_days, start = 0, 0.0, -1
    for i, flag in enumerate([*under.tolist(), False]):
        if flag and start < 0:
            start = i
        elif not flag and start >= 0:
            bars = i - start
            if bars > best_bars:
                begin = micros[start - 1] if start > 0 else micros[0]
                end = micros[min(i, equity.size - 1)]
                best_bars, best_days = bars, float(end - begin) / _US_PER_DAY
            start = -1
    return best_bars, best_days


def rolling_sharpe(
    returns: pl.DataFrame,
    window: int,
    periods_per_year: float,
    risk_free_rate: float = 0.0,
) -> pl.DataFrame:
    """Trailing Sharpe ratio over ``window`` bars: ``mean(r - rf) / std(r - rf) × √P``.

    Parameters
    ----------
    returns : pl.DataFrame
        ``timestamp`` and ``return`` (fraction), e.g. from :func:`strategy_returns`.
    window : int
        Bars in each window (>= 2).

    Returns
    -------
    pl.DataFrame
        ``timestamp`` and ``rolling_sharpe`` (null for the first ``window - 1`` bars and for a
        window whose returns do not vary).
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 bars, got {window}")
    rf = _per_bar_rf(risk_free_rate, periods_per_year)
    x = pl.col("return") - rf
    mean = x.rolling_mean(window, min_samples=window)
    std = x.rolling_std(window, min_samples=window)
    return returns.select(
        "timestamp",
        pl.when(std > 1e-15)
        .then(mean / std * math.sqrt(periods_per_year))
        .otherwise(None)
        .alias("rolling_sharpe"),
    )


def monthly_returns(returns: pl.DataFrame) -> pl.DataFrame:
    """Compounded return per calendar month (UTC): ``Π (1 + r_t) - 1`` over the month's bars.

    Returns
    -------
    pl.DataFrame
        ``year`` (Int32), ``month`` (Int8, 1-12), ``return`` (Float64 fraction), ``n_bars``,
        sorted by year and month. Months without bars are absent.
    """
    _need(returns, ("timestamp", "return"), "returns")
    ts = pl.col("timestamp")
    if isinstance(returns.schema["timestamp"], pl.Datetime):
        ts = ts.dt.convert_time_zone("UTC") if returns.schema["timestamp"].time_zone else ts
    return (
        returns.with_columns(ts.dt.year().alias("year"), ts.dt.month().alias("month"))
        .group_by("year", "month")
        .agg(
            ((1.0 + pl.col("return")).product() - 1.0).alias("return"),
            pl.len().alias("n_bars"),
        )
        .sort("year", "month")
    )


def compute_performance(
    portfolio_states: pl.DataFrame,
    trades: pl.DataFrame,
    *,
    fills: pl.DataFrame | None = None,
    benchmark: pl.DataFrame | None = None,
    periods_per_year: float | None = None,
    risk_free_rate: float = 0.0,
    initial_cash: float | None = None,
) -> dict[str, float | int]:
    """Every headline metric of a run, with the benchmark comparison when one is given.

    Parameters
    ----------
    portfolio_states : pl.DataFrame
        One row per bar in time order: ``timestamp`` (Datetime UTC), ``equity`` (currency),
        ``n_positions`` (for exposure), optionally ``return``.
    trades : pl.DataFrame
        One row per closed trade: ``pnl_net``, ``pnl_gross``, ``commission``, ``slippage``
        (currency). Zero rows is fine.
    fills : pl.DataFrame, optional
        ``quantity``, ``price`` (turnover), ``commission`` and ``slippage`` per fill. The cost
        totals come from the fills when given (they include open positions' entry costs),
        otherwise from the trades.
    benchmark : pl.DataFrame, optional
        ``timestamp`` and ``benchmark_return`` (fraction per bar, e.g. from
        :func:`equal_weight_benchmark`), joined to the strategy's bars on ``timestamp``.
    periods_per_year : float, optional
        ``P``; inferred with :func:`infer_periods_per_year` when omitted.
    risk_free_rate : float, default 0.0
        Annual risk-free rate ``R_f`` (fraction).
    initial_cash : float, optional
        ``E0``; see :func:`strategy_returns` for the default.

    Returns
    -------
    dict[str, float | int]
        The keys of :func:`engine.compute_metrics` (its formulas are documented there:
        total_return, cagr, annual_volatility, sharpe, sortino, max_drawdown, calmar, win_rate,
        profit_factor, n_trades, final_equity, exposure, turnover) plus
        :data:`EXTRA_METRIC_KEYS`:

        - periods_per_year = P; risk_free_rate = R_f (annual fraction)
        - max_drawdown_duration_bars / _days: see :func:`drawdown_duration`
        - expectancy = mean(pnl_net) per trade (currency)
        - avg_win = mean(pnl_net | pnl_net > 0); avg_loss = mean(pnl_net | pnl_net < 0)
          (currency, ≤ 0); payoff_ratio = avg_win / |avg_loss|
        - over closed trades: pnl_gross_total = Σ pnl_gross (the engine's pnl_gross is at
          fill prices, i.e. after slippage), pnl_net_total = Σ pnl_net = Σ (pnl_gross -
          commission), pnl_before_costs_total = Σ (pnl_gross + slippage) (at prices before
          slippage, no commission)
        - total_commission, total_slippage (currency; from the fills when given, so they
          include the entry costs of positions still open), total_costs = their sum
        - cost_drag = Σ (commission + slippage) / pnl_before_costs_total over closed trades:
          the share of the before-cost P&L that frictions took (negative when the before-cost
          P&L is a loss, which the costs deepened)
        - cost_to_initial_equity = total_costs / E0
        - with a benchmark, over the bars where ``b_t`` is known (``benchmark_bars`` of them):
          benchmark_total_return = Π(1 + b_t) - 1, benchmark_cagr = (1 +
          benchmark_total_return) ** (P / n) - 1; beta = cov(r - rf, b - rf) / var(b - rf);
          alpha = (mean(r - rf) - beta × mean(b - rf)) × P (Jensen's alpha, annual, arithmetic);
          correlation = corr(r, b); tracking_error = std(r - b) × √P; information_ratio =
          mean(r - b) / std(r - b) × √P; up_capture / down_capture: see
          :func:`benchmark_comparison`. Without a benchmark these keys are NaN and
          benchmark_bars is 0.

        A ratio with a zero denominator is 0.0 when its numerator is 0 too and NaN otherwise
        (the engine's convention); nothing is infinite.

    Raises
    ------
    ValueError
        Missing columns; fewer than two bars with ``periods_per_year`` omitted; a benchmark with
        duplicate timestamps.
    """
    _need(portfolio_states, ("timestamp", "equity"), "portfolio_states")
    if periods_per_year is None:
        periods_per_year = infer_periods_per_year(portfolio_states["timestamp"])
    ppy = float(periods_per_year)
    e0 = initial_equity(portfolio_states, initial_cash)
    out: dict[str, float | int] = dict(
        engine.compute_metrics(
            portfolio_states,
            trades,
            periods_per_year=ppy,
            risk_free_rate=risk_free_rate,
            fills=fills,
            initial_cash=e0,
        )
    )
    out["n_trades"] = int(out["n_trades"])
    out["periods_per_year"] = ppy
    out["risk_free_rate"] = float(risk_free_rate)
    bars, days = drawdown_duration(portfolio_states, e0)
    out["max_drawdown_duration_bars"] = bars
    out["max_drawdown_duration_days"] = days
    out.update(_trade_stats(trades))
    out.update(_cost_stats(trades, fills, e0))
    out.update(
        _benchmark_stats(strategy_returns(portfolio_states, e0), benchmark, ppy, risk_free_rate)
    )
    return out


# --- helpers -------------------------------------------------------------------------------------


def _need(frame: pl.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; it has {frame.columns}")


def initial_equity(states: pl.DataFrame, initial_cash: float | None) -> float:
    """Equity before the first bar: ``initial_cash`` when given (must be > 0), else
    ``equity[0] / (1 + return[0])`` with a ``return`` column, else ``equity[0]``."""
    if initial_cash is not None:
        if not initial_cash > 0:
            raise ValueError(f"initial_cash must be > 0, got {initial_cash!r}")
        return float(initial_cash)
    if states.height == 0:
        raise ValueError("portfolio_states has no rows and no initial_cash was given")
    first = float(states["equity"][0])
    if "return" in states.columns and states["return"][0] is not None:
        return first / (1.0 + float(states["return"][0]))
    return first


def _micros(timestamps: pl.Series) -> np.ndarray:
    ts = timestamps.cast(pl.Datetime("us")) if timestamps.dtype == pl.Date else timestamps
    return ts.dt.epoch("us").to_numpy().astype(np.float64)


def _per_bar_rf(risk_free_rate: float, periods_per_year: float) -> float:
    return float((1.0 + risk_free_rate) ** (1.0 / periods_per_year) - 1.0)


def _ratio(num: float, den: float) -> float:
    if den == 0.0 or not math.isfinite(den):
        return 0.0 if num == 0.0 else math.nan
    return num / den


def _column_sum(frame: pl.DataFrame | None, column: str) -> float:
    if frame is None or column not in frame.columns or frame.height == 0:
        return 0.0
    return float(frame[column].cast(pl.Float64).sum())


def _trade_stats(trades: pl.DataFrame) -> dict[str, float]:
    if trades.height == 0:
        return {"expectancy": 0.0, "avg_win": 0.0, "avg_loss": 0.0, "payoff_ratio": 0.0}
    _need(trades, ("pnl_net",), "trades")
    pnl = trades["pnl_net"].cast(pl.Float64).to_numpy()
    if not np.isfinite(pnl).all():
        bad = trades.filter(~pl.col("pnl_net").is_finite() | pl.col("pnl_net").is_null())
        raise ValueError(f"trades have {bad.height} null or non-finite pnl_net: {bad.head(5)}")
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    avg_win = float(wins.mean()) if wins.size else 0.0
    avg_loss = float(losses.mean()) if losses.size else 0.0
    return {
        "expectancy": float(pnl.mean()),
        "avg_win": avg_win,
        "avg_loss": avg_loss,
        "payoff_ratio": _ratio(avg_win, abs(avg_loss)),
    }


def _cost_stats(trades: pl.DataFrame, fills: pl.DataFrame | None, e0: float) -> dict[str, float]:
    source = fills if fills is not None else trades
    commission = _column_sum(source, "commission")
    slippage = _column_sum(source, "slippage")
    gross = _column_sum(trades, "pnl_gross")
    trade_costs = _column_sum(trades, "commission") + _column_sum(trades, "slippage")
    before_costs = gross + _column_sum(trades, "slippage")
    return {
        "pnl_before_costs_total": before_costs,
        "pnl_gross_total": gross,
        "pnl_net_total": _column_sum(trades, "pnl_net"),
        "total_commission": commission,
        "total_slippage": slippage,
        "total_costs": commission + slippage,
        "cost_drag": _ratio(trade_costs, before_costs),
        "cost_to_initial_equity": (commission + slippage) / e0,
    }


def _annual_compound(x: np.ndarray, ppy: float) -> float:
    # (Π(1 + x))^(P / n) - 1: the annualised compound return of n bars.
    growth = float(np.prod(1.0 + x))
    return growth ** (ppy / x.size) - 1.0 if growth > 0 else -1.0


def _capture(r: np.ndarray, b: np.ndarray, ppy: float, up: bool) -> float:
    mask = b > 0 if up else b < 0
    if not mask.any():
        return math.nan
    return _ratio(_annual_compound(r[mask], ppy), _annual_compound(b[mask], ppy))


def missing_benchmark_bars(returns: pl.DataFrame, benchmark: pl.DataFrame) -> pl.DataFrame:
    """The strategy's bars that have no benchmark return (``timestamp`` column).

    These bars are left out of every benchmark statistic and reported (``*_missing_bars``),
    never filled.
    """
    return (
        returns.select("timestamp")
        .join(benchmark.select("timestamp", "benchmark_return"), on="timestamp", how="left")
        .filter(pl.col("benchmark_return").is_null())
        .select("timestamp")
    )


def _benchmark_stats(
    returns: pl.DataFrame,
    benchmark: pl.DataFrame | None,
    ppy: float,
    risk_free_rate: float,
) -> dict[str, float | int]:
    nan = math.nan
    empty: dict[str, float | int] = {
        "benchmark_total_return": nan,
        "benchmark_cagr": nan,
        "alpha": nan,
        "beta": nan,
        "correlation": nan,
        "tracking_error": nan,
        "information_ratio": nan,
        "benchmark_bars": 0,
        "up_capture": nan,
        "down_capture": nan,
    }
    if benchmark is None:
        return empty
    _need(benchmark, ("timestamp", "benchmark_return"), "benchmark")
    dup = benchmark.filter(pl.col("timestamp").is_duplicated())
    if dup.height:
        raise ValueError(
            f"benchmark has {dup.height} rows with duplicate timestamps, e.g. "
            f"{dup['timestamp'].head(3).to_list()}"
        )
    joined = returns.join(
        benchmark.select("timestamp", "benchmark_return"), on="timestamp", how="left"
    ).filter(pl.col("benchmark_return").is_not_null())
    n = joined.height
    if n == 0:
        return empty
    r = joined["return"].to_numpy()
    b = joined["benchmark_return"].cast(pl.Float64).to_numpy()
    rf = _per_bar_rf(risk_free_rate, ppy)
    xr, xb = r - rf, b - rf
    total = float(np.prod(1.0 + b) - 1.0)
    out: dict[str, float | int] = dict(empty)
    out["benchmark_bars"] = n
    out["benchmark_total_return"] = total
    out["benchmark_cagr"] = (1.0 + total) ** (ppy / n) - 1.0 if total > -1.0 else -1.0
    out["up_capture"] = _capture(r, b, ppy, up=True)
    out["down_capture"] = _capture(r, b, ppy, up=False)
    if n < 2:
        return out
    var_b = float(np.var(xb, ddof=1))
    cov = float(np.cov(xr, xb, ddof=1)[0, 1])
    beta = _ratio(cov, var_b) if var_b > 1e-30 else _ratio(cov, 0.0)
    out["beta"] = beta
    out["alpha"] = (
        (float(xr.mean()) - beta * float(xb.mean())) * ppy if math.isfinite(beta) else nan
    )
    std_r, std_b = float(np.std(r, ddof=1)), float(np.std(b, ddof=1))
    out["correlation"] = _ratio(cov, std_r * std_b) if std_r > 1e-15 and std_b > 1e-15 else nan
    active = r - b
    te = float(np.std(active, ddof=1))
    te = 0.0 if te < 1e-15 else te
    out["tracking_error"] = te * math.sqrt(ppy)
    out["information_ratio"] = _ratio(float(active.mean()), te) * (math.sqrt(ppy) if te else 1.0)
    return out


def benchmark_comparison(
    returns: pl.DataFrame,
    benchmark: pl.DataFrame | None,
    periods_per_year: float,
    risk_free_rate: float = 0.0,
) -> dict[str, float | int]:
    """The strategy against a configured benchmark: the :data:`BENCH_METRIC_KEYS`.

    Alignment: ``r_t`` (:func:`strategy_returns`) and ``b_t`` (the benchmark's own
    close-to-close return ending at the same bar close, e.g. from
    :func:`ml4t_pipeline.lib.benchmark.load_benchmark_returns`) are joined on the exact
    ``timestamp``. Only bars with both are used (``bench_bars``); a strategy bar without a
    benchmark return is counted in ``bench_missing_bars`` (and listed by
    :func:`missing_benchmark_bars`), never filled.

    Formulas, with ``rf = (1 + R_f) ** (1 / P) - 1`` per bar and sample moments (``ddof=1``):

    - bench_beta = cov(r - rf, b - rf) / var(b - rf)
    - bench_alpha = (mean(r - rf) - beta × mean(b - rf)) × P: Jensen's alpha, annualised
      arithmetically (empyrical's ``alpha_beta`` compounds the same per-bar mean:
      ``(1 + alpha / P) ** P - 1``)
    - bench_tracking_error = std(r - b) × √P (annual, fraction)
    - bench_information_ratio = mean(r - b) / std(r - b) × √P (empyrical's ``excess_sharpe``
      × √P)
    - bench_up_capture = A(r | b > 0) / A(b | b > 0), bench_down_capture likewise over
      ``b < 0``, with ``A(x) = Π(1 + x) ** (P / n_x) - 1`` the annualised compound return of
      those bars (empyrical's ``up_capture`` / ``down_capture``)
    - bench_total_return = Π(1 + b) - 1 over the aligned bars; bench_cagr its annualised rate
    - bench_correlation = corr(r, b)

    Returns
    -------
    dict[str, float | int]
        NaN values (and 0 bars) without a benchmark.
    """
    stats = _benchmark_stats(returns, benchmark, periods_per_year, risk_free_rate)
    out: dict[str, float | int] = {
        "bench_" + k.removeprefix("benchmark_"): v for k, v in stats.items()
    }
    out["bench_missing_bars"] = (
        missing_benchmark_bars(returns, benchmark).height if benchmark is not None else 0
    )
    return {k: out[k] for k in BENCH_METRIC_KEYS}


def metric_items(values: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Metrics in display order: the engine's keys, then :data:`EXTRA_METRIC_KEYS`, then rest."""
    order = [*METRIC_KEYS, *EXTRA_METRIC_KEYS, *BENCH_METRIC_KEYS]
    seen = [k for k in order if k in values]
    return [(k, values[k]) for k in seen] + [(k, v) for k, v in values.items() if k not in seen]
