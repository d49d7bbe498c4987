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
        prices: Source,
        *,
        bar_length: str | timedelta | None = None,
        symbols: Sequence[str] | None = None,
    ) -> None:
        self._prices_raw = self._load_prices(prices, bar_length)
        if symbols is not None:
            wanted = list(symbols)
            unknown = sorted(set(wanted) - set(self._prices_raw["symbol"].unique().to_list()))
            if unknown:
                raise ValueError(f"symbols not in the prices: {unknown}")
            self._prices_raw = self._prices_raw.filter(pl.col("symbol").is_in(wanted))
        self._signals_raw: pl.DataFrame | None = None
        self._signal_timing = "market_close"
        self._features_spec: pl.DataFrame | Literal["computed"] | None = None
        self._context_spec: pl.DataFrame | Literal["market"] | None = None
        self._context_required: list[str] = []
        self._prepared: dict[str, pl.DataFrame] | None = None
        self.level: str | None = None
        self.stale_signals: pl.DataFrame | None = None
        """Under ``paranoid`` with ``max_signal_age_bars``: the stale signal uses (warned)."""

    # ----------------------------------------------------------------------------- inputs
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
        available_at: str = "market_close",
        columns: Sequence[str] | None = None,
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

        Returns
        -------
        DataPreparer
            ``self``, for chaining.
        """
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

    def add_context(
        self,
        context: Source = "market",
        *,
        vix: bool = False,
        required: Sequence[str] | None = None,
    ) -> DataPreparer:
        """Add market-wide values, stored once per timestamp and joined as of each bar's close.

        Parameters
        ----------
        context : pl.DataFrame, str or Path, default "market"
            ``"market"``: the equal-weight market return and its 20-bar volatility from the
            prices (:func:`ml4t_pipeline.lib.context.market_context_from_prices`). A frame:
            ``timestamp`` (UTC, **when the values became known**) plus numeric columns, e.g.
            :func:`ml4t_pipeline.lib.io.load_vix`'s output. A path: read with
            :func:`~ml4t_pipeline.lib.io.load_vix` when ``vix=True``, else
            :func:`~ml4t_pipeline.lib.io.read_table`.
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
        if isinstance(context, str) and context == "market":
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
            _raise_if_invalid("features", schemas.validate_features(features, known))

        context: pl.DataFrame | None = None
        if isinstance(self._context_spec, str):
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

    def __repr__(self) -> str:
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
