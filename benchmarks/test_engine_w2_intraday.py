"""W2 (issue 4): a synthetic 250-symbol × 1-year 1-minute panel (24.57 M bar-events), streamed.

Run: ``python -m pytest benchmarks/test_engine_w2_intraday.py --no-cov --benchmark-only``.

The panel is generated once, month by month, into hive partitions (``year=/month=``, the data
layer's ``write_partitioned``) by a child process that is not measured. The measured run is a
second child process (this file run as a script): it scans one month at a time
(``scan_partitioned`` filtered on the partition columns, so only that folder is read) and hands
the frames to the engine as :class:`engine.ChunkedMarketData` (``prefetch=True``: the next
month is read in a background thread while the engine runs the current one); the engine
builds one month's arrays at a time and carries the run state across months. The strategy
buys each symbol at three random minutes a day and closes it 30 minutes later (~160 k round
trips: an entry signal while the symbol is still held or has a working order is skipped),
placing each bar's orders with two batch calls (``run-per-order ROOT``: the same strategy
with one call per order, as before the batch calls).

Recorded in ``benchmark.extra_info``: bar_events, the engine's run time (``run_seconds``,
including reading and converting the months) and rate, the child's wall time, and its peak RSS
(``ru_maxrss`` of that child via ``os.wait4``). Targets: < 1 GB (issue 4) and an engine run
< 10 s (issue 16; issue 4 asked < 30 s); recorded, not asserted (timings are machine-bound).

``python benchmarks/test_engine_w2_intraday.py whole ROOT`` runs the same panel in memory (one
``MarketData.from_frame``; ~3.5 GB) and prints the same summary, to check that the streamed run
gives identical trades/fills/states (``digest``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from childproc import run_child

from engine import (
    BacktestEngine,
    BacktestResult,
    BarBatch,
    ChunkedMarketData,
    MarketData,
    Strategy,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
N_SYMBOLS = 250
N_DAYS = 252
MINUTES = 390
BAR_EVENTS = N_SYMBOLS * N_DAYS * MINUTES
TARGET_SECONDS = 10.0  # issue 16
TARGET_RSS_BYTES = 1024**3
SYMBOLS = [f"S{k:03d}" for k in range(N_SYMBOLS)]


def generate_w2_partitions(root: Path, seed: int = 11) -> dict[str, int]:
    """Write the synthetic minute panel as monthly hive partitions under ``root``.

    A geometric random walk per symbol (the open is the previous close), continued across
    months; ``signal`` is 1 at three random minutes per symbol and day and -1 thirty minutes
    later. Generated one month at a time so the generator stays small.
    """
    from ml4t_pipeline.lib.storage import write_partitioned

    rng = np.random.default_rng(seed)
    days = np.busday_offset("2023-01-03", np.arange(N_DAYS), roll="forward")
    months = days.astype("datetime64[M]")
    minute_us = np.arange(MINUTES, dtype=np.int64) * 60_000_000
    last = np.full(N_SYMBOLS, 50.0)
    cols = np.arange(N_SYMBOLS)
    rows = 0
    for month in np.unique(months):
        month_days = days[months == month]
        n_days = month_days.size
        start_us = (
            month_days.astype("datetime64[us]").astype(np.int64) + (14 * 60 + 31) * 60_000_000
        )
        stamps = (start_us[:, None] + minute_us[None, :]).ravel()  # bar closes, UTC
        n_t = stamps.size
        returns = rng.normal(0.0, 0.0008, (n_t, N_SYMBOLS))
        close = last * np.exp(np.cumsum(returns, axis=0))
        open_ = np.vstack([last[None, :], close[:-1]])
        spread = np.abs(rng.normal(0.0, 0.0005, (n_t, N_SYMBOLS)))
        high = np.maximum(open_, close) * (1.0 + spread)
        low = np.minimum(open_, close) * (1.0 - spread)
        signal = np.full((n_t, N_SYMBOLS), np.nan)
        for day in range(n_days):
            entries = rng.integers(0, MINUTES - 40, (3, N_SYMBOLS)) + day * MINUTES
            for k in range(3):
                signal[entries[k], cols] = 1.0
                signal[entries[k] + 30, cols] = -1.0
        last = close[-1].copy()
        frame = pl.DataFrame(
            {
                "timestamp": pl.Series(np.repeat(stamps, N_SYMBOLS)).cast(pl.Datetime("us", "UTC")),
                "symbol": pl.Series(np.tile(SYMBOLS, n_t)),
                "open": open_.ravel(),
                "high": high.ravel(),
                "low": low.ravel(),
                "close": close.ravel(),
                "volume": np.full(n_t * N_SYMBOLS, 10_000.0),
                "signal": signal.ravel(),
            }
        )
        rows += frame.height
        write_partitioned(frame, root)
        del frame, returns, close, open_, spread, high, low, signal
    return {"rows": rows, "months": int(np.unique(months).size)}


class FewTradesPerDay(Strategy):
    """Buy 10 shares where ``signal == 1``, close where ``signal == -1``: each bar's orders
    placed in two batch calls (``close_positions`` / ``submit_batch`` over symbol ids)."""

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        sig = batch["signal"]
        ids = batch.ids
        exits = ids[sig == -1.0]
        broker = self.broker
        if exits.size:
            broker.close_positions(exits)
        entries = ids[sig == 1.0]
        if entries.size:
            flat = (broker.qty[entries] == 0) & (broker.pending[entries] == 0)
            broker.submit_batch(entries[flat], 10.0)


class FewTradesPerDayPerOrder(Strategy):
    """The same decisions as :class:`FewTradesPerDay`, one ``close_position`` / ``submit``
    call per order by symbol name (the strategy as written before the batch calls)."""

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        sig = batch["signal"]
        if np.isnan(sig).all():
            return
        broker = self.broker
        symbols = broker.data.symbols
        for sid in batch.ids[sig == -1.0].tolist():
            broker.close_position(str(symbols[sid]))
        for sid in batch.ids[sig == 1.0].tolist():
            if broker.qty[sid] == 0 and broker.pending[sid] == 0:
                broker.submit(str(symbols[sid]), 10.0)


def _month_frames(root: Path) -> Iterator[pl.DataFrame]:
    """One month at a time: a scan filtered on the partition columns reads only that folder."""
    from ml4t_pipeline.lib.storage import list_partitions, scan_partitioned

    scan = scan_partitioned(root, symbol_categorical=False, include_partition_columns=True)
    for year, month, _ in list_partitions(root):
        yield (
            scan.filter((pl.col("year") == year) & (pl.col("month") == month))
            .drop("year", "month")
            .collect()
        )


def _digest(result: BacktestResult) -> str:
    parts = []
    for name in ("trades", "fills", "portfolio_states"):
        frame: pl.DataFrame = getattr(result, name)
        parts.append(f"{name}:{frame.height}:{int(frame.hash_rows(seed=0).sum())}")
    return "|".join(parts)


def _summary(result: BacktestResult, seconds: float) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "run_seconds": result.run_seconds,
        "bar_events": result.n_bar_events,
        "trades": result.trades.height,
        "fills": result.fills.height,
        "final_equity": result.final_equity,
        "digest": _digest(result),
    }


def run_w2_streaming(root: Path, strategy: type[Strategy] = FewTradesPerDay) -> dict[str, Any]:
    """The measured run: months streamed from the partitions into the engine."""
    started = time.perf_counter()
    data = ChunkedMarketData(
        _month_frames(root), symbols=SYMBOLS, signal_columns=["signal"], prefetch=True
    )
    result = BacktestEngine(data, strategy()).run()
    return _summary(result, time.perf_counter() - started)


def run_w2_whole(root: Path) -> dict[str, Any]:
    """Reference: the whole panel in memory (for the digest check; not a benchmark)."""
    from ml4t_pipeline.lib.storage import read_partitioned

    started = time.perf_counter()
    panel = read_partitioned(root)
    data = MarketData.from_frame(panel, signal_columns=["signal"])
    del panel
    result = BacktestEngine(data, FewTradesPerDay()).run()
    return _summary(result, time.perf_counter() - started)


def _child(args: list[str]) -> tuple[dict[str, Any], int, float]:
    """Run this file as a script in a child (see ``childproc.run_child``)."""
    return run_child(__file__, args)


@pytest.fixture(scope="module")
def w2_partitions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("w2_minutes")
    info, _, _ = _child(["generate", str(root)])
    assert info["rows"] == BAR_EVENTS
    return root


@pytest.mark.slow
def test_w2_minute_panel_few_trades_per_day(benchmark: Any, w2_partitions: Path) -> None:
    info, rss, wall = benchmark.pedantic(
        _child, args=(["run", str(w2_partitions)],), rounds=1, iterations=1
    )
    benchmark.extra_info.update(
        {
            "bar_events": info["bar_events"],
            "run_seconds": round(info["run_seconds"], 2),
            "bar_events_per_s": info["bar_events"] / info["run_seconds"],
            "child_wall_seconds": round(wall, 2),
            "peak_rss_bytes": rss,
            "peak_rss_mib": round(rss / 1024**2, 1),
            "trades": info["trades"],
            "fills": info["fills"],
            "digest": info["digest"],
            "target_seconds": TARGET_SECONDS,
            "target_rss_bytes": TARGET_RSS_BYTES,
            "started": datetime.now(UTC).isoformat(),
        }
    )
    assert info["bar_events"] == BAR_EVENTS
    assert info["trades"] > 100_000


if __name__ == "__main__":
    command, *paths = sys.argv[1:]
    if command == "generate":
        print(json.dumps(generate_w2_partitions(Path(paths[0]))))
    elif command == "run":
        print(json.dumps(run_w2_streaming(Path(paths[0]))))
    elif command == "run-per-order":
        print(json.dumps(run_w2_streaming(Path(paths[0]), FewTradesPerDayPerOrder)))
    elif command == "whole":
        print(json.dumps(run_w2_whole(Path(paths[0]))))
    else:
        raise SystemExit(
            f"unknown command {command!r}; use generate ROOT, run ROOT, run-per-order ROOT "
            "or whole ROOT"
        )
