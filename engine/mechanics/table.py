"""Corporate actions as data: the validated table of splits and cash dividends
(:class:`CorporateActions`) and its schedule for the symbols of a run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

if TYPE_CHECKING:
    from engine.data import MarketData

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CORPORATE_ACTION_COLUMNS = ("symbol", "ex_date", "split_ratio", "dividend", "pay_date")
"""Columns of a corporate-actions table (``split_ratio``, ``dividend``, ``pay_date`` optional)."""

MAX_LISTED = 10


class CorporateActionsError(ValueError):
    """A corporate-actions table that breaks a rule; the message names the offending rows."""


def listed_rows(frame: pl.DataFrame, what: str) -> str:
    """A message naming the rows of ``frame`` (a ``row`` column, 0-based, and the offending
    fields; the first :data:`MAX_LISTED`, then a count): ``"<n> row(s) <what>: row 3
    (symbol=A, ...); ..."``."""
    rows = frame.head(MAX_LISTED).to_dicts()
    shown = "; ".join(
        "row "
        + str(r["row"])
        + " ("
        + ", ".join(f"{k}={r[k]}" for k in r if k != "row" and r[k] is not None)
        + ")"
        for r in rows
    )
    more = f" and {frame.height - MAX_LISTED} more" if frame.height > MAX_LISTED else ""
    return f"{frame.height} row(s) {what}: {shown}{more}"


class CorporateActions:
    """A validated table of splits and cash dividends (one row per symbol and ex-date).

    Parameters
    ----------
    frame : pl.DataFrame
        Columns ``symbol`` (String), ``ex_date`` (Date: the first session that trades
        without the dividend / on the new share count), and at least one of
        ``split_ratio`` (Float64, new shares per old share: 7.0 for a 7:1 split, 0.05 for a
        1:20 reverse split; missing or null = 1.0) and ``dividend`` (Float64, cash per share
        in the raw prices of the session before the ex-date; missing or null = 0.0);
        optionally ``pay_date`` (Date, on or after ``ex_date``; null = paid on the ex-date).
        Other columns are refused.

    Raises
    ------
    CorporateActionsError
        A missing or unknown column, a wrong dtype, a null symbol or ex-date, a ratio ≤ 0
        or not finite, a negative or non-finite dividend, a duplicate (symbol, ex_date), or
        a pay date before its ex-date. The message names the rows (0-based ``row``).

    Notes
    -----
    A dividend and a split on the same ex-date: the dividend is paid on the shares held
    before the split (Lean's factor files state both in pre-split prices).
    Validation against prices (unknown symbol, a dividend not below the previous close) needs
    the price table: :func:`ml4t_pipeline.lib.corporate_actions.validate_against_prices`.

    Examples
    --------
    >>> import polars as pl
    >>> from datetime import date
    >>> actions = CorporateActions(pl.DataFrame({
    ...     "symbol": ["AAPL"], "ex_date": [date(2014, 6, 9)], "split_ratio": [7.0]}))
    >>> actions
    CorporateActions(1 rows, 1 symbols, 1 splits, 0 dividends)
    """

    def __init__(self, frame: pl.DataFrame) -> None:
        if not isinstance(frame, pl.DataFrame):
            raise CorporateActionsError(
                f"corporate actions must be a polars DataFrame, got {type(frame).__name__}"
            )
        unknown = [c for c in frame.columns if c not in CORPORATE_ACTION_COLUMNS]
        if unknown:
            raise CorporateActionsError(
                f"corporate actions: unknown column(s) {unknown}; "
                f"expected {list(CORPORATE_ACTION_COLUMNS)}"
            )
        missing = [c for c in ("symbol", "ex_date") if c not in frame.columns]
        if missing or not ({"split_ratio", "dividend"} & set(frame.columns)):
            raise CorporateActionsError(
                "corporate actions need columns symbol, ex_date and split_ratio and/or "
                f"dividend; got {frame.columns}"
            )
        expected = {
            "symbol": (pl.String,),
            "ex_date": (pl.Date,),
            "split_ratio": (pl.Float64, pl.Float32, pl.Int64, pl.Int32),
            "dividend": (pl.Float64, pl.Float32, pl.Int64, pl.Int32),
            "pay_date": (pl.Date,),
        }
        for name in frame.columns:
            if frame.schema[name] not in expected[name] and frame.schema[name] != pl.Null:
                raise CorporateActionsError(
                    f"corporate actions: column {name!r} has dtype {frame.schema[name]}, "
                    f"expected {expected[name][0]}"
                )
        table = frame.with_row_index("row").with_columns(
            (
                pl.col("split_ratio").cast(pl.Float64).fill_null(1.0)
                if "split_ratio" in frame.columns
                else pl.lit(1.0)
            ).alias("split_ratio"),
            (
                pl.col("dividend").cast(pl.Float64).fill_null(0.0)
                if "dividend" in frame.columns
                else pl.lit(0.0)
            ).alias("dividend"),
            (
                pl.col("pay_date").cast(pl.Date)
                if "pay_date" in frame.columns
                else pl.lit(None, dtype=pl.Date)
            ).alias("pay_date"),
        )
        key = ["row", "symbol", "ex_date"]
        problems = [
            (
                table.filter(pl.col("symbol").is_null() | pl.col("ex_date").is_null()),
                "with a null symbol or ex_date",
                key,
            ),
            (
                table.filter(~pl.col("split_ratio").is_finite() | (pl.col("split_ratio") <= 0)),
                "with a split_ratio <= 0 or not finite",
                [*key, "split_ratio"],
            ),
            (
                table.filter(~pl.col("dividend").is_finite() | (pl.col("dividend") < 0)),
                "with a negative or non-finite dividend",
                [*key, "dividend"],
            ),
            (
                table.filter(pl.struct("symbol", "ex_date").is_duplicated()),
                "with a duplicate (symbol, ex_date)",
                key,
            ),
            (
                table.filter(pl.col("pay_date") < pl.col("ex_date")),
                "with a pay_date before the ex_date",
                [*key, "pay_date"],
            ),
        ]
        for bad, what, cols in problems:
            if bad.height:
                message = listed_rows(bad.select(cols), what)
                raise CorporateActionsError("corporate actions: " + message)
        self.frame: pl.DataFrame = table.drop("row").sort("ex_date", "symbol")
        self._schedules: dict[tuple[str, ...], Any] = {}  # per run's symbol list
        """The validated table (all five columns, nulls filled), sorted by ex_date, symbol."""

    def __len__(self) -> int:
        return self.frame.height

    def __repr__(self) -> str:
        f = self.frame
        return (
            f"CorporateActions({f.height} rows, {f['symbol'].n_unique()} symbols, "
            f"{int((f['split_ratio'] != 1.0).sum())} splits, "
            f"{int((f['dividend'] > 0).sum())} dividends)"
        )


class Schedule(NamedTuple):
    """The actions of a table for the symbols of a run, in ex-date order."""

    ex_day: IntArray  # days since 1970-01-01
    sid: IntArray
    ratio: FloatArray
    dividend: FloatArray
    pay_day: IntArray  # -1: paid on the ex-date
    ex_date: pl.Series
    pay_date: pl.Series
    names: pl.Series  # symbol names by id


def schedule(actions: CorporateActions | None, data: MarketData) -> Schedule:
    """The actions of ``actions`` for the symbols of ``data`` (symbol ids are ``data``'s), in
    ex-date order; empty arrays without a table. Cached on the table per symbol list (a few
    entries), so repeated runs on one panel build it once."""
    names = pl.Series("symbol", [str(s) for s in data.symbols.tolist()], dtype=pl.String)
    if actions is None:
        empty_i = np.zeros(0, dtype=np.int64)
        return Schedule(
            empty_i,
            empty_i,
            np.zeros(0),
            np.zeros(0),
            empty_i,
            pl.Series("ex_date", [], dtype=pl.Date),
            pl.Series("pay_date", [], dtype=pl.Date),
            names,
        )
    key = tuple(names.to_list())
    cached: Schedule | None = actions._schedules.get(key)
    if cached is not None:
        return cached
    ids = pl.DataFrame({"symbol": names, "sid": np.arange(names.len(), dtype=np.int64)})
    f = actions.frame.join(ids, on="symbol", how="inner", maintain_order="left")
    sched = Schedule(
        f["ex_date"].cast(pl.Int32).to_numpy().astype(np.int64),
        f["sid"].to_numpy().astype(np.int64),
        f["split_ratio"].to_numpy().astype(np.float64),
        f["dividend"].to_numpy().astype(np.float64),
        f["pay_date"].cast(pl.Int32).fill_null(-1).to_numpy().astype(np.int64),
        f["ex_date"],
        f["pay_date"],
        names,
    )
    if len(actions._schedules) >= 4:
        actions._schedules.clear()
    actions._schedules[key] = sched
    return sched
