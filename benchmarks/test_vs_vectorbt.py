"""W1 against VectorBT in one process (issue 16): same inputs, interleaved rounds.

Run: ``python -m pytest benchmarks/test_vs_vectorbt.py --no-cov --benchmark-only -s``
(needs the ``validation`` extra and ``$ML4T_DATA_ROOT``).

The workload is the issue-7 reference run (461 S&P symbols x 1,259 days = 580,399 bar-events,
top 25 by 20-day return, 4 % each, next-open fills, 5 % stop, 0.1 % commission, our
``backtrader`` preset). VectorBT runs it as ``Portfolio.from_order_func`` callbacks
(``ml4t_pipeline.lib.crossval.vectorbt_run.run_vectorbt``: the whole call, including its
records, ``value()`` and closed-position count and its fills frame); our engine runs
``BacktestEngine(...).run()`` on a prebuilt :class:`engine.MarketData` (as VectorBT's wide
matrices are prebuilt), which includes building every output frame (trades, fills, portfolio
states).

After one warm-up call of each (numba compiles or loads its cache), ``ROUNDS`` rounds run both
in turn, with a garbage collection before each call; the figures are the ratio of the medians
(ours / VectorBT), the medians and minimums, and the median of the per-round ratios. Fills and
final equity of each are recorded too, and the test asserts they are equal (never the timing).
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from typing import Any

import pytest

from engine import (
    BacktestEngine,
    BacktestResult,
    ExecutionConfig,
    MarketData,
    PercentageCommission,
    PriceBasedStopLoss,
    RiskManager,
    TopNStrategy,
)
from ml4t_pipeline.lib.crossval.reference import (
    ReferenceInputs,
    ReferenceSpec,
)

ROUNDS = 15


def run_ours(data: MarketData, spec: ReferenceSpec) -> BacktestResult:
    """The reference run in our engine (``backtrader`` preset), output frames included."""
    cfg = ExecutionConfig.preset(
        "backtrader",
        commission=PercentageCommission(spec.commission_rate),
        initial_cash=spec.initial_cash,
    )
    return BacktestEngine(
        data,
        TopNStrategy("score", n=spec.n, weight=spec.weight),
        RiskManager([PriceBasedStopLoss(spec.stop_pct)]),
        cfg,
    ).run()


def test_w1_vs_vectorbt_interleaved(
    benchmark: Any, reference: ReferenceInputs, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("vectorbt")
    from ml4t_pipeline.lib.crossval.vectorbt_run import run_vectorbt

    spec = ReferenceSpec()
    data = MarketData.from_frame(reference.panel, signal_columns=["score"])

    def measure() -> dict[str, Any]:
        theirs = run_vectorbt(reference, spec)  # warm-up: numba compile / cache load
        ours = run_ours(data, spec)
        times: dict[str, list[float]] = {"ours": [], "vectorbt": []}
        for _ in range(ROUNDS):
            for who in ("vectorbt", "ours"):
                gc.collect()
                started = time.perf_counter()
                if who == "ours":
                    run_ours(data, spec)
                else:
                    run_vectorbt(reference, spec)
                times[who].append(time.perf_counter() - started)
        return {"times": times, "ours": ours, "theirs": theirs}

    out = benchmark.pedantic(measure, rounds=1, iterations=1)
    times = out["times"]
    ours: BacktestResult = out["ours"]
    theirs = out["theirs"]
    med = {who: statistics.median(t) for who, t in times.items()}
    mins = {who: min(t) for who, t in times.items()}
    paired = statistics.median(a / b for a, b in zip(times["ours"], times["vectorbt"], strict=True))
    ratio = med["ours"] / med["vectorbt"]
    info = {
        "rounds": ROUNDS,
        "bar_events": data.n_rows,
        "ours_median_s": round(med["ours"], 5),
        "vectorbt_median_s": round(med["vectorbt"], 5),
        "ours_min_s": round(mins["ours"], 5),
        "vectorbt_min_s": round(mins["vectorbt"], 5),
        "ratio_of_medians": round(ratio, 4),
        "paired_median_ratio": round(paired, 4),
        "ours_fills": ours.fills.height,
        "vectorbt_fills": theirs.n_fills,
        "ours_final_equity": round(ours.final_equity, 2),
        "vectorbt_final_equity": round(theirs.final_equity, 2),
        "load_average": round(os.getloadavg()[0], 2),
    }
    benchmark.extra_info.update(info)
    with capsys.disabled():
        print(
            f"\nW1 vs VectorBT, {ROUNDS} interleaved rounds (load {info['load_average']}):\n"
            f"  ours     median {med['ours'] * 1e3:7.1f} ms  min {mins['ours'] * 1e3:7.1f} ms  "
            f"fills {ours.fills.height}  final equity {ours.final_equity:,.2f}\n"
            f"  vectorbt median {med['vectorbt'] * 1e3:7.1f} ms  "
            f"min {mins['vectorbt'] * 1e3:7.1f} ms  "
            f"fills {theirs.n_fills}  final equity {theirs.final_equity:,.2f}\n"
            f"  ratio of medians (ours / vectorbt) {ratio:.3f}; paired median {paired:.3f}"
        )
    assert ours.fills.height == theirs.n_fills
    assert round(ours.final_equity, 2) == round(theirs.final_equity, 2)
