"""Financing accrued at a bar boundary: interest on cash and the short borrow fee.

One compiled kernel, written as plain Python and compiled from that source, used by every
driver (the Python driver through :class:`engine.mechanics.MarketMechanics`).

For the interval from the previous bar's close to this bar's close (``days`` calendar days,
the elapsed time in days) on the balances held over it (the cash and the positions at the
previous close, marked at that close), with ``basis`` the day-count denominator (360 for
actual/360, 365 for actual/365):

- interest = ``cash × credit_rate × days / basis`` when cash > 0, ``cash × debit_rate ×
  days / basis`` when cash < 0 (negative: a charge);
- borrow fee = ``Σ_short |quantity| × mark × borrow_rate[symbol] × days / basis`` (≥ 0, a
  charge).

Rates are annual simple rates (fractions). This is the daily accrual of a prime broker
(Interactive Brokers charges both per calendar day on the day's balances; LEAN's margin
interest and short fee models accrue daily as well).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.core.jit import njit
from engine.core.layout import ACC_CASH

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@njit
def accrue(
    held: IntArray,
    qty: FloatArray,
    marks: FloatArray,
    borrow_rates: FloatArray,
    cash: float,
    days: float,
    credit_rate: float,
    debit_rate: float,
    basis: float,
) -> tuple[float, float]:
    """Interest on ``cash`` and borrow fee on the short positions among ``held`` (module
    docstring).

    Parameters
    ----------
    held : int64 array
        Symbol ids with a position.
    qty, marks, borrow_rates : float64 arrays, shape (n_symbols,)
        Signed shares, latest close (currency per share), annual borrow rate (fraction).
    cash, days, credit_rate, debit_rate, basis : float

    Returns
    -------
    (interest, borrow_fee) : tuple of float
        Currency: ``interest`` is added to the cash (signed), ``borrow_fee`` (≥ 0) is taken
        from it.
    """
    rate = credit_rate if cash > 0.0 else debit_rate
    interest = cash * rate * days / basis
    fee = 0.0
    for k in range(held.size):
        s = held[k]
        q = qty[s]
        if q < 0.0:
            m = marks[s]
            if m == m:
                fee += -q * m * borrow_rates[s]
    return interest, fee * days / basis


@njit
def bar_financing(
    i: int,
    timestamps: IntArray,
    held: IntArray,
    qty: FloatArray,
    marks: FloatArray,
    borrow_rates: FloatArray,
    acc: FloatArray,
    rates: FloatArray,
    interest_out: FloatArray,
    fee_out: FloatArray,
) -> None:
    """Financing at the start of bar ``i`` > 0 for a compiled driver: :func:`accrue` over
    ``days = (timestamps[i] - timestamps[i - 1]) / 86_400e6`` with ``rates`` = (credit,
    debit, basis); the cash (``acc[ACC_CASH]``) += interest − fee; ``interest_out[i]`` =
    interest, ``fee_out[i]`` = −fee (currency)."""
    if i == 0:
        return
    days = (timestamps[i] - timestamps[i - 1]) / 86_400_000_000
    interest, fee = accrue(
        held, qty, marks, borrow_rates, acc[ACC_CASH], days, rates[0], rates[1], rates[2]
    )
    if interest != 0.0 or fee != 0.0:
        acc[ACC_CASH] += interest - fee
        interest_out[i] = interest
        fee_out[i] = 0.0 - fee
