"""The cross-framework reference experiment: its spec and its inputs, built from one price file.

The reference experiment (issue 7) runs the same top-N strategy through our engine, Backtrader
and VectorBT and compares the fills. Everything the three runs read comes from here, so a
difference in fills can only come from a difference in execution semantics, never from data.

Universe selection, stated exactly
----------------------------------
From the S&P 500 daily file (505 symbols, 1,259 trading dates) keep a symbol only if

1. it has a row on **every** date of the file (1,259 rows), and
2. **every** one of its rows is valid OHLCV: open, high, low, close and volume are all non-null
   and finite, all four prices are > 0, volume is > 0, ``low <= high``, and both ``open`` and
   ``close`` lie in ``[low, high]``.

On the real file that leaves 461 symbols: 470 have complete histories and 9 of those (AOS, BBY,
CHD, CHK, IP, LNT, REGN, SPG, VRTX) have at least one invalid row, which drops the whole symbol
(no row is dropped, filled or repaired). ``REFERENCE_SYMBOL_COUNT`` pins that number.

Score
-----
``score[t] = close[t] / close[t - 20] - 1``: the 20-day return known at bar ``t``'s close (the
first 20 bars of every symbol have no score: NaN in pandas, null in polars).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from ml4t_pipeline.lib.timing import daily_close_utc

SP500_FILE = "sp500_5yr_daily_ohlcv.parquet"
"""File name of the real S&P 500 daily OHLCV set inside the shared data folder."""

REFERENCE_SYMBOL_COUNT = 461
"""Symbols of the S&P file with complete, clean histories (see the module docstring)."""

PRICE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close")


@dataclass(frozen=True)
class ReferenceSpec:
    """Parameters of the reference strategy (issue 7), shared by every framework's run.

    Each bar close, rank symbols by ``score`` (ties by symbol name), target the ``n`` highest;
    sell every holding outside the target; buy every target symbol not held with
    ``floor(weight * equity / close)`` shares (equity and close at this bar's close). Market
    orders fill at the next bar's open. Each entry gets a sell stop at
    ``entry_fill * (1 - stop_pct)``, live from the bar after the entry bar, filled at the stop
    price or at the open when the open gaps through it. Commission is ``commission_rate`` times
    the traded value on every fill. Long only, whole shares.

    Parameters
    ----------
    n : int
        Number of symbols held.
    weight : float
        Fraction of equity per new position.
    stop_pct : float
        Stop distance below the entry fill, as a fraction (0.05 = 5 %).
    commission_rate : float
        Commission as a fraction of traded value (0.001 = 0.1 %).
    initial_cash : float
        Starting cash, currency.
    lookback : int
        Bars in the score's return window.
    """

    n: int = 25
    weight: float = 0.04
    stop_pct: float = 0.05
    commission_rate: float = 0.001
    initial_cash: float = 1_000_000.0
    lookback: int = 20

    def __post_init__(self) -> None:
        if self.n < 1 or self.lookback < 1:
            raise ValueError(f"n and lookback must be >= 1, got {self.n}, {self.lookback}")
        for name in ("weight", "stop_pct"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1), got {value!r}")
        if not 0 <= self.commission_rate < 1:
            raise ValueError(f"commission_rate must be in [0, 1), got {self.commission_rate!r}")
        if not self.initial_cash > 0:
            raise ValueError(f"initial_cash must be > 0, got {self.initial_cash!r}")


@dataclass(frozen=True)
class ReferenceInputs:
    """The prepared inputs of one reference run, in the shapes each framework wants.

    Attributes
    ----------
    symbols : tuple of str
        Column order of every wide matrix, sorted by name (this is also the tie-break order).
    open, high, low, close, score : pandas.DataFrame
        Wide ``(n_dates, n_symbols)`` float64 matrices indexed by the naive trading date
        (``DatetimeIndex`` at 00:00); prices in currency per share, score a fraction.
    timestamps : pandas.DatetimeIndex
        Bar-close stamps of the rows: the date at 16:00 America/New_York, tz UTC.
    panel : polars.DataFrame
        Long panel for our engine: ``timestamp`` (``Datetime("us", "UTC")``, bar close),
        ``symbol`` (String), open, high, low, close, volume, score (Float64, null for the first
        ``lookback`` bars), sorted by (timestamp, symbol).
    """

    symbols: tuple[str, ...]
    open: pd.DataFrame
    high: pd.DataFrame
    low: pd.DataFrame
    close: pd.DataFrame
    score: pd.DataFrame
    timestamps: pd.DatetimeIndex
    panel: pl.DataFrame

    @property
    def n_dates(self) -> int:
        """Number of bars (rows of the wide matrices)."""
        return len(self.close.index)


def _valid_row() -> pl.Expr:
    prices = [pl.col(c) for c in PRICE_FIELDS]
    finite = pl.all_horizontal([c.is_finite() for c in [*prices, pl.col("volume")]])
    return (
        finite
        & pl.all_horizontal([c > 0 for c in prices])
        & (pl.col("volume") > 0)
        & (pl.col("low") <= pl.col("high"))
        & pl.col("open").is_between(pl.col("low"), pl.col("high"))
        & pl.col("close").is_between(pl.col("low"), pl.col("high"))
    ).fill_null(False)


def select_clean_symbols(prices: pl.DataFrame) -> list[str]:
    """Symbols with a row on every date of ``prices`` and only valid OHLCV rows.

    Parameters
    ----------
    prices : polars.DataFrame
        Long daily prices: ``timestamp``, ``symbol``, open, high, low, close, volume.

    Returns
    -------
    list of str
        Sorted symbol names (rules in the module docstring).

    Raises
    ------
    ValueError
        Missing columns, or duplicate (timestamp, symbol) rows (listed).
    """
    missing = [c for c in ("timestamp", "symbol", *PRICE_FIELDS, "volume") if c not in prices]
    if missing:
        raise ValueError(f"prices lack columns {missing}")
    dups = prices.filter(pl.struct("timestamp", "symbol").is_duplicated())
    if dups.height:
        raise ValueError(f"duplicate (timestamp, symbol) rows: {dups.head(5).rows()}")
    n_dates = prices["timestamp"].n_unique()
    per_symbol = prices.group_by("symbol").agg(
        pl.len().alias("rows"), _valid_row().all().alias("clean")
    )
    keep = per_symbol.filter((pl.col("rows") == n_dates) & pl.col("clean"))
    return sorted(keep["symbol"].to_list())


def build_reference_inputs(
    prices: pl.DataFrame, symbols: list[str] | None = None, lookback: int = 20
) -> ReferenceInputs:
    """Build the wide matrices and the long panel of the reference experiment.

    Parameters
    ----------
    prices : polars.DataFrame
        Long daily prices with a naive ``timestamp`` at 00:00 of the trading date (the shared
        daily files' convention), ``symbol`` and OHLCV Float64 columns.
    symbols : list of str, optional
        Universe; default ``select_clean_symbols(prices)``.
    lookback : int, default 20
        Bars in the score's return window.

    Returns
    -------
    ReferenceInputs

    Raises
    ------
    ValueError
        An empty universe; a timestamp that is tz-aware or not at midnight; a requested symbol
        without a complete, clean history (named).
    """
    if getattr(prices["timestamp"].dtype, "time_zone", None) is not None:
        raise ValueError("prices.timestamp must be naive trading dates, got a tz-aware column")
    clean = select_clean_symbols(prices)
    if symbols is None:
        symbols = clean
    bad = sorted(set(symbols) - set(clean))
    if bad:
        raise ValueError(f"symbols without a complete, clean history: {bad[:20]}")
    if not symbols:
        raise ValueError("the reference universe is empty")
    if prices["timestamp"].dtype != pl.Date:
        off_midnight = prices.filter(pl.col("timestamp").dt.time() != pl.time(0))
        if off_midnight.height:
            raise ValueError(
                f"daily timestamps must be 00:00 of the date: {off_midnight.head(5).rows()}"
            )
    long = (
        prices.filter(pl.col("symbol").is_in(symbols))
        .with_columns(pl.col("timestamp").cast(pl.Datetime("us")).alias("date"))
        .sort("symbol", "date")
        .with_columns(
            (pl.col("close") / pl.col("close").shift(lookback).over("symbol") - 1.0).alias("score")
        )
    )
    panel = (
        long.with_columns(daily_close_utc(pl.col("date")).alias("timestamp"))
        .select("timestamp", "symbol", *PRICE_FIELDS, "volume", "score")
        .sort("timestamp", "symbol")
    )
    return _assemble(long, symbols, panel)


def load_reference_inputs(data_root: Path, lookback: int = 20) -> ReferenceInputs:
    """Read the real S&P file under ``data_root`` and build the reference inputs.

    Parameters
    ----------
    data_root : Path
        The shared data folder holding ``sp500_5yr_daily_ohlcv.parquet``.
    lookback : int, default 20
        Bars in the score's return window.

    Returns
    -------
    ReferenceInputs
        461 symbols x 1,259 dates on the real file.

    Raises
    ------
    ValueError
        The file yields a universe other than ``REFERENCE_SYMBOL_COUNT`` symbols (the reference
        figures of issue 7 are only valid for that universe).
    """
    prices = pl.read_parquet(Path(data_root) / SP500_FILE)
    inputs = build_reference_inputs(prices, lookback=lookback)
    if len(inputs.symbols) != REFERENCE_SYMBOL_COUNT:
        raise ValueError(
            f"expected {REFERENCE_SYMBOL_COUNT} complete, clean symbols in {SP500_FILE}, "
            f"found {len(inputs.symbols)}"
        )
    return inputs


def inputs_from_wide(
    dates: list[str] | pd.DatetimeIndex,
    open: dict[str, list[float]],
    high: dict[str, list[float]],
    low: dict[str, list[float]],
    close: dict[str, list[float]],
    score: dict[str, list[float]],
) -> ReferenceInputs:
    """Build ``ReferenceInputs`` from small hand-written wide columns (for hand-built cases).

    Parameters
    ----------
    dates : list of str or DatetimeIndex
        Naive trading dates, increasing.
    open, high, low, close : dict of str to list of float
        Prices per symbol (currency per share), one value per date.
    score : dict of str to list of float
        The ranking score per symbol and date (NaN = not ranked on that date).

    Returns
    -------
    ReferenceInputs
        Symbols sorted by name; volume 1.0 everywhere in the panel.

    Raises
    ------
    ValueError
        Symbols that differ between the dicts, lengths that differ from ``dates``, or an
        invalid OHLC row (listed).
    """
    index = pd.DatetimeIndex(pd.to_datetime(list(dates)), name="date")
    symbols = sorted(close)
    fields = {"open": open, "high": high, "low": low, "close": close, "score": score}
    wide: dict[str, pd.DataFrame] = {}
    for name, columns in fields.items():
        if sorted(columns) != symbols:
            raise ValueError(f"{name} has symbols {sorted(columns)}, close has {symbols}")
        frame = pd.DataFrame({s: columns[s] for s in symbols}, index=index, dtype="float64")
        frame.columns = pd.Index(symbols, name="symbol")
        if len(frame) != len(index):
            raise ValueError(f"{name} rows differ from dates")
        wide[name] = frame
    bad = (
        (wide["low"] > wide["high"])
        | (wide["open"] < wide["low"])
        | (wide["open"] > wide["high"])
        | (wide["close"] < wide["low"])
        | (wide["close"] > wide["high"])
    )
    if bad.to_numpy().any():
        rows = [(str(d.date()), s) for d, s in bad[bad].stack().index]
        raise ValueError(f"invalid OHLC rows (date, symbol): {rows}")
    long = pl.DataFrame(
        {
            "date": np.repeat(index.to_numpy(), len(symbols)),
            "symbol": symbols * len(index),
            **{f: wide[f].to_numpy().ravel() for f in (*PRICE_FIELDS, "score")},
        }
    ).with_columns(
        pl.col("date").cast(pl.Datetime("us")),
        pl.lit(1.0).alias("volume"),
        pl.col("score").fill_nan(None),
    )
    panel = long.with_columns(daily_close_utc(pl.col("date")).alias("timestamp")).select(
        "timestamp", "symbol", *PRICE_FIELDS, "volume", "score"
    )
    return _from_wide(symbols, wide, panel)


def inputs_from_panel(panel: pl.DataFrame, signal: str) -> tuple[ReferenceInputs, list[str]]:
    """Build reference inputs from an experiment's market panel (the frameworks' universe).

    The wide matrices the frameworks read must be rectangular, so the universe is the symbols
    with a bar at every timestamp of the panel; the others are returned, never dropped silently.

    Parameters
    ----------
    panel : polars.DataFrame
        The ``market_panel`` asset: ``timestamp`` (``Datetime("us", "UTC")``, bar close),
        ``symbol``, open, high, low, close, volume and the ``signal`` column (Float64, nulls
        where no score was available).
    signal : str
        The column the strategy ranks by; it becomes ``score``.

    Returns
    -------
    (ReferenceInputs, list of str)
        The inputs (wide matrices indexed by the New York trading date) and the symbols left out
        because they miss at least one bar.

    Raises
    ------
    ValueError
        ``signal`` is not a column, or no symbol has a complete history.
    """
    if signal not in panel.columns:
        raise ValueError(f"signal column {signal!r} not in the panel ({panel.columns})")
    n_bars = panel["timestamp"].n_unique()
    counts = panel.group_by(pl.col("symbol").cast(pl.String)).len()
    symbols = sorted(counts.filter(pl.col("len") == n_bars)["symbol"].to_list())
    excluded = sorted(counts.filter(pl.col("len") != n_bars)["symbol"].to_list())
    if not symbols:
        raise ValueError("no symbol has a bar at every timestamp of the panel")
    long = (
        panel.filter(pl.col("symbol").cast(pl.String).is_in(symbols))
        .with_columns(
            pl.col("symbol").cast(pl.String),
            pl.col("timestamp")
            .dt.convert_time_zone("America/New_York")
            .dt.date()
            .cast(pl.Datetime("us"))
            .alias("date"),
            pl.col(signal).cast(pl.Float64).alias("score"),
        )
        .sort("timestamp", "symbol")
    )
    engine_panel = long.select("timestamp", "symbol", *PRICE_FIELDS, "volume", "score")
    inputs = _assemble(long, symbols, engine_panel)
    return inputs, excluded


def _assemble(long: pl.DataFrame, symbols: list[str], panel: pl.DataFrame) -> ReferenceInputs:
    """Pivot a long frame (``date``, ``symbol``, OHLC, ``score``) into the wide matrices."""
    wide: dict[str, pd.DataFrame] = {}
    for field in (*PRICE_FIELDS, "score"):
        frame = (
            long.pivot(on="symbol", index="date", values=field)
            .sort("date")
            .select("date", *symbols)
            .to_pandas()
            .set_index("date")
        )
        frame.index = pd.DatetimeIndex(frame.index, name="date")
        frame.columns = pd.Index(list(symbols), name="symbol")
        wide[field] = frame.astype("float64")
    return _from_wide(symbols, wide, panel)


def _from_wide(
    symbols: list[str], wide: dict[str, pd.DataFrame], panel: pl.DataFrame
) -> ReferenceInputs:
    """``ReferenceInputs`` from the wide OHLC/score matrices and the long panel they came from
    (its timestamps, in panel order, are the bar timestamps)."""
    stamps = pd.DatetimeIndex(panel["timestamp"].unique(maintain_order=True).to_pandas())
    return ReferenceInputs(
        symbols=tuple(symbols),
        open=wide["open"],
        high=wide["high"],
        low=wide["low"],
        close=wide["close"],
        score=wide["score"],
        timestamps=stamps,
        panel=panel,
    )
