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

This module holds the driver: the loop over the timestamps in the engine's per-bar order
(see :class:`engine.BacktestEngine` for the steps) with the rebalance, and
:class:`CompiledRun`, which calls it (again with larger record buffers when they overflow) and
turns its buffers into records. The loop's parts live next to it: the per-bar passes (fills at
the open and of the levels, risk exits, hook B's cooldown and netting,
``cash_check="submission"``, the fills at the close) in :mod:`engine.compiled.passes`; the
strategy's ranking and the hook-C merge of the position rules in
:mod:`engine.compiled.decisions`; the plan (:class:`TopNPlan`), the tuples the kernels pass,
the ``P_*`` / ``ST_*`` codes and :func:`init_state` in :mod:`engine.compiled.state`; the
Python-side conversion of the records in :mod:`engine.compiled.outputs`. The public names of
those modules are importable from this one. Execution is the core's: order
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
(:mod:`engine.core`, :mod:`engine.risk.kernels`, :mod:`engine.compiled.passes`,
:mod:`engine.compiled.decisions`), delete ``engine/**/__pycache__/*.nb*`` so
the run kernel is rebuilt.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from engine.compiled.decisions import _mark_and_hook_c, _ranked_rows, _top_rows
from engine.compiled.outputs import _gather, _limit_texts, _symbol_series, _unplaced_rules
from engine.compiled.passes import (
    _cooldown,
    _fill,
    _fill_at_close,
    _fill_level_hits,
    _net_working,
    _open_pass,
    _pending_levels,
    _risk_exit,
    _submission_cash,
)
from engine.compiled.state import (
    N_P,
    P_ALLOW_SHORT,
    P_CLOSE_AT_END,
    P_COOLDOWN,
    P_ENTRY_BAR,
    P_ENTRY_RULES,
    P_EVERY,
    P_FILL_CLOSE,
    P_FRACTIONAL,
    P_HAS_RULES,
    P_LEVELS_SET,
    P_N,
    P_STOP_WINS,
    P_STOPS_FIRST,
    P_SUBMISSION_CASH,
    P_TOL,
    P_VOLUME_CAP,
    P_WEIGHT,
    ST_FRACTIONAL,
    ST_FULL,
    ST_OK,
    ST_SHORT_BOOK,
    Bars,
    FloatArray,
    IntArray,
    LimitText,
    RunRecords,
    RunState,
    Tables,
    TopNPlan,
    init_state,
)
from engine.core.actions import MX_NEXT_PAY, MX_RECEIVABLE, bar_actions, bar_payments
from engine.core.delisting import delisted_book_pass, delisting_price_nb
from engine.core.financing import bar_financing
from engine.core.jit import njit
from engine.core.layout import (
    A_ENTRY_INDEX,
    A_OPEN,
    A_TARGET,
    ACC_CASH,
    ACC_DAY_START,
    ACC_LAST_EQUITY,
    ACC_PEAK,
    AVG,
    B_COMM,
    B_PARTIAL_ORIGINAL,
    B_QTY,
    C_BOOK,
    C_DAY,
    C_FILLS,
    C_ORDERS,
    C_REJ,
    C_STATUS,
    C_TRADES,
    DEFERRED,
    EPS,
    FIXED_REASONS,
    LAST_ROW,
    MARK,
    N_A,
    N_ACC,
    N_B,
    N_C,
    N_FLOAT_FIELDS,
    N_INT_FIELDS,
    OUT_CODE,
    OUT_LEVEL,
    OUT_SID,
    QTY,
    R_END,
    R_RULE0,
    R_STRATEGY,
    S_ACCEPTED,
    SR_LIMIT,
    STOP,
    T_MARKET,
    TP,
    set_status,
)
from engine.core.ledger import (
    levels_active_from_nb,
    new_order,
    reject_unplaced,
    round_quantity_nb,
    zero_shares_order_nb,
)
from engine.core.limits import apply_limits
from engine.core.records import RecordArray, Records, empty_records
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

__all__ = [
    "Bars",
    "CompiledRun",
    "LimitText",
    "N_P",
    "P_ALLOW_SHORT",
    "P_CLOSE_AT_END",
    "P_COOLDOWN",
    "P_ENTRY_BAR",
    "P_ENTRY_RULES",
    "P_EVERY",
    "P_FILL_CLOSE",
    "P_FRACTIONAL",
    "P_HAS_RULES",
    "P_LEVELS_SET",
    "P_N",
    "P_STOPS_FIRST",
    "P_STOP_WINS",
    "P_SUBMISSION_CASH",
    "P_TOL",
    "P_VOLUME_CAP",
    "P_WEIGHT",
    "RunRecords",
    "RunState",
    "ST_FRACTIONAL",
    "ST_FULL",
    "ST_OK",
    "ST_SHORT_BOOK",
    "Tables",
    "TopNPlan",
    "init_state",
    "run_topn",
]

_DAY_US = 86_400_000_000


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
def _watched_rows(
    rows: IntArray, held: IntArray, book: IntArray, orders: RecordArray, last_row: IntArray
) -> None:
    """``last_row[sid] = rows[sid]`` (this bar's row, -1: none) for the ``held`` symbols and
    those of the working orders ``book``, where the symbol has a row now."""
    for k in range(held.size):
        sid = held[k]
        if rows[sid] >= 0:
            last_row[sid] = rows[sid]
    for k in range(book.size):
        sid = orders[book[k]]["sid"]
        if rows[sid] >= 0:
            last_row[sid] = rows[sid]


@njit
def _held_marks(
    held: IntArray, lo: int, last_row: IntArray, close: FloatArray, marks: FloatArray
) -> None:
    """Marks <- this bar's closes (rows from ``lo``) of the ``held`` symbols with a row now."""
    for k in range(held.size):
        sid = held[k]
        if last_row[sid] >= lo:
            marks[sid] = close[last_row[sid]]


@njit
def run_topn(
    bars: Bars,
    tables: Tables,
    state: RunState,
    records: RunRecords,
    mech: CompiledMechanics,
    ranking: IntArray | None = None,
    bar_rows: IntArray | None = None,
) -> None:
    """The whole run of :class:`engine.TopNStrategy` with the compiled rules and limits
    (module docstring), in the engine's per-bar order.

    ``ranking`` (int64, shape (n_bars, K), K >= the strategy's n; optional): each bar's rows
    by decreasing signal as :func:`_top_rows` orders them, -1 past the bar's last finite one
    (:func:`engine.compiled.variants.rank_bars`, computed once for many runs on one panel);
    without it the run ranks each rebalance bar itself. The top n rows are the same either way.

    ``bar_rows`` (int64, shape (n_bars + 1, n_symbols); optional): row ``i`` holds each
    symbol's data row at bar ``i`` (-1: none), the last row each symbol's last data row
    (:func:`engine.compiled.variants.bar_rows`, computed once for many runs on one panel).
    With it the run walks sparsely: each bar updates the latest row (``LAST_ROW``) of the
    symbols held or with a working order only, and the mark (``MARK``) of the held ones; a
    symbol gets both when an order is placed for it, and every symbol gets its final ones
    after the last bar. Those are the only reads of the two (the positions, the book, the new
    orders), so the run's records and final state are those of the dense walk, which updates
    every symbol of every bar (``tests/engine/test_variants.py`` compares them). Not with a
    volume cap (a working order may then see a bar without filling) or market mechanics.

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
    sparse = (
        bar_rows is not None
        and not capped
        and not financed
        and not delisting
        and mech.ev_bar.size == 0
    )
    for i in range(n_t):
        if counts[C_ORDERS] + per_bar > cap or counts[C_REJ] + per_bar > cap:
            counts[C_STATUS] = ST_FULL
            return
        lo = offsets[i]
        hi = offsets[i + 1]
        if sparse and bar_rows is not None:
            # the latest rows of the symbols held or with a working order (docstring)
            nh, held_at = _held_since(qty, held, nh, held_at, counts[C_FILLS])
            _watched_rows(bar_rows[i], held[:nh], book[: counts[C_BOOK]], orders, last_row)
        else:
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
        hi_marks = hi  # the rows whose closes become marks below
        if sparse:
            _held_marks(held[:nh], lo, last_row, close, marks)
            hi_marks = lo
        exits = 0
        if has_rules:
            exits = _mark_and_hook_c(
                lo, hi_marks, i, sym_id, close, high, low, ordinal, held[:nh], fstate, istate,
                rules, partial, tables.inputs, aux_i, aux_f,
            )  # fmt: skip
            if exits < 0:
                counts[C_STATUS] = ST_SHORT_BOOK
                return
        else:
            kernels.mark_bar(lo, hi_marks, sym_id, close, high, low, held[:nh], fstate, istate)
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
                if sparse and shares > 0:
                    last_row[sid] = row  # an order's symbol: its row and mark of this bar
                    marks[sid] = price
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
    if sparse and bar_rows is not None:
        # every symbol's final latest row and mark, as the dense walk leaves them
        ends = bar_rows[n_t]
        for sid in range(n_sym):
            if ends[sid] >= 0:
                last_row[sid] = ends[sid]
                marks[sid] = close[ends[sid]]
    counts[C_STATUS] = ST_OK


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
