"""Performance metrics from portfolio states and trades."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

METRIC_KEYS = (
    "total_return",
    "cagr",
    "annual_volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "win_rate",
    "profit_factor",
    "n_trades",
    "final_equity",
    "exposure",
    "turnover",
)
"""Every key of :func:`compute_metrics`, in display order (the one ordered list of metric names)."""


def _ordered_subset(*names: str) -> tuple[str, ...]:
    """``names`` in :data:`METRIC_KEYS` order; a name outside it raises ``ValueError``."""
    unknown = sorted(set(names) - set(METRIC_KEYS))
    if unknown:
        raise ValueError(f"not metric keys of compute_metrics: {unknown}")
    return tuple(key for key in METRIC_KEYS if key in names)


HEADLINE_METRIC_KEYS = tuple(
    key for key in METRIC_KEYS if key not in ("profit_factor", "exposure", "turnover")
)
"""The headline table of a notebook result (its HTML): all but profit factor, exposure, turnover."""

SUMMARY_METRIC_KEYS = _ordered_subset(
    "total_return", "cagr", "sharpe", "max_drawdown", "win_rate", "n_trades", "final_equity"
)
"""The short summary a finished command-line run prints."""


def _safe_ratio(num: float, den: float) -> float:
    """num / den; 0.0 when both are 0, NaN when only the denominator is 0."""
    if den == 0.0 or not math.isfinite(den):
        return 0.0 if num == 0.0 else math.nan
    return num / den


def compute_metrics(
    portfolio_states: pl.DataFrame,
    trades: pl.DataFrame,
    periods_per_year: float = 252.0,
    risk_free_rate: float = 0.0,
    *,
    fills: pl.DataFrame | None = None,
    initial_cash: float | None = None,
) -> dict[str, float]:
    """Headline performance figures of a run.

    Parameters
    ----------
    portfolio_states : pl.DataFrame
        One row per bar with ``equity`` (and ``n_positions`` for exposure; ``return`` is used to
        infer the starting equity when ``initial_cash`` is not given).
    trades : pl.DataFrame
        One row per closed trade with ``pnl_net`` (and ``entry_price``, ``exit_price``,
        ``quantity`` for turnover when ``fills`` is not given).
    periods_per_year : float, default 252
        Bars per year (252 for daily bars).
    risk_free_rate : float, default 0.0
        Annual rate as a fraction; per bar ``rf = (1 + risk_free_rate) ** (1 / P) − 1``.
    fills : pl.DataFrame, optional
        ``quantity`` and ``price`` per fill, for turnover.
    initial_cash : float, optional
        Equity before the first bar; default ``equity[0] / (1 + return[0])`` (or ``equity[0]``).

    Returns
    -------
    dict[str, float]
        With ``E0`` the starting equity, ``E_t`` end-of-bar equity, ``r_t = E_t / E_{t-1} − 1``,
        ``n`` bars, ``P = periods_per_year``, ``years = n / P``:

        - total_return = E_n / E0 − 1
        - cagr = (E_n / E0) ** (1 / years) − 1 (−1.0 if E_n ≤ 0; 0.0 for no bars)
        - annual_volatility = std(r, ddof=1) × √P (0.0 with fewer than 2 bars)
        - sharpe = mean(r − rf) / std(r − rf, ddof=1) × √P
        - sortino = mean(r − rf) / √mean(min(r − rf, 0)²) × √P (downside deviation, Sortino &
          Price 1994)
        - max_drawdown = min_t(E_t / max(E0, E_1..E_t) − 1) (≤ 0)
        - calmar = cagr / |max_drawdown|
        - win_rate = #(pnl_net > 0) / n_trades
        - profit_factor = Σ pnl_net⁺ / |Σ pnl_net⁻|
        - n_trades = number of rows of ``trades`` (an int)
        - final_equity = E_n
        - exposure = fraction of bars with n_positions > 0
        - turnover = Σ |fill quantity × fill price| / mean(E) / years (annual, in multiples of
          equity; from trades' entry and exit notionals when ``fills`` is not given)

        A ratio whose denominator is 0 (flat equity, a single bar, no losing trades, no
        drawdown, no trades) is 0.0 when its numerator is 0 too and NaN otherwise; no
        exception is raised and nothing is infinite.

    Raises
    ------
    ValueError
        If ``equity`` is missing or ``periods_per_year`` is not positive.
    """
    if "equity" not in portfolio_states.columns:
        raise ValueError(
            f"portfolio_states needs an 'equity' column; has {portfolio_states.columns}"
        )
    if not periods_per_year > 0:
        raise ValueError(f"periods_per_year must be > 0, got {periods_per_year!r}")
    ppy = float(periods_per_year)
    equity = portfolio_states.get_column("equity").cast(pl.Float64).to_numpy()
    n = int(equity.size)
    if initial_cash is not None:
        e0 = float(initial_cash)
    elif n and "return" in portfolio_states.columns:
        e0 = float(equity[0]) / (1.0 + float(portfolio_states.get_column("return")[0]))
    else:
        e0 = float(equity[0]) if n else 0.0
    pnl = (
        trades.get_column("pnl_net").cast(pl.Float64).to_numpy()
        if "pnl_net" in trades.columns
        else np.zeros(0)
    )
    npos = (
        portfolio_states.get_column("n_positions").to_numpy()
        if "n_positions" in portfolio_states.columns
        else None
    )
    if fills is not None and fills.height:
        traded = float((fills.get_column("quantity").abs() * fills.get_column("price")).sum())
    elif (
        fills is None
        and trades.height
        and {"entry_price", "exit_price", "quantity"} <= set(trades.columns)
    ):
        traded = float(
            ((trades["entry_price"] + trades["exit_price"]) * trades["quantity"].abs()).sum()
        )
    else:
        traded = 0.0
    sums = reduce_run(equity, npos, pnl, e0, per_bar_rate(risk_free_rate, ppy))
    return metrics_from_reductions(
        sums._replace(n_trades=int(trades.height), traded=traded), e0, ppy
    )


def per_bar_rate(risk_free_rate: float, periods_per_year: float) -> float:
    """The per-bar risk-free rate ``(1 + risk_free_rate) ** (1 / P) − 1`` of
    :func:`compute_metrics`."""
    return float((1.0 + risk_free_rate) ** (1.0 / periods_per_year) - 1.0)


class RunReductions(NamedTuple):
    """What :func:`compute_metrics` reduces a run's arrays to: all of its array work, the
    rest is arithmetic on these values (:func:`metrics_from_reductions`).

    :func:`reduce_run` computes them with numpy; the sweep's variant passes compute the same
    values, bit for bit, in a compiled kernel (:mod:`engine.compiled.reductions`). With
    ``r`` the per-bar returns against the previous equity (``E0`` before the first bar) and
    ``x = r − rf``: ``mean_excess`` = mean(x), ``std_returns`` / ``std_excess`` = std(r) /
    std(x) with ddof=1 (0.0 below 2 bars), ``downside`` = √mean(min(x, 0)²),
    ``min_drawdown`` = min_t(E_t / max(E0, E_1..E_t) − 1) (unclipped), ``exposure`` = share of
    bars with open positions, ``n_wins`` = trades with ``pnl_net > 0``, ``gains`` /
    ``losses`` = Σ pnl_net⁺ / |Σ pnl_net⁻|, ``traded`` = Σ |fill quantity × price|.
    """

    n_bars: int
    final_equity: float
    mean_excess: float
    std_returns: float
    std_excess: float
    downside: float
    min_drawdown: float
    exposure: float
    mean_equity: float
    n_trades: int
    n_wins: int
    gains: float
    losses: float
    traded: float


def reduce_run(
    equity: npt.NDArray[np.float64],
    n_positions: npt.NDArray[Any] | None,
    pnl_net: npt.NDArray[np.float64],
    e0: float,
    rf: float,
) -> RunReductions:
    """:class:`RunReductions` of one run with numpy (``n_trades`` = ``pnl_net.size``,
    ``traded`` 0.0: :func:`compute_metrics` sets both from its frames).

    Parameters
    ----------
    equity : ndarray
        float64, shape (n_bars,): end-of-bar equity (currency).
    n_positions : ndarray or None
        Open positions per bar (``None``: exposure 0.0).
    pnl_net : ndarray
        float64, one net P&L per closed trade (currency).
    e0 : float
        Equity before the first bar.
    rf : float
        Per-bar risk-free rate (:func:`per_bar_rate`).
    """
    n = int(equity.size)
    final = float(equity[-1]) if n else e0
    prev = np.concatenate(([e0], equity[:-1])) if n else np.zeros(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.where(prev != 0, equity / np.where(prev != 0, prev, 1.0) - 1.0, 0.0)
    excess = returns - rf
    std_r = float(np.std(returns, ddof=1)) if n >= 2 else 0.0
    std_x = float(np.std(excess, ddof=1)) if n >= 2 else 0.0
    mean_x = float(np.mean(excess)) if n else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2))) if n else 0.0
    if n:
        peak = np.maximum.accumulate(np.concatenate(([e0], equity)))[1:]
        dd = np.where(peak > 0, equity / np.where(peak > 0, peak, 1.0) - 1.0, 0.0)
        min_dd = float(dd.min())
    else:
        min_dd = 0.0
    exposure = float(np.mean(n_positions > 0)) if n and n_positions is not None else 0.0
    return RunReductions(
        n_bars=n,
        final_equity=final,
        mean_excess=mean_x,
        std_returns=std_r,
        std_excess=std_x,
        downside=downside,
        min_drawdown=min_dd,
        exposure=exposure,
        mean_equity=float(np.mean(equity)) if n else 0.0,
        n_trades=int(pnl_net.size),
        n_wins=int((pnl_net > 0).sum()),
        gains=float(pnl_net[pnl_net > 0].sum()),
        losses=float(-pnl_net[pnl_net < 0].sum()),
        traded=0.0,
    )


def metrics_from_reductions(
    sums: RunReductions, e0: float, periods_per_year: float
) -> dict[str, float]:
    """The dict of :func:`compute_metrics` (same keys, order and formulas) from a run's
    :class:`RunReductions`, its starting equity ``e0`` and ``periods_per_year``."""
    ppy = float(periods_per_year)
    n, final = sums.n_bars, sums.final_equity
    out: dict[str, float] = {}
    out["total_return"] = final / e0 - 1.0 if e0 else 0.0
    years = n / ppy
    if n == 0 or e0 <= 0:
        cagr = 0.0
    elif final <= 0:
        cagr = -1.0
    else:
        cagr = (final / e0) ** (1.0 / years) - 1.0
    out["cagr"] = cagr
    std_r, std_x, mean_x = sums.std_returns, sums.std_excess, sums.mean_excess
    if std_x < 1e-15 * max(1.0, abs(mean_x)):
        std_x = 0.0
    if std_r < 1e-15:
        std_r = 0.0
    out["annual_volatility"] = std_r * math.sqrt(ppy)
    out["sharpe"] = _safe_ratio(mean_x, std_x) * math.sqrt(ppy) if std_x else _safe_ratio(mean_x, 0)
    downside = sums.downside
    sortino = _safe_ratio(mean_x, downside)
    out["sortino"] = sortino * math.sqrt(ppy) if downside else sortino
    mdd = float(min(sums.min_drawdown, 0.0)) if n else 0.0
    out["max_drawdown"] = mdd
    out["calmar"] = _safe_ratio(cagr, abs(mdd))
    n_trades = int(sums.n_trades)
    out["win_rate"] = _safe_ratio(float(sums.n_wins), float(n_trades))
    out["profit_factor"] = _safe_ratio(sums.gains, sums.losses)
    out["n_trades"] = n_trades
    out["final_equity"] = final
    out["exposure"] = sums.exposure
    mean_equity = sums.mean_equity
    out["turnover"] = (
        _safe_ratio(sums.traded, mean_equity * years) if years and mean_equity else 0.0
    )
    return out
