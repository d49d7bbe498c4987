"""The variant driver (engine.compiled.variants) gives every variant exactly its own run's
records: orders, fills, trades, rejections and portfolio states, hence the same metrics."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import (
    BacktestEngine,
    ExecutionConfig,
    FixedBpsSlippage,
    MarketData,
    MaxPositionsRule,
    PercentageCommission,
    PerShareCommission,
    PriceBasedStopLoss,
    PriceBasedTakeProfit,
    RiskManager,
    SpreadAwareSlippage,
    TieredCommission,
    TimeBasedExit,
    TopNStrategy,
    compute_metrics,
)
from engine.compiled import plan, topn, variants
from engine.compiled.reductions import as_reductions
from engine.compiled.topn import CompiledRun, TopNPlan
from engine.metrics import metrics_from_reductions, per_bar_rate
from engine.recorder import Recorder
from engine.risk.rules.dynamic import DynamicTrailingStop
from tests.engine.fastpath_helpers import random_bars
from tests.engine.helpers import momentum_scores, ts

KINDS = ("orders", "fills", "trades", "rejections", "states")

Run = tuple[TopNStrategy, RiskManager | None, ExecutionConfig]


def _assert_same_records(got: CompiledRun, want: CompiledRun, label: str) -> None:
    assert got.status == want.status, label
    assert got.cash == want.cash and got.n_fills == want.n_fills, label
    assert got.records.reasons == want.records.reasons, label
    assert got.records.texts == want.records.texts, label
    for kind in KINDS:
        a, b = got.records.table(kind), want.records.table(kind)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{label}: {kind}"
    assert np.array_equal(got.fstate, want.fstate, equal_nan=True), label
    assert np.array_equal(got.istate, want.istate), label


def _sp500_grid() -> list[tuple[dict[str, Any], Run]]:
    """24 variants: n x stop_pct x rebalance_every x (commission rate, initial cash)."""
    grid = []
    for n, stop, every, (rate, cash) in itertools.product(
        (10, 25), (0.03, 0.08), (1, 5), ((0.001, 1e6), (0.0, 250_000.0), (0.0025, 50_000.0))
    ):
        params = {"n": n, "stop_pct": stop, "every": every, "rate": rate, "cash": cash}
        run: Run = (
            TopNStrategy("score", n=n, rebalance_every=every),
            RiskManager([PriceBasedStopLoss(stop), TimeBasedExit(max_bars=60)]),
            ExecutionConfig(commission=PercentageCommission(rate), initial_cash=cash),
        )
        grid.append((params, run))
    return grid


@pytest.fixture(scope="module")
def sp500_data(sp500_panel: pl.DataFrame) -> MarketData:
    """The whole S&P file (505 symbols, 1,259 days) with the 20-day momentum score."""
    panel = momentum_scores(sp500_panel, datetime(2100, 1, 1, tzinfo=UTC))
    return MarketData.from_frame(panel, signal_columns=["score"])


def test_variants_sp500_grid_equals_one_at_a_time_runs(sp500_data: MarketData) -> None:
    grid = _sp500_grid()
    runs = [run for _, run in grid]
    assert plan.variants_reason(sp500_data, runs) is None
    plans = variants.plan_variants(sp500_data, runs)
    # chunks of 5: the 24 variants in 5 passes, the last one partial
    got = dict(variants.run_variants(sp500_data, plans, chunk_size=5))
    assert sorted(got) == list(range(24))
    n_trades = set()
    for k, (params, (strategy, risk, config)) in enumerate(grid):
        label = str(params)
        alone = CompiledRun(sp500_data, plan.plan_topn(sp500_data, strategy, risk, config))
        _assert_same_records(got[k], alone, label)
        # and the engine's own run of the variant: the same fills frame and metrics
        risk = RiskManager([PriceBasedStopLoss(params["stop_pct"]), TimeBasedExit(max_bars=60)])
        result = BacktestEngine(sp500_data, strategy, risk, config).run()
        assert result.compiled, label
        recorder = Recorder(sp500_data, got[k].records)
        assert recorder.fills_frame().equals(result.fills), label
        states = recorder.states_frame(config.initial_cash)
        assert states.equals(result.portfolio_states), label
        mine = compute_metrics(
            states, recorder.trades_frame(), fills=recorder.fills_frame(),
            initial_cash=config.initial_cash,
        )  # fmt: skip
        theirs = compute_metrics(
            result.portfolio_states, result.trades, fills=result.fills,
            initial_cash=config.initial_cash,
        )  # fmt: skip
        assert mine == theirs, label
        n_trades.add(result.trades.height)
    assert len(n_trades) > 12  # the parameters reached the kernel


def test_variants_full_buffers_rerun_alone_with_the_same_records(sp500_data: MarketData) -> None:
    runs = [run for _, run in _sp500_grid()[:3]]
    plans = variants.plan_variants(sp500_data, runs)
    # a chunk whose record buffers overflow: each variant runs again alone, buffers growing
    small = [dataclasses.replace(p, capacity=64) for p in plans]
    for k, got in variants.run_variants(sp500_data, small):
        _assert_same_records(got, CompiledRun(sp500_data, plans[k]), f"variant {k}")


def test_variants_reused_buffers_reset_between_passes(sp500_data: MarketData) -> None:
    runs = [run for _, run in _sp500_grid()]
    plans = variants.plan_variants(sp500_data, runs)
    # busy variants first (n=25, every bar), then quiet ones in the same buffers
    order = [18, 19, 20, 3, 4, 5]
    buffers = variants.VariantBuffers(
        3, sp500_data.n_symbols, sp500_data.n_timestamps, max(p.capacity for p in plans)
    )
    for part in (order[:3], order[3:]):
        chosen = [plans[k] for k in part]
        for k, got in variants.run_variants(sp500_data, chosen, buffers=buffers):
            want = CompiledRun(sp500_data, plans[part[k]])
            _assert_same_records(got, want, f"variant {part[k]}")
    assert not buffers.fits(sp500_data, plans)  # 24 variants: fresh buffers would be made


def test_run_pass_records_in_place_equal_the_single_runs_records(sp500_data: MarketData) -> None:
    # the sweep reads a pass's records in place (views of its buffers, no CompiledRun)
    runs = [run for _, run in _sp500_grid()]
    plans = variants.plan_variants(sp500_data, runs)
    chosen = [plans[k] for k in (0, 7, 18, 23)]
    ranking = variants.rank_bars(sp500_data, plans[0].signal, 25)
    done = variants.run_pass(sp500_data, chosen, ranking, start=4)
    assert (done.start, len(done)) == (4, 4)
    for v, p in enumerate(chosen):
        assert done.status(v) == topn.ST_OK
        alone = CompiledRun(sp500_data, p)
        got = done.records(v)
        for kind in KINDS:
            a, b = getattr(got, kind), alone.records.table(kind)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"variant {v}: {kind}"
        _assert_same_records(done.run(sp500_data, v), alone, f"variant {v}")
    with pytest.raises(ValueError, match="ranking has shape"):
        variants.run_pass(sp500_data, chosen, ranking[:, :5])
    with pytest.raises(ValueError, match="at least one plan"):
        variants.run_pass(sp500_data, [], ranking)


def test_pass_summary_metrics_equal_compute_metrics_of_each_variants_frames(
    sp500_data: MarketData,
) -> None:
    # the sweep's metrics of a pass: compiled reductions, fill columns summed by polars
    grid = _sp500_grid()
    runs = [run for _, run in grid]
    plans = variants.plan_variants(sp500_data, runs)
    ranking = variants.rank_bars(sp500_data, plans[0].signal, 25)
    done = variants.run_pass(sp500_data, plans, ranking)
    cash = np.array([config.initial_cash for _, _, config in runs])
    rf = np.full(len(plans), per_bar_rate(0.02, 252.0))
    summary = done.summary(cash, rf)
    assert summary.reduced.all() and len(summary) == 24
    with pytest.raises(ValueError, match="one value per variant"):
        done.summary(cash[:3], rf)
    columns = [pl.Series(c) for c in (summary.traded, summary.commission, summary.slippage)]
    for v, (params, (_, _, config)) in enumerate(grid):
        recorder = Recorder(sp500_data, done.run(sp500_data, v).records)
        states, fills = recorder.states_frame(config.initial_cash), recorder.fills_frame()
        want = compute_metrics(
            states, recorder.trades_frame(), 252.0, 0.02, fills=fills,
            initial_cash=config.initial_cash,
        )  # fmt: skip
        a, b = summary.fill_start[v], summary.fill_start[v + 1]
        traded, commission, slippage = (float(c.slice(a, b - a).sum()) for c in columns)
        got = metrics_from_reductions(
            as_reductions(summary.sums[v], traded), config.initial_cash, 252.0
        )
        assert got == want, params
        assert commission == float(fills["commission"].sum()), params
        assert slippage == float(fills["slippage"].sum()), params
        assert summary.returns[v].tobytes() == states["return"].to_numpy().tobytes(), params
        assert summary.equity[v].tobytes() == states["equity"].to_numpy().tobytes(), params


def test_rank_bars_orders_by_decreasing_signal_ties_in_row_order_nan_excluded() -> None:
    rows = [
        (ts(0), "A", 1.0), (ts(0), "B", 3.0), (ts(0), "C", 3.0), (ts(0), "D", float("nan")),
        (ts(1), "A", None), (ts(1), "B", -1.0),
    ]  # fmt: skip
    panel = pl.DataFrame(
        [(t, s, 10.0, 11.0, 9.0, 10.0, 100.0, v) for t, s, v in rows],
        schema={
            "timestamp": pl.Datetime("us", "UTC"),
            "symbol": pl.String,
            **dict.fromkeys(("open", "high", "low", "close", "volume", "score"), pl.Float64),
        },  # fmt: skip
        orient="row",
    )
    data = MarketData.from_frame(panel, signal_columns=["score"])
    signal = np.ascontiguousarray(data.columns["score"], dtype=np.float64)
    ranking = variants.rank_bars(data, signal, 3)
    # bar 0: rows B, C (3.0, tie in row order), A (1.0); bar 1: row B only (A has no score)
    symbols = data.symbols[data.sym_id]
    assert [symbols[r] for r in ranking[0]] == ["B", "C", "A"]
    assert [symbols[r] for r in ranking[1][:1]] == ["B"] and list(ranking[1][1:]) == [-1, -1]
    with pytest.raises(ValueError, match="k must be >= 1"):
        variants.rank_bars(data, signal, 0)
    with pytest.raises(ValueError, match="signal has shape"):
        variants.rank_bars(data, signal[:2], 2)


def _small_panel() -> MarketData:
    rows = []
    for k in range(6):
        for s, price in enumerate((10.0, 20.0, 30.0)):
            c = price + k
            rows.append((ts(k), f"S{s}", c, c + 1, c - 1, c, 1e4, float(s + k % 2), -float(s)))
    panel = pl.DataFrame(
        rows,
        schema={
            "timestamp": pl.Datetime("us", "UTC"),
            "symbol": pl.String,
            **dict.fromkeys(
                ("open", "high", "low", "close", "volume", "score", "other"), pl.Float64
            ),
        },  # fmt: skip
        orient="row",
    )
    return MarketData.from_frame(panel, signal_columns=["score", "other"])


def _gap_panel() -> MarketData:
    return MarketData.from_frame(_gap_frame(), signal_columns=["score"])


def _gap_frame() -> pl.DataFrame:
    """Four symbols, seven bars: A is bought (bar 1), drops out of the top 1 (bar 1, a sell
    queued), has no row at bar 2 (the sell waits), and reopens at bar 3 below its 5 % stop;
    C, the top pick at bar 3, has no row at bar 4 (its buy waits); D never leads."""
    # symbol: (open, low, close, score) per bar; None: no row at that bar
    bars: dict[str, list[tuple[float, float, float, float] | None]] = {
        "A": [(10, 9.9, 10, 3), (10, 9.8, 10, 0), None, (9, 8.5, 9, 0), (9, 8.9, 9, 0),
              (9, 8.9, 9, 0), (9, 8.9, 9, 0)],
        "B": [(20, 19.9, 20, 2), (20, 19.9, 20, 5), (20, 19.8, 20, 5), (20, 19.9, 20, 1),
              (20, 19.9, 20, 1), (20, 19.9, 20, 1), (20, 19.9, 20, 1)],
        "C": [(30, 29.9, 30, 1), (30, 29.9, 30, 1), (30, 29.9, 30, 1), (30, 29.9, 30, 9),
              None, (30, 29.5, 31, 9), (31, 30.9, 31, 9)],
        "D": [(40, 39.9, 40, 0)] * 7,
    }  # fmt: skip
    rows = [
        (ts(k), sym, o, max(o, c) + 0.1, lo, c, 1e4, score)
        for k in range(7)
        for sym, per_bar in bars.items()
        if (bar := per_bar[k]) is not None
        for o, lo, c, score in [bar]
    ]
    return pl.DataFrame(rows, schema=_SCHEMA, orient="row")


def test_variants_sparse_walk_held_symbol_out_of_candidates_gap_and_stop_equals_dense() -> None:
    data = _gap_panel()
    runs = [
        _run(strategy=TopNStrategy("score", n=1), rules=[PriceBasedStopLoss(0.05)]),
        _run(strategy=TopNStrategy("score", n=2), rules=[PriceBasedStopLoss(0.05)]),
    ]
    plans = variants.plan_variants(data, runs)
    for k, got in variants.run_variants(data, plans):  # the sparse walk
        want = CompiledRun(data, plans[k])  # a single run walks every row of every bar
        _assert_same_records(got, want, f"n={k + 1}")
    # what happened in the n=1 run: A bought at bar 1, its sell queued at bar 1 waits out bar
    # 2 (no row) and A leaves at bar 3's open, below its stop; C's buy of bar 3 fills at bar 5
    one = dict(variants.run_variants(data, plans[:1]))[0]
    fills = one.records.table("fills")
    a, c = data.symbol_index["A"], data.symbol_index["C"]
    assert [(int(f["bar_index"]), float(f["quantity"]) > 0) for f in fills if f["sid"] == a] == [
        (1, True),
        (3, False),
    ]
    assert [int(f["bar_index"]) for f in fills if f["sid"] == c] == [5]
    exit_a = next(f for f in fills if f["sid"] == a and f["quantity"] < 0)
    assert float(exit_a["price"]) == 9.0  # the gap open, below the 9.5 stop


def test_states_frame_without_context_is_the_frame_less_the_context_columns() -> None:
    # the sweep's metrics read the states frame without the market context columns
    context = pl.DataFrame(
        {"timestamp": [ts(k) for k in range(7)], "vix": [15.0 + k for k in range(7)]}
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    data = MarketData.from_frame(_gap_frame(), signal_columns=["score"], context=context)
    [p] = variants.plan_variants(data, [_run(strategy=TopNStrategy("score", n=1))])
    recorder = Recorder(data, CompiledRun(data, p).records)
    full = recorder.states_frame(1e6)
    bare = recorder.states_frame(1e6, context=False)
    assert "vix" in full.columns and full["vix"].to_list() == [15.0 + k for k in range(7)]
    assert bare.equals(full.drop("vix"))


class _OwnTopN(TopNStrategy):
    """A subclass: its behaviour may differ, so it never takes the compiled driver."""


def _run(**change: Any) -> Run:
    parts: dict[str, Any] = {
        "strategy": TopNStrategy("score", n=2),
        "rules": [PriceBasedStopLoss(0.05)],
        "config": ExecutionConfig(),
    } | change
    rules = parts["rules"]
    return parts["strategy"], (RiskManager(rules) if rules else None), parts["config"]


@pytest.mark.parametrize(
    ("other", "reason"),
    [
        (_run(strategy=TopNStrategy("other", n=2)), "run 1: its signal differ"),
        (_run(rules=[PriceBasedTakeProfit(0.05)]), "run 1: its rules differ"),
        (_run(rules=[]), "run 1: its rules differ"),
        (
            _run(config=ExecutionConfig(slippage=FixedBpsSlippage(5.0))),
            "run 1: its slippage model differ",
        ),
        (
            _run(config=ExecutionConfig(commission=TieredCommission([(0.0, 0.001)]))),
            "run 1: its commission tiers differ",
        ),
        (_run(strategy=_OwnTopN("score", n=2)), "run 1: strategy _OwnTopN is not TopNStrategy"),
    ],
)
def test_variants_reason_names_what_a_pass_cannot_share(other: Run, reason: str) -> None:
    data = _small_panel()
    assert plan.variants_reason(data, [_run(), other]).startswith(reason)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="cannot share a variant pass"):
        variants.plan_variants(data, [_run(), other])


def test_variants_reason_admits_parameters_costs_and_cash() -> None:
    data = _small_panel()
    runs = [
        _run(),
        _run(
            strategy=TopNStrategy("score", n=1, rebalance_every=2, weight=0.3),
            rules=[PriceBasedStopLoss(0.2)],
            config=ExecutionConfig(
                commission=PerShareCommission(0.01), initial_cash=5_000.0, close_at_end=True
            ),
        ),
    ]
    assert plan.variants_reason(data, runs) is None
    assert plan.variants_reason(data, []) == "no runs"


def test_run_variants_refuses_bad_chunk_and_ranking() -> None:
    data = _small_panel()
    plans = variants.plan_variants(data, [_run(), _run()])
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        list(variants.run_variants(data, plans, chunk_size=0))
    with pytest.raises(ValueError, match="ranking has shape"):
        list(variants.run_variants(data, plans, ranking=np.zeros((2, 1), dtype=np.int64)))
    assert list(variants.run_variants(data, [])) == []


# --- generated panels ----------------------------------------------------------------------------

_SCHEMA = {
    "timestamp": pl.Datetime("us", "UTC"),
    "symbol": pl.String,
    **dict.fromkeys(("open", "high", "low", "close", "volume", "score"), pl.Float64),
}

_RULE_SETS: dict[str, Any] = {
    "none": lambda p: [],
    "stop_time": lambda p: [PriceBasedStopLoss(p), TimeBasedExit(max_bars=3)],
    "trail_target": lambda p: [
        DynamicTrailingStop(initial_trail_pct=p, tighten_per_bar=0.002),
        PriceBasedTakeProfit(2 * p),
    ],
    "stop_count": lambda p: [PriceBasedStopLoss(p), MaxPositionsRule(2)],
}


@st.composite
def _variant_scenario(draw: Any) -> dict[str, Any]:
    n_symbols = draw(st.integers(2, 7))
    n_bars = draw(st.integers(2, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = random_bars(rng, n_symbols, n_bars, move=(0.92, 1.08), volumes=(1e4,))
    variant = st.fixed_dictionaries(
        {
            "n": st.integers(1, n_symbols),
            "every": st.integers(1, 3),
            "weight": st.sampled_from([None, 0.2, 0.5, 0.9]),
            "pct": st.sampled_from([0.01, 0.03, 0.08]),
            "rate": st.sampled_from([0.0, 0.001, 0.01]),
            "cash": st.sampled_from([1_000.0, 100_000.0]),
        }
    )
    return {
        "rows": rows,
        "rules": draw(st.sampled_from(sorted(_RULE_SETS))),
        "stops_first": draw(st.booleans()),
        "close_at_end": draw(st.booleans()),
        "fractional": draw(st.booleans()),
        "costs": draw(st.sampled_from(["percentage", "per_share", "tiered", "spread"])),
        "variants": draw(st.lists(variant, min_size=1, max_size=5)),
        "chunk": draw(st.integers(1, 4)),
    }


def _costs(kind: str, rate: float) -> dict[str, Any]:
    """A variant's cost models: one kind per scenario, the variant's rate in it."""
    if kind == "per_share":
        return {"commission": PerShareCommission(rate, minimum=1.0)}
    if kind == "tiered":
        return {"commission": TieredCommission([(0.0, 2 * rate), (2_000.0, rate)])}
    if kind == "spread":
        return {
            "commission": PercentageCommission(rate),
            "slippage": SpreadAwareSlippage(0.5, fallback_pct=rate, window=3, min_periods=2),
        }
    return {"commission": PercentageCommission(rate)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_variant_scenario())
def test_variants_generated_panels_equal_one_at_a_time_runs(sc: dict[str, Any]) -> None:
    data = MarketData.from_frame(
        pl.DataFrame(sc["rows"], schema=_SCHEMA, orient="row"), signal_columns=["score"]
    )
    runs: list[Run] = []
    for v in sc["variants"]:
        rules = _RULE_SETS[sc["rules"]](v["pct"])
        runs.append(
            (
                TopNStrategy("score", n=v["n"], rebalance_every=v["every"], weight=v["weight"]),
                RiskManager(rules) if rules else None,
                ExecutionConfig(
                    **_costs(sc["costs"], v["rate"]),
                    initial_cash=v["cash"],
                    bar_event_order="stops_first" if sc["stops_first"] else "chronological",
                    close_at_end=sc["close_at_end"],
                    fractional_shares=sc["fractional"],
                ),
            )
        )
    plans = variants.plan_variants(data, runs)
    got = dict(variants.run_variants(data, plans, chunk_size=sc["chunk"]))
    for k, p in enumerate(plans):
        fresh: TopNPlan = plan.plan_topn(data, *runs[k])
        _assert_same_records(got[k], topn.CompiledRun(data, fresh), f"variant {k}: {p.params}")
