"""A benchmark read offline from a price file (``reporting.benchmark``).

The file has the prices schema and is stamped exactly like the prices
(:func:`ml4t_pipeline.lib.io.load_prices_file`), so a benchmark bar and a strategy bar of the
same session carry the same close timestamp and join exactly. The benchmark's bar return is its
own close-to-close return ``b_t = C_t / C_prev - 1``, ``C_prev`` being the benchmark's previous
row in the file (its first row has no return). Nothing is downloaded, filled or forward-filled.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl

from ml4t_pipeline.lib.calendars import DEFAULT_CALENDAR
from ml4t_pipeline.lib.io import load_prices_file

__all__ = ["benchmark_equity_curve", "load_benchmark_returns"]


def load_benchmark_returns(
    path: str | Path,
    symbol: str,
    bar_length: timedelta | str | None = None,
    *,
    calendar: str = DEFAULT_CALENDAR,
    corporate_actions: tuple[str | Path, str] | None = None,
) -> pl.DataFrame:
    """The benchmark's close-to-close bar returns.

    Parameters
    ----------
    path : str or Path
        Price file in the prices schema (e.g. ``lean_daily_ohlcv_unadjusted.parquet``).
    symbol : str
        The benchmark's symbol in that file (e.g. ``SPY``).
    bar_length : timedelta or str, optional
        As :func:`ml4t_pipeline.lib.io.load_prices_file` (intraday files only).
    calendar : str, default "XNYS"
        The experiment's ``data.calendar``: daily dates are stamped at its session closes, as
        the prices are.
    corporate_actions : (path, format), optional
        A corporate-actions table (``format`` ``table`` or ``lean``;
        :func:`ml4t_pipeline.lib.corporate_actions.load_actions`): the closes are then
        total-return adjusted with ``symbol``'s rows
        (:func:`~ml4t_pipeline.lib.corporate_actions.adjust_prices`, mode ``total_return``:
        splits removed, each dividend reinvested at its ex-date's previous close), so
        ``benchmark_return`` is a total return. None: the closes as they are (raw closes give
        a price return).

    Returns
    -------
    pl.DataFrame
        ``timestamp`` (``Datetime[us, UTC]``, bar close), ``benchmark_close`` (Float64,
        currency per share) and ``benchmark_return`` (Float64 fraction; null on the file's
        first row of ``symbol``), sorted by time.

    Raises
    ------
    ValueError
        ``symbol`` not in the file (the symbols present are listed), or a close that is null
        or not positive (the rows are named).
    engine.mechanics.CorporateActionsError
        A bad corporate-actions row for ``symbol`` (ratio <= 0, duplicate ex-date, a
        dividend not below the previous close: the rows are named).
    """
    prices = load_prices_file(path, bar_length, calendar=calendar)
    rows = prices.filter(pl.col("symbol") == symbol)
    if rows.height == 0:
        present = sorted(prices["symbol"].unique().to_list())
        raise ValueError(
            f"reporting.benchmark: symbol {symbol!r} not in {path}; symbols there: "
            f"{present[:30]}{' ...' if len(present) > 30 else ''}"
        )
    bad = rows.filter(pl.col("close").is_null() | ~(pl.col("close") > 0))
    if bad.height:
        raise ValueError(
            f"reporting.benchmark: {bad.height} {symbol} rows in {path} have a null or "
            f"non-positive close: {bad.select('timestamp', 'close').head(5).to_dicts()}"
        )
    rows = rows.sort("timestamp")
    if corporate_actions is not None:
        from ml4t_pipeline.lib.corporate_actions import (
            adjust_prices,
            load_actions,
            validate_against_prices,
        )

        actions, _ = load_actions(corporate_actions[0], corporate_actions[1], rows)
        actions = actions.filter(pl.col("symbol").cast(pl.String) == symbol)
        validate_against_prices(actions, rows)
        rows = adjust_prices(rows, actions, "total_return")
    return rows.select(
        "timestamp",
        pl.col("close").alias("benchmark_close"),
        (pl.col("close") / pl.col("close").shift(1) - 1.0).alias("benchmark_return"),
    )


def benchmark_equity_curve(
    timestamps: pl.Series, benchmark: pl.DataFrame, initial_cash: float
) -> pl.DataFrame:
    """Benchmark equity on the strategy's bars, from the same starting equity ``E0``.

    ``B_t = E0 × Π_{s ≤ t} (1 + b_s)`` over the strategy's bars; a bar without a benchmark
    return leaves ``B`` unchanged there and is marked in ``bench_missing`` (the metrics report
    the count, :func:`ml4t_pipeline.lib.performance.benchmark_comparison`).

    Returns
    -------
    pl.DataFrame
        ``timestamp``, ``bench_equity`` (currency), ``bench_missing`` (Boolean).
    """
    joined = (
        pl.DataFrame({"timestamp": timestamps})
        .join(benchmark.select("timestamp", "benchmark_return"), on="timestamp", how="left")
        .with_columns(pl.col("benchmark_return").is_null().alias("bench_missing"))
    )
    return joined.select(
        "timestamp",
        (initial_cash * (1.0 + pl.col("benchmark_return").fill_null(0.0)).cum_prod()).alias(
            "bench_equity"
        ),
        "bench_missing",
    )
