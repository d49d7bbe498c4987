"""The compiled driver of :class:`engine.TopNStrategy`: the whole run as one numba kernel.

When a run qualifies (:func:`engine.compiled.plan.compiled_reason` returns ``None``),
:class:`engine.BacktestEngine` runs it here instead of its per-timestamp Python loop: the
strategy's ranking and orders, the fills at the open (or at the close with ``fill="close"``;
under a volume participation cap in parts), the re-entry cooldown and
``cash_check="submission"`` at hook B, the stop-loss / take-profit levels (live from the next
bar or, ``stop_activation="entry_bar"``, the entry bar; ``exit_conflict`` either way),
trailing stops, time exits, ``BreakEvenRule``, ``PartialProfitTaking``,
``VolatilityScaledStopLoss`` / ``VolatilityScaledTakeProfit`` and ``RegimeDependentRule``
over them (:mod:`engine.core.rules`), the portfolio limits
at hook B and the accounting all happen in :func:`run_topn`, one compiled call for the whole
run, and the records it writes (:mod:`engine.core.records`) become the result's frames by the
same conversion as the Python loop's.

This module holds only the driver: the loop over the timestamps in the engine's per-bar order
(see :class:`engine.BacktestEngine` for the steps), the strategy's decisions (:func:`_top_rows`
and the rebalance) and the hook-C merge of the position rules. Execution is the core's: order
records, fills, positions and trades through :mod:`engine.core.ledger`, the level exit prices
through :mod:`engine.core.matching`, the slippage and commission of every fill through
:mod:`engine.core.costs` (the formulas the cost objects of :mod:`engine.costs` call), the
limits through :mod:`engine.core.limits`, the levels and marks through the per-bar kernels the
Python loop calls too (:mod:`engine.risk.kernels`: ``level_hits``, ``mark_long_book``,
``mark_bar``, ``portfolio_value``). The same floating-point operations run in the same order as
in the Python loop; ``tests/engine/test_fastpath.py`` checks that both give identical trades,
fills, orders, rejections, portfolio states and open positions on the S&P file under several
settings and on hypothesis-generated panels. Planning (which runs qualify, the rule and limit
tables, :class:`TopNPlan`) is :mod:`engine.compiled.plan`.

Compilation: the kernels are compiled on first use (some 10-40 s on the 2-core machine, once
per clone) and cached in the ``__pycache__`` folders next to their modules. numba's cache
tracks only a kernel's own source file: after editing a kernel that cached kernels call
(:mod:`engine.core`, :mod:`engine.risk.kernels`), delete ``engine/**/__pycache__/*.nb*`` so
the run kernel is rebuilt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numba
import numpy as np
import numpy.typing as npt
import polars as pl
from numba.extending import overload

from engine.core.actions import MX_NEXT_PAY, MX_RECEIVABLE, bar_actions, bar_payments
from engine.core.costs import (
    COMM_A,
    COMM_B,
    COMM_C,
    COMM_KIND,
    COMM_TIERED,
    ROW_ASK,
    ROW_BID,
    ROW_CLOSE,
    ROW_HIGH,
    ROW_LOW,
    ROW_SIGMA,
    ROW_SPREAD,
    ROW_VOLUME,
    SLIP_A,
    SLIP_B,
    SLIP_C,
    SLIP_FRACTION,
    SLIP_IMPACT,
    SLIP_KIND,
    SLIP_NONE,
    Costs,
    fill_commission_nb,
    month_number_nb,
    slippage_block_nb,
    slipped_price_nb,
    tiered_commission_nb,
)
from engine.core.delisting import delisted_book_pass, delisting_price_nb
from engine.core.financing import bar_financing
from engine.core.jit import njit
from engine.core.layout import (
    A_CLOSED_AT,
    A_ENTRY_INDEX,
    A_EXIT_PENDING,
    A_OPEN,
    A_PARTIAL_DONE,
    A_PARTIAL_ENTRY,
    A_STOPPED_AT,
    A_TARGET,
    ACC_CASH,
    ACC_DAY_START,
    ACC_LAST_EQUITY,
    ACC_PEAK,
    ACC_REALIZED,
    AVG,
    B_CLOSED_DIR,
    B_COMM,
    B_PARTIAL_ORIGINAL,
    B_QTY,
    B_STOPPED_DIR,
    BE_OFFSET,
    BE_TRIGGER,
    BEST,
    BREAKEVEN,
    C_BOOK,
    C_DAY,
    C_FILLS,
    C_ORDERS,
    C_REJ,
    C_STATUS,
    C_TRADES,
    CODE,
    DEFERRED,
    ENTRY_ORDINAL,
    ENTRY_PENDING,
    EPS,
    EV_CANCELLED,
    EV_REJECTED,
    FIXED_REASONS,
    KIND,
    LAST_ROW,
    MARK,
    MAX_BARS,
    N_A,
    N_ACC,
    N_B,
    N_C,
    N_FLOAT_FIELDS,
    N_INT_FIELDS,
    OUT_CODE,
    OUT_LEVEL,
    OUT_SID,
    PARTIAL,
    PRIORITY,
    QTY,
    R_END,
    R_RULE0,
    R_STOP_LOSS,
    R_STRATEGY,
    R_TAKE_PROFIT,
    S_ACCEPTED,
    S_CANCELLED,
    S_PARTIAL,
    S_REJECTED,
    SR_CLOSED_BY_STOP,
    SR_COOLDOWN,
    SR_LIMIT,
    SR_NETTED_CLOSE,
    SR_SUBMISSION_CASH,
    STOP,
    STOP_RULE,
    T_LIMIT,
    T_MARKET,
    T_STOP,
    TIME_EXIT,
    TP,
    TP_RULE,
    TRAILING,
    UNPLACED,
    set_status,
)
from engine.core.ledger import (
    closed_by_level_exit_nb,
    execute_fill,
    finish_order,
    levels_active_from_nb,
    netted_by_close_nb,
    new_order,
    reject_unplaced,
    round_quantity_nb,
    short_refused_nb,
    submission_quantity_nb,
    submission_refused_nb,
    zero_shares_order_nb,
)
from engine.core.limits import apply_limits
from engine.core.matching import level_exit_price_nb, participation_quantity_nb
from engine.core.records import RecordArray, Records, empty_records
from engine.core.rules import breakeven_stop_nb, partial_take_nb
from engine.data import MarketData
from engine.mechanics import (
    M_DELIST_RETURN,
    M_DELISTING,
    M_FINANCING,
    M_REASON,
    CompiledMechanics,
    compiled_mechanics,
    fresh_compiled,
)
from engine.risk import kernels

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ST_OK, ST_FULL, ST_SHORT_BOOK, ST_FRACTIONAL = 0, 1, 2, 3
"""``counts[C_STATUS]`` after :func:`run_topn`: done; the record buffers would overflow (the
caller retries with larger ones); a short position / an order the Python loop refuses with an
error (the Python loop runs instead)."""
# slots of the run's scalar parameters (float64)
(
    P_N,
    P_EVERY,
    P_WEIGHT,
    P_TOL,
    P_FRACTIONAL,
    P_STOPS_FIRST,
    P_CLOSE_AT_END,
    P_ENTRY_RULES,
    P_LEVELS_SET,
    P_HAS_RULES,
    P_VOLUME_CAP,
    P_ALLOW_SHORT,
    P_COOLDOWN,
    P_STOP_WINS,
    P_ENTRY_BAR,
    P_SUBMISSION_CASH,
    P_FILL_CLOSE,
) = range(17)
N_P = 17
_DAY_US = 86_400_000_000
_NEVER = -(2**62)
"""``A_STOPPED_AT`` of a symbol never stopped out."""
_inline = numba.njit(cache=True, nogil=True, inline="always")
"""Compiled and inlined into its callers at numba's IR level: a compiled call passing the
run's tuples costs their arrays' reference counts, some 100 ns per fill."""


class LimitText(Protocol):
    """What the driver needs of a portfolio limit after the run: its name and reason text."""

    @property
    def name(self) -> str:
        """The name rejections record in their ``rule`` column."""
        ...

    def reason_text(self, shrink: bool, value: float, limit: float) -> str:
        """The reason of a shrink (``shrink``) or a rejection at ``value`` past ``limit``."""
        ...


@dataclass(frozen=True)
class TopNPlan:
    """The inputs of one compiled TopN run (built by :func:`engine.compiled.plan.plan_topn`).

    Attributes
    ----------
    signal : ndarray
        float64, shape (n_rows,): the ranking column, one value per market-data row.
    inputs : ndarray
        float64, shape (k, n_rows): the per-row values the rules read (the ``INPUT`` /
        ``GATE`` rows of ``rules``): ATR columns (currency per share) and regime flags (1.0:
        above the threshold); shape (0, 0) when no rule reads any.
    params : ndarray
        float64, shape (N_P,): the ``P_*`` slots (n, rebalance every, weight, cash tolerance
        in currency, the volume participation cap as a fraction (0: none), the re-entry
        cooldown in bars, and 0/1 flags).
    rules : ndarray
        float64, shape (m, N_RULES_COLS): the position rules (:mod:`engine.core.layout`).
    partial : ndarray
        float64, shape (k, 2): ``PartialProfitTaking`` levels ``(return_pct, fraction)``.
    limits : ndarray
        float64, shape (j, N_LIM): the portfolio limits at hook B.
    rule_names : list of str
        Rule names by code (code 0: ``""``).
    limit_rules : list
        The limits of ``limits``' rows, for their reason texts and names.
    capacity : int
        First size of the record buffers.
    initial_cash : float
        Currency.
    costs : Costs
        The run's slippage and commission (:mod:`engine.core.costs`); its tiered-commission
        state is reset at the start of every attempt.
    """

    signal: FloatArray
    inputs: FloatArray
    params: FloatArray
    rules: FloatArray
    partial: FloatArray
    limits: FloatArray
    rule_names: list[str]
    limit_rules: list[LimitText]
    capacity: int
    initial_cash: float
    costs: Costs
    mechanics: CompiledMechanics | None = None
    """Corporate actions and financing (:func:`engine.mechanics.compiled_mechanics`)."""


@_inline
def _fill(
    o: int,
    q: float,
    raw: float,
    row: int,
    i: int,
    closing: bool,
    bars: Bars,
    tables: Tables,
    state: RunState,
    records: RunRecords,
) -> None:
    """Fill ``q`` shares of order ``o`` at raw price ``raw`` on data row ``row`` at bar ``i``
    with the run's slippage and commission (:mod:`engine.core.costs`: the price after
    slippage, then the commission on it; a sale the ledger refuses as a short computes no
    commission, as the Python loop checks it first); ``closing``: a ``close_at_end`` fill (it
    sets no entry levels)."""
    params, cost_params = tables.params, tables.cost_params
    fstate = state.fstate
    orders = records.orders
    allow_short = params[P_ALLOW_SHORT] != 0.0
    price, commission = _fill_costs(
        cost_params, tables.cost_rows, tables.tiers, tables.tier_state, raw, q, row,
        bars.prev_row[row], bars.timestamps[i],
        short_refused_nb(q, fstate[QTY, orders[o]["sid"]], allow_short),
        orders[o]["order_type"],
    )  # fmt: skip
    execute_fill(
        o, q, raw, price, commission, bars.ordinal[row], i, params[P_TOL], allow_short,
        params[P_ENTRY_RULES] != 0.0 and not closing,
        fstate, state.istate, state.pending, state.aux_i, state.aux_f, orders, records.fills,
        records.trades, records.rejections, state.counts, state.acc,
    )  # fmt: skip


@njit
def _priced(
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
    """The price after slippage and the commission of a fill of :func:`_fill` when the run
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


def _fill_costs(
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
    """The price after slippage and the commission of a fill of :func:`_fill` (arguments as
    :func:`_priced`'s). A run without slippage and without a tiered commission (``cost_rows``
    1-D, :func:`engine.compiled.plan.plan_costs`) computes only the commission; the compiled
    form picks that path from ``cost_rows``' type, so such a run's kernel holds no slippage
    code (compiled code that a run never takes still costs it: W1's kernel, some 10 %)."""
    if cost_rows.ndim == 1:
        return raw, fill_commission_nb(
            cost_params[COMM_KIND], cost_params[COMM_A], cost_params[COMM_B],
            cost_params[COMM_C], q, raw,
        )  # fmt: skip
    return _priced(
        cost_params, cost_rows, tiers, tier_state, raw, q, row, known, now_us, refused, order_type
    )


@overload(_fill_costs)
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
    """The compiled :func:`_fill_costs`, specialised on ``cost_rows``' dimension."""
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
        return _priced(
            cost_params, cost_rows, tiers, tier_state, raw, q, row, known, now_us, refused,
            order_type,
        )  # fmt: skip

    return priced


@njit
def _held(qty: FloatArray, out: IntArray) -> int:
    """Ids of the symbols with a non-zero position into ``out`` (ascending); their count."""
    n = 0
    for sid in range(qty.size):
        if qty[sid] != 0.0:
            out[n] = sid
            n += 1
    return n


@njit
def _held_since(
    qty: FloatArray, held: IntArray, nh: int, listed_at: int, fills: int
) -> tuple[int, int]:
    """``(nh, listed_at)`` for ``held[:nh]``, the held ids listed by :func:`_held` when the fill
    count was ``listed_at``: listed again only if ``fills`` differs (the held set changes only
    with a fill)."""
    if fills == listed_at:
        return nh, listed_at
    return _held(qty, held), fills


@njit
def _fill_level_hits(
    n: int, i: int, bars: Bars, tables: Tables, state: RunState, records: RunRecords
) -> None:
    """Exit the ``n`` positions whose stop-loss or take-profit level
    :func:`engine.risk.kernels.level_hits` found touched (ids, stop or target, level in the
    ``OUT_*`` rows), in that order: a stop (limit) order for the whole position, submitted
    on the previous bar and filled at :func:`engine.core.matching.level_exit_price`."""
    fstate, istate, counts, pending = state.fstate, state.istate, state.counts, state.pending
    orders, open_, prev_row = records.orders, bars.open_, bars.prev_row
    for k in range(n):
        sid = istate[OUT_SID, k]
        stop_hit = istate[OUT_CODE, k]
        level = fstate[OUT_LEVEL, k]
        pos = fstate[QTY, sid]
        row = istate[LAST_ROW, sid]
        o_ = open_[row]
        if stop_hit:
            kind = T_STOP
            code = istate[STOP_RULE, sid]
            reason = R_RULE0 + code if code > 0 else R_STOP_LOSS
        else:
            kind = T_LIMIT
            code = istate[TP_RULE, sid]
            reason = R_RULE0 + code if code > 0 else R_TAKE_PROFIT
        raw = level_exit_price_nb(pos > 0, stop_hit != 0, level, o_)
        o = new_order(
            sid, -pos, kind, reason, max(i - 1, 0), prev_row[row],
            level if kind == T_LIMIT else math.nan,
            level if kind == T_STOP else math.nan,
            orders, counts, pending,
        )  # fmt: skip
        set_status(orders, o, S_ACCEPTED)
        _fill(o, orders[o]["quantity"], raw, row, i, False, bars, tables, state, records)
        if fstate[QTY, sid] == 0.0:
            direction = 1.0 if pos > 0 else -1.0
            if stop_hit:  # reentry_cooldown_bars
                state.aux_i[A_STOPPED_AT, sid] = i
                state.aux_f[B_STOPPED_DIR, sid] = direction
            # exit_conflict="stop_wins": the position this bar's level exit closed
            state.aux_i[A_CLOSED_AT, sid] = i + 1
            state.aux_f[B_CLOSED_DIR, sid] = direction


@njit
def _open_pass(
    i: int, lo: int, bars: Bars, tables: Tables, state: RunState, records: RunRecords
) -> None:
    """The book of market orders at bar ``i`` (data rows from ``lo``): each order whose
    symbol has a bar now fills at the open, in submission order, or is refused; the others
    stay in the book. Without a volume cap an order fills whole or not at all; under one
    (``P_VOLUME_CAP`` > 0) it fills at most :func:`engine.core.matching.participation_quantity`
    of the bar's volume and the rest stays working (in the book)."""
    book, counts, last_row = state.book, state.counts, state.istate[LAST_ROW]
    orders, open_ = records.orders, bars.open_
    cap = tables.params[P_VOLUME_CAP]
    entry_bar = tables.params[P_ENTRY_BAR] != 0.0
    stop_wins = tables.params[P_STOP_WINS] != 0.0
    first_fill = counts[C_FILLS]
    kept = 0
    for k in range(counts[C_BOOK]):
        o = book[k]
        sid = orders[o]["sid"]
        if (
            stop_wins
            and state.aux_i[A_CLOSED_AT, sid] == i + 1
            and closed_by_level_exit_nb(
                orders[o]["quantity"], state.aux_f[B_CLOSED_DIR, sid], state.fstate[QTY, sid]
            )
        ):
            # exit_conflict="stop_wins": this bar's level exit took precedence
            finish_order(
                o, S_CANCELLED, SR_CLOSED_BY_STOP, EV_CANCELLED, i, orders, counts,
                state.pending, state.aux_i, records.rejections,
            )  # fmt: skip
            continue
        row = last_row[sid]
        if row < lo:
            book[kept] = o
            kept += 1
            continue
        remaining = orders[o]["quantity"] - orders[o]["filled"]
        if cap != 0.0:
            remaining = participation_quantity_nb(
                remaining, cap, bars.volume[row], tables.params[P_FRACTIONAL] != 0.0
            )
        if remaining != 0:
            _fill(o, remaining, open_[row], row, i, False, bars, tables, state, records)
        if cap != 0.0 and _working(orders[o]["status"]):
            book[kept] = o
            kept += 1
    counts[C_BOOK] = kept
    if not entry_bar:
        # hook D, once for all of this pass's entries (the Python driver's flush_entries):
        # their levels from what was known at the fill (the symbol's previous bar), live
        # from the next bar; none for a position the pass left flat; a short stays pending
        # (the mark step then hands the run to the loop)
        fills, istate, fstate = records.fills, state.istate, state.fstate
        for f in range(first_fill, counts[C_FILLS]):
            sid = fills[f]["sid"]
            if istate[ENTRY_PENDING, sid] and fstate[QTY, sid] > 0.0:
                kernels.set_entry_levels(
                    sid, fstate, istate, i + 1, tables.rules, tables.inputs,
                    bars.prev_row[istate[LAST_ROW, sid]],
                )  # fmt: skip


@_inline
def _working(status: int) -> bool:
    """True for a status an order keeps working in (accepted, partially filled)."""
    return S_ACCEPTED <= status <= S_PARTIAL  # the codes of the two are adjacent


@njit
def _pending_levels(
    held: IntArray,
    active_from: int,
    fstate: FloatArray,
    istate: IntArray,
    rules: FloatArray,
    inputs: FloatArray,
    prev_row: IntArray,
    ids: IntArray,
) -> bool:
    """The entry levels of the positions in ``held`` marked ``ENTRY_PENDING`` by this bar's
    open fills, live from bar ``active_from``, from what was known at the fill (the symbol's
    bar before its fill row; :func:`engine.risk.kernels.set_entry_levels`; ``ids``: scratch,
    int64, at least ``held.size`` long). False, writing nothing, when one of them is short
    (the Python loop runs)."""
    n = 0
    for k in range(held.size):
        sid = held[k]
        if istate[ENTRY_PENDING, sid]:
            if fstate[QTY, sid] < 0.0:
                return False
            ids[n] = sid
            n += 1
    for k in range(n):
        sid = ids[k]
        if fstate[QTY, sid] != 0.0:
            known = prev_row[istate[LAST_ROW, sid]]
            kernels.set_entry_levels(sid, fstate, istate, active_from, rules, inputs, known)
    return True


@njit
def _submission_cash(
    i: int,
    bars: Bars,
    tables: Tables,
    state: RunState,
    records: RunRecords,
    longs: FloatArray,
    seen: IntArray,
    tier_copy: FloatArray,
) -> None:
    """``cash_check="submission"`` (:func:`engine.broker.hooks.check_submission_cash`): the
    orders accepted at bar ``i`` (the book's orders submitted at ``i``, in acceptance order)
    pseudo-executed at the close of their decision bar (the latest close without one) against
    the cash now, with the commission of a copy of the run's commission state; an order
    :func:`engine.core.ledger.submission_refused` refuses is rejected
    (``insufficient_cash_at_submission``) and leaves the book. ``longs`` / ``seen``
    (float64 / int64, shape (n_symbols,)): the long shares counted so far this bar, valid
    where ``seen == i``; ``tier_copy``: scratch, shape (2,)."""
    book, counts, orders = state.book, state.counts, records.orders
    params, cost_params = tables.params, tables.cost_params
    allow_short = params[P_ALLOW_SHORT] != 0.0
    qty, marks = state.fstate[QTY], state.fstate[MARK]
    cash = state.acc[ACC_CASH]
    tier_copy[:] = tables.tier_state
    month = month_number_nb(bars.timestamps[i])
    kept = 0
    for k in range(counts[C_BOOK]):
        o = book[k]
        if orders[o]["submit_index"] == i:
            sid = orders[o]["sid"]
            q = orders[o]["quantity"] - orders[o]["filled"]
            row = orders[o]["decision_row"]
            price = bars.close[row] if row >= 0 else marks[sid]
            if seen[sid] != i:
                seen[sid] = i
                longs[sid] = max(qty[sid], 0.0)
            counted = math.isfinite(price)
            if counted and q < 0 and not allow_short:
                q = submission_quantity_nb(q, longs[sid], allow_short)
                longs[sid] += q
                counted = q != 0
            elif counted and q > 0:
                longs[sid] += q
            if counted:
                if cost_params[COMM_KIND] == COMM_TIERED:
                    commission = tiered_commission_nb(tables.tiers, tier_copy, q, price, month)
                else:
                    commission = fill_commission_nb(
                        cost_params[COMM_KIND], cost_params[COMM_A], cost_params[COMM_B],
                        cost_params[COMM_C], q, price,
                    )  # fmt: skip
                cost = q * price + commission
                if submission_refused_nb(cost, cash, params[P_TOL]):
                    if q > 0:
                        longs[sid] -= q
                    finish_order(
                        o, S_REJECTED, SR_SUBMISSION_CASH, EV_REJECTED, i, orders, counts,
                        state.pending, state.aux_i, records.rejections,
                    )  # fmt: skip
                    continue
                cash -= cost
        book[kept] = o
        kept += 1
    counts[C_BOOK] = kept


@njit
def _fill_at_close(
    i: int, lo: int, bars: Bars, tables: Tables, state: RunState, records: RunRecords, ids: IntArray
) -> bool:
    """Step 5 with ``fill="close"`` (:func:`engine.broker.passes.fill_at_close`): the orders
    accepted at bar ``i`` (the book's orders submitted at ``i``) whose symbol has a bar now
    fill at its close (under a volume cap, their capped part); the entry levels of the
    positions they open or increase are set live from bar ``i + 1`` (the ATR known at the
    fill: the fill bar's own). ``ids``: scratch, int64, at least ``n_symbols + 1`` long.
    False when such an entry is short (the Python loop runs)."""
    book, counts, orders = state.book, state.counts, records.orders
    istate, fstate = state.istate, state.fstate
    cap = tables.params[P_VOLUME_CAP]
    fractional = tables.params[P_FRACTIONAL] != 0.0
    kept = 0
    n = 0
    for k in range(counts[C_BOOK]):
        o = book[k]
        sid = orders[o]["sid"]
        row = istate[LAST_ROW, sid]
        if orders[o]["submit_index"] == i and row >= lo:
            remaining = orders[o]["quantity"] - orders[o]["filled"]
            if cap != 0.0:
                remaining = participation_quantity_nb(remaining, cap, bars.volume[row], fractional)
            if remaining != 0:
                _fill(o, remaining, bars.close[row], row, i, False, bars, tables, state, records)
                if istate[ENTRY_PENDING, sid]:
                    ids[n] = sid
                    n += 1
            if not _working(orders[o]["status"]):
                continue
        book[kept] = o
        kept += 1
    counts[C_BOOK] = kept
    live = levels_active_from_nb(i, tables.params[P_ENTRY_BAR] != 0.0, True)
    for k in range(n):
        if fstate[QTY, ids[k]] < 0.0:
            return False
    for k in range(n):
        sid = ids[k]
        if fstate[QTY, sid] != 0.0:
            # the ATR / regime known at a close fill: the fill bar's own row
            row = istate[LAST_ROW, sid]
            kernels.set_entry_levels(sid, fstate, istate, live, tables.rules, tables.inputs, row)
    return True


@njit
def _cooldown(new: IntArray, i: int, bars_: int, state: RunState, records: RunRecords) -> int:
    """``reentry_cooldown_bars`` (``bars_``) at hook B (:func:`engine.broker.hooks.apply_cooldown`):
    the new orders ``new`` (ids) in the direction of a position a stop-loss exit closed in
    the last ``bars_`` bars are rejected (``reentry_cooldown``); the others are moved to the
    front of ``new`` in order; returns their number."""
    orders, aux_i, aux_f = records.orders, state.aux_i, state.aux_f
    last = i - bars_
    kept = 0
    for k in range(new.size):
        o = new[k]
        sid = orders[o]["sid"]
        if (
            aux_i[A_STOPPED_AT, sid] > last
            and orders[o]["quantity"] * aux_f[B_STOPPED_DIR, sid] > 0
        ):
            finish_order(
                o, S_REJECTED, SR_COOLDOWN, EV_REJECTED, i, orders, state.counts,
                state.pending, aux_i, records.rejections,
            )  # fmt: skip
            continue
        new[kept] = o
        kept += 1
    return kept


@njit
def _net_working(sid: int, i: int, state: RunState, records: RunRecords) -> None:
    """``TopNStrategy``'s close of ``sid`` under a volume participation cap
    (:func:`engine.broker.intake.close_position`): the symbol's working strategy market
    orders of earlier bars are cancelled (``netted_by_close_position``) and leave the book."""
    book, counts, orders = state.book, state.counts, records.orders
    kept = 0
    for k in range(counts[C_BOOK]):
        o = book[k]
        remaining = orders[o]["quantity"] - orders[o]["filled"]
        if (
            orders[o]["sid"] == sid
            and orders[o]["reason"] == R_STRATEGY
            and netted_by_close_nb(orders[o]["submit_index"], i, remaining, 0.0)
        ):
            finish_order(
                o, S_CANCELLED, SR_NETTED_CLOSE, EV_CANCELLED, i, orders, counts,
                state.pending, state.aux_i, records.rejections,
            )  # fmt: skip
            continue
        book[kept] = o
        kept += 1
    counts[C_BOOK] = kept


@njit
def _risk_exit(
    sid: int,
    quantity: float,
    reason: int,
    row: int,
    i: int,
    fractional: bool,
    fstate: FloatArray,
    pending: FloatArray,
    aux_i: IntArray,
    orders: RecordArray,
    book: IntArray,
    counts: IntArray,
    rejections: RecordArray,
) -> None:
    """A risk rule's market exit (reason code ``reason``) of ``quantity`` shares of ``sid``
    (NaN: the whole position; at most the position), queued for the next open and accepted;
    nothing if an exit is already queued; a rejection row (``reject_unplaced``) if the size
    rounds to 0 shares."""
    if aux_i[A_EXIT_PENDING, sid]:
        return
    pos = fstate[QTY, sid]
    if pos == 0:
        return
    size = abs(pos)
    if not math.isnan(quantity) and not abs(pos) < abs(quantity):
        size = abs(quantity)
    wanted = size
    size = round_quantity_nb(wanted, fractional)
    if size <= 0:
        if zero_shares_order_nb(wanted, fractional):
            reject_unplaced(sid, -math.copysign(wanted, pos), i, reason, counts, rejections)
        return
    o = new_order(
        sid, -math.copysign(size, pos), T_MARKET, reason, i, row, math.nan, math.nan,
        orders, counts, pending,
    )  # fmt: skip
    set_status(orders, o, S_ACCEPTED)
    aux_i[A_EXIT_PENDING, sid] = 1
    book[counts[C_BOOK]] = o
    counts[C_BOOK] += 1


@njit
def _mark_and_hook_c(
    lo: int,
    hi: int,
    i: int,
    sym_id: IntArray,
    close: FloatArray,
    high: FloatArray,
    low: FloatArray,
    ordinal: IntArray,
    held: IntArray,
    fstate: FloatArray,
    istate: IntArray,
    rules: FloatArray,
    partial: FloatArray,
    inputs: FloatArray,
    aux_i: IntArray,
    aux_f: FloatArray,
) -> int:
    """:func:`engine.risk.kernels.mark_bar_basic_rules` plus ``BreakEvenRule``,
    ``PartialProfitTaking`` and the members of ``RegimeDependentRule`` rules, merged as the
    general path merges them (:class:`engine.risk.batch.PositionActions`): stops in rule
    order (the per-position rules' rows last, as the general path adds their merged answer
    after the vectorised rules'), the higher long stop wins, earlier rules win ties, NaN
    never wins; a whole exit beats the partial one, a later whole exit wins only with a higher
    priority. A regime member acts only in its regime at this bar
    (:func:`engine.risk.kernels.rule_applies` on the position's row: the context value at
    this bar).

    The two rules decide through the functions their Python classes call
    (:mod:`engine.core.rules`): ``BreakEvenRule``'s stop candidate is
    :func:`engine.core.rules.breakeven_stop`; ``PartialProfitTaking`` (at most one per run)
    exits :func:`engine.core.rules.partial_take`'s shares, with its state in ``A_PARTIAL_*`` /
    ``B_PARTIAL_ORIGINAL``, keyed by the trade's entry bar as the rule keys it by entry time.

    Writes the exits to ``OUT_SID`` / ``OUT_CODE`` and their quantity to ``OUT_LEVEL`` (NaN:
    the whole position); returns their number, or -1 for a short position with a bar now.
    """
    if not kernels.mark_long_book(lo, hi, i, sym_id, close, high, low, held, fstate, istate, rules):
        return -1
    last_row = istate[LAST_ROW]
    qty = fstate[QTY]
    n = 0
    for k in range(held.size):
        sid = held[k]
        row = last_row[sid]
        if row < lo:
            continue
        bars_held = ordinal[row] - istate[ENTRY_ORDINAL, sid]
        current = fstate[STOP, sid]
        entry = fstate[AVG, sid]
        level = math.nan
        code = 0
        first = True
        exit_code = 0
        exit_priority = 0.0
        partial_code = 0
        partial_size = 0.0
        for r in range(rules.shape[0]):
            kind = rules[r, KIND]
            value = math.nan
            setter = False
            if not kernels.rule_applies(rules, r, inputs, row):
                continue
            if kind == TRAILING:
                value = kernels.trailing_level(rules, r, bars_held, fstate[BEST, sid], current)
                setter = True
            elif kind == BREAKEVEN:
                value = breakeven_stop_nb(
                    1.0, entry, fstate[BEST, sid], rules[r, BE_TRIGGER], rules[r, BE_OFFSET]
                )
                setter = True
            elif kind == TIME_EXIT and bars_held >= rules[r, MAX_BARS]:
                if exit_code == 0 or rules[r, PRIORITY] > exit_priority:
                    exit_code = int(rules[r, CODE])
                    exit_priority = rules[r, PRIORITY]
            elif kind == PARTIAL:
                if aux_i[A_PARTIAL_ENTRY, sid] != aux_i[A_ENTRY_INDEX, sid]:
                    aux_i[A_PARTIAL_ENTRY, sid] = aux_i[A_ENTRY_INDEX, sid]
                    aux_i[A_PARTIAL_DONE, sid] = 0
                    aux_f[B_PARTIAL_ORIGINAL, sid] = abs(qty[sid])
                size, done = partial_take_nb(
                    partial, aux_i[A_PARTIAL_DONE, sid], 1.0, entry, close[row],
                    aux_f[B_PARTIAL_ORIGINAL, sid], abs(qty[sid]),
                )  # fmt: skip
                aux_i[A_PARTIAL_DONE, sid] = done
                if size > 0:
                    partial_code = int(rules[r, CODE])
                    partial_size = size
            if setter and kernels.stop_wins(first, value, level):
                level = value
                code = int(rules[r, CODE])
                first = False
            elif setter:
                first = False
        kernels.write_stop(sid, level, code, i + 1, fstate, istate)
        if exit_code:
            istate[OUT_SID, n] = sid
            istate[OUT_CODE, n] = exit_code
            fstate[OUT_LEVEL, n] = math.nan
            n += 1
        elif partial_code:
            istate[OUT_SID, n] = sid
            istate[OUT_CODE, n] = partial_code
            fstate[OUT_LEVEL, n] = partial_size
            n += 1
    return n


@njit
def _top_rows(
    lo: int, hi: int, sig: FloatArray, n: int, top_val: FloatArray, top_row: IntArray
) -> int:
    """The rows ``lo:hi`` with the ``n`` largest finite ``sig`` (decreasing; ties keep row
    order, as a stable sort on ``-sig``) into ``top_row``; their count (``<= n``)."""
    cnt = 0
    for r in range(lo, hi):
        v = sig[r]
        if not math.isfinite(v):
            continue
        if cnt == n and not v > top_val[n - 1]:
            continue
        p = cnt if cnt < n else n - 1
        while p > 0 and top_val[p - 1] < v:
            p -= 1
        last = cnt if cnt < n else n - 1
        for j in range(last, p, -1):
            top_val[j] = top_val[j - 1]
            top_row[j] = top_row[j - 1]
        top_val[p] = v
        top_row[p] = r
        if cnt < n:
            cnt += 1
    return cnt


@njit
def _ranked_rows(ranked: IntArray, n: int, top_row: IntArray) -> int:
    """The first ``n`` rows of one bar's ``ranking`` row (-1 ends it) into ``top_row``;
    their count."""
    cnt = 0
    while cnt < n and ranked[cnt] >= 0:
        top_row[cnt] = ranked[cnt]
        cnt += 1
    return cnt


class Bars(NamedTuple):
    """The market data of a run (:class:`engine.MarketData` arrays) and the ranking signal.

    ``timestamps`` (int64, µs since the epoch, one per bar), ``offsets`` (int64, bar ``i``'s
    rows are ``offsets[i]:offsets[i + 1]``), ``sym_id`` / ``ordinal`` / ``prev_row`` (int64,
    per row), ``open_`` / ``high`` / ``low`` / ``close`` (float64, currency per share, per
    row), ``signal`` (float64, per row), ``volume`` (float64, shares, per row; read only under
    a volume participation cap).
    """

    timestamps: IntArray
    offsets: IntArray
    sym_id: IntArray
    open_: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    ordinal: IntArray
    prev_row: IntArray
    signal: FloatArray
    volume: FloatArray


class Tables(NamedTuple):
    """The run's parameters and rule tables (:class:`TopNPlan`): ``params`` (``P_*``),
    ``rules``, ``partial``, ``limits`` (:mod:`engine.core.layout`), the rules' per-row
    ``inputs`` and the slippage and
    commission: ``cost_params``, ``tiers``, ``tier_state``, ``cost_rows``, the fields of
    :class:`engine.core.costs.Costs` (flat: numba reference-counts every array of a nested
    tuple at each use, some 100 ns per fill)."""

    params: FloatArray
    rules: FloatArray
    partial: FloatArray
    limits: FloatArray
    inputs: FloatArray
    cost_params: FloatArray
    tiers: FloatArray
    tier_state: FloatArray
    cost_rows: FloatArray


class RunState(NamedTuple):
    """The run state, updated in place: the per-symbol matrices ``fstate`` / ``istate`` /
    ``aux_i`` / ``aux_f`` (:mod:`engine.core.layout`), ``pending`` (float64, signed shares of
    the working market orders per symbol), ``book`` (int64, the working orders' ids, the first
    ``counts[C_BOOK]``), ``counts`` (int64, ``C_*``) and ``acc`` (float64, ``ACC_*``)."""

    fstate: FloatArray
    istate: IntArray
    aux_i: IntArray
    aux_f: FloatArray
    pending: FloatArray
    book: IntArray
    counts: IntArray
    acc: FloatArray


class RunRecords(NamedTuple):
    """The record buffers the run writes (:mod:`engine.core.records`): ``orders``,
    ``fills``, ``trades``, ``rejections`` (the first ``counts[C_*]`` rows) and ``states`` (one
    per timestamp)."""

    orders: RecordArray
    fills: RecordArray
    trades: RecordArray
    rejections: RecordArray
    states: RecordArray


@njit
def run_topn(
    bars: Bars,
    tables: Tables,
    state: RunState,
    records: RunRecords,
    mech: CompiledMechanics,
    ranking: IntArray | None = None,
) -> None:
    """The whole run of :class:`engine.TopNStrategy` with the compiled rules and limits
    (module docstring), in the engine's per-bar order.

    ``ranking`` (int64, shape (n_bars, K), K >= the strategy's n; optional): each bar's rows
    by decreasing signal as :func:`_top_rows` orders them, -1 past the bar's last finite one
    (:func:`engine.compiled.variants.rank_bars`, computed once for many runs on one panel);
    without it the run ranks each rebalance bar itself. The top n rows are the same either way.

    ``state.counts[C_STATUS]`` is ``ST_OK`` on return, or ``ST_FULL`` when the record buffers
    would overflow (the caller retries with larger ones), or ``ST_SHORT_BOOK`` /
    ``ST_FRACTIONAL`` when the Python loop must run instead (a short position, or an order the
    Python loop refuses with an error).
    """
    timestamps, offsets, sym_id = bars.timestamps, bars.offsets, bars.sym_id
    high, low, close = bars.high, bars.low, bars.close
    ordinal, sig = bars.ordinal, bars.signal
    params, rules, partial, limits = tables.params, tables.rules, tables.partial, tables.limits
    fstate, istate, aux_i, aux_f = state.fstate, state.istate, state.aux_i, state.aux_f
    pending, book, counts, acc = state.pending, state.book, state.counts, state.acc
    orders, rejections, states = records.orders, records.rejections, records.states
    n_t = offsets.size - 1
    n_sym = fstate.shape[1]
    n = int(params[P_N])
    every = int(params[P_EVERY])
    weight = params[P_WEIGHT]
    fractional = params[P_FRACTIONAL] != 0.0
    stops_first = params[P_STOPS_FIRST] != 0.0
    close_at_end = params[P_CLOSE_AT_END] != 0.0
    levels_set = params[P_LEVELS_SET] != 0.0
    has_rules = params[P_HAS_RULES] != 0.0
    capped = params[P_VOLUME_CAP] != 0.0
    cooldown = int(params[P_COOLDOWN])
    stop_wins = params[P_STOP_WINS] != 0.0
    entry_bar = params[P_ENTRY_BAR] != 0.0
    submission_cash = params[P_SUBMISSION_CASH] != 0.0
    fill_close = params[P_FILL_CLOSE] != 0.0
    longs = np.zeros(n_sym if submission_cash else 0)
    seen = np.full(n_sym if submission_cash else 0, -1, dtype=np.int64)
    tier_copy = np.empty(2)
    qty = fstate[QTY]
    marks = fstate[MARK]
    last_row = istate[LAST_ROW]
    deferred = istate[DEFERRED]
    held = np.empty(n_sym, dtype=np.int64)
    deferred_sids = np.empty(book.size, dtype=np.int64)
    top_val = np.empty(max(n, 1))
    top_row = np.empty(max(n, 1), dtype=np.int64)
    new = np.empty(n_sym + n + 1, dtype=np.int64)
    scratch = np.empty(256 + n_sym)
    cap = orders.shape[0]
    per_bar = 4 * n_sym + n + 8  # most orders one bar can create
    nh = 0
    held_at = -1  # fill count when ``held[:nh]`` was last listed (-1: never)
    financed = mech.rates[M_FINANCING] != 0.0
    delisting = mech.rates[M_DELISTING] != 0.0
    delist_return = mech.rates[M_DELIST_RETURN]
    delist_reason = int(mech.rates[M_REASON])
    payment = mech.payment
    ev_k = 0  # next corporate action of ``mech``
    for i in range(n_t):
        if counts[C_ORDERS] + per_bar > cap or counts[C_REJ] + per_bar > cap:
            counts[C_STATUS] = ST_FULL
            return
        lo = offsets[i]
        hi = offsets[i + 1]
        for r in range(lo, hi):
            last_row[sym_id[r]] = r
        day = timestamps[i] // _DAY_US
        if day != counts[C_DAY]:
            acc[ACC_DAY_START] = acc[ACC_LAST_EQUITY]
            counts[C_DAY] = day
        # financing and corporate actions at the bar boundary (engine/mechanics/)
        if financed:
            nh, held_at = _held_since(qty, held, nh, held_at, counts[C_FILLS])
            bar_financing(
                i, timestamps, held[:nh], qty, marks, mech.borrow, acc, mech.rates,
                mech.interest, mech.fee,
            )  # fmt: skip
        if ev_k < mech.ev_bar.size and mech.ev_bar[ev_k] <= i:
            ev_k = bar_actions(
                i, day, ev_k, mech.ev_bar, mech.ev_sid, mech.ev_ratio, mech.ev_div, mech.ev_pay,
                fractional, fstate, pending, aux_f[B_QTY], aux_f[B_PARTIAL_ORIGINAL], acc, orders,
                book, counts[C_BOOK], mech.ev_out, mech.dividends, mech.owed, payment,
            )  # fmt: skip
        if payment[MX_NEXT_PAY] <= day:
            bar_payments(day, ev_k, mech.ev_pay, mech.owed, acc, payment)
        # 1. fills against the bar
        if stops_first:
            # exit_conflict="open_sell_wins": a queued market exit suspends the levels
            n_def = 0
            for k in range(counts[C_BOOK] if not stop_wins else 0):
                o = book[k]
                sid = orders[o]["sid"]
                if orders[o]["quantity"] * qty[sid] < 0 and last_row[sid] >= lo:
                    deferred[sid] = 1
                    deferred_sids[n_def] = sid
                    n_def += 1
            if levels_set:
                nh, held_at = _held_since(qty, held, nh, held_at, counts[C_FILLS])
                if nh:
                    m = kernels.level_hits(held[:nh], lo, i, low, high, fstate, istate, rules)
                    if m:
                        _fill_level_hits(m, i, bars, tables, state, records)
            _open_pass(i, lo, bars, tables, state, records)
            for k in range(n_def):
                deferred[deferred_sids[k]] = 0
            if entry_bar and has_rules:
                nh, held_at = _held_since(qty, held, nh, held_at, counts[C_FILLS])
                live = levels_active_from_nb(i, entry_bar, False)
                if not _pending_levels(
                    held[:nh], live, fstate, istate, rules, tables.inputs, bars.prev_row, new
                ):
                    counts[C_STATUS] = ST_SHORT_BOOK
                    return
            if (n_def or entry_bar) and levels_set:
                nh, held_at = _held_since(qty, held, nh, held_at, counts[C_FILLS])
                if nh:
                    m = kernels.level_hits(held[:nh], lo, i, low, high, fstate, istate, rules)
                    # the deferred positions still open (a queued partial exit)
                    if m:
                        _fill_level_hits(m, i, bars, tables, state, records)
        else:
            _open_pass(i, lo, bars, tables, state, records)
            if has_rules:
                nh, held_at = _held_since(qty, held, nh, held_at, counts[C_FILLS])
                live = levels_active_from_nb(i, entry_bar, False)
                if entry_bar and not _pending_levels(
                    held[:nh], live, fstate, istate, rules, tables.inputs, bars.prev_row, new
                ):
                    counts[C_STATUS] = ST_SHORT_BOOK
                    return
                if nh:
                    m = kernels.level_hits(held[:nh], lo, i, low, high, fstate, istate, rules)
                    if m:
                        _fill_level_hits(m, i, bars, tables, state, records)
        # 2. marks and hook C (trailing levels, time exits)
        nh, held_at = _held_since(qty, held, nh, held_at, counts[C_FILLS])
        exits = 0
        if has_rules:
            exits = _mark_and_hook_c(
                lo, hi, i, sym_id, close, high, low, ordinal, held[:nh], fstate, istate, rules,
                partial, tables.inputs, aux_i, aux_f,
            )  # fmt: skip
            if exits < 0:
                counts[C_STATUS] = ST_SHORT_BOOK
                return
        else:
            kernels.mark_bar(lo, hi, sym_id, close, high, low, held[:nh], fstate, istate)
        for k in range(exits):
            sid = istate[OUT_SID, k]
            _risk_exit(
                sid, fstate[OUT_LEVEL, k], R_RULE0 + istate[OUT_CODE, k], last_row[sid], i,
                fractional, fstate, pending, aux_i, orders, book, counts, rejections,
            )  # fmt: skip
        # 3. the strategy (TopNStrategy.on_timestamp_batch) and 4. hook B (no order rules)
        if i % every == 0:
            n_new = 0
            if ranking is None:
                cnt = _top_rows(lo, hi, sig, n, top_val, top_row)
            else:
                cnt = _ranked_rows(ranking[i], n, top_row)
            stamp = i + 1
            for k in range(cnt):
                aux_i[A_TARGET, sym_id[top_row[k]]] = stamp
            # held: unchanged since the marks (orders only, no fills)
            for k in range(nh):
                sid = held[k]
                if aux_i[A_TARGET, sid] == stamp:
                    continue
                if capped:
                    _net_working(sid, i, state, records)
                current = qty[sid] + pending[sid]
                if abs(current) < EPS:
                    continue
                if not fractional and -current != math.floor(-current):
                    counts[C_STATUS] = ST_FRACTIONAL
                    return
                row = last_row[sid] if last_row[sid] >= lo else -1
                new[n_new] = new_order(
                    sid, -current, T_MARKET, R_STRATEGY, i, row, math.nan, math.nan,
                    orders, counts, pending,
                )  # fmt: skip
                n_new += 1
            cash = acc[ACC_CASH]
            if nh:
                value, _ = kernels.portfolio_value(held[:nh], qty, marks)
                equity = cash + value
            else:
                equity = cash
            budget = weight * equity
            for k in range(cnt):
                row = top_row[k]
                sid = sym_id[row]
                price = close[row]
                if qty[sid] != 0 or pending[sid] != 0 or price <= 0:
                    continue
                shares = round_quantity_nb(budget / price, fractional)
                if shares > 0:
                    new[n_new] = new_order(
                        sid, shares, T_MARKET, R_STRATEGY, i, row, math.nan, math.nan,
                        orders, counts, pending,
                    )  # fmt: skip
                    n_new += 1
                elif zero_shares_order_nb(budget / price, fractional):
                    reject_unplaced(sid, budget / price, i, R_STRATEGY, counts, rejections)
            if cooldown:
                n_new = _cooldown(new[:n_new], i, cooldown, state, records)
            apply_limits(
                new[:n_new], i, limits, fractional, acc, fstate, pending, orders, book, counts,
                rejections, scratch, held[:nh],
            )  # fmt: skip
        # cash_check="submission", then 5. fill="close": this bar's orders at its close
        if submission_cash and counts[C_BOOK]:
            _submission_cash(i, bars, tables, state, records, longs, seen, tier_copy)
        if fill_close and not _fill_at_close(i, lo, bars, tables, state, records, new):
            counts[C_STATUS] = ST_SHORT_BOOK
            return
        # delistings, after the close's fills (engine/core/delisting.py)
        if delisting:
            delisted_book_pass(
                i, lo, hi, mech.terminal, sym_id, mech.delisted, orders, book, counts, pending,
                aux_i, rejections,
            )  # fmt: skip
            for r in range(lo, hi):
                sid = sym_id[r]
                if mech.terminal[r] and qty[sid] != 0.0:
                    pos = qty[sid]
                    o = new_order(
                        sid, -pos, T_MARKET, delist_reason, i, r, math.nan, math.nan, orders,
                        counts, pending,
                    )  # fmt: skip
                    set_status(orders, o, S_ACCEPTED)
                    price = delisting_price_nb(marks[sid], delist_return)
                    _fill(o, -pos, price, r, i, True, bars, tables, state, records)
        # close_at_end: every position at its latest close
        if close_at_end and i == n_t - 1:
            nh, held_at = _held_since(qty, held, nh, held_at, counts[C_FILLS])
            for k in range(nh):
                sid = held[k]
                pos = qty[sid]
                row = last_row[sid]
                o = new_order(
                    sid, -pos, T_MARKET, R_END, i, row, math.nan, math.nan, orders, counts, pending
                )
                set_status(orders, o, S_ACCEPTED)
                _fill(o, -pos, marks[sid], row, i, True, bars, tables, state, records)
        # 6. the portfolio state (after close_at_end's fills)
        nh, held_at = _held_since(qty, held, nh, held_at, counts[C_FILLS])
        cash = acc[ACC_CASH]
        value = 0.0
        gross = 0.0
        if nh:
            value, gross = kernels.portfolio_value(held[:nh], qty, marks)
        equity = cash + value
        equity += payment[MX_RECEIVABLE]  # dividends past their ex-date, not yet paid
        acc[ACC_LAST_EQUITY] = equity
        if equity > acc[ACC_PEAK]:
            acc[ACC_PEAK] = equity
        states[i]["bar_index"] = i
        states[i]["equity"] = equity
        states[i]["cash"] = cash
        states[i]["positions_value"] = value
        states[i]["gross"] = gross
        states[i]["n_positions"] = nh
    counts[C_STATUS] = ST_OK


def init_state(
    fstate: FloatArray,
    istate: IntArray,
    aux_i: IntArray,
    aux_f: FloatArray,
    pending: FloatArray,
    counts: IntArray,
    acc: FloatArray,
    initial_cash: float,
) -> None:
    """The run state before the first bar, written in place (:class:`RunState`'s arrays but
    the book; a single run's, or one variant's of :mod:`engine.compiled.variants`)."""
    fstate[:] = np.nan
    fstate[QTY] = 0.0
    fstate[AVG] = 0.0
    istate[:] = 0
    istate[LAST_ROW] = -1
    aux_i[:] = 0
    aux_i[A_PARTIAL_ENTRY] = -1
    aux_i[A_STOPPED_AT] = _NEVER
    aux_f[:] = 0.0
    pending[:] = 0.0
    counts[:] = 0
    counts[C_DAY] = -1
    acc[:] = initial_cash
    acc[ACC_REALIZED] = 0.0


class CompiledRun:
    """The outputs of :func:`run_topn` for one run.

    Attributes
    ----------
    records : Records
        The run's orders, fills, trades, rejections and portfolio states
        (:mod:`engine.core.records`), read by :class:`engine.recorder.Recorder` as the Python
        driver's are; empty unless ``status == ST_OK``.
    status : int
        ``ST_OK``, or why the Python loop must run instead (``ST_SHORT_BOOK``,
        ``ST_FRACTIONAL``).
    fstate, istate, aux_i, aux_f : ndarray
        The final per-symbol state (open positions).
    cash : float
        Final cash, currency.
    n_fills : int
    """

    def __init__(self, data: MarketData, plan: TopNPlan) -> None:
        bars = Bars(
            data.timestamps, data.offsets, data.sym_id, data.open, data.high, data.low,
            data.close, data.ordinal, data.prev_row, plan.signal, data.volume,
        )  # fmt: skip
        costs = plan.costs
        tables = Tables(
            plan.params, plan.rules, plan.partial, plan.limits, plan.inputs, costs.params,
            costs.tiers, costs.tier_state, costs.rows,
        )  # fmt: skip
        n_sym = data.n_symbols
        n_t = data.n_timestamps
        mech = plan.mechanics
        if mech is None:
            mech = compiled_mechanics(data, None, None)
        cap = plan.capacity
        while True:
            tables.tier_state[:] = (math.nan, 0.0)
            fstate = np.empty((N_FLOAT_FIELDS, n_sym))
            istate = np.empty((N_INT_FIELDS, n_sym), dtype=np.int64)
            aux_i = np.empty((N_A, n_sym), dtype=np.int64)
            aux_f = np.empty((N_B, n_sym))
            pending = np.empty(n_sym)
            counts = np.empty(N_C, dtype=np.int64)
            acc = np.empty(N_ACC)
            init_state(fstate, istate, aux_i, aux_f, pending, counts, acc, plan.initial_cash)
            orders = empty_records("orders", cap)
            fills = empty_records("fills", cap)
            trades = empty_records("trades", cap)
            rejections = empty_records("rejections", cap)
            states = empty_records("states", n_t)
            book = np.empty(cap, dtype=np.int64)
            run_topn(
                bars,
                tables,
                RunState(fstate, istate, aux_i, aux_f, pending, book, counts, acc),
                RunRecords(orders, fills, trades, rejections, states),
                mech,
            )
            if counts[C_STATUS] != ST_FULL:
                break
            cap *= 2
            mech = fresh_compiled(mech)
        self._finish(
            plan,
            n_t,
            RunState(fstate, istate, aux_i, aux_f, pending, book, counts, acc),
            RunRecords(orders, fills, trades, rejections, states),
            mech,
        )

    @classmethod
    def from_buffers(
        cls,
        plan: TopNPlan,
        n_t: int,
        state: RunState,
        records: RunRecords,
        mech: CompiledMechanics,
    ) -> CompiledRun:
        """The outputs of a :func:`run_topn` call made elsewhere (the variant driver,
        :mod:`engine.compiled.variants`) on ``plan``'s inputs, from its final ``state`` and
        record buffers; as :meth:`__init__` would give."""
        run = cls.__new__(cls)
        run._finish(plan, n_t, state, records, mech)
        return run

    def _finish(
        self,
        plan: TopNPlan,
        n_t: int,
        state: RunState,
        records: RunRecords,
        mech: CompiledMechanics,
    ) -> None:
        """The attributes from a finished :func:`run_topn` call's state and buffers."""
        fstate, istate, aux_i, aux_f = state.fstate, state.istate, state.aux_i, state.aux_f
        counts, acc = state.counts, state.acc
        orders, fills, trades, rejections, states = records
        self.status = int(counts[C_STATUS])
        self.cash = float(acc[ACC_CASH])
        self.fstate = fstate
        self.istate = istate
        self.aux_i = aux_i
        self.aux_f = aux_f
        self.n_fills = int(counts[C_FILLS])
        self.n_bars = n_t
        self.mechanics_out = mech
        """The corporate-action and financing outputs (:class:`CompiledMechanics`)."""
        self.records = Records([*FIXED_REASONS, *plan.rule_names[1:]])
        if self.status != ST_OK:
            return  # the Python loop runs instead
        n_rej = int(counts[C_REJ])
        rejections = rejections[:n_rej]
        _limit_texts(rejections, plan.limit_rules, self.records)
        _unplaced_rules(rejections, self.records)
        orders = orders[: counts[C_ORDERS]]
        by_limit = orders["status_reason"] >= SR_LIMIT
        if by_limit.any():
            rows = orders["status_reason"][by_limit] - SR_LIMIT
            orders["status_reason"][by_limit] = rejections["reason"][rows]
        self.records.extend("orders", orders)
        self.records.extend("fills", fills[: counts[C_FILLS]])
        self.records.extend("trades", trades[: counts[C_TRADES]])
        self.records.extend("rejections", rejections)
        self.records.extend("states", states)

    def open_positions_frame(self, data: MarketData) -> pl.DataFrame:
        """The positions still open at the end (see :class:`engine.BacktestResult`)."""
        sids = np.flatnonzero(self.aux_i[A_OPEN]).astype(np.int64)
        q = self.fstate[QTY, sids]
        avg = self.fstate[AVG, sids]
        mark = self.fstate[MARK, sids]
        comm = self.aux_f[B_COMM, sids]
        frame = pl.DataFrame(
            {
                "symbol": _gather(_symbol_series(data), sids),
                "side": pl.Series(np.where(q > 0, "long", "short"), dtype=pl.String),
                "quantity": q,
                "avg_price": avg,
                "mark": mark,
                "entry_timestamp": data.timestamps[self.aux_i[A_ENTRY_INDEX, sids]],
                "entry_commission": comm,
                "unrealized_pnl": (mark - avg) * q - comm,
                "stop_loss": self.fstate[STOP, sids],
                "take_profit": self.fstate[TP, sids],
            },
            schema_overrides={"entry_timestamp": pl.Int64},
        )
        return frame.with_columns(pl.col("entry_timestamp").cast(pl.Datetime("us", "UTC")))


def _symbol_series(data: MarketData) -> pl.Series:
    return pl.Series(data.symbols.tolist(), dtype=pl.String)


def _gather(names: pl.Series, codes: npt.NDArray[Any]) -> pl.Series:
    """``names[codes]`` as a String series (no per-row Python)."""
    return names.gather(pl.Series(codes, dtype=pl.Int64)) if codes.size else names.clear()


def _unplaced_rules(rejections: RecordArray, records: Records) -> None:
    """The ``rule`` of the rows of orders never placed (``reject_unplaced``: a reason code
    there) as the text code of that reason's name; the strategy's (code 0) stays the empty
    text."""
    rows = np.flatnonzero((rejections["order_id"] == UNPLACED) & (rejections["rule"] > 0))
    for k in rows.tolist():
        name = records.reasons[int(rejections["rule"][k])]
        rejections["rule"][k] = records.text_code(name)


def _limit_texts(rejections: RecordArray, limits: list[LimitText], records: Records) -> None:
    """The reason texts and rule names of the rejection / shrink rows a compiled portfolio
    limit wrote (``limit >= 0``), from the limits' own ``reason_text``, as codes of
    ``records.texts``: one Python call per distinct ``(limit, shrink, value, bound)``, so a
    halted run's thousands of identical rejections cost one text."""
    rows = np.flatnonzero(rejections["limit"] >= 0)
    if rows.size == 0:
        return
    keys = [rejections[field][rows] for field in ("limit", "shrink_text", "value", "bound")]
    order = np.lexsort(keys[::-1])
    first = np.zeros(rows.size, dtype=np.bool_)  # the first row of each distinct key, sorted
    first[0] = True
    for key in keys:
        ordered = key[order]
        first[1:] |= ordered[1:] != ordered[:-1]
    group = np.empty(rows.size, dtype=np.int64)
    group[order] = np.cumsum(first) - 1
    codes = np.array(
        [
            records.text_code(limits[int(r)].reason_text(bool(shrink), float(value), float(bound)))
            for r, shrink, value, bound in zip(*(key[order[first]] for key in keys), strict=True)
        ],
        dtype=rejections.dtype["reason"],
    )
    names = np.array(
        [records.text_code(limit.name) for limit in limits], dtype=rejections.dtype["rule"]
    )
    rejections["reason"][rows] = codes[group]
    rejections["rule"][rows] = names[keys[0]]
