"""Experiment comparison: one row per experiment with its metrics and lineage, and a joint plot.

Used by the ``experiment_comparison`` asset and by ``ml4t compare``; no Dagster here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

import polars as pl

COMPARISON_METRICS = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "n_trades",
    "turnover",
    "total_costs",
    "final_equity",
    "alpha",
    "beta",
    "information_ratio",
    "bench_alpha",
    "bench_beta",
    "bench_information_ratio",
    "bench_tracking_error",
    "bench_up_capture",
    "bench_down_capture",
)
"""The table's metrics: unprefixed alpha/beta/information ratio against the equal-weight
universe, ``bench_*`` against ``reporting.benchmark`` (null when not configured)."""
LINEAGE_FIELDS = ("config_hash", "code_version", "prices_version", "signals_version", "run_id")


def comparison_table(
    metrics: Mapping[str, Mapping[str, Any]],
    lineage: Mapping[str, Mapping[str, Any]] | None = None,
) -> pl.DataFrame:
    """Build the comparison table.

    Parameters
    ----------
    metrics : mapping experiment → metrics dict
        The ``metrics`` asset value of each experiment (fractions for returns and drawdown,
        currency for equity and costs). A metric an experiment lacks is null, never 0.
    lineage : mapping experiment → lineage dict, optional
        ``config_hash``, ``code_version``, ``prices_version``, ``signals_version``, ``run_id``.

    Returns
    -------
    pl.DataFrame
        ``experiment`` (String), one Float64 column per metric in ``COMPARISON_METRICS`` (n_trades
        as Int64), and one String column per lineage field; sorted by experiment.
    """
    lineage = lineage or {}
    rows = []
    for name in sorted(metrics):
        values = metrics[name]
        row: dict[str, Any] = {"experiment": name}
        for key in COMPARISON_METRICS:
            value = values.get(key)
            if key == "n_trades":
                row[key] = None if value is None else int(value)
            else:
                row[key] = None if value is None else float(value)
        for key in LINEAGE_FIELDS:
            value = lineage.get(name, {}).get(key)
            row[key] = None if value is None else str(value)
        rows.append(row)
    schema: dict[str, pl.DataType] = {"experiment": pl.String()}
    schema |= {k: (pl.Int64() if k == "n_trades" else pl.Float64()) for k in COMPARISON_METRICS}
    schema |= {k: pl.String() for k in LINEAGE_FIELDS}
    return pl.DataFrame(rows, schema=schema, orient="row")


def format_table(table: pl.DataFrame) -> str:
    """Plain-text rendering for the terminal: percentages for returns, two decimals elsewhere."""
    percent = {"total_return", "cagr", "max_drawdown"}
    columns = ["experiment", *[c for c in COMPARISON_METRICS if c in table.columns], "config_hash"]
    columns = [c for c in columns if c in table.columns]

    def fmt(name: str, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            if math.isnan(value):
                return "nan"
            return f"{value:.2%}" if name in percent else f"{value:,.2f}"
        return str(value)

    cells = [[fmt(c, row[c]) for c in columns] for row in table.iter_rows(named=True)]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in
              enumerate(columns)]  # fmt: skip
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def equity_curves_png(states: Mapping[str, pl.DataFrame], title: str = "Equity") -> bytes:
    """PNG of every experiment's equity curve, each normalised to 1.0 at its first bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    for name in sorted(states):
        frame = states[name]
        if frame.height == 0:
            continue
        equity = frame["equity"].to_numpy()
        ax.plot(frame["timestamp"].to_list(), equity / equity[0], label=name, linewidth=1.2)
    ax.set_title(title)
    ax.set_ylabel("equity / initial")
    ax.grid(alpha=0.3)
    if states:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def format_frame(frame: pl.DataFrame) -> str:
    """Plain-text rendering of any small table (floats with 6 significant digits)."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.6g}"
        return "-" if value is None else str(value)

    columns = frame.columns
    cells = [[fmt(v) for v in row] for row in frame.iter_rows()]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
