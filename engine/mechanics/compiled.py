"""The market mechanics of the compiled TopN driver (:mod:`engine.compiled.topn`): its
inputs, state and output buffers (:class:`CompiledMechanics`) and their conversion to the
outputs the Python driver gives (:class:`CompiledOutput`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

from engine.core.actions import (
    EV_AFTER,
    EV_APPLIED,
    EV_BEFORE,
    EV_CASH,
    EV_LIEU,
    EV_ORDERS,
    N_EV,
    new_payment_state,
)
from engine.mechanics.delisting import Delisting, delisting_rows
from engine.mechanics.financing import Financing, borrow_rates
from engine.mechanics.outputs import add_state_columns, events_frame
from engine.mechanics.table import CorporateActions, schedule

if TYPE_CHECKING:
    from engine.data import MarketData

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_DAY_US = 86_400_000_000


class CompiledMechanics(NamedTuple):
    """The market mechanics of a compiled run (:func:`compiled_mechanics`): inputs, state and
    the output buffers the driver fills (:func:`engine.core.actions.bar_actions`,
    :func:`engine.core.actions.bar_payments`, :func:`engine.core.financing.bar_financing`,
    :func:`engine.core.delisting.delisted_book_pass`).

    Inputs: ``ev_bar`` / ``ev_sid`` / ``ev_pay`` (int64) and ``ev_ratio`` / ``ev_div``
    (float64), one per scheduled action (the bar it applies at: the first bar on or after
    its ex-date; its pay day, days since 1970-01-01, -1: paid on the ex-date); ``borrow``
    (float64, per symbol, annual); ``rates`` (float64, ``M_*`` slots: credit, debit, basis,
    1.0 if financing, 1.0 if actions, 1.0 if delisting, the delisting return, the reason code
    of a delisting's closing order); ``terminal`` (bool, per data row: the symbol is delisted
    at that row, :func:`engine.core.delisting.delisting_rows`; empty without delisting).
    State: ``owed`` (float64, per action, dividend cash not yet paid), ``payment`` (float64,
    :func:`engine.core.actions.new_payment_state`), ``delisted`` (bool, per symbol).
    Outputs: ``ev_out`` (float64, (n_actions, N_EV)), ``dividends`` / ``interest`` / ``fee``
    (float64, per bar, currency).
    """

    ev_bar: IntArray
    ev_sid: IntArray
    ev_ratio: FloatArray
    ev_div: FloatArray
    ev_pay: IntArray
    borrow: FloatArray
    rates: FloatArray
    terminal: npt.NDArray[np.bool_]
    owed: FloatArray
    payment: FloatArray
    delisted: npt.NDArray[np.bool_]
    ev_out: FloatArray
    dividends: FloatArray
    interest: FloatArray
    fee: FloatArray


N_M = 8
M_CREDIT, M_DEBIT, M_BASIS, M_FINANCING, M_ACTIONS, M_DELISTING, M_DELIST_RETURN, M_REASON = range(
    N_M
)
"""Slots of :attr:`CompiledMechanics.rates`."""


def compiled_mechanics_reason(
    actions: CorporateActions | None, delisting: Delisting | None
) -> str | None:
    """Why the compiled driver cannot run these mechanics (``None``: it can). It runs every
    corporate action (with or without pay dates), delistings and financing: always ``None``
    (kept for the planner's checks, :func:`engine.compiled.plan.compiled_reason`)."""
    return None


def compiled_mechanics(
    data: MarketData,
    actions: CorporateActions | None,
    financing: Financing | None,
    delisting: Delisting | None = None,
    reason_code: int = -1,
) -> CompiledMechanics:
    """The :class:`CompiledMechanics` of a run on ``data`` (empty arrays when unset);
    ``reason_code``: the reason code of ``"delisted"`` in the run's records (the closing
    orders of delisted positions)."""
    sched = schedule(actions, data)
    days = np.asarray(data.timestamps, dtype=np.int64) // _DAY_US
    ev_bar = np.searchsorted(days, sched.ex_day, side="left").astype(np.int64)
    n_t = data.n_timestamps
    rates = np.zeros(N_M)
    if financing is not None:
        rates[M_CREDIT] = financing.credit_rate
        rates[M_DEBIT] = financing.debit_rate
        rates[M_BASIS] = financing.basis
        rates[M_FINANCING] = 1.0
    rates[M_ACTIONS] = 1.0 if sched.sid.size else 0.0
    if delisting is not None:
        rates[M_DELISTING] = 1.0
        rates[M_DELIST_RETURN] = delisting.delisting_return
        rates[M_REASON] = reason_code
        terminal = delisting_rows(data, delisting.gap_sessions)
    else:
        terminal = np.zeros(0, dtype=np.bool_)
    return CompiledMechanics(
        ev_bar,
        sched.sid,
        sched.ratio,
        sched.dividend,
        sched.pay_day,
        borrow_rates(data, financing),
        rates,
        terminal,
        np.zeros(sched.sid.size),
        new_payment_state(),
        np.zeros(data.n_symbols, dtype=np.bool_),
        np.zeros((sched.sid.size, N_EV)),
        np.zeros(n_t),
        np.zeros(n_t),
        np.zeros(n_t),
    )


def fresh_compiled(mech: CompiledMechanics) -> CompiledMechanics:
    """``mech`` with its state and output buffers reset (for a retry of the run)."""
    return mech._replace(
        owed=np.zeros_like(mech.owed),
        payment=new_payment_state(),
        delisted=np.zeros_like(mech.delisted),
        ev_out=np.zeros_like(mech.ev_out),
        dividends=np.zeros_like(mech.dividends),
        interest=np.zeros_like(mech.interest),
        fee=np.zeros_like(mech.fee),
    )


class CompiledOutput:
    """A compiled run's market-mechanics outputs, as :class:`MechanicsOutput`."""

    def __init__(self, data: MarketData, actions: CorporateActions | None, out: CompiledMechanics):
        self._sched = schedule(actions, data)
        self._stamps = np.asarray(data.timestamps, dtype=np.int64)
        self._out = out

    def events_frame(self) -> pl.DataFrame:
        """The ``corporate_actions`` output (:func:`events_frame`), the rows the Python
        driver records."""
        ev = self._out.ev_out
        touched = (ev[:, EV_APPLIED] != 0.0) & ((ev[:, EV_BEFORE] != 0.0) | (ev[:, EV_ORDERS] != 0))
        ks = np.flatnonzero(touched).astype(np.int64)
        rows = ev[ks][:, [EV_BEFORE, EV_AFTER, EV_CASH, EV_LIEU, EV_ORDERS]]
        return events_frame(self._sched, self._stamps[self._out.ev_bar[ks]], ks, rows)

    def add_state_columns(self, states: pl.DataFrame) -> pl.DataFrame:
        """``states`` with the per-bar cash lines (:func:`add_state_columns`)."""
        out = self._out
        active = np.flatnonzero((out.dividends != 0) | (out.interest != 0) | (out.fee != 0))
        values = np.stack([out.dividends[active], out.interest[active], out.fee[active]], axis=1)
        return add_state_columns(states, self._stamps[active], values)


def compiled_outputs(
    data: MarketData,
    actions: CorporateActions | None,
    financing: Financing | None,
    fractional: bool,
    out: CompiledMechanics,
) -> CompiledOutput:
    """The outputs of a compiled run's mechanics (:class:`CompiledOutput`)."""
    return CompiledOutput(data, actions, out)
