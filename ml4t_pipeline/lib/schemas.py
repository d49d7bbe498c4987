"""Pandera (polars backend) schemas of the prepared tables, and row-level price validation.

Each prepared table has one ``DataFrameModel`` with a description on every column (the asset
publishes it as its column schema). ``validate_prices`` splits a prices frame into valid rows and
offending rows, naming every rule each row breaks; nothing is dropped or repaired.

The price rules are written once, as polars expressions in ``PRICE_RULES``, and used both by
``PricesSchema`` (as pandera dataframe checks) and by ``validate_prices`` (per row).
``validate_prices(plausibility=...)`` adds the configurable plausibility rules (price level,
close-to-close return, session calendar, blank symbol; ``data.plausibility`` in the pipeline).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal, Optional

import numpy as np
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from ml4t_pipeline.lib.calendars import calendar_tz, check_calendar_name, session_closes
from ml4t_pipeline.lib.timing import signal_age_bars

OHLC: tuple[str, ...] = ("open", "high", "low", "close")
OHLCV: tuple[str, ...] = (*OHLC, "volume")
KEY: tuple[str, str] = ("timestamp", "symbol")


# ---------------------------------------------------------------------------------------------
# Price rules: each returns an expression that is True where the row PASSES. A null operand is a
# pass for every rule except ``ohlcv_not_null`` (nulls are reported once, by that rule).


def _ohlcv_not_null() -> pl.Expr:
    return pl.all_horizontal(pl.col(c).is_not_null() for c in OHLCV)


def _ohlcv_finite() -> pl.Expr:
    return pl.all_horizontal(pl.col(c).is_finite().fill_null(True) for c in OHLCV)


def _prices_positive() -> pl.Expr:
    return pl.all_horizontal((pl.col(c) > 0).fill_null(True) for c in OHLC)


def _volume_non_negative() -> pl.Expr:
    return (pl.col("volume") >= 0).fill_null(True)


def _high_at_or_above_open_close() -> pl.Expr:
    return (pl.col("high") >= pl.max_horizontal("open", "close")).fill_null(True)


def _low_at_or_below_open_close() -> pl.Expr:
    return (pl.col("low") <= pl.min_horizontal("open", "close")).fill_null(True)


def _high_at_or_above_low() -> pl.Expr:
    return (pl.col("high") >= pl.col("low")).fill_null(True)


def _key_unique() -> pl.Expr:
    # Every copy of a duplicated key is flagged: which copy is right cannot be known.
    return ~pl.struct(list(KEY)).is_duplicated()


def _timestamp_sorted_within_symbol() -> pl.Expr:
    # In input order, a row whose timestamp is earlier than the previous row of its symbol.
    return (pl.col("timestamp") >= pl.col("timestamp").shift(1).over("symbol")).fill_null(True)


@dataclass(frozen=True)
class RowRule:
    """One row-level rule: its snake_case predicate name, pass expression and meaning.

    ``passes()`` returns a Boolean expression that is True where a row satisfies the rule.
    """

    name: str
    passes: Callable[[], pl.Expr]
    description: str


PriceRule = RowRule  # the name used by the issue-2 API

PRICE_RULES: tuple[PriceRule, ...] = (
    PriceRule("ohlcv_not_null", _ohlcv_not_null, "open, high, low, close and volume are not null"),
    PriceRule("ohlcv_finite", _ohlcv_finite, "no NaN or infinite open/high/low/close/volume"),
    PriceRule("prices_positive", _prices_positive, "open, high, low and close are > 0"),
    PriceRule("volume_non_negative", _volume_non_negative, "volume is >= 0"),
    PriceRule(
        "high_at_or_above_open_close",
        _high_at_or_above_open_close,
        "high >= max(open, close)",
    ),
    PriceRule(
        "low_at_or_below_open_close",
        _low_at_or_below_open_close,
        "low <= min(open, close)",
    ),
    PriceRule("high_at_or_above_low", _high_at_or_above_low, "high >= low"),
    PriceRule("key_unique", _key_unique, "(timestamp, symbol) appears once"),
    PriceRule(
        "timestamp_sorted_within_symbol",
        _timestamp_sorted_within_symbol,
        "within each symbol, rows are in non-decreasing timestamp order",
    ),
)
"""Every rule ``validate_prices`` applies, in report order."""

PRICE_RULE_NAMES: tuple[str, ...] = tuple(r.name for r in PRICE_RULES)


_RULES_BY_NAME = {r.name: r for r in PRICE_RULES}


def _rule_frame(data: PolarsData, name: str) -> pl.LazyFrame:
    return data.lazyframe.select(_RULES_BY_NAME[name].passes().alias(name))


# ---------------------------------------------------------------------------------------------
# Schemas

UtcDatetime = Annotated[pl.Datetime, "us", "UTC"]


class PricesSchema(pa.DataFrameModel):
    """Prepared prices: one row per (timestamp, symbol), daily or intraday bars."""

    timestamp: UtcDatetime = pa.Field(
        nullable=False, description="Bar close time, timezone-aware UTC (microseconds)."
    )
    symbol: str = pa.Field(nullable=False, description="Ticker symbol.")
    open: float = pa.Field(nullable=False, description="First traded price of the bar, per share.")
    high: float = pa.Field(nullable=False, description="Highest traded price of the bar.")
    low: float = pa.Field(nullable=False, description="Lowest traded price of the bar.")
    close: float = pa.Field(nullable=False, description="Last traded price of the bar.")
    volume: float = pa.Field(nullable=False, description="Shares traded in the bar (Float64).")

    class Config:
        strict = False  # optional bid/ask columns may follow
        unique = list(KEY)
        description = "OHLCV bars in long format; every row rule of PRICE_RULES as a check."

    # The row rules of PRICE_RULES as dataframe checks, each named as its predicate.

    @pa.dataframe_check(name="ohlcv_not_null")
    @classmethod
    def _ohlcv_not_null(cls, data: PolarsData) -> pl.LazyFrame:
        return _rule_frame(data, "ohlcv_not_null")

    @pa.dataframe_check(name="ohlcv_finite")
    @classmethod
    def _ohlcv_finite(cls, data: PolarsData) -> pl.LazyFrame:
        return _rule_frame(data, "ohlcv_finite")

    @pa.dataframe_check(name="prices_positive")
    @classmethod
    def _prices_positive(cls, data: PolarsData) -> pl.LazyFrame:
        return _rule_frame(data, "prices_positive")

    @pa.dataframe_check(name="volume_non_negative")
    @classmethod
    def _volume_non_negative(cls, data: PolarsData) -> pl.LazyFrame:
        return _rule_frame(data, "volume_non_negative")

    @pa.dataframe_check(name="high_at_or_above_open_close")
    @classmethod
    def _high_at_or_above_open_close(cls, data: PolarsData) -> pl.LazyFrame:
        return _rule_frame(data, "high_at_or_above_open_close")

    @pa.dataframe_check(name="low_at_or_below_open_close")
    @classmethod
    def _low_at_or_below_open_close(cls, data: PolarsData) -> pl.LazyFrame:
        return _rule_frame(data, "low_at_or_below_open_close")

    @pa.dataframe_check(name="high_at_or_above_low")
    @classmethod
    def _high_at_or_above_low(cls, data: PolarsData) -> pl.LazyFrame:
        return _rule_frame(data, "high_at_or_above_low")

    @pa.dataframe_check(name="key_unique")
    @classmethod
    def _key_unique(cls, data: PolarsData) -> pl.LazyFrame:
        return _rule_frame(data, "key_unique")

    @pa.dataframe_check(name="timestamp_sorted_within_symbol")
    @classmethod
    def _timestamp_sorted_within_symbol(cls, data: PolarsData) -> pl.LazyFrame:
        return _rule_frame(data, "timestamp_sorted_within_symbol")


class SignalsSchema(pa.DataFrameModel):
    """Model scores per (timestamp, symbol), each with the time it became available."""

    timestamp: UtcDatetime = pa.Field(
        nullable=False, description="Bar close the signal was computed for (UTC)."
    )
    symbol: str = pa.Field(nullable=False, description="Ticker symbol; must exist in prices.")
    score: float = pa.Field(
        nullable=False, description="Model output (e.g. predicted 5-bar forward return), finite."
    )
    available_at: UtcDatetime = pa.Field(
        nullable=False,
        description="UTC time the signal became available; visible at the first bar closing at "
        "or after it.",
    )

    class Config:
        strict = False  # further model outputs may follow
        unique = list(KEY)
        description = "Signals in long format with explicit availability."

    @pa.check("score", name="score_finite")
    @classmethod
    def _score_finite(cls, data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_finite())


class FeaturesSchema(pa.DataFrameModel):
    """Indicators per (timestamp, symbol), each computed from bars up to and including t."""

    timestamp: UtcDatetime = pa.Field(nullable=False, description="Bar close (UTC).")
    symbol: str = pa.Field(nullable=False, description="Ticker symbol.")
    ret_1: float = pa.Field(nullable=True, description="1-bar simple return of close (fraction).")
    ret_5: float = pa.Field(nullable=True, description="5-bar simple return of close (fraction).")
    ret_20: float = pa.Field(nullable=True, description="20-bar simple return of close.")
    vol_20: float = pa.Field(
        nullable=True, description="Sample std (ddof=1) of the last 20 ret_1; per bar, not annual."
    )
    atr_14: float = pa.Field(
        nullable=True, description="Wilder's 14-bar average true range, currency per share."
    )
    atr_14_pct: float = pa.Field(nullable=True, description="atr_14 / close (fraction).")
    rsi_14: float = pa.Field(nullable=True, ge=0, le=100, description="Wilder's 14-bar RSI, 0-100.")
    sma_20: float = pa.Field(nullable=True, description="20-bar simple moving average of close.")
    ema_20: float = pa.Field(
        nullable=True, description="20-bar EMA of close (alpha 2/21, seeded with the SMA)."
    )
    close_to_sma_20: float = pa.Field(nullable=True, description="close / sma_20 - 1.")
    close_to_ema_20: float = pa.Field(nullable=True, description="close / ema_20 - 1.")
    zscore_20: float = pa.Field(
        nullable=True, description="(close - sma_20) / 20-bar sample std of close."
    )

    class Config:
        strict = False
        unique = list(KEY)
        description = "Per-symbol indicators; warm-up rows are null, never filled."

    @pa.dataframe_check(name="features_finite_or_null")
    @classmethod
    def _finite(cls, data: PolarsData) -> pl.LazyFrame:
        cols = pl.col(pl.Float64)
        return data.lazyframe.select(
            pl.all_horizontal(cols.is_finite().fill_null(True)).alias("features_finite_or_null")
        )


class ContextSchema(pa.DataFrameModel):
    """Market-wide values, one row per timestamp (never duplicated per symbol)."""

    timestamp: UtcDatetime = pa.Field(
        nullable=False,
        unique=True,
        description="Bar close (UTC) the context row belongs to; for a raw context file, the "
        "UTC time its values became known (e.g. 16:15 New York for VIX).",
    )
    # The columns below are optional: which appear depends on data.context.source.
    market_return: Optional[float] = pa.Field(  # noqa: UP045 - pandera reads Optional
        nullable=True,
        description="Equal-weight mean of the symbols' 1-bar close-to-close returns (fraction); "
        "null on the first bar.",
    )
    market_vol_20: Optional[float] = pa.Field(  # noqa: UP045
        nullable=True,
        description="Sample std (ddof=1) of the last 20 market_return values; per bar, not "
        "annualised; null during warm-up.",
    )
    n_symbols: Optional[pl.UInt32] = pa.Field(  # noqa: UP045
        nullable=True, description="Symbols with a return at this bar (market_return's count)."
    )
    vix: Optional[float] = pa.Field(  # noqa: UP045
        nullable=True,
        description="CBOE VIX close (index points) last known by the bar's close.",
    )
    context_timestamp: Optional[UtcDatetime] = pa.Field(  # noqa: UP045
        nullable=True,
        description="UTC time the joined context values became known (as-of join key); null "
        "when none was known yet.",
    )
    context_status: Optional[str] = pa.Field(  # noqa: UP045
        nullable=True,
        description="As-of join status: fresh (first bar to see the value), filled (carried "
        "forward), stale (past the fill limit, values null) or missing (nothing known yet).",
    )

    class Config:
        strict = False  # a context file's own columns follow
        description = "Context table keyed by timestamp alone."


# ---------------------------------------------------------------------------------------------
# Row-level validation


@dataclass(frozen=True)
class TableValidation:
    """Outcome of a row-level validation; ``valid.height + invalid.height`` = input rows.

    Attributes
    ----------
    valid : pl.DataFrame
        Rows passing every rule, input columns and order.
    invalid : pl.DataFrame
        Rows breaking at least one rule: ``row_index`` (UInt32, position in the input), every
        input column, and ``reason`` (String, broken rule names joined by ``"; "``).
    violations : pl.DataFrame
        One row per (row, broken rule): ``row_index``, the table's key columns (``timestamp``,
        ``symbol`` for prices), ``rule``; ordered by row_index then rule order.
    n_violations : int
        ``violations.height``.
    summary : dict[str, int]
        Rule name → number of *checked* rows breaking it, every rule present (zeros included).
    level : str
        Validation level that produced this result (``"fast"``, ``"standard"``, ``"paranoid"``).
    sampled : bool
        True when only a sample of the rows was checked (level ``fast`` on a frame larger than
        the sample). Then ``valid`` and ``invalid`` hold only the checked rows, and nothing is
        known about the others: an empty ``invalid`` does *not* mean the table is clean.
    n_rows : int
        Rows in the input.
    n_checked : int
        Rows the row rules were applied to (``n_rows`` unless ``sampled``).
    """

    valid: pl.DataFrame
    invalid: pl.DataFrame
    violations: pl.DataFrame
    n_violations: int
    summary: dict[str, int] = field(default_factory=dict)
    level: str = "standard"
    sampled: bool = False
    n_rows: int = 0
    n_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when no *checked* row breaks any rule (see ``sampled``)."""
        return self.n_violations == 0

    @property
    def n_unchecked(self) -> int:
        """Rows no row rule was applied to (0 unless ``sampled``)."""
        return self.n_rows - self.n_checked

    def drop_invalid(self, df: pl.DataFrame) -> pl.DataFrame:
        """``df`` without the rows found invalid (by ``row_index``), other rows in input order.

        ``df`` must be the frame that was validated. For a sampled result the unchecked rows are
        kept: they were not found invalid, which is not the same as valid.
        """
        if df.height != self.n_rows:
            raise ValueError(
                f"drop_invalid: frame has {df.height} rows, the validated one had {self.n_rows}"
            )
        if self.invalid.height == 0:
            return df
        keep = np.ones(df.height, dtype=bool)
        keep[self.invalid["row_index"].to_numpy()] = False
        return df.filter(pl.Series(keep))

    def rows_breaking(self, rule: str) -> pl.DataFrame:
        """Violations of one rule (``row_index``, key columns, ``rule``)."""
        if rule not in self.summary:
            raise ValueError(f"unknown rule {rule!r}; known: {list(self.summary)}")
        return self.violations.filter(pl.col("rule") == rule)


PriceValidation = TableValidation  # the name used by the issue-2 API


def _symbol_as_string(df: pl.DataFrame) -> pl.DataFrame:
    if "symbol" in df.columns and isinstance(df.schema["symbol"], pl.Categorical | pl.Enum):
        return df.with_columns(pl.col("symbol").cast(pl.String))
    return df


def check_structure(df: pl.DataFrame, model: type[pa.DataFrameModel]) -> None:
    """Check names and dtypes only (no value checks) against a schema model, all errors at once.

    ``symbol`` may be Categorical/Enum in memory; it is compared as String.

    Raises
    ------
    pandera.errors.SchemaErrors
        Listing every missing column and wrong dtype (``lazy=True``).
    """
    model.validate(_symbol_as_string(df.head(0)), lazy=True)


ValidationLevel = Literal["fast", "standard", "paranoid"]
VALIDATION_LEVELS: tuple[str, ...] = ("fast", "standard", "paranoid")
"""The levels ``validate_prices(level=...)`` accepts (``data.validation_level`` in configs)."""

DEFAULT_SAMPLE_SIZE = 10_000
"""Rows checked by level ``fast`` (when the frame is larger)."""

SIGNAL_TIMING_RULE_NAMES: tuple[str, str] = ("signal_available_before_use", "signal_not_stale")
"""The extra row rules of level ``paranoid``, in report order."""


def _sample_rows(n_rows: int, sample_size: int, seed: int) -> np.ndarray:
    # Uniform sample without replacement, returned in input order: the same (n, size, seed)
    # always gives the same rows.
    rng = np.random.default_rng(seed)
    picked = rng.choice(n_rows, size=sample_size, replace=False, shuffle=False)
    return np.sort(picked)


def _signal_timing_rules(df: pl.DataFrame, max_signal_age_bars: int | None) -> list[RowRule]:
    need = ("signal_timestamp", "signal_available_at")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(
            f"validate_prices(level='paranoid') checks signal timing on the market panel "
            f"(panel.build_market_panel): columns {missing} are missing (got {df.columns})"
        )
    if (
        isinstance(max_signal_age_bars, bool)
        or not isinstance(max_signal_age_bars, int)
        or max_signal_age_bars < 0
    ):
        raise ValueError(
            "validate_prices(level='paranoid') needs max_signal_age_bars, an int >= 0 (the "
            f"oldest signal, in bars of its symbol, that may be used), got {max_signal_age_bars!r}"
        )
    age = signal_age_bars(df)
    not_stale = (age <= max_signal_age_bars).fill_null(True)
    if "signal_status" in df.columns:  # rows whose signal the join already nulled as stale
        unused = ~df["signal_status"].is_in(["fresh", "filled"]).fill_null(False)
        not_stale = not_stale | unused
    limit = max_signal_age_bars
    return [
        RowRule(
            SIGNAL_TIMING_RULE_NAMES[0],
            lambda: (pl.col("signal_available_at") <= pl.col("timestamp")).fill_null(True),
            "the signal seen at a bar was available by that bar's close",
        ),
        RowRule(
            SIGNAL_TIMING_RULE_NAMES[1],
            lambda: pl.lit(not_stale),
            f"the signal used is at most {limit} bars of its symbol old",
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Plausibility: rows that are well-formed but not believable (``data.plausibility``)

CALENDAR_CHECKS: tuple[str, ...] = ("weekdays", "none")
"""The ``on_session_date`` rule's settings besides an exchange calendar's name
(``data.plausibility.calendar``): Monday to Friday, or unchecked."""

PLAUSIBILITY_RULE_NAMES: tuple[str, ...] = (
    "symbol_not_blank",
    "price_level_plausible",
    "return_plausible",
    "on_session_date",
)
"""The rules ``validate_prices(plausibility=...)`` adds, in report order."""


@dataclass(frozen=True)
class Plausibility:
    """Bounds that make a well-formed price row believable (``data.plausibility``).

    Attributes
    ----------
    max_price : float or None
        Largest allowed open/high/low/close, currency per share (default ``1e7``); None: no
        level rule. (Prices must be > 0 by ``prices_positive`` in any case.)
    min_return, max_return : float or None
        Bounds of the close-to-close simple return ``close / previous close - 1`` of a symbol's
        consecutive rows (fraction; defaults ``-0.99`` and ``10.0``); None: that side unchecked.
    calendar : str
        What every bar's date must be: a session of this ``exchange_calendars`` calendar
        (default ``XNYS``; the date is the bar's close in the calendar's zone), ``weekdays``
        (Monday to Friday, by the New York date) or ``none`` (unchecked).

    Raises
    ------
    ValueError
        A bound out of range, or a ``calendar`` that is neither an exchange calendar's name
        nor ``weekdays`` / ``none`` (the message names the closest calendars).
    """

    max_price: float | None = 1e7
    min_return: float | None = -0.99
    max_return: float | None = 10.0
    calendar: str = "XNYS"

    def __post_init__(self) -> None:
        if self.calendar not in CALENDAR_CHECKS:
            check_calendar_name(self.calendar, field="plausibility calendar")
        if self.max_price is not None and not (self.max_price > 0):
            raise ValueError(f"max_price must be > 0 or None, got {self.max_price!r}")
        if self.min_return is not None and not (-1 <= self.min_return < 0):
            raise ValueError(f"min_return must be in [-1, 0) or None, got {self.min_return!r}")
        if self.max_return is not None and not (self.max_return > 0):
            raise ValueError(f"max_return must be > 0 or None, got {self.max_return!r}")


def _finite_and(column: pl.Expr, condition: pl.Expr) -> pl.Expr:
    # Non-finite and null values pass: ``ohlcv_finite`` / ``ohlcv_not_null`` report them.
    return (~column.is_finite() | condition).fill_null(True)


def _price_level_flags(df: pl.DataFrame, max_price: float | None) -> pl.Series:
    if max_price is None:
        return pl.repeat(True, df.height, dtype=pl.Boolean, eager=True)
    return df.select(
        pl.all_horizontal(_finite_and(pl.col(c), pl.col(c) <= max_price) for c in OHLC)
    ).to_series()


def _return_flags(df: pl.DataFrame, low: float | None, high: float | None) -> pl.Series:
    # The return into each row from the previous row of its symbol, in input order (the
    # prices contract is in time order within a symbol; ``timestamp_sorted_within_symbol``
    # reports rows that are not).
    ret = pl.col("close") / pl.col("close").shift(1).over("symbol") - 1.0
    ok = pl.lit(True)
    if low is not None:
        ok = ok & (ret >= low)
    if high is not None:
        ok = ok & (ret <= high)
    return df.select(_finite_and(ret, ok)).to_series()


def _session_flags(df: pl.DataFrame, calendar: str) -> pl.Series:
    if calendar == "none" or df.height == 0:
        return pl.repeat(True, df.height, dtype=pl.Boolean, eager=True)
    zone = "America/New_York" if calendar == "weekdays" else calendar_tz(calendar)
    local = df.select(pl.col("timestamp").dt.convert_time_zone(zone).dt.date()).to_series()
    weekday = (local.dt.weekday() <= 5).fill_null(True)
    if calendar == "weekdays":
        return weekday
    sessions = session_closes(calendar)["date"]
    on_session = local.is_in(sessions.implode())
    # Outside the calendar's range (before 1990, more than a year ahead) only weekends are
    # judged.
    outside = (local < sessions.min()) | (local > sessions.max())
    return (on_session | (outside & weekday)).fill_null(True)


def plausibility_rules(df: pl.DataFrame, plausibility: Plausibility) -> list[RowRule]:
    """The plausibility rules for ``df``, each pre-evaluated on every row of ``df``.

    ``return_plausible`` compares a row with the previous row of its symbol, so it is evaluated
    on the whole frame (never on a sample, where the previous row would be another one).

    Returns
    -------
    list of RowRule
        ``symbol_not_blank`` (symbol not empty or whitespace), ``price_level_plausible``
        (open/high/low/close <= ``max_price``), ``return_plausible`` (close-to-close return
        within [``min_return``, ``max_return``]), ``on_session_date`` (the bar's date, in the
        calendar's zone, is a session of ``calendar``); a rule whose bound is None passes every
        row. Each ``passes()`` is a literal Boolean column as long as ``df``.
    """
    p = plausibility
    flags = {
        "symbol_not_blank": df.select(
            (pl.col("symbol").cast(pl.String).str.strip_chars().str.len_chars() > 0).fill_null(True)
        ).to_series(),
        "price_level_plausible": _price_level_flags(df, p.max_price),
        "return_plausible": _return_flags(df, p.min_return, p.max_return),
        "on_session_date": _session_flags(df, p.calendar),
    }
    descriptions = {
        "symbol_not_blank": "symbol is not empty or whitespace",
        "price_level_plausible": f"open, high, low and close are <= {p.max_price}",
        "return_plausible": f"close-to-close return within [{p.min_return}, {p.max_return}]",
        "on_session_date": f"the bar's date is a session of calendar {p.calendar!r}",
    }
    return [
        RowRule(name, lambda s=flags[name]: pl.lit(s), descriptions[name])
        for name in PLAUSIBILITY_RULE_NAMES
    ]


def _rules_on_rows(rules: Sequence[RowRule], rows: np.ndarray) -> list[RowRule]:
    # Pre-evaluated rules restricted to the sampled rows (their literal columns indexed).
    out = []
    for rule in rules:
        flags = pl.select(rule.passes()).to_series()[pl.Series(rows)]
        out.append(RowRule(rule.name, lambda s=flags: pl.lit(s), rule.description))
    return out


def validate_prices(
    df: pl.DataFrame,
    level: ValidationLevel | str = "standard",
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
    *,
    max_signal_age_bars: int | None = None,
    plausibility: Plausibility | None = None,
) -> PriceValidation:
    """Validate a prices frame at a validation level: dtypes with pandera, then row rules.

    Levels (the seeds' fast / standard / paranoid):

    - ``"fast"``: names and dtypes, then the row rules on a deterministic uniform sample of
      ``sample_size`` rows (seeded by ``seed``; the whole frame when it is not larger). The
      result has ``sampled=True`` and ``n_checked`` = sample size; ``valid``/``invalid`` hold
      only sampled rows and nothing is claimed about the others. The cross-row rules
      (``key_unique``, ``timestamp_sorted_within_symbol``) compare sampled rows with each
      other only, so they can miss problems but never report a false one.
    - ``"standard"`` (default): names and dtypes, then every rule on every row.
    - ``"paranoid"``: ``standard`` on the market panel (``panel.build_market_panel``: the price
      columns plus ``signal_timestamp`` and ``signal_available_at``) plus two signal timing
      rules: ``signal_available_before_use`` (``signal_available_at <= timestamp``) and
      ``signal_not_stale`` (a used signal is at most ``max_signal_age_bars`` bars of its symbol
      old; see ``timing.signal_age_bars`` and ``timing.stale_signal_uses``).

    Parameters
    ----------
    df : pl.DataFrame
        Prices in the contract (see ``PricesSchema``): timestamp ``Datetime[us, UTC]``, symbol
        String (or Categorical), OHLCV Float64; extra columns are kept. For ``paranoid``, the
        market panel.
    level : {"fast", "standard", "paranoid"}
        Validation level.
    sample_size : int
        Rows checked by ``fast`` (>= 1). Ignored by the other levels.
    seed : int
        Seed of the ``fast`` sample (``numpy.random.default_rng``); same seed, same rows.
    max_signal_age_bars : int, optional
        Required by ``paranoid``: the oldest allowed signal age in bars (>= 0).
    plausibility : Plausibility, optional
        Adds the plausibility rules (:func:`plausibility_rules`): ``symbol_not_blank``,
        ``price_level_plausible``, ``return_plausible``, ``on_session_date``. The pipeline
        passes ``data.plausibility`` (on by default there); None (the default here): not
        applied. They are evaluated on every row, also at level ``fast`` (whose sample then
        reports the sampled rows' results), because ``return_plausible`` needs each row's
        previous row.

    Returns
    -------
    PriceValidation
        ``valid`` and ``invalid`` rows (nothing dropped; for ``fast``, of the checked rows), one
        ``violations`` row per (row, rule) with ``row_index`` the position in ``df``, the count
        per rule, and ``level``, ``sampled``, ``n_rows``, ``n_checked``. Price rules:
        ``ohlcv_not_null``, ``ohlcv_finite``, ``prices_positive``, ``volume_non_negative``,
        ``high_at_or_above_open_close``, ``low_at_or_below_open_close``,
        ``high_at_or_above_low``, ``key_unique``, ``timestamp_sorted_within_symbol``, then the
        plausibility rules if asked for. A rule ignores null operands (the null is reported by
        ``ohlcv_not_null`` only); every copy of a duplicated key is flagged.

    Raises
    ------
    pandera.errors.SchemaErrors
        If columns are missing or have the wrong dtype (e.g. naive or non-UTC timestamps, Int64
        volume); all such problems are listed together.
    ValueError
        Unknown ``level``; ``sample_size`` < 1; for ``paranoid``, missing signal columns or a
        missing/negative ``max_signal_age_bars``.

    Examples
    --------
    >>> import polars as pl
    >>> from ml4t_pipeline.lib.io import load_demo_prices
    >>> report = validate_prices(load_demo_prices(), level="fast", sample_size=500)
    >>> report.sampled, report.n_checked
    (True, 500)
    """
    if level not in VALIDATION_LEVELS:
        raise ValueError(f"unknown validation level {level!r}; expected one of {VALIDATION_LEVELS}")
    check_structure(df, PricesSchema)
    extra = [] if plausibility is None else plausibility_rules(df, plausibility)
    if level == "standard":
        return validate_rows(df, [*PRICE_RULES, *extra], KEY)
    if level == "paranoid":
        rules = [*PRICE_RULES, *extra, *_signal_timing_rules(df, max_signal_age_bars)]
        return replace(validate_rows(df, rules, KEY), level="paranoid")
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
        raise ValueError(f"sample_size must be an int >= 1, got {sample_size!r}")
    if sample_size >= df.height:
        return replace(validate_rows(df, [*PRICE_RULES, *extra], KEY), level="fast")
    rows = _sample_rows(df.height, sample_size, seed)
    sample = df[pl.Series(rows)]
    checked = validate_rows(sample, [*PRICE_RULES, *_rules_on_rows(extra, rows)], KEY)

    def to_input_rows(frame: pl.DataFrame) -> pl.DataFrame:
        # Row positions in the sample -> positions in the input.
        positions = rows[frame["row_index"].to_numpy()].astype(np.uint32)
        return frame.with_columns(pl.Series("row_index", positions, dtype=pl.UInt32))

    return TableValidation(
        valid=checked.valid,
        invalid=to_input_rows(checked.invalid),
        violations=to_input_rows(checked.violations),
        n_violations=checked.n_violations,
        summary=checked.summary,
        level="fast",
        sampled=True,
        n_rows=df.height,
        n_checked=rows.size,
    )


def validate_rows(
    df: pl.DataFrame, rules: Sequence[RowRule], key: Sequence[str]
) -> TableValidation:
    """Apply row rules to every row and split the frame into valid and invalid rows.

    Parameters
    ----------
    df : pl.DataFrame
        Any table; must not have columns named ``row_index`` or ``reason``.
    rules : sequence of RowRule
        The rules, in report order; names must be unique.
    key : sequence of str
        Columns identifying a row in ``violations`` (e.g. ``("timestamp", "symbol")``).

    Returns
    -------
    TableValidation
        Nothing is dropped: ``valid`` + ``invalid`` hold every input row.

    Raises
    ------
    ValueError
        Reserved column names present, or duplicate rule names.
    """
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate rule names: {names}")
    reserved = [c for c in ("row_index", "reason") if c in df.columns]
    if reserved:
        raise ValueError(f"columns {reserved} are reserved for the validation report")
    flag = "__broken_"
    flag_cols = [f"{flag}{r.name}" for r in rules]
    # Only the Boolean flags are computed over the whole frame; the report columns (row index,
    # reason) are built for the broken rows alone, and a clean frame is returned without a copy.
    flags = df.select([(~r.passes()).fill_null(True).alias(f"{flag}{r.name}") for r in rules])
    totals = flags.select([pl.col(c).sum().alias(c.removeprefix(flag)) for c in flag_cols])
    counts = {k: int(v[0]) for k, v in totals.to_dict(as_series=False).items()}
    id_cols = ["row_index", *key]
    if not any(counts.values()):
        return TableValidation(
            valid=df,
            invalid=df.clear()
            .with_row_index("row_index")
            .with_columns(pl.lit(None, pl.String).alias("reason")),
            violations=df.select(key)
            .clear()
            .with_row_index("row_index")
            .with_columns(pl.lit(None, pl.String).alias("rule")),
            n_violations=0,
            summary=counts,
            n_rows=df.height,
            n_checked=df.height,
        )
    any_broken = flags.select(pl.any_horizontal(flag_cols)).to_series()
    valid = df.filter(~any_broken)
    rows = any_broken.arg_true()
    reason = pl.concat_str(
        [pl.when(pl.col(f"{flag}{r.name}")).then(pl.lit(r.name)) for r in rules],
        separator="; ",
        ignore_nulls=True,
    )
    broken = pl.concat(
        [
            rows.cast(pl.UInt32).alias("row_index").to_frame(),
            df[rows],
            flags[rows].with_columns(reason.alias("reason")),
        ],
        how="horizontal",
    )
    invalid = broken.select(["row_index", *df.columns, "reason"])
    violations = (
        broken.select([*id_cols, *flag_cols])
        .unpivot(index=id_cols, variable_name="rule", value_name="x")
        .filter(pl.col("x"))
        .with_columns(pl.col("rule").str.strip_prefix(flag).cast(pl.Enum(names)))
        .sort(["row_index", "rule"])
        .with_columns(pl.col("rule").cast(pl.String))
        .drop("x")
    )
    return TableValidation(
        valid=valid,
        invalid=invalid,
        violations=violations,
        n_violations=violations.height,
        summary=counts,
        n_rows=df.height,
        n_checked=df.height,
    )


# ---------------------------------------------------------------------------------------------
# Signals, features and context


def _require_utc_columns(df: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    problems = []
    for c in columns:
        if c not in df.columns:
            problems.append(f"{c!r} missing")
            continue
        dtype = df.schema[c]
        if not isinstance(dtype, pl.Datetime) or dtype.time_zone != "UTC":
            problems.append(f"{c!r} is {dtype}, expected Datetime(time_zone='UTC')")
    if problems:
        raise ValueError(f"{what}: {'; '.join(problems)} (columns: {df.columns})")


def _value_columns(df: pl.DataFrame, exclude: Sequence[str]) -> list[str]:
    return [c for c, t in df.schema.items() if c not in exclude and t.is_numeric()]


def _symbol_known(known_symbols: Sequence[str] | pl.Series) -> RowRule:
    known = pl.Series("known", list(known_symbols), dtype=pl.String).unique()
    return RowRule(
        "symbol_known",
        lambda: pl.col("symbol").cast(pl.String).is_in(known.implode()),
        "symbol appears in prices",
    )


def _all_finite(columns: list[str], allow_null: bool) -> Callable[[], pl.Expr]:
    def passes() -> pl.Expr:
        if not columns:
            return pl.lit(True)
        if allow_null:
            return pl.all_horizontal(pl.col(c).is_finite().fill_null(True) for c in columns)
        return pl.all_horizontal(pl.col(c).is_finite().fill_null(False) for c in columns)

    return passes


def _key_unique_rule(key: Sequence[str], name: str) -> RowRule:
    return RowRule(
        name, lambda: ~pl.struct(list(key)).is_duplicated(), f"({', '.join(key)}) appears once"
    )


def validate_signals(
    signals: pl.DataFrame, known_symbols: Sequence[str] | pl.Series | None = None
) -> TableValidation:
    """Row rules for a signals table: unique key, finite non-null values, availability, symbols.

    Parameters
    ----------
    signals : pl.DataFrame
        ``timestamp`` and ``available_at`` (``Datetime[us, UTC]``), ``symbol``, and numeric value
        columns (every numeric column is a model output).
    known_symbols : sequence of str or pl.Series, optional
        The symbols of the prices table; when given, rows for other symbols break
        ``symbol_known``.

    Returns
    -------
    TableValidation
        Rules: ``key_unique``, ``values_finite`` (every value column non-null and finite),
        ``available_at_not_null``, and ``symbol_known`` when ``known_symbols`` is given.

    Raises
    ------
    ValueError
        If ``timestamp``/``available_at``/``symbol`` are missing or the times are not UTC, a
        value column is stored as text (String), or there is no numeric value column.
    """
    _require_utc_columns(signals, ("timestamp", "available_at"), "signals")
    if "symbol" not in signals.columns:
        raise ValueError(f"signals: 'symbol' missing (columns: {signals.columns})")
    text = [
        c
        for c, t in signals.schema.items()
        if c not in (*KEY, "available_at") and t in (pl.String, pl.Categorical)
    ]
    if text:
        indexed = signals.with_row_index("row_index").select("row_index", "symbol", *text)
        unparsable = indexed.filter(
            pl.any_horizontal(
                pl.col(c).is_not_null()
                & pl.col(c)
                .cast(pl.String)
                .str.strip_chars()
                .cast(pl.Float64, strict=False)
                .is_null()
                for c in text
            )
        )
        shown = unparsable if unparsable.height else indexed
        raise ValueError(
            f"signals: value columns {text} are stored as text, not numbers; scores are not "
            f"converted silently. {unparsable.height} rows do not parse as numbers. First "
            f"{'unparsable ' if unparsable.height else ''}rows: {shown.head(3).to_dicts()}"
        )
    values = _value_columns(signals, KEY)
    if not values:
        raise ValueError(f"signals: no numeric value column (columns: {signals.columns})")
    rules = [
        _key_unique_rule(KEY, "key_unique"),
        RowRule("values_finite", _all_finite(values, allow_null=False), "values finite"),
        RowRule(
            "available_at_not_null",
            lambda: pl.col("available_at").is_not_null(),
            "available_at is set",
        ),
    ]
    if known_symbols is not None:
        rules.append(_symbol_known(known_symbols))
    return validate_rows(signals, rules, KEY)


def validate_features(
    features: pl.DataFrame, known_symbols: Sequence[str] | pl.Series | None = None
) -> TableValidation:
    """Row rules for a features table: unique key, values finite or null (warm-up), symbols.

    Parameters
    ----------
    features : pl.DataFrame
        ``timestamp`` (``Datetime[us, UTC]``), ``symbol`` and numeric indicator columns.
    known_symbols : sequence of str or pl.Series, optional
        The symbols of the prices table (adds the ``symbol_known`` rule).

    Returns
    -------
    TableValidation
        Rules: ``key_unique``, ``values_finite_or_null``, and ``symbol_known`` if requested.

    Raises
    ------
    ValueError
        If ``timestamp`` is missing or not UTC, or ``symbol`` is missing.
    """
    _require_utc_columns(features, ("timestamp",), "features")
    if "symbol" not in features.columns:
        raise ValueError(f"features: 'symbol' missing (columns: {features.columns})")
    values = _value_columns(features, KEY)
    rules = [
        _key_unique_rule(KEY, "key_unique"),
        RowRule(
            "values_finite_or_null",
            _all_finite(values, allow_null=True),
            "no NaN or infinite indicator values (nulls are warm-up)",
        ),
    ]
    if known_symbols is not None:
        rules.append(_symbol_known(known_symbols))
    return validate_rows(features, rules, KEY)


def validate_context(
    context: pl.DataFrame, required_columns: Sequence[str] = ()
) -> TableValidation:
    """Row rules for a context table: one row per timestamp, used columns not null, finite.

    Parameters
    ----------
    context : pl.DataFrame
        ``timestamp`` (``Datetime[us, UTC]``) plus market-wide columns.
    required_columns : sequence of str
        The columns the experiment uses; a null in any of them breaks ``required_not_null``.

    Returns
    -------
    TableValidation
        Rules: ``timestamp_unique``, ``required_not_null``, ``values_finite_or_null``.

    Raises
    ------
    ValueError
        If ``timestamp`` is missing or not UTC, a required column is absent, or a value column
        (other than ``context_status``) is stored as text.
    """
    _require_utc_columns(context, ("timestamp",), "context")
    absent = [c for c in required_columns if c not in context.columns]
    if absent:
        raise ValueError(f"context: required columns {absent} missing ({context.columns})")
    text = [
        c
        for c, t in context.schema.items()
        if c != "context_status" and t in (pl.String, pl.Categorical)
    ]
    if text:
        first = context.with_row_index("row_index").select("row_index", "timestamp", *text).head(3)
        raise ValueError(
            f"context: value columns {text} are stored as text, not numbers; they are not "
            f"converted silently. First rows: {first.to_dicts()}"
        )
    required = list(required_columns)
    values = _value_columns(context, ("timestamp",))
    rules = [
        _key_unique_rule(("timestamp",), "timestamp_unique"),
        RowRule(
            "required_not_null",
            lambda: (
                pl.all_horizontal(pl.col(c).is_not_null() for c in required)
                if required
                else pl.lit(True)
            ),
            f"no null in {required}",
        ),
        RowRule(
            "values_finite_or_null",
            _all_finite(values, allow_null=True),
            "no NaN or infinite values",
        ),
    ]
    return validate_rows(context, rules, ("timestamp",))
