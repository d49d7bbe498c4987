"""The outputs of a run's market mechanics, the same for both drivers: the
``corporate_actions`` event table and the per-bar cash lines of ``portfolio_states``."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.mechanics.table import Schedule

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class MechanicsOutput(Protocol):
    """What :class:`engine.BacktestResult` reads of a run's market mechanics."""

    def events_frame(self) -> pl.DataFrame:
        """The ``corporate_actions`` output table (one row per action applied)."""

    def add_state_columns(self, states: pl.DataFrame) -> pl.DataFrame:
        """``states`` with the per-bar ``dividends``, ``interest`` and ``borrow_fee`` columns."""


def events_frame(sched: Schedule, stamps: IntArray, ks: IntArray, rows: FloatArray) -> pl.DataFrame:
    """The ``corporate_actions`` output: one row per action that touched the portfolio (a
    held position or working orders): timestamp (the bar it was applied at, UTC), symbol,
    ex_date, split_ratio, dividend (per share), quantity_before / quantity_after (shares),
    dividend_cash (currency, signed: paid to longs, owed by shorts), cash_in_lieu
    (currency), pay_date, orders_adjusted.

    ``ks``: schedule rows; ``rows``: float64, (n, 5): quantity before, after, dividend
    cash, cash in lieu, orders adjusted.
    """
    index = pl.Series(ks, dtype=pl.Int64)
    return pl.DataFrame(
        {
            "timestamp": pl.Series(stamps, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "symbol": sched.names.gather(pl.Series(sched.sid[ks], dtype=pl.Int64)),
            "ex_date": sched.ex_date.gather(index),
            "split_ratio": sched.ratio[ks],
            "dividend": sched.dividend[ks],
            "quantity_before": rows[:, 0],
            "quantity_after": rows[:, 1],
            "dividend_cash": rows[:, 2],
            "cash_in_lieu": rows[:, 3],
            "pay_date": sched.pay_date.gather(index),
            "orders_adjusted": pl.Series(rows[:, 4], dtype=pl.Float64).cast(pl.Int64),
        }
    )


def add_state_columns(states: pl.DataFrame, stamps: IntArray, values: FloatArray) -> pl.DataFrame:
    """``states`` (portfolio_states) with the per-bar cash lines ``dividends``, ``interest``
    (signed) and ``borrow_fee`` (≤ 0), currency, 0 where nothing was booked; ``values``:
    float64, (n, 3), the lines at the bar closes ``stamps`` (µs, UTC; each one of the states'
    timestamps)."""
    bars = states.get_column("timestamp").to_physical().to_numpy()
    at = np.searchsorted(bars, stamps)
    lines = np.zeros((3, bars.size))
    lines[:, at] = values.T
    return states.with_columns(
        pl.Series("dividends", lines[0]),
        pl.Series("interest", lines[1]),
        pl.Series("borrow_fee", lines[2]),
    )
