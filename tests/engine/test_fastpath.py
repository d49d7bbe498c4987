"""The compiled TopN driver (engine.compiled) gives exactly the Python loop's results."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import (
    BacktestEngine,
    BacktestResult,
    ChunkedMarketData,
    ExecutionConfig,
    FixedBpsSlippage,
    FixedPercentageSlippage,
    MarketData,
    MaxDailyLossRule,
    MaxDrawdownRule,
    MaxLeverageRule,
    MaxPositionSizeRule,
    MaxPositionsRule,
    OrderTypeDependentSlippage,
    PartialProfitTaking,
    PercentageCommission,
    PerShareCommission,
    PerTradeCommission,
    PriceBasedStopLoss,
    PriceBasedTakeProfit,
    RiskManager,
    RiskRule,
    SpreadAwareSlippage,
    TieredCommission,
    TimeBasedExit,
    TopNStrategy,
    VolumeAwareSlippage,
)
from engine.compiled import decisions, passes, plan, topn
from engine.core import costs, layout, ledger, matching
from engine.core import limits as core_limits
from engine.risk import kernels
from engine.risk.rules.dynamic import (
    BreakEvenRule,
    DynamicTrailingStop,
    VolatilityScaledStopLoss,
    VolatilityScaledTakeProfit,
)
from tests.engine.fastpath_helpers import FRAMES, random_bars, use_python_kernels
from tests.engine.fastpath_helpers import assert_identical as _assert_identical
from tests.engine.fastpath_helpers import run_both as _both
from tests.engine.helpers import atr_14, momentum_scores, ts

# Two stop-setting rules on purpose in some cases: the registration warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:rules .* all set a stop-loss level:UserWarning")


def _rules(kind: str) -> list[RiskRule] | None:
    if kind == "none":
        return None
    if kind == "empty":
        return []
    if kind == "stop":
        return [PriceBasedStopLoss(0.05)]
    if kind == "limits":  # every one binds on this run
        return [
            PriceBasedStopLoss(0.05),
            MaxPositionsRule(15),
            MaxPositionSizeRule(0.03),
            MaxDrawdownRule(0.05),
            MaxDailyLossRule(0.01),
        ]
    if kind == "limits_only":
        return [MaxPositionsRule(12), MaxPositionSizeRule(0.035)]
    if kind == "ten":  # the risk-overhead benchmark's ten rules
        return [
            PriceBasedStopLoss(0.05),
            DynamicTrailingStop(0.10),
            TimeBasedExit(60),
            PriceBasedTakeProfit(0.5),
            BreakEvenRule(0.3),
            PartialProfitTaking([(0.5, 0.5)]),
            MaxDailyLossRule(0.5),
            MaxDrawdownRule(0.9),
            MaxLeverageRule(5.0),
            MaxPositionsRule(100),
        ]
    if kind == "breakeven_partial":  # every one of them fires or binds
        return [
            PriceBasedStopLoss(0.05),
            BreakEvenRule(0.02, 0.005),
            PartialProfitTaking([(0.03, 0.3), (0.06, 0.3)]),
            MaxLeverageRule(0.9),
            TimeBasedExit(15),
        ]
    if kind == "trail_breakeven_partial":
        return [
            DynamicTrailingStop(0.06),
            BreakEvenRule(0.03),
            PartialProfitTaking([(0.04, 0.5)]),
            MaxLeverageRule(0.7),
            MaxPositionSizeRule(0.05),
        ]
    return [
        PriceBasedStopLoss(0.05),
        DynamicTrailingStop(initial_trail_pct=0.08, tighten_per_bar=0.001),
        TimeBasedExit(max_bars=10),
        PriceBasedTakeProfit(0.10),
    ]


@pytest.fixture(scope="module")
def scored_data(sp500_panel: pl.DataFrame) -> MarketData:
    panel = momentum_scores(sp500_panel, datetime(2015, 6, 1, tzinfo=UTC))
    return MarketData.from_frame(panel, signal_columns=["score"])


_COMMISSION = PercentageCommission(0.001)
_SP500_CASES: dict[str, tuple[dict[str, Any], str, ExecutionConfig]] = {
    "backtrader_stop": (
        {"signal": "score", "n": 25, "weight": 0.04},
        "stop",
        ExecutionConfig.preset("backtrader", commission=_COMMISSION),
    ),
    "chronological_stop": (
        {"signal": "score", "n": 25, "weight": 0.04},
        "stop",
        ExecutionConfig(commission=_COMMISSION),
    ),
    "no_rules_default_weight": (
        {"signal": "score", "n": 10},
        "none",
        ExecutionConfig(commission=_COMMISSION),
    ),
    "four_rules_rebalance_close_at_end": (
        {"signal": "score", "n": 20, "rebalance_every": 3, "weight": 0.06},
        "four",
        ExecutionConfig(commission=_COMMISSION, close_at_end=True),
    ),
    "four_rules_stops_first_fractional_tight_cash": (
        {"signal": "score", "n": 30, "weight": 0.05},
        "four",
        ExecutionConfig.preset(
            "vectorbt", commission=_COMMISSION, fractional_shares=True, initial_cash=50_000.0
        ),
    ),
    "binding_limits_backtrader": (
        {"signal": "score", "n": 25, "weight": 0.04},
        "limits",
        ExecutionConfig.preset("backtrader", commission=_COMMISSION),
    ),
    "limits_only_chronological": (
        {"signal": "score", "n": 25, "weight": 0.04},
        "limits_only",
        ExecutionConfig(commission=_COMMISSION),
    ),
    "ten_rules": (
        {"signal": "score", "n": 25, "weight": 0.04},
        "ten",
        ExecutionConfig(commission=_COMMISSION),
    ),
    "breakeven_partial_leverage_rebalance": (
        {"signal": "score", "n": 25, "rebalance_every": 5},
        "breakeven_partial",
        ExecutionConfig(commission=_COMMISSION),
    ),
    "trail_breakeven_partial_backtrader_fractional": (
        {"signal": "score", "n": 25, "rebalance_every": 5},
        "trail_breakeven_partial",
        ExecutionConfig.preset("backtrader", commission=_COMMISSION, fractional_shares=True),
    ),
    "empty_manager_no_commission": (
        {"signal": "score", "n": 5},
        "empty",
        ExecutionConfig(),
    ),
    "spread_aware_per_share_four_rules": (
        {"signal": "score", "n": 25, "weight": 0.04},
        "four",
        ExecutionConfig(
            commission=PerShareCommission(0.005, minimum=1.0, maximum_pct=0.01),
            slippage=SpreadAwareSlippage(spread_fraction=0.5),
        ),
    ),
    "fixed_bps_per_trade_limits_backtrader": (
        {"signal": "score", "n": 25, "weight": 0.04},
        "limits",
        ExecutionConfig.preset(
            "backtrader", commission=PerTradeCommission(1.0), slippage=FixedBpsSlippage(5.0)
        ),
    ),
    "volume_aware_completed_tiered_close_at_end": (
        {"signal": "score", "n": 20, "rebalance_every": 3, "weight": 0.05},
        "breakeven_partial",
        ExecutionConfig(
            commission=TieredCommission([(0.0, 0.001), (5e5, 0.0005), (2e6, 0.0002)]),
            slippage=VolumeAwareSlippage(coefficient=20.0, volume="completed", volume_window=5),
            close_at_end=True,
        ),
    ),
    "volume_aware_bar_fixed_pct_tight_cash": (
        {"signal": "score", "n": 8, "weight": 0.15},
        "stop",
        ExecutionConfig.preset(
            "backtrader",
            commission=_COMMISSION,
            slippage=VolumeAwareSlippage(coefficient=50.0, max_impact=0.02),
        ),
    ),
    "fixed_pct_stops_first_fractional": (
        {"signal": "score", "n": 30, "weight": 0.05},
        "four",
        ExecutionConfig.preset(
            "vectorbt",
            commission=PerShareCommission(0.01),
            slippage=FixedPercentageSlippage(0.001),
            fractional_shares=True,
        ),
    ),
}


@pytest.fixture(scope="module")
def atr_data(sp500_panel: pl.DataFrame) -> MarketData:
    """:func:`scored_data` with the ``atr_14`` column (:func:`tests.engine.helpers.atr_14`)."""
    panel = momentum_scores(
        sp500_panel.sort("symbol", "timestamp").with_columns(atr_14()),
        datetime(2015, 6, 1, tzinfo=UTC),
    )
    return MarketData.from_frame(panel, signal_columns=["score", "atr_14"])


_ATR_CASES: dict[str, tuple[list[RiskRule], ExecutionConfig]] = {
    # the ATR stop first: on ties it names the stop; the fixed stop wins where it is higher
    "atr_stop_fixed_stop_breakeven_limits": (
        [
            VolatilityScaledStopLoss(1.5),
            PriceBasedStopLoss(0.06),
            BreakEvenRule(0.04),
            MaxPositionsRule(20),
        ],
        ExecutionConfig(commission=_COMMISSION),
    ),
    "atr_stop_target_time_stops_first_fractional": (
        [
            PriceBasedTakeProfit(0.08),
            VolatilityScaledStopLoss(2.0),
            TimeBasedExit(30),
        ],
        ExecutionConfig.preset("vectorbt", commission=_COMMISSION, fractional_shares=True),
    ),
}


@pytest.mark.parametrize("case", list(_ATR_CASES))
def test_fastpath_atr_stop_run_equals_python_loop(atr_data: MarketData, case: str) -> None:
    """``VolatilityScaledStopLoss`` runs compiled (ATR read on the symbol's bar before the
    entry fill, through ``engine.core.rules.atr_level`` in both drivers), with identical
    records; its stops fire, and on the first symbol bars (no ATR yet) it sets no level."""
    rules, config = _ATR_CASES[case]
    manager = RiskManager(list(rules))
    strategy = TopNStrategy("score", n=25, weight=0.04)
    assert plan.compiled_reason(atr_data, strategy, manager, config) is None
    fast, slow = _both(atr_data, {"signal": "score", "n": 25, "weight": 0.04}, rules, config)
    assert slow.fills.height > 500
    assert "VolatilityScaledStopLoss" in set(slow.trades["exit_reason"].unique())
    _assert_identical(fast, slow)


@pytest.mark.parametrize("case", list(_SP500_CASES))
def test_fastpath_sp500_run_equals_python_loop(scored_data: MarketData, case: str) -> None:
    strategy, rules, config = _SP500_CASES[case]
    fast, slow = _both(scored_data, strategy, _rules(rules), config)
    assert slow.fills.height > 500
    if rules == "four":  # every rule fires
        reasons = set(slow.trades["exit_reason"].unique())
        assert {"DynamicTrailingStop", "TimeBasedExit", "PriceBasedTakeProfit"} <= reasons
    if rules.endswith("partial"):  # break-even stops and partial exits fire, leverage binds
        reasons = set(slow.trades["exit_reason"].unique())
        assert {"BreakEvenRule", "PartialProfitTaking"} <= reasons
        assert slow.trades["partial"].any()
        assert set(slow.rejections["rule"]) >= {"MaxLeverageRule"}
        assert (slow.rejections["event"] == "shrunk").sum() > 0
    if rules.startswith("limits"):  # every limit binds; the size cap shrinks orders too
        named = {r.name for r in _rules(rules) or [] if r.validates_orders}
        assert set(slow.rejections["rule"].unique()) - {""} == named
        assert (slow.rejections["event"] == "shrunk").sum() > 0
    if type(config.slippage).__name__ != "NoSlippage":
        assert (slow.fills["slippage"] > 0).mean() > 0.5  # the slippage model acts
    _assert_identical(fast, slow)


def test_fastpath_insufficient_cash_rejections_equal_python_loop(
    scored_data: MarketData,
) -> None:
    # 8 positions of 15 % each: the open's buys run out of cash and are refused
    config = ExecutionConfig.preset("backtrader", commission=_COMMISSION)
    fast, slow = _both(
        scored_data, {"signal": "score", "n": 8, "weight": 0.15}, _rules("stop"), config
    )
    assert (slow.rejections["reason"] == "insufficient_cash").sum() > 10
    _assert_identical(fast, slow)


def _quote(
    rng: np.random.Generator, k: int, high: float, low: float, close: float
) -> tuple[float | None, float | None]:
    """A bar's bid and ask up to 1 % around the close; the bid is missing 30 % of the time,
    the ask 10 % of the rest."""
    half = close * float(rng.uniform(0.0, 0.01))
    bid = None if rng.random() < 0.3 else close - half
    ask = None if bid is None or rng.random() < 0.1 else close + half
    return bid, ask


@st.composite
def _scenario(draw: Any) -> dict[str, Any]:
    n_symbols = draw(st.integers(2, 7))
    n_bars = draw(st.integers(2, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = random_bars(
        rng, n_symbols, n_bars, move=(0.92, 1.08), volumes=(0.0, 50.0, 1000.0, 1e5), extra=_quote
    )
    rules = draw(
        st.lists(
            st.sampled_from(list(_RULES)),
            unique=True,
            max_size=6,
        )
    )
    return {
        "rows": rows,
        "n": draw(st.integers(1, n_symbols)),
        "every": draw(st.integers(1, 3)),
        "weight": draw(st.sampled_from([None, 0.2, 0.5, 0.9])),
        "rules": rules,
        "stops_first": draw(st.booleans()),
        "close_at_end": draw(st.booleans()),
        "fractional": draw(st.booleans()),
        "cash": draw(st.sampled_from([1_000.0, 100_000.0])),
        "slippage": draw(st.sampled_from(list(_SLIPPAGES))),
        "commission": draw(st.sampled_from(list(_COMMISSIONS))),
        "quotes": draw(st.booleans()),
    }


_RULES = {
    "stop": lambda: PriceBasedStopLoss(0.03),
    "target": lambda: PriceBasedTakeProfit(0.04),
    "trail": lambda: DynamicTrailingStop(initial_trail_pct=0.05, tighten_per_bar=0.002),
    "time": lambda: TimeBasedExit(max_bars=3),
    "count": lambda: MaxPositionsRule(2),
    "size": lambda: MaxPositionSizeRule(0.3),
    "drawdown": lambda: MaxDrawdownRule(0.05),
    "breakeven": lambda: BreakEvenRule(0.02, 0.01),
    "partial": lambda: PartialProfitTaking([(0.02, 0.4), (0.05, 0.4)]),
    "leverage": lambda: MaxLeverageRule(0.6),
}


_SLIPPAGES = {
    "none": lambda: None,
    "fixed_pct": lambda: FixedPercentageSlippage(0.002),
    "bps": lambda: FixedBpsSlippage(10.0),
    "spread": lambda: SpreadAwareSlippage(0.5, fallback_pct=0.001, window=3, min_periods=2),
    "spread_mean": lambda: SpreadAwareSlippage(1.0, window=2, clamp="mean"),
    "volume_bar": lambda: VolumeAwareSlippage(coefficient=2.0, max_impact=0.05),
    "volume_completed": lambda: VolumeAwareSlippage(
        coefficient=1.0, volume="completed", volume_window=3
    ),
}
_COMMISSIONS = {
    "percentage": lambda: _COMMISSION,
    "per_share": lambda: PerShareCommission(0.01, minimum=1.0, maximum_pct=0.005),
    "per_trade": lambda: PerTradeCommission(2.0),
    "tiered": lambda: TieredCommission([(0.0, 0.002), (2_000.0, 0.001), (50_000.0, 0.0)]),
}


# explicit dtypes: a drawn panel whose scores are all missing stays a Float64 column of nulls
_PANEL_SCHEMA = {
    "timestamp": pl.Datetime("us", "UTC"),
    "symbol": pl.String,
    **dict.fromkeys(("open", "high", "low", "close", "volume", "score"), pl.Float64),
}
_QUOTED_SCHEMA = {**_PANEL_SCHEMA, "bid": pl.Float64, "ask": pl.Float64}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario())
def test_fastpath_generated_panels_equal_python_loop(sc: dict[str, Any]) -> None:
    panel = pl.DataFrame(sc["rows"], schema=_QUOTED_SCHEMA, orient="row")
    if not sc["quotes"]:
        panel = panel.drop("bid", "ask")
    data = MarketData.from_frame(panel, signal_columns=["score"])
    slippage = _SLIPPAGES[sc["slippage"]]()
    config = ExecutionConfig(
        commission=_COMMISSIONS[sc["commission"]](),
        **({} if slippage is None else {"slippage": slippage}),
        bar_event_order="stops_first" if sc["stops_first"] else "chronological",
        close_at_end=sc["close_at_end"],
        fractional_shares=sc["fractional"],
        initial_cash=sc["cash"],
    )
    rules = [_RULES[name]() for name in sc["rules"]] or None
    strategy = {"signal": "score", "n": sc["n"], "rebalance_every": sc["every"]}
    strategy["weight"] = sc["weight"]
    fast, slow = _both(data, strategy, rules, config)
    _assert_identical(fast, slow)


class _OwnBps(FixedBpsSlippage):
    """A user's subclass: its ``fill_price`` may differ, so it has no compiled form."""


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {
                "slippage": OrderTypeDependentSlippage(
                    {"stop": OrderTypeDependentSlippage({"market": FixedBpsSlippage(5.0)})}
                )
            },
            "OrderTypeDependentSlippage with OrderTypeDependentSlippage",
        ),
        ({"slippage": _OwnBps(5.0)}, "slippage model setting"),
    ],
)
def test_fastpath_unsupported_setting_takes_python_loop(
    scored_data: MarketData, change: dict[str, Any], reason: str
) -> None:
    config = ExecutionConfig(**change)
    engine = BacktestEngine(scored_data, TopNStrategy("score", n=5), None, config)
    assert engine.compiled_reason is not None and reason in engine.compiled_reason
    assert plan.compiled_reason(scored_data, TopNStrategy("score", n=5), None, config)


def test_fastpath_unsupported_rules_and_strategy_take_python_loop(
    scored_data: MarketData,
) -> None:
    cfg = ExecutionConfig()
    top = TopNStrategy("score", n=5)

    class MyTop(TopNStrategy):
        pass

    assert plan.compiled_reason(scored_data, top, None, cfg) is None
    assert "not TopNStrategy" in str(
        plan.compiled_reason(scored_data, MyTop("score", 5), None, cfg)
    )
    atr = RiskManager([PriceBasedStopLoss(0.05), VolatilityScaledTakeProfit(2.0)])
    assert plan.compiled_reason(scored_data, top, atr, cfg) == (
        "VolatilityScaledTakeProfit ATR column 'atr_14' not in the data"
    )
    missing = RiskManager([VolatilityScaledStopLoss(2.0, atr_column="atr_14")])
    assert plan.compiled_reason(scored_data, top, missing, cfg) == (
        "VolatilityScaledStopLoss ATR column 'atr_14' not in the data"
    )
    two = RiskManager([PartialProfitTaking([(0.1, 0.5)]), PartialProfitTaking([(0.2, 0.5)])])
    assert plan.compiled_reason(scored_data, top, two, cfg) == (
        "more than one PartialProfitTaking rule"
    )
    many = RiskManager([PartialProfitTaking([(0.01 * (k + 1), 0.01) for k in range(63)])])
    assert plan.compiled_reason(scored_data, top, many, cfg) == (
        "PartialProfitTaking with more than 62 levels"
    )
    flatten = RiskManager([MaxDrawdownRule(0.1, action="flatten")])
    assert plan.compiled_reason(scored_data, top, flatten, cfg) == (
        "rule MaxDrawdownRule has no compiled form"
    )
    limits = RiskManager([PriceBasedStopLoss(0.05), MaxPositionsRule(3), MaxDrawdownRule(0.1)])
    assert plan.compiled_reason(scored_data, top, limits, cfg) is None
    result = BacktestEngine(scored_data, MyTop("score", n=5), None, cfg).run()
    assert not result.compiled
    assert BacktestEngine(scored_data, top, None, cfg, compiled=False).compiled_reason == (
        "compiled=False"
    )


def test_fastpath_chunked_data_takes_python_loop(sp500_panel: pl.DataFrame) -> None:
    frame = sp500_panel.head(5_000).with_columns(pl.col("close").alias("score"))
    symbols = frame["symbol"].unique().sort().to_list()
    chunked = ChunkedMarketData([frame], symbols, signal_columns=["score"])
    reason = plan.compiled_reason(chunked, TopNStrategy("score", n=5), None, ExecutionConfig())
    assert reason == "chunked market data"


def test_fastpath_missing_signal_raises_naming_it(scored_data: MarketData) -> None:
    with pytest.raises(ValueError, match="'nope' is not a signal/indicator column"):
        BacktestEngine(scored_data, TopNStrategy("nope", n=5)).run()


def test_fastpath_full_buffers_retry_with_larger_ones(
    scored_data: MarketData, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = BacktestEngine(scored_data, TopNStrategy("score", n=25), compiled=False).run()
    monkeypatch.setattr(plan, "_capacity", lambda n_t, n, n_sym: 8)
    fast = BacktestEngine(scored_data, TopNStrategy("score", n=25)).run()
    _assert_identical(fast, expected)


def test_fastpath_hands_back_to_python_loop_when_kernel_declines(
    scored_data: MarketData, monkeypatch: pytest.MonkeyPatch
) -> None:
    def declines(*args: Any) -> None:
        args[2].counts[topn.C_STATUS] = topn.ST_SHORT_BOOK

    monkeypatch.setattr(topn, "run_topn", declines)
    engine = BacktestEngine(scored_data, TopNStrategy("score", n=5))
    assert engine.compiled_reason is None
    result = engine.run()
    assert not result.compiled
    assert result.fills.height > 0


def test_fastpath_kernels_equal_their_python_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled kernel and the same functions run as plain Python give the same run (this
    also keeps the kernel's lines under coverage)."""
    rng = np.random.default_rng(7)
    rows = []
    for s in range(6):
        price = 50.0 + 10 * s
        for k in range(60):
            if k > 0 and rng.random() < 0.05:
                continue
            o = price * rng.uniform(0.95, 1.05)
            c = price * rng.uniform(0.95, 1.05)
            score = c / price if k % 7 else None
            rows.append((ts(k), f"S{s}", o, max(o, c) * 1.02, min(o, c) * 0.98, c, 1e3, score))
            price = c
    panel = pl.DataFrame(
        rows,
        schema=_PANEL_SCHEMA,
        orient="row",
    )
    data = MarketData.from_frame(panel, signal_columns=["score"])
    cases = [
        (
            {"n": 2, "weight": 0.45},
            ExecutionConfig(commission=_COMMISSION, close_at_end=True, initial_cash=1_000.0),
        ),
        ({"n": 2, "weight": 0.6}, ExecutionConfig.preset("backtrader", commission=_COMMISSION)),
        (
            {"n": 2, "weight": 0.45, "rebalance_every": 6},
            ExecutionConfig.preset("backtrader", fractional_shares=True),
        ),
        ({"n": 3, "weight": 0.3}, ExecutionConfig(commission=_COMMISSION, initial_cash=5_000.0)),
        ({"n": 3, "weight": 0.3}, ExecutionConfig(commission=_COMMISSION)),
        (
            {"n": 2, "weight": 0.45},
            ExecutionConfig(
                commission=PerShareCommission(0.01, minimum=1.0, maximum_pct=0.01),
                slippage=SpreadAwareSlippage(window=3),
                close_at_end=True,
            ),
        ),
        (
            {"n": 3, "weight": 0.3},
            ExecutionConfig(
                commission=TieredCommission([(0.0, 0.002), (5_000.0, 0.001)]),
                slippage=VolumeAwareSlippage(volume="completed", volume_window=2),
            ),
        ),
        (
            {"n": 2, "weight": 0.4},
            ExecutionConfig(
                commission=PerTradeCommission(1.0), slippage=VolumeAwareSlippage(max_impact=0.01)
            ),
        ),
    ]

    def rules(k: int) -> RiskManager:
        exits: list[RiskRule] = [
            PriceBasedStopLoss(0.05),
            DynamicTrailingStop(initial_trail_pct=0.08, tighten_per_bar=0.001),
            TimeBasedExit(max_bars=4),
            PriceBasedTakeProfit(0.10),
        ]
        if k < 3 or k > 4:
            return RiskManager(exits)
        if k == 4:
            return RiskManager(
                [
                    DynamicTrailingStop(0.06),
                    BreakEvenRule(0.01),
                    PartialProfitTaking([(0.01, 0.3), (0.03, 0.3)]),
                    MaxLeverageRule(0.8),
                ]
            )
        limits: list[RiskRule] = [
            MaxPositionsRule(2),
            MaxPositionSizeRule(0.2),
            MaxDrawdownRule(0.03),
            MaxDailyLossRule(0.01),
        ]
        return RiskManager([*exits[:1], *limits])

    def runs(compiled: bool = True) -> list[BacktestResult]:
        return [
            BacktestEngine(
                data, TopNStrategy("score", **kw), rules(k), cfg, compiled=compiled
            ).run()
            for k, (kw, cfg) in enumerate(cases)
        ]

    compiled = runs()
    use_python_kernels(
        monkeypatch, topn, passes, decisions, ledger, core_limits, matching, layout, kernels, costs
    )
    loop = runs(compiled=False)
    for got, expected, slow in zip(runs(), compiled, loop, strict=True):
        assert slow.fills.height >= 10
        _assert_identical(got, slow)
        for name in FRAMES:
            assert getattr(got, name).equals(getattr(expected, name)), name
    reasons = pl.concat([r.trades["exit_reason"] for r in loop])
    assert {"TimeBasedExit", "PriceBasedTakeProfit", "end_of_data"} <= set(reasons)
    assert sum(r.rejections.height for r in loop) > 0
    assert {"BreakEvenRule", "PartialProfitTaking"} <= set(loop[4].trades["exit_reason"])
    assert "MaxLeverageRule" in set(loop[4].rejections["rule"])
    limited = set(loop[3].rejections["rule"])
    assert {"MaxPositionsRule", "MaxPositionSizeRule", "MaxDrawdownRule"} <= limited


def test_fastpath_reference_run_equals_python_loop_and_frameworks(data_root: Path) -> None:
    """The issue-7 reference run (461 symbols, backtrader preset) through both paths: identical
    frames, and the reference figures that Backtrader and VectorBT produce on the same inputs
    (12,918 fills, final equity 761,782.62; ml4t_pipeline/lib/crossval)."""
    from ml4t_pipeline.lib.crossval.reference import load_reference_inputs

    reference = load_reference_inputs(data_root)
    data = MarketData.from_frame(reference.panel, signal_columns=["score"])
    config = ExecutionConfig.preset("backtrader", commission=_COMMISSION)
    fast, slow = _both(data, {"signal": "score", "n": 25, "weight": 0.04}, _rules("stop"), config)
    _assert_identical(fast, slow)
    assert fast.fills.height == 12_918
    assert round(fast.final_equity, 2) == 761_782.62


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "py_func"])
def test_fastpath_pairwise_sum_equals_numpy_nansum(
    compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled MaxLeverageRule's exposure sum is NumPy's, bit for bit."""
    gross = core_limits.projected_gross
    if not compiled:
        for name in ("_pairwise_sum", "_block_sum"):
            monkeypatch.setattr(core_limits, name, getattr(core_limits, name).py_func)
        gross = gross.py_func
    rng = np.random.default_rng(3)
    for n in [0, 1, 7, 8, 9, 127, 128, 129, 255, 461, 1000, 3000]:
        qty = np.round(rng.standard_normal(n) * 100)
        pending = np.where(rng.random(n) < 0.2, np.round(rng.standard_normal(n) * 50), 0.0)
        marks = rng.uniform(1, 500, n) * 10 ** rng.uniform(-2, 2, n)
        marks[rng.random(n) < 0.1] = np.nan  # symbols without a bar yet
        expected = float(np.nansum(np.abs(qty + pending) * marks))
        assert gross(qty, pending, marks, np.empty(256 + n)) == expected, n
