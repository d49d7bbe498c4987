"""Performance report: the equity/drawdown figure and one self-contained HTML file.

Everything here is Dagster-free. The asset that builds the report calls
:func:`render_report_html` and :func:`write_report`; the same PNG goes to the Dagster UI through
:func:`png_markdown`. Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``, no
global backend switch), so rendering is thread-safe and needs no display.

The HTML needs no network: CSS is inline and the figure is a base64 ``data:`` URI. All text that
comes from the data (title, metric names, lineage, symbols, exit reasons) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

__all__ = [
    "MAX_TRADES_SHOWN",
    "TRADE_COLUMNS",
    "equity_drawdown_png",
    "format_metric",
    "png_markdown",
    "render_report_html",
    "write_report",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_TRADES_SHOWN = 50
#: Trade columns shown in the trade list, in this order (those present in the frame).
TRADE_COLUMNS = (
    "trade_id",
    "symbol",
    "side",
    "entry_timestamp",
    "exit_timestamp",
    "entry_price",
    "exit_price",
    "quantity",
    "commission",
    "pnl_net",
    "return_pct",
    "bars_held",
    "exit_reason",
)
_EXIT_SUMMARY_INPUTS = ("exit_reason", "pnl_net", "return_pct", "bars_held")
_PERCENT_COLUMNS = {"return_pct"}
_COUNT_COLUMNS = {"trade_id", "bars_held"}
# Metric names shown as percentages (fractions in the metrics dict) and as counts.
_PERCENT_METRICS = {
    "total_return",
    "cagr",
    "annual_volatility",
    "max_drawdown",
    "win_rate",
    "exposure",
}
_PERCENT_SUFFIXES = ("_return", "_drawdown", "_rate", "_volatility")
_COUNT_METRICS = {"n_trades"}
_DRAWDOWN_TOLERANCE = 1e-12

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #1f2328; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.3rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de;
     padding-bottom: 0.2rem; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f6f8fa; }
td.text, th.text { text-align: left; }
table.lineage td, table.lineage th { text-align: left; }
.neg { color: #b42318; }
.note { color: #57606a; font-size: 0.85rem; }
img { max-width: 100%; height: auto; }
""".strip()


# --- figure --------------------------------------------------------------------------------------


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
    states = _checked_states(portfolio_states)
    x = _plot_times(states["timestamp"])
    equity = states["equity"].to_numpy().astype(np.float64)
    drawdown = states["drawdown"].to_numpy().astype(np.float64)
    marker = "o" if states.height == 1 else None

    fig = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    top.plot(x, equity, color="#1f6feb", linewidth=1.2, marker=marker)
    top.set_ylabel("Equity")
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
    _check_png(png)
    label = alt.replace("[", "").replace("]", "")
    return f"![{label}]({_data_uri(png)})"


# --- HTML ---------------------------------------------------------------------------------------


def format_metric(name: str, value: float | int | None) -> str:
    """Format one headline metric for display.

    Percent metrics (total_return, cagr, annual_volatility, max_drawdown, win_rate, exposure
    and names ending in _return, _drawdown, _rate, _volatility) are fractions shown as
    ``12.34%``; ``n_trades`` and names starting with ``n_`` as integers; everything else
    (final_equity, sharpe, sortino, calmar, profit_factor, turnover, ...) with two decimals and
    thousands separators. None and NaN show as ``n/a``, infinities as ``inf`` / ``-inf``.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    number = float(value)
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if name in _PERCENT_METRICS or name.endswith(_PERCENT_SUFFIXES):
        return f"{number:.2%}"
    if name in _COUNT_METRICS or name.startswith("n_"):
        return f"{number:,.0f}"
    return f"{number:,.2f}"


def render_report_html(
    *,
    title: str,
    metrics: Mapping[str, float],
    portfolio_states: pl.DataFrame,
    trades: pl.DataFrame,
    lineage: Mapping[str, str],
) -> str:
    """Render the backtest report as one self-contained HTML document.

    Sections, in order: header (title and a lineage table), ``Headline metrics``,
    ``Equity and drawdown`` (inline PNG), ``Trades by exit reason`` and ``Trades`` (the first
    50). Each section is a ``<section id=...>`` with ids ``lineage``, ``metrics``, ``equity``,
    ``exit-reasons`` and ``trades``.

    Parameters
    ----------
    title : str
        Report title (plain text; escaped).
    metrics : Mapping[str, float]
        Headline metrics in display order, formatted with :func:`format_metric`.
    portfolio_states : pl.DataFrame
        As for :func:`equity_drawdown_png`. With zero rows the figure is replaced by a note.
    trades : pl.DataFrame
        One row per round trip. With rows it needs ``exit_reason`` (String), ``pnl_net``
        (Float64, currency), ``return_pct`` (Float64, fraction) and ``bars_held`` (Int); the
        trade list shows the :data:`TRADE_COLUMNS` that are present, in the frame's row order.
        With zero rows (any columns) both trade sections say "No trades.".
    lineage : Mapping[str, str]
        Provenance shown under the title, e.g. ``config_hash``, ``data_version_prices``,
        ``code_version``, ``generated_at``. When ``generated_at`` is missing the current UTC
        time is added (pass it for byte-identical reports).

    Returns
    -------
    str
        The HTML document (UTF-8 text). It references nothing outside itself.

    Raises
    ------
    ValueError
        Invalid portfolio states (see :func:`equity_drawdown_png`); trades with rows but
        without the columns of the exit-reason summary.
    """
    if trades.height:
        missing = [c for c in _EXIT_SUMMARY_INPUTS if c not in trades.columns]
        if missing:
            raise ValueError(
                f"trades is missing column(s) {missing} needed for 'Trades by exit reason'; "
                f"it has {trades.columns}"
            )
    provenance = dict(lineage)
    if "generated_at" not in provenance:
        provenance["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{_esc(title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{_esc(title)}</h1>",
        '<section id="lineage">',
        _lineage_table(provenance),
        "</section>",
        "</header>",
        "<main>",
        '<section id="metrics">',
        "<h2>Headline metrics</h2>",
        _metrics_table(metrics),
        "</section>",
        '<section id="equity">',
        "<h2>Equity and drawdown</h2>",
        _figure(portfolio_states, title),
        "</section>",
        '<section id="exit-reasons">',
        "<h2>Trades by exit reason</h2>",
        _exit_reason_table(trades),
        "</section>",
        '<section id="trades">',
        "<h2>Trades</h2>",
        _trades_table(trades),
        "</section>",
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(path: str | os.PathLike[str], html_text: str) -> Path:
    """Write the report atomically: a temporary file in the same folder, then a rename.

    A reader never sees a half-written report; on failure the temporary file is removed and
    an existing report at ``path`` is left untouched. Parent folders are created.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, e.g. ``out/report.html``.
    html_text : str
        The document, written as UTF-8.

    Returns
    -------
    Path
        The absolute destination path.
    """
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(html_text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


# --- helpers -------------------------------------------------------------------------------------


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _check_png(png: bytes) -> None:
    if not png.startswith(PNG_MAGIC):
        raise ValueError(f"not a PNG image: starts with {png[:8]!r}, expected {PNG_MAGIC!r}")


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _checked_states(states: pl.DataFrame) -> pl.DataFrame:
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


def _plot_times(timestamps: pl.Series) -> np.ndarray:
    if isinstance(timestamps.dtype, pl.Datetime):
        if timestamps.dtype.time_zone is not None:
            timestamps = timestamps.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return timestamps.cast(pl.Datetime("us")).to_numpy()
    return timestamps.to_numpy()


def _figure(portfolio_states: pl.DataFrame, title: str) -> str:
    if portfolio_states.height == 0:
        return '<p class="note">No portfolio states: nothing to plot.</p>'
    png = equity_drawdown_png(portfolio_states, title="")
    states = _checked_states(portfolio_states)
    first, last = states["timestamp"][0], states["timestamp"][-1]
    caption = (
        f"{states.height:,} bars from {_cell_time(first)} to {_cell_time(last)} (UTC). "
        "Drawdown = equity / running peak - 1."
    )
    return (
        f'<figure><img src="{_data_uri(png)}" alt="{_esc("Equity and drawdown: " + title)}">'
        f'<figcaption class="note">{_esc(caption)}</figcaption></figure>'
    )


def _lineage_table(lineage: Mapping[str, str]) -> str:
    if not lineage:
        return '<p class="note">No lineage recorded.</p>'
    rows = "".join(
        f'<tr><th scope="row">{_esc(k)}</th><td><code>{_esc(v)}</code></td></tr>'
        for k, v in lineage.items()
    )
    return f'<table class="lineage"><tbody>{rows}</tbody></table>'


def _metrics_table(metrics: Mapping[str, float]) -> str:
    if not metrics:
        return '<p class="note">No metrics.</p>'
    rows = []
    for name, value in metrics.items():
        shown = format_metric(name, value)
        css = ' class="neg"' if shown.startswith("-") else ""
        rows.append(
            f'<tr><th scope="row" class="text">{_esc(name)}</th><td{css}>{_esc(shown)}</td></tr>'
        )
    return (
        '<table class="metrics"><thead><tr><th class="text">metric</th><th>value</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _exit_reason_table(trades: pl.DataFrame) -> str:
    if trades.height == 0:
        return '<p class="note">No trades.</p>'
    summary = (
        trades.group_by("exit_reason")
        .agg(
            pl.len().alias("count"),
            (pl.col("pnl_net") > 0).mean().alias("win_rate"),
            pl.col("pnl_net").sum().alias("total_pnl_net"),
            pl.col("return_pct").mean().alias("mean_return_pct"),
            pl.col("bars_held").mean().alias("mean_bars_held"),
        )
        .sort(["count", "exit_reason"], descending=[True, False], nulls_last=True)
    )
    head = (
        '<thead><tr><th class="text">exit reason</th><th>count</th><th>win rate</th>'
        "<th>total pnl_net</th><th>mean return_pct</th><th>mean bars_held</th></tr></thead>"
    )
    rows = []
    for r in summary.iter_rows(named=True):
        reason = r["exit_reason"] if r["exit_reason"] is not None else "—"
        cells = [
            f'<td class="text">{_esc(reason)}</td>',
            f"<td>{r['count']:,}</td>",
            _num_cell(r["win_rate"], "{:.1%}"),
            _num_cell(r["total_pnl_net"], "{:,.2f}"),
            _num_cell(r["mean_return_pct"], "{:.2%}"),
            _num_cell(r["mean_bars_held"], "{:,.1f}"),
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    note = (
        '<p class="note">Win rate = share of trades with pnl_net &gt; 0; return_pct is '
        "pnl_net / (entry_price &times; quantity).</p>"
    )
    return f'<table class="exit-reasons">{head}<tbody>{"".join(rows)}</tbody></table>{note}'


def _trades_table(trades: pl.DataFrame) -> str:
    if trades.height == 0:
        return '<p class="note">No trades.</p>'
    columns = [c for c in TRADE_COLUMNS if c in trades.columns]
    shown = trades.head(MAX_TRADES_SHOWN).select(columns)
    head = "".join(
        f'<th class="{"text" if _is_text(shown, c) else "num"}">{_esc(c)}</th>' for c in columns
    )
    body = []
    for row in shown.iter_rows(named=True):
        body.append("<tr>" + "".join(_trade_cell(c, row[c], shown) for c in columns) + "</tr>")
    note = (
        f'<p class="note">Showing the first {shown.height:,} of {trades.height:,} trades. '
        "Timestamps are UTC bar closes; prices in currency per share.</p>"
    )
    return (
        f'<table class="trades"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
        f"</table>{note}"
    )


def _is_text(frame: pl.DataFrame, column: str) -> bool:
    return not frame.schema[column].is_numeric()


def _num_cell(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "<td>n/a</td>"
    shown = fmt.format(value)
    css = ' class="neg"' if shown.startswith("-") else ""
    return f"<td{css}>{_esc(shown)}</td>"


def _trade_cell(column: str, value: object, frame: pl.DataFrame) -> str:
    if value is None:
        return "<td>—</td>"
    if isinstance(value, datetime | date):
        return f'<td class="text">{_esc(_cell_time(value))}</td>'
    if _is_text(frame, column):
        return f'<td class="text">{_esc(value)}</td>'
    if column in _PERCENT_COLUMNS:
        return _num_cell(float(value), "{:.2%}")  # type: ignore[arg-type]
    if column in _COUNT_COLUMNS or isinstance(value, int):
        return _num_cell(float(value), "{:,.0f}")  # type: ignore[arg-type]
    if column == "quantity":
        number = float(value)  # type: ignore[arg-type]
        fmt = "{:,.0f}" if number.is_integer() else "{:,.4f}"
        return _num_cell(number, fmt)
    return _num_cell(float(value), "{:,.2f}")  # type: ignore[arg-type]


def _cell_time(value: object) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        if value.hour == value.minute == value.second == value.microsecond == 0:
            return value.strftime("%Y-%m-%d")
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
