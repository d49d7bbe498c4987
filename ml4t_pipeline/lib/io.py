"""Reading raw inputs into the data contracts (``DESIGN.md``: long format, UTC bar-close stamps).

Nothing here drops, fills or fixes rows: loaders only rename, cast, re-stamp time and sort.
Validation is a separate step (``schemas.validate_prices``).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl

from ml4t_pipeline.lib.timing import (
    UTC_DATETIME,
    bar_start_to_close,
    daily_close_utc,
    vix_close_utc,
)

PRICE_COLUMNS: tuple[str, ...] = ("timestamp", "symbol", "open", "high", "low", "close", "volume")
"""Columns of the prices contract, in order."""

OHLCV: tuple[str, ...] = ("open", "high", "low", "close", "volume")

_PARQUET_SUFFIXES = {".parquet", ".pq"}
_CSV_SUFFIXES = {".csv"}


def read_table(path: str | Path, columns: list[str] | None = None) -> pl.DataFrame:
    """Read a Parquet or CSV file, or a directory of Parquet files (hive partitions allowed).

    Parameters
    ----------
    path : str or Path
        A ``.parquet``/``.pq`` file, a ``.csv`` file (header row; ISO dates/datetimes are parsed),
        or a directory whose ``*.parquet`` files (searched recursively) form one table; hive
        ``key=value`` folders become columns (``year``/``month`` partitions written by
        ``storage.write_partitioned`` are read back as Int32).
    columns : list of str, optional
        Read only these columns (projection pushdown for Parquet); all when ``None``.

    Returns
    -------
    pl.DataFrame
        The table as stored (no casting beyond CSV parsing).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist, or a directory holds no Parquet file.
    ValueError
        If the file suffix is neither Parquet nor CSV, or a requested column is absent.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input table not found: {p}")
    if p.is_dir():
        files = sorted(p.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"directory {p} contains no *.parquet files")
        hive_schema = {
            part.split("=", 1)[0]: pl.Int32
            for f in files
            for part in f.relative_to(p).parts[:-1]
            if part.split("=", 1)[0] in ("year", "month") and "=" in part
        }
        lf = pl.scan_parquet(
            p / "**" / "*.parquet", hive_partitioning=True, hive_schema=hive_schema or None
        )
    elif p.suffix.lower() in _PARQUET_SUFFIXES:
        lf = pl.scan_parquet(p)
    elif p.suffix.lower() in _CSV_SUFFIXES:
        lf = pl.scan_csv(p, try_parse_dates=True)
    else:
        raise ValueError(
            f"unsupported table format for {p}: expected a .parquet/.pq or .csv file or a "
            "directory of Parquet files"
        )
    if columns is not None:
        available = lf.collect_schema().names()
        absent = [c for c in columns if c not in available]
        if absent:
            raise ValueError(f"{p}: columns {absent} not found (available: {available})")
        lf = lf.select(columns)
    return lf.collect()


def _require_columns(df: pl.DataFrame, required: tuple[str, ...], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing} (got {df.columns})")


def to_prices_contract(df: pl.DataFrame, bar_length: timedelta | str | None = None) -> pl.DataFrame:
    """Bring a prices frame into the contract: UTC bar-close ``timestamp``, String symbol, Float64.

    Parameters
    ----------
    df : pl.DataFrame
        Columns ``timestamp``, ``symbol``, ``open``, ``high``, ``low``, ``close``, ``volume``
        (extra columns are dropped from the output, rows never are). ``timestamp`` is either
        a ``pl.Date``/naive ``pl.Datetime`` at 00:00 (a daily bar of that trading date) or a
        timezone-aware ``pl.Datetime`` marking the bar **start** (intraday).
    bar_length : timedelta or str, optional
        Required for intraday (timezone-aware) input: the bar length added to the start to get
        the close (``"1m"``, ``"1h"``; see ``timing.bar_start_to_close``). Must be ``None`` for
        daily input.

    Returns
    -------
    pl.DataFrame
        ``PRICE_COLUMNS``: timestamp ``Datetime[us, UTC]`` (daily: 16:00 New York close),
        symbol String, OHLCV Float64; sorted by (timestamp, symbol), same row count.

    Raises
    ------
    ValueError
        Missing columns; a naive timestamp that is not at midnight (the message names the rows);
        intraday input without ``bar_length`` or daily input with one; null timestamps.
    """
    what = "prices"
    _require_columns(df, PRICE_COLUMNS, what)
    ts_dtype = df.schema["timestamp"]
    null_ts = df.with_row_index("row_index").filter(pl.col("timestamp").is_null())
    if null_ts.height:
        raise ValueError(f"{what}: {null_ts.height} rows have a null timestamp: {null_ts.head(5)}")
    out = df.select(
        pl.col("timestamp"),
        pl.col("symbol").cast(pl.String),
        *[pl.col(c).cast(pl.Float64) for c in OHLCV],
    )
    if ts_dtype == pl.Date or (isinstance(ts_dtype, pl.Datetime) and ts_dtype.time_zone is None):
        if bar_length is not None:
            raise ValueError(
                f"{what}: timestamps are naive daily dates; bar_length={bar_length!r} applies "
                "only to timezone-aware intraday bar-start timestamps"
            )
        if isinstance(ts_dtype, pl.Datetime):
            off_midnight = out.with_row_index("row_index").filter(
                pl.col("timestamp").dt.time() != pl.time(0)
            )
            if off_midnight.height:
                raise ValueError(
                    f"{what}: {off_midnight.height} naive timestamps are not at 00:00, so they "
                    "are not daily dates; intraday files must be timezone-aware (bar start). "
                    f"First rows: {off_midnight.head(5).to_dicts()}"
                )
        out = out.with_columns(daily_close_utc(pl.col("timestamp")).alias("timestamp"))
    elif isinstance(ts_dtype, pl.Datetime):
        if bar_length is None:
            raise ValueError(
                f"{what}: timezone-aware timestamps are taken as intraday bar START times; pass "
                "bar_length (e.g. '1m', '1h') so they can be moved to the bar close"
            )
        out = bar_start_to_close(out, bar_length)
    else:
        raise ValueError(f"{what}: timestamp must be a Date or Datetime column, got {ts_dtype}")
    return out.with_columns(pl.col("timestamp").cast(UTC_DATETIME)).sort(
        ["timestamp", "symbol"], maintain_order=True
    )


def load_prices_file(path: str | Path, bar_length: timedelta | str | None = None) -> pl.DataFrame:
    """Read a prices file (or directory) and bring it into the prices contract.

    Parameters
    ----------
    path : str or Path
        Parquet/CSV file or Parquet directory (see :func:`read_table`) with the shared data
        schema: timestamp, symbol, open, high, low, close, volume.
    bar_length : timedelta or str, optional
        For intraday files, whose timezone-aware timestamps mark the bar **start** (Lean,
        Polygon): the bar length, e.g. ``"1m"`` or ``"1h"``; the prepared timestamp is the bar
        close = start + ``bar_length``. Leave ``None`` for daily files, whose naive 00:00 dates
        become the 16:00 America/New_York close in UTC.

    Returns
    -------
    pl.DataFrame
        See :func:`to_prices_contract`. Rows are never dropped or repaired here.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`read_table` and :func:`to_prices_contract`.
    """
    return to_prices_contract(read_table(path, columns=list(PRICE_COLUMNS)), bar_length)


def load_demo_prices() -> pl.DataFrame:
    """Real daily OHLCV shipped in the ``bokeh-sampledata`` package, split- and dividend-adjusted.

    Source: ``bokeh_sampledata.stocks.data`` (Quandl WIKI, public domain): AAPL, IBM, MSFT
    2000-03-01..2013-03-01, GOOG from 2004-08-19, FB from 2012-05-18; 12,154 rows. The raw OHLC
    is unadjusted; the package's ``adj_close`` adjusts for splits **and dividends**. With
    ``factor = adj_close / close`` this returns ``open, high, low, close × factor`` and
    ``volume / factor`` (so ``close`` equals ``adj_close`` and dollar volume is preserved).
    Because the factor also carries dividends, past prices sit slightly below the traded prices
    and returns are total returns.

    Returns
    -------
    pl.DataFrame
        ``PRICE_COLUMNS``: timestamp ``Datetime[us, UTC]`` (16:00 New York close of each date),
        symbol String, OHLCV Float64 (currency per share; volume in adjusted shares); sorted by
        (timestamp, symbol). No row is dropped.

    Raises
    ------
    ValueError
        If a raw close is zero/null (the factor would be undefined); the rows are named.
    """
    from bokeh_sampledata.stocks import data  # imported lazily: ~1 s, only the demo needs it

    raw = pl.from_pandas(data)
    bad = raw.with_row_index("row_index").filter(
        pl.col("close").is_null() | (pl.col("close") <= 0) | pl.col("adj_close").is_null()
    )
    if bad.height:
        raise ValueError(
            f"demo prices: {bad.height} rows have no usable close/adj_close to compute the "
            f"adjustment factor: {bad.head(5).to_dicts()}"
        )
    factor = pl.col("adj_close") / pl.col("close")
    adjusted = raw.select(
        pl.col("date").alias("timestamp"),
        pl.col("ticker").alias("symbol"),
        *[(pl.col(c) * factor).alias(c) for c in ("open", "high", "low", "close")],
        (pl.col("volume").cast(pl.Float64) / factor).alias("volume"),
    )
    return to_prices_contract(adjusted)


def load_vix(path: str | Path) -> pl.DataFrame:
    """Read the CBOE VIX daily file into a context table: ``timestamp``, ``vix``.

    The VIX close is published at 16:15 New York, **after** the 16:00 equity close, so each row
    is stamped 16:15 New York in UTC. Joined backward (``join_asof``) onto 16:00 equity bars, day
    D's VIX is therefore first visible at day D+1's bar. This one-day lag is deliberate: using
    day D's VIX at day D's equity close would be look-ahead.

    Parameters
    ----------
    path : str or Path
        The shared ``vix_daily_cboe.parquet`` (columns timestamp naive date, symbol, OHLC, volume)
        or any table with a naive/Date ``timestamp`` and ``close``.

    Returns
    -------
    pl.DataFrame
        ``timestamp`` ``Datetime[us, UTC]`` (16:15 New York), ``vix`` Float64 (index points, the
        daily close), sorted by timestamp.

    Raises
    ------
    ValueError
        Missing columns, tz-aware timestamps, null or non-positive closes, or duplicate dates;
        the offending rows are named.
    """
    raw = read_table(path, columns=["timestamp", "close"])
    ts_dtype = raw.schema["timestamp"]
    if not (
        ts_dtype == pl.Date or (isinstance(ts_dtype, pl.Datetime) and ts_dtype.time_zone is None)
    ):
        raise ValueError(f"VIX file {path}: expected naive daily dates, got {ts_dtype}")
    indexed = raw.with_row_index("row_index")
    bad = indexed.filter(
        pl.col("timestamp").is_null() | pl.col("close").is_null() | (pl.col("close") <= 0)
    )
    if bad.height:
        raise ValueError(f"VIX file {path}: {bad.height} unusable rows: {bad.head(5).to_dicts()}")
    dup = indexed.filter(pl.col("timestamp").cast(pl.Date).is_duplicated())
    if dup.height:
        raise ValueError(f"VIX file {path}: duplicate dates: {dup.head(5).to_dicts()}")
    return raw.select(
        vix_close_utc(pl.col("timestamp")).alias("timestamp"),
        pl.col("close").cast(pl.Float64).alias("vix"),
    ).sort("timestamp")
