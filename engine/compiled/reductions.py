"""The array reductions of :func:`engine.compute_metrics`, compiled: the same values, bit for bit.

:func:`engine.metrics.compute_metrics` reduces a run's equity, positions and trades to a few
sums and extremes (:class:`engine.metrics.RunReductions`) with numpy, then does arithmetic on
them (:func:`engine.metrics.metrics_from_reductions`). A sweep's variant pass
(:meth:`engine.compiled.variants.VariantPass.summary`) computes the reductions of every variant
here, in the pass's thread and without the GIL, instead of building frames for each one.

Equal bits need the same operations in the same order. The element-wise steps (returns
against the previous equity, excess returns, squares, drawdowns, trade P&L) are the single
IEEE operations numpy does element by element. The sums follow numpy's pairwise summation
(``numpy/_core/src/umath/loops_utils.h.src``, ``pairwise_sum``): a range of fewer than 8
values is added left to right; up to 128 values go into 8 interleaved accumulators combined as
``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, the last ``n % 8`` added after; a
longer range is split at half its length rounded down to a multiple of 8 and the two halves'
sums added. A mean is that sum divided by the count, a standard deviation (``ddof=1``) the
square root of the pairwise sum of squared deviations from that mean divided by ``n - 1``, as
``numpy._core._methods._var`` computes them. ``tests/engine/test_reductions.py`` compares the
bits with :func:`engine.metrics.reduce_run` on generated runs and ``tests/engine/
test_variants.py`` the metrics with :func:`engine.compute_metrics` on the S&P grid's variants:
a numpy release that sums in another order fails them.

Runs whose equity is not finite everywhere are left to numpy (:func:`reduce_records` returns
False): NaN propagation through numpy's ``minimum``, ``maximum.accumulate`` and ``min`` is not
repeated here.
"""

from __future__ import annotations

import math

import numpy as np

from engine.compiled.state import FloatArray
from engine.core.jit import njit
from engine.core.records import RecordArray
from engine.metrics import RunReductions

R_N_BARS = 0
R_FINAL = 1
R_MEAN_EXCESS = 2
R_STD_RETURNS = 3
R_STD_EXCESS = 4
R_DOWNSIDE = 5
R_MIN_DRAWDOWN = 6
R_EXPOSURE = 7
R_MEAN_EQUITY = 8
R_N_TRADES = 9
R_N_WINS = 10
R_GAINS = 11
R_LOSSES = 12
N_R = 13
"""Columns of a row of reductions (:func:`reduce_records`), in :class:`RunReductions` order
(without ``traded``, which a caller sums from the fills)."""

_PW_BLOCK = 128
"""numpy's ``PW_BLOCKSIZE``: ranges up to this long are summed in one unrolled block."""
_DEPTH = 128
"""Stack depth of :func:`pairwise_sum` (each level halves the range: 64 levels cover any
array)."""


@njit
def _block_sum(a: FloatArray, lo: int, n: int) -> float:
    # numpy's pairwise_sum for n <= 128 (module docstring)
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = lo + 8
    stop = lo + n - n % 8
    while i < stop:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < lo + n:
        res += a[i]
        i += 1
    return float(res)


@njit
def pairwise_sum(a: FloatArray, lo: int, n: int) -> float:
    """Σ ``a[lo:lo + n]`` in numpy's pairwise order (``np.sum`` of that slice, bit for bit)."""
    if n <= _PW_BLOCK:
        return _block_sum(a, lo, n)
    # numpy recurses; numba cannot call a recursive kernel from a parallel one, so the
    # recursion runs on explicit stacks: ranges (start, length, children summed) and sums
    starts = np.empty(_DEPTH, dtype=np.int64)
    lengths = np.empty(_DEPTH, dtype=np.int64)
    stage = np.empty(_DEPTH, dtype=np.int64)
    sums = np.empty(_DEPTH)
    top, n_sums = 0, 0
    starts[0], lengths[0], stage[0] = lo, n, 0
    while top >= 0:
        start, length = starts[top], lengths[top]
        if length <= _PW_BLOCK:
            sums[n_sums] = _block_sum(a, start, length)
            n_sums += 1
            top -= 1
            continue
        half = length // 2
        half -= half % 8
        if stage[top] == 2:  # both halves summed: left + right
            sums[n_sums - 2] = sums[n_sums - 2] + sums[n_sums - 1]
            n_sums -= 1
            top -= 1
            continue
        stage[top] += 1
        top += 1
        if stage[top - 1] == 1:
            starts[top], lengths[top] = start, half
        else:
            starts[top], lengths[top] = start + half, length - half
        stage[top] = 0
    return float(sums[0])


@njit
def _std(a: FloatArray, n: int, work: FloatArray) -> float:
    # np.std(a[:n], ddof=1): deviations from the pairwise mean, squared, summed pairwise
    mean = pairwise_sum(a, 0, n) / n
    for i in range(n):
        d = a[i] - mean
        work[i] = d * d
    return math.sqrt(pairwise_sum(work, 0, n) / (n - 1))


@njit
def reduce_records(
    states: RecordArray,
    trades: RecordArray,
    e0: float,
    rf: float,
    returns: FloatArray,
    equity: FloatArray,
    work: FloatArray,
    out: FloatArray,
) -> bool:
    """One run's reductions from its raw records (:mod:`engine.core.records`).

    Parameters
    ----------
    states, trades : record arrays
        The run's portfolio states (one per bar, in bar order) and closed trades.
    e0 : float
        Equity before the first bar (the run's initial cash).
    rf : float
        Per-bar risk-free rate (:func:`engine.metrics.per_bar_rate`).
    returns, equity : ndarray
        float64, shape (>= n_bars,): receive each bar's return against the previous equity
        (0.0 after a zero equity; :meth:`engine.recorder.Recorder.states_frame`'s
        ``return``) and its equity.
    work : ndarray
        float64, shape (2, >= max(n_bars, n_trades)): scratch.
    out : ndarray
        float64, shape (>= N_R,): receives the reductions (``R_*`` columns).

    Returns
    -------
    bool
        False when the equity is not finite everywhere (``out`` then not written: reduce
        with :func:`engine.metrics.reduce_run`).
    """
    n = states.size
    for i in range(n):
        e = states[i]["equity"]
        if not math.isfinite(e):
            return False
        equity[i] = e
    excess = work[0]
    squares = work[1]
    prev = e0
    peak = e0
    min_dd = math.inf
    held = 0
    for i in range(n):
        e = equity[i]
        r = e / prev - 1.0 if prev != 0 else 0.0
        returns[i] = r
        excess[i] = r - rf
        prev = e
        peak = max(peak, e)
        dd = e / peak - 1.0 if peak > 0 else 0.0
        min_dd = min(min_dd, dd)
        held += states[i]["n_positions"] > 0
    out[R_N_BARS] = n
    out[R_FINAL] = equity[n - 1] if n else e0
    out[R_STD_RETURNS] = _std(returns, n, squares) if n >= 2 else 0.0
    out[R_STD_EXCESS] = _std(excess, n, squares) if n >= 2 else 0.0
    out[R_MEAN_EXCESS] = pairwise_sum(excess, 0, n) / n if n else 0.0
    for i in range(n):
        x = excess[i] if excess[i] < 0.0 else 0.0
        squares[i] = x * x
    out[R_DOWNSIDE] = math.sqrt(pairwise_sum(squares, 0, n) / n) if n else 0.0
    out[R_MIN_DRAWDOWN] = min_dd if n else 0.0
    out[R_EXPOSURE] = held / n if n else 0.0
    out[R_MEAN_EQUITY] = pairwise_sum(equity, 0, n) / n if n else 0.0
    # trades: pnl_net as Recorder.trades_frame computes it, gains and losses summed pairwise
    # over the positive / negative values in trade order (numpy's pnl[pnl > 0].sum())
    n_gains = 0
    n_losses = 0
    gains = work[0]
    losses = work[1]
    for k in range(trades.size):
        t = trades[k]
        gross = (t["exit_price"] - t["entry_price"]) * t["quantity"] * t["direction"]
        pnl = gross - (t["entry_commission"] + t["exit_commission"])
        if pnl > 0:
            gains[n_gains] = pnl
            n_gains += 1
        elif pnl < 0:
            losses[n_losses] = pnl
            n_losses += 1
    out[R_N_TRADES] = trades.size
    out[R_N_WINS] = n_gains
    out[R_GAINS] = pairwise_sum(gains, 0, n_gains)
    out[R_LOSSES] = -pairwise_sum(losses, 0, n_losses)
    return True


def as_reductions(row: FloatArray, traded: float) -> RunReductions:
    """A row of :func:`reduce_records` as :class:`RunReductions`, with the fills' ``traded``."""
    return RunReductions(
        n_bars=int(row[R_N_BARS]),
        final_equity=float(row[R_FINAL]),
        mean_excess=float(row[R_MEAN_EXCESS]),
        std_returns=float(row[R_STD_RETURNS]),
        std_excess=float(row[R_STD_EXCESS]),
        downside=float(row[R_DOWNSIDE]),
        min_drawdown=float(row[R_MIN_DRAWDOWN]),
        exposure=float(row[R_EXPOSURE]),
        mean_equity=float(row[R_MEAN_EQUITY]),
        n_trades=int(row[R_N_TRADES]),
        n_wins=int(row[R_N_WINS]),
        gains=float(row[R_GAINS]),
        losses=float(row[R_LOSSES]),
        traded=traded,
    )
