"""Experiment configuration: one YAML (or JSON) file per experiment, validated by pydantic models.

An experiment file has the sections ``data``, ``strategy``, ``risk_rules``, ``execution``,
``reporting`` (after the seeds' configuration schema) and ``backtest`` (the window traded).
Unknown keys anywhere are errors, and every error message names the offending key. The same
objects can be built in Python::

    cfg = ExperimentConfig(
        name="my_test",
        data=DataConfig(prices="demo"),
        strategy={"type": "TopN", "signal": "score", "n": 2},
    )

**Data paths** (``data.prices``, ``data.signals.path``, ``data.features``,
``data.context.path``) resolve against the *data root*: the ``ML4T_DATA_ROOT`` environment
variable, or the current directory when it is unset (see :func:`resolve_data_root`). A path that
resolves outside the root (absolute, ``../``, or a symlink pointing out; symlinks are followed)
is refused with the field and the root named, unless the person running the pipeline sets
``ML4T_ALLOW_OUTSIDE_DATA_ROOT=1``. The opt-out is an environment variable on purpose: the data
root is chosen by whoever runs the pipeline, so a config file cannot widen its own access.
``prices: demo`` selects the real daily OHLCV shipped in the ``bokeh-sampledata`` package, so
the demo needs no file at all.

**Numbers** are bounded (see each model's docstring): ``inf``, ``nan``, booleans given for
numbers and values beyond the documented limits (``n: 1e18``, ``initial_cash: 1e308``) are
refused with the field path named. Integer fields accept integral floats (``25.0`` is ``25``)
and refuse fractional ones. Risk-rule, commission and slippage specs are checked the same way:
every number in them must be finite with ``|x| <= 1e12``, and the common parameters have ranges
(:data:`RULE_PARAM_LIMITS`, :data:`COST_PARAM_LIMITS`).

**Seeds' names**: the rule parameter names of the seeds' documents are accepted as aliases and
rewritten to the engine's names when the config is validated (:data:`RULE_PARAM_ALIASES`:
``sl_pct`` → ``stop_pct``, ``tp_pct`` → ``target_pct``, ``tighten_rate`` → ``tighten_per_bar``,
``max_dd_pct`` → ``max_drawdown``; a ``RegimeDependentRule`` given as ``regime_source`` /
``high_vol_threshold`` / ``rules: {high_vol, low_vol}`` becomes ``context_column`` /
``threshold`` / ``above`` / ``below``; ``CompositeRule`` modes ``AND`` / ``OR`` become ``all`` /
``any``). Giving an alias and its new name together is an error. The table is the engine's
(:mod:`engine.risk.rules.aliases`), shared with the rule constructors. The seeds' config sections
(``version``, ``data.price_data``, ``strategy.select_top``, ``performance``, ...) are translated
by :func:`from_seeds_schema` (docs/reference/seeds-compatibility.md).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.risk.rules import aliases
from ml4t_pipeline.lib.calendars import DEFAULT_CALENDAR, check_calendar_name

if TYPE_CHECKING:
    import engine as engine_mod
    from engine.mechanics import Delisting, Financing

DATA_ROOT_ENV = "ML4T_DATA_ROOT"
"""Environment variable naming the data root (relative data paths resolve against it)."""
ALLOW_OUTSIDE_ROOT_ENV = "ML4T_ALLOW_OUTSIDE_DATA_ROOT"
"""Set to ``1`` (or ``true``/``yes``) to allow data paths outside the data root (off by default)."""
DEMO_PRICES = "demo"
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
"""File suffixes :func:`load_config` reads (``.json`` is parsed as JSON, the others as YAML)."""

MAX_BARS = 10_000
"""Upper bound of bar-count settings (``n``, ``rebalance_every``, ``max_bars``, cooldowns)."""
MAX_ROWS = 100_000
"""Upper bound of row/period settings (``periods_per_year``, ``min_train_periods``, fill limits)."""
MAX_CASH = 1e12
"""Upper bound of ``initial_cash`` (currency) and of any number in a rule or cost spec."""


# ---------------------------------------------------------------------------------------------
# Bounded number types


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode reads true/false as 1/0; a boolean given for a number is a mistake
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {value!r}")
    return value


_NUMBER = BeforeValidator(_no_bool)


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


# ---------------------------------------------------------------------------------------------
# data


class ModelSignalsConfig(_Strict):
    """Signals made by the pipeline's own walk-forward scikit-learn model.

    Each score is available at the close of the bar whose features it was computed from (its
    ``available_at`` is that bar's timestamp); see :mod:`ml4t_pipeline.lib.signals`.

    Attributes
    ----------
    model : {"ridge", "gbm"}
        Ridge regression on cross-sectionally standardised features, or a small
        histogram gradient-boosting model.
    horizon : int
        Forecast horizon in bars, 1 to 250: the model predicts the ``horizon``-bar forward
        return.
    min_train_periods : int
        Distinct timestamps required before the first fit, 20 to 100,000; earlier bars get no
        score.
    retrain : {"monthly"}
        Refit at the first bar of every calendar month (expanding window).
    alpha : float
        Ridge penalty, in (0, 1e6].
    """

    model: Literal["ridge", "gbm"] = "ridge"
    horizon: Annotated[int, _NUMBER, Field(ge=1, le=250)] = 5
    min_train_periods: Annotated[int, _NUMBER, Field(ge=20, le=MAX_ROWS)] = 252
    retrain: Literal["monthly"] = "monthly"
    alpha: Annotated[float, _NUMBER, Field(gt=0, le=1e6)] = 1.0


class FileSignalsConfig(_Strict):
    """Signals read from a user's Parquet/CSV file: timestamp, symbol, one column per score.

    ``path`` is a data path (inside the data root); ``columns`` names the score columns to use
    (all Float64 columns when omitted).
    """

    path: str
    columns: list[str] | None = None


class ContextConfig(_Strict):
    """Market-wide context stored once per timestamp.

    ``source: market`` derives the equal-weight market return and its 20-bar volatility from
    the prices; ``source: vix`` reads CBOE's VIX history from ``path`` (stamped at its 16:15 New
    York close, so it is visible from the next daily bar); ``source: file`` reads any table with
    a ``timestamp`` column and the named ``columns``. ``path`` is a data path (inside the data
    root).
    """

    source: Literal["market", "vix", "file"] = "market"
    path: str | None = None
    columns: list[str] | None = None

    @field_validator("path")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.strip() if v else v


class QuotesConfig(_Strict):
    """Bid/ask columns of the prices file, for spread-aware slippage (``SpreadAware``).

    The backtest reads these two columns from the prices file (stamped like the prices) and
    hands them to the engine as the bars' ``bid``/``ask``. Every backtested bar needs a quote
    with both finite and ``ask >= bid > 0``; bars without one are refused, naming them (the
    engine would otherwise fall back to the high/low spread estimate without a word).

    Attributes
    ----------
    bid, ask : str
        Column names in the prices file (default ``bid`` and ``ask``).
    """

    bid: str = "bid"
    ask: str = "ask"


MODEL_SIGNAL_TIMING = ("market_close", "available_at")
"""``signal_available_at`` values consistent with the built-in model's scores (each row's own
``available_at`` is its feature bar's close, so both modes mean the same thing)."""


class PlausibilityConfig(_Strict):
    """Price rows that are well-formed but not believable, refused like any invalid row.

    Each setting adds a row rule to the price validation (see :mod:`ml4t_pipeline.lib.schemas`):
    a breaking row fails the run naming it under ``data.invalid_rows: fail``, or is set aside in
    ``prices_quarantine`` with the rule as its reason under ``quarantine``.

    Attributes
    ----------
    max_price : float | None
        Open, high, low and close must be at most this (currency per share), in (0, 1e300]
        (default 1e7: ten times the highest US share price ever quoted). None: no level check.
        Prices must be > 0 in any case.
    min_return, max_return : float | None
        Bounds of a bar's close-to-close simple return ``close / previous close - 1`` within its
        symbol (fraction): defaults -0.99 (a fall of more than 99 %) and 10.0 (a rise of more than
        1,000 %). A one-bar spike breaks ``max_return`` and the bar after it ``min_return``, so
        both rows are named. None: that side is not checked. Raw (unadjusted) prices jump at
        splits: a 1:20 reverse split is a return of +1,900 %.
    calendar : str
        Every bar must fall on a session, by its date in the calendar's zone: of
        ``data.calendar`` (the default, e.g. ``XNYS``: no weekends, no exchange holidays; an
        exchange name given here must be ``data.calendar``'s), ``weekdays`` (Monday to
        Friday, by the New York date), ``none`` (not checked).
    """

    max_price: Annotated[float, _NUMBER, Field(gt=0, le=1e300)] | None = 1e7
    min_return: Annotated[float, _NUMBER, Field(ge=-1, lt=0)] | None = -0.99
    max_return: Annotated[float, _NUMBER, Field(gt=0, le=1e12)] | None = 10.0
    calendar: str = DEFAULT_CALENDAR

    @field_validator("calendar")
    @classmethod
    def _known_calendar(cls, value: str) -> str:
        return value if value in ("weekdays", "none") else check_calendar_name(value, field="")


class UniverseConfig(_Strict):
    """A point-in-time universe from index membership spells
    (:mod:`ml4t_pipeline.lib.universe`).

    Every bar gets an ``in_universe`` column (1.0 when its symbol is an index member on the
    bar's New York session date, else 0.0, joined as of the spell's start date); the ranked
    signal is set to null outside membership, so the built-in strategies rank (and buy)
    members only.

    Attributes
    ----------
    membership : str
        Data path to a table with ``symbol``, ``start_date``, ``end_date`` (one row per spell,
        several spells per symbol allowed, null end = still a member).
    renames : dict[str, str]
        ``{price-file symbol: membership symbol}`` for renamed tickers (e.g. ``PCLN: BKNG``).
        Price symbols still without a spell are listed in the ``market_panel`` metadata
        (``universe_unmatched_symbols``) and are never in the universe; nothing is dropped.
    on_exit_universe : {"hold", "close_next_open"}
        A holding whose symbol leaves the index: ``hold`` (default) keeps it until the strategy
        drops it (it is no longer ranked, so TopN sells it at its next rebalance) or a risk rule
        exits it; ``close_next_open`` exits it at the next bar's open after its first bar
        outside (a pipeline risk rule, run in the engine's Python loop).
    """

    membership: str = Field(min_length=1)
    renames: dict[str, str] = Field(default_factory=dict)
    on_exit_universe: Literal["hold", "close_next_open"] = "hold"


SIGNAL_TIMESTAMPS = ("bar_close", "session_date", "instant")
"""``data.signal_timestamps`` values: how a signal file's ``timestamp`` column is read."""


# ---------------------------------------------------------------------------------------------
# market mechanics on raw prices (corporate actions, delistings, financing; issue 29)

ADJUSTMENTS = ("raw", "split_adjusted", "total_return")
"""``data.adjustment`` values (:mod:`ml4t_pipeline.lib.corporate_actions`)."""


class CorporateActionsConfig(_Strict):
    """A corporate-actions table (splits and cash dividends).

    Attributes
    ----------
    path : str
        Data path to a Parquet/CSV file, inside the data root.
    format : {"table", "lean"}
        ``table``: columns ``symbol``, ``ex_date``, ``split_ratio``, ``dividend``, optional
        ``pay_date`` (:class:`engine.mechanics.CorporateActions`); ``lean``: Lean factor-file
        rows (``symbol, date, price_factor, split_factor, reference_price``), turned into
        actions by :func:`ml4t_pipeline.lib.corporate_actions.from_lean_factors`; rows of
        tickers without prices are left out (a factor-file library covers more tickers) and
        counted in the ``prices`` metadata.
    """

    path: str = Field(min_length=1)
    format: Literal["table", "lean"] = "table"


class DelistingConfig(_Strict):
    """Close positions of delisted symbols (:class:`engine.mechanics.Delisting`).

    Attributes
    ----------
    gap_sessions : int
        Missing sessions after which a symbol's later rows are another security (1 to 10,000;
        default 20).
    delisting_return : float
        Return from the last close to the delisting proceeds, in [-1, 10] (default 0).
    """

    gap_sessions: Annotated[int, _NUMBER, Field(ge=1, le=MAX_BARS)] = 20
    delisting_return: Annotated[float, _NUMBER, Field(ge=-1, le=10)] = 0.0

    def engine(self) -> Delisting:
        """The engine's :class:`engine.mechanics.Delisting`."""
        from engine.mechanics import Delisting

        return Delisting(self.gap_sessions, self.delisting_return)


_RATE = Annotated[float, _NUMBER, Field(ge=-1, le=1)]


class FinancingConfig(_Strict):
    """Interest on cash and short borrow fees (:class:`engine.mechanics.Financing`).

    Attributes
    ----------
    credit_rate, debit_rate, borrow_rate : float
        Annual rates (fractions, in [-1, 1]) on positive cash, on negative cash, and on
        short market value. Default 0.
    borrow_rates : dict[str, float]
        Per-symbol borrow fees (annual fractions) overriding ``borrow_rate``.
    day_count : {"actual/360", "actual/365"}
        Elapsed calendar days over 360 (default, the USD money-market basis) or 365.
    """

    credit_rate: _RATE = 0.0
    debit_rate: _RATE = 0.0
    borrow_rate: _RATE = 0.0
    borrow_rates: dict[str, _RATE] = Field(default_factory=dict)
    day_count: Literal["actual/360", "actual/365"] = "actual/360"

    def engine(self) -> Financing:
        """The engine's :class:`engine.mechanics.Financing`."""
        from engine.mechanics import Financing

        return Financing(
            self.credit_rate,
            self.debit_rate,
            self.borrow_rate,
            dict(self.borrow_rates),
            self.day_count,
        )


class DataConfig(_Strict):
    """Where the data comes from and how strictly it is checked.

    Attributes
    ----------
    prices : str
        ``demo`` (bokeh-sampledata's daily stocks) or a data path to a Parquet/CSV file or
        directory, inside the data root (``ML4T_DATA_ROOT``, else the current directory).
    signals : ModelSignalsConfig | FileSignalsConfig
        The pipeline's own walk-forward model (default) or a user's score file.
    features : str
        ``computed`` (indicators computed from prices) or a data path to a features table.
    context : ContextConfig
        Market-wide values (one row per timestamp).
    signal_available_at : {"market_close", "market_open", "next_day", "available_at"}
        When a row of a signal *file* becomes usable: at its own bar's close, at 09:30 New York
        that day, at the next weekday's open, or at the time in its explicit ``available_at``
        column. A signal is visible from the first bar whose close is at or after that time.
        The built-in model's scores carry their own ``available_at`` (their feature bar's
        close): with model signals only ``market_close`` (the default) or ``available_at`` may
        be given; ``market_open`` / ``next_day`` are refused rather than silently ignored.
    signal_timestamps : {"bar_close", "session_date", "instant"}
        How a signal *file*'s ``timestamp`` is read
        (:func:`ml4t_pipeline.lib.timing.signal_stamps_utc`). ``bar_close`` (default): a
        timezone-aware stamp is the close of the bar the score was computed at, and a plain
        date (naive 00:00 or ``Date``) is that session, known at its 16:00 New York close (the
        price files' convention); every stamp inside the price history must then be a bar
        close, or the blocking check ``signals_stamped_at_bar_close`` fails naming the rows.
        ``session_date``: every stamp is a date, read in its own time zone (``2013-05-01
        00:00+09:00`` is the session of 1 May), known at that session's close; checked the
        same way. ``instant``: timezone-aware stamps are the instants the scores became known,
        used from the first bar closing at or after them (any offset is accepted and reported).
        The built-in model's scores are always bar closes: with model signals only
        ``bar_close`` may be given.
    validation : {"fast", "standard", "paranoid"}
        Validation level (seeds' names). ``fast`` checks names, dtypes and a sample of rows (and
        says so); ``standard`` checks every row; ``paranoid`` adds signal timing and staleness.
    bar_length : str | None
        For intraday price files whose timestamps mark the bar *start* (e.g. ``"1m"``, ``"1h"``):
        the bar length used to restamp them at the bar close. None for daily files.
    max_fill_bars : int | None
        How many bars a signal value may be carried forward, 0 to 100,000 (None: until the next
        signal).
    max_signal_age_bars : int | None
        Under ``paranoid``: a signal older than this many of its symbol's bars is reported
        (1 to 100,000).
    invalid_rows : {"fail", "quarantine"}
        ``fail`` stops the run and names the rows; ``quarantine`` keeps them in their own table
        (``prices_quarantine``) and leaves them out of the backtest.
    symbols : list[str] | None
        Restrict the universe (None = every symbol in the prices).
    plausibility : PlausibilityConfig
        Bounds on price levels and bar-to-bar returns, and the session calendar bars must fall
        on; rows outside them are handled like other invalid rows (``invalid_rows``).
    quotes : QuotesConfig | None
        Bid/ask columns of the prices file for spread-aware slippage (``{bid: bid, ask: ask}``;
        not with ``prices: demo``). None (default): the bars carry no quotes.
    stream : {"whole", "monthly"}
        How the backtest asset reads the prepared panel: ``whole`` (default) loads it into
        memory; ``monthly`` streams it month by month through :class:`engine.ChunkedMarketData`
        (same fills; for panels too large for memory). Only through the Dagster path
        (``ml4t run`` and the UI), which stores the panel by month.
    universe : UniverseConfig | None
        Point-in-time index membership (``{membership: sp500_membership_1996_2025.parquet}``).
        None (default): every symbol of the prices is in the universe on every bar. Not with
        ``stream: monthly``.
    calendar : str
        The exchange's calendar, an ``exchange_calendars`` name (default ``XNYS``, the New
        York Stock Exchange; ``XLON``, ``XTKS``, ...; :mod:`ml4t_pipeline.lib.calendars`).
        Daily dates (of prices, quotes and date-stamped signals) are stamped at their
        session's real close (XNYS: 16:00 New York, 13:00 on half days such as 2017-11-24),
        bars on dates that are no session are refused (``plausibility.calendar``), and a
        ``SessionEndExit`` without ``session_close`` exits at each session's real close.
        An unknown name is refused, naming the closest ones.
    adjustment : {"raw", "split_adjusted", "total_return"}
        What the engine trades (docs/how-to/corporate-actions.md). ``raw`` (default): the
        prices as given; with ``corporate_actions``, the engine applies each split and
        dividend to the portfolio on its ex-date. ``split_adjusted`` / ``total_return``: the
        prices are adjusted with ``corporate_actions`` before the backtest (LEAN's
        ``SplitAdjusted`` / ``Adjusted``). Without a table, only ``raw``.
    corporate_actions : CorporateActionsConfig | None
        The splits and dividends (``{path: ..., format: table|lean}``), validated against
        the prices (unknown symbol, ratio <= 0, duplicate (symbol, ex_date), a dividend not
        below the previous close: refused naming the rows). Not with ``prices: demo``.
    delisting : DelistingConfig | None
        Close positions whose symbol's data ends or stops for more than ``gap_sessions``
        sessions (``exit_reason = delisted``). None (default): such a position stays open at
        its last close. Not with ``stream: monthly``.
    """

    prices: str = DEMO_PRICES
    signals: ModelSignalsConfig | FileSignalsConfig = Field(default_factory=ModelSignalsConfig)
    features: str = "computed"
    context: ContextConfig = Field(default_factory=ContextConfig)
    signal_available_at: Literal["market_close", "market_open", "next_day", "available_at"] = (
        "market_close"
    )
    signal_timestamps: Literal["bar_close", "session_date", "instant"] = "bar_close"
    validation: Literal["fast", "standard", "paranoid"] = "standard"
    invalid_rows: Literal["fail", "quarantine"] = "fail"
    plausibility: PlausibilityConfig = Field(default_factory=PlausibilityConfig)
    symbols: list[str] | None = None
    bar_length: str | None = None
    max_fill_bars: Annotated[int, _NUMBER, Field(ge=0, le=MAX_ROWS)] | None = None
    max_signal_age_bars: Annotated[int, _NUMBER, Field(ge=1, le=MAX_ROWS)] | None = None
    quotes: QuotesConfig | None = None
    stream: Literal["whole", "monthly"] = "whole"
    universe: UniverseConfig | None = None
    calendar: str = DEFAULT_CALENDAR
    adjustment: Literal["raw", "split_adjusted", "total_return"] = "raw"
    corporate_actions: CorporateActionsConfig | None = None
    delisting: DelistingConfig | None = None

    @field_validator("calendar")
    @classmethod
    def _known_calendar(cls, value: str) -> str:
        return check_calendar_name(value, field="")

    @model_validator(mode="before")
    @classmethod
    def _plausibility_follows_calendar(cls, raw: Any) -> Any:
        # plausibility.calendar left unset checks the sessions of data.calendar.
        if isinstance(raw, Mapping) and "calendar" in raw:
            checks = raw.get("plausibility") or {}
            if isinstance(checks, Mapping) and "calendar" not in checks:
                raw = {**raw, "plausibility": {**checks, "calendar": raw["calendar"]}}
        return raw

    @model_validator(mode="after")
    def _one_exchange_calendar(self) -> DataConfig:
        checked = self.plausibility.calendar
        if checked not in ("weekdays", "none") and checked != self.calendar:
            raise ValueError(
                f"data.plausibility.calendar {checked!r} is not data.calendar "
                f"{self.calendar!r}: bars are stamped by one calendar; set plausibility.calendar "
                "to the same name (or leave it out), 'weekdays' or 'none'"
            )
        return self

    @model_validator(mode="after")
    def _mechanics_apply(self) -> DataConfig:
        if self.adjustment != "raw" and self.corporate_actions is None:
            raise ValueError(
                f"data.adjustment: {self.adjustment} adjusts prices with a corporate-actions "
                "table; give data.corporate_actions: {path: ..., format: table|lean}"
            )
        if self.corporate_actions is not None and self.prices == DEMO_PRICES:
            raise ValueError(
                "data.corporate_actions: the demo prices are already split- and "
                "dividend-adjusted; give a raw prices file"
            )
        if self.delisting is not None and self.stream == "monthly":
            raise ValueError(
                "data.delisting reads each symbol's next bar and needs the whole panel; "
                "use stream: whole"
            )
        return self

    @model_validator(mode="after")
    def _universe_whole_stream(self) -> DataConfig:
        if self.universe is not None and self.stream == "monthly":
            raise ValueError(
                "data.universe is not supported with data.stream: monthly (the membership "
                "mask is applied to the whole panel); use stream: whole"
            )
        return self

    @model_validator(mode="after")
    def _timing_applies(self) -> DataConfig:
        if self.quotes is not None and self.prices == DEMO_PRICES:
            raise ValueError(
                "quotes: the demo prices have no bid/ask columns; give a prices file that has them"
            )
        timing = self.signal_available_at
        if (
            isinstance(self.signals, ModelSignalsConfig)
            and "signal_available_at" in self.model_fields_set
            and timing not in MODEL_SIGNAL_TIMING
        ):
            raise ValueError(
                f"signal_available_at={timing!r} applies to signal files only; the built-in "
                "model's scores carry their own available_at (the close of the bar their "
                "features come from), so it would be ignored. Remove it (or use "
                "'market_close'), or give a signal file: signals: {path: ...}"
            )
        if isinstance(self.signals, ModelSignalsConfig) and self.signal_timestamps != "bar_close":
            raise ValueError(
                f"signal_timestamps={self.signal_timestamps!r} applies to signal files only; "
                "the built-in model's scores are stamped at their bars' closes. Remove it, or "
                "give a signal file: signals: {path: ...}"
            )
        return self


# ---------------------------------------------------------------------------------------------
# strategy

_TOPN_DEFAULTS: dict[str, Any] = {"type": "TopN", "n": 25, "rebalance_every": 1, "weight": None}


class StrategyConfig(_Strict):
    """The strategy: a registry name (``TopN``) with its parameters, or a user's class.

    ``TopN`` holds the ``n`` symbols with the highest ``signal`` value, equal weight ``1/n`` of
    equity (or ``weight``), rebalancing every ``rebalance_every`` bars.

    Attributes
    ----------
    type : str
        Name in ``engine.STRATEGY_REGISTRY`` (``TopN``).
    signal : str
        The column the strategy ranks by; the timing check ``trades_entered_after_signal_
        available`` and the report's signal deciles use it (also for a user's class).
    n : int
        Symbols held, 1 to 10,000.
    rebalance_every : int
        Rebalance every k-th bar, 1 to 10,000.
    weight : float | None
        Fraction of equity per position, in (0, 1] (default ``1/n``).
    class_ : str | None
        YAML key ``class``: import path of a user strategy, ``package.module.ClassName`` or
        ``package.module:ClassName``. It must subclass :class:`engine.Strategy`; it is imported
        with :mod:`importlib` and built as ``Class(**params)``. TopN's own fields (``type``,
        ``n``, ``rebalance_every``, ``weight``) must then stay at their defaults. Naming a class
        runs its module's code: treat experiment files like code.
    params : dict
        Keyword arguments of the user's class (numbers finite, ``|x| <= 1e12``); only with
        ``class``.
    """

    type: str = "TopN"
    signal: str = "score"
    n: Annotated[int, _NUMBER, Field(ge=1, le=MAX_BARS)] = 25
    rebalance_every: Annotated[int, _NUMBER, Field(ge=1, le=MAX_BARS)] = 1
    weight: Annotated[float, _NUMBER, Field(gt=0, le=1)] | None = None
    class_: str | None = Field(None, alias="class", pattern=r"^[A-Za-z_][\w.]*([:.][A-Za-z_]\w*)$")
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _class_or_registry(self) -> StrategyConfig:
        if self.class_ is None:
            if self.params:
                raise ValueError(
                    "params is only for a user strategy class (strategy.class); TopN takes "
                    "n, rebalance_every and weight directly"
                )
            return self
        clash = [k for k, default in _TOPN_DEFAULTS.items() if getattr(self, k) != default]
        if clash:
            raise ValueError(
                f"{clash} apply to the built-in TopN strategy, not to class {self.class_!r}; "
                "pass the class's arguments under strategy.params"
            )
        _check_numbers(self.params, "strategy.params", {})
        return self

    def engine_spec(self) -> dict[str, Any]:
        """Return the dict that :func:`engine.build_strategy` accepts (registry strategies).

        Raises
        ------
        ValueError
            For a user class (``class``), which has no registry spec; use :meth:`build`.
        """
        if self.class_ is not None:
            raise ValueError(f"strategy class {self.class_!r} has no registry spec; use build()")
        return self.model_dump(exclude_none=True, exclude={"class_", "params"})

    def build(self) -> engine_mod.Strategy:
        """Build the engine strategy (registry strategy, or the user's class with ``params``).

        Raises
        ------
        ValueError
            An import path that does not import, a class that does not subclass
            :class:`engine.Strategy`, or parameters the class refuses.
        """
        import engine

        if self.class_ is None:
            return engine.build_strategy(self.engine_spec())
        cls = import_strategy_class(self.class_)
        try:
            return cls(**self.params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"strategy class {self.class_!r} refused params: {exc}") from exc


def import_strategy_class(path: str) -> type[engine_mod.Strategy]:
    """Import ``package.module.ClassName`` (or ``package.module:ClassName``).

    Raises
    ------
    ValueError
        Module not importable, no such attribute, or not a subclass of :class:`engine.Strategy`.
    """
    import engine

    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"strategy class {path!r}: expected 'package.module.ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"strategy class {path!r}: cannot import {module_name!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise ValueError(f"strategy class {path!r}: module {module_name!r} has no {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, engine.Strategy)):
        raise ValueError(
            f"strategy class {path!r} is {cls!r}, not a subclass of engine.Strategy "
            "(subclass it and override on_timestamp_batch or on_market_data)"
        )
    return cls


# ---------------------------------------------------------------------------------------------
# risk rules, commission and slippage specs: aliases and numeric limits

# name: (low, high, low_inclusive, high_inclusive, integer)
_Limit = tuple[float, float, bool, bool, bool]
_FRACTION: _Limit = (0.0, 1.0, False, False, False)
_FRACTION0: _Limit = (0.0, 1.0, True, False, False)

RULE_PARAM_LIMITS: dict[str, _Limit] = {
    "stop_pct": _FRACTION,
    "target_pct": _FRACTION,
    "initial_trail_pct": _FRACTION,
    "min_trail_pct": _FRACTION,
    "tighten_per_bar": _FRACTION0,
    "trigger_pct": _FRACTION,
    "offset_pct": _FRACTION0,
    "max_loss_pct": _FRACTION,
    "max_drawdown": _FRACTION,
    "max_pct": _FRACTION,
    "max_bars": (1, MAX_BARS, True, True, True),
    "resume_after_bars": (1, MAX_BARS, True, True, True),
    "max_positions": (1, MAX_BARS, True, True, True),
    "max_leverage": (0.0, 100.0, False, True, False),
    "atr_multiplier": (0.0, 100.0, False, True, False),
    "priority": (-MAX_BARS, MAX_BARS, True, True, True),
    "minutes_before": (0, 1440, True, False, True),
}
"""Ranges of the common risk-rule parameters (any rule, nested rules included)."""

COST_PARAM_LIMITS: dict[str, _Limit] = {
    "rate": (0.0, 0.1, True, True, False),
    "pct": (0.0, 0.1, True, True, False),
    "bps": (0.0, 1000.0, True, True, False),
    "cost": (0.0, 1e6, True, True, False),
    "minimum": (0.0, 1e6, True, True, False),
    "maximum_pct": (0.0, 0.1, True, True, False),
    "spread_fraction": (0.0, 1.0, True, True, False),
    "fallback_pct": (0.0, 0.1, True, True, False),
    "coefficient": (0.0, 100.0, True, True, False),
    "max_impact": (0.0, 1.0, False, False, False),
    "window": (1.0, float(MAX_BARS), True, True, True),
    "min_periods": (1.0, float(MAX_BARS), True, True, True),
    "volume_window": (1.0, float(MAX_BARS), True, True, True),
}
"""Ranges of commission and slippage parameters: rates and percentages at most 10 %, a
per-share/per-trade cost at most 1e6 currency, basis points at most 1,000, bar counts
(``window``, ``min_periods``, ``volume_window``) whole numbers from 1 to 10,000."""

RULE_PARAM_ALIASES = aliases.RULE_PARAM_ALIASES
"""Seeds' parameter names accepted per rule type, and the engine name each becomes (the
engine's table, :mod:`engine.risk.rules.aliases`, shared with the rule constructors)."""

COMPOSITE_RULE = "CompositeRule"


def _fmt_limit(limit: _Limit) -> str:
    lo, hi, lo_in, hi_in, integer = limit
    kind = "an integer" if integer else "a number"
    return f"{kind} in {'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"


def _check_numbers(value: Any, where: str, limits: Mapping[str, _Limit]) -> None:
    """Every number in ``value`` finite with ``|x| <= MAX_CASH``; named keys within ``limits``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}"
            limit = limits.get(str(key))
            if limit is not None and not isinstance(item, Mapping | list):
                _check_limit(item, path, limit)
            _check_numbers(item, path, limits)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_numbers(item, f"{where}[{i}]", limits)
    elif (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (not math.isfinite(value) or abs(value) > MAX_CASH)
    ):
        raise ValueError(f"{where}: {value!r} is not a finite number with |x| <= {MAX_CASH:g}")


def _check_limit(value: Any, where: str, limit: _Limit) -> None:
    lo, hi, lo_in, hi_in, integer = limit
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integer and isinstance(value, float):
        ok = value.is_integer()
    if ok:
        x = float(value)
        ok = math.isfinite(x) and (x >= lo if lo_in else x > lo) and (x <= hi if hi_in else x < hi)
    if not ok:
        raise ValueError(f"{where} must be {_fmt_limit(limit)}, got {value!r}")


def normalize_rule_spec(spec: Any, where: str) -> dict[str, Any]:
    """A risk-rule spec with the seeds' aliases rewritten to the engine's names, checked.

    Parameters
    ----------
    spec : mapping
        ``{type: <rule name>, **params}``; ``RegimeDependentRule`` ``above``/``below`` and
        ``CompositeRule`` ``rules`` may hold nested specs (normalised too).
    where : str
        The spec's location for messages, e.g. ``risk_rules[0]``.

    Returns
    -------
    dict
        The spec with engine parameter names.

    Raises
    ------
    ValueError
        No ``type``; an alias given together with its new name; a non-finite or out-of-range
        number (named by its path, e.g. ``risk_rules[0].stop_pct``).
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping with a 'type' key, got {spec!r}")
    if "type" not in spec:
        raise ValueError(f"{where} has no 'type' (got keys {sorted(spec)})")
    kind = str(spec["type"])
    out = aliases.rename_rule_params(kind, spec, where)
    for key in ("above", "below"):
        if kind == "RegimeDependentRule" and isinstance(out.get(key), Mapping):
            out[key] = normalize_rule_spec(out[key], f"{where}.{key}")
    if kind == COMPOSITE_RULE:
        rules = out.get("rules")
        if not isinstance(rules, list) or not rules:
            raise ValueError(f"{where}.rules must be a non-empty list of rule specs")
        out["rules"] = [normalize_rule_spec(r, f"{where}.rules[{i}]") for i, r in enumerate(rules)]
    flat = {k: v for k, v in out.items() if k not in ("above", "below", "rules")}
    _check_numbers(flat, where, RULE_PARAM_LIMITS)
    return out


def build_rule(spec: Mapping[str, Any]) -> engine_mod.RiskRule:
    """Build a risk rule from a (normalised) spec, ``CompositeRule`` and nesting included.

    ``engine.build_rule`` knows the registry rules; a ``CompositeRule`` (``rules``: a list of
    specs, ``mode``: ``any``/``all``, optional ``name``/``priority``) and the nested rules of a
    ``RegimeDependentRule`` are built here, so composites may nest anywhere.

    Raises
    ------
    ValueError
        Unknown rule type or bad parameters (the engine's message).
    """
    import engine

    spec = dict(spec)
    if spec.get("type") == COMPOSITE_RULE:
        params = {k: v for k, v in spec.items() if k not in ("type", "rules")}
        rules = [build_rule(r) for r in spec.get("rules", [])]
        try:
            return engine.CompositeRule(rules, **params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad parameters for risk rule 'CompositeRule': {exc}") from exc
    for key in ("above", "below"):
        if isinstance(spec.get(key), Mapping):
            spec[key] = build_rule(spec[key])
    return engine.build_rule(spec)


def _cost_spec(kind: str) -> Callable[[Any], Any]:
    def check(spec: Any) -> Any:
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ValueError(f"execution.{kind} must be a mapping with a 'type' key, got {spec!r}")
        _check_numbers(spec, f"execution.{kind}", COST_PARAM_LIMITS)
        return dict(spec)

    return check


# ---------------------------------------------------------------------------------------------
# execution and reporting


class ExecutionConfig(_Strict):
    """Fill mode, costs, cash, and the engine's fill-semantics settings.

    Attributes
    ----------
    fill : {"next_open", "close"}
        ``next_open`` (default; a decision at bar t's close trades at t+1's open) or ``close``
        (same bar's close).
    commission, slippage : dict
        Registry specs such as ``{type: Percentage, rate: 0.001}`` or ``{type: SpreadAware,
        spread_fraction: 0.5}`` (numbers finite; rates and percentages in [0, 0.1], basis
        points in [0, 1000], costs in [0, 1e6] currency; :data:`COST_PARAM_LIMITS`).
        Costs read only what a fill may know (docs/how-to/cost-model.md): ``SpreadAware``
        pays ``spread_fraction`` of the last quoted spread before the fill (``data.quotes``;
        the previous bar's close quote for a fill at the open), else of the Corwin–Schultz
        estimate averaged over the last ``window`` (default 20) pairs of completed bars;
        ``VolumeAware`` takes sigma from the previous bar and, by default, the fill bar's
        volume (``volume: completed`` with ``volume_window: N``: the mean of the last N
        completed bars).
    initial_cash : float
        Currency, in (0, 1e12].
    fractional_shares, allow_short : bool
    preset : {"backtrader", "vectorbt"} | None
        Framework fill semantics (``engine.EXECUTION_PRESETS``); the settings below override it.
    max_volume_participation : float | None
        Largest fraction of a bar's volume one order may fill on that bar, in (0, 1].
    close_at_end : bool | None
        Close every open position at the last bar's close (``exit_reason = end_of_data``).
    bar_event_order : {"chronological", "stops_first"} | None
    stop_activation : {"next_bar", "entry_bar"} | None
    exit_conflict : {"open_sell_wins", "stop_wins"} | None
        ``stop_wins`` needs ``bar_event_order: stops_first``.
    cash_check : {"execution", "submission"} | None
    reentry_cooldown_bars : int | None
        0 to 10,000 bars.
    cash_tolerance : float | None
        Currency, in [0, 1000].
    financing : FinancingConfig | None
        Interest on cash and short borrow fees, accrued per bar (default None: none).

    The settings from ``max_volume_participation`` on are :class:`engine.ExecutionConfig`'s
    fields with the same names and meanings (documented there and in the README's "Fill
    semantics settings"); ``None`` (omitted) keeps the engine's default or the preset's value.
    """

    fill: Literal["next_open", "close"] = "next_open"
    commission: Annotated[dict[str, Any], BeforeValidator(_cost_spec("commission"))] = Field(
        default_factory=lambda: {"type": "Percentage", "rate": 0.0}
    )
    slippage: Annotated[dict[str, Any], BeforeValidator(_cost_spec("slippage"))] = Field(
        default_factory=lambda: {"type": "NoSlippage"}
    )
    initial_cash: Annotated[float, _NUMBER, Field(gt=0, le=MAX_CASH)] = 1_000_000.0
    fractional_shares: bool = False
    allow_short: bool = False
    preset: Literal["backtrader", "vectorbt"] | None = None
    max_volume_participation: Annotated[float, _NUMBER, Field(gt=0, le=1)] | None = None
    close_at_end: bool | None = None
    bar_event_order: Literal["chronological", "stops_first"] | None = None
    stop_activation: Literal["next_bar", "entry_bar"] | None = None
    exit_conflict: Literal["open_sell_wins", "stop_wins"] | None = None
    cash_check: Literal["execution", "submission"] | None = None
    reentry_cooldown_bars: Annotated[int, _NUMBER, Field(ge=0, le=MAX_BARS)] | None = None
    cash_tolerance: Annotated[float, _NUMBER, Field(ge=0, le=1000)] | None = None
    financing: FinancingConfig | None = None

    def engine_overrides(self) -> dict[str, Any]:
        """The fill-semantics settings given explicitly (engine field name → value)."""
        return {k: getattr(self, k) for k in ENGINE_SETTINGS if getattr(self, k) is not None}

    def engine_config(self) -> engine_mod.ExecutionConfig:
        """The :class:`engine.ExecutionConfig` of this section: preset, then explicit settings.

        Raises
        ------
        ValueError
            An unknown preset or an invalid combination (the engine's message).
        """
        import engine

        presets: dict[str, dict[str, Any]] = engine.EXECUTION_PRESETS
        base = dict(presets[self.preset]) if self.preset is not None else {}
        return engine.ExecutionConfig(
            fill=self.fill,
            commission=engine.build_commission(dict(self.commission)),
            slippage=engine.build_slippage(dict(self.slippage)),
            initial_cash=self.initial_cash,
            fractional_shares=self.fractional_shares,
            allow_short=self.allow_short,
            financing=self.financing.engine() if self.financing is not None else None,
            **{**base, **self.engine_overrides()},
        )


ENGINE_SETTINGS = (
    "max_volume_participation",
    "close_at_end",
    "bar_event_order",
    "stop_activation",
    "exit_conflict",
    "cash_check",
    "reentry_cooldown_bars",
    "cash_tolerance",
)
"""``execution`` keys passed to :class:`engine.ExecutionConfig` under the same name when given."""


class BenchmarkConfig(_Strict):
    """A benchmark read offline from a price file (e.g. SPY in the Lean daily file).

    The file has the prices schema (timestamp, symbol, OHLCV) and is stamped like the prices
    (daily dates become the session's close); the benchmark's bar return is its close-to-close
    return (:func:`ml4t_pipeline.lib.benchmark.load_benchmark_returns`). Raw closes give a price
    return (dividends not included).

    Attributes
    ----------
    symbol : str
        The benchmark's symbol in the file.
    path : str
        Data path (inside the data root, like ``data.prices``).
    """

    symbol: str = Field(min_length=1, max_length=64)
    path: str = Field(min_length=1)


class ReportingConfig(_Strict):
    """Report settings.

    Attributes
    ----------
    risk_free_rate : float
        Annual risk-free rate as a fraction, in [-0.1, 0.5].
    periods_per_year : int
        Bars per year for annualising, 1 to 100,000 (252 daily; 98,280 = 252 × 390 minutes).
    title : str | None
    benchmark : BenchmarkConfig | None
        ``{symbol: SPY, path: lean_daily_ohlcv_unadjusted.parquet}``: alpha, beta, information
        ratio, tracking error and up/down capture against it (``bench_*`` metrics) and its equity
        on the report's chart. None (default): only the equal-weight universe is a benchmark.
    """

    risk_free_rate: Annotated[float, _NUMBER, Field(ge=-0.1, le=0.5)] = 0.0
    periods_per_year: Annotated[int, _NUMBER, Field(ge=1, le=MAX_ROWS)] = 252
    title: str | None = None
    benchmark: BenchmarkConfig | None = None


class MlflowTrackingConfig(_Strict):
    """Where an experiment's runs are logged in MLflow (the ``tracking`` extra).

    Attributes
    ----------
    uri : str | None
        MLflow tracking URI (``sqlite:///path/mlflow.db``, ``http://host:5000``, ...). Default:
        ``sqlite:///<storage>/mlflow.db``, beside the stored asset values, where ``<storage>``
        is ``$ML4T_STORAGE_DIR`` or ``.ml4t_storage`` in the working directory
        (:func:`ml4t_pipeline.lib.tracking.default_tracking_uri`). A remote URI sends the
        resolved config, the metrics, the report and the trades to that host.
    experiment : str | None
        MLflow experiment name (default: the config's ``name``).
    """

    uri: str | None = None
    experiment: str | None = Field(default=None, min_length=1, max_length=250)


class TrackingConfig(_Strict):
    """Experiment tracking. ``mlflow: {}`` logs every backtest to MLflow with the defaults;
    absent (the default), nothing is logged. Not part of the config hash: where results are
    logged does not change them."""

    mlflow: MlflowTrackingConfig | None = None


class BacktestConfig(_Strict):
    """The backtest window: the engine trades from ``start`` to ``end``, both inclusive.

    Data before ``start`` is still read and prepared: features, context and the walk-forward
    model's signals are computed on the whole history first, so an indicator or a score at
    the first traded bar has its full look-back. The engine then runs only the window's bars
    (:meth:`engine.MarketData.between`): cash, positions and portfolio states start at the
    first bar at or after ``start``; the last state is the last bar at or before ``end``,
    where ``execution.close_at_end`` closes the book. Both ``None`` (the default): the whole
    data. A sweep may vary them (``backtest.start`` / ``backtest.end`` are grid paths), e.g.
    one trial per walk-forward test period over the same prepared data.

    Attributes
    ----------
    start, end : date or datetime, optional
        A date (``2015-01-02``) means its whole UTC calendar day, so ``end: 2015-12-31``
        keeps that day's close; a datetime must carry a timezone (``2015-01-02T21:00:00Z``)
        and is compared with the bar close timestamps. ``start`` must not be after ``end``.
        A window that holds no bar of the data fails the run with the data's time range.
    """

    start: date | datetime | None = None
    end: date | datetime | None = None

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: date | datetime | None) -> date | datetime | None:
        if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError(
                f"{value.isoformat()} has no timezone: give one (e.g. "
                f"{value.date().isoformat()}T21:00:00Z; bar closes are UTC) or a plain date"
            )
        return value

    @model_validator(mode="after")
    def _ordered(self) -> BacktestConfig:
        if (
            self.start is not None
            and self.end is not None
            and _day_start(self.start) > _day_end(self.end)
        ):
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self

    def window(self) -> dict[str, date | datetime | None]:
        """``{"start": ..., "end": ...}`` for :meth:`engine.BacktestEngine.run` /
        :meth:`engine.MarketData.between`."""
        return {"start": self.start, "end": self.end}

    @property
    def is_set(self) -> bool:
        """True when a bound is given."""
        return self.start is not None or self.end is not None


def _day_start(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time(0), tzinfo=UTC)


def _day_end(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time.max, tzinfo=UTC)


# Fields added after the first config schema: left out of the hash while at their default, so
# the config hash (a lineage key) of an existing experiment file does not change.
_HASH_NEUTRAL_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("data", "stream"): "whole",
    ("data", "quotes"): None,
    ("data", "signal_timestamps"): "bar_close",
    ("data", "calendar"): DEFAULT_CALENDAR,
    ("data", "plausibility"): PlausibilityConfig().model_dump(mode="json"),
    ("strategy", "class"): None,
    ("strategy", "params"): {},
    ("backtest", "start"): None,
    ("backtest", "end"): None,
    **{("execution", name): None for name in ENGINE_SETTINGS},
    ("data", "adjustment"): "raw",
    ("data", "corporate_actions"): None,
    ("data", "delisting"): None,
    ("execution", "financing"): None,
}


SEEDS_SCHEMA_VERSIONS = ("1.0", "1")
"""``version`` values of the seeds' configuration schema (000 §5.5) accepted (and dropped)."""
SEEDS_BENCHMARK = "equal_weight"
"""The one ``performance.benchmark`` accepted: the report's equal-weight universe benchmark."""


def from_seeds_schema(raw: Any) -> Any:
    """Rewrite the seeds' configuration sections (000 §5.5) into this schema; refuse the rest.

    ``version`` (``"1.0"``) is dropped; ``data.price_data`` → ``data.prices``; ``data.signals``
    given as a path string → ``{path: ...}``; ``data.features: {provider: precomputed, path}``
    → the path (``provider: computed`` → ``computed``); ``strategy`` with ``type: batch_mode``,
    ``select_top``, ``selection_metric``, ``universe_size``, ``position_sizing`` → ``TopN``
    with ``n``, ``signal``, ``weight`` (``pct_per_position``); ``performance`` → ``reporting``
    (``risk_free_rate``; ``benchmark`` only ``equal_weight``). Each refusal names the key and
    this schema's equivalent. A config without seeds keys is returned unchanged.

    ``universe_size`` describes the scored universe; the universe traded is the prices'
    symbols (or ``data.symbols``, which must then have that many).
    """
    if not isinstance(raw, Mapping):
        return raw
    out = dict(raw)
    if "version" in out:
        version = str(out.pop("version"))
        if version not in SEEDS_SCHEMA_VERSIONS:
            raise ValueError(f"version: {version!r}; the seeds' schema version is '1.0'")
    data = out.get("data")
    if isinstance(data, Mapping):
        data = dict(data)
        if "price_data" in data:
            if "prices" in data:
                raise ValueError("data: give 'prices' only ('price_data' is its seeds' name)")
            data["prices"] = data.pop("price_data")
        if isinstance(data.get("signals"), str):
            data["signals"] = {"path": data["signals"]}
        features = data.get("features")
        if isinstance(features, Mapping):
            provider = features.get("provider", "precomputed")
            extra = sorted(set(features) - {"provider", "path"})
            if extra or provider not in ("precomputed", "computed"):
                raise ValueError(
                    f"data.features: {dict(features)!r}; write 'computed' or a features file "
                    "path (seeds' form: {provider: precomputed, path: ...}); a callable "
                    "provider is Python-only (engine.CallableFeatureProvider)"
                )
            if provider == "computed":
                data["features"] = "computed"
            elif "path" not in features:
                raise ValueError("data.features: provider 'precomputed' needs a 'path'")
            else:
                data["features"] = features["path"]
        out["data"] = data
    strategy = out.get("strategy")
    seeds_strategy = ("select_top", "selection_metric", "universe_size", "position_sizing")
    if isinstance(strategy, Mapping) and (
        strategy.get("type") == "batch_mode" or any(k in strategy for k in seeds_strategy)
    ):
        out["strategy"] = _seeds_strategy(dict(strategy), out.get("data"))
    if "performance" in out:
        if "reporting" in out:
            raise ValueError("give 'reporting' only ('performance' is its seeds' name)")
        performance = dict(out.pop("performance") or {})
        benchmark = performance.pop("benchmark", SEEDS_BENCHMARK)
        if benchmark != SEEDS_BENCHMARK:
            raise ValueError(
                f"performance.benchmark: {benchmark!r}; the report compares with the "
                f"equal-weight universe of the prices (write '{SEEDS_BENCHMARK}'); a single "
                "symbol's buy-and-hold is not a benchmark this pipeline builds"
            )
        out["reporting"] = performance
    return out


def _seeds_strategy(strategy: dict[str, Any], data: Any) -> dict[str, Any]:
    kind = strategy.pop("type", "batch_mode")
    if kind not in ("batch_mode", "TopN"):
        raise ValueError(
            f"strategy.type: {kind!r} with the seeds' top-N keys; the seeds' 'batch_mode' "
            "top-N is 'TopN' here"
        )
    renames = {"select_top": "n", "selection_metric": "signal"}
    for old, new in renames.items():
        if old in strategy:
            if new in strategy:
                raise ValueError(f"strategy: give {new!r} only ({old!r} is its seeds' name)")
            strategy[new] = strategy.pop(old)
    size = strategy.pop("universe_size", None)
    symbols = data.get("symbols") if isinstance(data, Mapping) else None
    if size is not None and symbols is not None and len(symbols) != size:
        raise ValueError(
            f"strategy.universe_size: {size!r} but data.symbols lists {len(symbols)} symbols"
        )
    sizing = strategy.pop("position_sizing", None)
    if sizing is not None:
        sizing = dict(sizing)
        method = sizing.pop("method", "equal_weight")
        if method != "equal_weight":
            raise ValueError(
                f"strategy.position_sizing.method: {method!r}; TopN sizes equal weights "
                "(a user strategy class sizes otherwise: strategy.class)"
            )
        n = strategy.get("n", _TOPN_DEFAULTS["n"])
        most = sizing.pop("max_positions", n)
        if most != n:
            raise ValueError(
                f"strategy.position_sizing.max_positions: {most!r} differs from select_top "
                f"{n!r}; TopN holds select_top positions (cap them with a MaxPositionsRule)"
            )
        if "pct_per_position" in sizing:
            strategy["weight"] = sizing.pop("pct_per_position")
        if sizing:
            raise ValueError(f"strategy.position_sizing: unknown keys {sorted(sizing)}")
    return {"type": "TopN", **strategy}


class ExperimentConfig(_Strict):
    """One experiment: the whole YAML/JSON file.

    ``risk_rules`` is a list of rule specs ``{type: <rule>, priority: ..., **params}``: any
    ``engine.RULE_REGISTRY`` rule, or ``CompositeRule`` (``rules: [specs]``, ``mode: any|all``);
    the seeds' parameter names are rewritten to the engine's (:data:`RULE_PARAM_ALIASES`) and
    every number is checked (:data:`RULE_PARAM_LIMITS`). ``backtest`` is the window the engine
    trades (:class:`BacktestConfig`; default: all the data).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig.model_validate({}))
    risk_rules: list[dict[str, Any]] = Field(default_factory=list)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    reporting: ReportingConfig = Field(default_factory=ReportingConfig)
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="before")
    @classmethod
    def _seeds_sections(cls, raw: Any) -> Any:
        return from_seeds_schema(raw)

    @field_validator("risk_rules", mode="before")
    @classmethod
    def _normalize_rules(cls, rules: Any) -> Any:
        if not isinstance(rules, list):
            return rules
        return [normalize_rule_spec(rule, f"risk_rules[{i}]") for i, rule in enumerate(rules)]

    def config_hash(self) -> str:
        """Return a short SHA-256 of the canonical JSON of this config (lineage key)."""
        dumped = self.model_dump(mode="json", exclude={"tracking"})
        for (section, key), default in _HASH_NEUTRAL_DEFAULTS.items():
            if dumped[section].get(key) == default:
                dumped[section].pop(key, None)
        if not dumped["backtest"]:  # a section added later: absent while empty
            dumped.pop("backtest")
        canonical = json.dumps(dumped, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def ic_horizon(self) -> int:
        """Forward-return horizon (bars) of the information coefficient: the model's training
        horizon (``data.signals.horizon``), else 1 bar."""
        signals = self.data.signals
        return signals.horizon if isinstance(signals, ModelSignalsConfig) else 1


# ---------------------------------------------------------------------------------------------
# loading


class ConfigError(ValueError):
    """Raised when an experiment file cannot be read or does not validate."""


class DataPathError(ConfigError):
    """Raised when a data path resolves outside the data root."""


MAX_CONFIG_BYTES = 1 << 20
"""Largest config or sweep file read (1 MiB; real experiment files are a few KB)."""
MAX_CONFIG_DEPTH = 64
"""Deepest nesting of mappings and lists accepted in a config or sweep file."""
MAX_CONFIG_NODES = 10_000
"""Most values (scalars, mappings and lists together) accepted in a config or sweep file."""


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number (numbers must be finite)")


class _LimitError(Exception):
    """A config file breaks a size, depth or YAML-alias limit (``line`` is 1-based or None)."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses aliases and bounds depth and node count while composing.

    An alias (``*name``) makes one node appear many times: nine levels of ten aliases expand to
    10^9 values, which every later walk of the tree (validation, hashing, copying) pays for.
    Composition is recursive in PyYAML, so depth is checked here, before Python's recursion
    limit is reached.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.AliasEvent):
            raise _LimitError(
                f"YAML alias *{event.anchor} is not allowed in a config file (anchors and "
                "aliases, including `<<: *name` merge keys, are refused); write the values out",
                line,
            )
        self._nodes += 1
        if self._nodes > MAX_CONFIG_NODES:
            raise _LimitError(f"more than {MAX_CONFIG_NODES:,} values in one file", line)
        self._depth += 1
        if self._depth > MAX_CONFIG_DEPTH:
            raise _LimitError(f"nested deeper than {MAX_CONFIG_DEPTH} levels", line)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _json_depth_line(text: str) -> int | None:
    """The 1-based line where the nesting of JSON ``text`` first exceeds the depth limit."""
    depth, line = 0, 1
    for match in re.finditer(r'"(?:[^"\\\n]|\\.)*"|[\[\]{}\n]', text):
        token = match.group()
        if token == "\n":
            line += 1
        elif token in "[{":
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                return line
        elif token in "]}":
            depth -= 1
    return None


def _check_tree(value: Any) -> None:
    """Bound the depth and the number of values of a parsed JSON tree (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_CONFIG_NODES:
            raise _LimitError(f"more than {MAX_CONFIG_NODES:,} values in one file", None)
        if depth > MAX_CONFIG_DEPTH:
            raise _LimitError(f"nested deeper than {MAX_CONFIG_DEPTH} levels", None)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def read_config_file(path: str | Path) -> Any:
    """Parse a config or sweep file (JSON for a ``.json`` suffix, else YAML) within bounds.

    The file may hold at most :data:`MAX_CONFIG_BYTES` bytes of UTF-8, nest at most
    :data:`MAX_CONFIG_DEPTH` levels and hold at most :data:`MAX_CONFIG_NODES` values; YAML
    anchors and aliases (``&name``/``*name``, merge keys ``<<: *name``) are refused, as are JSON's
    bare ``NaN``/``Infinity``. YAML is read with PyYAML's safe loader (no Python objects).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    Any
        The parsed document (usually a dict).

    Raises
    ------
    ConfigError
        The file cannot be read, is too large, is not UTF-8, is not valid YAML/JSON, or breaks
        a limit; the message names the file and, where known, the line. Never a traceback
        from the parser.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"{path}: {size:,} bytes is larger than the {MAX_CONFIG_BYTES:,}-byte limit "
                    "for a config file (nothing was parsed)"
                )
            data = fh.read(MAX_CONFIG_BYTES + 1)  # a file that grows (or a device) stops here
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: larger than the {MAX_CONFIG_BYTES:,}-byte limit for a config file "
            "(nothing was parsed)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text ({exc.reason})") from exc
    if path.suffix.lower() == ".json":
        return _parse_json(path, text)
    return _parse_yaml(path, text)


def _parse_json(path: Path, text: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
        _check_tree(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})"
        ) from exc
    except ValueError as exc:  # a bare NaN/Infinity
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    except (RecursionError, _LimitError) as exc:
        line = getattr(exc, "line", None) or _json_depth_line(text)
        reason = (
            str(exc)
            if isinstance(exc, _LimitError)
            else (f"nested deeper than {MAX_CONFIG_DEPTH} levels")
        )
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: {reason}") from None
    return value


def _parse_yaml(path: Path, text: str) -> Any:
    loader = _BoundedLoader(text)
    loader.name = str(path)  # marks in messages name the file, not "<unicode string>"
    try:
        return loader.get_single_data()
    except _LimitError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        reason = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError(f"{where}: not valid YAML: {reason or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested deeper than {MAX_CONFIG_DEPTH} levels") from None
    finally:
        loader.dispose()


def load_config(path: str | Path, *, data_root: str | Path | None = None) -> ExperimentConfig:
    """Read and validate one experiment file (YAML, or JSON for a ``.json`` suffix).

    Parameters
    ----------
    path : str or Path
    data_root : str or Path, optional
        The data root the data paths must stay inside (default: :func:`resolve_data_root`).

    Raises
    ------
    ConfigError
        If the file is missing, is not YAML/JSON, or breaks the schema; the message lists every
        offending key with its location (e.g. ``execution.fil: Extra inputs are not permitted``).
        :class:`DataPathError` when a data path resolves outside the data root. A sweep file
        (a top-level ``sweep:`` block) is refused with a pointer to ``ml4t sweep``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment config not found: {path}")
    raw = read_config_file(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    if "sweep" in raw:
        raise ConfigError(
            f"{path}: this is a sweep file (it has a `sweep:` block), not one experiment; run it "
            f"with `ml4t sweep {path} --output DIR`, or remove the block to run the base experiment"
        )
    raw.setdefault("name", path.stem)
    return validate_config(raw, source=path, data_root=data_root)


def validate_config(
    raw: Mapping[str, Any], *, source: str | Path, data_root: str | Path | None = None
) -> ExperimentConfig:
    """Validate one experiment given as plain data, exactly as :func:`load_config` validates a
    file: the schema, every engine component built once, the data paths inside the data root.

    Parameters
    ----------
    raw : Mapping
        The sections of an experiment file (``name`` required: nothing to take it from).
    source : str or Path
        What the messages name as the config's origin (a path, ``"Experiment(config)"``).
    data_root : str or Path, optional
        As for :func:`load_config`.

    Raises
    ------
    ConfigError
        As for :func:`load_config` (the messages start with ``source``).
    """
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError(f"{source}: invalid experiment config:\n" + "\n".join(lines)) from exc
    _check_engine_specs(cfg, source)
    check_data_paths(cfg, data_root=data_root, source=source)
    return cfg


def _check_engine_specs(cfg: ExperimentConfig, source: Path | str) -> None:
    """Build every engine component once so bad rule names or parameters fail at load time."""
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("strategy", cfg.strategy.build),
        ("execution", cfg.execution.engine_config),
    ]
    checks += [
        (f"risk_rules[{i}]", lambda r=r: build_rule(r))  # type: ignore[misc]
        for i, r in enumerate(cfg.risk_rules)
    ]
    for where, build in checks:
        try:
            build()
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: {where}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# data paths


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """The data root, resolved (symlinks followed).

    ``data_root`` if given, else ``$ML4T_DATA_ROOT``, else the current directory. A relative
    root resolves against the current directory.
    """
    root = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV)
    return Path(root).expanduser().resolve() if root else Path.cwd().resolve()


def outside_root_allowed() -> bool:
    """True when ``$ML4T_ALLOW_OUTSIDE_DATA_ROOT`` is ``1``, ``true`` or ``yes``."""
    return os.environ.get(ALLOW_OUTSIDE_ROOT_ENV, "").strip().lower() in ("1", "true", "yes")


def _root_text(root: Path) -> str:
    env = os.environ.get(DATA_ROOT_ENV)
    origin = f"${DATA_ROOT_ENV}={env!r}" if env else f"${DATA_ROOT_ENV} unset: current directory"
    return f"{root} ({origin})"


def confine_data_path(
    value: str, *, field: str = "data path", data_root: str | Path | None = None
) -> Path:
    """Resolve a data path and check that it stays inside the data root.

    Relative paths join the root; ``~`` expands; the result is resolved with symlinks followed,
    so ``../`` and links pointing out are caught. The file need not exist.

    Parameters
    ----------
    value : str
        The path as written in the config.
    field : str
        The config field, for the message (e.g. ``data.prices``).
    data_root : str or Path, optional
        See :func:`resolve_data_root`.

    Returns
    -------
    Path
        The resolved absolute path.

    Raises
    ------
    DataPathError
        The path resolves outside the root and ``$ML4T_ALLOW_OUTSIDE_DATA_ROOT`` is not set.
    """
    root = resolve_data_root(data_root)
    p = Path(value).expanduser()
    resolved = (p if p.is_absolute() else root / p).resolve()
    if not resolved.is_relative_to(root) and not outside_root_allowed():
        raise DataPathError(
            f"{field}: {value!r} resolves to {resolved}, outside the data root "
            f"{_root_text(root)}. Data paths must stay inside the data root: move the file "
            f"under it, point ${DATA_ROOT_ENV} at a folder that contains it, or set "
            f"{ALLOW_OUTSIDE_ROOT_ENV}=1 to allow paths outside the root"
        )
    return resolved


def resolve_data_path(
    value: str, *, data_root: str | Path | None = None, field: str = "data path"
) -> Path:
    """Resolve a data path from a config (confined to the data root, see
    :func:`confine_data_path`) and check that it exists.

    Raises
    ------
    DataPathError
        The path resolves outside the data root.
    FileNotFoundError
        If the resolved path does not exist; the message names the variable to set.
    """
    p = confine_data_path(value, field=field, data_root=data_root)
    if not p.exists():
        raise FileNotFoundError(
            f"{field}: data file {p} not found (relative data paths resolve against "
            f"${DATA_ROOT_ENV}, currently {os.environ.get(DATA_ROOT_ENV)!r})"
        )
    return p


def data_paths(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """Every data path of ``cfg`` as ``(field, value)``: files only (not ``demo``/``computed``)."""
    out: list[tuple[str, str]] = []
    if cfg.data.prices != DEMO_PRICES:
        out.append(("data.prices", cfg.data.prices))
    if isinstance(cfg.data.signals, FileSignalsConfig):
        out.append(("data.signals.path", cfg.data.signals.path))
    if cfg.data.features != "computed":
        out.append(("data.features", cfg.data.features))
    if cfg.data.context.path:
        out.append(("data.context.path", cfg.data.context.path))
    if cfg.data.universe is not None:
        out.append(("data.universe.membership", cfg.data.universe.membership))
    if cfg.data.corporate_actions is not None:
        out.append(("data.corporate_actions.path", cfg.data.corporate_actions.path))
    if cfg.reporting.benchmark is not None:
        out.append(("reporting.benchmark.path", cfg.reporting.benchmark.path))
    return out


def check_data_paths(
    cfg: ExperimentConfig,
    *,
    data_root: str | Path | None = None,
    source: str | Path | None = None,
) -> None:
    """Check that every data path of ``cfg`` stays inside the data root (files need not exist).

    Raises
    ------
    DataPathError
        Naming every offending field and the root.
    """
    errors = []
    for field, value in data_paths(cfg):
        try:
            confine_data_path(value, field=field, data_root=data_root)
        except DataPathError as exc:
            errors.append(str(exc))
    if errors:
        prefix = f"{source}: " if source is not None else ""
        raise DataPathError(prefix + "\n".join(errors))
