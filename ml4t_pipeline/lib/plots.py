"""Report figures as PNG bytes (matplotlib's Agg canvas, no ``pyplot``, no display).

Each function takes a small frame from :mod:`ml4t_pipeline.lib.performance` or
:mod:`ml4t_pipeline.lib.attribution` and returns a PNG (starting with the PNG signature). The
figures are drawn on a fresh :class:`~matplotlib.figure.Figure` attached to a
``FigureCanvasAgg``, so drawing is thread-safe and changes no global backend. No timestamp or
software tag is embedded: the same input gives the same bytes. An empty input draws a figure that
says there is nothing to show rather than raising, so a report of a run without trades still
renders.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

__all__ = [
    "equity_vs_benchmark_png",
    "memo_png",
    "mfe_mae_scatter_png",
    "monthly_heatmap_png",
    "pnl_by_exit_reason_png",
    "rolling_sharpe_png",
    "signal_decile_png",
    "underwater_png",
]

_F = TypeVar("_F", bound=Callable[..., bytes])
_CACHE_SIZE = 32
_cache: dict[tuple[Any, ...], bytes] = {}


def _arg_key(value: Any) -> Any:
    if isinstance(value, pl.DataFrame):
        digest = int(value.hash_rows(seed=0).sum()) if value.height else 0
        return ("frame", str(value.schema), value.height, digest)
    return ("value", repr(value))


def memo_png(fn: _F) -> _F:
    """Cache a pure PNG function's bytes by its arguments' content (frames by schema, height
    and row hashes): a run draws each figure once although an asset's metadata and the report
    both show it (the same input gives the same bytes, so the cache changes no output)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> bytes:
        try:
            key = (fn.__qualname__, *map(_arg_key, args), *sorted(
                (k, _arg_key(v)) for k, v in kwargs.items()))  # fmt: skip
        except Exception:  # an unhashable column type: draw without the cache
            return fn(*args, **kwargs)
        if key not in _cache:
            if len(_cache) >= _CACHE_SIZE:
                _cache.pop(next(iter(_cache)))
            _cache[key] = fn(*args, **kwargs)
        return _cache[key]

    return wrapper  # type: ignore[return-value]


_BLUE, _GREY, _RED, _GREEN = "#1f6feb", "#6e7781", "#d1242f", "#1a7f37"
_TOTAL = "TOTAL"


@memo_png
def equity_vs_benchmark_png(curve: pl.DataFrame, title: str = "") -> bytes:
    """Strategy equity against the benchmark, both from the same starting equity.

    Parameters
    ----------
    curve : pl.DataFrame
        ``timestamp``, ``equity`` and optionally ``benchmark_equity`` (the equal-weight
        universe, e.g. from :func:`ml4t_pipeline.lib.performance.benchmark_equity`) and
        ``bench_equity`` (``reporting.benchmark``, from
        :func:`ml4t_pipeline.lib.benchmark.benchmark_equity_curve`), currency.
    """
    fig, ax = _figure(10, 4.5)
    if curve.height == 0:
        return _empty(fig, ax, "No portfolio states.")
    x = _times(curve["timestamp"])
    ax.plot(x, curve["equity"].to_numpy(), color=_BLUE, linewidth=1.3, label="strategy")
    if "benchmark_equity" in curve.columns:
        ax.plot(
            x,
            curve["benchmark_equity"].to_numpy(),
            color=_GREY,
            linewidth=1.1,
            label="equal-weight universe",
        )
    if "bench_equity" in curve.columns:
        ax.plot(
            x,
            curve["bench_equity"].to_numpy(),
            color=_GREEN,
            linewidth=1.1,
            label="reporting.benchmark",
        )
    ax.set_ylabel("Equity")
    ax.legend(loc="upper left")
    _date_axis(ax)
    return _png(fig, ax, title or "Equity vs benchmark")


@memo_png
def underwater_png(portfolio_states: pl.DataFrame, title: str = "") -> bytes:
    """Underwater curve: ``drawdown = equity / running peak - 1`` (≤ 0) over time.

    Parameters
    ----------
    portfolio_states : pl.DataFrame
        ``timestamp`` and ``drawdown`` (fraction ≤ 0).
    """
    fig, ax = _figure(10, 3)
    if portfolio_states.height == 0:
        return _empty(fig, ax, "No portfolio states.")
    x = _times(portfolio_states["timestamp"])
    dd = portfolio_states["drawdown"].cast(pl.Float64).to_numpy()
    ax.fill_between(x, dd, 0.0, color=_RED, alpha=0.35, linewidth=0)
    ax.plot(x, dd, color=_RED, linewidth=0.8)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_ylim(min(float(np.nanmin(dd)) * 1.05, -0.01), 0.0)
    ax.set_ylabel("Drawdown")
    _date_axis(ax)
    return _png(fig, ax, title or "Underwater (drawdown from the running peak)")


@memo_png
def monthly_heatmap_png(monthly: pl.DataFrame, title: str = "") -> bytes:
    """Heatmap of monthly returns: one row per year, one column per month, values in percent.

    Parameters
    ----------
    monthly : pl.DataFrame
        ``year``, ``month`` (1-12) and ``return`` (fraction), e.g. from
        :func:`ml4t_pipeline.lib.performance.monthly_returns`.
    """
    fig, ax = _figure(10, 0.9 + 0.45 * max(monthly["year"].n_unique() if monthly.height else 1, 1))
    if monthly.height == 0:
        return _empty(fig, ax, "No returns.")
    years = sorted(monthly["year"].unique().to_list())
    grid = np.full((len(years), 12), np.nan)
    for year, month, value in monthly.select("year", "month", "return").iter_rows():
        grid[years.index(year), int(month) - 1] = value
    finite = grid[np.isfinite(grid)]
    span = max(float(np.abs(finite).max()) if finite.size else 0.0, 1e-4)
    image = ax.imshow(grid, cmap="RdYlGn", norm=TwoSlopeNorm(0.0, -span, span), aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.1%}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(12), ["J", "F", "M", "A", "M", "J", "J", "A", "S", "O", "N", "D"])
    ax.set_yticks(range(len(years)), [str(y) for y in years])
    fig.colorbar(image, ax=ax, format=PercentFormatter(xmax=1.0), shrink=0.8)
    return _png(fig, ax, title or "Monthly returns", grid=False)


@memo_png
def rolling_sharpe_png(rolling: pl.DataFrame, window: int, title: str = "") -> bytes:
    """Trailing Sharpe ratio over ``window`` bars (``timestamp``, ``rolling_sharpe``)."""
    fig, ax = _figure(10, 3)
    values = rolling["rolling_sharpe"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    if rolling.height == 0 or not np.isfinite(values).any():
        return _empty(fig, ax, f"Fewer than {window} bars: no rolling Sharpe.")
    ax.plot(_times(rolling["timestamp"]), values, color=_BLUE, linewidth=1.0)
    ax.axhline(0.0, color=_GREY, linewidth=0.8)
    ax.set_ylabel("Sharpe (annualised)")
    _date_axis(ax)
    return _png(fig, ax, title or f"Rolling Sharpe ({window} bars)")


@memo_png
def pnl_by_exit_reason_png(table: pl.DataFrame, title: str = "") -> bytes:
    """Bar chart of total net P&L per exit reason (the ``TOTAL`` row is left out).

    Parameters
    ----------
    table : pl.DataFrame
        From :func:`ml4t_pipeline.lib.attribution.by_exit_reason`.
    """
    parts = table.filter(pl.col("exit_reason") != _TOTAL)
    fig, ax = _figure(8, 3.5)
    if parts.height == 0:
        return _empty(fig, ax, "No trades.")
    _bars(ax, parts["exit_reason"].to_list(), parts["pnl_net_total"].to_numpy())
    ax.set_ylabel("Net P&L")
    return _png(fig, ax, title or "Net P&L by exit reason")


@memo_png
def mfe_mae_scatter_png(trades: pl.DataFrame, title: str = "") -> bytes:
    """Per trade: maximum adverse excursion (x) vs maximum favourable excursion (y), as
    fractions of the entry notional (``mae_pct``, ``mfe_pct``), coloured by winner/loser."""
    fig, ax = _figure(7, 5)
    if trades.height == 0 or not {"mfe_pct", "mae_pct", "pnl_net"} <= set(trades.columns):
        return _empty(fig, ax, "No trades with MFE/MAE.")
    win = (trades["pnl_net"] > 0).to_numpy()
    mae = trades["mae_pct"].to_numpy()
    mfe = trades["mfe_pct"].to_numpy()
    ax.scatter(mae[~win], mfe[~win], s=6, alpha=0.4, color=_RED, label="losing", linewidths=0)
    ax.scatter(mae[win], mfe[win], s=6, alpha=0.4, color=_GREEN, label="winning", linewidths=0)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel("MAE (fraction of entry notional)")
    ax.set_ylabel("MFE (fraction of entry notional)")
    ax.legend(loc="upper left", markerscale=3)
    return _png(fig, ax, title or "MFE vs MAE per trade")


@memo_png
def signal_decile_png(table: pl.DataFrame, title: str = "") -> bytes:
    """Mean net P&L per trade by signal decile, with the hit rate on a second axis.

    Parameters
    ----------
    table : pl.DataFrame
        From :func:`ml4t_pipeline.lib.attribution.by_signal_decile`.
    """
    parts = table.filter(pl.col("decile") != _TOTAL)
    fig, ax = _figure(8, 3.5)
    if parts.height == 0:
        return _empty(fig, ax, "No trades with a signal value.")
    labels = parts["decile"].to_list()
    _bars(ax, labels, parts["pnl_net_mean"].to_numpy())
    ax.set_ylabel("Mean net P&L per trade")
    hit = ax.twinx()
    hit.plot(range(len(labels)), parts["hit_rate"].to_numpy(), color="#8250df", marker="o")
    hit.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    hit.set_ylabel("Hit rate")
    return _png(fig, ax, title or "Trades by entry-signal decile (D01 lowest)")


# --- helpers -------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Figure, ax: Axes, title: str, *, grid: bool = True) -> bytes:
    if grid:
        ax.grid(True, alpha=0.3)
    ax.set_title(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _empty(fig: Figure, ax: Axes, message: str) -> bytes:
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    return _png(fig, ax, "", grid=False)


def _times(timestamps: pl.Series) -> np.ndarray:
    if isinstance(timestamps.dtype, pl.Datetime):
        if timestamps.dtype.time_zone is not None:
            timestamps = timestamps.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return timestamps.cast(pl.Datetime("us")).to_numpy()
    return timestamps.to_numpy()


def _date_axis(ax: Axes) -> None:
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


def _bars(ax: Axes, labels: list[str], values: np.ndarray) -> None:
    colors = [_GREEN if v >= 0 else _RED for v in values]
    ax.bar(range(len(labels)), values, color=colors)
    ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 6 else 0)
    ax.axhline(0.0, color=_GREY, linewidth=0.8)
