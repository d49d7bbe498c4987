"""Position-rule decisions, stated once for both engine drivers.

Each decision is written once as plain Python and compiled from that same source (as
:mod:`engine.core.matching` and :mod:`engine.core.costs`): ``name`` is the Python form the
rules of :mod:`engine.risk.rules` call in the Python driver, ``name_nb`` the compiled form the
compiled driver (:mod:`engine.compiled.topn`) calls; ``tests/engine/test_core_rules.py``
checks both on hand-checked cases. What a function reads (the entry price, the best price
since the entry, the close, the rule's own state) is gathered by its caller; the function
holds only the rule's arithmetic.

- :func:`breakeven_stop`: when ``BreakEvenRule`` moves the stop, and to what level
  (:func:`breakeven_stops`: of many positions at once, compiled);
- :func:`partial_take`: when ``PartialProfitTaking`` fires, for how many shares, and which of
  its levels are then used up.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from engine.core.jit import njit

FloatArray = npt.NDArray[np.float64]

MAX_PARTIAL_LEVELS = 62
"""Most levels of a ``PartialProfitTaking`` the compiled form :func:`partial_take_nb` takes: it
keeps the levels already used in the bits of one int64 (the plain form, on Python ints, takes
any number)."""


def breakeven_stop(
    direction: float, entry: float, best: float, trigger: float, offset: float
) -> float:
    """``BreakEvenRule``'s stop candidate for one position, or NaN while it is not triggered.

    The rule triggers once the maximum favourable excursion as a fraction of the entry price,
    ``max(0, (best / entry - 1) × direction)``, reaches ``trigger``; the stop then becomes
    ``entry × (1 + direction × offset)`` (break-even plus ``offset`` of locked-in profit).

    Parameters
    ----------
    direction : float
        +1.0 for a long position, -1.0 for a short.
    entry : float
        Average entry price, currency per share (> 0).
    best : float
        Most favourable price since the entry, currency per share: the highest high for a
        long, the lowest low for a short.
    trigger : float
        Excursion that triggers the move, a fraction in (0, 1).
    offset : float
        Profit locked in, a fraction of the entry price in [0, 1).

    Returns
    -------
    float
        The stop level in currency per share, NaN when the excursion is below ``trigger``
        (or unknown: a NaN ``best``).
    """
    excursion = (best / entry - 1.0) * direction
    if excursion < 0.0:
        excursion = 0.0
    if excursion >= trigger:
        return entry * (1.0 + direction * offset)
    return math.nan


def partial_take(
    levels: FloatArray,
    done: int,
    direction: float,
    entry: float,
    close: float,
    original: float,
    held: float,
) -> tuple[float, int]:
    """``PartialProfitTaking``'s exit for one position on one bar.

    Each level ``(return_pct, fraction)`` not yet used fires when the close-to-entry return
    ``(close / entry - 1) × direction`` reaches ``return_pct``, for ``fraction × original``
    shares; levels reached on the same bar add up; the total is capped at the shares held.

    Parameters
    ----------
    levels : ndarray
        float64, shape (k, 2): rows ``(return_pct, fraction)``; ``k <= MAX_PARTIAL_LEVELS``
        for the compiled form.
    done : int
        The levels already used by this trade: bit ``j`` set for level ``j`` (0 for a new
        trade).
    direction : float
        +1.0 long, -1.0 short.
    entry : float
        Average entry price, currency per share (> 0).
    close : float
        This bar's close, currency per share.
    original : float
        Shares held (unsigned) when the rule first saw the trade.
    held : float
        Shares held now (unsigned).

    Returns
    -------
    tuple of (float, int)
        The shares to sell (unsigned, before rounding to whole shares; 0.0: no exit) and the
        updated ``done``.
    """
    ret = (close / entry - 1.0) * direction
    size = 0.0
    for j in range(levels.shape[0]):
        if not (done >> j) & 1 and ret >= levels[j, 0]:
            done |= 1 << j
            size += levels[j, 1] * original
    if held < size:
        size = held
    return size, done


breakeven_stop_nb = njit(breakeven_stop)
partial_take_nb = njit(partial_take)


@njit
def breakeven_stops(
    direction: FloatArray, entry: FloatArray, best: FloatArray, trigger: float, offset: float
) -> FloatArray:
    """:func:`breakeven_stop` of each of ``m`` positions (the Python driver's batch path).

    Parameters
    ----------
    direction, entry, best : ndarray
        float64, shape (m,): as :func:`breakeven_stop`'s scalars.
    trigger, offset : float
        The rule's fractions.

    Returns
    -------
    ndarray
        float64, shape (m,): the stop candidates, NaN where not triggered.
    """
    out = np.empty(entry.shape[0])
    for k in range(entry.shape[0]):
        out[k] = breakeven_stop_nb(direction[k], entry[k], best[k], trigger, offset)
    return out
