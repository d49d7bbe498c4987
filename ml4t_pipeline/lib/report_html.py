"""The report as one self-contained HTML file: :func:`render_report_html` and
:func:`write_report`.

The HTML needs no network: CSS is inline and the figures are base64 ``data:`` URIs. All text
that comes from the data (title, metric names, lineage, symbols, exit reasons) is HTML-escaped.
The full report (benchmark, underwater, monthly heatmap, rolling Sharpe, attribution tables and
their charts) is drawn when :func:`render_report_html` gets an ``analysis``
(:func:`ml4t_pipeline.lib.report_analysis.analyse_run`).
"""

from __future__ import annotations

import html
import math
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ml4t_pipeline.lib import attribution as attribution_lib
from ml4t_pipeline.lib import performance, plots

if TYPE_CHECKING:
    pass

from ml4t_pipeline.lib.report_analysis import ReportAnalysis
from ml4t_pipeline.lib.report_figures import (
    checked_states,
    data_uri,
    equity_drawdown_png,
)

__all__ = [
    "MAX_TRADES_SHOWN",
    "REPORT_SECTIONS",
    "TRADE_COLUMNS",
    "format_metric",
    "render_report_html",
    "write_report",
]

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
    "benchmark_cagr",
    "alpha",
    "tracking_error",
    "cost_drag",
    "cost_to_initial_equity",
}
_PERCENT_SUFFIXES = ("_return", "_drawdown", "_rate", "_volatility")
_COUNT_METRICS = {"n_trades", "max_drawdown_duration_bars", "benchmark_bars"}

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
p.reconciliation { font-family: ui-monospace, monospace; font-size: 0.8rem; }
.scroll { overflow-x: auto; }
tr.total td, tr.total th { font-weight: 600; background: #f6f8fa; }
""".strip()


#: ``<section id=...>`` of the full report (with an ``analysis``), in document order.
REPORT_SECTIONS = (
    "lineage",
    "metrics",
    "equity",
    "benchmark",
    "underwater",
    "monthly-returns",
    "rolling-sharpe",
    "exit-reasons",
    "mfe-mae",
    "signal-deciles",
    "information-coefficient",
    "regimes",
    "costs",
    "trades",
)


# --- HTML ---------------------------------------------------------------------------------------


def format_metric(name: str, value: float | int | None) -> str:
    """Format one headline metric for display.

    Percent metrics (total_return, cagr, annual_volatility, max_drawdown, win_rate, exposure,
    benchmark_cagr, alpha, tracking_error, cost_drag, cost_to_initial_equity and names ending
    in _return, _drawdown, _rate, _volatility) are fractions shown as ``12.34%``; ``n_trades``,
    max_drawdown_duration_bars, benchmark_bars and names starting with ``n_`` as integers;
    names starting with ``ic_`` with four decimals; everything else
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
    if name.startswith("ic_"):
        return f"{number:.4f}"
    return f"{number:,.2f}"


def render_report_html(
    *,
    title: str,
    metrics: Mapping[str, float],
    portfolio_states: pl.DataFrame,
    trades: pl.DataFrame,
    lineage: Mapping[str, str],
    analysis: ReportAnalysis | None = None,
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
    analysis : ReportAnalysis, optional
        From :func:`analyse_run`. When given the report is the full one, with the sections
        :data:`REPORT_SECTIONS` in that order: the metrics table adds every metric of
        ``analysis.metrics`` not in ``metrics``; then equity vs benchmark, underwater
        drawdown, monthly returns heatmap, rolling Sharpe; the exit-reason section becomes the
        attribution table (win rate, mean/total P&L, holding period, MFE/MAE) with its
        reconciliation line and a P&L bar chart; then the MFE/MAE scatter, the signal-decile
        table and chart, the information coefficient, the regime table and the cost
        attribution (each attribution table with its reconciliation line).

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
        _metrics_table(_merged_metrics(metrics, analysis)),
        *(_notes(analysis.notes) if analysis is not None else []),
        "</section>",
        '<section id="equity">',
        "<h2>Equity and drawdown</h2>",
        _figure(portfolio_states, title),
        "</section>",
        *(_analysis_sections_before(analysis) if analysis is not None else []),
        '<section id="exit-reasons">',
        "<h2>Trades by exit reason</h2>",
        _exit_reason_table(trades) if analysis is None else _exit_attribution(analysis),
        "</section>",
        *(_analysis_sections_after(analysis, trades) if analysis is not None else []),
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


# --- full-report sections ------------------------------------------------------------------------

_ATTRIBUTION_NOTE = {
    "by_signal_decile": "Deciles of the entry signal over the closed trades (D01 lowest); hit "
    "rate = share of trades with pnl_net &gt; 0.",
    "by_regime": "Quantile buckets of the context variable at the entry decision; cut points "
    "from its values over all bars. n_bars, mean_bar_return and annualised_return describe the "
    "portfolio on the bars of each regime.",
    "cost_attribution": "Trades booked in their exit month (UTC). pnl_before_costs &minus; "
    "slippage &minus; commission = pnl_net; cost_share = (slippage + commission) / "
    "pnl_before_costs.",
}


def _merged_metrics(
    metrics: Mapping[str, float], analysis: ReportAnalysis | None
) -> dict[str, Any]:
    merged: dict[str, Any] = dict(metrics)
    if analysis is not None:
        for name, value in analysis.metrics.items():
            merged.setdefault(name, value)
    return dict(performance.metric_items(merged))


def _notes(notes: list[str]) -> list[str]:
    return [f'<p class="note">{_esc(n)}</p>' for n in notes]


def _image(png: bytes, alt: str) -> str:
    return f'<figure><img src="{data_uri(png)}" alt="{_esc(alt)}"></figure>'


def _section(section_id: str, heading: str, *body: str) -> str:
    return "\n".join(
        [f'<section id="{section_id}">', f"<h2>{_esc(heading)}</h2>", *body, "</section>"]
    )


def _analysis_sections_before(a: ReportAnalysis) -> list[str]:
    m = a.metrics
    bench = (
        f"Benchmark: {a.benchmark_name}, from the same starting equity. Alpha "
        f"{format_metric('alpha', m.get('alpha'))}, beta {format_metric('beta', m.get('beta'))}, "
        f"information ratio {format_metric('information_ratio', m.get('information_ratio'))}."
        if "benchmark_equity" in a.curve.columns
        else "No benchmark available: strategy equity only."
    )
    return [
        _section(
            "benchmark",
            "Equity vs benchmark",
            _image(plots.equity_vs_benchmark_png(a.curve), "Equity vs benchmark"),
            f'<p class="note">{_esc(bench)}</p>',
        ),
        _section(
            "underwater",
            "Underwater drawdown",
            _image(plots.underwater_png(_drawdown_frame(a.curve)), "Underwater drawdown"),
            f'<p class="note">Longest drawdown: '
            f"{format_metric('n_bars', m.get('max_drawdown_duration_bars'))} bars "
            f"({format_metric('days', m.get('max_drawdown_duration_days'))} days).</p>",
        ),
        _section(
            "monthly-returns",
            "Monthly returns",
            _image(plots.monthly_heatmap_png(a.monthly), "Monthly returns heatmap"),
        ),
        _section(
            "rolling-sharpe",
            "Rolling Sharpe",
            _image(
                plots.rolling_sharpe_png(a.rolling, a.rolling_window),
                f"Rolling Sharpe over {a.rolling_window} bars",
            ),
        ),
    ]


def _exit_attribution(a: ReportAnalysis) -> str:
    table = a.attribution["by_exit_reason"]
    return "\n".join(
        [
            _frame_table(table, "exit-reasons"),
            _reconciliation(a, "by_exit_reason"),
            _image(plots.pnl_by_exit_reason_png(table), "Net P&L by exit reason"),
        ]
    )


def _analysis_sections_after(a: ReportAnalysis, trades: pl.DataFrame) -> list[str]:
    att = a.attribution
    out = [
        _section(
            "mfe-mae",
            "MFE / MAE per trade",
            _image(plots.mfe_mae_scatter_png(trades), "MFE vs MAE scatter"),
        )
    ]
    if "by_signal_decile" in att:
        out.append(
            _section(
                "signal-deciles",
                "P&L by signal decile",
                _frame_table(att["by_signal_decile"], "signal-deciles"),
                f'<p class="note">{_ATTRIBUTION_NOTE["by_signal_decile"]}</p>',
                _reconciliation(a, "by_signal_decile"),
                _image(plots.signal_decile_png(att["by_signal_decile"]), "Signal decile chart"),
            )
        )
    else:
        out.append(_section("signal-deciles", "P&L by signal decile", _na("no entry signal")))
    if "ic_summary" in att:
        ic = att["ic_summary"]
        rows = pl.DataFrame({"statistic": list(ic), "value": [float(v) for v in ic.values()]})
        note = (
            "IC = Spearman rank correlation, per signal timestamp, of the score with the "
            f"symbol's realised {ic['horizon']}-bar forward close-to-close return; t = mean / "
            "(std / &radic;n). With a horizon above one bar neighbouring periods overlap; the "
            "non-overlapping t uses every horizon-th period only."
        )
        out.append(
            _section(
                "information-coefficient",
                "Information coefficient",
                _frame_table(rows, "ic"),
                f'<p class="note">{note}</p>',
            )
        )
    else:
        out.append(
            _section(
                "information-coefficient",
                "Information coefficient",
                _na("signals or prices not available"),
            )
        )
    if "by_regime" in att:
        out.append(
            _section(
                "regimes",
                f"P&L by regime ({att['regime_column']})",
                _frame_table(att["by_regime"], "regimes"),
                f'<p class="note">{_ATTRIBUTION_NOTE["by_regime"]}</p>',
                _reconciliation(a, "by_regime"),
            )
        )
    else:
        out.append(_section("regimes", "P&L by regime", _na("no context column in the trades")))
    out.append(
        _section(
            "costs",
            "Cost attribution",
            _frame_table(att["cost_attribution"], "costs"),
            f'<p class="note">{_ATTRIBUTION_NOTE["cost_attribution"]}</p>',
            _reconciliation(a, "cost_attribution"),
        )
    )
    out.extend(_mechanics_sections(att))
    return out


def _mechanics_sections(att: Mapping[str, Any]) -> list[str]:
    """Dividends and financing per month, and the corporate-action events (market mechanics
    runs only)."""
    out = []
    if "carry_attribution" in att:
        out.append(
            _section(
                "carry",
                "Dividends and financing",
                _frame_table(att["carry_attribution"], "carry"),
                '<p class="note">Cash lines outside the trades\' P&amp;L, per month (UTC): '
                "dividends (ex-date), interest on cash, short borrow fees.</p>",
            )
        )
    events = att.get("corporate_actions")
    if events is not None:
        shown = events.head(200).with_columns(
            pl.col(c).cast(pl.String)
            for c in ("timestamp", "ex_date", "pay_date")
            if c in events.columns
        )
        out.append(
            _section(
                "corporate-actions",
                f"Corporate actions applied ({events.height})",
                _frame_table(shown, "corporate-actions"),
                '<p class="note">Splits and dividends on held positions or working orders, '
                "at the bar they took effect (first 200).</p>",
            )
        )
    return out


def _na(reason: str) -> str:
    return f'<p class="note">Not available: {_esc(reason)}.</p>'


def _reconciliation(a: ReportAnalysis, name: str) -> str:
    result = a.attribution["reconciliation"][name]
    return f'<p class="reconciliation">{_esc(attribution_lib.reconciliation_line(result))}</p>'


def _drawdown_frame(curve: pl.DataFrame) -> pl.DataFrame:
    return curve.select(
        "timestamp", (pl.col("equity") / pl.col("equity").cum_max() - 1.0).alias("drawdown")
    )


def _frame_table(frame: pl.DataFrame, css: str) -> str:
    if frame.height == 0:
        return '<p class="note">No rows.</p>'
    key = frame.columns[0]
    text = _text_columns(frame)
    head = "".join(
        f'<th class="{"text" if c in text else "num"}">{_esc(c)}</th>' for c in frame.columns
    )
    body = []
    for row in frame.iter_rows(named=True):
        cells = []
        for c in frame.columns:
            value = row[c]
            if value is None:
                cells.append("<td>—</td>")
            elif c in text:
                cells.append(f'<td class="text">{_esc(value)}</td>')
            else:
                cells.append(_num_cell(float(value), _column_format(c, float(value))))
        total = ' class="total"' if row[key] == attribution_lib.TOTAL else ""
        body.append(f"<tr{total}>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table class="{_esc(css)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _column_format(column: str, value: float) -> str:
    if column.startswith("n_") or column in ("horizon",):
        return "{:,.0f}"
    if any(t in column for t in ("rate", "share", "return", "pct")) and "t_stat" not in column:
        return "{:.2%}"
    if column in ("signal_min", "signal_max", "lower", "upper", "value") or abs(value) < 0.01:
        return "{:.4g}"
    return "{:,.2f}"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _figure(portfolio_states: pl.DataFrame, title: str) -> str:
    if portfolio_states.height == 0:
        return '<p class="note">No portfolio states: nothing to plot.</p>'
    png = equity_drawdown_png(portfolio_states, title="")
    states = checked_states(portfolio_states)
    first, last = states["timestamp"][0], states["timestamp"][-1]
    caption = (
        f"{states.height:,} bars from {_cell_time(first)} to {_cell_time(last)} (UTC). "
        "Drawdown = equity / running peak - 1."
    )
    return (
        f'<figure><img src="{data_uri(png)}" alt="{_esc("Equity and drawdown: " + title)}">'
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
    text = _text_columns(shown)
    head = "".join(f'<th class="{"text" if c in text else "num"}">{_esc(c)}</th>' for c in columns)
    body = []
    for row in shown.iter_rows(named=True):
        body.append("<tr>" + "".join(_trade_cell(c, row[c], text) for c in columns) + "</tr>")
    note = (
        f'<p class="note">Showing the first {shown.height:,} of {trades.height:,} trades. '
        "Timestamps are UTC bar closes; prices in currency per share.</p>"
    )
    return (
        f'<table class="trades"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
        f"</table>{note}"
    )


def _text_columns(frame: pl.DataFrame) -> frozenset[str]:
    # looked up once per table, not per cell (a frame's schema is rebuilt on each access)
    return frozenset(c for c, dtype in frame.schema.items() if not dtype.is_numeric())


def _num_cell(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "<td>n/a</td>"
    shown = fmt.format(value)
    css = ' class="neg"' if shown.startswith("-") else ""
    return f"<td{css}>{_esc(shown)}</td>"


def _trade_cell(column: str, value: object, text: frozenset[str]) -> str:
    if value is None:
        return "<td>—</td>"
    if isinstance(value, datetime | date):
        return f'<td class="text">{_esc(_cell_time(value))}</td>'
    if column in text:
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
