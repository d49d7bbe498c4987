"""Data layer benchmarks (issue 3): validation + joins on the S&P file and a 24.5 M-row panel.

Run: ``python -m pytest benchmarks/test_data_pipeline.py --no-cov``

- ``test_sp500_validate_and_join``: standard ``validate_prices`` + ``build_market_panel``
  (prices × features × signals) + ``join_context_asof`` (VIX, once per timestamp) on the real
  S&P 500 file (619,040 rows). Target: under 1 s. Loading the file, computing the indicators
  and the signals are done once outside the timing; ``test_sp500_features`` times
  ``compute_features`` on its own.
- ``test_minute_panel_peak_rss``: the same steps over a synthetic 250-symbol × 252-day ×
  390-minute panel (24,570,000 rows) with ``prepare_panel_by_month`` (month by month, read from
  hive partitions, written as hive partitions). It runs in a child process (this file run as a
  script) and its peak RSS is the child's ``ru_maxrss`` (``os.wait4``: that one child's
  resource usage, the same figure ``getrusage(RUSAGE_CHILDREN)`` gives when it is the only
  child). Target: peak RSS under 2 GB. Generating the synthetic input is a separate child
  process, not measured.

Figures go into ``benchmark.extra_info``; ``--benchmark-json=FILE`` keeps them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from childproc import run_child

REPO_ROOT = Path(__file__).resolve().parents[1]

N_SYMBOLS = 250
N_DAYS = 252
MINUTES = 390  # 09:30-16:00 New York
FIRST_DAY = date(2023, 1, 3)
TARGET_SECONDS_SP500 = 1.0
TARGET_RSS_BYTES = 2 * 1024**3
TARGET_SECONDS_MINUTE = 300.0


def _data_root() -> Path:
    env = os.environ.get("ML4T_DATA_ROOT")
    return Path(env).resolve() if env else (REPO_ROOT.parent / "shared" / "data").resolve()


# ---------------------------------------------------------------------------------------------
# (a) S&P 500 daily file


@pytest.fixture(scope="module")
def sp500_inputs() -> dict[str, pl.DataFrame]:
    from ml4t_pipeline.lib.features import compute_features
    from ml4t_pipeline.lib.io import load_prices_file, load_vix
    from ml4t_pipeline.lib.schemas import validate_prices
    from ml4t_pipeline.lib.timing import signal_available_at

    root = _data_root()
    path = root / "sp500_5yr_daily_ohlcv.parquet"
    if not path.exists():
        pytest.skip(f"real market data not found at {path} (set ML4T_DATA_ROOT)")
    prices = load_prices_file(path)
    valid = validate_prices(prices).valid
    features = compute_features(valid)
    # A stand-in model score: 5-day reversal, available at the next session's open.
    signals = signal_available_at(
        features.select("timestamp", "symbol", (-pl.col("ret_5")).alias("score")).drop_nulls(),
        "next_day",
    )
    return {
        "prices": prices,
        "features": features,
        "signals": signals,
        "vix": load_vix(root / "vix_daily_cboe.parquet"),
    }


def test_sp500_validate_and_join(benchmark: Any, sp500_inputs: dict[str, pl.DataFrame]) -> None:
    from ml4t_pipeline.lib.context import join_context_asof
    from ml4t_pipeline.lib.panel import build_market_panel
    from ml4t_pipeline.lib.schemas import validate_prices

    prices, features = sp500_inputs["prices"], sp500_inputs["features"]
    signals, vix = sp500_inputs["signals"], sp500_inputs["vix"]

    def pipeline() -> tuple[int, int, int]:
        report = validate_prices(prices, "standard")
        panel = build_market_panel(report.valid, features, signals)
        stamps = panel.select(pl.col("timestamp").unique(maintain_order=True))
        context = join_context_asof(stamps, vix, max_staleness="4d")
        return report.invalid.height, panel.height, context.height

    invalid, rows, stamps = benchmark.pedantic(pipeline, rounds=7, iterations=1, warmup_rounds=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        {
            "input_rows": prices.height,
            "invalid_rows": invalid,
            "panel_rows": rows,
            "context_rows": stamps,
            "median_seconds": round(median, 4),
            "target_seconds": TARGET_SECONDS_SP500,
        }
    )
    assert (invalid, rows) == (23, 619_017)
    assert median < TARGET_SECONDS_SP500


def test_sp500_features(benchmark: Any, sp500_inputs: dict[str, pl.DataFrame]) -> None:
    from ml4t_pipeline.lib.features import compute_features
    from ml4t_pipeline.lib.schemas import validate_prices

    valid = validate_prices(sp500_inputs["prices"]).valid
    out = benchmark.pedantic(compute_features, args=(valid,), rounds=5, iterations=1)
    benchmark.extra_info.update(
        {"rows": out.height, "median_seconds": round(benchmark.stats.stats.median, 4)}
    )
    assert out.height == valid.height


TARGET_UNIVERSE_RATIO = 1.2


def test_sp500_calendar_and_universe_overhead(
    benchmark: Any, sp500_inputs: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data preparation with exchange-calendar stamping and the membership mask (issue 28)
    against today's (fixed 16:00 stamping, no universe), in the same process, interleaved.

    Each round: ``load_prices_file`` (stamping) + ``validate_prices`` + ``build_market_panel``
    + ``join_context_asof``; the new one adds ``load_membership`` + ``mask_outside_universe``.
    Target: median ratio new / old <= 1.2.
    """
    from ml4t_pipeline.lib import timing
    from ml4t_pipeline.lib.context import join_context_asof
    from ml4t_pipeline.lib.features import compute_features
    from ml4t_pipeline.lib.io import load_prices_file
    from ml4t_pipeline.lib.panel import build_market_panel
    from ml4t_pipeline.lib.schemas import validate_prices
    from ml4t_pipeline.lib.universe import load_membership, mask_outside_universe

    root = _data_root()
    membership_path = root / "sp500_membership_1996_2025.parquet"
    if not membership_path.exists():
        pytest.skip(f"membership table not found at {membership_path}")
    features, signals, vix = (sp500_inputs[k] for k in ("features", "signals", "vix"))
    path = root / "sp500_5yr_daily_ohlcv.parquet"
    calendar_close = timing.daily_close_utc

    def fixed_close(dates: pl.Expr) -> pl.Expr:  # before issue 28: 16:00 New York every date
        return timing._session_time_utc(dates, 16, 0)

    def prepare(universe: bool, feats: pl.DataFrame = features) -> int:
        prices = load_prices_file(path)
        valid = validate_prices(prices, "standard").valid
        panel = build_market_panel(valid, feats, signals)
        if universe:
            panel = mask_outside_universe(panel, load_membership(membership_path), ["score"])
        stamps = panel.select(pl.col("timestamp").unique(maintain_order=True))
        join_context_asof(stamps, vix, max_staleness="4d")
        return panel.height

    def old() -> int:
        monkeypatch.setattr(timing, "daily_close_utc", fixed_close)
        try:
            return prepare(universe=False, feats=old_features)
        finally:
            monkeypatch.setattr(timing, "daily_close_utc", calendar_close)

    # The indicators of the 16:00-stamped prices (same values, half days at 16:00), so both
    # variants join features on identical keys.
    monkeypatch.setattr(timing, "daily_close_utc", fixed_close)
    old_features = compute_features(validate_prices(load_prices_file(path)).valid)
    monkeypatch.setattr(timing, "daily_close_utc", calendar_close)

    timing.xnys_early_closes()  # the calendar is built once per process (cached)
    old_times, new_times = [], []
    for _ in range(5):
        for fn, out in ((old, old_times), (lambda: prepare(universe=True), new_times)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    rows = benchmark.pedantic(prepare, args=(True,), rounds=3, iterations=1)
    ratio = float(np.median(new_times) / np.median(old_times))
    benchmark.extra_info.update(
        {
            "panel_rows": rows,
            "old_median_seconds": round(float(np.median(old_times)), 4),
            "new_median_seconds": round(float(np.median(new_times)), 4),
            "ratio": round(ratio, 3),
            "target_ratio": TARGET_UNIVERSE_RATIO,
            "load_average": os.getloadavg(),
        }
    )
    print(benchmark.extra_info)
    assert ratio <= TARGET_UNIVERSE_RATIO


# ---------------------------------------------------------------------------------------------
# (b) synthetic 250 × 252 × 390 one-minute panel, month by month


def _trading_days(n: int) -> list[date]:
    days: list[date] = []
    day = FIRST_DAY
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def _minute_closes(days: list[date]) -> pl.Series:
    """Bar-close stamps (UTC) of 1-minute bars: 09:31 ... 16:00 New York on each day."""
    from ml4t_pipeline.lib.timing import market_open_utc

    opens = pl.DataFrame({"d": days}).select(market_open_utc(pl.col("d")).alias("o"))["o"]
    offsets = np.arange(1, MINUTES + 1, dtype=np.int64) * 60_000_000
    us = (opens.dt.epoch("us").to_numpy()[:, None] + offsets[None, :]).ravel()
    return pl.Series("timestamp", us).cast(pl.Datetime("us", "UTC"))


def generate_minute_inputs(root: Path, seed: int = 7) -> dict[str, int]:
    """Write the synthetic prices (hive partitions by month), daily signals and daily context.

    Prices are a geometric random walk per symbol (valid OHLC by construction, with a handful
    of deliberately broken rows so the quarantine path runs); written month by month so the
    generator itself stays small.
    """
    from ml4t_pipeline.lib.storage import write_parquet_atomic, write_partitioned
    from ml4t_pipeline.lib.timing import daily_close_utc, signal_available_at, vix_close_utc

    rng = np.random.default_rng(seed)
    symbols = [f"S{i:03d}" for i in range(N_SYMBOLS)]
    days = _trading_days(N_DAYS)
    stamps = _minute_closes(days)
    last = rng.uniform(20.0, 200.0, N_SYMBOLS)
    month_of = np.array([d.year * 100 + d.month for d in days]).repeat(MINUTES)
    broken = 0
    for ym in np.unique(month_of):
        ts = stamps.filter(pl.Series(month_of == ym))
        n_t = ts.len()
        ret = rng.normal(0.0, 0.001, (n_t, N_SYMBOLS))
        close = last * np.exp(np.cumsum(ret, axis=0))
        open_ = np.vstack([last, close[:-1]]) * np.exp(rng.normal(0.0, 0.0002, (n_t, N_SYMBOLS)))
        wick = np.abs(rng.normal(0.0, 0.0005, (2, n_t, N_SYMBOLS)))
        high = np.maximum(open_, close) * (1 + wick[0])
        low = np.minimum(open_, close) * (1 - wick[1])
        volume = rng.integers(100, 10_000, (n_t, N_SYMBOLS)).astype(np.float64)
        high[5, :3] = low[5, :3] * 0.99  # three rows with high < low per month
        broken += 3
        last = close[-1]
        frame = pl.DataFrame(
            {
                "timestamp": ts.to_numpy().repeat(N_SYMBOLS),
                "symbol": pl.Series(symbols * n_t, dtype=pl.Categorical),
                "open": open_.ravel(),
                "high": high.ravel(),
                "low": low.ravel(),
                "close": close.ravel(),
                "volume": volume.ravel(),
            },
            schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
        )
        write_partitioned(frame, root / "prices")
        del frame, ret, close, open_, high, low, volume, wick
    daily = pl.DataFrame({"d": days}).select(daily_close_utc(pl.col("d")).alias("timestamp"))
    signals = signal_available_at(
        daily.join(pl.DataFrame({"symbol": symbols}), how="cross").with_columns(
            pl.Series("score", rng.normal(0.0, 1.0, N_DAYS * N_SYMBOLS))
        ),
        "next_day",  # visible from the 09:31 bar of the next session
    )
    write_parquet_atomic(signals, root / "signals.parquet")
    context = pl.DataFrame({"d": days}).select(
        vix_close_utc(pl.col("d")).alias("timestamp"),
        pl.Series("vix", rng.uniform(10.0, 30.0, N_DAYS)),
    )
    write_parquet_atomic(context, root / "context.parquet")
    return {"rows": N_SYMBOLS * N_DAYS * MINUTES, "broken_rows": broken}


def run_minute_pipeline(root: Path, out: Path) -> dict[str, Any]:
    """The measured pipeline: month-by-month validation, features, signal and context joins."""
    from ml4t_pipeline.lib.panel import prepare_panel_by_month

    started = time.perf_counter()
    result = prepare_panel_by_month(
        root / "prices",
        pl.read_parquet(root / "signals.parquet"),
        out,
        context=pl.read_parquet(root / "context.parquet"),
        level="standard",
        invalid_policy="quarantine",
        max_staleness="4d",
        context_max_staleness="4d",
    )
    seconds = time.perf_counter() - started
    signal_counts: dict[str, int] = {}
    for month in result.months:
        for status, n in month.signal_counts.items():
            signal_counts[status] = signal_counts.get(status, 0) + n
    return {
        "seconds": seconds,
        "panel_rows": result.rows,
        "quarantined_rows": result.quarantined.height,
        "months": len(result.months),
        "slowest_month_seconds": max(m.seconds for m in result.months),
        "signal_counts": signal_counts,
    }


def _child(args: list[str]) -> tuple[dict[str, Any], int, float]:
    """Run this file as a script in a child (see ``childproc.run_child``)."""
    return run_child(__file__, args)


@pytest.fixture(scope="module")
def minute_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("minute_panel")
    info, rss, wall = _child(["generate", str(root)])
    assert info["rows"] == 24_570_000
    return root


def test_minute_panel_peak_rss(benchmark: Any, minute_inputs: Path) -> None:
    out = minute_inputs / "prepared"
    info, rss, wall = benchmark.pedantic(
        _child, args=(["run", str(minute_inputs), str(out)],), rounds=1, iterations=1
    )
    benchmark.extra_info.update(
        {
            "input_rows": 24_570_000,
            "panel_rows": info["panel_rows"],
            "quarantined_rows": info["quarantined_rows"],
            "months": info["months"],
            "pipeline_seconds": round(info["seconds"], 2),
            "slowest_month_seconds": round(info["slowest_month_seconds"], 2),
            "child_wall_seconds": round(wall, 2),
            "peak_rss_bytes": rss,
            "peak_rss_mib": round(rss / 1024**2, 1),
            "signal_counts": info["signal_counts"],
            "target_rss_bytes": TARGET_RSS_BYTES,
        }
    )
    assert info["panel_rows"] + info["quarantined_rows"] == 24_570_000
    assert rss < TARGET_RSS_BYTES
    assert wall < TARGET_SECONDS_MINUTE


if __name__ == "__main__":
    command, *paths = sys.argv[1:]
    if command == "generate":
        print(json.dumps(generate_minute_inputs(Path(paths[0]))))
    elif command == "run":
        print(json.dumps(run_minute_pipeline(Path(paths[0]), Path(paths[1]))))
    else:
        raise SystemExit(f"unknown command {command!r}; use generate ROOT or run ROOT OUT")
