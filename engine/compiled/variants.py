"""Many variants of one :class:`engine.TopNStrategy` run on one panel in one compiled pass.

A parameter sweep of the top-N strategy (its ``n``, ``rebalance_every``, the stop and target
levels of its rules, its costs, its initial cash, ...) runs the same panel and the same
scores many times; only the per-variant state differs. :func:`run_variants` does the work the
variants share once and runs each variant's state through the same kernel as a single run:

- **shared, once per panel**: the ranking of every bar (:func:`rank_bars`: each bar's rows by
  decreasing score, ties in row order, as many as the largest ``n`` of the variants; a
  variant with ``n`` takes the first ``n``, the rows its own ranking would pick), each
  symbol's row at each bar (:func:`bar_rows`), the panel arrays (read, never copied) and the
  slippage model's per-row series;
- **sparse**: a variant's bar touches only its held positions, its working orders and the
  candidates it orders (:func:`engine.compiled.topn.run_topn` with ``bar_rows``), not every
  row of the bar as a single run does (a third of a quiet variant's time on the S&P panel);
- **per variant**: cash, positions, levels, rule state, the order book and the record buffers,
  stacked along a variant axis and run by :func:`engine.compiled.topn.run_topn` itself (the
  driver of a single compiled run, handed the shared ranking), so every fill, order, trade and
  rejection is the one the variant's own run gives (``tests/engine/test_variants.py`` compares
  them on the S&P file and on generated panels);
- **chunks**: the variants run ``chunk_size`` at a time, so the memory held at once is that of
  one chunk's state and records (:class:`VariantBuffers`, which a caller may reuse chunk after
  chunk); within a chunk the variants run in parallel on numba's threads (``prange``, each
  thread taking the next variant), and each finished variant becomes a
  :class:`engine.compiled.topn.CompiledRun`, as the single run's driver makes it, or is read
  in place (:func:`run_pass`, :class:`VariantPass`), or is summarized in a compiled kernel:
  its metric reductions (:mod:`engine.compiled.reductions`, equal to
  :func:`engine.compute_metrics`' numpy ones), returns, equity and fill costs
  (:meth:`VariantPass.summary`: the sweep's metrics, without a frame per variant).

Which sets of runs qualify is :func:`engine.compiled.plan.variants_reason` (``None``: they
can run here); :func:`plan_variants` builds their plans. The record buffers are sized by the
single run's bound, allocated but written only as far as a variant's records go, so a chunk's
memory is the rows its variants write. A variant whose buffers fill up anyway runs again
alone with the single-run driver, which grows its buffers; its results are the same.

Compilation: the chunk kernel is compiled on first use (a minute or more on the 2-core
machine) and cached next to this module; it inlines :func:`run_topn`'s kernel, so after editing
:mod:`engine.compiled.topn` or :mod:`engine.core` delete ``engine/**/__pycache__/*.nb*``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numba
import numpy as np
import numpy.typing as npt

from engine.compiled.decisions import _top_rows
from engine.compiled.reductions import N_R, reduce_records
from engine.compiled.topn import (
    P_N,
    ST_FULL,
    ST_OK,
    Bars,
    CompiledRun,
    RunRecords,
    RunState,
    Tables,
    TopNPlan,
    init_state,
    run_topn,
)
from engine.core.layout import (
    C_FILLS,
    C_ORDERS,
    C_REJ,
    C_STATUS,
    C_TRADES,
    N_A,
    N_ACC,
    N_B,
    N_C,
    N_FLOAT_FIELDS,
    N_INT_FIELDS,
)
from engine.core.records import DTYPES, RecordArray
from engine.data import MarketData
from engine.mechanics import CompiledMechanics, compiled_mechanics

if TYPE_CHECKING:
    from engine.config import ExecutionConfig
    from engine.risk.manager import RiskManager
    from engine.strategies import TopNStrategy

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

DEFAULT_CHUNK = 16
"""Variants run at once by default (their state and records are in memory together)."""


@numba.njit(cache=True, nogil=True, parallel=True)
def _rank_kernel(offsets: IntArray, signal: FloatArray, k: int, out: IntArray) -> None:
    n_t = offsets.size - 1
    for i in numba.prange(n_t):
        vals = np.empty(k)
        rows = np.empty(k, dtype=np.int64)
        cnt = _top_rows(offsets[i], offsets[i + 1], signal, k, vals, rows)
        for j in range(cnt):
            out[i, j] = rows[j]


@numba.njit(cache=True, nogil=True)
def _bar_rows_kernel(offsets: IntArray, sym_id: IntArray, out: IntArray) -> None:
    n_t = offsets.size - 1
    for i in range(n_t):
        for r in range(offsets[i], offsets[i + 1]):
            out[i, sym_id[r]] = r
            out[n_t, sym_id[r]] = r


def bar_rows(data: MarketData) -> IntArray:
    """Each symbol's data row at each bar, and its last one (the sparse walk of
    :func:`engine.compiled.topn.run_topn`, built once per panel).

    Returns
    -------
    ndarray
        int64, shape (n_bars + 1, n_symbols): row ``i < n_bars`` holds symbol ``s``'s row at
        bar ``i`` in column ``s`` (-1: no row at that bar); row ``n_bars`` its last row (-1:
        none). 8 bytes a cell: 5 MB for the S&P panel (1,259 bars x 505 symbols).
    """
    out = np.full((data.n_timestamps + 1, data.n_symbols), -1, dtype=np.int64)
    _bar_rows_kernel(
        np.asarray(data.offsets, dtype=np.int64), np.asarray(data.sym_id, dtype=np.int64), out
    )
    return out


def rank_bars(data: MarketData, signal: FloatArray, k: int) -> IntArray:
    """Each bar's ``k`` best rows by ``signal`` (the top-N strategy's ranking, done once).

    Parameters
    ----------
    data : MarketData
        The panel (its bar offsets).
    signal : ndarray
        float64, shape (n_rows,): the ranking column, one value per row.
    k : int
        Rows kept per bar (the largest ``n`` of the variants), >= 1.

    Returns
    -------
    ndarray
        int64, shape (n_bars, k): row ``i`` holds bar ``i``'s rows with the largest finite
        ``signal``, decreasing, ties in row order (a stable sort on ``-signal``); -1 after
        the bar's last finite value. Its first ``n`` entries are the rows
        :class:`engine.TopNStrategy` with that ``n`` buys.

    Raises
    ------
    ValueError
        If ``k < 1`` or ``signal`` does not have one value per row.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if signal.shape != (data.close.size,):
        raise ValueError(f"signal has shape {signal.shape}; the panel has {data.close.size} rows")
    out = np.full((data.n_timestamps, k), -1, dtype=np.int64)
    _rank_kernel(np.asarray(data.offsets, dtype=np.int64), signal, k, out)
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def _run_chunk(
    bars: Bars,
    ranking: IntArray,
    rows: IntArray,
    mech: CompiledMechanics,
    params: FloatArray,
    rules: FloatArray,
    partial: FloatArray,
    limits: FloatArray,
    inputs: FloatArray,
    cost_params: FloatArray,
    tiers: FloatArray,
    tier_state: FloatArray,
    cost_rows: FloatArray,
    fstate: FloatArray,
    istate: IntArray,
    aux_i: IntArray,
    aux_f: FloatArray,
    pending: FloatArray,
    book: IntArray,
    counts: IntArray,
    acc: FloatArray,
    orders: RecordArray,
    fills: RecordArray,
    trades: RecordArray,
    rejections: RecordArray,
    states: RecordArray,
) -> None:
    """:func:`run_topn` of each variant ``v`` (the ``[v]`` slices of the stacked tables,
    state and record buffers) with the shared ranking and :func:`bar_rows` (the sparse
    walk), in parallel over the variants."""
    for v in numba.prange(params.shape[0]):
        run_topn(
            bars,
            Tables(
                params[v], rules[v], partial[v], limits[v], inputs, cost_params[v], tiers[v],
                tier_state[v], cost_rows,
            ),
            RunState(
                fstate[v], istate[v], aux_i[v], aux_f[v], pending[v], book[v], counts[v], acc[v]
            ),
            RunRecords(orders[v], fills[v], trades[v], rejections[v], states[v]),
            mech,
            ranking,
            rows,
        )  # fmt: skip


@numba.njit(cache=True, nogil=True, parallel=True)
def _summarize_chunk(
    counts: IntArray,
    states: RecordArray,
    trades: RecordArray,
    fills: RecordArray,
    e0: FloatArray,
    rf: FloatArray,
    fill_start: IntArray,
    returns: FloatArray,
    equity: FloatArray,
    work: FloatArray,
    reduced: IntArray,
    sums: FloatArray,
    traded: FloatArray,
    commission: FloatArray,
    slippage: FloatArray,
) -> None:
    """:func:`engine.compiled.reductions.reduce_records` of each variant of a pass that ended
    ``ST_OK``, and its fills' ``|quantity| x price``, commission and slippage from
    ``fill_start[v]`` on, in parallel over the variants."""
    for v in numba.prange(sums.shape[0]):
        reduced[v] = 0
        if counts[v, C_STATUS] != ST_OK:
            continue
        ok = reduce_records(
            states[v], trades[v, : counts[v, C_TRADES]], e0[v], rf[v], returns[v], equity[v],
            work[v], sums[v],
        )  # fmt: skip
        reduced[v] = 1 if ok else 0
        at = fill_start[v]
        for k in range(counts[v, C_FILLS]):
            f = fills[v, k]
            traded[at + k] = abs(f["quantity"]) * f["price"]
            commission[at + k] = f["commission"]
            slippage[at + k] = f["slippage"]


def plan_variants(
    data: MarketData,
    runs: Sequence[tuple[TopNStrategy, RiskManager | None, ExecutionConfig]],
    *,
    checked: bool = False,
) -> list[TopNPlan]:
    """The plans (:func:`engine.compiled.plan.plan_topn`) of runs that may share a pass.

    ``checked=True``: the caller has just had :func:`engine.compiled.plan.variants_reason`
    of these same runs return ``None``, and it is not asked again (a sweep of 1,000 variants
    checks them once).

    Raises
    ------
    ValueError
        If :func:`engine.compiled.plan.variants_reason` rules them out (its reason is in the
        message).
    """
    from engine.compiled import plan

    reason = None if checked else plan.variants_reason(data, runs)
    if reason is not None:
        raise ValueError(f"these runs cannot share a variant pass: {reason}")
    for _strategy, risk, config in runs:
        config.commission.reset()
        if risk is not None:
            risk.reset()
    return [plan.plan_topn(data, s, r, c) for s, r, c in runs]


def _stack(arrays: Sequence[npt.NDArray[np.float64]], what: str) -> FloatArray:
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"the variants' {what} tables differ in shape: {sorted(shapes)}")
    return np.ascontiguousarray(np.stack(arrays), dtype=np.float64)


def _check_shared(plans: Sequence[TopNPlan]) -> None:
    first = plans[0]
    for p in plans[1:]:
        if p.signal is not first.signal and not np.array_equal(p.signal, first.signal, True):
            raise ValueError("the variants rank different signal columns")
        if p.inputs is not first.inputs and not (
            p.inputs.shape == first.inputs.shape and np.array_equal(p.inputs, first.inputs, True)
        ):
            raise ValueError("the variants' rules read different per-row inputs")
        rows, rows0 = p.costs.rows, first.costs.rows
        if rows is not rows0 and not (
            rows.shape == rows0.shape and np.array_equal(rows, rows0, True)
        ):
            raise ValueError("the variants' slippage models read different per-row series")
        if p.mechanics is not None:
            raise ValueError("a variant has corporate actions or financing")
    if first.mechanics is not None:
        raise ValueError("a variant has corporate actions or financing")


def run_variants(
    data: MarketData,
    plans: Sequence[TopNPlan],
    *,
    chunk_size: int = DEFAULT_CHUNK,
    threads: int | None = None,
    ranking: IntArray | None = None,
    buffers: VariantBuffers | None = None,
    rows: IntArray | None = None,
) -> Iterator[tuple[int, CompiledRun]]:
    """Run every plan of ``plans`` on ``data`` in one pass (module docstring).

    Parameters
    ----------
    data : MarketData
        The panel all variants run on.
    plans : sequence of TopNPlan
        From :func:`plan_variants` (or :func:`engine.compiled.plan.plan_topn` of runs that
        :func:`engine.compiled.plan.variants_reason` admits).
    chunk_size : int, default :data:`DEFAULT_CHUNK`
        Variants in memory at once (>= 1).
    threads : int, optional
        numba threads for the chunks (default: numba's setting, one per core).
    ranking : ndarray, optional
        :func:`rank_bars` of the plans' signal with ``k`` >= their largest ``n``, when the
        caller runs the variants of one panel in several calls (default: ranked here).
    buffers : VariantBuffers, optional
        Buffers to run the chunks in, reused chunk after chunk: each yielded run is valid
        until the next chunk starts (default: fresh buffers per chunk, every run stays
        valid). Too small buffers are replaced by fresh ones.
    rows : ndarray, optional
        :func:`bar_rows` of ``data``, when the caller runs the variants of one panel in
        several calls (default: built here). The variants walk the bars sparsely
        (:func:`engine.compiled.topn.run_topn`): per bar, only their held symbols' and working
        orders' rows.

    Yields
    ------
    (int, CompiledRun)
        Each plan's index and its run, in plan order, as
        :class:`engine.compiled.topn.CompiledRun` of that plan alone gives them.

    Raises
    ------
    ValueError
        If the plans do not share the panel's signal, ATR column and slippage series, have
        corporate actions or financing, their tables differ in shape, or ``chunk_size < 1``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not plans:
        return
    _check_shared(plans)
    first = plans[0]
    k = max(int(p.params[P_N]) for p in plans)
    if ranking is None:
        ranking = rank_bars(data, first.signal, k)
    elif ranking.shape[0] != data.n_timestamps or ranking.shape[1] < k:
        raise ValueError(f"ranking has shape {ranking.shape}; need ({data.n_timestamps}, >= {k})")
    bars = _bars(data, first)
    mech = _mechanics(data)
    rows = _checked_rows(data, rows)
    with _threads(threads):
        for start in range(0, len(plans), chunk_size):
            chunk = plans[start : start + chunk_size]
            done = _pass(data, bars, ranking, rows, mech, chunk, start, buffers)
            for v in range(len(chunk)):
                yield start + v, done.run(data, v)


_LINE = 8
"""float64 / int64 values per 64-byte cache line."""


def _padded(n: int) -> int:
    """``n`` rounded up to whole cache lines of 8-byte values."""
    return -(-n // _LINE) * _LINE


def _chunk_capacity(plans: Sequence[TopNPlan]) -> int:
    """Record buffer size of a chunk: the largest single-run bound of its plans. The buffers
    are allocated, not written: only the rows a variant writes take memory."""
    return max(p.capacity for p in plans)


class VariantBuffers:
    """The state and record buffers of a chunk of variants, for reuse across passes.

    A pass writes its variants' state and records here, and the runs it yields are views of
    them. Reusing one set for the next pass saves the page faults of fresh memory (up to a
    third of a variant's time on the S&P panel), but the next pass overwrites the runs of the
    last one. Give a pass its own buffers while its runs are still read.

    Parameters
    ----------
    size : int
        Variants per pass, at most.
    n_symbols, n_bars : int
        The panel's symbols and timestamps.
    capacity : int
        Record rows per variant (a plan's ``capacity``, at least).
    """

    def __init__(self, size: int, n_symbols: int, n_bars: int, capacity: int) -> None:
        self.size, self.n_symbols, self.n_bars, self.capacity = size, n_symbols, n_bars, capacity
        self.tier_state = np.zeros((size, _LINE))
        self.fstate = np.empty((size, N_FLOAT_FIELDS, n_symbols))
        self.istate = np.empty((size, N_INT_FIELDS, n_symbols), dtype=np.int64)
        self.aux_i = np.empty((size, N_A, n_symbols), dtype=np.int64)
        self.aux_f = np.empty((size, N_B, n_symbols))
        self.pending = np.empty((size, n_symbols))
        # the small per-variant rows written at every fill (counts, cash, the commission
        # tier's month) one 64-byte cache line each: two threads never write to one line
        self.counts = np.empty((size, _padded(N_C)), dtype=np.int64)
        self.acc = np.empty((size, _padded(N_ACC)))
        self.book = np.empty((size, capacity), dtype=np.int64)
        self.orders = np.empty((size, capacity), dtype=DTYPES["orders"])
        self.fills = np.empty((size, capacity), dtype=DTYPES["fills"])
        self.trades = np.empty((size, capacity), dtype=DTYPES["trades"])
        self.rejections = np.empty((size, capacity), dtype=DTYPES["rejections"])
        self.states = np.empty((size, n_bars), dtype=DTYPES["states"])

    def fits(self, data: MarketData, plans: Sequence[TopNPlan]) -> bool:
        """Whether a pass of ``plans`` on ``data`` fits in these buffers."""
        return (
            len(plans) <= self.size
            and (self.n_symbols, self.n_bars) == (data.n_symbols, data.n_timestamps)
            and _chunk_capacity(plans) <= self.capacity
        )

    def reset(self, plans: Sequence[TopNPlan]) -> None:
        """The state of ``plans``' variants before their first bar (a single run's:
        :func:`engine.compiled.topn.init_state`)."""
        self.tier_state[: len(plans), :2] = (math.nan, 0.0)
        for v, p in enumerate(plans):
            init_state(
                self.fstate[v], self.istate[v], self.aux_i[v], self.aux_f[v], self.pending[v],
                self.counts[v, :N_C], self.acc[v, :N_ACC], p.initial_cash,
            )  # fmt: skip


class PassSummary:
    """What a sweep keeps of a pass (:meth:`VariantPass.summary`), in arrays of its own: the
    pass's buffers may run the next pass meanwhile.

    Attributes
    ----------
    status : ndarray
        int64, shape (V,): each variant's ``ST_*`` status (:meth:`VariantPass.status`).
    reduced : ndarray
        bool, shape (V,): whether ``sums``, ``returns`` and ``equity`` hold the variant's
        values (it ended ``ST_OK`` with finite equity).
    sums : ndarray
        float64, shape (V, N_R): :func:`engine.compiled.reductions.reduce_records` of each
        variant (``R_*`` columns; :func:`engine.compiled.reductions.as_reductions`).
    returns, equity : ndarray
        float64, shape (V, n_bars): each bar's return against the previous equity (0.0 after a
        zero equity) and its equity.
    fill_start : ndarray
        int64, shape (V + 1,): variant ``v``'s fills are rows ``fill_start[v]`` up to
        ``fill_start[v + 1]`` of the three fill columns.
    traded, commission, slippage : ndarray
        float64: every reduced variant's fills' ``|quantity| x price``, commission and
        slippage (currency), one variant after the other.
    """

    def __init__(
        self,
        status: IntArray,
        reduced: npt.NDArray[np.bool_],
        sums: FloatArray,
        returns: FloatArray,
        equity: FloatArray,
        fill_start: IntArray,
        traded: FloatArray,
        commission: FloatArray,
        slippage: FloatArray,
    ) -> None:
        self.status, self.reduced, self.sums = status, reduced, sums
        self.returns, self.equity, self.fill_start = returns, equity, fill_start
        self.traded, self.commission, self.slippage = traded, commission, slippage

    def __len__(self) -> int:
        return int(self.status.size)


class VariantPass:
    """One pass of variants (:func:`run_pass`): their final state and records as views of the
    pass's :class:`VariantBuffers`, valid until those buffers run another pass.

    Attributes
    ----------
    start : int
        Index of the pass's first variant in the caller's list of plans.
    plans : sequence of TopNPlan
        The pass's plans; variant ``v`` of the pass is ``plans[v]``.
    buffers : VariantBuffers
        Where the pass wrote.
    """

    def __init__(
        self,
        start: int,
        plans: Sequence[TopNPlan],
        buffers: VariantBuffers,
        n_bars: int,
        mech: CompiledMechanics,
    ) -> None:
        self.start, self.plans, self.buffers = start, plans, buffers
        self._n_bars, self._mech = n_bars, mech

    def __len__(self) -> int:
        return len(self.plans)

    def status(self, v: int) -> int:
        """``ST_OK``, ``ST_FULL`` (its buffers filled up: :meth:`run` runs it again alone) or
        why the Python loop must run it (``ST_SHORT_BOOK``, ``ST_FRACTIONAL``)."""
        return int(self.buffers.counts[v, C_STATUS])

    def records(self, v: int) -> RunRecords:
        """Variant ``v``'s raw records (views, not copies; valid when :meth:`status` is
        ``ST_OK``): the rows its kernel wrote, before :class:`CompiledRun` names the limit
        rejections' texts."""
        b, c = self.buffers, self.buffers.counts[v]
        return RunRecords(
            b.orders[v, : c[C_ORDERS]], b.fills[v, : c[C_FILLS]], b.trades[v, : c[C_TRADES]],
            b.rejections[v, : c[C_REJ]], b.states[v],
        )  # fmt: skip

    def summary(self, e0: FloatArray, rf: FloatArray) -> PassSummary:
        """Each variant's metric reductions, returns, equity and fill costs
        (:class:`PassSummary`), computed in parallel without the GIL: what a sweep reads
        instead of each variant's records.

        Parameters
        ----------
        e0 : ndarray
            float64, shape (V,): each variant's equity before the first bar (its initial cash).
        rf : ndarray
            float64, shape (V,): each variant's per-bar risk-free rate
            (:func:`engine.metrics.per_bar_rate`).

        Raises
        ------
        ValueError
            If ``e0`` or ``rf`` does not have one value per variant.
        """
        b, v_n, n_bars = self.buffers, len(self.plans), self._n_bars
        if np.shape(e0) != (v_n,) or np.shape(rf) != (v_n,):
            raise ValueError(
                f"e0 and rf need one value per variant ({v_n}); got shapes "
                f"{np.shape(e0)} and {np.shape(rf)}"
            )
        counts = b.counts[:v_n]
        ok = counts[:, C_STATUS] == ST_OK
        n_fills = np.where(ok, counts[:, C_FILLS], 0)
        fill_start = np.zeros(v_n + 1, dtype=np.int64)
        np.cumsum(n_fills, out=fill_start[1:])
        width = max(n_bars, int(counts[:, C_TRADES].max(initial=0)))
        returns, equity = np.empty((v_n, n_bars)), np.empty((v_n, n_bars))
        reduced = np.zeros(v_n, dtype=np.int64)
        sums = np.zeros((v_n, N_R))
        traded, commission, slippage = (np.empty(int(fill_start[-1])) for _ in range(3))
        _summarize_chunk(
            counts, b.states[:v_n], b.trades[:v_n], b.fills[:v_n],
            np.ascontiguousarray(e0, dtype=np.float64), np.ascontiguousarray(rf, dtype=np.float64),
            fill_start, returns, equity, np.empty((v_n, 2, width)), reduced, sums, traded,
            commission, slippage,
        )  # fmt: skip
        return PassSummary(
            counts[:, C_STATUS].copy(), reduced.astype(bool), sums, returns, equity, fill_start,
            traded, commission, slippage,
        )  # fmt: skip

    def run(self, data: MarketData, v: int) -> CompiledRun:
        """Variant ``v`` as :class:`CompiledRun` of its plan alone gives it (its records
        copied; its state arrays views of the buffers). A variant whose buffers filled up runs
        again alone, with buffers that grow."""
        p = self.plans[v]
        if self.status(v) == ST_FULL:
            return CompiledRun(data, p)
        b, c = self.buffers, self.buffers.counts[v]
        state = RunState(
            b.fstate[v], b.istate[v], b.aux_i[v], b.aux_f[v], b.pending[v], b.book[v], c[:N_C],
            b.acc[v, :N_ACC],
        )  # fmt: skip
        return CompiledRun.from_buffers(p, self._n_bars, state, self.records(v), self._mech)


def run_pass(
    data: MarketData,
    plans: Sequence[TopNPlan],
    ranking: IntArray,
    *,
    start: int = 0,
    threads: int | None = None,
    buffers: VariantBuffers | None = None,
    rows: IntArray | None = None,
) -> VariantPass:
    """Run ``plans`` (one chunk) in one pass on ``data`` with the shared ``ranking``.

    The lower-level step of :func:`run_variants` for a caller that reads the records in place
    (the sweep computes each variant's metrics from the views of :meth:`VariantPass.records`
    instead of copying them into a :class:`CompiledRun`). Arguments as :func:`run_variants`'
    (``ranking`` required, every plan's ``n`` at most its width); ``start`` is only recorded.

    Raises
    ------
    ValueError
        As :func:`run_variants`.
    """
    if not plans:
        raise ValueError("a pass needs at least one plan")
    _check_shared(plans)
    k = max(int(p.params[P_N]) for p in plans)
    if ranking.shape[0] != data.n_timestamps or ranking.shape[1] < k:
        raise ValueError(f"ranking has shape {ranking.shape}; need ({data.n_timestamps}, >= {k})")
    rows = _checked_rows(data, rows)
    with _threads(threads):
        return _pass(
            data, _bars(data, plans[0]), ranking, rows, _mechanics(data), plans, start, buffers
        )


def _checked_rows(data: MarketData, rows: IntArray | None) -> IntArray:
    if rows is None:
        return bar_rows(data)
    if rows.shape != (data.n_timestamps + 1, data.n_symbols) or rows.dtype != np.int64:
        raise ValueError(
            f"rows has shape {rows.shape} ({rows.dtype}); need "
            f"({data.n_timestamps + 1}, {data.n_symbols}) int64 (bar_rows)"
        )
    return rows


def _bars(data: MarketData, plan: TopNPlan) -> Bars:
    return Bars(
        data.timestamps, data.offsets, data.sym_id, data.open, data.high, data.low,
        data.close, data.ordinal, data.prev_row, plan.signal, data.volume,
    )  # fmt: skip


def _mechanics(data: MarketData) -> CompiledMechanics:
    return compiled_mechanics(data, None, None)


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    saved = numba.get_num_threads()
    # the threads take the variants one at a time (a variant's cost varies tenfold with its
    # n and rebalance_every: equal contiguous shares would leave a thread idle)
    saved_chunk = numba.set_parallel_chunksize(1)
    if threads is not None:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    try:
        yield
    finally:
        numba.set_num_threads(saved)
        numba.set_parallel_chunksize(saved_chunk)


def _pass(
    data: MarketData,
    bars: Bars,
    ranking: IntArray,
    rows: IntArray,
    mech: CompiledMechanics,
    plans: Sequence[TopNPlan],
    start: int,
    buffers: VariantBuffers | None,
) -> VariantPass:
    v_n = len(plans)
    if buffers is None or not buffers.fits(data, plans):
        buffers = VariantBuffers(v_n, data.n_symbols, data.n_timestamps, _chunk_capacity(plans))
    b = buffers
    b.reset(plans)
    params = _stack([p.params for p in plans], "parameter")
    rules = _stack([p.rules for p in plans], "rule")
    partial = _stack([p.partial for p in plans], "PartialProfitTaking level")
    limits = _stack([p.limits for p in plans], "portfolio limit")
    cost_params = _stack([p.costs.params for p in plans], "cost")
    tiers = _stack([p.costs.tiers for p in plans], "commission tier")
    _run_chunk(
        bars, ranking, rows, mech, params, rules, partial, limits, plans[0].inputs, cost_params,
        tiers, b.tier_state[:v_n], plans[0].costs.rows, b.fstate[:v_n], b.istate[:v_n],
        b.aux_i[:v_n], b.aux_f[:v_n], b.pending[:v_n], b.book[:v_n], b.counts[:v_n], b.acc[:v_n],
        b.orders[:v_n], b.fills[:v_n], b.trades[:v_n], b.rejections[:v_n], b.states[:v_n],
    )  # fmt: skip
    return VariantPass(start, plans, b, data.n_timestamps, mech)
