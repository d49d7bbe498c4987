"""Market data as NumPy column arrays with CSR-style offsets per timestamp.

:class:`MarketData` turns a long polars panel into flat arrays sorted by (timestamp, symbol);
the rows of timestamp ``i`` are ``offsets[i]:offsets[i + 1]``. A :class:`BarBatch` is a cheap
view of one timestamp's rows (slices, no copies); a :class:`BarView` is one row, used by slippage
models. Nothing here touches files.

The panel's validation and the window bounds are in :mod:`engine.panel` (re-exported here:
``FloatArray``, ``IntArray``, ``PRICE_COLUMNS``, ``QUOTE_COLUMNS``, :func:`window_bounds`); chunked
runs (:class:`engine.chunked.ChunkedMarketData`) in :mod:`engine.chunked`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from itertools import repeat
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl

from engine import data_kernels
from engine.events import MarketEvent
from engine.panel import (
    PRICE_COLUMNS,
    QUOTE_COLUMNS,
    FloatArray,
    IntArray,
    _chains,
    _first_rows,
    _float_column,
    _panel_arrays,
    check_timestamp,
    window_bounds,
)

__all__ = [
    "PRICE_COLUMNS",
    "QUOTE_COLUMNS",
    "BarBatch",
    "BarView",
    "FloatArray",
    "IntArray",
    "MarketData",
    "window_bounds",
]

T = TypeVar("T")


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
    first_index, first_row : int
        ``0`` for a panel built with :meth:`from_frame`. For a window of
        :class:`ChunkedMarketData`, the timestamp arrays (``timestamps``, ``context``,
        ``datetimes``) cover the whole run so far, the engine runs timestamps
        ``first_index ..`` and rows ``first_row ..`` are the chunk's bars; rows before
        ``first_row`` are bars carried over from earlier chunks (listed under their original
        timestamps in ``offsets``).
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
        ordinal: IntArray | None = None,
        prev_row: IntArray | None = None,
        first_index: int = 0,
        first_row: int = 0,
        datetimes: list[datetime] | None = None,
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
        if ordinal is None or prev_row is None:
            ordinal, prev_row = _chains(sym_id, symbols.size)
        self.ordinal: IntArray = ordinal
        """Each row's 0-based bar number within its symbol (counted over the whole run)."""
        self.prev_row: IntArray = prev_row
        """Row of the same symbol's previous bar for every row (``-1`` for a first bar)."""
        self.first_index = first_index
        """First timestamp index this object runs (``> 0`` only for a window of chunked data)."""
        self.first_row = first_row
        """First row of ``first_index``; rows before it are bars carried from earlier chunks."""
        self._datetimes: list[datetime] | None = datetimes
        self._last_rows: IntArray | None = None
        self._symbol_list: list[str] | None = None
        # per-row series derived from these arrays (e.g. a spread estimate), computed once on
        # first use by a cost model through BarView.derived
        self._derived: dict[str, Any] = {}

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
        signal_columns = list(signal_columns)
        indicator_columns = list(indicator_columns)
        arrays = _panel_arrays(panel, signal_columns, indicator_columns, None)
        timestamps = arrays.timestamps
        ctx_arrays = cls._align_context(context, context_columns, timestamps)
        return cls(
            timestamps=timestamps,
            offsets=arrays.offsets,
            symbols=arrays.symbols,
            sym_id=arrays.sym_id,
            prices=arrays.prices,
            columns=arrays.columns,
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
        context = check_timestamp(context, "context")
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

    def _carried(self, keep: IntArray | None, history: int = 2) -> tuple[MarketData, IntArray]:
        """The rows a chunk boundary carries over, as a window with no timestamp left to run.

        Kept: each symbol's last ``history`` bars plus the rows ``keep`` (rows of ``self``).
        Returns the window (timestamp arrays shared with ``self``, carried rows listed under
        their own timestamps, ``first_index == n_timestamps``) and the map from ``self``'s rows
        to its rows (``-1``: not carried).
        """
        last = self.last_rows
        seen = last[last >= 0]
        parts = [seen]
        for _ in range(history - 1):
            seen = self.prev_row[seen]
            seen = seen[seen >= 0]
            parts.append(seen)
        if keep is not None and keep.size:
            if int(keep.max()) >= self.n_rows:
                raise ValueError(f"rows to keep up to {keep.max()} beyond {self.n_rows} rows")
            parts.append(keep[keep >= 0])
        kept = np.unique(np.concatenate(parts).astype(np.int64))
        n_kept = int(kept.size)
        remap = np.full(self.n_rows, -1, dtype=np.int64)
        remap[kept] = np.arange(n_kept, dtype=np.int64)
        old_prev = self.prev_row[kept]
        kept_index = np.searchsorted(self.offsets, kept, side="right") - 1
        n_t = self.n_timestamps
        offsets = np.searchsorted(kept_index, np.arange(n_t + 1, dtype=np.int64), side="left")
        window = MarketData(
            timestamps=self.timestamps,
            offsets=offsets.astype(np.int64),
            symbols=self.symbols,
            sym_id=self.sym_id[kept],
            prices={c: getattr(self, c)[kept] for c in PRICE_COLUMNS},
            columns={c: v[kept] for c, v in self.columns.items()},
            signal_columns=self.signal_columns,
            indicator_columns=self.indicator_columns,
            context=self.context,
            ordinal=self.ordinal[kept],
            prev_row=np.where(old_prev >= 0, remap[np.maximum(old_prev, 0)], -1),
            first_index=n_t,
            first_row=n_kept,
            datetimes=self.datetimes,
        )
        return window, remap

    def between(
        self, start: date | datetime | None = None, end: date | datetime | None = None
    ) -> MarketData:
        """The panel restricted to the bars whose close is in ``[start, end]`` (a backtest
        window); the engine run on it trades from ``start`` and ends at ``end``.

        Columns computed before the engine (signals, indicators, context) keep the values
        they got from the full history, so an indicator at the window's first bar has its
        full look-back. Bars before ``start`` themselves are not in the result: per-symbol bar
        numbers (``ordinal``, hence ``bars_held``) count from the window's first bar, and
        ``BarView.previous()`` of a symbol's first bar in the window is ``None``. A run on the
        window equals a run on a panel cut to the same rows.

        Parameters
        ----------
        start, end : date or datetime, optional
            Inclusive bounds. A ``datetime`` must be timezone-aware (compared with the bar
            close timestamps, UTC); a ``date`` means its whole UTC calendar day (from 00:00 to
            the day's last microsecond), so ``end=date(2015, 12, 31)`` keeps that day's close.
            ``None``: unbounded on that side.

        Returns
        -------
        MarketData
            ``self`` when both are ``None``. Otherwise a new panel of the window's ``T'``
            timestamps and ``N'`` rows: the same ``symbols`` (ids unchanged; a symbol may
            have no bar in the window); price, signal, indicator and quote arrays of shape
            ``(N',)`` and context arrays of shape ``(T',)`` are views of this panel's arrays.

        Raises
        ------
        ValueError
            A bound that is not a date or a tz-aware datetime; ``start`` after ``end``; a
            window with no bar (the message gives the data's first and last timestamps);
            a window of chunked data (``first_index > 0``: cut the chunks instead, see
            :meth:`ChunkedMarketData.between`).
        """
        if start is None and end is None:
            return self
        if self.first_index != 0:
            raise ValueError("between() needs a whole panel, not a window of chunked data")
        first, last = window_bounds(start, end)
        i0 = int(np.searchsorted(self.timestamps, first, side="left"))
        i1 = int(np.searchsorted(self.timestamps, last, side="right"))
        if i1 <= i0:
            span = self.datetimes
            raise ValueError(
                f"the backtest window [{start}, {end}] holds no bar: the data runs from "
                f"{span[0]} to {span[-1]}"
                if span
                else f"the backtest window [{start}, {end}] holds no bar: the data has none"
            )
        r0, r1 = int(self.offsets[i0]), int(self.offsets[i1])
        return MarketData(
            timestamps=self.timestamps[i0:i1],
            offsets=self.offsets[i0 : i1 + 1] - r0,
            symbols=self.symbols,
            sym_id=self.sym_id[r0:r1],
            prices={c: getattr(self, c)[r0:r1] for c in PRICE_COLUMNS},
            columns={c: v[r0:r1] for c, v in self.columns.items()},
            signal_columns=self.signal_columns,
            indicator_columns=self.indicator_columns,
            context={c: v[i0:i1] for c, v in self.context.items()},
            datetimes=None if self._datetimes is None else self._datetimes[i0:i1],
        )

    # ------------------------------------------------------------------ accessors
    @property
    def n_bar_events(self) -> int:
        """Rows this object runs: ``n_rows - first_row`` (carried bars are not counted)."""
        return int(self.sym_id.size) - self.first_row

    @property
    def last_rows(self) -> IntArray:
        """Row of each symbol's latest bar, shape (S,), ``-1`` for a symbol without bars."""
        if self._last_rows is None:
            last = np.full(self.symbols.size, -1, dtype=np.int64)
            data_kernels.last_rows(np.ascontiguousarray(self.sym_id, dtype=np.int64), last)
            self._last_rows = last
        return self._last_rows

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

    def symbol_names(self, ids: IntArray) -> list[str]:
        """Names of the symbol ids ``ids`` as Python strings (the list is built once)."""
        names = self._symbol_list
        if names is None:
            names = self._symbol_list = [str(s) for s in self.symbols.tolist()]
        return list(map(names.__getitem__, ids.tolist()))

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

    def __init__(self, data: MarketData, index: int, lo: int = -1, hi: int = -1) -> None:
        # lo, hi: the rows offsets[index]:offsets[index + 1] when the caller knows them
        self._data = data
        self.index = index
        if lo < 0:
            lo = int(data.offsets[index])
            hi = int(data.offsets[index + 1])
        self.lo = lo
        self.hi = hi

    def __len__(self) -> int:
        return self.hi - self.lo

    @property
    def timestamp_us(self) -> int:
        """The batch's bar close, microseconds since the epoch (UTC), int."""
        return int(self._data.timestamps[self.index])

    @property
    def symbols(self) -> npt.NDArray[np.str_]:
        """The symbols of the batch's rows, shape (n_rows,), str."""
        data = self._data
        return data.symbols[data.sym_id[self.lo : self.hi]]

    @property
    def ids(self) -> IntArray:
        """The symbol ids (index into ``MarketData.symbols``), shape (n_rows,), int64."""
        return self._data.sym_id[self.lo : self.hi]

    @property
    def open(self) -> FloatArray:
        """Opening prices, currency per share, shape (n_rows,), float64 (a view)."""
        return self._data.open[self.lo : self.hi]

    @property
    def high(self) -> FloatArray:
        """High prices, currency per share, shape (n_rows,), float64 (a view)."""
        return self._data.high[self.lo : self.hi]

    @property
    def low(self) -> FloatArray:
        """Low prices, currency per share, shape (n_rows,), float64 (a view)."""
        return self._data.low[self.lo : self.hi]

    @property
    def close(self) -> FloatArray:
        """Closing prices, currency per share, shape (n_rows,), float64 (a view)."""
        return self._data.close[self.lo : self.hi]

    @property
    def volume(self) -> FloatArray:
        """Traded volume, shares, shape (n_rows,), float64 (a view)."""
        return self._data.volume[self.lo : self.hi]

    @property
    def signals(self) -> dict[str, FloatArray]:
        """Signal columns by name, each shape (n_rows,), float64 (views)."""
        cols = self._data.columns
        return {c: cols[c][self.lo : self.hi] for c in self._data.signal_columns}

    @property
    def indicators(self) -> dict[str, FloatArray]:
        """Indicator (feature) columns by name, each shape (n_rows,), float64 (views)."""
        cols = self._data.columns
        return {c: cols[c][self.lo : self.hi] for c in self._data.indicator_columns}

    def __getitem__(self, column: str) -> npt.NDArray[Any]:
        """Any column of the batch: ``symbol``, ``id``, OHLCV, a signal/indicator or bid/ask."""
        data = self._data
        named = data.columns.get(column)  # signals and indicators first (the common ask)
        if named is not None:
            arr: npt.NDArray[Any] = named
        elif column in PRICE_COLUMNS:
            arr = getattr(data, column)
        elif column == "symbol":
            return data.symbols[data.sym_id[self.lo : self.hi]]
        elif column == "id":
            arr = data.sym_id
        else:
            raise KeyError(f"no column {column!r} in the batch; have {self.column_names}")
        return arr[self.lo : self.hi]

    @property
    def column_names(self) -> list[str]:
        """The names ``__getitem__`` accepts: symbol, id, OHLCV, then the named columns."""
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
        """One :class:`MarketEvent` per symbol of the batch (in symbol order), lazily.

        Each event gets its own ``signals`` / ``indicators`` dicts; ``context`` is shared.
        """
        data = self._data
        lo, hi = self.lo, self.hi
        n = hi - lo
        ts = data.datetimes[self.index]
        ctx = context if context is not None else data.context_at(self.index)
        return map(
            MarketEvent,
            repeat(ts, n),
            data.symbol_names(data.sym_id[lo:hi]),
            data.open[lo:hi].tolist(),
            data.high[lo:hi].tolist(),
            data.low[lo:hi].tolist(),
            data.close[lo:hi].tolist(),
            data.volume[lo:hi].tolist(),
            _row_dicts(data.columns, data.signal_columns, lo, hi),
            _row_dicts(data.columns, data.indicator_columns, lo, hi),
            repeat(ctx, n),
        )


def _row_dicts(
    columns: dict[str, FloatArray], names: list[str], lo: int, hi: int
) -> list[dict[str, float]]:
    """``{name: value}`` per row ``lo:hi`` of the named columns (a new dict per row)."""
    if not names:
        return [{} for _ in range(hi - lo)]
    if len(names) == 1:
        name = names[0]
        return [{name: v} for v in columns[name][lo:hi].tolist()]
    lists = [columns[c][lo:hi].tolist() for c in names]
    return [dict(zip(names, values, strict=True)) for values in zip(*lists, strict=True)]


class BarView:
    """One symbol's bar as a slippage model sees it at a fill (values read lazily).

    **What a fill may know.** A fill at the bar's open or inside the bar (``at_close`` False:
    market orders at the open, resting limit/stop orders, stop-loss / take-profit levels)
    happens before the bar has closed. At that moment only the bar's ``open`` and the bars
    completed before it are known: :meth:`previous` and the rows before it, and
    :meth:`derived` series read at those rows. This bar's ``high``, ``low``, ``close``,
    ``volume``, ``bid``/``ask`` (a quote is stamped at the bar's close) and indicator columns
    become known only at its close. A fill at the bar's close (``at_close`` True) may read the
    whole bar. The view still returns every value, so that a model can follow a stated
    convention (``VolumeAwareSlippage`` reads the fill bar's total volume by default, as
    zipline and LEAN do); each built-in model's docstring says what it reads.

    The broker builds the view of every fill with ``at_close=False`` today, also for
    ``fill="close"`` fills: those are then priced from the bars before their bar, which never
    looks ahead (it is one bar staler than it could be).

    Parameters
    ----------
    data : MarketData
        The market data (a whole panel or one chunk window).
    row : int
        The bar's row in ``data``.
    at_close : bool, default False
        True when the fill happens at this bar's close.
    """

    __slots__ = ("_data", "at_close", "row")

    def __init__(self, data: MarketData, row: int, at_close: bool = False) -> None:
        self._data = data
        self.row = row
        self.at_close = at_close

    @property
    def symbol(self) -> str:
        """The bar's symbol."""
        data = self._data
        return str(data.symbols[data.sym_id[self.row]])

    @property
    def timestamp(self) -> datetime:
        """The bar's close as a tz-aware UTC ``datetime``."""
        data = self._data
        index = int(np.searchsorted(data.offsets, self.row, side="right")) - 1
        return data.datetimes[index]

    @property
    def open(self) -> float:
        """Opening price, currency per share."""
        return float(self._data.open[self.row])

    @property
    def high(self) -> float:
        """High price, currency per share."""
        return float(self._data.high[self.row])

    @property
    def low(self) -> float:
        """Low price, currency per share."""
        return float(self._data.low[self.row])

    @property
    def close(self) -> float:
        """Closing price, currency per share."""
        return float(self._data.close[self.row])

    @property
    def volume(self) -> float:
        """Traded volume, shares."""
        return float(self._data.volume[self.row])

    @property
    def bid(self) -> float:
        """The bid quoted at the bar's close, NaN when the panel has no ``bid`` column or it
        is null."""
        col = self._data.columns.get("bid")
        return float(col[self.row]) if col is not None else float("nan")

    @property
    def ask(self) -> float:
        """The ask quoted at the bar's close, NaN when the panel has no ``ask`` column or it
        is null."""
        col = self._data.columns.get("ask")
        return float(col[self.row]) if col is not None else float("nan")

    def has_column(self, column: str) -> bool:
        """Whether the panel has the named signal/indicator/quote column (OHLCV not included)."""
        return column in self._data.columns

    def __getitem__(self, column: str) -> float:
        if column in PRICE_COLUMNS:
            return float(getattr(self._data, column)[self.row])
        return float(self._data.columns[column][self.row])

    def previous(self) -> BarView | None:
        """The same symbol's previous bar (a completed bar), or ``None`` for its first bar."""
        prev = int(self._data.prev_row[self.row])
        return None if prev < 0 else BarView(self._data, prev)

    def derived(self, key: str, compute: Callable[[MarketData], T]) -> T:
        """A value computed once from the whole market data and cached on it under ``key``.

        For per-row series a model computes vectorised instead of per fill (e.g. a rolling
        spread estimate): ``compute(data)`` runs on the first call for a given ``key`` and
        ``data`` (a :class:`MarketData`, arrays indexed by row; ``data.prev_row`` links each
        row to its symbol's previous bar, ``data.ordinal`` counts its earlier bars) and its
        result is returned on every later call. ``key`` must name everything the result
        depends on besides the data (e.g. ``"corwin_schultz:20:20"``). A value at row ``r``
        must use only rows of the same symbol at or before ``r``; the model reads it at a row
        the fill may know (``previous().row`` for a fill before the close).
        """
        cache = self._data._derived
        if key in cache:
            value: T = cache[key]
            return value
        value = compute(self._data)
        cache[key] = value
        return value
