"""Chunked market data: a run over time slices equals the run over the whole panel.

Every scenario runs the same panel once from ``MarketData.from_frame`` and once from
``ChunkedMarketData`` split at given timestamp positions, and compares trades, fills, portfolio
states, orders, rejections and open positions frame for frame (exact equality).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from engine import (
    BacktestEngine,
    BacktestResult,
    DynamicTrailingStop,
    ExecutionConfig,
    MarketData,
    PercentageCommission,
    PriceBasedStopLoss,
    PriceBasedTakeProfit,
    RiskManager,
    SpreadAwareSlippage,
    Strategy,
    TimeBasedExit,
    VolatilityScaledStopLoss,
    VolumeAwareSlippage,
)
from engine import chunked as chunked_module
from engine.chunked import ChunkedMarketData
from engine.data import BarBatch
from engine.events import Fill, MarketEvent
from tests.engine.helpers import Script, make_context, make_panel, ts

# ------------------------------------------------------------------------------ helpers


def _random_panel(seed: int, n_bars: int = 48, n_symbols: int = 5) -> pl.DataFrame:
    """Daily bars (close at 21:00 UTC, bar k = ts(k)) with a signal, an ATR and gaps.

    Symbol ``S1`` has no bars at k = 10..13 and 30..31 (around the usual split points);
    other symbols miss about 8 % of their bars at random.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for s in range(n_symbols):
        sym = f"S{s}"
        price = 50.0 + 10 * s
        for k in range(n_bars):
            o = price * float(np.exp(rng.normal(0.0, 0.01)))
            c = o * float(np.exp(rng.normal(0.0, 0.02)))
            h = max(o, c) * (1 + abs(float(rng.normal(0.0, 0.01))))
            lo = min(o, c) * (1 - abs(float(rng.normal(0.0, 0.01))))
            price = c
            if sym == "S1" and (10 <= k <= 13 or 30 <= k <= 31):
                continue
            if sym != "S1" and k > 0 and rng.random() < 0.08:
                continue
            u = rng.random()
            rows.append(
                {
                    "timestamp": ts(k),
                    "symbol": sym,
                    "open": o,
                    "high": h,
                    "low": lo,
                    "close": c,
                    "volume": float(rng.integers(50, 400)),
                    "sig": 1.0 if u < 0.25 else (-1.0 if u < 0.4 else None),
                    "atr": 0.02 * c,
                }
            )
    frame = pl.DataFrame(rows)
    return frame.with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))


class Mixed(Strategy):
    """Enters on ``sig == 1`` with an order type that rotates with the bar and symbol (market,
    limit, stop, trailing stop, bracket, DAY limit); exits on ``sig == -1``."""

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        sig = batch["sig"]
        closes = batch.close
        k = batch.index
        for j, sym in enumerate(batch.symbols.tolist()):
            s = float(sig[j])
            c = float(closes[j])
            if s == -1.0 and self.has_position(sym):
                self.close_position(sym)
            elif s == 1.0 and not self.has_position(sym) and not self.open_orders(sym):
                kind = (k + j) % 6
                if kind == 0:
                    self.buy(sym, 40)
                elif kind == 1:
                    self.buy(sym, 40, limit_price=c * 0.995)
                elif kind == 2:
                    self.buy(sym, 40, stop_price=c * 1.005)
                elif kind == 3:
                    self.buy(sym, 40, trail_percent=0.01)
                elif kind == 4:
                    self.buy(sym, 40, take_profit=c * 1.03, stop_loss=c * 0.97)
                else:
                    self.buy(sym, 40, limit_price=c * 0.99, tif="DAY")
            elif s == -1.0 and self.get_position(sym) == 0 and k % 4 == 0:
                self.sell(sym, 30)  # a short (rejected unless shorting is allowed)


class PerSymbol(Strategy):
    """``on_market_data`` version: market buy on ``sig == 1``, close on ``sig == -1``."""

    def on_market_data(self, event: MarketEvent) -> None:
        s = event.signals["sig"]
        if s == 1.0 and not self.has_position(event.symbol):
            self.buy(event.symbol, 25)
        elif s == -1.0 and self.has_position(event.symbol):
            self.close_position(event.symbol)


def _chunks(panel: pl.DataFrame, cuts: Sequence[int]) -> list[pl.DataFrame]:
    """Split ``panel`` before the timestamp positions ``cuts`` (of its sorted timestamps)."""
    stamps = panel.get_column("timestamp").unique().sort()
    edges = [0, *sorted(set(cuts)), stamps.len()]
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if a >= b:
            continue
        lo, hi = stamps[a], stamps[b - 1]
        out.append(panel.filter(pl.col("timestamp").is_between(lo, hi)))
    return out


FRAMES = ("trades", "fills", "portfolio_states", "orders", "rejections", "open_positions")


def _run(
    data: MarketData | ChunkedMarketData,
    strategy: Strategy,
    rules: Callable[[], list[Any]] | None,
    config: ExecutionConfig,
) -> BacktestResult:
    risk = RiskManager(rules()) if rules is not None else None
    return BacktestEngine(data, strategy, risk, config).run()


def _assert_same(whole: BacktestResult, chunked: BacktestResult) -> None:
    for name in FRAMES:
        assert_frame_equal(getattr(whole, name), getattr(chunked, name), check_exact=True)
    assert whole.n_bar_events == chunked.n_bar_events


def _compare(
    panel: pl.DataFrame,
    cuts: Sequence[int],
    *,
    strategy: Callable[[], Strategy] = Mixed,
    rules: Callable[[], list[Any]] | None = None,
    config: ExecutionConfig | None = None,
    context: pl.DataFrame | None = None,
    indicators: Sequence[str] = ("atr",),
    prefetch: bool = False,
) -> tuple[BacktestResult, BacktestResult]:
    cfg = config if config is not None else ExecutionConfig()
    whole = _run(
        MarketData.from_frame(
            panel, signal_columns=["sig"], indicator_columns=indicators, context=context
        ),
        strategy(),
        rules,
        cfg,
    )
    chunked = _run(
        ChunkedMarketData(
            _chunks(panel, cuts),
            symbols=panel.get_column("symbol").unique().to_list(),
            signal_columns=["sig"],
            indicator_columns=indicators,
            context=context,
            history_bars=max(2, cfg.slippage.history_bars),
            prefetch=prefetch,
        ),
        strategy(),
        rules,
        cfg,
    )
    _assert_same(whole, chunked)
    return whole, chunked


def _rules() -> list[Any]:
    # ATR of the last bar before the fill (crosses a boundary when the fill is a chunk's first
    # bar), a target, a time exit counted in the symbol's own bars
    return [VolatilityScaledStopLoss(2.0, "atr"), PriceBasedTakeProfit(0.04), TimeBasedExit(6)]


CONFIGS = {
    "default": ExecutionConfig(),
    "close_fills": ExecutionConfig(fill="close", commission=PercentageCommission(0.001)),
    "shorts_partial_slippage": ExecutionConfig(
        allow_short=True,
        max_volume_participation=0.1,  # 40 shares at ≤ 0.1 × 50..400: partial fills carried
        # Corwin-Schultz over the last 4 pairs of completed bars: 5 bars carried
        slippage=SpreadAwareSlippage(0.5, window=4, min_periods=2),
        commission=PercentageCommission(0.001),
    ),
    "stops_first_close_at_end": ExecutionConfig(bar_event_order="stops_first", close_at_end=True),
    "volume_completed": ExecutionConfig(
        # impact from the mean volume of the last 3 completed bars: 3 bars carried
        slippage=VolumeAwareSlippage(coefficient=0.5, volume="completed", volume_window=3),
    ),
}
SPLITS = {
    "one_chunk": [],
    "three_chunks": [12, 31],
    "every_bar": list(range(1, 48)),
}


# ------------------------------------------------------------------------------ equality


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_chunked_run_random_panel_equals_whole_panel(split: str, config: str) -> None:
    panel = _random_panel(3)
    whole, _ = _compare(panel, SPLITS[split], rules=_rules, config=CONFIGS[config])
    assert whole.fills.height > 20  # the scenario trades
    assert whole.trades.height > 5


def _compiled_rules() -> list[Any]:
    # the built-in fixed-percent rules: the compiled per-bar kernels (engine.risk.kernels)
    return [PriceBasedStopLoss(0.03), DynamicTrailingStop(0.05), TimeBasedExit(6)]


@pytest.mark.filterwarnings("ignore:rules .* all set a stop-loss level:UserWarning")
@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("config", ["default", "stops_first_close_at_end"])
def test_chunked_run_with_compiled_rules_equals_whole_panel(split: str, config: str) -> None:
    assert RiskManager(_compiled_rules()).basic_kernel() is not None
    whole, _ = _compare(
        _random_panel(3), SPLITS[split], rules=_compiled_rules, config=CONFIGS[config]
    )
    reasons = set(whole.trades["exit_reason"].unique())
    assert {"DynamicTrailingStop", "TimeBasedExit"} <= reasons, reasons


def test_chunked_run_context_and_per_symbol_strategy_equal_whole_panel() -> None:
    panel = _random_panel(5)
    context = make_context({"vix": [10.0 + k for k in range(48)]})
    whole, chunked = _compare(
        panel, [7, 20, 21, 40], strategy=PerSymbol, rules=_rules, context=context
    )
    assert whole.portfolio_states["vix"].to_list() == [10.0 + k for k in range(48)]
    assert "entry_vix" in chunked.trades.columns


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 47), max_size=8),
    config=st.sampled_from(sorted(CONFIGS)),
    prefetch=st.booleans(),
)
def test_chunked_run_random_split_points_equal_whole_panel(
    seed: int, cuts: list[int], config: str, prefetch: bool
) -> None:
    # prefetch: each chunk read and checked ahead, its columns copied at the boundary
    _compare(
        _random_panel(seed, n_symbols=4),
        cuts,
        rules=_rules,
        config=CONFIGS[config],
        prefetch=prefetch,
    )


def _addresses(window: MarketData) -> set[int]:
    """Where the window's row arrays start in memory."""
    arrays = [window.sym_id, window.ordinal, window.prev_row, *window.columns.values()]
    arrays += [getattr(window, c) for c in ("open", "high", "low", "close", "volume")]
    return {int(a.__array_interface__["data"][0]) for a in arrays}


@pytest.mark.parametrize("keep_view", [False, True])
def test_chunked_next_window_reuses_released_arrays_only_when_unreferenced(
    keep_view: bool,
) -> None:
    panel = _random_panel(4, n_bars=12, n_symbols=2)
    source = ChunkedMarketData(_chunks(panel, [6]), symbols=["S0", "S1"], signal_columns=["sig"])
    stream = source.stream()
    first = stream.advance()
    assert first is not None
    close_at = int(first.close.__array_interface__["data"][0])
    view = first.close[:4] if keep_view else None  # e.g. a strategy keeping a column
    values = first.close[:4].copy()
    del first
    stream.release()
    second = stream.advance()
    assert second is not None
    assert (close_at in _addresses(second)) is not keep_view
    if view is not None:
        np.testing.assert_array_equal(view, values)  # untouched
    whole = MarketData.from_frame(panel, signal_columns=["sig"])
    assert second.close[second.first_row :].tolist() == whole.close[12:].tolist()
    assert second.ordinal[second.first_row :].tolist() == whole.ordinal[12:].tolist()


# ------------------------------------------------------------------------------ boundaries

# bar k = (open, high, low, close)
FLAT = [(100.0, 101.0, 99.0, 100.0)] * 6


def _script_pair(
    panel: pl.DataFrame,
    plan: dict[int, Callable[[Strategy], object]],
    cuts: Sequence[int],
    rules: Callable[[], list[Any]] | None = None,
) -> BacktestResult:
    """Run a :class:`Script` plan whole and chunked; assert equality; return the chunked run."""
    _, chunked = _compare(
        panel.with_columns(pl.lit(None, dtype=pl.Float64).alias("sig")),
        cuts,
        strategy=lambda: Script(plan),
        rules=rules,
        indicators=(),
    )
    return chunked


def test_chunked_order_submitted_before_boundary_fills_at_next_chunks_open() -> None:
    bars = [(10, 11, 9, 10), (10, 11, 9, 10.5), (12, 13, 11, 12.5), (12, 13, 11, 12)]
    result = _script_pair(make_panel({"AAA": bars}), {1: lambda s: s.buy("AAA", 100)}, cuts=[2])
    # decided at bar 1 (last bar of chunk 1), filled at bar 2's open (first bar of chunk 2)
    assert result.fills["timestamp"].to_list() == [ts(2)]
    assert result.fills["price"].to_list() == [12.0]
    states = result.portfolio_states
    assert states["equity"].to_list() == [1e6, 1e6, 1e6 - 1200 + 1250, 1e6 - 1200 + 1200]


def test_chunked_stop_level_set_before_boundary_fires_in_next_chunk() -> None:
    # entry decided at bar 0, filled at bar 1's open (100): 5 % stop = 95, set on the fill at
    # bar 1 (the last bar of chunk 1), active from bar 2 whose low (94) crosses it → exit at 95
    bars = [
        (100.0, 101.0, 99.0, 100.0),
        (100.0, 102.0, 99.0, 101.0),
        (99.0, 100.0, 94.0, 96.0),
        (96.0, 97.0, 95.0, 96.0),
    ]
    result = _script_pair(
        make_panel({"AAA": bars}),
        {0: lambda s: s.buy("AAA", 10)},
        cuts=[2],
        rules=lambda: [PriceBasedStopLoss(0.05)],
    )
    trade = result.trades.row(0, named=True)
    assert trade["exit_reason"] == "PriceBasedStopLoss"
    assert trade["exit_price"] == 95.0
    assert trade["exit_timestamp"] == ts(2)
    assert trade["stop_loss_at_exit"] == 95.0
    assert trade["bars_held"] == 1
    # worst price carried across the boundary: bar 1's low 99, then the exit price 95
    assert trade["mae"] == pytest.approx((95.0 - 100.0) * 10)


def test_chunked_symbol_missing_bars_across_boundary_fills_at_its_next_bar() -> None:
    # BBB has no bars at k = 2, 3; chunk 2 is k = 2..3 (no BBB rows at all). The sell decided
    # at bar 1 waits for BBB's next bar (k = 4, chunk 3) and fills at its open; meanwhile BBB
    # is marked at its last close (bar 1) and its bar count continues (bars_held = 1)
    bbb = [(50.0, 51.0, 49.0, 50.0), (50.0, 52.0, 49.0, 51.0), None, None, (55.0, 56, 54, 55)]
    panel = make_panel({"AAA": FLAT[:5], "BBB": bbb})
    result = _script_pair(
        panel,
        {0: lambda s: s.buy("BBB", 10), 1: lambda s: s.sell("BBB", 10)},
        cuts=[2, 4],
    )
    fills = result.fills
    assert fills["timestamp"].to_list() == [ts(1), ts(4)]
    assert fills["price"].to_list() == [50.0, 55.0]
    trade = result.trades.row(0, named=True)
    assert trade["bars_held"] == 1
    assert trade["pnl_gross"] == pytest.approx(50.0)
    assert result.portfolio_states["positions_value"].to_list() == [0.0, 510.0, 510, 510, 0.0]


def test_chunked_trailing_stop_ratchets_across_boundaries() -> None:
    # sell trailing stop 2.0 below the best high, submitted at bar 0 (mark 100 → stop 98);
    # highs 103, 105 ratchet it to 101 then 103 across two boundaries; bar 3's low 102 hits 103
    bars = [
        (100.0, 100.5, 99.5, 100.0),
        (101.0, 103.0, 100.5, 102.0),
        (104.0, 105.0, 103.5, 104.0),
        (104.0, 104.5, 102.0, 103.0),
    ]
    plan: dict[int, Callable[[Strategy], object]] = {
        0: lambda s: (s.buy("AAA", 10), s.sell("AAA", 10, trail_amount=2.0)),
    }
    result = _script_pair(make_panel({"AAA": bars}), plan, cuts=[1, 2, 3])
    sells = result.fills.filter(pl.col("side") == "sell")
    assert sells["timestamp"].to_list() == [ts(3)]
    assert sells["price"].to_list() == [103.0]


# ------------------------------------------------------------------------------ laziness


def test_chunked_frames_are_pulled_one_chunk_at_a_time() -> None:
    panel = _random_panel(1, n_bars=12, n_symbols=2)
    chunks = _chunks(panel, [4, 8])
    pulled: list[int] = []

    def frames() -> Iterator[pl.DataFrame]:
        for chunk in chunks:
            pulled.append(1)
            yield chunk

    seen: list[int] = []

    class Probe(Strategy):
        def on_timestamp_batch(
            self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
        ) -> None:
            seen.append(len(pulled))

    data = ChunkedMarketData(frames(), symbols=["S0", "S1"], signal_columns=["sig"])
    result = BacktestEngine(data, Probe()).run()
    assert seen == [1] * 4 + [2] * 4 + [3] * 4
    assert result.n_bar_events == panel.height
    with pytest.raises(RuntimeError, match="one-shot iterator"):
        BacktestEngine(data, Probe()).run()
    # prefetch: the next chunk is read while the current one runs, never more than one ahead
    pulled.clear()
    seen.clear()
    ahead = ChunkedMarketData(frames(), ["S0", "S1"], signal_columns=["sig"], prefetch=True)
    prefetched = BacktestEngine(ahead, Probe()).run()
    assert set(seen[:4]) <= {1, 2} and set(seen[4:8]) <= {2, 3} and seen[8:] == [3] * 4
    assert prefetched.fills.equals(result.fills)
    assert prefetched.portfolio_states.equals(result.portfolio_states)


def test_chunked_prefetch_reads_the_first_chunk_in_the_background_too() -> None:
    # with prefetch the first chunk is pulled by the read-ahead thread (the engine's thread
    # meanwhile starts numba), every later one as before; the run equals one without prefetch
    panel = _random_panel(2, n_bars=12, n_symbols=2)
    chunks = _chunks(panel, [4, 8])
    pulled_by: list[str] = []

    def frames() -> Iterator[pl.DataFrame]:
        for chunk in chunks:
            pulled_by.append(threading.current_thread().name)
            yield chunk

    ahead = ChunkedMarketData(frames(), ["S0", "S1"], signal_columns=["sig"], prefetch=True)
    prefetched = BacktestEngine(ahead, Idle()).run()
    assert pulled_by == ["ml4t-chunk-prefetch"] * 3
    plain = BacktestEngine(
        ChunkedMarketData(chunks, ["S0", "S1"], signal_columns=["sig"]), Idle()
    ).run()
    assert prefetched.portfolio_states.equals(plain.portfolio_states)


def test_chunked_prefetch_first_window_row_arrays_made_in_the_read_ahead_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # with prefetch the first window's row arrays are made (and their pages mapped) by the
    # read-ahead thread while the engine's thread starts numba; the window equals the one
    # built without prefetch
    panel = _random_panel(3, n_bars=12, n_symbols=3)
    chunks = _chunks(panel, [6])
    made: dict[int, str] = {}
    fresh = chunked_module._fresh

    def recording_fresh(n: int, dtype: type) -> np.ndarray:
        values = fresh(n, dtype)
        made[id(values)] = threading.current_thread().name
        return values

    monkeypatch.setattr(chunked_module, "_fresh", recording_fresh)
    ahead = ChunkedMarketData(chunks, ["S0", "S1", "S2"], ["sig"], prefetch=True).stream()
    window = ahead.advance()
    plain = ChunkedMarketData(chunks, ["S0", "S1", "S2"], ["sig"]).stream().advance()
    assert window is not None and plain is not None
    names = ("sym_id", "ordinal", "prev_row", "open", "high", "low", "close", "volume")
    arrays = [getattr(window, name) for name in names] + [window.columns["sig"]]
    assert [made.get(id(values.base)) for values in arrays] == ["ml4t-chunk-prefetch"] * 9
    for name in names:
        np.testing.assert_array_equal(getattr(window, name), getattr(plain, name))
    np.testing.assert_array_equal(window.columns["sig"], plain.columns["sig"])


def test_chunked_prefetch_bad_first_chunk_raises_where_it_is_taken() -> None:
    panel = _random_panel(1, n_bars=8, n_symbols=2)
    first, second = _chunks(panel, [4])
    bad: list[object] = ["not a frame", second]
    data = ChunkedMarketData(
        iter(bad),  # type: ignore[arg-type]
        symbols=["S0", "S1"],
        signal_columns=["sig"],
        prefetch=True,
    )
    with pytest.raises(ValueError, match="chunk 1 must be a polars DataFrame"):
        BacktestEngine(data, Idle()).run()
    renamed = first.with_columns(pl.col("symbol").replace("S1", "ZZZ"))
    outside = ChunkedMarketData([renamed, second], ["S0", "S1"], ["sig"], prefetch=True)
    with pytest.raises(ValueError, match="chunk 1 has .* outside the symbol universe.*ZZZ"):
        BacktestEngine(outside, Idle()).run()


def test_chunked_list_of_frames_runs_twice_with_equal_results() -> None:
    panel = _random_panel(2)
    data = ChunkedMarketData(
        _chunks(panel, [10, 30]),
        symbols=[f"S{k}" for k in range(5)],
        signal_columns=["sig"],
        indicator_columns=["atr"],
    )
    first = BacktestEngine(data, Mixed(), RiskManager(_rules())).run()
    second = BacktestEngine(data, Mixed(), RiskManager(_rules())).run()
    _assert_same(first, second)


def test_chunked_universe_symbol_without_bars_changes_nothing() -> None:
    panel = _random_panel(4)
    whole = BacktestEngine(
        MarketData.from_frame(panel, signal_columns=["sig"], indicator_columns=["atr"]), Mixed()
    ).run()
    chunked = BacktestEngine(
        ChunkedMarketData(
            [pl.DataFrame(schema=panel.schema), *_chunks(panel, [20])],  # an empty chunk too
            symbols=[*(f"S{k}" for k in range(5)), "ZZZ"],
            signal_columns=["sig"],
            indicator_columns=["atr"],
        ),
        Mixed(),
    ).run()
    _assert_same(whole, chunked)


# ------------------------------------------------------------------------------ bad input


def _bars(ks: Sequence[int], sym: str = "AAA") -> pl.DataFrame:
    panel = make_panel({sym: FLAT[: max(ks) + 1]})
    return panel.filter(pl.col("timestamp").is_in([ts(k) for k in ks]))


class Idle(Strategy):
    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        pass


def test_chunked_overlapping_chunks_raise_naming_timestamps() -> None:
    data = ChunkedMarketData([_bars([0, 1, 2]), _bars([2, 3])], symbols=["AAA"])
    with pytest.raises(ValueError, match=r"chunk 2 starts at .*not after the previous chunk"):
        BacktestEngine(data, Idle()).run()


def test_chunked_symbol_outside_universe_raises_naming_it() -> None:
    data = ChunkedMarketData([_bars([0, 1]), _bars([2], sym="NEW")], symbols=["AAA"])
    with pytest.raises(ValueError, match=r"chunk 2 has 1 rows of 1 symbols outside.*'NEW'"):
        BacktestEngine(data, Idle()).run()


def test_chunked_bad_prices_raise_naming_chunk() -> None:
    bad = _bars([2, 3]).with_columns(pl.lit(None, dtype=pl.Float64).alias("close"))
    data = ChunkedMarketData([_bars([0, 1]), bad], symbols=["AAA"])
    with pytest.raises(ValueError, match="chunk 2 has 2 rows with null or non-finite"):
        BacktestEngine(data, Idle()).run()


def test_chunked_quote_columns_must_match_across_chunks() -> None:
    quoted = _bars([2]).with_columns(pl.lit(99.0).alias("bid"), pl.lit(101.0).alias("ask"))
    data = ChunkedMarketData([_bars([0, 1]), quoted], symbols=["AAA"])
    with pytest.raises(ValueError, match="bid/ask must be in every chunk or in none"):
        BacktestEngine(data, Idle()).run()


@pytest.mark.parametrize(
    ("frames", "symbols", "message"),
    [
        ([], ["AAA"], "no bars: every chunk is empty"),
        ([_bars([0])], [], "symbols is empty"),
        ([_bars([0])], ["AAA", "AAA"], r"lists 1 names twice: \['AAA'\]"),
        ([_bars([0]), "not a frame"], ["AAA"], "chunk 2 must be a polars DataFrame, got str"),
    ],
)
def test_chunked_bad_setup_raises(frames: list[Any], symbols: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BacktestEngine(ChunkedMarketData(frames, symbols=symbols), Idle()).run()


def test_chunked_window_carries_last_two_bars_and_counts_bars() -> None:
    panel = make_panel({"AAA": FLAT[:5], "BBB": [FLAT[0], FLAT[0], None, None, FLAT[0]]})
    source = ChunkedMarketData(_chunks(panel, [3]), symbols=["AAA", "BBB"])
    stream = source.stream()
    first = stream.advance()
    assert first is not None and first.first_row == 0 and first.n_bar_events == 5
    # rows of chunk 1: AAA@0, BBB@0, AAA@1, BBB@1, AAA@2; keep AAA@0 (e.g. a decision bar)
    remap = stream.release(np.array([0]))
    assert remap.tolist() == [0, 1, 2, 3, 4]
    remap = stream.release()  # again on the carried rows alone: AAA@0 is no longer needed
    assert remap.tolist() == [-1, 0, 1, 2, 3]
    second = stream.advance()
    assert second is not None
    # carried: AAA bars 1, 2 and BBB bars 0, 1 (its last two), listed under their timestamps
    assert second.first_index == 3 and second.first_row == 4
    assert second.n_bar_events == 3
    # rows: BBB@0, AAA@1, BBB@1, AAA@2 | AAA@3, AAA@4, BBB@4
    assert second.offsets.tolist() == [0, 1, 3, 4, 5, 7]
    assert second.sym_id.tolist() == [1, 0, 1, 0, 0, 0, 1]
    assert second.ordinal.tolist() == [0, 1, 1, 2, 3, 4, 2]
    assert second.prev_row.tolist() == [-1, -1, 0, 1, 3, 4, 2]
    assert second.last_rows.tolist() == [5, 6]
    assert second.timestamps.size == 5 and len(second.datetimes) == 5
    stream.release()
    assert stream.advance() is None


def test_chunked_fill_objects_and_on_fill_match_whole_panel() -> None:
    panel = _random_panel(8)
    seen: dict[str, list[tuple[object, ...]]] = {}

    def runner(data: MarketData | ChunkedMarketData, key: str) -> None:
        class Recording(Mixed):
            def on_fill(self, fill: Fill) -> None:
                seen.setdefault(key, []).append(tuple(getattr(fill, f) for f in Fill.__slots__))

        BacktestEngine(data, Recording(), RiskManager(_rules())).run()

    runner(MarketData.from_frame(panel, signal_columns=["sig"], indicator_columns=["atr"]), "a")
    runner(
        ChunkedMarketData(
            _chunks(panel, [5, 6, 25]),
            symbols=[f"S{k}" for k in range(5)],
            signal_columns=["sig"],
            indicator_columns=["atr"],
        ),
        "b",
    )
    assert seen["a"] == seen["b"] and len(seen["a"]) > 10


def test_chunked_prefetch_bad_chunk_raises_where_it_is_taken() -> None:
    panel = _random_panel(1, n_bars=8, n_symbols=2)
    chunks: list[object] = [*_chunks(panel, [4]), "not a frame"]
    data = ChunkedMarketData(
        iter(chunks),  # type: ignore[arg-type]
        symbols=["S0", "S1"],
        signal_columns=["sig"],
        prefetch=True,
    )
    with pytest.raises(ValueError, match="chunk 3 must be a polars DataFrame"):
        BacktestEngine(data, Idle()).run()


def test_chunked_prefetch_chunk_outside_universe_raises_naming_it() -> None:
    panel = _random_panel(1, n_bars=8, n_symbols=2)
    first, second = _chunks(panel, [4])
    renamed = second.with_columns(pl.lit("ZZZ").alias("symbol"))
    data = ChunkedMarketData(
        [first, renamed], symbols=["S0", "S1"], signal_columns=["sig"], prefetch=True
    )
    with pytest.raises(ValueError, match=r"chunk 2 has \d+ rows of 1 symbols outside"):
        BacktestEngine(data, Idle()).run()


def test_chunked_between_keeps_history_bars_and_prefetch() -> None:
    panel = _random_panel(1, n_bars=8, n_symbols=2)
    data = ChunkedMarketData(
        _chunks(panel, [4]), symbols=["S0", "S1"], history_bars=5, prefetch=True
    )
    window = data.between(date(2000, 1, 1), date(2100, 1, 1))
    assert (window.history_bars, window.prefetch) == (5, True)


def test_chunked_boundary_index_lists_extend_the_last_windows_lists_only_on_equal_prefix() -> None:
    # the broker's per-bar lists at a chunk boundary: the same array gives the same list,
    # an array starting with all of the last one's values extends its list (which stays as
    # it was), any other array is converted whole
    from engine.broker.state import _int_list

    last = np.array([0, 3, 5], dtype=np.int64)
    listed = last.tolist()
    assert _int_list(last, (last, listed)) is listed
    longer = np.array([0, 3, 5, 9, 12], dtype=np.int64)
    extended = _int_list(longer, (last, listed))
    assert extended == [0, 3, 5, 9, 12]
    assert listed == [0, 3, 5]
    changed = np.array([0, 4, 5, 9], dtype=np.int64)
    assert _int_list(changed, (last, listed)) == [0, 4, 5, 9]
    shorter = np.array([0, 3], dtype=np.int64)
    assert _int_list(shorter, (last, listed)) == [0, 3]
    assert _int_list(longer, None) == [0, 3, 5, 9, 12]
