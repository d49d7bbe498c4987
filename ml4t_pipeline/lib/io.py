"""Reading raw inputs into the data contracts (``DESIGN.md``: long format, UTC bar-close stamps).

Nothing here drops, fills or fixes rows: loaders only rename, cast numeric columns to Float64,
re-stamp time and sort. Validation is a separate step (``schemas.validate_prices``).

Input the loaders refuse, each with an error naming the file and the offending rows or columns
(:class:`InputFileError`, a ``ValueError``):

- a file polars cannot read (zero bytes, truncated, not Parquet): the file is named;
- a table with no rows (:class:`EmptyInputError`);
- OHLCV columns stored as text (``String``), unless ``parse_text=True`` asks to convert them,
  in which case any value that does not parse (e.g. ``"n/a"``) is refused with its row;
- rows of one symbol that go back in time in file order, unless ``sort_rows=True``: the file
  order is never silently changed within a symbol's series (a row repeating an earlier row's
  key, e.g. duplicates appended at the end, is left to the ``key_unique`` rule instead, which
  reports it as a duplicate);
- null timestamps or symbols.

Time zones: naive 00:00 timestamps (or ``pl.Date``) are daily dates, the supported daily
convention of the shared data. Timezone-aware timestamps, in any zone, are intraday bar starts
and are converted to UTC, which is lossless (the same instant).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl

from ml4t_pipeline.lib.calendars import DEFAULT_CALENDAR
from ml4t_pipeline.lib.timing import (
    UTC_DATETIME,
    bar_start_to_close,
    is_sorted_by_time_symbol,
    naive_dates_to_close_utc,
    vix_close_utc,
)

PRICE_COLUMNS: tuple[str, ...] = ("timestamp", "symbol", "open", "high", "low", "close", "volume")
"""Columns of the prices contract, in order."""

OHLCV: tuple[str, ...] = ("open", "high", "low", "close", "volume")

_PARQUET_SUFFIXES = {".parquet", ".pq"}
_CSV_SUFFIXES = {".csv"}
_SHOW = 5  # offending rows quoted in an error message


class InputFileError(ValueError):
    """A data file cannot be read, or holds no usable table; the message names the file.

    Attributes
    ----------
    path : Path
        The offending file (or directory).
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


class EmptyInputError(InputFileError):
    """A data file (or directory of Parquet files) holds a table with zero rows."""


def _unreadable_parquet_files(files: list[Path]) -> list[str]:
    # Which files of a directory are not valid Parquet (footer unreadable), with polars' reason.
    bad = []
    for f in files:
        try:
            pl.read_parquet_schema(f)
        except (pl.exceptions.PolarsError, OSError) as exc:
            bad.append(f"{f}: {str(exc).strip()}")
    return bad


def read_table(
    path: str | Path, columns: list[str] | None = None, *, allow_empty: bool = False
) -> pl.DataFrame:
    """Read a Parquet or CSV file, or a directory of Parquet files (hive partitions allowed).

    Parameters
    ----------
    path : str or Path
        A ``.parquet``/``.pq`` file, a ``.csv`` file (header row; ISO dates/datetimes are parsed;
        dtypes are inferred from all rows, so a column holding any text is read as String),
        or a directory whose ``*.parquet`` files (searched recursively) form one table; hive
        ``key=value`` folders become columns (``year``/``month`` partitions written by
        ``storage.write_partitioned`` are read back as Int32).
    columns : list of str, optional
        Read only these columns (projection pushdown for Parquet); all when ``None``.
    allow_empty : bool
        Return a table with zero rows instead of raising :class:`EmptyInputError`. An empty
        input file is almost always a failed export, so the default refuses it.

    Returns
    -------
    pl.DataFrame
        The table as stored (no casting beyond CSV parsing).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist, or a directory holds no Parquet file.
    InputFileError
        (a ``ValueError``) If polars cannot read the file (zero bytes, truncated, corrupt):
        the message names the file (for a directory, each unreadable file) and polars' reason.
    EmptyInputError
        (an ``InputFileError``) If the table has no rows and ``allow_empty`` is false.
    ValueError
        If the file suffix is neither Parquet nor CSV, or a requested column is absent.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input table not found: {p}")
    files = [p]
    if p.is_dir():
        files = sorted(p.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"directory {p} contains no *.parquet files")
        # polars skips a zero-byte file of a directory scan without a word: check every footer.
        bad = _unreadable_parquet_files(files)
        if bad:
            raise InputFileError(p, f"cannot read the Parquet files: {'; '.join(bad)}")
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
        # Infer dtypes from every row: a column whose values include text ("n/a") becomes
        # String and is then refused with its rows named, instead of failing mid-parse.
        lf = pl.scan_csv(p, try_parse_dates=True, infer_schema_length=None)
    else:
        raise ValueError(
            f"unsupported table format for {p}: expected a .parquet/.pq or .csv file or a "
            "directory of Parquet files"
        )
    try:
        if columns is not None:
            available = lf.collect_schema().names()
            absent = [c for c in columns if c not in available]
            if absent:
                raise ValueError(f"{p}: columns {absent} not found (available: {available})")
            lf = lf.select(columns)
        table = lf.collect()
    except (pl.exceptions.PolarsError, OSError) as exc:
        kind = "CSV" if p.suffix.lower() in _CSV_SUFFIXES else "Parquet"
        if p.is_dir():
            bad = _unreadable_parquet_files(files)
            detail = "; ".join(bad) if bad else str(exc).strip()
            raise InputFileError(p, f"cannot read the Parquet files: {detail}") from exc
        size = p.stat().st_size
        raise InputFileError(
            p,
            f"cannot read the {kind} file ({size} bytes; zero-byte, truncated or corrupt?): "
            f"{str(exc).strip()}",
        ) from exc
    if table.height == 0 and not allow_empty:
        raise EmptyInputError(p, f"the table has no rows (columns: {table.columns})")
    return table


def _require_columns(df: pl.DataFrame, required: tuple[str, ...], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing} (got {df.columns})")


def _rows(frame: pl.DataFrame, columns: list[str]) -> str:
    # The first offending rows as dicts, ``row`` = 0-based position in the input.
    shown = frame.select(["row", *columns]).head(_SHOW)
    return str(shown.with_columns(pl.col(pl.Date, pl.Datetime).cast(pl.String)).to_dicts())


def _numeric_ohlcv(df: pl.DataFrame, what: str, parse_text: bool) -> pl.DataFrame:
    """``df`` with every OHLCV column numeric; text columns refused or parsed (see below)."""
    text = [c for c in OHLCV if df.schema[c] in (pl.String, pl.Categorical)]
    other = [
        f"{c} ({df.schema[c]})" for c in OHLCV if c not in text and not df.schema[c].is_numeric()
    ]
    if other:
        raise ValueError(f"{what}: OHLCV columns must be numeric; got {other}")
    if not text:
        return df
    parsed = {c: pl.col(c).cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
              for c in text}  # fmt: skip
    indexed = df.with_row_index("row")
    unparsable = {c: indexed.filter(pl.col(c).is_not_null() & parsed[c].is_null()) for c in text}
    problems = "; ".join(
        f"column {c!r}: {rows.height} values do not parse as numbers, first rows "
        f"{_rows(rows, ['symbol', 'timestamp', c])}"
        for c, rows in unparsable.items()
        if rows.height
    )
    if not parse_text:
        dtypes = {c: str(df.schema[c]) for c in text}
        raise ValueError(
            f"{what}: price/volume columns {text} are stored as text {dtypes}, not numbers; "
            "they are not converted silently. Store them as Float64, or ask for conversion "
            "(load_prices_file(..., parse_text=True))."
            + (f" Unparsable values: {problems}" if problems else " Every value would parse.")
        )
    if problems:
        raise ValueError(f"{what}: cannot convert text prices to numbers: {problems}")
    return df.with_columns(parsed[c].alias(c) for c in text)


def to_prices_contract(
    df: pl.DataFrame,
    bar_length: timedelta | str | None = None,
    *,
    parse_text: bool = False,
    sort_rows: bool = False,
    source: str = "prices",
    row_column: str | None = None,
    calendar: str = DEFAULT_CALENDAR,
) -> pl.DataFrame:
    """Bring a prices frame into the contract: UTC bar-close ``timestamp``, String symbol, Float64.

    Parameters
    ----------
    df : pl.DataFrame
        Columns ``timestamp``, ``symbol``, ``open``, ``high``, ``low``, ``close``, ``volume``
        (extra columns are dropped from the output, rows never are). ``timestamp`` is either
        a ``pl.Date``/naive ``pl.Datetime`` at 00:00 (a daily bar of that trading date) or a
        timezone-aware ``pl.Datetime`` in any zone marking the bar **start** (intraday; it is
        converted to UTC, which is lossless). OHLCV must be numeric (any int or float dtype).
    bar_length : timedelta or str, optional
        Required for intraday (timezone-aware) input: the bar length added to the start to get
        the close (``"1m"``, ``"1h"``; see ``timing.bar_start_to_close``). Must be ``None`` for
        daily input.
    parse_text : bool
        Convert OHLCV columns stored as text (``String``) to Float64. Off by default: text
        columns are refused. When on, every non-null value must parse, else the rows that do
        not are named in the error (nothing becomes null silently).
    sort_rows : bool
        Sort the rows of a symbol that go back in time (file order). Off by default: such
        rows are refused, naming them. Rows already in time order within each symbol are only
        interleaved into (timestamp, symbol) order, which the contract requires.
    source : str
        How the input is named in error messages (``load_prices_file`` passes the file).
    row_column : str, optional
        Also return each row's 0-based position in ``df`` (its data row in the file, header
        not counted) in a UInt32 column of this name, after ``PRICE_COLUMNS``: the output is
        re-sorted, so this is how a row found invalid later is traced back to the file.
    calendar : str, default "XNYS"
        The ``exchange_calendars`` calendar (``data.calendar``) whose session closes stamp
        daily dates (:func:`~ml4t_pipeline.lib.timing.daily_close_utc`: 16:00 New York, 13:00
        on XNYS half days).

    Returns
    -------
    pl.DataFrame
        ``PRICE_COLUMNS`` (plus ``row_column`` if asked for): timestamp ``Datetime[us, UTC]``
        (daily: 16:00 New York close), symbol String, OHLCV Float64; sorted by (timestamp,
        symbol), same row count.

    Raises
    ------
    ValueError
        Missing columns; OHLCV stored as text (without ``parse_text``) or not parsing, or of a
        non-numeric dtype; a naive timestamp that is not at midnight; intraday input without
        ``bar_length`` or daily input with one; null timestamps or symbols; rows going back in
        time within a symbol (without ``sort_rows``; a row repeating an earlier row's
        (timestamp, symbol) is not counted as going back in time: it is left to the
        ``key_unique`` rule, which names both copies as duplicates). Each message names
        ``source`` and the first offending rows (``row`` = 0-based position in ``df``).
    """
    what = source
    _require_columns(df, PRICE_COLUMNS, what)
    ts_dtype = df.schema["timestamp"]
    keys = df.select("timestamp", "symbol")
    for key in ("timestamp", "symbol"):
        if keys[key].null_count():
            nulls = keys.with_row_index("row").filter(pl.col(key).is_null())
            raise ValueError(
                f"{what}: {nulls.height} rows have a null {key}: "
                f"{_rows(nulls, ['timestamp', 'symbol'])}"
            )
    if not sort_rows and not _in_symbol_time_order(keys):
        # Rows in (symbol, timestamp) order (how vendor files usually come) cannot go back in
        # time within their symbol: the test below is needed only for other orders.
        # Only the two key columns are read; the rows are listed only when there are some. A
        # repeat of an earlier key (e.g. duplicates appended at the end of the file) is a
        # duplicate, not a step back in time: it is left out here and reported by key_unique.
        indexed = keys.with_row_index("row")
        firsts = indexed.filter(pl.struct("timestamp", "symbol").is_first_distinct())
        back = firsts.select(
            (pl.col("timestamp") < pl.col("timestamp").shift(1).over("symbol")).fill_null(False)
        ).to_series()
        if back.any():
            backwards = firsts.filter(back)
            raise ValueError(
                f"{what}: {backwards.height} rows go back in time within their symbol (each "
                "is earlier than the previous row of the same symbol, in file order); the "
                "rows are not reordered silently. Sort the file by (symbol, timestamp), or "
                f"load it with sort_rows=True. First rows: "
                f"{_rows(backwards, ['symbol', 'timestamp'])}"
            )
    df = _numeric_ohlcv(df, what, parse_text)
    out = df.select(
        pl.col("timestamp"),
        pl.col("symbol").cast(pl.String),
        *[pl.col(c).cast(pl.Float64) for c in OHLCV],
        *([pl.int_range(pl.len(), dtype=pl.UInt32).alias(row_column)] if row_column else []),
    )
    if ts_dtype == pl.Date or (isinstance(ts_dtype, pl.Datetime) and ts_dtype.time_zone is None):
        if bar_length is not None:
            raise ValueError(
                f"{what}: timestamps are naive daily dates; bar_length={bar_length!r} applies "
                "only to timezone-aware intraday bar-start timestamps"
            )
        out = naive_dates_to_close_utc(
            out, what, "intraday files must be timezone-aware (bar start)", calendar=calendar
        )
    elif isinstance(ts_dtype, pl.Datetime):
        if bar_length is None:
            raise ValueError(
                f"{what}: column 'timestamp' is timezone-aware ({ts_dtype}); timezone-aware "
                "timestamps are taken as intraday bar START times, so pass bar_length (e.g. "
                "'1m', '1h') to move them to the bar close. Daily files store naive 00:00 "
                "dates (or pl.Date)."
            )
        out = bar_start_to_close(out, bar_length)
    else:
        raise ValueError(
            f"{what}: column 'timestamp' must be a Date or Datetime column, got {ts_dtype}"
        )
    return _time_symbol_order(out.with_columns(pl.col("timestamp").cast(UTC_DATETIME)))


def _in_symbol_time_order(keys: pl.DataFrame) -> bool:
    """True when the rows are in (symbol, timestamp) order, symbol compared as text (no nulls:
    the caller has refused them)."""
    ts, sym = pl.col("timestamp"), pl.col("symbol").cast(pl.String)
    in_order = (sym.shift(1) < sym) | ((sym.shift(1) == sym) & (ts.shift(1) <= ts))
    return bool(keys.select(in_order.fill_null(True).all()).item())


def _time_symbol_order(out: pl.DataFrame) -> pl.DataFrame:
    """``out`` stably sorted by (timestamp, symbol): rows already in that order as they are; rows
    in (symbol, timestamp) order by a stable sort on the timestamp alone (rows of one timestamp
    keep their symbol order: the same frame as the two-key sort, for less work); others by the
    two-key sort. Rows with equal keys keep their input order in every case."""
    if is_sorted_by_time_symbol(out):
        return out
    if _in_symbol_time_order(out):
        return out.sort("timestamp", maintain_order=True)
    return out.sort(["timestamp", "symbol"], maintain_order=True)


def load_prices_file(
    path: str | Path,
    bar_length: timedelta | str | None = None,
    *,
    parse_text: bool = False,
    sort_rows: bool = False,
    row_column: str | None = None,
    calendar: str = DEFAULT_CALENDAR,
) -> pl.DataFrame:
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
        become their session's close on ``calendar`` in UTC (XNYS: 16:00 New York, 13:00 on
        half days).
    parse_text, sort_rows : bool
        See :func:`to_prices_contract`; both off by default (text prices and rows going back
        in time are refused).
    row_column : str, optional
        See :func:`to_prices_contract`: each row's 0-based data row in the file (for a
        directory, in the table its files form, in path order).
    calendar : str, default "XNYS"
        See :func:`to_prices_contract` (``data.calendar``).

    Returns
    -------
    pl.DataFrame
        See :func:`to_prices_contract`. Rows are never dropped or repaired here.

    Raises
    ------
    FileNotFoundError
        As :func:`read_table`.
    InputFileError
        Unreadable file; :class:`EmptyInputError` for a file with no rows.
    ValueError
        As :func:`to_prices_contract`; the message starts with ``prices file <path>``.
    """
    table = read_table(path, columns=list(PRICE_COLUMNS))
    return to_prices_contract(
        table,
        bar_length,
        parse_text=parse_text,
        sort_rows=sort_rows,
        source=f"prices file {path}",
        row_column=row_column,
        calendar=calendar,
    )


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
