"""The ``data`` section: prices, signals, features, context, quotes, plausibility, universe,
corporate actions, delistings and financing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ml4t_pipeline.config._base import _NUMBER, DEMO_PRICES, MAX_BARS, MAX_ROWS, _Strict
from ml4t_pipeline.lib.calendars import DEFAULT_CALENDAR, check_calendar_name

if TYPE_CHECKING:
    from engine.mechanics import Delisting, Financing


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
