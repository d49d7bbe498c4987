"""What each slippage model may read at a fill (issue 24, item 1): no look-ahead.

A fill at bar t's open (or inside bar t) may read t's open and the bars completed before it;
bar t's high, low, close, volume, quote and indicator values are known only at its close.
The one stated exception is ``VolumeAwareSlippage``'s default, the fill bar's volume (the
zipline/LEAN convention).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine import (
    BacktestEngine,
    ChunkedMarketData,
    ExecutionConfig,
    FixedBpsSlippage,
    FixedPercentageSlippage,
    MarketData,
    NoSlippage,
    OrderTypeDependentSlippage,
    PerShareCommission,
    SlippageModel,
    SpreadAwareSlippage,
    VolumeAwareSlippage,
    build_slippage,
)
from engine.costs.slippage import corwin_schultz_estimates, corwin_schultz_spread
from engine.data import BarView
from tests.engine.helpers import Script, make_panel, run, ts

N_BARS = 30  # more than the default window (20 pairs = 21 bars) before the fill bar
FILL = N_BARS - 1  # the fill bar: the last bar of AAA


def _walk(seed: int, n: int = N_BARS, quotes: bool = False) -> pl.DataFrame:
    """Daily bars of AAA and BBB (a random walk with gaps between close and next open)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for s, sym in enumerate(("AAA", "BBB")):
        close = 50.0 + 20 * s
        for k in range(n):
            o = close * float(np.exp(rng.normal(0, 0.01)))
            c = o * float(np.exp(rng.normal(0, 0.015)))
            h = max(o, c) * (1 + abs(float(rng.normal(0, 0.006))))
            lo = min(o, c) * (1 - abs(float(rng.normal(0, 0.006))))
            close = c
            row = {
                "timestamp": ts(k),
                "symbol": sym,
                "open": o,
                "high": h,
                "low": lo,
                "close": c,
                "volume": float(rng.integers(10_000, 50_000)),
                "vol_20": 0.01 + 0.01 * float(rng.random()),
            }
            if quotes:
                half = c * 0.0005 * (1 + float(rng.random()))
                row |= {"bid": c - half, "ask": c + half}
            rows.append(row)
    frame = pl.DataFrame(rows)
    return frame.with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))


PERTURBATIONS: dict[str, pl.Expr] = {
    # every value of the fill bar that is known only at its close; the open stays inside
    "high": pl.col("high") * 1.3,
    "low": pl.col("low") * 0.7,
    "close": pl.col("low") * 0.7 + 0.01,
    "volume": pl.col("volume") * 50,
    "vol_20": pl.col("vol_20") * 9,
    "bid": pl.col("bid") * 0.9,
    "ask": pl.col("ask") * 1.1,
}


def _perturb(panel: pl.DataFrame, field: str) -> pl.DataFrame:
    at_fill = (pl.col("symbol") == "AAA") & (pl.col("timestamp") == ts(FILL))
    expr = PERTURBATIONS[field]
    if field == "close":  # a close below the old low needs the low moved too
        return panel.with_columns(
            pl.when(at_fill).then(pl.col("low") * 0.7).otherwise(pl.col("low")).alias("low"),
            pl.when(at_fill).then(expr).otherwise(pl.col("close")).alias("close"),
        )
    return panel.with_columns(pl.when(at_fill).then(expr).otherwise(pl.col(field)).alias(field))


def _fill_bar(panel: pl.DataFrame, at_close: bool = False) -> BarView:
    data = MarketData.from_frame(panel, indicator_columns=["vol_20"])
    row = data.row_of(FILL, data.resolve("AAA"))
    return BarView(data, row, at_close=at_close)


def _open_price(model: SlippageModel, panel: pl.DataFrame, quantity: float) -> float:
    bar = _fill_bar(panel)
    return model.fill_price(bar.open, quantity, bar, "market")


MODELS: dict[str, tuple[Callable[[], SlippageModel], bool]] = {
    # name: (factory, panel with quotes)
    "NoSlippage": (NoSlippage, False),
    "FixedPercentage": (lambda: FixedPercentageSlippage(0.001), False),
    "FixedBps": (lambda: FixedBpsSlippage(5), False),
    "SpreadAware_estimate": (lambda: SpreadAwareSlippage(0.5), False),
    "SpreadAware_quotes": (lambda: SpreadAwareSlippage(0.5), True),
    "VolumeAware_completed_volume": (
        lambda: VolumeAwareSlippage(0.5, "vol_20", volume="completed", volume_window=5),
        False,
    ),
    "OrderTypeDependent": (
        lambda: OrderTypeDependentSlippage(
            {"market": SpreadAwareSlippage(0.5)}, default=VolumeAwareSlippage()
        ),
        False,
    ),
}


CASES = [
    (name, field)
    for name, (_, quotes) in sorted(MODELS.items())
    for field in sorted(PERTURBATIONS)
    if quotes or field not in ("bid", "ask")
]


@pytest.mark.parametrize(("name", "field"), CASES)
@pytest.mark.parametrize("quantity", [300.0, -300.0])
def test_slippage_open_fill_perturbed_fill_bar_price_unchanged(
    name: str, field: str, quantity: float
) -> None:
    factory, quotes = MODELS[name]
    panel = _walk(7, quotes=quotes)
    model = factory()
    before = _open_price(model, panel, quantity)
    after = _open_price(model, _perturb(panel, field), quantity)
    assert after == before
    if name.startswith(("SpreadAware", "VolumeAware", "Fixed")):
        assert (before - _fill_bar(panel).open) * quantity > 0  # the model did charge


@pytest.mark.parametrize("field", ["high", "low", "close", "vol_20"])
@pytest.mark.parametrize("column", [None, "vol_20"])
def test_volume_aware_default_open_fill_reads_only_the_fill_bars_volume(
    field: str, column: str | None
) -> None:
    panel = _walk(7)
    model = VolumeAwareSlippage(0.5, column)
    before = _open_price(model, panel, 300.0)
    assert _open_price(model, _perturb(panel, field), 300.0) == before
    # the stated convention (zipline, LEAN): the fill bar's total volume sizes the impact
    assert _open_price(model, _perturb(panel, "volume"), 300.0) < before


@pytest.mark.parametrize(
    "factory",
    [
        lambda: SpreadAwareSlippage(0.5),
        lambda: VolumeAwareSlippage(1.0, "vol_20", volume="completed", volume_window=3),
    ],
    ids=["spread_estimate", "volume_completed"],
)
@pytest.mark.parametrize("field", ["high", "low", "close", "volume", "vol_20"])
def test_engine_open_fill_perturbed_fill_bar_same_fill_price(
    factory: Callable[[], SlippageModel], field: str
) -> None:
    """Through the broker: a buy decided at bar FILL-1 fills at FILL's open."""
    slippage = factory()

    def fills(panel: pl.DataFrame) -> pl.DataFrame:
        result = run(
            panel,
            {FILL - 1: lambda s: s.buy("AAA", 100)},
            indicator_columns=["vol_20"],
            slippage=slippage,
            commission=PerShareCommission(0.005),
        )
        return result.fills.select("price_before_slippage", "price", "slippage", "commission")

    panel = _walk(11)
    before = fills(panel)
    assert before.height == 1 and before["slippage"][0] > 0
    assert fills(_perturb(panel, field)).equals(before)


def test_engine_open_fill_perturbed_fill_bar_quote_same_fill_price() -> None:
    panel = _walk(11, quotes=True)

    def price(frame: pl.DataFrame) -> float:
        result = run(
            frame, {FILL - 1: lambda s: s.buy("AAA", 100)}, slippage=SpreadAwareSlippage(0.5)
        )
        return float(result.fills["price"][0])

    before = price(panel)
    assert price(_perturb(_perturb(panel, "bid"), "ask")) == before


# ------------------------------------------------------------------ quotes


def _quoted(bid: list[float], ask: list[float]) -> pl.DataFrame:
    bars = {"AAA": [(100, 101, 99, 100)] * len(bid)}
    return make_panel(bars).with_columns(pl.Series("bid", bid), pl.Series("ask", ask))


def test_spread_aware_open_fill_uses_the_previous_bars_close_quote() -> None:
    # bar 0 quoted 99.9 / 100.1 at its close; bar 1's own quote (90 / 110) is stamped at
    # bar 1's close, after its open: the open fill pays half of 0.2
    data = MarketData.from_frame(_quoted([99.9, 90.0], [100.1, 110.0]))
    model = SpreadAwareSlippage(0.5)
    assert model.fill_price(100.0, 10, BarView(data, 1), "market") == pytest.approx(100.1)
    assert model.fill_price(100.0, -10, BarView(data, 1), "market") == pytest.approx(99.9)
    # a fill at bar 1's close knows bar 1's quote: half of 20
    at_close = BarView(data, 1, at_close=True)
    assert model.fill_price(100.0, 10, at_close, "market") == pytest.approx(110.0)


def test_spread_aware_first_bar_has_no_earlier_quote_uses_fallback() -> None:
    data = MarketData.from_frame(_quoted([99.0, 99.0], [101.0, 101.0]))
    model = SpreadAwareSlippage(0.5, fallback_pct=0.001)
    assert model.fill_price(100.0, 10, BarView(data, 0), "market") == pytest.approx(100.1)


# ------------------------------------------------------------------ Corwin-Schultz


def test_corwin_schultz_overnight_gap_up_shifts_second_day_hand_checked() -> None:
    # day 1: high 102, low 100, close 101; day 2: high 103, low 102, entirely above the close.
    # The paper takes the price to have risen overnight from 101 to 102 and lowers day 2 by 1:
    # (102, 101). beta = ln(102/100)^2 + ln(102/101)^2 = 0.00039214 + 0.00009707 = 0.00048921,
    # gamma = ln(102/100)^2 = 0.00039214,
    # alpha = (sqrt(2 beta) - sqrt(beta)) / (3 - 2 sqrt 2) - sqrt(gamma / (3 - 2 sqrt 2))
    #       = (0.031280 - 0.022118) / 0.171573 - 0.047808 = 0.053398 - 0.047808 = 0.0055901,
    # S = 2 (e^alpha - 1) / (1 + e^alpha) = 0.0055901 (56 bp)
    assert corwin_schultz_spread(103, 102, 102, 100, prev_close=101) == pytest.approx(
        0.0055901, abs=5e-8
    )
    # unadjusted, the gap reads as volatility: alpha = -0.018066 < 0, set to 0
    assert corwin_schultz_spread(103, 102, 102, 100) == 0.0


def test_corwin_schultz_overnight_gap_down_raises_second_day() -> None:
    # day 2 (100, 99) entirely below the close 101: raised by 1 to (101, 100)
    shifted = corwin_schultz_spread(101, 100, 102, 100, prev_close=101)
    assert corwin_schultz_spread(100, 99, 102, 100, prev_close=101) == shifted


def test_corwin_schultz_invalid_bar_is_nan() -> None:
    assert math.isnan(corwin_schultz_spread(1.0, 0.0, 1.0, 1.0))
    assert math.isnan(corwin_schultz_spread(0.9, 1.0, 1.1, 1.0))  # high < low


THREE_BARS = {
    "AAA": [
        (100.0, 101.0, 99.0, 100.0),  # bar 0
        (100.5, 102.0, 100.0, 101.0),  # bar 1: range holds bar 0's close, no adjustment
        (102.5, 103.0, 102.0, 102.5),  # bar 2: gaps up over bar 1's close 101
        (102.5, 104.0, 101.0, 103.0),  # bar 3: the fill bar (open 102.5)
    ]
}


def test_spread_aware_three_bars_window_two_hand_checked() -> None:
    # pair (bar 0, bar 1): beta = ln(101/99)^2 + ln(102/100)^2 = 0.00040003 + 0.00039214
    #   = 0.00079217, gamma = ln(102/99)^2 = 0.00089120,
    #   alpha = (0.039804 - 0.028146) / 0.171573 - sqrt(0.00089120 / 0.171573)
    #   = 0.067949 - 0.072071 = -0.0041221 → S < 0, set to 0
    # pair (bar 1, bar 2): bar 2 (103, 102) lies above bar 1's close 101 → (102, 101):
    #   S = 0.00559011 (see the gap-up test above)
    # window 2: S = (0 + 0.00559011) / 2 = 0.002795055 (clamping the mean instead would give
    # max((-0.0041221 + 0.0055901) / 2, 0) = 0.000734)
    data = MarketData.from_frame(make_panel(THREE_BARS))
    model = SpreadAwareSlippage(0.5, window=2, min_periods=2)
    fill_bar = BarView(data, 3)
    assert model.estimate(fill_bar) == pytest.approx(0.002795055, abs=1e-9)
    buy = model.fill_price(102.5, 10, fill_bar, "market")
    assert buy == pytest.approx(102.5 * (1 + 0.5 * 0.002795055), abs=1e-7)
    assert model.fill_price(102.5, -10, fill_bar, "market") == pytest.approx(102.5 * 2 - buy)


def test_spread_aware_clamp_mean_averages_signed_estimates_hand_checked() -> None:
    # the same two pairs, signed: (-0.00412211 + 0.00559011) / 2 = 0.00073400 (>= 0, kept)
    data = MarketData.from_frame(make_panel(THREE_BARS))
    model = SpreadAwareSlippage(0.5, window=2, clamp="mean")
    assert model.estimate(BarView(data, 3)) == pytest.approx(0.00073400, abs=1e-8)
    # the first pair alone is negative: its mean is set to 0
    alone = SpreadAwareSlippage(0.5, window=1, clamp="mean")
    assert alone.estimate(BarView(data, 2)) == 0.0


def test_spread_aware_negative_estimates_clamp_to_zero_not_below() -> None:
    # only the pair (bar 0, bar 1), whose estimate is -0.0041 → 0: the fill pays nothing
    data = MarketData.from_frame(make_panel({"AAA": THREE_BARS["AAA"][:3]}))
    model = SpreadAwareSlippage(0.5, window=1)
    assert model.estimate(BarView(data, 2)) == 0.0
    assert model.fill_price(102.5, 10, BarView(data, 2), "market") == 102.5
    assert model.fill_price(102.5, -10, BarView(data, 2), "market") == 102.5


def test_spread_aware_fewer_pairs_than_min_periods_uses_fallback() -> None:
    data = MarketData.from_frame(make_panel(THREE_BARS))
    model = SpreadAwareSlippage(0.5, fallback_pct=0.002, window=3)  # needs 3 pairs
    assert math.isnan(model.estimate(BarView(data, 3)))  # bars 0..2: 2 pairs
    assert model.fill_price(100.0, 10, BarView(data, 3), "market") == pytest.approx(100.2)


def test_spread_aware_fill_at_close_reads_its_own_bar() -> None:
    data = MarketData.from_frame(make_panel(THREE_BARS))
    model = SpreadAwareSlippage(0.5, window=2)
    # at bar 2's close the pairs ending at bar 2 are complete: the hand-checked 0.002795055
    at_close = BarView(data, 2, at_close=True)
    assert model.estimate(at_close) == pytest.approx(0.002795055, abs=1e-9)
    assert math.isnan(model.estimate(BarView(data, 2)))  # at its open: one pair only


def _reference_rolling(panel: pl.DataFrame, window: int, min_periods: int) -> dict[Any, float]:
    """Per (timestamp, symbol): mean of the clamped two-day estimates over the last
    ``window`` pairs up to and including that bar, straight from the scalar formula."""
    out: dict[Any, float] = {}
    for (sym,), bars in panel.sort("timestamp").group_by("symbol", maintain_order=True):
        rows = bars.select("timestamp", "high", "low", "close").rows()
        pairs: list[float] = [math.nan]
        for k in range(1, len(rows)):
            (_, h1, l1, c1), (_, h2, l2, _) = rows[k - 1], rows[k]
            pairs.append(corwin_schultz_spread(h2, l2, h1, l1, prev_close=c1))
        for k, (t, *_rest) in enumerate(rows):
            last = [p for p in pairs[max(0, k - window + 1) : k + 1] if math.isfinite(p)]
            out[(t, sym)] = sum(last) / len(last) if len(last) >= min_periods else math.nan
    return out


@pytest.mark.parametrize(("window", "min_periods"), [(1, 1), (5, 5), (20, 20), (20, 3)])
def test_spread_aware_rolling_mean_matches_per_symbol_reference(
    window: int, min_periods: int
) -> None:
    panel = _walk(3, n=60).filter(
        ~((pl.col("symbol") == "BBB") & pl.col("timestamp").is_in([ts(4), ts(5), ts(33)]))
    )
    data = MarketData.from_frame(panel)
    model = SpreadAwareSlippage(0.5, window=window, min_periods=min_periods)
    expected = _reference_rolling(panel, window, min_periods)
    times = data.datetimes
    checked = 0
    for index in range(data.n_timestamps):
        for row in range(int(data.offsets[index]), int(data.offsets[index + 1])):
            got = model.estimate(BarView(data, row, at_close=True))
            want = expected[(times[index], str(data.symbols[data.sym_id[row]]))]
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-15)
            checked += math.isfinite(want)
    assert checked >= 2 * (60 - window) - 3


def test_corwin_schultz_estimates_first_bar_is_nan() -> None:
    data = MarketData.from_frame(make_panel(THREE_BARS))
    pairs = corwin_schultz_estimates(data.high, data.low, data.close, data.prev_row)
    assert math.isnan(pairs[0]) and pairs[1] == 0.0
    assert pairs[2] == pytest.approx(0.0055901, abs=5e-8)


def test_bar_view_derived_is_computed_once_per_market_data() -> None:
    data = MarketData.from_frame(make_panel(THREE_BARS))
    calls: list[int] = []

    def compute(d: MarketData) -> int:
        calls.append(1)
        return d.n_rows

    assert BarView(data, 1).derived("rows", compute) == 4
    assert BarView(data, 3).derived("rows", compute) == 4
    assert calls == [1]


# ------------------------------------------------------------------ volume


VOLUME_BARS = {"AAA": [(100, 102, 98, 100), (100, 101, 99, 100), (100, 101, 99, 100)] * 2}


def _volumes(volumes: list[float], **extra: list[float]) -> MarketData:
    panel = make_panel(VOLUME_BARS).with_columns(pl.Series("volume", volumes))
    for name, values in extra.items():
        panel = panel.with_columns(pl.Series(name, values))
    return MarketData.from_frame(panel, indicator_columns=list(extra))


def test_volume_aware_sigma_from_the_previous_bar_volume_from_the_fill_bar() -> None:
    data = _volumes([1e4] * 6, vol=[0.02, 0.5, 0.5, 0.5, 0.5, 0.5])
    # fill at bar 1's open: sigma = bar 0's vol 0.02 (bar 1's 0.5 is known at its close),
    # volume = bar 1's 10,000; impact = 1 × 0.02 × sqrt(2500 / 10000) = 0.01
    model = VolumeAwareSlippage(1.0, "vol")
    assert model.fill_price(100.0, 2500, BarView(data, 1), "market") == pytest.approx(101.0)
    assert model.fill_price(100.0, -2500, BarView(data, 1), "market") == pytest.approx(99.0)
    # without a column: bar 0's range (102 - 98) / 100 = 0.04 → impact 0.02
    assert VolumeAwareSlippage().fill_price(100.0, 2500, BarView(data, 1), "market") == (
        pytest.approx(102.0)
    )
    # a symbol's first bar has no completed bar: max_impact
    first = BarView(data, 0)
    assert VolumeAwareSlippage(max_impact=0.05).fill_price(100.0, 1, first, "market") == 105.0
    completed = VolumeAwareSlippage(max_impact=0.05, volume="completed", volume_window=3)
    assert completed.fill_price(100.0, -1, first, "market") == 95.0


def test_volume_aware_completed_volume_previous_bar_and_average() -> None:
    data = _volumes([400.0, 1600.0, 900.0, 2500.0, 100.0, 1e9])
    fill = BarView(data, 5)  # bar 5's own volume (1e9) is unknown at its open
    # previous bar: bar 4's 100 shares; sigma = bar 4's range (101 - 99) / 100 = 0.02
    # impact = 1 × 0.02 × sqrt(25 / 100) = 0.01
    prev = VolumeAwareSlippage(volume="completed")
    assert prev.fill_price(100.0, 25, fill, "market") == pytest.approx(101.0)
    # mean of bars 2..4 = (900 + 2500 + 100) / 3 = 1166.67; impact = 0.02 × sqrt(25 / 1166.67)
    avg = VolumeAwareSlippage(volume="completed", volume_window=3)
    impact = 0.02 * math.sqrt(25 / ((900 + 2500 + 100) / 3))
    assert avg.fill_price(100.0, 25, fill, "market") == pytest.approx(100.0 * (1 + impact))
    # bar 2 has only two completed bars (400, 1600): their mean 1000; sigma = bar 1's range
    # (101 - 99) / 100 = 0.02
    impact2 = 0.02 * math.sqrt(25 / 1000)
    assert avg.fill_price(100.0, 25, BarView(data, 2), "market") == pytest.approx(
        100.0 * (1 + impact2)
    )
    assert avg.history_bars == 3 and prev.history_bars == 1


def test_volume_aware_bad_volume_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="volume must be one of"):
        VolumeAwareSlippage(volume="next")
    with pytest.raises(ValueError, match="volume_window must be an integer >= 1"):
        VolumeAwareSlippage(volume="completed", volume_window=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 0}, "window must be an integer >= 1"),
        ({"window": 2.5}, "window must be an integer"),
        ({"window": 5, "min_periods": 6}, "min_periods must be <= window"),
        ({"min_periods": 0}, "min_periods must be an integer >= 1"),
        ({"clamp": "never"}, "clamp must be one of"),
    ],
)
def test_spread_aware_bad_window_is_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SpreadAwareSlippage(0.5, **kwargs)


def test_slippage_specs_with_windows_build_from_config_names() -> None:
    spread = build_slippage({"type": "SpreadAware", "window": 10, "min_periods": 5})
    assert isinstance(spread, SpreadAwareSlippage) and spread.history_bars == 11
    volume = build_slippage({"type": "VolumeAware", "volume": "completed", "volume_window": 20})
    assert isinstance(volume, VolumeAwareSlippage) and volume.history_bars == 20
    both = OrderTypeDependentSlippage({"market": spread}, default=volume)
    assert both.history_bars == 20


# ------------------------------------------------------------------ chunk boundaries


def _chunks(panel: pl.DataFrame, cuts: list[int]) -> list[pl.DataFrame]:
    bounds = [0, *cuts, N_BARS]
    return [
        panel.filter(pl.col("timestamp").is_between(ts(a), ts(b - 1)))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def test_spread_aware_chunk_boundary_carrying_too_few_bars_raises_naming_history_bars() -> None:
    panel = _walk(5)
    data = ChunkedMarketData(_chunks(panel, [25]), symbols=["AAA", "BBB"])
    cfg = ExecutionConfig(slippage=SpreadAwareSlippage(0.5))
    engine = BacktestEngine(data, Script({25: lambda s: s.buy("AAA", 10)}), None, cfg)
    with pytest.raises(ValueError, match=r"AAA .* history_bars=21"):
        engine.run()


def test_spread_aware_chunked_with_history_bars_equals_whole_panel() -> None:
    panel = _walk(5)
    plan = {k: (lambda s: s.buy("AAA", 10)) for k in (21, 22, 24, 26)}
    plan[27] = lambda s: s.close_position("AAA")
    cfg = ExecutionConfig(slippage=SpreadAwareSlippage(0.5))
    whole = BacktestEngine(MarketData.from_frame(panel), Script(plan), None, cfg).run()
    chunked = BacktestEngine(
        ChunkedMarketData(_chunks(panel, [22, 25, 26]), symbols=["AAA", "BBB"], history_bars=21),
        Script(plan),
        None,
        cfg,
    ).run()
    assert whole.fills.height == 5 and (whole.fills["slippage"] > 0).all()
    assert chunked.fills.equals(whole.fills)


@pytest.mark.parametrize("history", [1, 0, 2.0, True])
def test_chunked_market_data_bad_history_bars_is_refused(history: Any) -> None:
    with pytest.raises(ValueError, match="history_bars must be"):
        ChunkedMarketData([], symbols=["AAA"], history_bars=history)
