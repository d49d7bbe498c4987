"""The compiled TopN driver runs ``RegimeDependentRule``, ``VolatilityScaledTakeProfit`` and
ATR rules on several ATR columns with exactly the Python loop's results."""

from __future__ import annotations

import math
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
    ExecutionConfig,
    MarketData,
    MaxDrawdownRule,
    MaxPositionsRule,
    PartialProfitTaking,
    PercentageCommission,
    PerShareCommission,
    PriceBasedStopLoss,
    PriceBasedTakeProfit,
    RiskManager,
    RiskRule,
    SpreadAwareSlippage,
    TimeBasedExit,
    TopNStrategy,
)
from engine.compiled import decisions, passes, plan, topn
from engine.core import costs, layout, ledger, matching
from engine.core import limits as core_limits
from engine.core import rules as core_rules
from engine.risk import kernels
from engine.risk.rules import (
    BreakEvenRule,
    DynamicTrailingStop,
    RegimeDependentRule,
    VolatilityScaledStopLoss,
    VolatilityScaledTakeProfit,
)
from tests.engine.fastpath_helpers import (
    FRAMES,
    assert_identical,
    random_bars,
    run_both,
    use_python_kernels,
)
from tests.engine.helpers import atr, atr_14, momentum_scores, ts, vix_context

# Several stop-setting rules on purpose: the registration warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:rules .* all set a .* level:UserWarning")

_COMMISSION = PercentageCommission(0.001)
_TOP25 = {"signal": "score", "n": 25, "weight": 0.04}
_VIX_SPLIT = 16.0
"""A VIX threshold both regimes occur under in the test window (2013-2015: VIX 10-30)."""


def _seeds_top25() -> list[RiskRule]:
    """The seeds' Top-25 rule set (000 §9.1 and its §9.2 use cases 2 and 3)."""
    return [
        VolatilityScaledStopLoss(atr_multiplier=2.0),
        DynamicTrailingStop(initial_trail_pct=0.05, tighten_rate=0.001),
        TimeBasedExit(max_bars=60),
        RegimeDependentRule(
            regime_source="vix",
            high_vol_threshold=25,
            rules={
                "high_vol": VolatilityScaledStopLoss(atr_multiplier=1.5),
                "low_vol": VolatilityScaledStopLoss(atr_multiplier=2.5),
            },
        ),
        MaxDrawdownRule(max_dd_pct=0.10),
    ]


@pytest.fixture(scope="module")
def regime_data(sp500_panel: pl.DataFrame, data_root: Path) -> MarketData:
    """The S&P panel before mid-2015 with ``score`` (20-day return), ``atr_14``, ``atr_5`` and
    the VIX as market context (the previous session's close, no look-ahead)."""
    panel = momentum_scores(
        sp500_panel.sort("symbol", "timestamp").with_columns(atr_14(), atr(5)),
        datetime(2015, 6, 1, tzinfo=UTC),
    )
    return MarketData.from_frame(
        panel,
        signal_columns=["score", "atr_14", "atr_5"],
        context=vix_context(panel, data_root),
    )


_SP500_CASES: dict[str, tuple[list[RiskRule], ExecutionConfig]] = {
    # the seeds' rule set with the seeds' Top-25 costs (configs/top25_ml_with_risk.yaml)
    "seeds_top25_spread_aware_per_share": (
        _seeds_top25(),
        ExecutionConfig(
            commission=PerShareCommission(0.005), slippage=SpreadAwareSlippage(spread_fraction=0.5)
        ),
    ),
    # the regime's members are the only stops: each fires in its regime
    "regime_atr_stops_time": (
        [
            RegimeDependentRule(
                "vix",
                _VIX_SPLIT,
                above=VolatilityScaledStopLoss(1.0),
                below=VolatilityScaledStopLoss(1.5, atr_column="atr_5"),
            ),
            TimeBasedExit(20),
        ],
        ExecutionConfig(commission=_COMMISSION),
    ),
    # an ATR target and an ATR stop on different columns
    "atr_target_and_stop_on_two_columns": (
        [
            VolatilityScaledTakeProfit(2.0),
            VolatilityScaledStopLoss(1.5, atr_column="atr_5"),
            MaxPositionsRule(20),
        ],
        ExecutionConfig(commission=_COMMISSION),
    ),
    # members read at each close (trailing stop above, time exit below)
    "regime_trailing_or_time_stops_first_fractional": (
        [
            PriceBasedStopLoss(0.08),
            RegimeDependentRule(
                "vix", _VIX_SPLIT, above=DynamicTrailingStop(0.04), below=TimeBasedExit(10)
            ),
        ],
        ExecutionConfig.preset("vectorbt", commission=_COMMISSION, fractional_shares=True),
    ),
    # targets of both regimes, break-even stops, a higher-priority regime time exit beside a
    # plain one, a partial exit
    "regime_targets_breakeven_time_partial_backtrader": (
        [
            RegimeDependentRule(
                "vix",
                _VIX_SPLIT,
                above=VolatilityScaledTakeProfit(2.0),
                below=PriceBasedTakeProfit(0.05),
            ),
            BreakEvenRule(0.03),
            RegimeDependentRule(
                "vix",
                _VIX_SPLIT,
                above=TimeBasedExit(12, priority=95),
                below=BreakEvenRule(0.02, 0.01),
            ),
            TimeBasedExit(25),
            PartialProfitTaking([(0.04, 0.5)]),
        ],
        ExecutionConfig.preset("backtrader", commission=_COMMISSION),
    ),
}
_EXPECTED_EXITS = {
    "seeds_top25_spread_aware_per_share": {"DynamicTrailingStop"},
    "regime_atr_stops_time": {"VolatilityScaledStopLoss", "TimeBasedExit"},
    "atr_target_and_stop_on_two_columns": {
        "VolatilityScaledTakeProfit",
        "VolatilityScaledStopLoss",
    },
    "regime_trailing_or_time_stops_first_fractional": {"DynamicTrailingStop", "TimeBasedExit"},
    "regime_targets_breakeven_time_partial_backtrader": {
        "VolatilityScaledTakeProfit",
        "PriceBasedTakeProfit",
        "BreakEvenRule",
        "TimeBasedExit",
        "PartialProfitTaking",
    },
}


@pytest.mark.parametrize("case", list(_SP500_CASES))
def test_fastpath_rules_sp500_run_equals_python_loop(regime_data: MarketData, case: str) -> None:
    """Each newly compiled rule runs compiled on the S&P file, its exits fire, and both drivers
    give identical fills, trades, orders, rejections, portfolio states and open positions."""
    rules, config = _SP500_CASES[case]
    strategy = TopNStrategy(**_TOP25)
    assert plan.compiled_reason(regime_data, strategy, RiskManager(list(rules)), config) is None
    fast, slow = run_both(regime_data, _TOP25, rules, config)
    assert slow.fills.height > 500
    assert _EXPECTED_EXITS[case] <= set(slow.trades["exit_reason"].unique())
    assert_identical(fast, slow)


def test_fastpath_rules_regime_member_follows_the_vix(regime_data: MarketData) -> None:
    """A regime's stop is its ``above`` member's while the VIX (at the bar before the entry
    fill) is above the threshold, its ``below`` member's otherwise: with a 1-ATR stop above and
    a 3-ATR stop below, the stops of the two regimes' entries differ by the multiplier."""
    rule = RegimeDependentRule(
        "vix", _VIX_SPLIT, above=VolatilityScaledStopLoss(1.0), below=VolatilityScaledStopLoss(3.0)
    )
    config = ExecutionConfig(commission=_COMMISSION)
    fast, slow = run_both(regime_data, _TOP25, [rule], config)
    assert_identical(fast, slow)
    entries = slow.orders.filter(pl.col("reason") == "strategy", pl.col("quantity") > 0)
    fills = slow.fills.join(entries.select("order_id"), on="order_id")
    assert fills.height > 100
    vix = regime_data.context["vix"]
    index = {int(t): k for k, t in enumerate(regime_data.timestamps)}
    above = below = 0
    for stamp in fills["timestamp"].dt.epoch("us").to_list():
        k = index[stamp]
        known = vix[k - 1] if k > 0 else math.nan  # the entry's decision bar
        if known > _VIX_SPLIT:
            above += 1
        else:
            below += 1
    assert above > 10 and below > 10


def _two_atrs(
    rng: np.random.Generator, k: int, high: float, low: float, close: float
) -> tuple[float | None, float | None]:
    """A bar's two ATR columns (``atr``: 0-6 % of the close, ``atr_b``: 0.5-3 %), each
    missing 20 % of the time."""
    atr = None if rng.random() < 0.2 else float(close * rng.uniform(0.0, 0.06))
    atr_b = None if rng.random() < 0.2 else float(close * rng.uniform(0.005, 0.03))
    return atr, atr_b


@st.composite
def _scenario(draw: Any) -> dict[str, Any]:
    n_symbols = draw(st.integers(2, 6))
    n_bars = draw(st.integers(3, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = random_bars(
        rng, n_symbols, n_bars, move=(0.92, 1.08), volumes=(50.0, 1000.0, 1e5), extra=_two_atrs
    )
    vix = [None if rng.random() < 0.1 else float(rng.uniform(10, 30)) for _ in range(n_bars)]
    return {
        "rows": rows,
        "vix": vix,
        "n": draw(st.integers(1, n_symbols)),
        "every": draw(st.integers(1, 3)),
        "rules": draw(st.lists(st.sampled_from(list(_RULES)), unique=True, min_size=1, max_size=5)),
        "stops_first": draw(st.booleans()),
        "close_at_end": draw(st.booleans()),
        "fractional": draw(st.booleans()),
        "spread": draw(st.booleans()),
        "fill": draw(st.sampled_from(["next_open", "close"])),
        "activation": draw(st.sampled_from(["next_bar", "entry_bar"])),
        "cap": draw(st.sampled_from([None, 0.5])),
    }


def _regime(above: RiskRule | None, below: RiskRule | None, priority: int = 0) -> RiskRule:
    return RegimeDependentRule("vix", 20.0, above=above, below=below, priority=priority)


_RULES = {
    "atr_stop": lambda: VolatilityScaledStopLoss(1.0, atr_column="atr"),
    "atr_stop_b": lambda: VolatilityScaledStopLoss(2.0, atr_column="atr_b"),
    "atr_target": lambda: VolatilityScaledTakeProfit(1.5, atr_column="atr_b"),
    "stop": lambda: PriceBasedStopLoss(0.04),
    "target": lambda: PriceBasedTakeProfit(0.06),
    "time": lambda: TimeBasedExit(max_bars=4),
    "breakeven": lambda: BreakEvenRule(0.02, 0.01),
    "partial": lambda: PartialProfitTaking([(0.02, 0.4)]),
    "drawdown": lambda: MaxDrawdownRule(0.05),
    "regime_atr_stops": lambda: _regime(
        VolatilityScaledStopLoss(0.5, atr_column="atr"),
        VolatilityScaledStopLoss(1.5, atr_column="atr_b"),
    ),
    "regime_targets": lambda: _regime(
        PriceBasedTakeProfit(0.03, priority=70),
        VolatilityScaledTakeProfit(1.0, atr_column="atr", priority=90),
        priority=50,
    ),
    # above the threshold this target (priority 85) beats regime_targets' (70), listed first
    "regime_target_one_side": lambda: _regime(PriceBasedTakeProfit(0.02, priority=85), None),
    "regime_trail_time": lambda: _regime(
        DynamicTrailingStop(0.03, tighten_per_bar=0.005), TimeBasedExit(2, priority=95)
    ),
    "regime_time_breakeven": lambda: _regime(TimeBasedExit(3), BreakEvenRule(0.01), priority=99),
    "regime_stop_trail": lambda: _regime(PriceBasedStopLoss(0.02), DynamicTrailingStop(0.05)),
}

_SCHEMA = {
    "timestamp": pl.Datetime("us", "UTC"),
    "symbol": pl.String,
    **dict.fromkeys(
        ("open", "high", "low", "close", "volume", "score", "atr", "atr_b"), pl.Float64
    ),
}


def _generated(sc: dict[str, Any]) -> MarketData:
    panel = pl.DataFrame(sc["rows"], schema=_SCHEMA, orient="row")
    n_bars = len(sc["vix"])
    context = pl.DataFrame(
        {"timestamp": [ts(k) for k in range(n_bars)], "vix": sc["vix"]},
        schema={"timestamp": pl.Datetime("us", "UTC"), "vix": pl.Float64},
    )
    return MarketData.from_frame(panel, signal_columns=["score", "atr", "atr_b"], context=context)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario())
def test_fastpath_rules_generated_panels_equal_python_loop(sc: dict[str, Any]) -> None:
    """On generated panels (missing bars, ATR and VIX gaps, thin volume), any mix of the ATR
    rules, the regime rules and the rules they merge with, under fills at the open or the
    close (whose entry levels read the fill bar's ATR and regime), levels live from the next
    or the entry bar and a volume cap, gives identical records in both drivers."""
    data = _generated(sc)
    config = ExecutionConfig(
        commission=_COMMISSION,
        **({"slippage": SpreadAwareSlippage(0.5, window=3, min_periods=2)} if sc["spread"] else {}),
        bar_event_order="stops_first" if sc["stops_first"] else "chronological",
        close_at_end=sc["close_at_end"],
        fractional_shares=sc["fractional"],
        fill=sc["fill"],
        stop_activation=sc["activation"],
        max_volume_participation=sc["cap"],
    )
    rules = [_RULES[name]() for name in sc["rules"]]
    strategy = {"signal": "score", "n": sc["n"], "rebalance_every": sc["every"], "weight": 0.3}
    assert plan.compiled_reason(data, TopNStrategy(**strategy), RiskManager(rules), config) is None
    fast, slow = run_both(data, strategy, rules, config)
    assert_identical(fast, slow)


def test_fastpath_rules_kernels_equal_their_python_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled kernels and the same functions run as plain Python give the same runs with
    the regime and ATR rules (this also keeps their lines under coverage)."""
    rng = np.random.default_rng(11)
    sc: dict[str, Any] = {"rows": [], "vix": [float(v) for v in rng.uniform(12, 28, 50)]}
    sc["vix"][5] = math.nan
    for s in range(5):
        price = 40.0 + 15 * s
        for k in range(50):
            o = price * rng.uniform(0.985, 1.015)
            c = price * rng.uniform(0.98, 1.025)
            score = c / price if k % 5 else None
            atr = None if k % 11 == 0 else c * 0.02
            row = (ts(k), f"S{s}", o, max(o, c) * 1.01, min(o, c) * 0.99, c, 1e4, score)
            sc["rows"].append((*row, atr, c * 0.01))
            price = c
    data = _generated(sc)
    names = (
        ["regime_atr_stops", "atr_target", "regime_trail_time", "partial"],
        ["regime_targets", "regime_target_one_side", "atr_stop_b"],
        ["regime_time_breakeven", "time", "atr_stop_b", "drawdown"],
        ["regime_stop_trail", "target", "breakeven"],
    )
    config = ExecutionConfig(commission=_COMMISSION)

    def runs(compiled: bool = True) -> list[BacktestResult]:
        return [
            BacktestEngine(
                data,
                TopNStrategy("score", n=2, weight=0.45, rebalance_every=6),
                RiskManager([_RULES[name]() for name in group]),
                config,
                compiled=compiled,
            ).run()
            for group in names
        ]

    compiled = runs()
    use_python_kernels(
        monkeypatch,
        topn,
        passes,
        decisions,
        ledger,
        core_limits,
        matching,
        layout,
        kernels,
        costs,
        core_rules,
    )
    loop = runs(compiled=False)
    for got, expected, slow in zip(runs(), compiled, loop, strict=True):
        assert slow.fills.height >= 10
        assert_identical(got, slow)
        for name in FRAMES:
            assert getattr(got, name).equals(getattr(expected, name)), name
    reasons = set(pl.concat([r.trades["exit_reason"] for r in loop]))
    assert {
        "VolatilityScaledStopLoss",
        "VolatilityScaledTakeProfit",
        "TimeBasedExit",
        "PriceBasedTakeProfit",
        "DynamicTrailingStop",
    } <= reasons


def test_fastpath_rules_uncompiled_regime_members_and_missing_columns_named(
    regime_data: MarketData,
) -> None:
    """``compiled_reason`` names a regime member without a compiled form, a context column or
    an ATR column missing from the data; ATR rules on different columns run compiled."""
    top = TopNStrategy("score", n=5)
    cfg = ExecutionConfig()

    def reason(*rules: RiskRule) -> str | None:
        return plan.compiled_reason(regime_data, top, RiskManager(list(rules)), cfg)

    partial = PartialProfitTaking([(0.1, 0.5)])
    assert reason(RegimeDependentRule("vix", 20.0, above=partial)) == (
        "RegimeDependentRule over PartialProfitTaking (no compiled form)"
    )
    nested = RegimeDependentRule("vix", 20.0, below=PriceBasedStopLoss(0.05))
    assert reason(RegimeDependentRule("vix", 30.0, above=nested)) == (
        "RegimeDependentRule over RegimeDependentRule (no compiled form)"
    )
    close_trail = DynamicTrailingStop(0.05, tighten_per_bar=0.0, trail_on="close")
    assert reason(RegimeDependentRule("vix", 20.0, above=close_trail)) == (
        "rule DynamicTrailingStop with a non-default trailing reference price"
    )
    assert reason(RegimeDependentRule("spy_return", 0.0, above=PriceBasedStopLoss(0.05))) == (
        "RegimeDependentRule context column 'spy_return' not in the market data's context"
    )
    assert reason(VolatilityScaledTakeProfit(2.0, atr_column="atr_20")) == (
        "VolatilityScaledTakeProfit ATR column 'atr_20' not in the data"
    )
    inner = VolatilityScaledStopLoss(2.0, atr_column="atr_20")
    assert reason(RegimeDependentRule("vix", 20.0, below=inner)) == (
        "VolatilityScaledStopLoss ATR column 'atr_20' not in the data"
    )
    assert reason(VolatilityScaledStopLoss(2.0), VolatilityScaledStopLoss(3.0, "atr_5")) is None


@pytest.mark.parametrize("value", [25.0, 25.5, math.nan, -math.inf])
def test_core_regime_above_is_strictly_above_and_nan_is_below(value: float) -> None:
    """The regime test both drivers use: strictly above the threshold; a missing value (NaN)
    picks the ``below`` member."""
    expected = value == 25.5
    assert core_rules.regime_above(value, 25.0) is expected
    flags = core_rules.regime_flags(np.array([value, 30.0]), 25.0)
    assert flags.tolist() == [float(expected), 1.0]


_CONFIG_REASONS = {
    "demo.yaml": None,
    "sp500_top25.yaml": None,
    "sp500_momentum_reference.yaml": None,
    # the seeds' Top-25 rule set: ATR stop, trailing stop, time exit, regime rule on the VIX
    "top25_ml_with_risk.yaml": None,
}


@pytest.mark.parametrize("name", sorted(_CONFIG_REASONS))
def test_fastpath_repository_configs_compiled_reason_names_what_runs_the_loop(
    regime_data: MarketData, data_root: Path, name: str
) -> None:
    """Which of the repository's experiment configs run compiled (the README lists them), on
    data with the columns they read (``score``, ``atr_14``, the VIX context)."""
    from engine import build_rule
    from ml4t_pipeline.config import load_config

    root = Path(__file__).resolve().parents[2] / "configs"
    assert {p.name for p in root.glob("*.yaml")} == set(_CONFIG_REASONS)
    cfg = load_config(root / name, data_root=data_root)
    rules = [build_rule(spec) for spec in cfg.risk_rules]
    reason = plan.compiled_reason(
        regime_data,
        cfg.strategy.build(),
        RiskManager(rules) if rules else None,
        cfg.execution.engine_config(),
    )
    assert reason == _CONFIG_REASONS[name]
