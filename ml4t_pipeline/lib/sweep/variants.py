"""A sweep's trials on one prepared panel, through the compiled variant driver when they allow.

When every trial of a batch (all the pending trials of one data section on the serial
backend, one Ray worker's batch) qualifies (:func:`variant_reason` is ``None``: each one's
backtest takes the compiled TopN driver, no ``backtest`` window, the trials differ only in what
:func:`engine.compiled.plan.variants_reason` lets vary: the strategy's ``n`` and
``rebalance_every``, the rules' and limits' parameters, costs, initial cash), they run in
one pass of :func:`engine.compiled.variants.run_variants`: the panel ranked once, the variants'
states side by side, :data:`DEFAULT_CHUNK` at a time, in parallel on numba's threads. Each
variant's records are those of its own backtest. The passes run one after the other on a
worker thread, each ending with its variants' metric reductions, returns, equity and fill
costs (:meth:`engine.compiled.variants.VariantPass.summary`, compiled, without the GIL);
this thread turns each summary into outcomes and stores them meanwhile. The metrics are
:func:`~ml4t_pipeline.lib.sweep.trials.trial_metrics`' values, bit for bit: the same
arithmetic on reductions that equal numpy's (:mod:`engine.compiled.reductions`) and on the
fills' costs summed by polars as a column of the one-at-a-time run's frames is
(:func:`~ml4t_pipeline.lib.sweep.trials.reduced_metrics`); they equal the one-at-a-time run's
exactly (``tests/engine/test_variants.py``, ``tests/engine/test_reductions.py``,
``tests/pipeline/lib/sweep/test_runner.py``). A variant whose equity is not finite, or whose
buffers filled up, gets its metrics from its records' frames
(:func:`~ml4t_pipeline.lib.sweep.trials.ok_outcome`).

Otherwise (or with ``variants=False``) each trial runs on its own
(:func:`~ml4t_pipeline.lib.sweep.trials.run_trial`). A variant the compiled kernel hands back
(a case only the Python loop covers, found during the run) runs on its own too.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.lib.sweep.trials import (
    TrialOutcome,
    failed_outcome,
    ok_outcome,
    reduced_metrics,
    run_trial,
)

if TYPE_CHECKING:
    from engine import BacktestEngine, MarketData
    from engine.compiled.topn import CompiledRun, RunRecords, TopNPlan
    from engine.compiled.variants import PassSummary

DEFAULT_CHUNK = 16
"""Variants per pass. One pass's buffers are in memory at once (a pass's summary is copied
out of them before the next one runs), up to some 13 MB a variant on the S&P top-25 sweep's
busiest variants (n = 50, every bar): peak RSS 1.0 GiB for the 1,000-variant S&P grid."""


def variant_reason(configs: Sequence[ExperimentConfig], market: MarketData) -> str | None:
    """Why these trials cannot run in one variant pass on ``market`` (``None``: they can).

    A trial qualifies when its backtest takes the compiled driver
    (:func:`engine.compiled.plan.compiled_reason`) on the whole panel (no ``backtest``
    window) and the trials differ only in what the variant driver keeps per variant
    (:func:`engine.compiled.plan.variants_reason`). A trial whose engine cannot be built (a
    bad parameter) rules the pass out too: the one-at-a-time path records its error.
    """
    return _qualifying(configs, market)[1]


def _qualifying(
    configs: Sequence[ExperimentConfig], market: MarketData
) -> tuple[list[BacktestEngine], str | None]:
    """The trials' engines and :func:`variant_reason` (the engines built so far when not
    ``None``)."""
    from engine.compiled import plan
    from ml4t_pipeline.lib.experiment import build_engine

    engines: list[BacktestEngine] = []
    if not configs:
        return engines, "no trials"
    for k, cfg in enumerate(configs):
        if cfg.backtest.is_set:
            return engines, f"trial {k} has a backtest window"
        try:
            eng = build_engine(cfg, market)
        except Exception as exc:  # recorded by the one-at-a-time path
            return engines, f"trial {k}: {type(exc).__name__}: {exc}"
        if eng.data is not market:
            return engines, f"trial {k} runs on other data"
        engines.append(eng)
    runs = [(e.strategy, e.risk_manager, e.config) for e in engines]
    return engines, plan.variants_reason(market, runs)


def run_trials(
    config_jsons: Sequence[str],
    market: MarketData,
    *,
    variants: bool = True,
    chunk_size: int = DEFAULT_CHUNK,
    threads: int | None = None,
    configs: Sequence[ExperimentConfig] | None = None,
) -> Iterator[tuple[int, TrialOutcome]]:
    """Run trials on one prepared panel: in one variant pass when they qualify
    (:func:`variant_reason`), else one at a time; never raises.

    Parameters
    ----------
    config_jsons : sequence of str
        The trials' experiment configs as JSON (``ExperimentConfig.model_dump_json``).
    market : engine.MarketData
        :func:`~ml4t_pipeline.lib.sweep.prepare.build_market` of their prepared data.
    variants : bool, default True
        False: always one at a time.
    chunk_size : int
        Variants in memory at once.
    threads : int, optional
        numba threads of the variant pass (default: one per core; a Ray actor passes 1).
    configs : sequence of ExperimentConfig, optional
        The same trials' configs, already validated (the serial backend has them): used
        instead of validating ``config_jsons`` again.

    Yields
    ------
    (int, TrialOutcome)
        Each trial's position in ``config_jsons`` and its outcome, in order, as each chunk
        finishes. ``outcome.driver`` says which path ran it.
    """
    checked: list[ExperimentConfig] | None = None
    engines: list[BacktestEngine] = []
    if variants and len(config_jsons) > 1:
        try:
            checked = (
                list(configs)
                if configs is not None
                else [ExperimentConfig.model_validate_json(c) for c in config_jsons]
            )
        except Exception:  # a bad config: the one-at-a-time path records its error
            checked = None
        if checked is not None:
            engines, reason = _qualifying(checked, market)
            if reason is not None:
                checked = None
    if checked is None:
        for k, config_json in enumerate(config_jsons):
            yield k, run_trial(config_json, market)
        return
    yield from _variant_pass(checked, engines, list(config_jsons), market, chunk_size, threads)


def _variant_pass(
    configs: list[ExperimentConfig],
    engines: list[BacktestEngine],
    config_jsons: list[str],
    market: MarketData,
    chunk_size: int,
    threads: int | None,
) -> Iterator[tuple[int, TrialOutcome]]:
    from engine.compiled import topn, variants
    from engine.compiled.topn import P_N
    from engine.metrics import per_bar_rate

    # _qualifying had variant_reason of these engines return None
    plans = variants.plan_variants(
        market, [(e.strategy, e.risk_manager, e.config) for e in engines], checked=True
    )
    k_max = max(int(p.params[P_N]) for p in plans)
    ranking = variants.rank_bars(market, plans[0].signal, k_max)
    rows = variants.bar_rows(market)
    chunks = [(a, min(a + chunk_size, len(plans))) for a in range(0, len(plans), chunk_size)]
    # one set of buffers, pass after pass: a pass's summary is copied out of them before the
    # next pass starts
    size, cap = min(chunk_size, len(plans)), max(p.capacity for p in plans)
    buffers = variants.VariantBuffers(size, market.n_symbols, market.n_timestamps, cap)
    e0 = np.array([cfg.execution.initial_cash for cfg in configs], dtype=np.float64)
    rf = np.array(
        [
            per_bar_rate(cfg.reporting.risk_free_rate, float(cfg.reporting.periods_per_year))
            for cfg in configs
        ]
    )

    def run_chunk(start: int, stop: int) -> _Summary:
        wall, cpu = time.perf_counter(), time.thread_time()
        done = variants.run_pass(
            market, plans[start:stop], ranking, start=start, threads=threads, buffers=buffers,
            rows=rows,
        )  # fmt: skip
        summary = done.summary(e0[start:stop], rf[start:stop])
        # a variant the summary leaves out (non-finite equity) keeps a copy of its records
        copies = {
            v: _copied_records(done.records(v))
            for v in range(len(done))
            if summary.status[v] == topn.ST_OK and not summary.reduced[v]
        }
        # each variant's share of the pass (the kernel's threads are numba's, not counted in
        # thread_time: the pass's CPU is its wall time on each of its threads)
        wall = time.perf_counter() - wall
        n = stop - start
        return _Summary(start, summary, copies, wall / n, max(wall, time.thread_time() - cpu) / n)

    # the passes run one after the other (compiled, without the GIL) on the pool's thread
    # while this one turns the finished passes' summaries into outcomes; the objects alive
    # now (modules, configs, engines, plans) leave the collector's generations meanwhile
    gc.freeze()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead = [pool.submit(run_chunk, a, b) for a, b in chunks]
            try:
                for future in ahead:
                    yield from _outcomes(future.result(), configs, config_jsons, market, plans)
            finally:
                for future in ahead:
                    future.cancel()
    finally:
        gc.unfreeze()


@dataclass
class _Summary:
    start: int
    summary: PassSummary
    copies: dict[int, RunRecords]
    wall: float
    cpu: float


def _outcomes(
    done: _Summary,
    configs: list[ExperimentConfig],
    config_jsons: list[str],
    market: MarketData,
    plans: list[TopNPlan],
) -> Iterator[tuple[int, TrialOutcome]]:
    from engine.compiled import topn
    from engine.compiled.reductions import as_reductions

    s = done.summary
    # the fills' columns of the whole pass, summed per variant as polars sums a column
    # (the one-at-a-time path's sums): a slice of a series sums as a series of its own
    traded, commission, slippage = (pl.Series(c) for c in (s.traded, s.commission, s.slippage))
    for v in range(len(s)):
        k = done.start + v
        own, own_cpu = time.perf_counter(), time.thread_time()
        status = int(s.status[v])
        if status not in (topn.ST_OK, topn.ST_FULL):
            # the Python loop's case: a backtest of its own
            yield k, run_trial(config_jsons[k], market)
            continue
        try:
            if status == topn.ST_OK and s.reduced[v]:
                a, n = int(s.fill_start[v]), int(s.fill_start[v + 1] - s.fill_start[v])
                sums = as_reductions(s.sums[v], _slice_sum(traded, a, n))
                outcome = TrialOutcome(
                    status="ok",
                    seconds=0.0,
                    metrics=reduced_metrics(
                        configs[k], sums, _slice_sum(commission, a, n), _slice_sum(slippage, a, n)
                    ),
                    timestamps=market.timestamps,
                    returns=s.returns[v],
                    equity=s.equity[v],
                )
            else:
                # buffers filled up (runs again alone, with buffers that grow) or equity the
                # kernel leaves to numpy: the metrics from the records' frames
                records = (
                    done.copies[v]
                    if status == topn.ST_OK
                    else _copied(topn.CompiledRun(market, plans[k]))
                )
                if records is None:
                    yield k, run_trial(config_jsons[k], market)
                    continue
                outcome = _outcome(configs[k], market, records, configs[k].execution.initial_cash)
        except Exception as exc:  # a failed trial is data, not the end of the sweep
            outcome = failed_outcome(exc)
        outcome.driver = "variants"
        outcome.seconds = done.wall + time.perf_counter() - own
        outcome.cpu_seconds = done.cpu + time.thread_time() - own_cpu
        yield k, outcome


def _slice_sum(column: pl.Series, offset: int, length: int) -> float:
    return float(column.slice(offset, length).sum()) if length else 0.0


def _copied_records(records: RunRecords) -> RunRecords:
    from engine.compiled.topn import RunRecords

    return RunRecords(*(np.array(table) for table in records))


def _copied(run: CompiledRun) -> RunRecords | None:
    """The records of a run made alone (``None``: the Python loop must run it)."""
    from engine.compiled.topn import ST_OK, RunRecords

    if run.status != ST_OK:
        return None
    r = run.records
    return RunRecords(
        r.table("orders"), r.table("fills"), r.table("trades"), r.table("rejections"),
        r.table("states"),
    )  # fmt: skip


def _outcome(
    cfg: ExperimentConfig, market: MarketData, records: RunRecords, initial_cash: float
) -> TrialOutcome:
    """A variant's outcome from its raw records (:meth:`engine.compiled.variants.VariantPass.
    records`, read in place): the portfolio states as the backtest result has them
    (:meth:`engine.recorder.Recorder.states_frame`, without the context columns) and the
    trade and fill columns the metrics read, with the values of
    :meth:`~engine.recorder.Recorder.trades_frame` /
    :meth:`~engine.recorder.Recorder.fills_frame` (the same arithmetic on the same records:
    their other columns, symbols and names, cost most of a frame's time and no metric)."""
    from engine.core.records import Records
    from engine.recorder import Recorder

    held = Records()
    held.adopt("states", records.states)
    states = Recorder(market, held).states_frame(initial_cash, context=False)
    t = records.trades
    direction = np.asarray(t["direction"], dtype=np.float64)
    entry = np.asarray(t["entry_price"], dtype=np.float64)
    exit_ = np.asarray(t["exit_price"], dtype=np.float64)
    qty = np.asarray(t["quantity"], dtype=np.float64)
    pnl_gross = (exit_ - entry) * qty * direction
    comm = np.asarray(t["entry_commission"], dtype=np.float64) + np.asarray(
        t["exit_commission"], dtype=np.float64
    )
    trades = pl.DataFrame(
        {
            "pnl_gross": pnl_gross,
            "pnl_net": pnl_gross - comm,
            "commission": comm,
            "slippage": np.asarray(t["entry_slippage"], np.float64)
            + np.asarray(t["exit_slippage"], np.float64),
        }
    )
    f = records.fills
    fills = pl.DataFrame(
        {name: np.ascontiguousarray(f[name]) for name in ("quantity", "price", "commission")}
        | {"slippage": np.ascontiguousarray(f["slippage"])}
    )
    return ok_outcome(cfg, states, trades, fills)
