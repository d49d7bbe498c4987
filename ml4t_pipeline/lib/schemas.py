"""Pandera (polars backend) schemas of the prepared tables, and row-level price validation.

Each prepared table has one ``DataFrameModel`` with a description on every column (the asset
publishes it as its column schema). ``validate_prices`` splits a prices frame into valid rows and
offending rows, naming every rule each row breaks; nothing is dropped or repaired.

The price rules are written once, as polars expressions in ``PRICE_RULES``
(:mod:`ml4t_pipeline.lib.price_rules`), and used both by ``PricesSchema`` (as pandera dataframe
checks) and by ``validate_prices`` (per row, through the generic
:func:`~ml4t_pipeline.lib.row_validation.validate_rows`). ``validate_prices(plausibility=...)``
adds the configurable plausibility rules of the same module (price level, close-to-close
return, session calendar, blank symbol; ``data.plausibility`` in the pipeline). Their names are
importable from here too, as before the split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Annotated, Literal, Optional

import numpy as np
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from ml4t_pipeline.lib.asof import signal_age_bars
from ml4t_pipeline.lib.price_rules import (
    CALENDAR_CHECKS,
    KEY,
    OHLC,
    OHLCV,
    PLAUSIBILITY_RULE_NAMES,
    PRICE_RULE_NAMES,
    PRICE_RULES,
    Plausibility,
    PriceRule,
    RowRule,
    plausibility_rules,
    price_rules_for,
)
from ml4t_pipeline.lib.row_validation import (
    PriceValidation,
    TableValidation,
    check_structure,
    validate_rows,
)
from ml4t_pipeline.lib.stamps import by_symbol_code, keys_unique_in_order

__all__ = [
    "CALENDAR_CHECKS",
    "DEFAULT_SAMPLE_SIZE",
    "KEY",
    "OHLC",
    "OHLCV",
    "PLAUSIBILITY_RULE_NAMES",
    "PRICE_RULES",
    "PRICE_RULE_NAMES",
    "SIGNAL_TIMING_RULE_NAMES",
    "VALIDATION_LEVELS",
    "ContextSchema",
    "FeaturesSchema",
    "Plausibility",
    "PriceRule",
    "PriceValidation",
    "PricesSchema",
    "RowRule",
    "SignalsSchema",
    "TableValidation",
    "check_structure",
    "plausibility_rules",
    "validate_context",
    "validate_features",
    "validate_prices",
    "validate_rows",
    "validate_signals",
]


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
        return validate_rows(df, [*price_rules_for(df), *extra], KEY)
    if level == "paranoid":
        rules = [*price_rules_for(df), *extra, *_signal_timing_rules(df, max_signal_age_bars)]
        return replace(validate_rows(df, rules, KEY), level="paranoid")
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
        raise ValueError(f"sample_size must be an int >= 1, got {sample_size!r}")
    if sample_size >= df.height:
        return replace(validate_rows(df, [*price_rules_for(df), *extra], KEY), level="fast")
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


def _symbol_known(
    known_symbols: Sequence[str] | pl.Series, df: pl.DataFrame | None = None
) -> RowRule:
    known = pl.Series("known", list(known_symbols), dtype=pl.String).unique()
    if df is not None and isinstance(df.schema["symbol"], pl.Categorical | pl.Enum):
        # Each distinct symbol is looked up once and the verdict gathered by its code: the
        # same flags without a text copy of every row (null symbol: null, as before).
        flags = by_symbol_code(df, lambda text: text.is_in(known.implode()))
        return RowRule("symbol_known", lambda: flags, "symbol appears in prices")
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


def _key_unique_rule(key: Sequence[str], name: str, df: pl.DataFrame | None = None) -> RowRule:
    description = f"({', '.join(key)}) appears once"
    if df is not None and tuple(key) == KEY and keys_unique_in_order(df):
        # In (timestamp, symbol) order with no null and no twin neighbour, no key repeats: two
        # passes over the keys settle the rule instead of a hash of every key.
        return RowRule(name, lambda: pl.lit(True), description)
    return RowRule(name, lambda: ~pl.struct(list(key)).is_duplicated(), description)


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
        _key_unique_rule(KEY, "key_unique", signals),
        RowRule("values_finite", _all_finite(values, allow_null=False), "values finite"),
        RowRule(
            "available_at_not_null",
            lambda: pl.col("available_at").is_not_null(),
            "available_at is set",
        ),
    ]
    if known_symbols is not None:
        rules.append(_symbol_known(known_symbols, signals))
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
        _key_unique_rule(KEY, "key_unique", features),
        RowRule(
            "values_finite_or_null",
            _all_finite(values, allow_null=True),
            "no NaN or infinite indicator values (nulls are warm-up)",
        ),
    ]
    if known_symbols is not None:
        rules.append(_symbol_known(known_symbols, features))
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
