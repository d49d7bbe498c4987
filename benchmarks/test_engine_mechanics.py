"""W1 on raw-price mechanics: the compiled TopN run with an S&P-size corporate-actions table.

Run: ``python -m pytest benchmarks/test_engine_mechanics.py --no-cov --benchmark-only``.
Same workload as W1 (:mod:`benchmarks.test_engine_throughput`: top-25 on ``mom_20``, 5 %
stop, 0.1 % commission, compiled) without and with a corporate-actions table of the S&P
symbols as long as a real one: a quarterly dividend (0.5 % of the previous close, paid 14
days after its ex-date, as real dividends are) on every 63rd bar of each symbol and a 2:1
split for every tenth symbol, about 10,000 rows over the five years (the S&P 500 pays some
8,000 dividends in five years). The issue's bound: with
the table ≤ 1.1× without. Both variants run in the same process, alternately.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import polars as pl
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
from engine.mechanics import CorporateActions


@pytest.fixture(scope="module")
def data(sp500_momentum_panel: pl.DataFrame) -> MarketData:
    return MarketData.from_frame(sp500_momentum_panel, signal_columns=["mom_20"])


@pytest.fixture(scope="module")
def actions(sp500_momentum_panel: pl.DataFrame) -> CorporateActions:
    bars = sp500_momentum_panel.sort("symbol", "timestamp").with_columns(
        pl.int_range(pl.len()).over("symbol").alias("k"),
        pl.col("close").shift(1).over("symbol").alias("prev"),
        (pl.col("symbol").rank("dense").cast(pl.Int64) % 10 == 0).alias("splits"),
    )
    dividends = bars.filter(pl.col("k") % 63 == 62).select(
        "symbol",
        pl.col("timestamp").dt.date().alias("ex_date"),
        pl.lit(1.0).alias("split_ratio"),
        (0.005 * pl.col("prev")).alias("dividend"),
        (pl.col("timestamp").dt.date() + pl.duration(days=14)).alias("pay_date"),
    )
    splits = bars.filter(pl.col("splits") & (pl.col("k") == 600)).select(
        "symbol",
        pl.col("timestamp").dt.date().alias("ex_date"),
        pl.lit(2.0).alias("split_ratio"),
        pl.lit(0.0).alias("dividend"),
        pl.lit(None, dtype=pl.Date).alias("pay_date"),
    )
    table = pl.concat([dividends, splits]).unique(["symbol", "ex_date"], keep="last")
    return CorporateActions(table)


@pytest.mark.parametrize("with_actions", [False, True], ids=["without_table", "with_table"])
def test_w1_raw_corporate_actions_compiled(
    benchmark: Any, data: MarketData, actions: CorporateActions, with_actions: bool
) -> None:
    table = actions if with_actions else None
    result: BacktestResult = benchmark.pedantic(
        lambda: _w1(data, table), rounds=9, iterations=1, warmup_rounds=1
    )
    benchmark.extra_info["actions"] = len(actions) if with_actions else 0
    benchmark.extra_info["events_applied"] = result.corporate_actions.height
    benchmark.extra_info["fills"] = result.fills.height
    assert result.compiled


def test_w1_corporate_actions_overhead_interleaved(
    benchmark: Any, data: MarketData, actions: CorporateActions
) -> None:
    """Both variants alternately (30 pairs, the machine's load hits both alike): the ratio
    of their minimum and median times in ``extra_info``."""
    times: dict[bool, list[float]] = {False: [], True: []}

    def pairs() -> None:
        for _ in range(30):
            for with_actions in (False, True):
                started = time.perf_counter()
                _w1(data, actions if with_actions else None)
                times[with_actions].append(time.perf_counter() - started)

    _w1(data, actions)  # compile and warm the schedule cache
    benchmark.pedantic(pairs, rounds=1, iterations=1)
    without, with_table = times[False], times[True]
    benchmark.extra_info["min_ms"] = [min(without) * 1e3, min(with_table) * 1e3]
    benchmark.extra_info["median_ms"] = [
        statistics.median(without) * 1e3,
        statistics.median(with_table) * 1e3,
    ]
    benchmark.extra_info["ratio_min"] = min(with_table) / min(without)
    benchmark.extra_info["ratio_median"] = statistics.median(with_table) / statistics.median(
        without
    )
    print(
        f"W1 compiled, 30 interleaved pairs: without {min(without) * 1e3:.1f} ms min / "
        f"{statistics.median(without) * 1e3:.1f} ms median; with {len(actions)} actions "
        f"{min(with_table) * 1e3:.1f} / {statistics.median(with_table) * 1e3:.1f} ms"
    )


def _w1(data: MarketData, actions: CorporateActions | None) -> BacktestResult:
    cfg = ExecutionConfig(commission=PercentageCommission(0.001), corporate_actions=actions)
    return BacktestEngine(
        data, TopNStrategy("mom_20", n=25), RiskManager([PriceBasedStopLoss(0.05)]), cfg
    ).run()
