"""Market-wide context: built once per timestamp and joined onto bars only when available."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from ml4t_pipeline.lib.stamps import has_adjacent_duplicate
from ml4t_pipeline.lib.timing import asof_join_backward

MARKET_VOL_WINDOW = 20


def market_context_from_prices(prices: pl.DataFrame) -> pl.DataFrame:
    """Equal-weight market return and its rolling volatility, one row per timestamp.

    Parameters
    ----------
    prices : pl.DataFrame
        Prices contract (``timestamp``, ``symbol``, ``close`` used); unique (timestamp, symbol).

    Returns
    -------
    pl.DataFrame
        Sorted by ``timestamp`` (``Datetime[us, UTC]``, the bar close the values are known at):

        - ``market_return`` (Float64, fraction): mean over symbols of the 1-bar close return
          ``close_t / close_{t-1} - 1`` of each symbol's previous bar; symbols without a previous
          bar (or with a null close) are left out of the mean; null at the first timestamp.
        - ``market_vol_20`` (Float64): sample std (ddof = 1) of the last 20 ``market_return``
          values, per bar, not annualised; null until 20 returns exist.
        - ``n_symbols`` (UInt32): how many symbol returns the mean used.

    Raises
    ------
    ValueError
        Missing columns or a duplicated (timestamp, symbol) key.
    """
    missing = [c for c in ("timestamp", "symbol", "close") if c not in prices.columns]
    if missing:
        raise ValueError(f"market_context_from_prices: missing columns {missing}")
    frame = prices.select("timestamp", "symbol", "close")
    return _market_context(frame)


def _market_context(frame: pl.DataFrame) -> pl.DataFrame:
    """:func:`market_context_from_prices` of ``frame`` (``timestamp``, ``symbol``, ``close``)."""
    # the symbols' sort order as integers: an Enum over the sorted names, whose codes sort as
    # the names do (the same order as sorting by the names, at half the cost of a string or
    # Categorical sort on the S&P file)
    names = frame.get_column("symbol").unique().drop_nulls().cast(pl.String).sort()
    by_symbol = pl.col("symbol").cast(pl.Enum(names))
    stamps = frame.get_column("timestamp")
    if stamps.null_count() == 0 and stamps.is_sorted():
        # in time order (prepared tables are): a stable sort by symbol alone gives the same
        # (symbol, timestamp) order at about half the cost
        ordered = frame.sort(by_symbol, maintain_order=True)
    else:
        ordered = frame.sort([by_symbol, pl.col("timestamp")])
    if has_adjacent_duplicate(ordered, ["symbol", "timestamp"]):  # sorted: twins are neighbours
        dup = frame.filter(pl.struct("timestamp", "symbol").is_duplicated())
        raise ValueError(
            f"market_context_from_prices: {dup.height} duplicated (timestamp, symbol) rows: "
            f"{dup.head(5).to_dicts()}"
        )
    returns = ordered.with_columns(
        (pl.col("close") / pl.col("close").shift(1).over("symbol") - 1.0).alias("r")
    )
    return (
        returns.group_by("timestamp")
        .agg(
            pl.col("r").mean().alias("market_return"),
            pl.col("r").is_not_null().sum().cast(pl.UInt32).alias("n_symbols"),
        )
        .sort("timestamp")
        .with_columns(
            pl.col("market_return")
            .rolling_std(MARKET_VOL_WINDOW, min_samples=MARKET_VOL_WINDOW)
            .alias("market_vol_20")
        )
        .select("timestamp", "market_return", "market_vol_20", "n_symbols")
    )


def join_context_asof(
    timestamps: pl.DataFrame,
    context: pl.DataFrame,
    max_staleness: timedelta | str | None = None,
    max_fill_bars: int | None = None,
) -> pl.DataFrame:
    """Attach context values to bar timestamps, each only from the first bar that can see it.

    A backward as-of join on time: bar t gets the latest context row stamped at or before t's
    close. A context value stamped after the close (VIX at 16:15 New York vs the 16:00 equity
    close) is not visible at that bar, only from the next one.

    Parameters
    ----------
    timestamps : pl.DataFrame
        Bars with a ``timestamp`` column (``Datetime[us, UTC]``, bar close); other columns kept.
        Usually the unique bar timestamps; duplicates are allowed (each row is joined).
    context : pl.DataFrame
        ``timestamp`` (when the values became known: timezone-aware, any zone, converted to
        UTC, which is lossless) plus value columns; unique timestamps.
    max_staleness : timedelta or str, optional
        Forward-fill limit. A context row older than this at a bar is not used: its values are
        null at that bar and the bar counts as ``stale``. ``None`` fills without limit. For daily
        VIX on daily bars, ``"4d"`` tolerates weekends and one holiday.
    max_fill_bars : int, optional
        Forward-fill limit in bars: a context row is used by its first bar and at most this many
        later bars (e.g. daily VIX on hourly bars: ``7`` bars, one session). ``None``: no limit.

    Returns
    -------
    pl.DataFrame
        The input rows in input order with the context value columns, ``context_timestamp``
        (the context row used; null when none) and ``context_status`` (String): ``fresh`` (first
        bar to see that context row), ``filled`` (a later bar reusing it), ``stale`` (older than
        ``max_staleness``: values null), ``missing`` (no context row yet: values null). Count
        them with ``timing.status_counts(frame, "context_status")`` to report how many bars got
        a forward-filled, stale or no value.

    Raises
    ------
    ValueError
        Missing ``timestamp`` columns, a naive (or non-datetime) context ``timestamp``,
        duplicate or null context timestamps, or clashing column names.
    """
    for name, frame in (("timestamps", timestamps), ("context", context)):
        if "timestamp" not in frame.columns:
            raise ValueError(f"join_context_asof: {name} has no 'timestamp' column")
    dtype = context.schema["timestamp"]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise ValueError(
            f"join_context_asof: the context column 'timestamp' is {dtype}; it must be the "
            "timezone-aware instant each row became known (e.g. Datetime('us', 'UTC')). A naive "
            "date does not say when in the day the value was published (the VIX closes at "
            "16:15 New York, after the equity close): use data.context.source: vix for the "
            "CBOE file, or store the publication time with its zone"
        )
    # Converting an aware timestamp to UTC keeps the instant (lossless).
    right = context.with_columns(
        pl.col("timestamp").dt.convert_time_zone("UTC").cast(pl.Datetime("us", "UTC"))
    ).rename({"timestamp": "context_timestamp"})
    return asof_join_backward(
        timestamps,
        right,
        left_on="timestamp",
        right_on="context_timestamp",
        max_staleness=max_staleness,
        max_fill_bars=max_fill_bars,
        status_col="context_status",
    ).frame
