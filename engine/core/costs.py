"""Execution costs: the slippage and commission formulas, stated once for both drivers.

Each formula is written once as plain Python and compiled from that same source (as
:mod:`engine.core.matching`; a plain function calls no other plain function, so that its
compiled form can be built from it alone): ``name`` is the Python form the cost objects of
:mod:`engine.costs` call from the Python driver, ``name_nb`` the compiled form. What a model
*reads* at a fill (which bar's quote, volume or volatility; see
:mod:`engine.costs.slippage`'s contract) is gathered by the model from a
:class:`engine.data.BarView` in the Python driver, and from the per-row arrays of
:class:`Costs` in the compiled driver, which reads the same rows: the fill's bar for the
bar's volume, the symbol's previous (completed) bar for everything else; the compiled
dispatchers :func:`slipped_price` and :func:`fill_commission` take the values read.

Slippage (prices in currency per share, ``quantity`` in signed shares; slippage always hurts:
a buy pays ``>= price``, a sell receives ``<= price``):

- :func:`adverse_price`: a fixed fraction of the price (``FixedPercentageSlippage``,
  ``FixedBpsSlippage``, the fallback of ``SpreadAwareSlippage``, the impact of
  ``VolumeAwareSlippage``);
- :func:`quoted_spread` / :func:`spread_price`: a fraction of the quoted spread, else of the
  Corwin-Schultz estimate (``SpreadAwareSlippage``);
- :func:`range_volatility` / :func:`impact_price`: square-root market impact
  (``VolumeAwareSlippage``).

Commission (currency, ``>= 0``): :func:`percentage_commission`, :func:`per_share_commission`,
:func:`per_trade_commission`, :func:`tiered_commission` (with :func:`month_number`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numba
import numpy as np
import numpy.typing as npt
from numba.extending import overload

from engine.core.jit import njit

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# slippage kinds (``Costs.params[SLIP_KIND]``)
SLIP_NONE, SLIP_FRACTION, SLIP_SPREAD, SLIP_IMPACT, SLIP_BY_TYPE = 0, 1, 2, 3, 4
# slots of the slippage in ``Costs.params``: the kind, then the model's parameters
SLIP_KIND, SLIP_A, SLIP_B, SLIP_C, SLIP_D = range(5)
N_SLIP = 5
# commission kinds (``Costs.params[COMM_KIND]``)
COMM_NONE, COMM_PERCENT, COMM_PER_SHARE, COMM_PER_TRADE, COMM_TIERED = range(5)
# slots of the commission in ``Costs.params``, after the slippage's
COMM_KIND, COMM_A, COMM_B, COMM_C = range(N_SLIP, N_SLIP + 4)
N_ORDER_TYPES = 5
"""Order types (``engine.core.layout.T_*`` codes 0-4) with a slippage block of their own."""
SLIP_TYPE0 = N_SLIP + 4
"""First slot of the per-order-type slippage blocks (``SLIP_BY_TYPE``): the block of order
type ``t`` is ``params[SLIP_TYPE0 + t * N_SLIP:][:N_SLIP]``, laid out as the ``SLIP_*``
slots."""
N_COST_PARAMS = SLIP_TYPE0 + N_ORDER_TYPES * N_SLIP
# slots of ``Costs.tier_state``: the month (:func:`month_number`, NaN: none yet) and the
# notional traded in it so far (currency)
TIER_MONTH, TIER_VOLUME = 0, 1


def adverse_price(price: float, quantity: float, fraction: float) -> float:
    """``price`` moved against the trader by ``fraction`` of itself.

    Parameters
    ----------
    price : float
        Currency per share.
    quantity : float
        Signed shares (positive buys).
    fraction : float
        Relative slippage, ``>= 0``.

    Returns
    -------
    float
        ``price * (1 + fraction)`` for a buy, ``price * (1 - fraction)`` for a sell,
        ``price`` for ``quantity == 0``.
    """
    if quantity > 0:
        return price * (1.0 + fraction)
    if quantity < 0:
        return price * (1.0 - fraction)
    return price


def quoted_spread(bid: float, ask: float) -> float:
    """The quoted spread ``ask - bid`` (currency per share) when the quote is usable (both
    finite and ``ask >= bid > 0``), else NaN."""
    if math.isfinite(bid) and math.isfinite(ask) and ask >= bid > 0:
        return ask - bid
    return math.nan


def spread_price(
    price: float,
    quantity: float,
    spread_fraction: float,
    spread: float,
    relative: float,
    fallback_pct: float,
) -> float:
    """The fill price after paying ``spread_fraction`` of the spread.

    Parameters
    ----------
    price : float
        Raw fill price, currency per share.
    quantity : float
        Signed shares.
    spread_fraction : float
        Fraction of the spread paid, in ``[0, 1]``.
    spread : float
        The quoted spread in currency per share (:func:`quoted_spread`); NaN when none.
    relative : float
        The estimated spread as a fraction of price (Corwin-Schultz), read only when
        ``spread`` is NaN; NaN when none.
    fallback_pct : float
        Relative slippage when neither is known.

    Returns
    -------
    float
        ``price ± spread_fraction * spread``, else ``price * (1 ± spread_fraction *
        relative)``, else :func:`adverse_price` with ``fallback_pct`` (``+`` for a buy);
        ``price`` for ``quantity == 0``.
    """
    if quantity == 0:
        return price
    sign = 1.0 if quantity > 0 else -1.0
    if not math.isnan(spread):
        return price + sign * spread_fraction * spread
    if math.isfinite(relative):
        return price * (1.0 + sign * spread_fraction * relative)
    return price * (1.0 + sign * fallback_pct)  # adverse_price: 1 + (-f) is exactly 1 - f


def range_volatility(high: float, low: float, close: float) -> float:
    """A bar's range as a fraction of its close, ``(high - low) / close``; NaN unless
    ``close > 0``. Prices in currency per share."""
    return (high - low) / close if close > 0 else math.nan


def impact_price(
    price: float,
    quantity: float,
    coefficient: float,
    sigma: float,
    volume: float,
    max_impact: float,
) -> float:
    """The fill price after square-root market impact.

    ``impact = min(coefficient * max(sigma, 0) * sqrt(|quantity| / volume), max_impact)``
    (Almgren et al. 2005, *Risk* 18(7)), or ``max_impact`` when ``sigma`` or ``volume`` is
    not finite or ``volume <= 0``; the price moves against the trader by that fraction, as
    :func:`adverse_price` moves it (``1 + (-f)`` is exactly ``1 - f`` in floating point).

    Parameters
    ----------
    price : float
        Raw fill price, currency per share.
    quantity : float
        Signed shares.
    coefficient : float
        Dimensionless impact coefficient.
    sigma : float
        Per-bar return volatility, a fraction.
    volume : float
        Shares traded in the reference volume.
    max_impact : float
        Upper bound of the impact, a fraction.
    """
    if quantity == 0:
        return price
    if not math.isfinite(sigma) or not math.isfinite(volume) or volume <= 0:
        impact = max_impact
    else:
        impact = min(coefficient * max(sigma, 0.0) * math.sqrt(abs(quantity) / volume), max_impact)
    return price * (1.0 + (1.0 if quantity > 0 else -1.0) * impact)  # adverse_price


def percentage_commission(rate: float, quantity: float, price: float) -> float:
    """``rate * |quantity| * price`` (currency); ``rate`` a fraction of notional."""
    return rate * abs(quantity) * price


def per_share_commission(
    cost: float, minimum: float, maximum_pct: float, quantity: float, price: float
) -> float:
    """``min(max(cost * |quantity|, minimum), maximum_pct * |quantity| * price)`` (currency).

    ``cost`` in currency per share, ``minimum`` in currency per fill, ``maximum_pct`` a
    fraction of notional (NaN: no cap); 0 for ``quantity == 0``.
    """
    if quantity == 0.0:
        return 0.0
    fee = max(cost * abs(quantity), minimum)
    if not math.isnan(maximum_pct):
        fee = min(fee, maximum_pct * abs(quantity) * price)
    return fee


def per_trade_commission(cost: float, quantity: float) -> float:
    """``cost`` (currency per fill) for a non-empty fill, else 0."""
    return cost if quantity != 0.0 else 0.0


def month_number(timestamp_us: int) -> int:
    """The calendar month (UTC) of a timestamp as ``year * 12 + month - 1``.

    ``timestamp_us``: microseconds since the Unix epoch (negative before 1970). The civil
    date of the day number is H. Hinnant's ``civil_from_days`` algorithm ("chrono-Compatible
    Low-Level Date Algorithms", 2013), in integer arithmetic.
    """
    days = timestamp_us // 86_400_000_000
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return int(year * 12 + month - 1)


def tiered_commission(
    tiers: FloatArray,
    state: FloatArray,
    quantity: float,
    price: float,
    month: int,
) -> float:
    """``rate_k * |quantity| * price``, ``k`` the highest tier whose threshold is ``<=`` the
    notional already traded in the fill's calendar month; then adds the fill's notional.

    Parameters
    ----------
    tiers : ndarray
        float64, shape (k, 2): monthly notional thresholds (currency, the first 0,
        increasing) and their rates (fractions of notional).
    state : ndarray
        float64, shape (2,), updated in place: ``TIER_MONTH`` (:func:`month_number`, NaN
        before the first fill) and ``TIER_VOLUME`` (the month's notional so far, currency).
    quantity, price : float
        Signed shares; currency per share.
    month : int
        The fill's calendar month (UTC), :func:`month_number` of its bar timestamp.
    """
    if float(month) != state[TIER_MONTH]:
        state[TIER_MONTH] = float(month)
        state[TIER_VOLUME] = 0.0
    volume = state[TIER_VOLUME]
    rate = tiers[0, 1]
    for k in range(tiers.shape[0]):
        if volume >= tiers[k, 0]:
            rate = tiers[k, 1]
    notional = abs(quantity) * price
    state[TIER_VOLUME] = volume + notional
    return float(rate * notional)


adverse_price_nb = njit(adverse_price)
quoted_spread_nb = njit(quoted_spread)
spread_price_nb = njit(spread_price)
range_volatility_nb = njit(range_volatility)
impact_price_nb = njit(impact_price)
percentage_commission_nb = njit(percentage_commission)
per_share_commission_nb = njit(per_share_commission)
per_trade_commission_nb = njit(per_trade_commission)
month_number_nb = njit(month_number)
# inlined into its caller (numba IR): a compiled call with array arguments costs some 100 ns
# of reference counting, even when the branch that makes it is not taken
tiered_commission_nb = numba.njit(cache=True, nogil=True, inline="always")(tiered_commission)


# rows of ``Costs.rows``: what the slippage reads per data row
ROW_BID, ROW_ASK, ROW_SPREAD, ROW_SIGMA, ROW_VOLUME, ROW_HIGH, ROW_LOW, ROW_CLOSE = range(8)
N_ROWS = 8


class Costs(NamedTuple):
    """A run's slippage and commission as the compiled driver reads them (built by
    :func:`engine.compiled.cost_plan.plan_costs` from the configured cost objects).

    Attributes
    ----------
    params : ndarray
        float64, shape (N_COST_PARAMS,): the slippage slots ``SLIP_*`` (``SLIP_KIND``, a
        ``SLIP_*`` kind, and its parameters; ``SLIP_BY_TYPE``: one block per order type
        from ``SLIP_TYPE0`` on, see :func:`slippage_block`; ``SLIP_FRACTION``: A = the fraction;
        ``SLIP_SPREAD``: A = spread fraction, B = fallback fraction; ``SLIP_IMPACT``:
        A = coefficient, B = max impact, C = 1 when the volume is the fill bar's, else the
        completed bars' mean volume), then the commission slots ``COMM_*`` (``COMM_KIND``
        and: percentage: A = rate; per share: A = cost, B = minimum, C = cap fraction, NaN:
        none; per trade: A = cost; tiered: see ``tiers``).
    tiers : ndarray
        float64, shape (k, 2): tiered thresholds (currency) and rates; (0, 2) otherwise.
    tier_state : ndarray
        float64, shape (2,), updated in place (:func:`tiered_commission`).
    rows : ndarray
        float64, shape (N_ROWS, n_rows), or (N_ROWS, 0) when the slippage reads no bar: per
        data row the quote at its close (``ROW_BID``, ``ROW_ASK``; NaN: none), the
        Corwin-Schultz relative spread known at its close (``ROW_SPREAD``), the volatility
        column (``ROW_SIGMA``; NaN: none), the bar volume or the completed bars' mean
        (``ROW_VOLUME``), and the bar's ``ROW_HIGH`` / ``ROW_LOW`` / ``ROW_CLOSE``.
    """

    params: FloatArray
    tiers: FloatArray
    tier_state: FloatArray
    rows: FloatArray


def slipped_price(
    kind: float,
    a: float,
    b: float,
    c: float,
    raw: float,
    quantity: float,
    bid: float,
    ask: float,
    relative: float,
    sigma: float,
    high: float,
    low: float,
    close: float,
    volume: float,
) -> float:
    """The fill price after the run's slippage of a fill at ``raw`` (currency per share) of
    ``quantity`` signed shares.

    ``kind``, ``a``, ``b``, ``c``: the ``SLIP_*`` slots of :class:`Costs`. The other
    arguments are what the model reads (NaN where the fill may know none): the quote
    ``bid`` / ``ask`` and the estimated relative spread ``relative`` of the symbol's last
    completed bar (spread-aware), or that bar's volatility column ``sigma`` and its
    ``high`` / ``low`` / ``close`` (prices), and the reference ``volume`` (shares;
    volume-aware). Scalars only: a compiled call with array arguments reference-counts
    them, some 100 ns per fill.
    """
    if kind == SLIP_NONE:
        return raw
    if kind == SLIP_FRACTION:
        return adverse_price_nb(raw, quantity, a)
    if kind == SLIP_SPREAD:
        if quantity == 0:
            return raw
        quote = quoted_spread_nb(bid, ask)
        return spread_price_nb(raw, quantity, a, quote, relative, b)
    if quantity == 0:
        return raw
    if not math.isfinite(sigma):
        sigma = range_volatility_nb(high, low, close)
    return impact_price_nb(raw, quantity, a, sigma, volume, b)


def fill_commission(
    kind: float, a: float, b: float, c: float, quantity: float, price: float
) -> float:
    """The run's commission (currency) of a fill of ``quantity`` signed shares at ``price``
    (after slippage); ``kind``, ``a``, ``b``, ``c``: the ``COMM_*`` slots of
    :class:`Costs`. Every kind but ``COMM_TIERED`` (0 for it: its state is
    :func:`tiered_commission`'s)."""
    if kind == COMM_PERCENT:
        return percentage_commission_nb(a, quantity, price)
    if kind == COMM_PER_SHARE:
        return per_share_commission_nb(a, b, c, quantity, price)
    if kind == COMM_PER_TRADE:
        return per_trade_commission_nb(a, quantity)
    return 0.0


def slippage_block(kind: float, order_type: int) -> int:
    """The first slot in ``Costs.params`` of the slippage a fill of an order of type
    ``order_type`` (a ``T_*`` code) pays: 0 (the ``SLIP_*`` slots) unless the run's slippage
    ``kind`` is ``SLIP_BY_TYPE`` (``OrderTypeDependentSlippage``), then that type's block
    (``SLIP_TYPE0 + order_type * N_SLIP``), which holds the model the Python object picks
    for that type (its entry in ``models``, else ``default``)."""
    if kind == SLIP_BY_TYPE:
        return SLIP_TYPE0 + order_type * N_SLIP
    return 0


slipped_price_nb = njit(slipped_price)
slippage_block_nb = njit(slippage_block)
fill_commission_nb = njit(fill_commission)


@njit
def priced_fill(
    cost_params: FloatArray,
    cost_rows: FloatArray,
    tiers: FloatArray,
    tier_state: FloatArray,
    raw: float,
    q: float,
    row: int,
    known: int,
    now_us: int,
    refused: bool,
    order_type: int,
) -> tuple[float, float]:
    """The price after slippage and the commission of a fill when the run
    has a slippage model or a tiered commission (out of line, so that the plain path stays
    small); ``known``: the symbol's previous row (-1: none); ``refused``: the ledger will
    refuse the fill as a short sale (the Python loop computes no commission then);
    ``order_type``: the order's ``T_*`` code (``OrderTypeDependentSlippage`` picks the
    model by it, :func:`engine.core.costs.slippage_block`)."""
    price = raw
    base = slippage_block_nb(cost_params[SLIP_KIND], order_type)
    slip_kind = cost_params[base + SLIP_KIND]
    if slip_kind != SLIP_NONE:
        # what the model reads: the symbol's last completed bar (none on its first bar); the
        # fill bar's own volume with VolumeAwareSlippage(volume="bar")
        bid = ask = relative = sigma = high = low = close = volume = math.nan
        if known >= 0 and slip_kind != SLIP_FRACTION:
            rows = cost_rows
            bid, ask, relative = rows[ROW_BID, known], rows[ROW_ASK, known], rows[ROW_SPREAD, known]
            sigma, volume = rows[ROW_SIGMA, known], rows[ROW_VOLUME, known]
            high, low, close = rows[ROW_HIGH, known], rows[ROW_LOW, known], rows[ROW_CLOSE, known]
        if slip_kind == SLIP_IMPACT and cost_params[base + SLIP_C] != 0.0:
            volume = cost_rows[ROW_VOLUME, row]
        price = slipped_price_nb(
            slip_kind, cost_params[base + SLIP_A], cost_params[base + SLIP_B],
            cost_params[base + SLIP_C], raw, q, bid, ask, relative, sigma, high, low, close,
            volume,
        )  # fmt: skip
    comm_kind = cost_params[COMM_KIND]
    if comm_kind != COMM_TIERED:
        commission = fill_commission_nb(
            comm_kind, cost_params[COMM_A], cost_params[COMM_B], cost_params[COMM_C], q, price
        )
    elif refused:
        commission = 0.0
    else:
        commission = tiered_commission_nb(tiers, tier_state, q, price, month_number_nb(now_us))
    return price, commission


def fill_costs(
    cost_params: FloatArray,
    cost_rows: FloatArray,
    tiers: FloatArray,
    tier_state: FloatArray,
    raw: float,
    q: float,
    row: int,
    known: int,
    now_us: int,
    refused: bool,
    order_type: int,
) -> tuple[float, float]:
    """The price after slippage and the commission of one fill, as every compiled driver
    prices it (the TopN driver's passes and the Python driver's market-order lane).

    Parameters
    ----------
    cost_params, cost_rows, tiers, tier_state : ndarray
        The fields of the run's :class:`Costs` (``params``, ``rows``, ``tiers``,
        ``tier_state``; ``tier_state`` is updated in place by a tiered commission).
    raw : float
        The fill's price before slippage (currency per share).
    q : float
        Signed shares filled (> 0 buys).
    row : int
        The fill bar's data row (a ``VolumeAwareSlippage(volume="bar")`` reads its volume).
    known : int
        The symbol's previous data row (its last completed bar; -1: none): what every other
        model reads.
    now_us : int
        The fill's time (UTC microseconds; a tiered commission's month).
    refused : bool
        The ledger will refuse the fill as a short sale (no tiered commission is counted).
    order_type : int
        The order's ``T_*`` code (``OrderTypeDependentSlippage`` picks its model by it).

    Returns
    -------
    (price, commission) : tuple of float
        Currency per share after slippage; currency (``>= 0``).

    A run without slippage and without a tiered commission (``cost_rows`` 1-D, from
    :func:`engine.compiled.cost_plan.plan_costs`) computes only the commission: the compiled form
    picks that path from ``cost_rows``' type, so such a run's kernel holds no slippage code
    (compiled code a run never takes still costs it: W1's kernel, some 10 %)."""
    if cost_rows.ndim == 1:
        return raw, fill_commission_nb(
            cost_params[COMM_KIND], cost_params[COMM_A], cost_params[COMM_B],
            cost_params[COMM_C], q, raw,
        )  # fmt: skip
    return priced_fill(
        cost_params, cost_rows, tiers, tier_state, raw, q, row, known, now_us, refused, order_type
    )


@overload(fill_costs)
def _fill_costs_compiled(
    cost_params: Any,
    cost_rows: Any,
    tiers: Any,
    tier_state: Any,
    raw: Any,
    q: Any,
    row: Any,
    known: Any,
    now_us: Any,
    refused: Any,
    order_type: Any,
) -> Any:
    """The compiled :func:`fill_costs`, specialised on ``cost_rows``' dimension."""
    if cost_rows.ndim == 1:

        def plain(
            cost_params: Any,
            cost_rows: Any,
            tiers: Any,
            tier_state: Any,
            raw: Any,
            q: Any,
            row: Any,
            known: Any,
            now_us: Any,
            refused: Any,
            order_type: Any,
        ) -> Any:
            return raw, fill_commission_nb(
                cost_params[COMM_KIND], cost_params[COMM_A], cost_params[COMM_B],
                cost_params[COMM_C], q, raw,
            )  # fmt: skip

        return plain

    def priced(
        cost_params: Any,
        cost_rows: Any,
        tiers: Any,
        tier_state: Any,
        raw: Any,
        q: Any,
        row: Any,
        known: Any,
        now_us: Any,
        refused: Any,
        order_type: Any,
    ) -> Any:
        return priced_fill(
            cost_params, cost_rows, tiers, tier_state, raw, q, row, known, now_us, refused,
            order_type,
        )  # fmt: skip

    return priced
