"""Market data as NumPy column arrays with CSR-style offsets per timestamp.

:class:`MarketData` turns a long polars panel into flat arrays sorted by (timestamp, symbol);
the rows of timestamp ``i`` are ``offsets[i]:offsets[i + 1]``. A :class:`BarBatch` is a cheap
view of one timestamp's rows (slices, no copies); a :class:`BarView` is one row, used by slippage
models. Nothing here touches files.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.events import MarketEvent

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
QUOTE_COLUMNS = ("bid", "ask")
_MAX_LISTED = 10


def _first_rows(frame: pl.DataFrame, columns: Sequence[str]) -> str:
    rows = frame.select(columns).head(_MAX_LISTED).rows()
    more = "" if frame.height <= _MAX_LISTED else f" (and {frame.height - _MAX_LISTED} more)"
    return ", ".join(str(r) for r in rows) + more


def _check_timestamp(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    if "timestamp" not in frame.columns:
        raise ValueError(f"{name} has no 'timestamp' column; columns are {frame.columns}")
    dtype = frame.schema["timestamp"]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone != "UTC":
        raise ValueError(
            f"{name}.timestamp must be a tz-aware UTC Datetime (pl.Datetime('us', 'UTC')) "
            f"marking the bar close, got {dtype}"
        )
    if dtype.time_unit != "us":
        frame = frame.with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    nulls = frame.filter(pl.col("timestamp").is_null())
    if nulls.height:
        raise ValueError(f"{name}.timestamp has {nulls.height} null values")
    return frame


def _float_column(frame: pl.DataFrame, column: str, name: str) -> pl.Expr:
    dtype = frame.schema[column]
    if not dtype.is_numeric():
        raise ValueError(f"{name} column {column!r} must be numeric (Float64), got {dtype}")
    return pl.col(column).cast(pl.Float64)


def _strictly_increasing(ts: IntArray, sym_id: IntArray) -> bool:
    """True when (ts, sym_id) pairs are strictly increasing in lexicographic order."""
    if ts.size < 2:
        return True
    dts = np.diff(ts)
    if (dts < 0).any():
        return False
    same = dts == 0
    return bool((np.diff(sym_id)[same] > 0).all())


class MarketData:
    """A validated, sorted panel stored as NumPy arrays, ready for the engine's loop.

    Prices are assumed split- (and if wanted dividend-) adjusted: the engine applies no
    corporate actions, so a split in unadjusted data shows up as a price jump (it does not
    crash, but P&L across the split is wrong).

    Build it with :meth:`from_frame`. Rows are sorted by (timestamp, symbol); symbol ids are the
    positions of the symbols in the sorted list of unique names, so within one timestamp the
    ids are increasing.

    Attributes
    ----------
    timestamps : ndarray[int64], shape (T,)
        Unique bar-close timestamps, microseconds since the Unix epoch (UTC), increasing.
    offsets : ndarray[int64], shape (T + 1,)
        Rows of timestamp ``i`` are ``offsets[i]:offsets[i + 1]``.
    symbols : ndarray[str], shape (S,)
        Symbol name of each id.
    sym_id : ndarray[int64], shape (N,)
        Symbol id of each row.
    open, high, low, close, volume : ndarray[float64], shape (N,)
        Prices in currency per share; volume in shares.
    ordinal : ndarray[int64], shape (N,)
        0-based number of the row among its symbol's bars (the symbol's bar count).
    columns : dict[str, ndarray[float64]]
        Signal, indicator and quote (bid/ask) columns, shape (N,), null → NaN.
    context : dict[str, ndarray[float64]]
        Market-wide columns, shape (T,), missing → NaN.
    signal_columns, indicator_columns, context_columns : list[str]
    """

    def __init__(
        self,
        *,
        timestamps: IntArray,
        offsets: IntArray,
        symbols: npt.NDArray[np.str_],
        sym_id: IntArray,
        prices: dict[str, FloatArray],
        columns: dict[str, FloatArray],
        signal_columns: list[str],
        indicator_columns: list[str],
        context: dict[str, FloatArray],
    ) -> None:
        self.timestamps = timestamps
        self.offsets = offsets
        self.symbols = symbols
        self.sym_id = sym_id
        self.open = prices["open"]
        self.high = prices["high"]
        self.low = prices["low"]
        self.close = prices["close"]
        self.volume = prices["volume"]
        self.columns = columns
        self.signal_columns = signal_columns
        self.indicator_columns = indicator_columns
        self.context = context
        self.context_columns = list(context)
        self.symbol_index: dict[str, int] = {str(s): i for i, s in enumerate(symbols.tolist())}
        # each row's 0-based bar number within its symbol
        order = np.lexsort((np.arange(sym_id.size), sym_id))
        counts = np.bincount(sym_id, minlength=symbols.size)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        ordinal = np.empty(sym_id.size, dtype=np.int64)
        ordinal[order] = np.arange(sym_id.size) - np.repeat(starts, counts)
        self.ordinal: IntArray = ordinal
        prev = np.full(sym_id.size, -1, dtype=np.int64)
        same = sym_id[order[1:]] == sym_id[order[:-1]]
        prev[order[1:][same]] = order[:-1][same]
        self.prev_row: IntArray = prev
        """Row of the same symbol's previous bar for every row (``-1`` for a first bar)."""
        self._datetimes: list[datetime] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        panel: pl.DataFrame,
        signal_columns: Sequence[str] = (),
        indicator_columns: Sequence[str] = (),
        context: pl.DataFrame | None = None,
        context_columns: Sequence[str] | None = None,
    ) -> MarketData:
        """Validate a long panel and store it as arrays.

        Parameters
        ----------
        panel : pl.DataFrame
            Long format, one row per (timestamp, symbol): ``timestamp`` (``Datetime('us',
            'UTC')``, the bar close; other time units are cast to µs), ``symbol`` (String or
            Categorical/Enum), ``open``, ``high``, ``low``, ``close``, ``volume`` (numeric, cast
            to Float64, no nulls or NaN), optionally ``bid``/``ask`` (picked up for
            spread-aware slippage, null → NaN), plus the signal and indicator columns (numeric,
            null → NaN). Unsorted input is sorted by (timestamp, symbol); other columns are
            ignored.
        signal_columns : sequence of str
            Columns that become ``MarketEvent.signals`` / ``BarBatch.signals``.
        indicator_columns : sequence of str
            Columns that become ``MarketEvent.indicators`` / ``BarBatch.indicators``.
        context : pl.DataFrame, optional
            ``timestamp`` plus market-wide numeric columns, at most one row per timestamp.
            Aligned to the panel's timestamps by exact match: a panel timestamp without a
            context row gets NaN; context rows at other timestamps are ignored. Align an
            as-of join (e.g. VIX published after the equity close) *before* calling this.
        context_columns : sequence of str, optional
            Context columns to keep; default all columns of ``context`` except ``timestamp``.

        Returns
        -------
        MarketData

        Raises
        ------
        ValueError
            Empty panel; missing columns; a timestamp that is not tz-aware UTC; non-numeric
            price/signal columns; null or NaN open/high/low/close/volume (the first offending
            rows are listed); duplicate (timestamp, symbol) keys (listed); duplicate context
            timestamps (listed); a column named both signal and indicator.
        """
        if not isinstance(panel, pl.DataFrame):
            raise ValueError(f"panel must be a polars DataFrame, got {type(panel).__name__}")
        if panel.height == 0:
            raise ValueError("panel is empty: the engine needs at least one bar")
        signal_columns = list(signal_columns)
        indicator_columns = list(indicator_columns)
        overlap = set(signal_columns) & set(indicator_columns)
        if overlap:
            raise ValueError(f"columns {sorted(overlap)} are listed as signals and indicators")
        reserved = set(PRICE_COLUMNS) | {"timestamp", "symbol"}
        clash = (set(signal_columns) | set(indicator_columns)) & reserved
        if clash:
            raise ValueError(f"signal/indicator columns may not be named {sorted(clash)}")
        required = ["timestamp", "symbol", *PRICE_COLUMNS, *signal_columns, *indicator_columns]
        missing = [c for c in required if c not in panel.columns]
        if missing:
            raise ValueError(f"panel is missing columns {missing}; it has {panel.columns}")
        panel = _check_timestamp(panel, "panel")
        quotes = [c for c in QUOTE_COLUMNS if c in panel.columns]
        extra = [*signal_columns, *indicator_columns, *quotes]
        frame = panel.select(
            pl.col("timestamp"),
            pl.col("symbol").cast(pl.String),
            *[_float_column(panel, c, "panel") for c in PRICE_COLUMNS],
            *[_float_column(panel, c, "panel").fill_nan(None) for c in extra],
        )
        null_symbol = frame.filter(pl.col("symbol").is_null())
        if null_symbol.height:
            raise ValueError(
                f"panel has {null_symbol.height} rows with a null symbol, e.g. "
                f"{_first_rows(null_symbol, ['timestamp'])}"
            )
        bad = frame.filter(
            pl.any_horizontal([pl.col(c).is_null() | ~pl.col(c).is_finite() for c in PRICE_COLUMNS])
        )
        if bad.height:
            detail = bad.head(_MAX_LISTED).select(
                "timestamp",
                "symbol",
                pl.concat_list(
                    [
                        pl.when(pl.col(c).is_null() | ~pl.col(c).is_finite())
                        .then(pl.lit(c))
                        .otherwise(None)
                        for c in PRICE_COLUMNS
                    ]
                )
                .list.drop_nulls()
                .list.join(",")
                .alias("bad_columns"),
            )
            raise ValueError(
                f"panel has {bad.height} rows with null or non-finite open/high/low/close/volume "
                f"(filter or repair them before the engine): {_first_rows(detail, detail.columns)}"
            )
        symbols_sorted = frame.get_column("symbol").unique().sort()
        symbols = np.asarray(symbols_sorted.to_list(), dtype=np.str_)
        sym_id = np.ascontiguousarray(
            frame.select(
                pl.col("symbol").replace_strict(
                    symbols_sorted, pl.int_range(symbols_sorted.len(), eager=True), default=None
                )
            )
            .to_series()
            .cast(pl.Int64)
            .to_numpy(),
            dtype=np.int64,
        )
        ts_all = np.ascontiguousarray(
            frame.get_column("timestamp").dt.epoch("us").to_numpy(), dtype=np.int64
        )
        # sorted by (timestamp, symbol) and free of duplicate keys <=> strictly increasing pairs;
        # checked on the arrays (no hash table), sorting only when needed
        order: IntArray | None = None
        if not _strictly_increasing(ts_all, sym_id):
            order = np.lexsort((sym_id, ts_all))
            ts_all = ts_all[order]
            sym_id = sym_id[order]
            dup = np.flatnonzero((np.diff(ts_all) == 0) & (np.diff(sym_id) == 0)) + 1
            if dup.size:
                keys = pl.DataFrame(
                    {
                        "timestamp": pl.Series(ts_all[dup]).cast(pl.Datetime("us", "UTC")),
                        "symbol": symbols[sym_id[dup]].tolist(),
                    }
                ).unique(maintain_order=True)
                raise ValueError(
                    f"panel has {keys.height} duplicate (timestamp, symbol) keys: "
                    f"{_first_rows(keys, ['timestamp', 'symbol'])}"
                )
        change = np.flatnonzero(np.diff(ts_all)) + 1
        starts = np.concatenate(([0], change)).astype(np.int64)
        offsets = np.concatenate((starts, [ts_all.size])).astype(np.int64)
        timestamps = np.ascontiguousarray(ts_all[starts], dtype=np.int64)

        def column(name: str) -> FloatArray:
            values = frame.get_column(name)
            if values.null_count():
                values = values.fill_null(np.nan)
            arr = values.to_numpy()
            arr = arr[order] if order is not None else arr
            return np.ascontiguousarray(arr, dtype=np.float64)

        prices = {c: column(c) for c in PRICE_COLUMNS}
        columns = {c: column(c) for c in extra}
        ctx_arrays = cls._align_context(context, context_columns, timestamps)
        return cls(
            timestamps=timestamps,
            offsets=offsets,
            symbols=symbols,
            sym_id=sym_id,
            prices=prices,
            columns=columns,
            signal_columns=signal_columns,
            indicator_columns=indicator_columns,
            context=ctx_arrays,
        )

    @staticmethod
    def _align_context(
        context: pl.DataFrame | None,
        context_columns: Sequence[str] | None,
        timestamps: IntArray,
    ) -> dict[str, FloatArray]:
        if context is None:
            if context_columns:
                raise ValueError(f"context_columns {list(context_columns)} given without context")
            return {}
        if not isinstance(context, pl.DataFrame):
            raise ValueError(f"context must be a polars DataFrame, got {type(context).__name__}")
        context = _check_timestamp(context, "context")
        names = (
            [c for c in context.columns if c != "timestamp"]
            if context_columns is None
            else list(context_columns)
        )
        missing = [c for c in names if c not in context.columns]
        if missing:
            raise ValueError(f"context is missing columns {missing}; it has {context.columns}")
        dups = context.filter(pl.col("timestamp").is_duplicated())
        if dups.height:
            keys = dups.select("timestamp").unique(maintain_order=True)
            raise ValueError(
                f"context must have one row per timestamp; {keys.height} timestamps repeat: "
                f"{_first_rows(keys, ['timestamp'])}"
            )
        frame = context.select(
            pl.col("timestamp").dt.epoch("us").alias("_ts"),
            *[_float_column(context, c, "context").fill_nan(None) for c in names],
        )
        base = pl.DataFrame({"_ts": timestamps})
        joined = base.join(frame, on="_ts", how="left", maintain_order="left")
        return {
            c: np.ascontiguousarray(joined.get_column(c).fill_null(np.nan).to_numpy(), np.float64)
            for c in names
        }

    # ------------------------------------------------------------------ accessors
    @property
    def n_timestamps(self) -> int:
        """Number of unique timestamps ``T``."""
        return int(self.timestamps.size)

    @property
    def n_symbols(self) -> int:
        """Number of unique symbols ``S``."""
        return int(self.symbols.size)

    @property
    def n_rows(self) -> int:
        """Number of rows ``N`` (bar-events)."""
        return int(self.sym_id.size)

    @property
    def datetimes(self) -> list[datetime]:
        """The timestamps as tz-aware UTC ``datetime`` objects (built once, cached)."""
        if self._datetimes is None:
            series = pl.Series("t", self.timestamps).cast(pl.Datetime("us", "UTC"))
            self._datetimes = series.to_list()
        return self._datetimes

    def rows_of(self, index: int, ids: IntArray) -> IntArray:
        """Rows of symbol ``ids`` at timestamp ``index``; ``-1`` where a symbol has no bar."""
        lo = int(self.offsets[index])
        hi = int(self.offsets[index + 1])
        present = self.sym_id[lo:hi]
        pos = np.searchsorted(present, ids)
        pos_clipped = np.minimum(pos, max(hi - lo - 1, 0))
        found = (pos < hi - lo) & (present[pos_clipped] == ids) if hi > lo else pos < 0
        return np.where(found, lo + pos_clipped, -1).astype(np.int64)

    def row_of(self, index: int, sid: int) -> int:
        """Row of symbol id ``sid`` at timestamp ``index``, or ``-1`` if it has no bar."""
        lo = int(self.offsets[index])
        hi = int(self.offsets[index + 1])
        pos = lo + int(np.searchsorted(self.sym_id[lo:hi], sid))
        if pos < hi and int(self.sym_id[pos]) == sid:
            return pos
        return -1

    def batch(self, index: int) -> BarBatch:
        """The :class:`BarBatch` of timestamp ``index``."""
        return BarBatch(self, index)

    def context_at(self, index: int) -> dict[str, float]:
        """Market-wide values at timestamp ``index`` as a new dict."""
        return {name: float(arr[index]) for name, arr in self.context.items()}

    def resolve(self, symbol: str) -> int:
        """Symbol id of ``symbol``; raises ``KeyError`` naming it if unknown."""
        try:
            return self.symbol_index[symbol]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r}: not in the market data") from None


class BarBatch:
    """All symbols' bars at one timestamp, as NumPy slices (views, not copies).

    Attributes are built on access; treat the arrays as read-only.

    Attributes
    ----------
    index : int
        Position of the timestamp in the run.
    timestamp_us : int
        Bar close, microseconds since the epoch (UTC).
    symbols : ndarray[str], shape (n,)
    ids : ndarray[int64], shape (n,)
        Symbol ids, increasing.
    open, high, low, close, volume : ndarray[float64], shape (n,)
    signals, indicators : dict[str, ndarray[float64]]
    """

    __slots__ = ("_data", "index", "lo", "hi")

    def __init__(self, data: MarketData, index: int) -> None:
        self._data = data
        self.index = index
        self.lo = int(data.offsets[index])
        self.hi = int(data.offsets[index + 1])

    def __len__(self) -> int:
        return self.hi - self.lo

    @property
    def timestamp_us(self) -> int:
        return int(self._data.timestamps[self.index])

    @property
    def symbols(self) -> npt.NDArray[np.str_]:
        data = self._data
        return data.symbols[data.sym_id[self.lo : self.hi]]

    @property
    def ids(self) -> IntArray:
        return self._data.sym_id[self.lo : self.hi]

    @property
    def open(self) -> FloatArray:
        return self._data.open[self.lo : self.hi]

    @property
    def high(self) -> FloatArray:
        return self._data.high[self.lo : self.hi]

    @property
    def low(self) -> FloatArray:
        return self._data.low[self.lo : self.hi]

    @property
    def close(self) -> FloatArray:
        return self._data.close[self.lo : self.hi]

    @property
    def volume(self) -> FloatArray:
        return self._data.volume[self.lo : self.hi]

    @property
    def signals(self) -> dict[str, FloatArray]:
        cols = self._data.columns
        return {c: cols[c][self.lo : self.hi] for c in self._data.signal_columns}

    @property
    def indicators(self) -> dict[str, FloatArray]:
        cols = self._data.columns
        return {c: cols[c][self.lo : self.hi] for c in self._data.indicator_columns}

    def __getitem__(self, column: str) -> npt.NDArray[Any]:
        """Any column of the batch: ``symbol``, ``id``, OHLCV, a signal/indicator or bid/ask."""
        data = self._data
        if column in PRICE_COLUMNS:
            arr: npt.NDArray[Any] = getattr(data, column)
        elif column in data.columns:
            arr = data.columns[column]
        elif column == "symbol":
            return data.symbols[data.sym_id[self.lo : self.hi]]
        elif column == "id":
            arr = data.sym_id
        else:
            raise KeyError(f"no column {column!r} in the batch; have {self.column_names}")
        return arr[self.lo : self.hi]

    @property
    def column_names(self) -> list[str]:
        return ["symbol", "id", *PRICE_COLUMNS, *self._data.columns]

    def to_polars(self) -> pl.DataFrame:
        """The batch as a polars frame (copies): timestamp, symbol, OHLCV and named columns."""
        n = len(self)
        ts = pl.Series("timestamp", np.full(n, self.timestamp_us, dtype=np.int64))
        frame = {"timestamp": ts.cast(pl.Datetime("us", "UTC")), "symbol": self.symbols.tolist()}
        data: dict[str, Any] = dict(frame)
        for c in PRICE_COLUMNS:
            data[c] = self[c]
        for c in self._data.columns:
            data[c] = self._data.columns[c][self.lo : self.hi]
        return pl.DataFrame(data)

    def iter_events(self, context: dict[str, float] | None = None) -> Iterator[MarketEvent]:
        """Yield one :class:`MarketEvent` per symbol of the batch (in symbol order)."""
        data = self._data
        lo, hi = self.lo, self.hi
        ts = data.datetimes[self.index]
        ctx = context if context is not None else data.context_at(self.index)
        sig_names = data.signal_columns
        ind_names = data.indicator_columns
        sig_lists = [data.columns[c][lo:hi].tolist() for c in sig_names]
        ind_lists = [data.columns[c][lo:hi].tolist() for c in ind_names]
        rows = zip(
            data.symbols[data.sym_id[lo:hi]].tolist(),
            data.open[lo:hi].tolist(),
            data.high[lo:hi].tolist(),
            data.low[lo:hi].tolist(),
            data.close[lo:hi].tolist(),
            data.volume[lo:hi].tolist(),
            strict=True,
        )
        for k, (sym, o, h, lw, c, v) in enumerate(rows):
            yield MarketEvent(
                ts,
                sym,
                o,
                h,
                lw,
                c,
                v,
                {n: vals[k] for n, vals in zip(sig_names, sig_lists, strict=True)},
                {n: vals[k] for n, vals in zip(ind_names, ind_lists, strict=True)},
                ctx,
            )


class BarView:
    """One row of the market data (a symbol's bar), read lazily; used by slippage models."""

    __slots__ = ("_data", "row")

    def __init__(self, data: MarketData, row: int) -> None:
        self._data = data
        self.row = row

    @property
    def symbol(self) -> str:
        data = self._data
        return str(data.symbols[data.sym_id[self.row]])

    @property
    def open(self) -> float:
        return float(self._data.open[self.row])

    @property
    def high(self) -> float:
        return float(self._data.high[self.row])

    @property
    def low(self) -> float:
        return float(self._data.low[self.row])

    @property
    def close(self) -> float:
        return float(self._data.close[self.row])

    @property
    def volume(self) -> float:
        return float(self._data.volume[self.row])

    @property
    def bid(self) -> float:
        """The bar's bid, NaN when the panel has no ``bid`` column or it is null."""
        col = self._data.columns.get("bid")
        return float(col[self.row]) if col is not None else float("nan")

    @property
    def ask(self) -> float:
        """The bar's ask, NaN when the panel has no ``ask`` column or it is null."""
        col = self._data.columns.get("ask")
        return float(col[self.row]) if col is not None else float("nan")

    def has_column(self, column: str) -> bool:
        return column in self._data.columns

    def __getitem__(self, column: str) -> float:
        if column in PRICE_COLUMNS:
            return float(getattr(self._data, column)[self.row])
        return float(self._data.columns[column][self.row])

    def previous(self) -> BarView | None:
        """The same symbol's previous bar, or ``None`` for its first bar."""
        prev = int(self._data.prev_row[self.row])
        return None if prev < 0 else BarView(self._data, prev)
