"""``DataPreparer``: the seeds' fluent data preparation for notebooks, with the pipeline's rules.

``DataPreparer(prices).add_signals(...).add_features(...).add_context(...).validate(...)``
builds the same engine input the Dagster assets build (``prices`` → ``features``,
``market_context``, ``signals`` → ``market_panel`` → ``engine.MarketData``) by calling **the
same functions** the assets call: loading and stamping from :mod:`ml4t_pipeline.lib.io`,
signal availability and look-ahead checks from :mod:`ml4t_pipeline.lib.timing`, row rules from
:mod:`ml4t_pipeline.lib.schemas`, the as-of joins from :mod:`ml4t_pipeline.lib.panel` and
:mod:`ml4t_pipeline.lib.context`, indicators from :mod:`ml4t_pipeline.lib.features`. Nothing is
dropped, filled or shifted silently: a table that breaks a rule raises
:class:`DataValidationError` naming the rows (``row_index``, key, rule).

Timing rules (as in ``ml4t run``):

- prices: ``timestamp`` marks the bar's **close**, UTC. Naive dates (or ``pl.Date``) are daily
  bars, stamped 16:00 New York; intraday bar-start stamps need ``bar_length``.
- signals: each row becomes usable at its ``available_at`` (given by rule with
  ``available_at="market_close" | "market_open" | "next_day"``, or read from the frame's
  ``available_at`` column with ``available_at="available_at"``) and is visible from the first
  bar of its symbol whose close is at or after it.
- context: each row's ``timestamp`` is when its values became known (CBOE's VIX: 16:15 New
  York, so a day's VIX is first seen on the next daily bar); joined backward, never forward.

The seeds' form (002 TASK-DA-012) works too: ``DataPreparer()`` with no prices, then
``add_prices(path, freq=...)``, ``add_signals(path, valid_from=...)``,
``add_indicators(["rsi:14", "macd", "atr:14"])``, ``add_context([source, ...])`` and
``validate_and_save(asset_output=..., context_output=...)``
(docs/reference/seeds-compatibility.md).

Example
-------
>>> import polars as pl
>>> from ml4t_pipeline import DataPreparer
>>> from ml4t_pipeline.lib.io import load_demo_prices
>>> prices = load_demo_prices().filter(pl.col("symbol").is_in(["AAPL", "MSFT"]))
>>> scores = prices.select("timestamp", "symbol", (pl.col("close").pct_change().over("symbol")
...     .fill_null(0.0)).alias("score"))
>>> data = (DataPreparer(prices).add_signals(scores, available_at="market_close")
...         .add_features().validate(level="standard").to_market_data())
>>> data.n_symbols, data.signal_columns
(2, ['score'])
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pandera.errors
import polars as pl

import engine
from ml4t_pipeline.lib import context as context_lib
from ml4t_pipeline.lib import features as features_lib
from ml4t_pipeline.lib import io as io_lib
from ml4t_pipeline.lib import panel as panel_lib
from ml4t_pipeline.lib import schemas, timing

__all__ = ["DataPreparer", "DataValidationError"]

MAX_LISTED_ROWS = 10
"""Offending rows quoted in a :class:`DataValidationError` message."""

_NON_VALUE = frozenset({"timestamp", "symbol", "available_at", "model_trained_at"})

Source = pl.DataFrame | str | Path


class DataValidationError(ValueError):
    """A table breaks a validation or timing rule; the message names the offending rows.

    Attributes
    ----------
    table : str
        ``prices``, ``signals``, ``features``, ``context`` or ``market_panel``.
    violations : pl.DataFrame
        One row per (row, rule): ``row_index`` (position in the table as given to the
        preparer, or in the panel), the key columns and ``rule``.
    """

    def __init__(self, table: str, violations: pl.DataFrame, detail: str = "") -> None:
        self.table = table
        self.violations = violations
        shown = violations.head(MAX_LISTED_ROWS).to_dicts()
        more = violations.height - len(shown)
        text = f"{table}: {violations.height} rule violation(s){detail}; offending rows: {shown}"
        if more > 0:
            text += f" ... and {more} more"
        super().__init__(text)


def _value_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c, t in frame.schema.items() if c not in _NON_VALUE and t.is_numeric()]


def _raise_if_invalid(table: str, report: schemas.TableValidation) -> None:
    if not report.ok:
        broken = {k: v for k, v in report.summary.items() if v}
        raise DataValidationError(table, report.violations, f" (rows per rule: {broken})")


class DataPreparer:
    """Fluent preparation of one backtest's inputs (prices, signals, features, context).

    Parameters
    ----------
    prices : pl.DataFrame, str or Path
        A frame with ``timestamp``, ``symbol``, ``open``, ``high``, ``low``, ``close``,
        ``volume``; a Parquet/CSV path (read with :func:`~ml4t_pipeline.lib.io.load_prices_file`);
        or ``"demo"`` (bokeh-sampledata's daily stocks,
        :func:`~ml4t_pipeline.lib.io.load_demo_prices`). A frame with naive/``Date``
        timestamps (daily dates) or with ``bar_length`` (intraday bar starts) is brought into
        the contract by :func:`~ml4t_pipeline.lib.io.to_prices_contract`; a frame whose
        ``timestamp`` is already ``Datetime(time_zone="UTC")`` is taken as in the contract
        (bar close) and checked by the schema.
    bar_length : str or timedelta, optional
        For intraday bar-start stamps: the bar length (``"1m"``, ``"1h"``).
    symbols : sequence of str, optional
        Restrict the universe (like ``data.symbols`` in a config).

    Raises
    ------
    ValueError
        Missing columns, null keys, rows going back in time, a timezone that is neither UTC
        (bar close) nor declared as bar start with ``bar_length``; the rows are named.
    """

    def __init__(
        self,
        prices: Source | None = None,
        *,
        bar_length: str | timedelta | None = None,
        symbols: Sequence[str] | None = None,
    ) -> None:
        self._prices: pl.DataFrame | None = None
        if prices is not None:
            self.add_prices(prices, bar_length=bar_length, symbols=symbols)
        elif bar_length is not None or symbols is not None:
            raise ValueError("bar_length and symbols go with the prices (add_prices)")
        self._signals_raw: pl.DataFrame | None = None
        self._signal_timing = "market_close"
        self._features_spec: pl.DataFrame | Literal["computed"] | None = None
        self._indicators: list[str] | None = None
        self._context_spec: pl.DataFrame | Literal["market"] | None = None
        self._context_sources: list[pl.DataFrame | Literal["market"]] | None = None
        self._context_required: list[str] = []
        self._prepared: dict[str, pl.DataFrame] | None = None
        self.level: str | None = None
        self.stale_signals: pl.DataFrame | None = None
        """Under ``paranoid`` with ``max_signal_age_bars``: the stale signal uses (warned)."""

    # ----------------------------------------------------------------------------- inputs
    @property
    def _prices_raw(self) -> pl.DataFrame:
        if self._prices is None:
            raise ValueError("no prices: give them to DataPreparer(prices) or add_prices()")
        return self._prices

    def add_prices(
        self,
        prices: Source,
        *,
        freq: str | None = None,
        bar_length: str | timedelta | None = None,
        symbols: Sequence[str] | None = None,
    ) -> DataPreparer:
        """Set the prices (the seeds' ``add_prices``; same as ``DataPreparer(prices)``).

        Parameters
        ----------
        prices : pl.DataFrame, str or Path
            As the constructor's ``prices``.
        freq : str, optional
            The seeds' name for the bar length: ``"1day"`` / ``"1d"`` for daily bars (dates,
            stamped at the 16:00 New York close), an intraday length (``"1min"``, ``"5min"``,
            ``"1h"``) for files whose UTC timestamps mark the bar start, as ``bar_length``.
        bar_length, symbols
            As the constructor's.

        Returns
        -------
        DataPreparer
            ``self``, for chaining.

        Raises
        ------
        ValueError
            ``freq`` and ``bar_length`` both given, an unreadable ``freq``, or the
            constructor's errors.
        """
        if freq is not None:
            if bar_length is not None:
                raise ValueError("give freq or bar_length (freq is its seeds' name), not both")
            bar_length = _bar_length_of(freq)
        frame = self._load_prices(prices, bar_length)
        if symbols is not None:
            wanted = list(symbols)
            unknown = sorted(set(wanted) - set(frame["symbol"].unique().to_list()))
            if unknown:
                raise ValueError(f"symbols not in the prices: {unknown}")
            frame = frame.filter(pl.col("symbol").is_in(wanted))
        self._prices = frame
        self._prepared = None
        return self

    @staticmethod
    def _load_prices(prices: Source, bar_length: str | timedelta | None) -> pl.DataFrame:
        if isinstance(prices, str | Path):
            if str(prices) == "demo":
                return io_lib.load_demo_prices()
            return io_lib.load_prices_file(prices, bar_length=bar_length)
        if not isinstance(prices, pl.DataFrame):
            raise TypeError(f"prices must be a polars DataFrame or a path, got {type(prices)}")
        dtype = prices.schema.get("timestamp")
        in_contract = isinstance(dtype, pl.Datetime) and dtype.time_zone == "UTC"
        if in_contract and bar_length is None:
            keep = [c for c in (*io_lib.PRICE_COLUMNS, "bid", "ask") if c in prices.columns]
            return prices.select(keep)
        non_utc = isinstance(dtype, pl.Datetime) and dtype.time_zone not in (None, "UTC")
        if non_utc and bar_length is None:
            raise ValueError(
                f"prices: timestamp is {dtype}; bar-close stamps must be UTC (convert them "
                "with .dt.convert_time_zone('UTC')), bar-start stamps need bar_length"
            )
        return io_lib.to_prices_contract(prices, bar_length, source="prices frame")

    def add_signals(
        self,
        signals: Source,
        *,
        available_at: str | None = None,
        columns: Sequence[str] | None = None,
        valid_from: str | None = None,
        freq: str | None = None,
    ) -> DataPreparer:
        """Add model scores: ``timestamp`` (UTC bar close), ``symbol``, Float64 score columns.

        Parameters
        ----------
        signals : pl.DataFrame, str or Path
            The scores (a path is read with :func:`~ml4t_pipeline.lib.io.read_table`).
        available_at : {"market_close", "market_open", "next_day", "available_at"}
            When a row becomes usable (:func:`ml4t_pipeline.lib.timing.signal_available_at`,
            the same rule as ``data.signal_available_at``). ``"available_at"`` reads the
            frame's own ``available_at`` column.
        columns : sequence of str, optional
            Score columns to use (default: every numeric column).
        valid_from : str, optional
            The seeds' name of ``available_at`` (give one of the two; default
            ``"market_close"``).
        freq : str, optional
            The seeds' signal frequency (``"1day"``). Checked as a bar length and otherwise
            not needed: each row is used from its ``available_at`` on by the as-of join, at
            any price frequency.

        Returns
        -------
        DataPreparer
            ``self``, for chaining.
        """
        if valid_from is not None:
            if available_at is not None:
                raise ValueError("give available_at or valid_from (its seeds' name), not both")
            available_at = valid_from
        if available_at is None:
            available_at = "market_close"
        if freq is not None:
            _bar_length_of(freq)
        if available_at not in timing.SIGNAL_TIMING_MODES:
            raise ValueError(
                f"available_at={available_at!r}; expected one of {timing.SIGNAL_TIMING_MODES}"
            )
        frame = io_lib.read_table(signals) if isinstance(signals, str | Path) else signals
        if columns is not None:
            keep = ["timestamp", "symbol", *columns]
            if "available_at" in frame.columns:
                keep.append("available_at")
            missing = [c for c in keep if c not in frame.columns]
            if missing:
                raise ValueError(f"signals: columns {missing} missing (got {frame.columns})")
            frame = frame.select(keep)
        self._signals_raw = frame
        self._signal_timing = available_at
        self._prepared = None
        return self

    def add_features(self, features: Source | None = None) -> DataPreparer:
        """Add indicator columns: computed from the prices (default) or a user's table.

        Parameters
        ----------
        features : pl.DataFrame, str or Path, optional
            ``None``: :func:`ml4t_pipeline.lib.features.compute_features` on the validated
            prices (returns, vol_20, ATR-14, RSI-14, ...; each known at its bar's close).
            Otherwise a table keyed by (``timestamp``, ``symbol``) with numeric columns,
            joined on the exact bar.

        Returns
        -------
        DataPreparer
            ``self``, for chaining.
        """
        if features is None:
            self._features_spec = "computed"
        else:
            self._features_spec = (
                io_lib.read_table(features) if isinstance(features, str | Path) else features
            )
        self._prepared = None
        return self

    def add_indicators(self, indicators: Sequence[str]) -> DataPreparer:
        """The seeds' ``add_indicators``: computed indicators, restricted to those named.

        Parameters
        ----------
        indicators : sequence of str
            ``"name:window"`` or ``"name"`` (default window), e.g. ``["rsi:14", "macd",
            "atr:14"]``, or column names of
            :data:`ml4t_pipeline.lib.features.OUTPUT_COLUMNS`. Known: ``rsi:14``, ``atr:14``,
            ``sma:20``, ``ema:20``, ``vol:20``, ``zscore:20`` (the windows
            :func:`~ml4t_pipeline.lib.features.compute_features` computes) and ``macd``
            (EMA-12 − EMA-26 of the close per symbol, currency per share; known at the bar's
            close).

        Returns
        -------
        DataPreparer
            ``self``, for chaining.

        Raises
        ------
        ValueError
            An indicator or window that is not computed here; the message lists those that are.
        """
        self._indicators = [_indicator_column(spec) for spec in indicators]
        self._features_spec = "computed"
        self._prepared = None
        return self

    def add_context(
        self,
        context: Source | Sequence[Source] = "market",
        *,
        vix: bool = False,
        required: Sequence[str] | None = None,
    ) -> DataPreparer:
        """Add market-wide values, stored once per timestamp and joined as of each bar's close.

        Parameters
        ----------
        context : pl.DataFrame, str or Path, or a list of them, default "market"
            ``"market"``: the equal-weight market return and its 20-bar volatility from the
            prices (:func:`ml4t_pipeline.lib.context.market_context_from_prices`). A frame:
            ``timestamp`` (UTC, **when the values became known**) plus numeric columns, e.g.
            :func:`ml4t_pipeline.lib.io.load_vix`'s output. A path: read with
            :func:`~ml4t_pipeline.lib.io.load_vix` when ``vix=True`` or when the file holds
            CBOE's VIX (``symbol`` VIX), else :func:`~ml4t_pipeline.lib.io.read_table`. A list
            (the seeds' form) combines several: each value is carried forward from its own
            timestamp, then joined as of each bar's close. Nothing is downloaded: a ticker such
            as ``"^GSPC"`` that is not a file is refused (``"market"`` is the prices' own
            equal-weight market).
        vix : bool
            The path is CBOE's daily VIX file (stamped at its 16:15 New York close).
        required : sequence of str, optional
            Columns that must not be null at any bar (default: every value column of a given
            table; none for ``"market"``, whose windows have warm-up nulls).

        Returns
        -------
        DataPreparer
            ``self``, for chaining.
        """
        self._context_sources = None
        if isinstance(context, list | tuple):
            sources = [self._context_source(c, vix) for c in context]
            if not sources:
                raise ValueError("add_context: the list of sources is empty")
            self._context_sources = sources
            frames = [f for f in sources if isinstance(f, pl.DataFrame)]
            self._context_spec = "market" if not frames else frames[0]
            self._context_required = (
                list(required)
                if required is not None
                else [c for f in frames for c in _value_columns(f)]
            )
        elif isinstance(context, str) and context == "market":
            self._context_spec = "market"
            self._context_required = list(required or [])
        else:
            if isinstance(context, str | Path):
                frame = io_lib.load_vix(context) if vix else io_lib.read_table(context)
            else:
                frame = context
            self._context_spec = frame
            self._context_required = (
                list(required) if required is not None else _value_columns(frame)
            )
        self._prepared = None
        return self

    @staticmethod
    def _context_source(source: Source, vix: bool) -> pl.DataFrame | Literal["market"]:
        if isinstance(source, pl.DataFrame):
            return source
        if isinstance(source, str) and source == "market":
            return "market"
        path = Path(source)
        if not path.exists():
            raise ValueError(
                f"add_context: {str(source)!r} is not a file; context series are read from "
                "files, never downloaded (CBOE's VIX history: its file's path; the prices' "
                "equal-weight market return: 'market')"
            )
        if vix:
            return io_lib.load_vix(path)
        frame = io_lib.read_table(path)
        symbols = frame["symbol"].unique().to_list() if "symbol" in frame.columns else []
        return io_lib.load_vix(path) if symbols == ["VIX"] else frame

    # ----------------------------------------------------------------------------- validation
    def validate(
        self,
        level: Literal["fast", "standard", "paranoid"] = "standard",
        *,
        invalid_rows: Literal["fail", "quarantine"] = "fail",
        max_fill_bars: int | None = None,
        max_signal_age_bars: int | None = None,
    ) -> DataPreparer:
        """Prepare and check every table, in the assets' order, with the assets' functions.

        Steps: prices (:func:`~ml4t_pipeline.lib.schemas.validate_prices`, every row, or a
        sample under ``fast``); features (:func:`~ml4t_pipeline.lib.schemas.validate_features`);
        context (as-of join, :func:`~ml4t_pipeline.lib.schemas.validate_context`); signals
        (:func:`~ml4t_pipeline.lib.timing.signal_available_at`,
        :func:`~ml4t_pipeline.lib.schemas.validate_signals`); the panel
        (:func:`~ml4t_pipeline.lib.panel.build_market_panel`, then
        :func:`~ml4t_pipeline.lib.timing.check_no_lookahead`); under ``paranoid`` with
        ``max_signal_age_bars``, :func:`~ml4t_pipeline.lib.timing.stale_signal_uses` (reported
        in :attr:`stale_signals` and as a warning, like the ``signals_not_stale`` check).

        Parameters
        ----------
        level : {"fast", "standard", "paranoid"}
            The seeds' validation levels, as ``data.validation``.
        invalid_rows : {"fail", "quarantine"}
            Invalid price rows raise (``fail``) or are set aside in :attr:`quarantine`.
        max_fill_bars : int, optional
            Bars a signal may be carried forward (``data.max_fill_bars``).
        max_signal_age_bars : int, optional
            Under ``paranoid``: the oldest signal, in its symbol's bars, used without a warning.

        Returns
        -------
        DataPreparer
            ``self``, for chaining.

        Raises
        ------
        DataValidationError
            A table breaks a rule; the message names the rows (``row_index``, key, rule).
        """
        if level not in schemas.VALIDATION_LEVELS:
            raise ValueError(f"level={level!r}; expected one of {schemas.VALIDATION_LEVELS}")
        if invalid_rows not in ("fail", "quarantine"):
            raise ValueError(f"invalid_rows={invalid_rows!r}; expected 'fail' or 'quarantine'")
        raw = self._prices_raw
        try:
            report = schemas.validate_prices(raw, level="fast" if level == "fast" else "standard")
        except pandera.errors.SchemaErrors as exc:
            cases = pl.from_pandas(exc.failure_cases.astype(str))
            raise DataValidationError("prices", cases, " (columns or dtypes)") from exc
        if invalid_rows == "fail":
            _raise_if_invalid("prices", report)
            prices = raw
        else:
            prices = report.drop_invalid(raw)
        quarantine = report.invalid
        known = prices["symbol"].unique()

        if self._features_spec is None:
            features = prices.select("timestamp", "symbol")
        else:
            features = (
                features_lib.compute_features(prices)
                if isinstance(self._features_spec, str)
                else self._features_spec
            )
            if self._indicators is not None:
                features = _select_indicators(features, prices, self._indicators)
            _raise_if_invalid("features", schemas.validate_features(features, known))

        context: pl.DataFrame | None = None
        if self._context_sources is not None:
            bars = prices.select("timestamp").unique().sort("timestamp")
            merged = _merge_context(
                [
                    context_lib.market_context_from_prices(prices) if isinstance(c, str) else c
                    for c in self._context_sources
                ]
            )
            context = context_lib.join_context_asof(bars, merged)
        elif isinstance(self._context_spec, str):
            context = context_lib.market_context_from_prices(prices)
        elif self._context_spec is not None:
            bars = prices.select("timestamp").unique().sort("timestamp")
            context = context_lib.join_context_asof(bars, self._context_spec)
        if context is not None:
            _raise_if_invalid("context", schemas.validate_context(context, self._context_required))

        signals: pl.DataFrame | None = None
        if self._signals_raw is not None:
            signals = timing.signal_available_at(self._signals_raw, self._signal_timing)
            _raise_if_invalid("signals", schemas.validate_signals(signals, known))

        if signals is None:
            panel = panel_lib.build_market_panel(
                prices, features, _no_signals(prices), keep_status=True
            ).drop("signal_timestamp", "signal_available_at", panel_lib.SIGNAL_STATUS)
        else:
            panel = panel_lib.build_market_panel(
                prices, features, signals, max_fill_bars=max_fill_bars, keep_status=True
            )
            used = panel.filter(pl.col("signal_available_at").is_not_null()).select(
                "timestamp", "symbol", pl.col("signal_available_at").alias("available_at")
            )
            early = timing.check_no_lookahead(used)
            if early.height:
                raise DataValidationError(
                    "market_panel", early.with_columns(rule=pl.lit("signal_available_before_use"))
                )
            self.stale_signals = None
            if level == "paranoid" and max_signal_age_bars is not None:
                stale = timing.stale_signal_uses(panel, max_signal_age_bars)
                self.stale_signals = stale
                if stale.height:
                    shown = stale.select("row_index", "timestamp", "symbol", "signal_age_bars")
                    warnings.warn(
                        f"market_panel: {stale.height} bars use a signal older than "
                        f"{max_signal_age_bars} bars: {shown.head(MAX_LISTED_ROWS).to_dicts()}",
                        UserWarning,
                        stacklevel=2,
                    )
            panel = panel.drop(panel_lib.SIGNAL_STATUS)
        self._prepared = {
            "prices": prices,
            "quarantine": quarantine,
            "features": features,
            "panel": panel,
        }
        if signals is not None:
            self._prepared["signals"] = signals
        if context is not None:
            self._prepared["context"] = context
        self.level = level
        return self

    # ----------------------------------------------------------------------------- outputs
    def _get(self) -> dict[str, pl.DataFrame]:
        if self._prepared is None:
            self.validate()
        assert self._prepared is not None
        return self._prepared

    @property
    def prices(self) -> pl.DataFrame:
        """Validated prices (without quarantined rows)."""
        return self._get()["prices"]

    @property
    def quarantine(self) -> pl.DataFrame:
        """Invalid price rows with ``row_index`` and ``reason`` (empty unless quarantined)."""
        return self._get()["quarantine"]

    @property
    def signals(self) -> pl.DataFrame | None:
        """Signals with ``available_at`` set (None when none were added)."""
        return self._get().get("signals")

    @property
    def context(self) -> pl.DataFrame | None:
        """Context joined to the bar timestamps, with ``context_timestamp`` and status."""
        return self._get().get("context")

    @property
    def signal_columns(self) -> list[str]:
        """The score columns the engine sees as signals."""
        signals = self.signals
        return [] if signals is None else _value_columns(signals)

    @property
    def indicator_columns(self) -> list[str]:
        """The feature columns the engine sees as indicators."""
        return _value_columns(self._get()["features"])

    def to_panel(self) -> pl.DataFrame:
        """The market panel: prices × features × signals per (timestamp, symbol).

        Validates at the ``standard`` level first if :meth:`validate` was not called.
        """
        return self._get()["panel"]

    def to_market_data(self) -> engine.MarketData:
        """The engine's input, as the ``backtest`` asset builds it.

        Validates at the ``standard`` level first if :meth:`validate` was not called.

        Returns
        -------
        engine.MarketData
            Signals = the score columns, indicators = the feature columns, context = the
            context's numeric columns (aligned to the bars by the as-of join).
        """
        prepared = self._get()
        context = prepared.get("context")
        return engine.MarketData.from_frame(
            prepared["panel"],
            signal_columns=self.signal_columns,
            indicator_columns=self.indicator_columns,
            context=context,
            context_columns=None if context is None else _value_columns(context),
        )

    def validate_and_save(
        self,
        asset_output: str | Path,
        context_output: str | Path | None = None,
        *,
        level: Literal["fast", "standard", "paranoid"] = "standard",
    ) -> DataPreparer:
        """The seeds' last step: :meth:`validate`, then write the tables as zstd Parquet.

        Parameters
        ----------
        asset_output : str or Path
            The market panel (:meth:`to_panel`: prices, indicators and signals per
            ``timestamp``, ``symbol``).
        context_output : str or Path, optional
            The context joined to the bar timestamps (:attr:`context`); required when a
            context was added, refused otherwise.
        level : {"fast", "standard", "paranoid"}

        Returns
        -------
        DataPreparer
            ``self``.

        Raises
        ------
        DataValidationError
            As :meth:`validate` (nothing is written).
        ValueError
            ``context_output`` missing with a context, or given without one.
        """
        self.validate(level)
        context = self.context
        if (context is None) != (context_output is None):
            raise ValueError(
                "context_output goes with add_context(): "
                + ("no context was added" if context is None else "give a path for the context")
            )
        _write_parquet(self.to_panel(), Path(asset_output))
        if context is not None and context_output is not None:
            _write_parquet(context, Path(context_output))
        return self

    def __repr__(self) -> str:
        if self._prices is None:
            return "DataPreparer(no prices yet)"
        parts = [f"prices={self._prices_raw.height} rows"]
        if self._signals_raw is not None:
            parts.append(f"signals={self._signals_raw.height} rows ({self._signal_timing})")
        if self._features_spec is not None:
            parts.append(
                "features=computed" if isinstance(self._features_spec, str) else "features"
            )
        if self._context_spec is not None:
            parts.append("context=market" if isinstance(self._context_spec, str) else "context")
        state = f"validated at {self.level}" if self._prepared is not None else "not validated"
        return f"DataPreparer({', '.join(parts)}; {state})"


def _no_signals(prices: pl.DataFrame) -> pl.DataFrame:
    # An empty signals table, so the panel is built by the same function with or without scores.
    return pl.DataFrame(
        schema={
            "timestamp": timing.UTC_DATETIME,
            "symbol": prices.schema["symbol"],
            "available_at": timing.UTC_DATETIME,
        }
    )


_FREQ_UNITS = {"min": "m", "m": "m", "h": "h", "hour": "h", "s": "s"}
_DAILY = ("1d", "1day", "d", "day", "daily")

_INDICATORS: dict[str, tuple[int | None, str]] = {
    "rsi": (features_lib.RSI_WINDOW, "rsi_14"),
    "atr": (features_lib.ATR_WINDOW, "atr_14"),
    "sma": (features_lib.MA_WINDOW, "sma_20"),
    "ema": (features_lib.MA_WINDOW, "ema_20"),
    "vol": (features_lib.MA_WINDOW, "vol_20"),
    "zscore": (features_lib.MA_WINDOW, "zscore_20"),
    "macd": (None, "macd"),
}
"""The seeds' indicator names → (the one window computed, the column)."""


def _bar_length_of(freq: str) -> str | None:
    """The seeds' ``freq`` as a ``bar_length`` (None for daily bars)."""
    text = freq.strip().lower()
    if text in _DAILY:
        return None
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = _FREQ_UNITS.get(text[len(digits) :])
    if not digits.isdigit() or unit is None:
        raise ValueError(
            f"freq={freq!r}; expected '1day' (daily) or an intraday bar length such as "
            "'1min', '5min', '1h'"
        )
    return f"{int(digits)}{unit}"


def _indicator_column(spec: str) -> str:
    if spec in features_lib.OUTPUT_COLUMNS[2:]:
        return spec
    name, _, window = spec.partition(":")
    known = ", ".join(f"{k}:{w}" if w is not None else k for k, (w, _) in _INDICATORS.items())
    entry = _INDICATORS.get(name.strip().lower())
    if entry is None or (window and (entry[0] is None or window.strip() != str(entry[0]))):
        raise ValueError(
            f"indicator {spec!r} is not computed here; available: {known} (or a column of "
            "ml4t_pipeline.lib.features.OUTPUT_COLUMNS; a table of your own: add_features)"
        )
    return entry[1]


def _select_indicators(
    features: pl.DataFrame, prices: pl.DataFrame, wanted: Sequence[str]
) -> pl.DataFrame:
    if "macd" in wanted:
        close = pl.col("close")
        macd = prices.sort("symbol", "timestamp").select(
            "timestamp",
            "symbol",
            (
                close.ewm_mean(span=12, adjust=False).over("symbol")
                - close.ewm_mean(span=26, adjust=False).over("symbol")
            ).alias("macd"),
        )
        features = features.join(macd, on=["timestamp", "symbol"], how="left")
    return features.select("timestamp", "symbol", *dict.fromkeys(wanted))


def _merge_context(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Several context tables as one: each column carried forward from its own timestamps."""
    out = frames[0].select("timestamp", *_value_columns(frames[0]))
    for frame in frames[1:]:
        right = frame.select("timestamp", *_value_columns(frame))
        clash = set(_value_columns(out)) & set(_value_columns(right))
        if clash:
            raise ValueError(f"add_context: columns {sorted(clash)} come from two sources")
        out = out.join(right, on="timestamp", how="full", coalesce=True)
    out = out.sort("timestamp")
    return out.with_columns(pl.exclude("timestamp").forward_fill())


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    # write beside the target, then rename: a reader never sees a half-written file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_parquet(tmp, compression="zstd")
    tmp.replace(path)
