"""The compiled fast path of the basic rules gives exactly the general path's results."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from engine import (
    BacktestEngine,
    BarBatch,
    ExecutionConfig,
    MarketData,
    MaxDrawdownRule,
    MaxPositionSizeRule,
    MaxPositionsRule,
    PercentageCommission,
    PriceBasedStopLoss,
    PriceBasedTakeProfit,
    RiskManager,
    Strategy,
    TimeBasedExit,
    TopNStrategy,
)
from engine.risk import kernels
from engine.risk.rules.dynamic import DynamicTrailingStop
from tests.engine.fastpath_helpers import use_python_kernels
from tests.engine.helpers import momentum_scores

# Two stop-setting rules on purpose: the registration warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:rules .* all set a stop-loss level:UserWarning")


# Subclasses are not eligible for the fast path: they run through the general, per-position
# RiskContext path with the very same formulas.
class _Stop(PriceBasedStopLoss):
    pass


class _Trail(DynamicTrailingStop):
    pass


class _Time(TimeBasedExit):
    pass


class _Target(PriceBasedTakeProfit):
    pass


class _LongShort(Strategy):
    """Long the 10 highest scores, short the 10 lowest; 4 % of equity each (test only)."""

    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        broker = self.broker
        sig = batch["score"]
        ok = np.flatnonzero(np.isfinite(sig))
        ranked = ok[np.argsort(-sig[ok], kind="stable")]
        sides = {int(batch.ids[k]): 1.0 for k in ranked[:10]}
        sides.update({int(batch.ids[k]): -1.0 for k in ranked[-10:]})
        closes = dict(zip(batch.ids.tolist(), batch.close.tolist(), strict=True))
        symbols = broker.data.symbols
        for sid in broker.held().tolist():
            if sides.get(sid) != np.sign(broker.qty[sid]):
                broker.close_position(str(symbols[sid]))
        budget = 0.04 * broker.equity()
        for sid, side in sides.items():
            if broker.qty[sid] == 0 and broker.pending[sid] == 0 and closes[sid] > 0:
                broker.submit(str(symbols[sid]), side * broker.round_quantity(budget / closes[sid]))


def _run(
    panel: pl.DataFrame,
    rules: list,
    config: ExecutionConfig,
    strategy: Strategy | None = None,
    compiled: bool = True,
) -> dict[str, pl.DataFrame]:
    data = MarketData.from_frame(panel, signal_columns=["score"])
    result = BacktestEngine(
        data,
        strategy or TopNStrategy("score", n=25, weight=0.04),
        risk_manager=RiskManager(rules),
        config=config,
        compiled=compiled,
    ).run()
    return {"trades": result.trades, "fills": result.fills, "states": result.portfolio_states}


def _fast_rules() -> list:
    return [
        PriceBasedStopLoss(0.05),
        DynamicTrailingStop(initial_trail_pct=0.08, tighten_per_bar=0.001),
        TimeBasedExit(max_bars=10),
        PriceBasedTakeProfit(0.10),
    ]


def _general_rules() -> list:
    return [
        _Stop(0.05),
        _Trail(initial_trail_pct=0.08, tighten_per_bar=0.001),
        _Time(max_bars=10),
        _Target(0.10),
    ]


# exit reasons carry the rule's class name: map the subclasses back before comparing
_NAMES = {"_Stop": "PriceBasedStopLoss", "_Trail": "DynamicTrailingStop",
          "_Time": "TimeBasedExit", "_Target": "PriceBasedTakeProfit"}  # fmt: skip


def _assert_same(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    b["trades"] = b["trades"].with_columns(pl.col("exit_reason").replace(_NAMES))
    b["fills"] = b["fills"].with_columns(pl.col("reason").replace(_NAMES))
    for name in a:
        assert a[name].equals(b[name]), name


@pytest.fixture(scope="module")
def scored(sp500_panel: pl.DataFrame) -> pl.DataFrame:
    return momentum_scores(sp500_panel, datetime(2015, 1, 1, tzinfo=UTC))


_COMMISSION = PercentageCommission(0.001)
_CONFIGS = {
    "next_open": ExecutionConfig(commission=_COMMISSION),
    "close": ExecutionConfig(fill="close", commission=_COMMISSION),
    "stops_first": ExecutionConfig.preset("backtrader", commission=_COMMISSION),
    "entry_bar": ExecutionConfig(stop_activation="entry_bar", commission=_COMMISSION),
    "allow_short": ExecutionConfig(allow_short=True, commission=_COMMISSION),
}


@pytest.mark.parametrize("setting", list(_CONFIGS))
def test_basic_rules_fast_path_equals_general_path(scored: pl.DataFrame, setting: str) -> None:
    assert RiskManager(_fast_rules()).basic_kernel() is not None
    assert RiskManager(_general_rules()).basic_kernel() is None
    config = _CONFIGS[setting]
    a, b = _run(scored, _fast_rules(), config), _run(scored, _general_rules(), config)
    assert a["trades"].height > 100
    rule_exits = set(a["trades"]["exit_reason"].unique()) - {"strategy"}
    # the rules really fire (the 5 % stop is overtaken by the trail at the entry bar's step)
    assert {"DynamicTrailingStop", "PriceBasedTakeProfit", "TimeBasedExit"} <= rule_exits
    _assert_same(a, b)


def test_basic_rules_fast_path_with_shorts_takes_the_general_path(scored: pl.DataFrame) -> None:
    config = ExecutionConfig(allow_short=True, commission=_COMMISSION)
    a = _run(scored, _fast_rules(), config, _LongShort())
    b = _run(scored, _general_rules(), config, _LongShort())
    short = a["trades"].filter(pl.col("side") == "short")
    assert short.height > 50
    assert set(short["exit_reason"].unique()) - {"strategy"}  # rules fire on shorts too
    _assert_same(a, b)


def test_fast_path_keeps_order_rules_at_hook_b(scored: pl.DataFrame) -> None:
    """Portfolio limits that only validate orders run beside the compiled position rules."""

    def limits() -> list:
        return [MaxPositionsRule(15), MaxPositionSizeRule(0.03), MaxDrawdownRule(0.05)]

    fast = RiskManager([*_fast_rules(), *limits()])
    kernel = fast.basic_kernel()
    assert kernel is not None and len(kernel.rules) == 4  # the limits stay at hook B
    assert (
        RiskManager([*_fast_rules(), MaxDrawdownRule(0.05, action="flatten")]).basic_kernel()
        is None
    )
    config = _CONFIGS["next_open"]
    data = MarketData.from_frame(scored, signal_columns=["score"])
    strategy = TopNStrategy("score", n=25, weight=0.04)
    result = BacktestEngine(data, strategy, risk_manager=fast, config=config).run()
    assert set(result.rejections["rule"].unique()) >= {"MaxPositionsRule", "MaxPositionSizeRule"}
    a = {"trades": result.trades, "fills": result.fills, "states": result.portfolio_states}
    _assert_same(a, _run(scored, [*_general_rules(), *limits()], config))


def test_compiled_kernels_equal_their_python_source(
    scored: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The numba-compiled kernels and the same functions run as plain Python give the same
    runs (this also exercises the kernels' source lines under coverage): the fused chronological
    step, the stops-first steps, entry levels set at once (fills at the close) and a long-short
    book (general path for shorts, level checks on both sides)."""
    cases = {
        "next_open": None,
        "stops_first": None,
        "close": None,
        "allow_short": _LongShort,
    }

    def runs() -> dict[str, dict[str, pl.DataFrame]]:
        return {
            setting: _run(
                scored,
                _fast_rules(),
                _CONFIGS[setting],
                strategy() if strategy is not None else None,
                compiled=False,  # the loop's kernels (the compiled driver has its own test)
            )
            for setting, strategy in cases.items()
        }

    compiled = runs()
    use_python_kernels(monkeypatch, kernels)
    for setting, got in runs().items():
        for name, expected in compiled[setting].items():
            assert got[name].equals(expected), (setting, name)
