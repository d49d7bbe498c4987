"""Order matching: the raw fill price of each order type against one bar, stated once.

Every function returns the price before slippage (currency per share), always within the
bar's [low, high], or NaN when the order does not fill on this bar. A gap (the bar opens
beyond the order's price) fills at the open. Each is written once as plain Python and
compiled from that same source: ``name`` is the Python form the Python driver calls (no
numba dispatch per call), ``name_nb`` the compiled form the compiled driver's kernels call
(vectorbt names its compiled functions the same way); ``tests/engine/test_core.py`` checks
both on every case.

- market: the bar's open (or its close with ``fill="close"``): no function needed;
- limit buy (sell): the open if at or below (above) the limit, else the limit if the low
  (high) reaches it (:func:`limit_fill_price`);
- stop buy (sell): the open if at or above (below) the stop, else the stop if the high (low)
  reaches it (:func:`stop_fill_price`);
- stop-limit: the stop triggers as a stop order would fill; it fills at the trigger price if
  that satisfies the limit, otherwise it works as a limit order from the next bar
  (:func:`stop_limit_fill_price`);
- trailing stop: a stop at :func:`trail_level` of the best price since submission;
- a position's stop-loss / take-profit level: :func:`level_exit_price` (the gap rule);
- how much of an order may fill on one bar under ``max_volume_participation``:
  :func:`participation_quantity`.
"""

from __future__ import annotations

import math

from engine.core.jit import njit
from engine.core.layout import EPS


def limit_fill_price(buy: bool, limit: float, open_: float, high: float, low: float) -> float:
    """Raw fill price of a limit order on a bar; NaN if the bar does not reach the limit.

    Parameters
    ----------
    buy : bool
        True for a buy (positive quantity).
    limit : float
        Limit price, currency per share.
    open_, high, low : float
        The bar's prices, currency per share.
    """
    if buy:
        if open_ <= limit:
            return open_
        return limit if low <= limit else math.nan
    if open_ >= limit:
        return open_
    return limit if high >= limit else math.nan


def stop_fill_price(buy: bool, stop: float, open_: float, high: float, low: float) -> float:
    """Raw fill price of a stop order on a bar; NaN if the bar does not reach the stop.

    Parameters
    ----------
    buy : bool
        True for a buy stop (triggers at or above ``stop``), False for a sell stop.
    stop : float
        Stop price, currency per share.
    open_, high, low : float
        The bar's prices, currency per share.
    """
    if buy:
        if open_ >= stop:
            return open_
        return stop if high >= stop else math.nan
    if open_ <= stop:
        return open_
    return stop if low <= stop else math.nan


def stop_limit_fill_price(buy: bool, trigger: float, limit: float) -> float:
    """Raw fill price of a stop-limit order on the bar that triggers it.

    ``trigger``: :func:`stop_fill_price` of its stop on this bar (NaN: not triggered, and NaN
    is returned). The order fills at the trigger price if that satisfies the ``limit``, else
    NaN (from the next bar on it works as a limit order, :func:`limit_fill_price`). Prices in
    currency per share.
    """
    if (buy and trigger <= limit) or (not buy and trigger >= limit):
        return trigger
    return math.nan


def trail_level(buy: bool, extreme: float, amount: float, percent: float) -> float:
    """Stop price of a trailing stop whose best price so far is ``extreme``.

    ``amount`` (currency per share) or, when it is NaN, ``percent`` (a fraction) away from
    ``extreme``: above it for a buy stop (``extreme`` is the lowest low), below it for a sell
    stop (the highest high).
    """
    if not math.isnan(amount):
        return extreme + amount if buy else extreme - amount
    return extreme * (1.0 + percent) if buy else extreme * (1.0 - percent)


def level_exit_price(is_long: bool, stop_hit: bool, level: float, open_: float) -> float:
    """Raw exit price of a position whose stop-loss (``stop_hit``) or take-profit ``level``
    the bar touched: the open if the bar opened beyond the level (a gap), else the level.

    A long position's stop gaps when the open is at or below it, its target when the open is
    at or above it; the reverse for a short. Prices in currency per share.
    """
    if stop_hit:
        gap = open_ <= level if is_long else open_ >= level
    else:
        gap = open_ >= level if is_long else open_ <= level
    return open_ if gap else level


def participation_quantity(remaining: float, cap: float, volume: float, fractional: bool) -> float:
    """The part of an order's ``remaining`` shares that may fill on one bar under a volume
    participation cap (``ExecutionConfig.max_volume_participation``).

    Parameters
    ----------
    remaining : float
        Shares still to fill, signed (positive buys).
    cap : float
        Largest fraction of the bar's volume one order may take, in (0, 1].
    volume : float
        The bar's traded volume, shares, >= 0.
    fractional : bool
        False: the allowance ``cap × volume`` is rounded down to whole shares (a tolerance of
        ``EPS`` shares keeps ``2.9999999999`` at 3).

    Returns
    -------
    float
        Signed shares, ``sign(remaining) × min(|remaining|, allowance)``; 0.0 when the bar
        allows none (the order keeps working).
    """
    most = cap * volume
    if not fractional:
        most = math.floor(most + EPS)
    return math.copysign(min(abs(remaining), most), remaining)


limit_fill_price_nb = njit(limit_fill_price)
stop_fill_price_nb = njit(stop_fill_price)
stop_limit_fill_price_nb = njit(stop_limit_fill_price)
trail_level_nb = njit(trail_level)
level_exit_price_nb = njit(level_exit_price)
participation_quantity_nb = njit(participation_quantity)
