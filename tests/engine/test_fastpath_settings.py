"""The execution settings the compiled TopN driver runs since issue 23 (volume participation
cap, ``allow_short``, ``OrderTypeDependentSlippage``, ``reentry_cooldown_bars``,
``exit_conflict="stop_wins"``, ``stop_activation="entry_bar"``, ``cash_check="submission"``,
``fill="close"``) give exactly the Python loop's results, and each setting acts in the runs
that show it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
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
    FixedBpsSlippage,
    FixedPercentageSlippage,
    MarketData,
    MaxDrawdownRule,
    MaxPositionsRule,
    OrderTypeDependentSlippage,
    PartialProfitTaking,
    PercentageCommission,
    PerShareCommission,
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
from engine.compiled import plan
from engine.core import costs, ledger, matching
from engine.risk.rules.dynamic import BreakEvenRule, DynamicTrailingStop, VolatilityScaledStopLoss
from tests.engine.fastpath_helpers import FRAMES, random_bars, use_python_kernels
from tests.engine.fastpath_helpers import assert_identical as _assert_identical
from tests.engine.fastpath_helpers import run_both as _both
from tests.engine.helpers import make_panel, momentum_scores, ts

pytestmark = pytest.mark.filterwarnings("ignore:rules .* all set a stop-loss level:UserWarning")

_COMMISSION = PercentageCommission(0.001)
_TOP25 = {"signal": "score", "n": 25, "weight": 0.04}


def _four() -> list[RiskRule]:
    return [
        PriceBasedStopLoss(0.05),
        DynamicTrailingStop(initial_trail_pct=0.08, tighten_per_bar=0.001),
        TimeBasedExit(max_bars=10),
        PriceBasedTakeProfit(0.10),
    ]


def _by_type() -> OrderTypeDependentSlippage:
    return OrderTypeDependentSlippage(
        {
            "market": SpreadAwareSlippage(0.5),
            "stop": FixedBpsSlippage(20.0),
            "limit": VolumeAwareSlippage(coefficient=20.0),
        }
    )


@pytest.fixture(scope="module")
def scored_data(sp500_panel: pl.DataFrame) -> MarketData:
    panel = momentum_scores(sp500_panel, datetime(2015, 6, 1, tzinfo=UTC))
    return MarketData.from_frame(panel, signal_columns=["score"])


def _reasons(result: BacktestResult) -> set[str]:
    return set(result.rejections["reason"].to_list())


def _shows_cap(result: BacktestResult) -> bool:
    """Orders filled in several parts, and stale parts netted by a close."""
    parts = result.fills.group_by("order_id").len()
    return bool((parts["len"] > 1).any()) and "netted_by_close_position" in _reasons(result)


def _shows_by_type(result: BacktestResult) -> bool:
    """Stop exits pay exactly 20 bps; market fills pay a spread-based, varying fraction."""
    fills = result.fills.with_columns(
        (pl.col("price") / pl.col("price_before_slippage") - 1).abs().alias("frac")
    )
    stops = fills.filter(pl.col("order_type") == "stop")["frac"]
    market = fills.filter(pl.col("order_type") == "market")["frac"]
    limits = fills.filter(pl.col("order_type") == "limit")["frac"]
    return (
        stops.len() > 10
        and bool(np.allclose(stops.to_numpy(), 0.002))
        and market.n_unique() > 100
        and limits.len() > 10
        and not bool(np.allclose(limits.to_numpy(), 0.002))
    )


def _shows_entry_bar(result: BacktestResult) -> bool:
    """Some positions are stopped out on the bar of their entry."""
    return bool((result.trades["bars_held"] == 0).any())


def _shows_fill_close(result: BacktestResult) -> bool:
    """The strategy's orders fill (first) on the bar they were decided at."""
    orders = result.orders.select("order_id", "submitted")
    first = (
        result.fills.filter(pl.col("reason") == "strategy")
        .group_by("order_id")
        .agg(pl.col("timestamp").min())
        .join(orders, on="order_id")
    )
    return first.height > 100 and bool((first["timestamp"] == first["submitted"]).mean() > 0.9)


_CASES: dict[str, tuple[dict[str, Any], Callable[[], list[RiskRule]] | None, ExecutionConfig]] = {
    "cap_stop": (
        _TOP25,
        lambda: [PriceBasedStopLoss(0.05)],
        ExecutionConfig(commission=_COMMISSION, max_volume_participation=1e-4),
    ),
    "cap_four_stops_first_fractional": (
        {"signal": "score", "n": 30, "weight": 0.03},
        _four,
        ExecutionConfig.preset(
            "vectorbt",
            commission=_COMMISSION,
            fractional_shares=True,
            max_volume_participation=2e-4,
        ),
    ),
    "allow_short_four": (
        _TOP25,
        _four,
        ExecutionConfig(commission=_COMMISSION, allow_short=True),
    ),
    "order_type_slippage_four": (
        _TOP25,
        _four,
        ExecutionConfig(commission=_COMMISSION, slippage=_by_type()),
    ),
    "cooldown_stop": (
        _TOP25,
        lambda: [PriceBasedStopLoss(0.03)],
        ExecutionConfig(commission=_COMMISSION, reentry_cooldown_bars=5),
    ),
    "stop_wins_four": (
        _TOP25,
        _four,
        ExecutionConfig.preset("vectorbt", commission=_COMMISSION, exit_conflict="stop_wins"),
    ),
    "entry_bar_four": (
        _TOP25,
        _four,
        ExecutionConfig(commission=_COMMISSION, stop_activation="entry_bar"),
    ),
    "entry_bar_four_stops_first": (
        _TOP25,
        _four,
        ExecutionConfig.preset("backtrader", commission=_COMMISSION, stop_activation="entry_bar"),
    ),
    "submission_cash_tiered": (
        {"signal": "score", "n": 8, "weight": 0.15},
        lambda: [PriceBasedStopLoss(0.05)],
        ExecutionConfig.preset(
            "backtrader",
            commission=TieredCommission([(0.0, 0.002), (5e5, 0.001)]),
            cash_check="submission",
        ),
    ),
    "fill_close_four": (
        _TOP25,
        _four,
        ExecutionConfig(commission=_COMMISSION, fill="close"),
    ),
    "fill_close_cap_stops_first": (
        _TOP25,
        _four,
        ExecutionConfig.preset(
            "vectorbt", commission=_COMMISSION, fill="close", max_volume_participation=2e-4
        ),
    ),
    "everything_with_limits": (
        {"signal": "score", "n": 25, "weight": 0.04, "rebalance_every": 2},
        lambda: [*_four(), MaxPositionsRule(20), MaxDrawdownRule(0.1)],
        ExecutionConfig.preset(
            "vectorbt",
            commission=_COMMISSION,
            exit_conflict="stop_wins",
            reentry_cooldown_bars=2,
            slippage=_by_type(),
            max_volume_participation=3e-4,
            close_at_end=True,
        ),
    ),
}

_EVIDENCE: dict[str, Callable[[BacktestResult], bool]] = {
    "cap_stop": _shows_cap,
    "cap_four_stops_first_fractional": _shows_cap,
    "allow_short_four": lambda r: r.trades.height > 1000,
    "order_type_slippage_four": _shows_by_type,
    "cooldown_stop": lambda r: "reentry_cooldown" in _reasons(r),
    "stop_wins_four": lambda r: "position_closed_by_stop" in _reasons(r),
    "entry_bar_four": _shows_entry_bar,
    "entry_bar_four_stops_first": _shows_entry_bar,
    "submission_cash_tiered": lambda r: "insufficient_cash_at_submission" in _reasons(r),
    "fill_close_four": _shows_fill_close,
    "fill_close_cap_stops_first": lambda r: _shows_fill_close(r) and _shows_cap(r),
    "everything_with_limits": lambda r: (
        {
            "position_closed_by_stop",
            "reentry_cooldown",
            "netted_by_close_position",
            "already 20 positions",
        }
        <= _reasons(r)
    ),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_fastpath_settings_sp500_run_equals_python_loop(scored_data: MarketData, case: str) -> None:
    strategy, rules, config = _CASES[case]
    assert plan.compiled_reason(scored_data, TopNStrategy(**strategy), None, config) is None
    fast, slow = _both(scored_data, strategy, None if rules is None else rules(), config)
    assert slow.fills.height > 500
    assert _EVIDENCE[case](slow), "the setting does not act in this run"
    _assert_identical(fast, slow)


def test_fastpath_settings_short_from_capped_exit_hands_back_to_python_loop(
    scored_data: MarketData,
) -> None:
    """A capped strategy sell left working after a stop exit closed the position opens a short
    under ``allow_short``; the compiled run hands over to the Python loop when its position
    rules meet that short (the same records, through the loop)."""
    config = ExecutionConfig(
        commission=_COMMISSION, max_volume_participation=1e-4, allow_short=True
    )
    fast, slow = _both(scored_data, _TOP25, [PriceBasedStopLoss(0.05)], config)
    assert (slow.trades["side"] == "short").any()
    assert not fast.compiled
    for name in FRAMES:
        assert getattr(fast, name).equals(getattr(slow, name)), name


def test_fastpath_settings_capped_buy_fills_its_share_of_each_bar() -> None:
    """Hand-checked: 10 % of 300 shares of volume a bar, a 100-share buy fills 30, 30, 30, 10
    on the four bars after the decision, in both drivers."""
    bars = [(10.0, 10.5, 9.5, 10.0)] * 6
    panel = make_panel({"A": bars}, volume=300.0, signals={"score": {"A": [1.0] * 6}})
    data = MarketData.from_frame(panel, signal_columns=["score"])
    config = ExecutionConfig(initial_cash=1_000.0, max_volume_participation=0.1)
    strategy = {"signal": "score", "n": 1, "rebalance_every": 10}
    fast, slow = _both(data, strategy, None, config)
    _assert_identical(fast, slow)
    assert slow.fills["quantity"].to_list() == [30.0, 30.0, 30.0, 10.0]
    assert slow.orders["status"].to_list() == ["filled"]


def test_participation_quantity_caps_and_rounds_both_forms() -> None:
    """Hand-checked: 25 % of 70 shares is 17.5: 17 whole shares, 17.5 fractional; a sell keeps
    its sign; a bar without volume allows none; a small remainder fills whole."""
    cases = [
        ((100.0, 0.25, 70.0, False), 17.0),
        ((100.0, 0.25, 70.0, True), 17.5),
        ((-100.0, 0.25, 70.0, False), -17.0),
        ((100.0, 0.5, 0.0, False), 0.0),
        ((5.0, 1.0, 70.0, False), 5.0),
        ((100.0, 0.1, 29.999999999999996, False), 3.0),
    ]
    for args, expected in cases:
        assert matching.participation_quantity(*args) == expected
        assert matching.participation_quantity_nb(*args) == expected


def test_ledger_setting_decisions_both_forms() -> None:
    """Hand-checked: a sell counts only up to the long shares when shorts are off; an order
    overdrawing the cash by more than the tolerance is refused, a sale never; the cooldown
    refuses a same-direction order within the window only; a close nets the earlier bars'
    orders (a new order only those against it); a level exit cancels a queued reducing order
    of a still-flat symbol; entry levels go live on the entry bar only for step-1 fills."""
    for func, args, expected in [
        (ledger.submission_quantity, (-50.0, 20.0, False), -20.0),
        (ledger.submission_quantity, (-50.0, 20.0, True), -50.0),
        (ledger.submission_quantity, (50.0, 0.0, False), 50.0),
        (ledger.submission_refused, (100.0, 99.0, 0.5), True),
        (ledger.submission_refused, (100.0, 99.5, 0.5), False),
        (ledger.submission_refused, (-10.0, -5.0, 0.0), False),
        (ledger.reentry_refused, (10.0, 7, 1.0, 9, 3), True),
        (ledger.reentry_refused, (10.0, 6, 1.0, 9, 3), False),
        (ledger.reentry_refused, (-10.0, 8, 1.0, 9, 3), False),
        (ledger.netted_by_close, (4, 5, 30.0, 0.0), True),
        (ledger.netted_by_close, (5, 5, 30.0, 0.0), False),
        (ledger.netted_by_close, (4, 5, 30.0, 1.0), False),
        (ledger.netted_by_close, (4, 5, 30.0, -1.0), True),
        (ledger.closed_by_level_exit, (-100.0, 1.0, 0.0), True),
        (ledger.closed_by_level_exit, (100.0, 1.0, 0.0), False),
        (ledger.closed_by_level_exit, (-100.0, 1.0, 50.0), False),
        (ledger.levels_active_from, (7, True, False), 7),
        (ledger.levels_active_from, (7, True, True), 8),
        (ledger.levels_active_from, (7, False, False), 8),
    ]:
        compiled = getattr(ledger, f"{func.__name__}_nb")
        assert func(*args) == expected, (func.__name__, args)
        assert compiled(*args) == expected, (func.__name__, args)


def test_slippage_block_picks_the_order_types_block() -> None:
    by_type = costs.SLIP_BY_TYPE
    assert costs.slippage_block(costs.SLIP_FRACTION, 2) == 0
    assert costs.slippage_block(by_type, 0) == costs.SLIP_TYPE0
    assert costs.slippage_block(by_type, 4) == costs.SLIP_TYPE0 + 4 * costs.N_SLIP
    assert costs.slippage_block(by_type, 4) + costs.N_SLIP == costs.N_COST_PARAMS
    assert costs.slippage_block_nb(by_type, 2) == costs.slippage_block(by_type, 2)


@pytest.mark.parametrize(
    ("slippage", "reason"),
    [
        (
            OrderTypeDependentSlippage(
                {"stop": OrderTypeDependentSlippage({"market": FixedBpsSlippage(1.0)})}
            ),
            "OrderTypeDependentSlippage with OrderTypeDependentSlippage",
        ),
        (
            OrderTypeDependentSlippage(
                {"stop": SpreadAwareSlippage(window=5)}, default=SpreadAwareSlippage(window=20)
            ),
            "OrderTypeDependentSlippage with two models of one kind on different bars",
        ),
    ],
)
def test_fastpath_settings_order_type_slippage_without_compiled_form_takes_python_loop(
    scored_data: MarketData, slippage: OrderTypeDependentSlippage, reason: str
) -> None:
    config = ExecutionConfig(slippage=slippage)
    assert plan.compiled_reason(scored_data, TopNStrategy("score", n=5), None, config) == reason


# ---------------------------------------------------------------------- generated panels
_RULES: dict[str, Callable[[], RiskRule]] = {
    "stop": lambda: PriceBasedStopLoss(0.03),
    "target": lambda: PriceBasedTakeProfit(0.04),
    "trail": lambda: DynamicTrailingStop(initial_trail_pct=0.05, tighten_per_bar=0.002),
    "time": lambda: TimeBasedExit(max_bars=3),
    "breakeven": lambda: BreakEvenRule(0.02, 0.01),
    "partial": lambda: PartialProfitTaking([(0.02, 0.4), (0.05, 0.4)]),
    "atr": lambda: VolatilityScaledStopLoss(1.5, atr_column="atr"),
    "count": lambda: MaxPositionsRule(2),
}
_SLIPPAGES: dict[str, Callable[[], Any]] = {
    "none": lambda: None,
    "fixed_pct": lambda: FixedPercentageSlippage(0.002),
    "by_type": lambda: OrderTypeDependentSlippage(
        {
            "market": SpreadAwareSlippage(0.5, fallback_pct=0.001, window=3, min_periods=2),
            "limit": VolumeAwareSlippage(coefficient=2.0, max_impact=0.05),
        },
        default=FixedBpsSlippage(15.0),
    ),
    "by_type_completed": lambda: OrderTypeDependentSlippage(
        {"stop": VolumeAwareSlippage(coefficient=1.0, volume="completed", volume_window=3)}
    ),
}
_COMMISSIONS: dict[str, Callable[[], Any]] = {
    "percentage": lambda: _COMMISSION,
    "per_share": lambda: PerShareCommission(0.01, minimum=1.0, maximum_pct=0.005),
    "tiered": lambda: TieredCommission([(0.0, 0.002), (2_000.0, 0.001), (50_000.0, 0.0)]),
}
_SCHEMA = {
    "timestamp": pl.Datetime("us", "UTC"),
    "symbol": pl.String,
    **dict.fromkeys(("open", "high", "low", "close", "volume", "score", "atr"), pl.Float64),
}


def _atr(
    rng: np.random.Generator, k: int, high: float, low: float, close: float
) -> tuple[float | None]:
    """A bar's ATR: missing for the first two bars, then 0.5-1.5 times the bar's range."""
    return (None if k < 2 else (high - low) * float(rng.uniform(0.5, 1.5)),)


@st.composite
def _scenario(draw: Any) -> dict[str, Any]:
    n_symbols = draw(st.integers(2, 6))
    n_bars = draw(st.integers(2, 35))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = random_bars(
        rng,
        n_symbols,
        n_bars,
        move=(0.93, 1.07),
        volumes=(0.0, 3.0, 40.0, 500.0, 1e5),
        extra=_atr,
    )
    stops_first = draw(st.booleans())
    return {
        "rows": rows,
        "n": draw(st.integers(1, n_symbols)),
        "every": draw(st.integers(1, 3)),
        "weight": draw(st.sampled_from([None, 0.3, 0.6, 0.9])),
        "rules": draw(st.lists(st.sampled_from(list(_RULES)), unique=True, max_size=5)),
        "config": {
            "bar_event_order": "stops_first" if stops_first else "chronological",
            "exit_conflict": draw(st.sampled_from(["open_sell_wins", "stop_wins"]))
            if stops_first
            else "open_sell_wins",
            "max_volume_participation": draw(st.sampled_from([None, None, 0.05, 0.3, 1.0])),
            "allow_short": draw(st.booleans()),
            "reentry_cooldown_bars": draw(st.sampled_from([0, 0, 1, 3])),
            "stop_activation": draw(st.sampled_from(["next_bar", "entry_bar"])),
            "cash_check": draw(st.sampled_from(["execution", "submission"])),
            "fill": draw(st.sampled_from(["next_open", "close"])),
            "close_at_end": draw(st.booleans()),
            "fractional_shares": draw(st.booleans()),
            "initial_cash": draw(st.sampled_from([1_000.0, 100_000.0])),
        },
        "slippage": draw(st.sampled_from(list(_SLIPPAGES))),
        "commission": draw(st.sampled_from(list(_COMMISSIONS))),
    }


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario())
def test_fastpath_settings_generated_panels_equal_python_loop(sc: dict[str, Any]) -> None:
    panel = pl.DataFrame(sc["rows"], schema=_SCHEMA, orient="row")
    data = MarketData.from_frame(panel, signal_columns=["score", "atr"])
    slippage = _SLIPPAGES[sc["slippage"]]()
    config = ExecutionConfig(
        commission=_COMMISSIONS[sc["commission"]](),
        **({} if slippage is None else {"slippage": slippage}),
        **sc["config"],
    )
    rules = [_RULES[name]() for name in sc["rules"]] or None
    strategy = {"signal": "score", "n": sc["n"], "rebalance_every": sc["every"]}
    strategy["weight"] = sc["weight"]
    assert plan.compiled_reason(data, TopNStrategy(**strategy), None, config) is None
    fast, slow = _both(data, strategy, rules, config)
    shorted = (slow.trades["side"] == "short").any() or (
        slow.open_positions["side"] == "short"
    ).any()
    if fast.compiled or not shorted:
        _assert_identical(fast, slow)
    else:  # a short met position rules: the compiled run handed over to the loop
        for name in FRAMES:
            assert getattr(fast, name).equals(getattr(slow, name)), name


def test_fastpath_settings_kernels_equal_their_python_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each newly compiled setting: the compiled kernel, the same functions run as plain
    Python and the Python loop give the same run (this also keeps the kernel's lines under
    coverage)."""
    from engine.compiled import decisions, passes, topn
    from engine.core import layout
    from engine.core import limits as core_limits
    from engine.risk import kernels

    rng = np.random.default_rng(11)
    rows = []
    for s in range(5):
        price = 40.0 + 15 * s
        for k in range(50):
            if k > 0 and rng.random() < 0.05:
                continue
            o = price * rng.uniform(0.95, 1.05)
            c = price * rng.uniform(0.95, 1.05)
            score = c / price if k % 5 else None
            volume = float(rng.choice([4.0, 30.0, 1e4]))
            rows.append((ts(k), f"S{s}", o, max(o, c) * 1.02, min(o, c) * 0.98, c, volume, score))
            price = c
    schema = {k: v for k, v in _SCHEMA.items() if k != "atr"}
    data = MarketData.from_frame(
        pl.DataFrame(rows, schema=schema, orient="row"), signal_columns=["score"]
    )
    base = {"commission": _COMMISSION, "initial_cash": 5_000.0}
    configs = [
        ExecutionConfig(**base, max_volume_participation=0.2, close_at_end=True),
        ExecutionConfig(**base, max_volume_participation=0.2, allow_short=True),
        ExecutionConfig.preset(
            "vectorbt",
            **base,
            exit_conflict="stop_wins",
            reentry_cooldown_bars=2,
            cash_check="submission",
        ),
        ExecutionConfig(**base, stop_activation="entry_bar", slippage=_SLIPPAGES["by_type"]()),
        ExecutionConfig.preset(
            "backtrader",
            commission=TieredCommission([(0.0, 0.002), (3_000.0, 0.001)]),
            initial_cash=2_000.0,
            cash_check="submission",
            stop_activation="entry_bar",
        ),
        ExecutionConfig(**base, fill="close", max_volume_participation=0.3),
    ]

    def runs(compiled: bool = True) -> list[BacktestResult]:
        out = []
        for k, cfg in enumerate(configs):
            rules = (
                None
                if k == 1
                else [PriceBasedStopLoss(0.03), PriceBasedTakeProfit(0.05), TimeBasedExit(4)]
            )
            manager = None if rules is None else RiskManager(rules)
            # two buys of 70 % each overdraw the cash at submission (config 4)
            strategy = TopNStrategy("score", n=2, weight=0.7 if k == 4 else 0.45)
            out.append(BacktestEngine(data, strategy, manager, cfg, compiled=compiled).run())
        return out

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
    reasons = set(pl.concat([r.rejections["reason"] for r in loop]).to_list())
    assert {
        "netted_by_close_position",
        "reentry_cooldown",
        "insufficient_cash_at_submission",
    } <= reasons
