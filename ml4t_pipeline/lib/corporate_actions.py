"""Corporate actions as data: loading, validation against prices, and price adjustment.

A corporate-actions table has one row per (symbol, ex_date): ``split_ratio`` (new shares per
old share) and ``dividend`` (cash per share, in the raw prices of the session before the
ex-date), optionally ``pay_date`` (:class:`engine.mechanics.CorporateActions` states the
columns and checks the table itself). It comes from a generic Parquet/CSV file or from
Lean's factor files (:func:`from_lean_factors`).

``data.adjustment`` decides what the engine trades:

- ``raw``: the raw prices; the engine applies each action on its ex-date
  (:class:`engine.ExecutionConfig` ``corporate_actions``);
- ``split_adjusted``: prices divided by the product of the ratios of the splits after the
  bar (volume multiplied by it), LEAN's ``SplitAdjusted``;
- ``total_return``: split-adjusted and multiplied by ``1 - dividend / previous close`` for
  every dividend after the bar (the CRSP / LEAN ``Adjusted`` backward factor): a buy-and-hold
  on it equals holding the raw shares with every dividend reinvested at the ex-date's
  previous close.

Backward factors use actions after the bar, i.e. the future. Ratios of prices taken at or
before a bar (returns, volatility, RSI, price relative to its moving average) do not depend
on the factors of later actions, so they equal what a raw-price user knew at that bar; a
price *level* does, which is why :func:`point_in_time_levels` rescales level-valued columns
to the bar's own raw units (:func:`adjustment_factors`, ``split_adjusted``).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import polars as pl

from engine.mechanics import CorporateActions, CorporateActionsError, listed_rows

ADJUSTMENTS = ("raw", "split_adjusted", "total_return")
"""Price normalisation modes (LEAN's ``DataNormalizationMode`` names where they fit)."""

LEAN_COLUMNS = ("symbol", "date", "price_factor", "split_factor", "reference_price")
_RATIO_SNAP = 1e-4
_SESSION_GAP_DAYS = 5
"""A Lean row's next session further than this (calendar days) is a gap in the prices (QQQ
traded as QQQQ 2004-2011): the ex-date is then the next weekday."""


def _snap_ratio(ratio: float) -> float:
    """A split ratio from rounded factors (0.25 / 0.0357143 = 6.99999) as the nearby simple
    fraction (7.0) when within 1e-4 relative; else unchanged."""
    simple = Fraction(ratio).limit_denominator(1000)
    value = float(simple)
    return value if abs(ratio - value) <= _RATIO_SNAP * value else ratio


def _str_symbols(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with a String ``symbol`` (prepared prices carry a Categorical one)."""
    return frame.with_columns(pl.col("symbol").cast(pl.String))


def _day(col: str = "timestamp") -> pl.Expr:
    """The UTC calendar date of a timestamp column (naive stamps: their own date), the date
    the engine compares ex-dates with."""
    return pl.col(col).dt.date()


def from_lean_factors(factors: pl.DataFrame, prices: pl.DataFrame | None = None) -> pl.DataFrame:
    """The corporate actions stated by Lean factor-file rows.

    Lean's format (``Data/equity/usa/factor_files/<sym>.csv``): a row's ``price_factor`` and
    ``split_factor`` apply to the dates up to and including its ``date``, back to the
    previous row's date; a row's date is the last session before an ex-date. Between rows
    ``i`` and ``i + 1`` of a symbol:

    - split ratio = ``split_factor[i + 1] / split_factor[i]`` (snapped to a simple fraction
      within 1e-4: the factors are rounded to 7 digits);
    - dividend = ``reference_price[i] × (1 − price_factor[i] / price_factor[i + 1])``
      (currency per share, in the raw prices of ``date[i]``);
    - ex-date = the symbol's first session after ``date[i]`` in ``prices`` when given and
      at most 5 calendar days later (else the next weekday: the prices have a gap there).

    Parameters
    ----------
    factors : pl.DataFrame
        Columns :data:`LEAN_COLUMNS` (``/work/shared/data/lean_factor_files.parquet``).
    prices : pl.DataFrame, optional
        ``timestamp``, ``symbol`` of the raw prices: the sessions that give ex-dates.

    Returns
    -------
    pl.DataFrame
        ``symbol``, ``ex_date`` (Date), ``split_ratio``, ``dividend`` (Float64), one row per
        row pair with a change, sorted by symbol and ex_date.

    Raises
    ------
    CorporateActionsError
        Missing columns, or rows with a non-positive factor (named).
    """
    missing = [c for c in LEAN_COLUMNS if c not in factors.columns]
    if missing:
        raise CorporateActionsError(f"Lean factor rows: missing column(s) {missing}")
    f = factors.select(LEAN_COLUMNS).with_row_index("row")
    bad = f.filter((pl.col("price_factor") <= 0) | (pl.col("split_factor") <= 0))
    if bad.height:
        raise CorporateActionsError(
            "Lean factor rows: " + listed_rows(bad, "with a price_factor or split_factor <= 0")
        )
    f = f.sort("symbol", "date")
    pairs = f.with_columns(
        pl.col("split_factor").shift(-1).over("symbol").alias("next_split"),
        pl.col("price_factor").shift(-1).over("symbol").alias("next_price"),
    ).filter(pl.col("next_split").is_not_null())
    pairs = pairs.with_columns(
        (pl.col("next_split") / pl.col("split_factor")).alias("ratio"),
        (pl.col("reference_price") * (1.0 - pl.col("price_factor") / pl.col("next_price"))).alias(
            "dividend"
        ),
    ).filter(((pl.col("ratio") - 1.0).abs() > 1e-9) | (pl.col("dividend").abs() > 1e-9))
    pairs = pairs.with_columns(
        pl.col("ratio").map_elements(_snap_ratio, return_dtype=pl.Float64).alias("split_ratio"),
        pl.col("dividend").clip(lower_bound=0.0).round(6),
    )
    next_weekday = pl.col("date").dt.add_business_days(1)
    if prices is None:
        pairs = pairs.with_columns(next_weekday.alias("ex_date"))
    else:
        sessions = (
            _str_symbols(prices)
            .select(pl.col("symbol"), _day().alias("session"))
            .unique()
            .sort("symbol", "session")
        )
        pairs = (
            pairs.sort("date")
            .join_asof(
                sessions.sort("session"),
                left_on="date",
                right_on="session",
                by="symbol",
                strategy="forward",
                allow_exact_matches=False,
                check_sortedness=False,
            )
            .with_columns(
                pl.when((pl.col("session") - pl.col("date")).dt.total_days() <= _SESSION_GAP_DAYS)
                .then(pl.col("session"))
                .otherwise(next_weekday)
                .alias("ex_date")
            )
        )
    return pairs.select("symbol", "ex_date", "split_ratio", "dividend").sort("symbol", "ex_date")


def read_corporate_actions(
    path: str | Path, fmt: str = "table", prices: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Read a corporate-actions file.

    Parameters
    ----------
    path : str or Path
        A Parquet (``.parquet``) or CSV file.
    fmt : {"table", "lean"}
        ``table``: the generic columns (:data:`engine.mechanics.CORPORATE_ACTION_COLUMNS`;
        in a CSV, dates as ``YYYY-MM-DD``); ``lean``: Lean factor-file rows
        (:func:`from_lean_factors`).
    prices : pl.DataFrame, optional
        Raw prices (``timestamp``, ``symbol``): the sessions that give Lean ex-dates.

    Returns
    -------
    pl.DataFrame
        The table's rows (validated by :class:`engine.mechanics.CorporateActions`).

    Raises
    ------
    CorporateActionsError
        An unknown format or suffix, or a table that breaks a rule (rows named).
    """
    p = Path(path)
    if p.suffix == ".parquet":
        frame = pl.read_parquet(p)
    elif p.suffix == ".csv":
        frame = pl.read_csv(p, try_parse_dates=True)
    else:
        raise CorporateActionsError(f"{p}: corporate actions must be .parquet or .csv")
    if fmt == "lean":
        frame = from_lean_factors(frame, prices)
    elif fmt != "table":
        raise CorporateActionsError(f"unknown corporate-actions format {fmt!r}: table or lean")
    CorporateActions(frame)
    return frame


def validate_against_prices(actions: pl.DataFrame, prices: pl.DataFrame) -> None:
    """Check a corporate-actions table against the raw prices it applies to.

    Refused, naming the rows (0-based ``row`` of ``actions``): a symbol that has no price
    rows; a dividend not below the symbol's last close before the ex-date.

    Raises
    ------
    CorporateActionsError
    """
    table = CorporateActions(actions).frame
    rows = actions.with_row_index("row").select("row", "symbol", "ex_date")
    table = table.join(rows, on=["symbol", "ex_date"], how="left")
    known = prices.get_column("symbol").cast(pl.String).unique().to_list()
    unknown = table.filter(~pl.col("symbol").is_in(known)).sort("row")
    if unknown.height:
        raise CorporateActionsError(
            "corporate actions: "
            + listed_rows(unknown.select("row", "symbol", "ex_date"), "for a symbol with no prices")
        )
    prev = previous_closes(table, prices)
    big = prev.filter(pl.col("dividend") >= pl.col("previous_close")).sort("row")
    if big.height:
        raise CorporateActionsError(
            "corporate actions: "
            + listed_rows(
                big.select("row", "symbol", "ex_date", "dividend", "previous_close"),
                "with a dividend not below the previous close",
            )
        )


def previous_closes(actions: pl.DataFrame, prices: pl.DataFrame) -> pl.DataFrame:
    """``actions`` with ``previous_close``: the symbol's last raw close before the ex-date
    (null when there is none)."""
    closes = (
        _str_symbols(prices)
        .select("symbol", _day().alias("session"), pl.col("close").alias("previous_close"))
        .sort("session")
    )
    return (
        actions.sort("ex_date")
        .join_asof(
            closes,
            left_on="ex_date",
            right_on="session",
            by="symbol",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        .drop("session")
    )


def adjustment_factors(prices: pl.DataFrame, actions: pl.DataFrame, mode: str) -> pl.DataFrame:
    """``prices`` with ``price_factor`` (adjusted price = raw × it) and ``volume_factor``
    (adjusted volume = raw × it) per row.

    ``split_adjusted``: price_factor = Π 1 / ratio over the symbol's splits with ex-date
    after the row's date, volume_factor = its inverse; ``total_return``: the price factor
    also has Π (1 − dividend / previous close) over the later dividends; ``raw``: 1.

    Raises
    ------
    ValueError
        An unknown mode.
    """
    if mode not in ADJUSTMENTS:
        raise ValueError(f"adjustment must be one of {ADJUSTMENTS}, got {mode!r}")
    if mode == "raw" or actions.height == 0:
        return prices.with_columns(
            pl.lit(1.0).alias("price_factor"), pl.lit(1.0).alias("volume_factor")
        )
    table = previous_closes(CorporateActions(actions).frame, prices)
    split = 1.0 / pl.col("split_ratio")
    multiplier = split
    if mode == "total_return":
        multiplier = split * pl.when(pl.col("previous_close") > 0).then(
            1.0 - pl.col("dividend") / pl.col("previous_close")
        ).otherwise(1.0)
    events = (
        table.sort("symbol", "ex_date")
        .with_columns(multiplier.alias("m"), split.alias("s"))
        .with_columns(
            pl.col("m").reverse().cum_prod().reverse().over("symbol").alias("price_factor"),
            (1.0 / pl.col("s").reverse().cum_prod().reverse().over("symbol")).alias(
                "volume_factor"
            ),
        )
        .select("symbol", "ex_date", "price_factor", "volume_factor")
        .sort("ex_date")
    )
    keyed = _str_symbols(prices).with_row_index("_order").with_columns(_day().alias("_session"))
    joined = keyed.sort("_session").join_asof(
        events,
        left_on="_session",
        right_on="ex_date",
        by="symbol",
        strategy="forward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    return (
        joined.sort("_order")
        .with_columns(pl.col("price_factor", "volume_factor").fill_null(1.0))
        .drop("_order", "_session", "ex_date")
        .with_columns(pl.col("symbol").cast(prices.schema["symbol"]))
    )


PRICE_COLUMNS = ("open", "high", "low", "close")


def adjust_prices(prices: pl.DataFrame, actions: pl.DataFrame, mode: str) -> pl.DataFrame:
    """The prices under ``mode`` (``raw``: unchanged): open/high/low/close (and ``bid``,
    ``ask`` when present) × price factor, volume × volume factor
    (:func:`adjustment_factors`). Same rows, same order, same columns."""
    if mode == "raw":
        return prices
    f = adjustment_factors(prices, actions, mode)
    cols = [c for c in (*PRICE_COLUMNS, "bid", "ask") if c in prices.columns]
    exprs = [pl.col(c) * pl.col("price_factor") for c in cols]
    if "volume" in prices.columns:
        exprs.append(pl.col("volume") * pl.col("volume_factor"))
    return f.with_columns(exprs).select(prices.columns)


def point_in_time_levels(
    frame: pl.DataFrame, prices: pl.DataFrame, actions: pl.DataFrame, columns: list[str]
) -> pl.DataFrame:
    """Level-valued columns of ``frame`` (currency per share, computed on split-adjusted
    prices) rescaled to each bar's raw units: divided by the bar's split price factor.

    A split-adjusted level at bar t carries the factors of splits after t; dividing by
    them leaves a value that uses only splits up to t, which a raw-price user knew at t.
    """
    factors = adjustment_factors(
        prices.select("timestamp", "symbol", "close"), actions, "split_adjusted"
    ).select("timestamp", "symbol", "price_factor")
    factors = factors.with_columns(pl.col("symbol").cast(frame.schema["symbol"]))
    out = frame.join(factors, on=["timestamp", "symbol"], how="left", maintain_order="left")
    return out.with_columns(
        [pl.col(c) / pl.col("price_factor").fill_null(1.0) for c in columns]
    ).drop("price_factor")


def load_actions(
    path: str | Path, fmt: str, prices: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, int]:
    """The corporate actions of an experiment: :func:`read_corporate_actions`, and, for
    ``fmt="lean"``, only the tickers that have prices.

    Returns
    -------
    (actions, n_left_out) : tuple of pl.DataFrame and int
        The actions and how many Lean rows were left out for tickers without prices (0 for
        ``table``, which keeps every row: an unknown symbol is then refused by
        :func:`validate_against_prices`).
    """
    frame = read_corporate_actions(path, fmt, prices)
    if fmt != "lean" or prices is None:
        return frame, 0
    symbols = prices.get_column("symbol").cast(pl.String).unique().to_list()
    kept = frame.filter(pl.col("symbol").is_in(symbols))
    return kept, frame.height - kept.height


LEVEL_FEATURES = ("atr_14", "sma_20", "ema_20")
"""Level-valued (currency per share) columns of
:func:`ml4t_pipeline.lib.features.compute_features`."""


def prepare_prices(
    prices: pl.DataFrame, path: str | Path, fmt: str, adjustment: str
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Validated prices under ``adjustment``, with counts for the asset's metadata.

    Loads the actions (:func:`load_actions`), validates them against ``prices`` (the raw
    prices) and adjusts under ``split_adjusted`` / ``total_return`` (:func:`adjust_prices`).

    Raises
    ------
    CorporateActionsError
        A bad table (rows named).
    """
    actions, left_out = load_actions(path, fmt, prices)
    validate_against_prices(actions, prices)
    counts = {
        "corporate_actions": actions.height,
        "splits": int((actions.get_column("split_ratio") != 1.0).sum())
        if "split_ratio" in actions.columns
        else 0,
        "rows_left_out": left_out,
    }
    return adjust_prices(prices, actions, adjustment), counts


def raw_features(prices: pl.DataFrame, actions: pl.DataFrame) -> pl.DataFrame:
    """:func:`~ml4t_pipeline.lib.features.compute_features` for a run on raw prices.

    Computed on the split-adjusted prices (a split is not a return), then the level columns
    (:data:`LEVEL_FEATURES`) are put back in each bar's raw units
    (:func:`point_in_time_levels`): every value uses only splits up to its bar. Scale-free
    columns (returns, volatility, RSI, ratios to moving averages) need no rescaling: the
    factors of later splits cancel in them.
    """
    from ml4t_pipeline.lib.features import compute_features

    adjusted = adjust_prices(prices, actions, "split_adjusted")
    frame = compute_features(adjusted)
    levels = [c for c in LEVEL_FEATURES if c in frame.columns]
    return point_in_time_levels(frame, prices, actions, levels)
