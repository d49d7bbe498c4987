"""The report's equity/drawdown figure, as a PNG, and the same PNG in the Dagster UI.

Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``, no global backend
switch), so rendering is thread-safe and needs no display. :func:`equity_drawdown_png` is the
figure of the report's equity section (:mod:`ml4t_pipeline.lib.report_html`) and of the
backtest's Dagster metadata (:func:`png_markdown`).
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter, StrMethodFormatter

from ml4t_pipeline.lib import plots

if TYPE_CHECKING:
    pass

__all__ = [
    "PNG_MAGIC",
    "check_png",
    "checked_states",
    "data_uri",
    "equity_drawdown_png",
    "plot_times",
    "png_markdown",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_DRAWDOWN_TOLERANCE = 1e-12


# --- figure --------------------------------------------------------------------------------------


@plots.memo_png
def equity_drawdown_png(portfolio_states: pl.DataFrame, title: str = "") -> bytes:
    """Draw the equity curve above the underwater (drawdown) curve and return PNG bytes.

    Parameters
    ----------
    portfolio_states : pl.DataFrame
        One row per timestamp. Uses ``timestamp`` (Datetime, any or no time zone; drawn in UTC,
        or Date), ``equity`` (Float64, currency, finite) and ``drawdown`` (Float64 fraction
        <= 0, ``equity / running peak - 1``). Other columns are ignored. Rows are drawn in
        timestamp order; a single row is drawn as a point.
    title : str, default ""
        Figure title (plain text).

    Returns
    -------
    bytes
        A PNG image (1000 x 600 px), starting with the PNG signature. Identical input gives
        identical bytes (no timestamp or software tag is embedded).

    Raises
    ------
    ValueError
        Missing columns, no rows, duplicate or null timestamps, null or non-finite equity or
        drawdown, or a drawdown above 0 (the message names the first offending timestamps).
    TypeError
        ``timestamp`` is not a Datetime or Date column.
    """
    states = checked_states(portfolio_states)
    x = plot_times(states["timestamp"])
    equity = states["equity"].to_numpy().astype(np.float64)
    drawdown = states["drawdown"].to_numpy().astype(np.float64)
    marker = "o" if states.height == 1 else None

    fig = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    top.plot(x, equity, color="#1f6feb", linewidth=1.2, marker=marker)
    top.set_ylabel("Equity")
    top.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    top.grid(True, alpha=0.3)
    bottom.fill_between(x, drawdown, 0.0, color="#d1242f", alpha=0.35, linewidth=0)
    bottom.plot(x, drawdown, color="#d1242f", linewidth=0.8, marker=marker)
    bottom.set_ylabel("Drawdown")
    bottom.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    bottom.set_ylim(top=0.0)
    if float(drawdown.min()) == 0.0:
        bottom.set_ylim(-0.01, 0.0)
    bottom.grid(True, alpha=0.3)
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    if title:
        fig.suptitle(title)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def png_markdown(png: bytes, alt: str = "equity") -> str:
    """Embed PNG bytes as a Markdown image with a base64 data URI (for Dagster metadata).

    Parameters
    ----------
    png : bytes
        A PNG image, e.g. from :func:`equity_drawdown_png`.
    alt : str, default "equity"
        Alternative text; ``[`` and ``]`` are removed so the Markdown stays well formed.

    Returns
    -------
    str
        ``![equity](data:image/png;base64,...)``.

    Raises
    ------
    ValueError
        ``png`` does not start with the PNG signature.
    """
    check_png(png)
    label = alt.replace("[", "").replace("]", "")
    return f"![{label}]({data_uri(png)})"


def check_png(png: bytes) -> None:
    if not png.startswith(PNG_MAGIC):
        raise ValueError(f"not a PNG image: starts with {png[:8]!r}, expected {PNG_MAGIC!r}")


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def checked_states(states: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in ("timestamp", "equity", "drawdown") if c not in states.columns]
    if missing:
        raise ValueError(
            f"portfolio_states is missing column(s) {missing}; it has {states.columns}"
        )
    if states.height == 0:
        raise ValueError("portfolio_states has no rows: nothing to plot")
    dtype = states.schema["timestamp"]
    if not isinstance(dtype, pl.Datetime) and dtype != pl.Date:
        raise TypeError(f"portfolio_states.timestamp must be Datetime or Date, got {dtype}")
    out = states.select(
        "timestamp", pl.col("equity").cast(pl.Float64), pl.col("drawdown").cast(pl.Float64)
    )
    checks = {
        "null timestamp": pl.col("timestamp").is_null(),
        "duplicate timestamp": pl.col("timestamp").is_duplicated(),
        "null or non-finite equity": pl.col("equity").is_null() | ~pl.col("equity").is_finite(),
        "null or non-finite drawdown": pl.col("drawdown").is_null()
        | ~pl.col("drawdown").is_finite(),
        "drawdown above 0 (must be equity / peak - 1 <= 0)": pl.col("drawdown")
        > _DRAWDOWN_TOLERANCE,
    }
    for problem, expr in checks.items():
        bad = out.filter(expr)
        if bad.height:
            raise ValueError(
                f"portfolio_states has {bad.height} row(s) with {problem}, e.g. "
                f"{bad.head(5).rows()}"
            )
    return out.sort("timestamp")


def plot_times(timestamps: pl.Series) -> np.ndarray:
    if isinstance(timestamps.dtype, pl.Datetime):
        if timestamps.dtype.time_zone is not None:
            timestamps = timestamps.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return timestamps.cast(pl.Datetime("us")).to_numpy()
    return timestamps.to_numpy()
