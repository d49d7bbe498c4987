"""Feature providers: per-symbol and market-wide model inputs at a bar, looked up by the engine.

The seeds' interface: a strategy or risk rule asks ``get_features(asset_id, timestamp)`` for one
symbol's indicator values at a bar and ``get_market_features(timestamp)`` for the market-wide
ones (VIX, market return, regime ...). Two implementations:

- :class:`PrecomputedFeatureProvider` holds prepared tables as NumPy arrays with a dense
  (timestamp, symbol) → row index built once, so a lookup is two dict reads and an array slice,
  never a filter over a frame. Polars is used only in :meth:`PrecomputedFeatureProvider.from_frame`.
- :class:`CallableFeatureProvider` wraps user functions (features computed on the fly).

Time: ``timestamp`` is the bar close, tz-aware UTC (a ``datetime``, a ``numpy.datetime64`` or an
``int`` of microseconds since the Unix epoch). A provider returns the values *known at* that close;
the precomputed one looks up the row stamped exactly at the timestamp, so it cannot return a
value stamped later (no look-ahead).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.panel import check_timestamp

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TimestampLike = datetime | np.datetime64 | int
"""A bar-close time: tz-aware ``datetime``, ``numpy.datetime64`` (UTC) or int µs since epoch."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_MAX_LISTED = 10


def timestamp_to_us(timestamp: TimestampLike) -> int:
    """Microseconds since the Unix epoch (UTC) of a bar-close time.

    Parameters
    ----------
    timestamp : datetime, numpy.datetime64 or int
        A tz-aware ``datetime`` (any zone), a ``numpy.datetime64`` read as UTC, or an ``int``
        already in microseconds since 1970-01-01 UTC.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        A naive ``datetime`` (its zone would be a guess) or a ``NaT``.
    TypeError
        Any other type (``bool`` included).
    """
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None or timestamp.utcoffset() is None:
            raise ValueError(
                f"timestamp {timestamp.isoformat()} is naive; pass a tz-aware UTC datetime "
                "(bar close)"
            )
        return (timestamp - _EPOCH) // _ONE_US
    if isinstance(timestamp, np.datetime64):
        if np.isnat(timestamp):
            raise ValueError("timestamp is NaT")
        return int(timestamp.astype("datetime64[us]").astype(np.int64))
    if isinstance(timestamp, int | np.integer) and not isinstance(timestamp, bool | np.bool_):
        return int(timestamp)
    raise TypeError(
        "timestamp must be a tz-aware datetime, numpy.datetime64 or int microseconds since the "
        f"epoch, got {type(timestamp).__name__}"
    )


def _us_to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class FeatureProvider(ABC):
    """Source of model inputs at a bar: per-symbol features and market-wide features.

    Contract
    --------
    - ``timestamp`` is a bar close (:data:`TimestampLike`); a provider returns only values that
      were known at that close.
    - Values are Python ``float`` (``nan`` where the value is null / warm-up); keys are column
      names, the same keys for every call of one provider (``feature_names`` /
      ``market_feature_names`` where the provider knows them).
    - The returned dict is a new object the caller may keep or modify.
    """

    @abstractmethod
    def get_features(self, asset_id: str, timestamp: TimestampLike) -> dict[str, float]:
        """Per-symbol features of ``asset_id`` (a symbol) at the bar closing at ``timestamp``."""

    @abstractmethod
    def get_market_features(self, timestamp: TimestampLike) -> dict[str, float]:
        """Market-wide features at the bar closing at ``timestamp``."""

    def get_feature_matrix(
        self, timestamp: TimestampLike, asset_ids: Sequence[str], columns: Sequence[str]
    ) -> FloatArray:
        """Features of many symbols at one bar as an array, for batch strategies.

        Parameters
        ----------
        timestamp : TimestampLike
            Bar close.
        asset_ids : sequence of str
            Symbols, one output row each.
        columns : sequence of str
            Feature names, one output column each.

        Returns
        -------
        ndarray[float64], shape (len(asset_ids), len(columns))
            ``nan`` where a value is null. This default calls :meth:`get_features` per symbol;
            :class:`PrecomputedFeatureProvider` overrides it with one fancy-indexing read.

        Raises
        ------
        KeyError
            A column the provider does not return.
        """
        out = np.full((len(asset_ids), len(columns)), np.nan, dtype=np.float64)
        for i, asset in enumerate(asset_ids):
            values = self.get_features(asset, timestamp)
            for j, column in enumerate(columns):
                if column not in values:
                    raise KeyError(
                        f"feature {column!r} not provided for {asset!r}; got {sorted(values)}"
                    )
                out[i, j] = values[column]
        return out


# --------------------------------------------------------------------------------------------
# Precomputed: NumPy arrays and a dense (timestamp, symbol) -> row index


def _value_columns(
    frame: pl.DataFrame, columns: Sequence[str] | None, keys: Sequence[str], name: str
) -> list[str]:
    if columns is None:
        chosen = [c for c, t in frame.schema.items() if c not in keys and t.is_numeric()]
    else:
        chosen = list(columns)
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"{name} columns listed twice: {chosen}")
        missing = [c for c in chosen if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} is missing columns {missing}; it has {frame.columns}")
        reserved = [c for c in chosen if c in keys]
        if reserved:
            raise ValueError(f"{name}: key columns {reserved} cannot be features")
        wrong = [f"{c} ({frame.schema[c]})" for c in chosen if not frame.schema[c].is_numeric()]
        if wrong:
            raise ValueError(f"{name} feature columns must be numeric: {wrong}")
    return chosen


def _duplicates(frame: pl.DataFrame, keys: list[str], name: str) -> None:
    if frame.select(pl.struct(keys).n_unique()).item() == frame.height:
        return
    dup = frame.filter(pl.struct(keys).is_duplicated()).select(keys).sort(keys)
    rows = dup.head(_MAX_LISTED).rows()
    raise ValueError(f"{name} has {dup.height} rows with a duplicated {tuple(keys)}: {rows}")


def _to_float_matrix(frame: pl.DataFrame, columns: list[str]) -> FloatArray:
    if not columns:
        return np.empty((frame.height, 0), dtype=np.float64)
    values = frame.select(pl.col(c).cast(pl.Float64).fill_null(np.nan) for c in columns)
    return np.ascontiguousarray(values.to_numpy(), dtype=np.float64)


class PrecomputedFeatureProvider(FeatureProvider):
    """Features looked up in precomputed tables held as NumPy arrays.

    Build it with :meth:`from_frame`. Lookups are exact: the row stamped at the asked timestamp.

    Attributes
    ----------
    feature_names : list[str]
        Per-symbol feature columns, in output order.
    market_feature_names : list[str]
        Market feature columns, in output order.
    timestamps : ndarray[int64], shape (T,)
        Distinct feature timestamps, µs since epoch, increasing.
    symbols : list[str]
        Symbol of each id (sorted).
    row_of : ndarray[int64], shape (T, S)
        Row of ``values`` for (timestamp index, symbol id), ``-1`` where the table has no row.
    values : ndarray[float64], shape (N, F)
        Feature values, ``nan`` where null.
    market_values : ndarray[float64], shape (T, M)
        Market values aligned to ``timestamps``; ``nan`` where null or where the market table has
        no row at that timestamp.
    """

    def __init__(
        self,
        *,
        timestamps: IntArray,
        symbols: Sequence[str],
        row_of: IntArray,
        values: FloatArray,
        feature_names: Sequence[str],
        market_values: FloatArray,
        market_feature_names: Sequence[str],
    ) -> None:
        n_t, n_s = timestamps.size, len(symbols)
        if row_of.shape != (n_t, n_s):
            raise ValueError(f"row_of has shape {row_of.shape}, expected {(n_t, n_s)}")
        if values.ndim != 2 or values.shape[1] != len(feature_names):
            raise ValueError(f"values has shape {values.shape}, expected (N, {len(feature_names)})")
        if market_values.shape != (n_t, len(market_feature_names)):
            raise ValueError(
                f"market_values has shape {market_values.shape}, expected "
                f"{(n_t, len(market_feature_names))}"
            )
        if n_t > 1 and not bool(np.all(np.diff(timestamps) > 0)):
            raise ValueError("timestamps must be strictly increasing")
        if row_of.size and int(row_of.max()) >= values.shape[0]:
            raise ValueError("row_of points past the end of values")
        self.timestamps = timestamps
        self.symbols = list(symbols)
        self.row_of = row_of
        self.values = values
        self.feature_names = list(feature_names)
        self.market_values = market_values
        self.market_feature_names = list(market_feature_names)
        self._time_index: dict[int, int] = {int(t): i for i, t in enumerate(timestamps.tolist())}
        self._symbol_index: dict[str, int] = {s: i for i, s in enumerate(self.symbols)}
        self._column_index: dict[str, int] = {c: i for i, c in enumerate(self.feature_names)}
        # The engine asks for many symbols at one timestamp in a row: remember the last one.
        self._last_time: object = None
        self._last_time_index = -1

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        features: pl.DataFrame,
        market: pl.DataFrame | None = None,
        columns: Sequence[str] | None = None,
        market_columns: Sequence[str] | None = None,
    ) -> PrecomputedFeatureProvider:
        """Index prepared feature tables once, for constant-time lookups.

        Parameters
        ----------
        features : pl.DataFrame
            Long format, one row per (timestamp, symbol): ``timestamp`` (``Datetime('us',
            'UTC')``, bar close; other time units are cast), ``symbol`` (String or
            Categorical/Enum) and numeric feature columns (null → ``nan``). Any row order.
        market : pl.DataFrame, optional
            ``timestamp`` plus numeric market-wide columns, at most one row per timestamp.
            Aligned to the feature timestamps by exact match (a feature timestamp without a
            market row gets ``nan``; market rows at other timestamps are not kept). Align an
            as-of join first (``lib.context.join_context_asof``) when the market table is stamped
            differently, e.g. VIX at 16:15 New York.
        columns : sequence of str, optional
            Feature columns to keep, in output order; default every numeric column except the
            keys.
        market_columns : sequence of str, optional
            Market columns to keep; default every numeric column except ``timestamp``.

        Returns
        -------
        PrecomputedFeatureProvider

        Raises
        ------
        ValueError
            Missing ``timestamp``/``symbol``; a timestamp that is not tz-aware UTC or is null; a
            null symbol; missing, duplicated or non-numeric feature columns; duplicated
            (timestamp, symbol) or market timestamps (the first offending keys are listed).
        """
        frame = check_timestamp(features, "features")
        if "symbol" not in frame.columns:
            raise ValueError(f"features has no 'symbol' column; columns are {frame.columns}")
        chosen = _value_columns(frame, columns, ("timestamp", "symbol"), "features")
        frame = frame.select(pl.col("timestamp"), pl.col("symbol").cast(pl.String), *chosen)
        null_symbols = frame.filter(pl.col("symbol").is_null()).height
        if null_symbols:
            raise ValueError(f"features.symbol has {null_symbols} null values")
        _duplicates(frame, ["timestamp", "symbol"], "features")
        frame = frame.sort("timestamp", "symbol")

        times = frame.get_column("timestamp").dt.epoch("us").to_numpy()
        symbols = frame.get_column("symbol").unique().sort()
        sym_id = (
            frame.get_column("symbol")
            .cast(pl.Enum(symbols))
            .to_physical()
            .to_numpy()
            .astype(np.int64)
        )
        unique_times, time_id = np.unique(times, return_inverse=True)
        row_of = np.full((unique_times.size, symbols.len()), -1, dtype=np.int64)
        row_of[time_id, sym_id] = np.arange(frame.height, dtype=np.int64)
        values = _to_float_matrix(frame, chosen)

        market_names: list[str] = []
        market_values = np.empty((unique_times.size, 0), dtype=np.float64)
        if market is not None:
            mframe = check_timestamp(market, "market")
            market_names = _value_columns(mframe, market_columns, ("timestamp",), "market")
            mframe = mframe.select("timestamp", *market_names)
            _duplicates(mframe, ["timestamp"], "market")
            grid = pl.DataFrame(
                {"timestamp": pl.Series(unique_times).cast(pl.Datetime("us", "UTC"))}
            )
            aligned = grid.join(mframe, on="timestamp", how="left", maintain_order="left")
            market_values = _to_float_matrix(aligned, market_names)
        elif market_columns is not None:
            raise ValueError("market_columns given without a market table")

        return cls(
            timestamps=unique_times.astype(np.int64),
            symbols=symbols.to_list(),
            row_of=row_of,
            values=values,
            feature_names=chosen,
            market_values=market_values,
            market_feature_names=market_names,
        )

    # ------------------------------------------------------------------ lookups
    def _time(self, timestamp: TimestampLike) -> int:
        if timestamp is self._last_time:
            return self._last_time_index
        us = timestamp_to_us(timestamp)
        index = self._time_index.get(us)
        if index is None:
            raise KeyError(
                f"no features at {_us_to_datetime(us).isoformat()} (timestamps run from "
                f"{self._span()})"
            )
        self._last_time, self._last_time_index = timestamp, index
        return index

    def _span(self) -> str:
        if not self.timestamps.size:
            return "nowhere: the table is empty"
        first = _us_to_datetime(int(self.timestamps[0])).isoformat()
        last = _us_to_datetime(int(self.timestamps[-1])).isoformat()
        return f"{first} to {last}"

    def _symbol(self, asset_id: str) -> int:
        sid = self._symbol_index.get(asset_id)
        if sid is None:
            raise KeyError(f"unknown symbol {asset_id!r}: not in the features table")
        return sid

    def get_features(self, asset_id: str, timestamp: TimestampLike) -> dict[str, float]:
        """Feature values of ``asset_id`` at the bar closing at ``timestamp``.

        Returns
        -------
        dict[str, float]
            ``feature_names`` → value; ``nan`` where the value is null or where the symbol has no
            row at this (known) timestamp, e.g. not yet listed.

        Raises
        ------
        KeyError
            Unknown symbol, or a timestamp not in the table (never rounded to a nearby bar).
        """
        t = self._time(timestamp)
        row = int(self.row_of[t, self._symbol(asset_id)])
        if row < 0:
            return dict.fromkeys(self.feature_names, float("nan"))
        return dict(zip(self.feature_names, self.values[row].tolist(), strict=True))

    def get_market_features(self, timestamp: TimestampLike) -> dict[str, float]:
        """Market values at the bar closing at ``timestamp`` (``{}`` without a market table).

        Raises
        ------
        KeyError
            A timestamp not in the table.
        """
        t = self._time(timestamp)
        return dict(zip(self.market_feature_names, self.market_values[t].tolist(), strict=True))

    def get_feature_matrix(
        self, timestamp: TimestampLike, asset_ids: Sequence[str], columns: Sequence[str]
    ) -> FloatArray:
        """Features of many symbols at one bar with one fancy-indexing read (no Python loop
        over values); see :meth:`FeatureProvider.get_feature_matrix`.

        Raises
        ------
        KeyError
            Unknown timestamp, symbol or column.
        """
        t = self._time(timestamp)
        sids = np.fromiter((self._symbol(a) for a in asset_ids), np.int64, len(asset_ids))
        missing = [c for c in columns if c not in self._column_index]
        if missing:
            raise KeyError(f"unknown feature columns {missing}; known: {self.feature_names}")
        cols = np.fromiter((self._column_index[c] for c in columns), np.int64, len(columns))
        rows = self.row_of[t, sids]
        out: FloatArray = self.values[np.maximum(rows, 0)[:, None], cols[None, :]]
        out[rows < 0] = np.nan
        return out

    def __repr__(self) -> str:
        return (
            f"PrecomputedFeatureProvider(rows={self.values.shape[0]}, "
            f"timestamps={self.timestamps.size}, symbols={len(self.symbols)}, "
            f"features={self.feature_names}, market_features={self.market_feature_names})"
        )


# --------------------------------------------------------------------------------------------
# Callable


FeatureFn = Callable[[str, datetime], Mapping[str, float]]
MarketFeatureFn = Callable[[datetime], Mapping[str, float]]


def _as_float_dict(values: object, what: str) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise TypeError(f"{what} must return a mapping of str to float, got {type(values)}")
    out: dict[str, float] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} returned a non-string key {key!r}")
        try:
            out[key] = float(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{what} returned a non-numeric value for {key!r}: {value!r}") from exc
    return out


class CallableFeatureProvider(FeatureProvider):
    """Features computed by user functions at each call.

    Parameters
    ----------
    fn : callable ``(asset_id: str, timestamp: datetime) -> Mapping[str, float]``
        Per-symbol features at the bar close ``timestamp`` (tz-aware UTC ``datetime``). It must
        use only information known at that close; the provider cannot check that.
    market_fn : callable ``(timestamp: datetime) -> Mapping[str, float]``, optional
        Market-wide features; without it :meth:`get_market_features` returns ``{}``.

    Raises
    ------
    TypeError
        At construction, ``fn`` or ``market_fn`` not callable; at lookup, a function returning
        something other than a mapping of str to numbers (the key is named).

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> provider = CallableFeatureProvider(lambda s, t: {"len": len(s)}, lambda t: {"vix": 15})
    >>> provider.get_features("AAPL", datetime(2024, 1, 2, 21, tzinfo=UTC))
    {'len': 4.0}
    >>> provider.get_market_features(datetime(2024, 1, 2, 21, tzinfo=UTC))
    {'vix': 15.0}
    """

    def __init__(self, fn: FeatureFn, market_fn: MarketFeatureFn | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if market_fn is not None and not callable(market_fn):
            raise TypeError(f"market_fn must be callable or None, got {type(market_fn).__name__}")
        self.fn = fn
        self.market_fn = market_fn

    @staticmethod
    def _datetime(timestamp: TimestampLike) -> datetime:
        if isinstance(timestamp, datetime):
            timestamp_to_us(timestamp)  # rejects naive datetimes
            return timestamp.astimezone(UTC)
        return _us_to_datetime(timestamp_to_us(timestamp))

    def get_features(self, asset_id: str, timestamp: TimestampLike) -> dict[str, float]:
        """``fn(asset_id, timestamp)`` as a new ``dict[str, float]``."""
        return _as_float_dict(self.fn(asset_id, self._datetime(timestamp)), "fn")

    def get_market_features(self, timestamp: TimestampLike) -> dict[str, float]:
        """``market_fn(timestamp)`` as a new ``dict[str, float]`` (``{}`` without one)."""
        if self.market_fn is None:
            return {}
        return _as_float_dict(self.market_fn(self._datetime(timestamp)), "market_fn")

    def __repr__(self) -> str:
        market = getattr(self.market_fn, "__name__", repr(self.market_fn))
        return (
            f"CallableFeatureProvider(fn={getattr(self.fn, '__name__', repr(self.fn))}, "
            f"market_fn={market})"
        )
