"""The decisions of the compiled TopN driver (:func:`engine.compiled.topn.run_topn`).

The strategy's ranking (:func:`_top_rows`: a bar's top n rows by signal; :func:`_ranked_rows`:
the same from a precomputed ranking, :func:`engine.compiled.variants.rank_bars`) and the
marks plus the hook-C merge of the position rules (:func:`_mark_and_hook_c`: trailing
stops, time exits, ``BreakEvenRule``, ``PartialProfitTaking`` and the members of
``RegimeDependentRule``).
"""

from __future__ import annotations

import math

from engine.compiled.state import (
    FloatArray,
    IntArray,
)
from engine.core.jit import njit
from engine.core.layout import (
    A_ENTRY_INDEX,
    A_PARTIAL_DONE,
    A_PARTIAL_ENTRY,
    AVG,
    B_PARTIAL_ORIGINAL,
    BE_OFFSET,
    BE_TRIGGER,
    BEST,
    BREAKEVEN,
    CODE,
    ENTRY_ORDINAL,
    KIND,
    LAST_ROW,
    MAX_BARS,
    OUT_CODE,
    OUT_LEVEL,
    OUT_SID,
    PARTIAL,
    PRIORITY,
    QTY,
    STOP,
    TIME_EXIT,
    TRAILING,
)
from engine.core.rules import breakeven_stop_nb, partial_take_nb
from engine.risk import kernels


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
