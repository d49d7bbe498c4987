"""Compiled per-bar kernels of the broker and the risk layer (numba).

The broker keeps its per-symbol run state in two matrices, one row per field (the broker's
``qty``, ``stop``, ``last_row``, ... attributes are views of those rows):

- ``fstate``, float64, shape (N_FLOAT_FIELDS, n_symbols): rows ``QTY`` (shares, signed),
  ``AVG`` (average entry price), ``MARK`` (latest close), ``STOP`` / ``TP`` (stop-loss and
  take-profit levels, NaN = none), ``BEST`` / ``WORST`` (highest high and lowest low since the
  entry), ``OUT_LEVEL`` (output buffer). Prices are in currency units per share.
- ``istate``, int64, shape (N_INT_FIELDS, n_symbols): rows ``LAST_ROW`` (the symbol's latest
  data row; below ``lo``, the current bar's first row, means no bar now), ``LEVEL_FROM`` (first
  bar index at which the levels are live), ``STOP_RULE`` / ``TP_RULE`` (codes of the rules that
  set the levels, 0 = none), ``ENTRY_ORDINAL`` (the symbol's bar ordinal at the entry),
  ``ENTRY_PENDING`` (1: a fill opened or increased the position and its entry levels are
  still to be set by the next compiled step; used by long-only runs with compiled rules),
  ``DEFERRED`` (1: the position's levels are not checked now; ``bar_event_order="stops_first"``
  sets it for positions with a queued market exit), ``OUT_SID`` / ``OUT_CODE`` (output
  buffers).

The kernels read and write those matrices in place: one compiled call per bar step instead of
a dozen NumPy calls. Their outputs go to the first entries of the ``OUT_*`` rows, and their
arguments are few because numba's dispatch costs some 50-100 ns per argument, which is most of
a call's cost here. Each kernel is a plain typed Python function compiled with
:func:`numba.njit`; the uncompiled function stays available as ``kernel.py_func`` (the tests
run both and compare).

The rule kernels evaluate a table of the built-in fixed-percent rules ``rules``, float64,
shape (m, N_RULE_FIELDS), one row per rule in priority order (built by
:class:`engine.risk.manager.BasicRulesKernel`), columns: ``KIND`` (``STOP_LOSS``,
``TAKE_PROFIT``, ``TRAILING`` or ``TIME_EXIT``), ``CODE`` (the rule's name code), ``MAX_BARS``
(integers stored exactly as floats), ``FACTOR`` (long entry level / entry price),
``TRAIL_INITIAL``, ``TRAIL_TIGHTEN``, ``TRAIL_MIN`` (fractions).

Their semantics are those of the rules' NumPy batch methods (``PriceBasedStopLoss``,
``PriceBasedTakeProfit``, ``DynamicTrailingStop.long_levels``, ``TimeBasedExit``) merged like
:class:`engine.risk.batch.PositionActions`: the higher long stop wins, earlier rules win ties,
NaN never wins, the first take-profit wins. ``tests/engine/test_risk_kernel.py`` checks that a
run through them equals a run through the general per-position path."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from engine.core.layout import (
    ATR_STOP,
    ATR_TAKE_PROFIT,
    AVG,
    BEST,
    CODE,
    DEFERRED,
    ENTRY_ORDINAL,
    ENTRY_PENDING,
    FACTOR,
    GATE,
    GATE_ON,
    INPUT,
    KIND,
    LAST_ROW,
    LEVEL_FROM,
    MARK,
    MAX_BARS,
    OUT_CODE,
    OUT_LEVEL,
    OUT_SID,
    PRIORITY,
    QTY,
    SCALAR,
    STOP,
    STOP_LOSS,
    STOP_RULE,
    TAKE_PROFIT,
    TIME_EXIT,
    TP,
    TP_RULE,
    TRAIL_INITIAL,
    TRAIL_MIN,
    TRAIL_TIGHTEN,
    TRAILING,
    WORST,
)

# the state rows and rule-table columns, stated once in engine.core.layout
from engine.core.ledger import count_projected as count_projected
from engine.core.ledger import portfolio_value as portfolio_value
from engine.core.rules import atr_level_nb

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    """Compile ``func`` in nopython mode, cached on disk next to this module."""
    return cast(_F, numba.njit(cache=True, nogil=True)(func))


def _jit_inline(func: _F) -> _F:
    """:func:`_jit`, inlined into every compiled caller (numba IR level): for the small pieces
    the hook-C kernels here and in :mod:`engine.compiled.topn` share, at no call cost."""
    return cast(_F, numba.njit(cache=True, nogil=True, inline="always")(func))


@_jit
def mark_bar(
    lo: int,
    hi: int,
    sym_id: IntArray,
    close: FloatArray,
    high: FloatArray,
    low: FloatArray,
    held: IntArray,
    fstate: FloatArray,
    istate: IntArray,
) -> None:
    """Marks <- this bar's closes (data rows ``lo:hi``); the best / worst prices of the held
    positions with a bar now <- ``fmax(best, high)`` / ``fmin(worst, low)``.

    ``held``: int64 ids of the symbols with a non-zero position, ascending.
    """
    marks = fstate[MARK]
    for r in range(lo, hi):
        marks[sym_id[r]] = close[r]
    last_row = istate[LAST_ROW]
    best = fstate[BEST]
    worst = fstate[WORST]
    for k in range(held.size):
        sid = held[k]
        row = last_row[sid]
        if row >= lo:
            best[sid] = np.fmax(best[sid], high[row])
            worst[sid] = np.fmin(worst[sid], low[row])


@_jit
def set_last_rows(lo: int, hi: int, sym_id: IntArray, last_row: IntArray) -> None:
    """``last_row[sym_id[r]] = r`` for the rows ``lo:hi`` of the bar that begins."""
    for r in range(lo, hi):
        last_row[sym_id[r]] = r


@_jit_inline
def stop_wins(first: bool, value: float, level: float) -> bool:
    """Whether the stop candidate ``value`` replaces ``level``, the merge so far of the earlier
    stop rules of a long position (rule order): the first candidate is taken as it is, later
    ones when higher; a NaN never wins over a finite level, ties keep the earlier rule."""
    return first or value > level or (math.isnan(level) and math.isfinite(value))


@_jit_inline
def write_stop(
    sid: int, level: float, code: int, active_from: int, fstate: FloatArray, istate: IntArray
) -> None:
    """A finite merged stop ``level`` becomes the stop of ``sid``, set by rule ``code`` and live
    from bar ``active_from``; a NaN leaves the stop as it was."""
    if math.isfinite(level):
        fstate[STOP, sid] = level
        istate[STOP_RULE, sid] = code
        istate[LEVEL_FROM, sid] = active_from


@_jit_inline
def trailing_level(rules: FloatArray, r: int, bars_held: int, best: float, stop: float) -> float:
    """Stop candidate of the trailing rule in row ``r`` of ``rules`` for a long position held
    ``bars_held`` bars whose best price is ``best`` and stop ``stop`` (NaN: none).

    ``trail = TRAIL_INITIAL`` or, when ``TRAIL_TIGHTEN != 0``,
    ``max(TRAIL_MIN, TRAIL_INITIAL - TRAIL_TIGHTEN * bars_held)``; the candidate is
    ``fmax(best * (1 - trail), stop)``: the stop only ratchets up.
    """
    trail = rules[r, TRAIL_INITIAL]
    tighten = rules[r, TRAIL_TIGHTEN]
    if tighten != 0.0:
        trail = np.maximum(rules[r, TRAIL_MIN], trail - tighten * bars_held)
    return np.fmax(best * (1.0 - trail), stop)  # type: ignore[no-any-return]


@_jit_inline
def rule_applies(rules: FloatArray, r: int, inputs: FloatArray, row: int) -> bool:
    """Whether row ``r`` of a rule table applies to a position whose rules read data row
    ``row`` (-1: none): always for a table without the ``GATE`` column (the Python driver's
    fixed-percent rules) or a row with ``GATE`` -1; for a member of a ``RegimeDependentRule``
    (compiled driver), when the regime flag ``inputs[GATE, row]`` (1.0: above the threshold;
    a missing row counts as below, 0.0) equals the row's ``GATE_ON``."""
    if rules.shape[1] <= GATE or rules[r, GATE] < 0.0:
        return True
    flag = inputs[int(rules[r, GATE]), row] if row >= 0 else 0.0
    return bool(flag == rules[r, GATE_ON])


@_jit
def set_entry_levels(
    sid: int,
    fstate: FloatArray,
    istate: IntArray,
    active_from: int,
    rules: FloatArray,
    inputs: FloatArray,
    known: int,
) -> None:
    """Entry levels of the long position ``sid`` (see :func:`entry_levels`); unmarks it as
    ``ENTRY_PENDING`` (a mark left by an entry closed again before a compiled step must not
    outlive a later entry's levels).

    ``inputs`` (float64, shape (k, n_rows)) and ``known`` (the data row known at the fill, the
    symbol's bar before it; -1: none) serve the compiled driver's wider table
    (:mod:`engine.core.layout`): the ATR of the ``ATR_STOP`` / ``ATR_TAKE_PROFIT`` rows is
    ``inputs[INPUT, known]`` (NaN without a known row) and a regime member counts only when
    :func:`rule_applies`. Rows marked ``SCALAR`` merge after the others, as the Python driver's
    per-position rules do: their stops by the same rule, their take-profit (the highest
    priority's, the earlier on ties) only where no other row set one.
    """
    istate[ENTRY_PENDING, sid] = 0
    price = fstate[AVG, sid]
    wide = rules.shape[1] > SCALAR
    level = math.nan
    code = 0
    first = True
    target = math.nan
    target_code = 0
    late_target = math.nan
    late_code = 0
    late_priority = 0.0
    for r in range(rules.shape[0]):
        kind = rules[r, KIND]
        if kind in (STOP_LOSS, TRAILING, TAKE_PROFIT):
            value = price * rules[r, FACTOR]
        elif wide and kind in (ATR_STOP, ATR_TAKE_PROFIT):
            atr = inputs[int(rules[r, INPUT]), known] if known >= 0 else math.nan
            side = -1.0 if kind == ATR_STOP else 1.0
            value = atr_level_nb(price, 1.0, side, rules[r, FACTOR], atr)
        else:
            continue
        if wide and not rule_applies(rules, r, inputs, known):
            continue
        if kind in (TAKE_PROFIT, ATR_TAKE_PROFIT):
            if not math.isfinite(value):
                continue
            if wide and rules[r, SCALAR] != 0.0:
                if late_code == 0 or rules[r, PRIORITY] > late_priority:
                    late_target = value
                    late_code = int(rules[r, CODE])
                    late_priority = rules[r, PRIORITY]
            elif target_code == 0:
                target = value
                target_code = int(rules[r, CODE])
        elif stop_wins(first, value, level):
            level = value
            code = int(rules[r, CODE])
            first = False
    if target_code == 0 and late_code != 0:
        target = late_target
        target_code = late_code
    write_stop(sid, level, code, active_from, fstate, istate)
    if math.isfinite(target):
        fstate[TP, sid] = target
        istate[TP_RULE, sid] = target_code
        istate[LEVEL_FROM, sid] = active_from


_NO_INPUTS = np.empty((0, 0))


@_jit
def entry_levels(
    sids: IntArray, fstate: FloatArray, istate: IntArray, active_from: int, rules: FloatArray
) -> bool:
    """Initial levels of the long positions ``sids`` just opened or increased.

    Stop: the highest of ``avg * FACTOR`` over the stop-loss and trailing rules (earlier rules
    win ties). Take-profit: ``avg * FACTOR`` of the first take-profit rule. Finite levels are
    written with ``LEVEL_FROM = active_from``; flat positions (closed again in the same step)
    are skipped (:func:`set_entry_levels`).

    Returns False, writing nothing, when one of the positions is short (the broker then takes
    the general path).
    """
    qty = fstate[QTY]
    for k in range(sids.size):
        if qty[sids[k]] < 0:
            return False
    for k in range(sids.size):
        sid = sids[k]
        if qty[sid] != 0:
            set_entry_levels(sid, fstate, istate, active_from, rules, _NO_INPUTS, -1)
    return True


@_jit
def _set_pending_entry_levels(
    held: IntArray, fstate: FloatArray, istate: IntArray, active_from: int, rules: FloatArray
) -> None:
    """Entry levels of the held positions marked ``ENTRY_PENDING`` (which unmarks them; the
    compiled driver sets its entries' levels at the fill, :func:`set_entry_levels`)."""
    pending = istate[ENTRY_PENDING]
    for k in range(held.size):
        sid = held[k]
        if pending[sid]:
            set_entry_levels(sid, fstate, istate, active_from, rules, _NO_INPUTS, -1)


@_jit_inline
def mark_long_book(
    lo: int,
    hi: int,
    i: int,
    sym_id: IntArray,
    close: FloatArray,
    high: FloatArray,
    low: FloatArray,
    held: IntArray,
    fstate: FloatArray,
    istate: IntArray,
    rules: FloatArray,
) -> bool:
    """The first steps of hook C on a long book: the levels of the entries marked
    ``ENTRY_PENDING`` (live from bar ``i + 1``), then :func:`mark_bar`.

    Returns False (after the marks) when a short position has a bar now: hook C then belongs
    to the broker's general path.
    """
    _set_pending_entry_levels(held, fstate, istate, i + 1, rules)
    mark_bar(lo, hi, sym_id, close, high, low, held, fstate, istate)
    last_row = istate[LAST_ROW]
    qty = fstate[QTY]
    for k in range(held.size):
        sid = held[k]
        if last_row[sid] >= lo and qty[sid] < 0:
            return False
    return True


@_jit
def level_hits(
    held: IntArray,
    lo: int,
    i: int,
    low: FloatArray,
    high: FloatArray,
    fstate: FloatArray,
    istate: IntArray,
    rules: FloatArray,
) -> int:
    """Positions whose stop-loss or take-profit level bar ``i`` touches (step 1b).

    First sets the levels of the entries marked ``ENTRY_PENDING`` (this bar's fills, live from
    bar ``i + 1``) as :func:`entry_levels` does. A long stop is touched when ``low <= stop``, a
    long target when ``high >= tp`` (mirrored for shorts); when both are, the stop wins. A level
    counts only if the symbol has a bar now, ``LEVEL_FROM <= i`` and ``DEFERRED`` is 0.

    Writes, per touched position in ``held`` order, its id to ``OUT_SID``, 1 to ``OUT_CODE`` if
    the stop (not the target) was touched, and the touched level to ``OUT_LEVEL``. Returns the
    number of touched positions.
    """
    if rules.shape[0]:
        _set_pending_entry_levels(held, fstate, istate, i + 1, rules)
    n = 0
    last_row = istate[LAST_ROW]
    level_from = istate[LEVEL_FROM]
    deferred = istate[DEFERRED]
    for k in range(held.size):
        sid = held[k]
        row = last_row[sid]
        if row < lo:
            continue
        stop = fstate[STOP, sid]
        target = fstate[TP, sid]
        if math.isnan(stop) and math.isnan(target):
            continue
        if fstate[QTY, sid] > 0:
            stop_hit = low[row] <= stop
            target_hit = high[row] >= target
        else:
            stop_hit = high[row] >= stop
            target_hit = low[row] <= target
        if not (stop_hit or target_hit) or level_from[sid] > i or deferred[sid]:
            continue
        istate[OUT_SID, n] = sid
        istate[OUT_CODE, n] = 1 if stop_hit else 0
        fstate[OUT_LEVEL, n] = stop if stop_hit else target
        n += 1
    return n


@_jit
def mark_bar_basic_rules(
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
) -> int:
    """:func:`mark_bar`, then hook C of the rule table on a long book, for the held positions
    with a bar now.

    First sets the levels of the entries marked ``ENTRY_PENDING`` (live from bar ``i + 1``).

    Trailing stops: each trailing rule's candidate is :func:`trailing_level`; the candidates
    merge as in :func:`entry_levels` (:func:`stop_wins`); a finite result is written as the
    stop, named by its rule, live from bar ``i + 1`` (:func:`write_stop`).

    Time exits: the first time rule with ``bars_held >= MAX_BARS`` writes the position's id to
    ``OUT_SID`` and its rule code to ``OUT_CODE``. ``bars_held`` counts the symbol's bars since
    the entry bar (``ordinal[row] - ENTRY_ORDINAL``).

    Returns the number of exits, or -1 (after the marks, without hook C) when a short position
    has a bar now: the broker then takes the general path.
    """
    if not mark_long_book(lo, hi, i, sym_id, close, high, low, held, fstate, istate, rules):
        return -1
    last_row = istate[LAST_ROW]
    n = 0
    for k in range(held.size):
        sid = held[k]
        row = last_row[sid]
        if row < lo:
            continue
        bars_held = ordinal[row] - istate[ENTRY_ORDINAL, sid]
        current = fstate[STOP, sid]
        level = math.nan
        code = 0
        first = True
        exit_code = 0
        for r in range(rules.shape[0]):
            kind = rules[r, KIND]
            if kind == TRAILING:
                value = trailing_level(rules, r, bars_held, fstate[BEST, sid], current)
                if stop_wins(first, value, level):
                    level = value
                    code = int(rules[r, CODE])
                    first = False
            elif kind == TIME_EXIT and exit_code == 0 and bars_held >= rules[r, MAX_BARS]:
                exit_code = int(rules[r, CODE])
        write_stop(sid, level, code, i + 1, fstate, istate)
        if exit_code:
            istate[OUT_SID, n] = sid
            istate[OUT_CODE, n] = exit_code
            n += 1
    return n


@_jit
def check_mark_bar_basic_rules(
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
) -> int:
    """:func:`level_hits` and, when no level is touched, at once :func:`mark_bar_basic_rules`.

    For a run whose next step after the level check is the marking of the bar
    (``bar_event_order="chronological"``): one compiled call per bar instead of two.

    Returns the number of touched positions ``n > 0`` (the bar is then not marked yet), or
    ``-1 - m`` where ``m`` is the return value of :func:`mark_bar_basic_rules` (number of time
    exits, or -1 for the general path).
    """
    n = level_hits(held, lo, i, low, high, fstate, istate, rules)
    if n:
        return n
    m = mark_bar_basic_rules(
        lo, hi, i, sym_id, close, high, low, ordinal, held, fstate, istate, rules
    )
    return -1 - m
