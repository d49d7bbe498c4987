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
  its levels are then used up;
- :func:`atr_level`: the level ``VolatilityScaledStopLoss`` / ``VolatilityScaledTakeProfit``
  set at an entry fill (:func:`atr_levels`: of many positions at once, compiled);
- :func:`regime_above`: which member of a ``RegimeDependentRule`` applies
  (:func:`regime_flags`: over a whole context column, compiled).
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


def atr_level(entry: float, direction: float, side: float, multiplier: float, atr: float) -> float:
    """The stop-loss or take-profit level ``multiplier`` ATRs from the entry price.

    ``entry + side × direction × multiplier × atr``: ``side`` -1.0 for a stop-loss (below a
    long's entry, above a short's), +1.0 for a take-profit.

    Parameters
    ----------
    entry : float
        Average entry price, currency per share.
    direction : float
        +1.0 long, -1.0 short.
    side : float
        -1.0 stop-loss, +1.0 take-profit.
    multiplier : float
        ``k`` > 0.
    atr : float
        The average true range, currency per share, read on the last bar completed before the
        entry fill.

    Returns
    -------
    float
        The level in currency per share; NaN (no level) when ``atr`` is not finite and > 0.
    """
    if not (math.isfinite(atr) and atr > 0.0):
        return math.nan
    return entry + side * direction * multiplier * atr


def regime_above(value: float, threshold: float) -> bool:
    """Whether a ``RegimeDependentRule`` is in its ``above`` regime: ``value > threshold``.

    A NaN ``value`` (no context value at that bar) is not above: the ``below`` member applies.

    Parameters
    ----------
    value : float
        The context column's value at the bar the rule reads (units of that column, e.g. VIX
        points).
    threshold : float
        The rule's finite threshold, same units.

    Returns
    -------
    bool
        True: the ``above`` member applies; False: the ``below`` member.
    """
    return value > threshold


breakeven_stop_nb = njit(breakeven_stop)
regime_above_nb = njit(regime_above)
partial_take_nb = njit(partial_take)
atr_level_nb = njit(atr_level)


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


@njit
def atr_levels(
    entry: FloatArray, direction: FloatArray, side: float, multiplier: float, atr: FloatArray
) -> FloatArray:
    """:func:`atr_level` of each of ``m`` positions (the Python driver's batch path).

    Parameters
    ----------
    entry, direction, atr : ndarray
        float64, shape (m,): as :func:`atr_level`'s scalars.
    side, multiplier : float
        The rule's side and ``k``.

    Returns
    -------
    ndarray
        float64, shape (m,): the levels, NaN where the ATR gives none.
    """
    out = np.empty(entry.shape[0])
    for k in range(entry.shape[0]):
        out[k] = atr_level_nb(entry[k], direction[k], side, multiplier, atr[k])
    return out


@njit
def regime_flags(values: FloatArray, threshold: float) -> FloatArray:
    """:func:`regime_above` of each value of a context column, as 1.0 (above) / 0.0 (below).

    Parameters
    ----------
    values : ndarray
        float64, shape (n,): the context column (NaN where missing).
    threshold : float
        The rule's threshold.

    Returns
    -------
    ndarray
        float64, shape (n,): 1.0 where the ``above`` member applies, else 0.0.
    """
    out = np.empty(values.shape[0])
    for k in range(values.shape[0]):
        out[k] = 1.0 if regime_above_nb(values[k], threshold) else 0.0
    return out
