"""Row rules of a prices table: the structural rules every bar must pass (``PRICE_RULES``) and
the configurable plausibility rules (``data.plausibility``: price level, close-to-close return,
session calendar, blank symbol).

Each rule is a snake_case predicate name with a polars expression that is True where a row
**passes**; :mod:`ml4t_pipeline.lib.schemas` turns them into pandera checks (``PricesSchema``)
and per-row reports (``validate_prices``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from ml4t_pipeline.lib.calendars import calendar_tz, check_calendar_name, session_closes
from ml4t_pipeline.lib.stamps import keys_unique_in_order

__all__ = [
    "CALENDAR_CHECKS",
    "KEY",
    "OHLC",
    "OHLCV",
    "PLAUSIBILITY_RULE_NAMES",
    "PRICE_RULES",
    "PRICE_RULE_NAMES",
    "Plausibility",
    "PriceRule",
    "RowRule",
    "plausibility_rules",
    "price_rules_for",
]

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

_PASS_IN_KEY_ORDER = ("key_unique", "timestamp_sorted_within_symbol")


def price_rules_for(df: pl.DataFrame) -> tuple[PriceRule, ...]:
    """:data:`PRICE_RULES` for the whole of ``df``, with the two key rules settled up front when
    the rows are in (timestamp, symbol) order with no null and no repeated key.

    Such a frame (the prices contract's order) breaks neither ``key_unique`` (each key once)
    nor ``timestamp_sorted_within_symbol`` (time never steps back, so neither within a symbol):
    both become constant passes after two cheap passes over the keys
    (:func:`~ml4t_pipeline.lib.stamps.keys_unique_in_order`), instead of a hash of every key
    and a window per symbol (70 of the 80 ms the nine rules take on the S&P prices). Any
    other frame gets :data:`PRICE_RULES` as they are, so the verdicts are the same either way.
    Apply the result to ``df`` itself, not to a sample of its rows.
    """
    if any(c not in df.columns for c in KEY) or not keys_unique_in_order(df):
        return PRICE_RULES
    return tuple(
        RowRule(r.name, _constant_pass, r.description) if r.name in _PASS_IN_KEY_ORDER else r
        for r in PRICE_RULES
    )


def _constant_pass() -> pl.Expr:
    return pl.lit(True)


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
    # Each distinct stamp is judged once (1,258 for the S&P file's 619k rows: the time-zone
    # conversion was 40 of its 42 ms), then looked up per row; a null stamp passes.
    stamps = df.get_column("timestamp")
    distinct = stamps.drop_nulls().unique()
    local = distinct.dt.convert_time_zone(zone).dt.date()
    weekday = local.dt.weekday() <= 5
    if calendar == "weekdays":
        ok = weekday
    else:
        sessions = session_closes(calendar)["date"]
        on_session = local.is_in(sessions.implode())
        # Outside the calendar's range (before 1990, more than a year ahead) only weekends are
        # judged.
        outside = (local < sessions.min()) | (local > sessions.max())
        ok = on_session | (outside & weekday)
    return stamps.replace_strict(distinct, ok, default=True, return_dtype=pl.Boolean)


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
