"""Market data handed over in time-contiguous chunks: :class:`ChunkedMarketData` (the chunks
and the run's universe) and :class:`ChunkStream` (one pass, building one :class:`MarketData`
window at a time)."""

from __future__ import annotations

import mmap
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

from engine import data_kernels
from engine.data import MarketData
from engine.panel import (
    PRICE_COLUMNS,
    QUOTE_COLUMNS,
    Allocate,
    FloatArray,
    IntArray,
    _chains,
    _empty,
    _panel_columns,
    _panel_frame,
    _PanelFrame,
    window_bounds,
)


class ChunkedMarketData:
    """Market data handed over as time-contiguous chunks (e.g. one month each), built lazily.

    The engine never reads files: the caller supplies an iterable of polars frames (for
    example one ``scan_parquet(...).filter(month).collect()`` per month) and the engine turns
    one chunk at a time into a :class:`MarketData` *window*, so only one chunk's arrays (plus a
    few carried rows) are in memory. A run over the chunks gives the same fills, trades,
    orders and portfolio states as a run over the concatenated panel.

    Across a chunk boundary the engine carries, per symbol, its last ``history_bars`` bars
    (default two: ``BarView.previous()`` of a fill's bar and the "last bar before the fill"
    used by entry rules, e.g. an ATR column for volatility-scaled stops, see the previous
    chunk), plus every bar still referenced by a working order or an open position (the
    decision bar whose signal values are reported as ``entry_<column>`` / ``exit_<column>``).
    Bar numbers per symbol (``ordinal``, hence ``bars_held``) continue across chunks. Broker
    and risk state (cash, positions, pending and resting orders, stop/take-profit levels,
    MFE/MAE extremes, latest closes for marking) lives in the engine and simply carries on.

    Limit: looking back further than the carried bars (e.g. ``bar.previous().previous()``
    on a chunk's first bar with the default ``history_bars=2``) returns ``None`` at a
    boundary, where the in-memory panel would return an older bar. The built-in cost models
    that average over earlier bars (``SpreadAwareSlippage`` without quotes,
    ``VolumeAwareSlippage(volume="completed")``) state how many they read
    (``SlippageModel.history_bars``) and raise ``ValueError`` naming the value to pass here
    when a boundary carried fewer; they never average over a cut history silently.

    Parameters
    ----------
    frames : iterable of pl.DataFrame
        Chunks in increasing time order, each in the panel format of
        :meth:`MarketData.from_frame` with the same signal/indicator (and bid/ask) columns.
        Every timestamp of a chunk must be later than every timestamp of the chunk before
        (chunks are disjoint slices of time; a timestamp's bars must all be in one chunk).
        Empty frames are skipped. Iterated once per run: pass a list (or any re-iterable) to
        run twice; a one-shot iterator or generator can be run once.
    symbols : sequence of str
        The fixed symbol universe (ids are positions in the sorted list). A chunk may lack
        some symbols (no bars for them in that period).
    signal_columns, indicator_columns : sequence of str
        As in :meth:`MarketData.from_frame`.
    context : pl.DataFrame, optional
        ``timestamp`` plus market-wide columns for the whole run (at most one row per
        timestamp); aligned to each chunk's timestamps by exact match (missing → NaN).
    context_columns : sequence of str, optional
        Context columns to keep; default all but ``timestamp``.
    history_bars : int, default 2
        Bars per symbol carried across a chunk boundary (at least 2). Set it to the slippage
        model's ``history_bars`` (or more) when that is larger, e.g. 21 for
        ``SpreadAwareSlippage(window=20)``; the pipeline does this itself.
    prefetch : bool, default False
        ``True``: read the next chunk's frame from ``frames`` and check it (every check of
        :meth:`MarketData.from_frame`, the symbol ids, the sort order, the timestamps) in a
        background thread while the engine runs the current window (one frame ahead, so one
        more chunk's frame is in memory; polars reads, decodes and checks without holding
        the GIL, so on a machine with a free core this overlaps the loop); at the boundary
        the engine's thread only copies the columns into the window's arrays. The first
        chunk is read the same way, while the engine's thread starts numba (its compiler's
        one-time set-up, a few tenths of a second in a fresh process), and the first
        window's row arrays are made there too, their pages mapped. The frames
        are still taken in order and by one thread at a time; an error raised by ``frames``
        or by the chunk's checks surfaces where the engine takes that chunk, naming it as
        without prefetching. ``False``: each frame is read and converted when the engine
        needs it, in the engine's thread.

    Raises
    ------
    ValueError
        At construction: an empty or duplicated symbol universe, ``history_bars`` below 2 or
        not an integer, bad context (see
        :meth:`MarketData.from_frame`). During the run (when the chunk is built): anything
        :meth:`MarketData.from_frame` rejects, naming the chunk (1-based); a symbol outside
        the universe; a chunk that does not start after the previous chunk's last timestamp;
        a chunk whose bid/ask columns differ from the first chunk's; no chunk with any bar.
    RuntimeError
        A second run over a one-shot iterator.
    """

    def __init__(
        self,
        frames: Iterable[pl.DataFrame],
        symbols: Sequence[str],
        signal_columns: Sequence[str] = (),
        indicator_columns: Sequence[str] = (),
        context: pl.DataFrame | None = None,
        context_columns: Sequence[str] | None = None,
        history_bars: int = 2,
        prefetch: bool = False,
    ) -> None:
        names = [str(s) for s in symbols]
        if not names:
            raise ValueError("symbols is empty: the universe needs at least one symbol")
        if isinstance(history_bars, bool) or not isinstance(history_bars, int | np.integer):
            raise ValueError(f"history_bars must be an integer >= 2, got {history_bars!r}")
        if history_bars < 2:
            raise ValueError(f"history_bars must be >= 2, got {history_bars}")
        self.history_bars = int(history_bars)
        self.prefetch = bool(prefetch)
        universe = pl.Series("symbol", names, dtype=pl.String)
        dups = universe.filter(universe.is_duplicated()).unique().sort()
        if dups.len():
            raise ValueError(f"symbols lists {dups.len()} names twice: {dups.to_list()}")
        self._universe = universe.sort()
        self.symbols = np.asarray(self._universe.to_list(), dtype=np.str_)
        self.signal_columns = list(signal_columns)
        self.indicator_columns = list(indicator_columns)
        MarketData._align_context(context, context_columns, np.empty(0, dtype=np.int64))
        self._context = context
        self._context_columns = None if context_columns is None else list(context_columns)
        self.context_columns = (
            []
            if context is None
            else (
                [c for c in context.columns if c != "timestamp"]
                if context_columns is None
                else list(context_columns)
            )
        )
        self._frames = frames
        self._one_shot = isinstance(frames, Iterator)
        self._started = False

    @property
    def n_symbols(self) -> int:
        """Size ``S`` of the symbol universe."""
        return int(self.symbols.size)

    def between(
        self, start: date | datetime | None = None, end: date | datetime | None = None
    ) -> ChunkedMarketData:
        """The chunks restricted to the bars whose close is in ``[start, end]`` (see
        :meth:`MarketData.between` for the bounds and what the window means).

        Each chunk is filtered as it is read, so nothing more is held in memory. A run over
        a window with no bar raises ``ValueError`` naming the window.

        Returns
        -------
        ChunkedMarketData
            ``self`` when both bounds are ``None``; else the same universe and columns over
            the filtered chunks (a one-shot iterator of chunks stays one-shot).

        Raises
        ------
        ValueError
            A bound that is not a date or a tz-aware datetime; ``start`` after ``end``.
        """
        if start is None and end is None:
            return self
        first, last = window_bounds(start, end)
        label = f"[{start}, {end}]"
        frames: Iterable[pl.DataFrame]
        if isinstance(self._frames, Iterator):
            frames = _window_frames(self._frames, first, last, label)
        else:
            frames = _WindowFrames(self._frames, first, last, label)
        return ChunkedMarketData(
            frames,
            symbols=[str(s) for s in self.symbols.tolist()],
            signal_columns=self.signal_columns,
            indicator_columns=self.indicator_columns,
            context=self._context,
            context_columns=self._context_columns,
            history_bars=self.history_bars,
            prefetch=self.prefetch,
        )

    def stream(self) -> ChunkStream:
        """A new pass over the chunks (the engine calls this once per run).

        Raises
        ------
        RuntimeError
            If ``frames`` is a one-shot iterator that an earlier pass already used.
        """
        if self._one_shot and self._started:
            raise RuntimeError(
                "the chunks were given as a one-shot iterator and have been used by an "
                "earlier run; pass a list or another re-iterable to run more than once"
            )
        self._started = True
        return ChunkStream(self, iter(self._frames))

    def _window(
        self,
        holder: list[pl.DataFrame],
        carry: MarketData | None,
        k: int,
        alloc: Allocate = _empty,
    ) -> MarketData:
        """Build the window of chunk ``k`` (1-based, the frame handed over in ``holder``) after
        the rows ``carry`` carries over (see :meth:`MarketData._carried`); carried rows keep
        their row numbers; ``alloc`` makes the row arrays."""
        return self._assemble(self._prepare(holder, k), carry, alloc)

    def _prepare(self, holder: list[pl.DataFrame], k: int) -> _Prepared:
        """The part of chunk ``k``'s window that makes no array of the chunk's size but the
        symbol ids (the frame handed over in ``holder``): every check of the chunk itself
        (:func:`engine.panel._panel_frame`), its context values and bar-close datetimes."""
        panel = _panel_frame(
            holder, self.signal_columns, self.indicator_columns, self._universe, f"chunk {k}"
        )
        ctx = MarketData._align_context(self._context, self._context_columns, panel.timestamps)
        new_dt = pl.Series(panel.timestamps).cast(pl.Datetime("us", "UTC")).to_list()
        return _Prepared(panel, ctx, new_dt, k)

    def _assemble(
        self, prepared: _Prepared, carry: MarketData | None, alloc: Allocate = _empty
    ) -> MarketData:
        """The window of a prepared chunk after the rows ``carry`` carries over: the row
        arrays (the carried rows first; made by ``alloc``), the bar numbers and previous
        rows."""
        ctx, k = prepared.context, prepared.k
        name = f"chunk {k}"
        n_kept = 0 if carry is None else carry.n_rows
        arrays = _panel_columns(prepared.panel, n_kept, alloc)
        if carry is None:
            ord_local, prev_local = _chains(arrays.sym_id, self.symbols.size, alloc)
            return MarketData(
                timestamps=arrays.timestamps,
                offsets=arrays.offsets,
                symbols=self.symbols,
                sym_id=arrays.sym_id,
                prices=arrays.prices,
                columns=arrays.columns,
                signal_columns=self.signal_columns,
                indicator_columns=self.indicator_columns,
                context=ctx,
                ordinal=ord_local,
                prev_row=prev_local,
                datetimes=prepared.datetimes,
            )
        last_ts = int(carry.timestamps[-1])
        first_ts = int(arrays.timestamps[0])
        if first_ts <= last_ts:
            stamps = pl.Series([first_ts, last_ts]).cast(pl.Datetime("us", "UTC")).to_list()
            raise ValueError(
                f"{name} starts at {stamps[0]}, not after the previous chunk's last timestamp "
                f"{stamps[1]}: chunks must be disjoint time slices in increasing order"
            )
        if set(arrays.columns) != set(carry.columns):
            raise ValueError(
                f"{name} has columns {sorted(arrays.columns)} besides OHLCV, the chunks before "
                f"had {sorted(carry.columns)} (bid/ask must be in every chunk or in none)"
            )
        # carried rows first (same row numbers), then the chunk's
        arrays.sym_id[:n_kept] = carry.sym_id
        for c in PRICE_COLUMNS:
            arrays.prices[c][:n_kept] = getattr(carry, c)
        for c, values in arrays.columns.items():
            values[:n_kept] = carry.columns[c]
        # bar numbers and previous bars continue across the boundary: one pass over the new
        # rows, starting from each symbol's last carried bar and its bar count
        last = carry.last_rows.copy()
        count = np.where(last >= 0, carry.ordinal[np.maximum(last, 0)] + 1, 0).astype(np.int64)
        n_rows = arrays.sym_id.size
        ordinal: IntArray = alloc(n_rows, np.int64)
        prev_row: IntArray = alloc(n_rows, np.int64)
        ordinal[:n_kept] = carry.ordinal
        prev_row[:n_kept] = carry.prev_row
        data_kernels.symbol_chains(arrays.sym_id, n_kept, last, count, ordinal, prev_row)
        start = carry.n_timestamps
        new_dt = prepared.datetimes
        window = MarketData(
            timestamps=np.concatenate((carry.timestamps, arrays.timestamps)),
            offsets=np.concatenate((carry.offsets[:-1], arrays.offsets + n_kept)),
            symbols=self.symbols,
            sym_id=arrays.sym_id,
            prices=arrays.prices,
            columns=arrays.columns,
            signal_columns=self.signal_columns,
            indicator_columns=self.indicator_columns,
            context={c: np.concatenate((carry.context[c], v)) for c, v in ctx.items()},
            ordinal=ordinal,
            prev_row=prev_row,
            first_index=start,
            first_row=n_kept,
            datetimes=carry.datetimes + new_dt,
        )
        window._last_rows = last  # each symbol's latest row, left by the chains pass
        return window


def _start_numba() -> None:
    """numba's one-time start-up (its compiler's set-up at the first compiled call, ~0.3-0.5 s
    of CPU), done by a call of a kernel the first window's assembly calls anyway
    (:func:`engine.data_kernels.symbol_chains` over no row)."""
    none = np.empty(0, dtype=np.int64)
    data_kernels.symbol_chains(none, 0, none, none, none, none)


def _sole_owner_count() -> int:
    """What ``sys.getrefcount`` reports here for an array that one local name holds and
    nothing else (the interpreter's own way of counting: 2 in CPython 3.11)."""
    values = np.empty(1)
    return sys.getrefcount(values)


_SOLE_OWNER = _sole_owner_count()

# NumPy's switch for its transparent-huge-page hint on large allocations (private; None when
# a NumPy version lacks it)
_HUGEPAGE_HINT: Callable[[bool], bool] | None = getattr(
    getattr(getattr(np, "_core", None), "multiarray", None), "_set_madvise_hugepage", None
)


def _fresh(n: int, dtype: type) -> npt.NDArray[Any]:
    """A new uninitialised array of ``n`` values for a window's rows, allocated without
    NumPy's huge-page hint (``madvise(MADV_HUGEPAGE)``): where the kernel honours the hint
    only on request (``transparent_hugepage=madvise``), the first write of each 2 MiB page of
    a chunk-sized array made it zero, and often first compact, a whole huge page in the
    engine's thread (W2's first window: 0.11-0.34 s of system time, 0.06 s with small
    pages). The arrays are reused across windows (:meth:`ChunkStream._buffer`), so their
    pages are mapped once either way."""
    hint = _HUGEPAGE_HINT
    if hint is None:  # pragma: no cover - NumPy without the switch
        return np.empty(n, dtype=dtype)
    before = hint(False)
    try:
        return np.empty(n, dtype=dtype)
    finally:
        hint(before)


def _row_array(n: int, dtype: type) -> npt.NDArray[Any]:
    """A new row array of a window for ``n`` rows (:func:`_fresh`), with room for a longer
    next chunk (pages never written are never mapped)."""
    return _fresh(n + n // 4, dtype)


def _mapped(n: int, dtype: type) -> npt.NDArray[Any]:
    """A :func:`_row_array` for ``n`` rows with the pages of its first ``n`` values mapped
    (one byte written per page; the values stay unspecified, as from ``np.empty``)."""
    values = _row_array(n, dtype)
    values[:n].view(np.uint8)[:: mmap.PAGESIZE] = 0
    return values


class _Prepared(NamedTuple):
    """A chunk checked, its columns not copied yet (:meth:`ChunkedMarketData._prepare`)."""

    panel: _PanelFrame
    context: dict[str, FloatArray]
    datetimes: list[datetime]
    k: int  # the chunk's number (1-based)


def _window_frames(
    frames: Iterable[pl.DataFrame], first: int, last: int, label: str
) -> Iterator[pl.DataFrame]:
    """The rows of each frame whose ``timestamp`` is in ``[first, last]`` µs (UTC)."""
    rows = 0
    for frame in frames:
        stamp = pl.col("timestamp").dt.epoch("us")
        cut = frame.filter((stamp >= first) & (stamp <= last))
        rows += cut.height
        yield cut
    if rows == 0:
        raise ValueError(f"the backtest window {label} holds no bar of the chunked market data")


class _WindowFrames:
    """A re-iterable window over re-iterable chunks (each pass filters anew)."""

    def __init__(self, frames: Iterable[pl.DataFrame], first: int, last: int, label: str):
        self.frames, self.first, self.last, self.label = frames, first, last, label

    def __iter__(self) -> Iterator[pl.DataFrame]:
        return _window_frames(self.frames, self.first, self.last, self.label)


class _Prefetch:
    """The result of ``read()``, run in a background thread from construction on."""

    def __init__(self, read: Callable[[], _Prepared | None]) -> None:
        self._frame: _Prepared | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(read,), name="ml4t-chunk-prefetch", daemon=True
        )
        self._thread.start()

    def _run(self, read: Callable[[], _Prepared | None]) -> None:
        try:
            self._frame = read()
        except BaseException as exc:  # handed to the engine's thread by take()
            self._error = exc

    def take(self) -> _Prepared | None:
        """Wait for the read; its result, or raise what it raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        frame, self._frame = self._frame, None
        return frame


class ChunkStream:
    """One pass over a :class:`ChunkedMarketData`: builds its windows one at a time.

    The engine alternates :meth:`release` (at the end of a window: keep only the rows the run
    still needs, so the window can be freed before the next chunk is read) and
    :meth:`advance` (read and build the next chunk's window on top of the kept rows).

    Attributes
    ----------
    window : MarketData or None
        The current window: a chunk's, or after :meth:`release` the carried rows only
        (``None`` before the first :meth:`advance`).
    n_chunks : int
        Chunks with bars built so far.
    """

    def __init__(self, source: ChunkedMarketData, frames: Iterator[pl.DataFrame]) -> None:
        self._source = source
        self._frames = frames
        self._peeked = False
        self._pending: pl.DataFrame | _Prepared | None = None
        self._seen = 0
        self._ahead: _Prefetch | None = None
        # the row arrays of the window released last, for the next window's arrays
        self._spare: list[npt.NDArray[Any]] = []
        self.window: MarketData | None = None
        self.n_chunks = 0

    def _next_frame(self) -> pl.DataFrame | _Prepared | None:
        if self._peeked:
            self._peeked = False
            frame, self._pending = self._pending, None
            return frame
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            return ahead.take()
        return self._read_frame()

    def _read_frame(self) -> pl.DataFrame | None:
        """The next frame with rows from the chunks (``None``: exhausted)."""
        for frame in self._frames:
            self._seen += 1
            if not isinstance(frame, pl.DataFrame):
                raise ValueError(
                    f"chunk {self._seen} must be a polars DataFrame, got {type(frame).__name__}"
                )
            if frame.height:
                return frame
        return None

    def _read_prepared(self, first: bool = False) -> _Prepared | None:
        """The next frame with rows, prepared (:meth:`ChunkedMarketData._prepare`, in the
        prefetch thread); ``None``: exhausted.

        ``first`` (the first chunk): also make the first window's row arrays and map their
        pages (the spare arrays :meth:`_buffer` hands out). The engine's thread starts numba
        meanwhile, and the chunk's checks wait for that start at their first compiled call,
        so this thread's core would idle there; the first window's assembly then copies
        into mapped pages instead of taking the page faults (~40,000 for a month of W2,
        0.05-0.08 s of the engine thread's time)."""
        frame = self._read_frame()
        if frame is None:
            return None
        source = self._source
        if first:
            n = frame.height
            n_float = len(PRICE_COLUMNS) + len(source.signal_columns)
            n_float += len(source.indicator_columns)
            n_float += sum(c in frame.columns for c in QUOTE_COLUMNS)
            # sym_id, ordinal and prev_row, then the float columns (taken from the end)
            spare = [_mapped(n, np.int64) for _ in range(3)]
            self._spare = spare + [_mapped(n, np.float64) for _ in range(n_float)]
        holder = [frame]
        del frame  # held by the prepared chunk only: its columns are freed as they are copied
        return source._prepare(holder, self._seen)

    def is_last(self) -> bool:
        """True when no chunk with bars follows the current one (reads the next chunk's frame
        ahead; its window is built only by the next :meth:`advance`)."""
        if not self._peeked:
            self._pending = self._next_frame()
            self._peeked = True
        return self._pending is None

    def _buffer(self, n: int, dtype: type) -> npt.NDArray[Any]:
        """An uninitialised array of ``n`` values of ``dtype`` for the window being built:
        the front of a row array of the window released last when it is large enough and
        nothing refers to it any more (no window, and no view a strategy kept: its values
        stay untouched), else of a new one with room for a longer next chunk (pages never
        written are never mapped). Writing into pages already mapped saves the fresh pages
        a new chunk-sized array costs."""
        spare = self._spare
        for k in range(len(spare) - 1, -1, -1):
            values = spare[k]
            if values.dtype == dtype and values.size >= n:
                del spare[k]
                if sys.getrefcount(values) == _SOLE_OWNER:  # held by this name only
                    return values[:n]
        return _row_array(n, dtype)[:n]

    def release(self, keep: IntArray | None = None) -> IntArray:
        """Replace the current window by the rows a boundary carries (each symbol's last
        ``history_bars`` bars plus ``keep``, rows of the current window); return the map from
        the current window's rows to the carried rows (``-1``: dropped).

        Raises
        ------
        RuntimeError
            Before the first :meth:`advance`.
        """
        if self.window is None:
            raise RuntimeError("release() before the first advance()")
        window = self.window
        carry, remap = window._carried(keep, self._source.history_bars)
        self._spare = []
        for values in (
            window.sym_id, window.ordinal, window.prev_row,
            *(getattr(window, c) for c in PRICE_COLUMNS), *window.columns.values(),
        ):  # fmt: skip
            base = values if values.base is None else values.base
            if isinstance(base, np.ndarray) and base.flags.owndata and base.ndim == 1:
                self._spare.append(base)
        del window
        self.window = carry
        return remap

    def advance(self) -> MarketData | None:
        """Build the next chunk's window on top of the carried rows (row numbers unchanged);
        ``None`` when the chunks are exhausted.

        Raises
        ------
        ValueError
            A bad chunk (see :class:`ChunkedMarketData`), or no chunk with any bar at all.
        """
        if self.window is None and self._source.prefetch and not self._peeked:
            # the first chunk is read and checked in the background too, while this thread
            # does numba's one-time start-up (its first compiled call)
            self._ahead = _Prefetch(lambda: self._read_prepared(first=True))
            _start_numba()
        item = self._next_frame()
        if item is None:
            self._spare = []
            if self.window is None:
                raise ValueError("the chunked market data has no bars: every chunk is empty")
            return None
        if isinstance(item, pl.DataFrame):
            holder = [item]
            del item  # _panel_arrays takes it out of the holder and frees its columns
            window = self._source._window(holder, self.window, self._seen, self._buffer)
        else:  # read and checked ahead (prefetch): the row arrays to fill
            window = self._source._assemble(item, self.window, self._buffer)
            del item
        self.window = window
        self._spare = []  # those not reused are freed
        self.n_chunks += 1
        if self._source.prefetch:
            self._ahead = _Prefetch(self._read_prepared)
        return window
