"""Panel arrays: a long polars panel validated and turned into NumPy arrays sorted by
(timestamp, symbol), and the bounds of a backtest window.

:func:`_panel_arrays` (in two steps: :func:`_panel_frame`, :func:`_panel_columns`) is the
one validation both :class:`engine.data.MarketData` and
:class:`engine.chunked.ChunkedMarketData` build on; :func:`window_bounds` turns a
``start``/``end`` into inclusive epoch microseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

from engine import data_kernels

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
QUOTE_COLUMNS = ("bid", "ask")
_MAX_LISTED = 10


def _first_rows(frame: pl.DataFrame, columns: Sequence[str]) -> str:
    rows = frame.select(columns).head(_MAX_LISTED).rows()
    more = "" if frame.height <= _MAX_LISTED else f" (and {frame.height - _MAX_LISTED} more)"
    return ", ".join(str(r) for r in rows) + more


def check_timestamp(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """``frame`` with its ``timestamp`` column as ``Datetime[us, UTC]`` (bar close).

    Raises
    ------
    ValueError
        No ``timestamp`` column, a dtype that is not a tz-aware UTC Datetime, or null values
        (the message names ``name``).
    """
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


def _prices_finite(frame: pl.DataFrame) -> bool:
    """True when no price column (Float64) of ``frame`` has a null or non-finite value: one
    compiled pass over each column chunk, read in place (no filtered frame is built)."""
    for c in PRICE_COLUMNS:
        series = frame.get_column(c)
        if series.null_count():
            return False
        for chunk in series.get_chunks():
            if not data_kernels.all_finite(chunk.to_numpy()):
                return False
    return True


def _strictly_increasing(ts: IntArray, sym_id: IntArray) -> bool:
    """True when (ts, sym_id) pairs are strictly increasing in lexicographic order."""
    return bool(
        data_kernels.strictly_increasing(
            np.ascontiguousarray(ts, dtype=np.int64), np.ascontiguousarray(sym_id, dtype=np.int64)
        )
    )


def _chains(
    sym_id: IntArray, n_symbols: int, alloc: Callable[[int, type], npt.NDArray[Any]] = np.empty
) -> tuple[IntArray, IntArray]:
    """Each row's 0-based bar number within its symbol, and the row of its previous bar (-1);
    ``alloc(n, dtype)`` makes the two arrays."""
    ids = np.ascontiguousarray(sym_id, dtype=np.int64)
    ordinal: IntArray = alloc(ids.size, np.int64)
    prev: IntArray = alloc(ids.size, np.int64)
    last = np.full(n_symbols, -1, dtype=np.int64)
    count = np.zeros(n_symbols, dtype=np.int64)
    data_kernels.symbol_chains(ids, 0, last, count, ordinal, prev)
    return ordinal, prev


class _PanelArrays(NamedTuple):
    """A validated panel as arrays sorted by (timestamp, symbol id)."""

    symbols: npt.NDArray[np.str_]
    timestamps: IntArray  # unique, increasing (T,)
    offsets: IntArray  # (T + 1,)
    sym_id: IntArray
    prices: dict[str, FloatArray]
    columns: dict[str, FloatArray]


def _panel_arrays(
    source: pl.DataFrame | list[pl.DataFrame],
    signal_columns: list[str],
    indicator_columns: list[str],
    universe: pl.Series | None,
    name: str = "panel",
    reserve: int = 0,
) -> _PanelArrays:
    """Validate a panel (see :meth:`MarketData.from_frame`) and turn it into sorted arrays.

    ``source``: the frame, or a one-element list holding it, which is then emptied so the
    columns can be released one by one while they are copied (lower peak memory).
    ``universe``: sorted unique symbol names giving the ids; ``None`` → the panel's own symbols;
    a symbol outside ``universe`` raises ``ValueError`` naming it. ``reserve``: the row arrays
    (``sym_id``, prices, columns) get ``reserve`` uninitialised leading rows before the panel's
    rows; ``timestamps``/``offsets`` describe the panel's rows only (``offsets[0] == 0``).
    The two steps, :func:`_panel_frame` then :func:`_panel_columns`.
    """
    return _panel_columns(
        _panel_frame(source, signal_columns, indicator_columns, universe, name), reserve
    )


class _PanelFrame:
    """A validated panel whose row arrays are not filled yet (:func:`_panel_frame`): the
    symbol names, the timestamps and their row offsets, each row's symbol id and the sort
    order, and the frame of the float columns (taken out by :func:`_panel_columns`)."""

    __slots__ = ("symbols", "timestamps", "offsets", "ids", "order", "frame", "columns")

    def __init__(
        self,
        symbols: npt.NDArray[np.str_],
        timestamps: IntArray,
        offsets: IntArray,
        ids: IntArray,
        order: IntArray | None,
        frame: pl.DataFrame,
        columns: list[str],
    ) -> None:
        self.symbols = symbols
        self.timestamps = timestamps
        self.offsets = offsets
        self.ids = ids  # symbol id per row, in (timestamp, id) order
        self.order = order  # the frame's rows in that order (None: already in it)
        self.frame = frame
        self.columns = columns  # the named float columns after the prices


def _panel_frame(
    source: pl.DataFrame | list[pl.DataFrame],
    signal_columns: list[str],
    indicator_columns: list[str],
    universe: pl.Series | None,
    name: str = "panel",
) -> _PanelFrame:
    """Step 1 of :func:`_panel_arrays`: every check of the panel, the symbol ids, the
    timestamps and the sort order; the float columns stay in the frame (no row array of the
    panel's size is made but the ids)."""
    panel = source.pop() if isinstance(source, list) else source
    if not isinstance(panel, pl.DataFrame):
        raise ValueError(f"{name} must be a polars DataFrame, got {type(panel).__name__}")
    if panel.height == 0:
        raise ValueError(f"{name} is empty: the engine needs at least one bar")
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
        raise ValueError(f"{name} is missing columns {missing}; it has {panel.columns}")
    panel = check_timestamp(panel, name)
    quotes = [c for c in QUOTE_COLUMNS if c in panel.columns]
    extra = [*signal_columns, *indicator_columns, *quotes]
    frame = panel.select(
        pl.col("timestamp"),
        pl.col("symbol").cast(pl.String),
        *[_float_column(panel, c, name) for c in PRICE_COLUMNS],
        *[_float_column(panel, c, name) for c in extra],
    )
    del panel  # when the caller handed the frame over, its columns now live only in `frame`
    null_symbol = frame.filter(pl.col("symbol").is_null())
    if null_symbol.height:
        raise ValueError(
            f"{name} has {null_symbol.height} rows with a null symbol, e.g. "
            f"{_first_rows(null_symbol, ['timestamp'])}"
        )
    symbols_sorted = frame.get_column("symbol").unique().sort() if universe is None else universe
    symbols = np.asarray(symbols_sorted.to_list(), dtype=np.str_)
    # id = position in the sorted names: the physical code of an Enum over them (a name
    # outside them becomes null); made before the compiled checks below, which in a fresh
    # process wait for numba's start (a read-ahead thread then has this done meanwhile)
    ids = frame.select(
        pl.col("symbol").cast(pl.Enum(symbols_sorted), strict=False).to_physical()
    ).to_series()
    if not _prices_finite(frame):
        bad = frame.filter(
            pl.any_horizontal([pl.col(c).is_null() | ~pl.col(c).is_finite() for c in PRICE_COLUMNS])
        )
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
            f"{name} has {bad.height} rows with null or non-finite open/high/low/close/volume "
            f"(filter or repair them before the engine): {_first_rows(detail, detail.columns)}"
        )
    if universe is not None and ids.null_count():
        unknown = frame.filter(ids.is_null()).get_column("symbol").unique().sort()
        raise ValueError(
            f"{name} has {ids.null_count()} rows of {unknown.len()} symbols outside the symbol "
            f"universe: {unknown.head(_MAX_LISTED).to_list()}"
        )
    sid: IntArray = ids.to_numpy().astype(np.int64)
    del ids
    ts_all = np.ascontiguousarray(
        frame.get_column("timestamp").dt.epoch("us").to_numpy(), dtype=np.int64
    )
    frame = frame.drop("timestamp", "symbol")
    # sorted by (timestamp, symbol) and free of duplicate keys <=> strictly increasing pairs;
    # checked on the arrays (no hash table), sorting only when needed
    order: IntArray | None = None
    if not _strictly_increasing(ts_all, sid):
        order = np.lexsort((sid, ts_all))
        ts_all = ts_all[order]
        sid = sid[order]
        dup = np.flatnonzero((np.diff(ts_all) == 0) & (np.diff(sid) == 0)) + 1
        if dup.size:
            keys = pl.DataFrame(
                {
                    "timestamp": pl.Series(ts_all[dup]).cast(pl.Datetime("us", "UTC")),
                    "symbol": symbols[sid[dup]].tolist(),
                }
            ).unique(maintain_order=True)
            raise ValueError(
                f"{name} has {keys.height} duplicate (timestamp, symbol) keys: "
                f"{_first_rows(keys, ['timestamp', 'symbol'])}"
            )
    offsets, timestamps = data_kernels.group_offsets(ts_all)  # the panel is not empty
    del ts_all
    return _PanelFrame(symbols, timestamps, offsets, sid, order, frame, extra)


Allocate = Callable[[int, type], npt.NDArray[Any]]
"""``alloc(n, dtype)``: an uninitialised one-dimensional array of ``n`` values of ``dtype``
(``np.empty`` or a buffer handed on, :meth:`engine.chunked.ChunkStream.release`)."""


def _empty(n: int, dtype: type) -> npt.NDArray[Any]:
    return np.empty(n, dtype=dtype)


def _panel_columns(panel: _PanelFrame, reserve: int = 0, alloc: Allocate = _empty) -> _PanelArrays:
    """Step 2 of :func:`_panel_arrays`: the row arrays (``reserve`` free leading rows, then
    the panel's rows in order; made by ``alloc``), each float column copied out of the frame
    and released from it as it goes (the frame is taken out of ``panel``)."""
    frame = panel.frame
    panel.frame = pl.DataFrame()  # the columns are released as they are copied
    order = panel.order
    n = panel.ids.size
    sym_id: IntArray = alloc(reserve + n, np.int64)
    sym_id[reserve:] = panel.ids

    def column(col: str) -> FloatArray:
        """Copy ``col`` (null/NaN → NaN) into its array, then release it from the frame."""
        nonlocal frame
        out: FloatArray = alloc(reserve + n, np.float64)
        series = frame.get_column(col)
        if order is None:
            # chunk by chunk: each chunk's view is copied once (to_numpy of a chunked series
            # would first concatenate the chunks into another copy); nulls come out as NaN
            pos = reserve
            for chunk in series.get_chunks():
                values = chunk.to_numpy()
                out[pos : pos + values.size] = values
                pos += values.size
        else:
            np.take(series.to_numpy(), order, out=out[reserve:])
        del series
        frame = frame.drop(col)
        return out

    prices = {c: column(c) for c in PRICE_COLUMNS}
    columns = {c: column(c) for c in panel.columns}
    return _PanelArrays(panel.symbols, panel.timestamps, panel.offsets, sym_id, prices, columns)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _bound_us(value: date | datetime, *, end: bool) -> int:
    """A window bound as µs since the epoch (UTC), inclusive.

    A ``datetime`` must be timezone-aware and is taken as it is. A ``date`` stands for its
    whole UTC calendar day: a start is the day's first instant, an end its last microsecond.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"window bound {value!r} has no timezone: give a tz-aware datetime (bar closes "
                "are UTC) or a date"
            )
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time(0), tzinfo=UTC)
        if end:
            moment += timedelta(days=1) - timedelta(microseconds=1)
    else:
        raise ValueError(
            f"window bound must be a date or a tz-aware datetime, got {type(value).__name__}"
        )
    return (moment - _EPOCH) // timedelta(microseconds=1)


def window_bounds(start: date | datetime | None, end: date | datetime | None) -> tuple[int, int]:
    """``(first, last)`` µs since the epoch (UTC), both inclusive, of a backtest window
    (``None``: unbounded on that side). See :meth:`MarketData.between`.

    Raises
    ------
    ValueError
        A bound that is not a date or a tz-aware datetime; ``start`` after ``end``.
    """
    first = _bound_us(start, end=False) if start is not None else np.iinfo(np.int64).min
    last = _bound_us(end, end=True) if end is not None else np.iinfo(np.int64).max
    if first > last:
        raise ValueError(f"the window's start {start} is after its end {end}")
    return int(first), int(last)
