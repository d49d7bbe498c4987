"""A parity scenario through our engine: the signal strategy, the risk rules and the run under a
framework's execution preset (:func:`run_ml4t_scenario`)."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import polars as pl

from ml4t_pipeline.lib.crossval.scenario_inputs import ScenarioData
from ml4t_pipeline.lib.crossval.scenario_spec import Scenario


def _make_strategy(scenario: Scenario, data: ScenarioData) -> Any:
    from engine import Strategy

    close = data.inputs.close.to_numpy()

    class ScenarioStrategy(Strategy):
        """Trades the scenario's precomputed signals (read by bar index, like the drivers)."""

        def on_start(self) -> None:
            self._bar = 0

        def on_timestamp_batch(self, timestamp: Any, batch: Any, context: Any) -> None:
            i = self._bar
            self._bar += 1
            if scenario.kind == "target_weights":
                if i % scenario.rebalance_every == 0:
                    for symbol in data.symbols:
                        self.order_target_percent(symbol, scenario.target_weight)
                return
            for j, symbol in enumerate(data.symbols):
                pos = self.get_position(symbol)
                flat = pos == 0
                exit_now = (pos > 0 and data.exit_long[i, j]) or (pos < 0 and data.exit_short[i, j])
                if scenario.bracket is None and exit_now:
                    self.close_position(symbol)
                    flat = True
                if not flat or (pos == 0 and self.open_orders(symbol)):
                    continue
                if scenario.direction != "short" and data.entry_long[i, j]:
                    self._enter(symbol, data.quantity[j], close[i, j])
                elif scenario.direction != "long" and data.entry_short[i, j]:
                    self._enter(symbol, -data.quantity[j], close[i, j])

        def _enter(self, symbol: str, qty: float, close: float) -> None:
            if qty == 0:
                return
            side = self.buy if qty > 0 else self.sell
            sign = 1.0 if qty > 0 else -1.0
            kwargs: dict[str, Any] = {}
            if scenario.entry_order == "limit":
                kwargs = {"limit_price": close * (1 - sign * scenario.entry_offset), "tif": "DAY"}
            elif scenario.entry_order == "stop":
                kwargs = {"stop_price": close * (1 + sign * scenario.entry_offset), "tif": "DAY"}
            if scenario.bracket is not None:
                stop_pct, target_pct = scenario.bracket
                kwargs["stop_loss"] = close * (1 - sign * stop_pct)
                kwargs["take_profit"] = close * (1 + sign * target_pct)
            side(symbol, abs(qty), **kwargs)

    return ScenarioStrategy()


def _risk_manager(scenario: Scenario, framework: str) -> Any:
    from engine import (
        DynamicTrailingStop,
        PriceBasedStopLoss,
        PriceBasedTakeProfit,
        RiskManager,
        TimeBasedExit,
    )

    rules: list[Any] = []
    if scenario.stop_loss is not None:
        rules.append(PriceBasedStopLoss(scenario.stop_loss))
    if scenario.trailing is not None:
        settings = scenario.trail_settings.get(framework, {})
        rules.append(DynamicTrailingStop(initial_trail_pct=scenario.trailing, **settings))
    if scenario.take_profit is not None:
        rules.append(PriceBasedTakeProfit(scenario.take_profit))
    if scenario.time_exit is not None:
        rules.append(TimeBasedExit(scenario.time_exit))
    if not rules:
        return None
    with warnings.catch_warnings():
        # a fixed stop beside a trailing stop is the scenario (the tighter level wins)
        warnings.filterwarnings("ignore", message="rules .* all set a stop-loss level")
        return RiskManager(rules)


def run_ml4t_scenario(scenario: Scenario, data: ScenarioData, framework: str) -> Any:
    """Run ``scenario`` through our engine under ``framework``'s preset.

    Parameters
    ----------
    scenario : Scenario
    data : ScenarioData
    framework : {"backtrader", "vectorbt"}
        The preset (``ExecutionConfig.preset(framework)`` plus the scenario's overrides).

    Returns
    -------
    FrameworkRun
        ``framework="ml4t"``; ``settings`` holds the preset and the overrides.
    """
    from engine import BacktestEngine, MarketData
    from ml4t_pipeline.lib.crossval.compare import FrameworkRun, run_ml4t
    from ml4t_pipeline.lib.crossval.reference import ReferenceSpec

    settings = {"preset": framework, **scenario.engine_overrides.get(framework, {})}
    if scenario.trailing is not None:
        settings.update(scenario.trail_settings.get(framework, {}))
    if scenario.kind == "ranked":
        from engine import TopNStrategy

        strategy: Any = TopNStrategy("score", n=scenario.n_top, weight=scenario.target_weight)
        market = MarketData.from_frame(data.inputs.panel, signal_columns=["score"])
    if scenario.kind == "topn":
        from engine import EXECUTION_PRESETS

        run = run_ml4t(data.inputs, ReferenceSpec(), **EXECUTION_PRESETS[framework])
        return replace(run, settings=settings)
    if scenario.kind != "ranked":
        strategy = _make_strategy(scenario, data)
        market = MarketData.from_frame(data.inputs.panel.drop("score"))
    result = BacktestEngine(
        market,
        strategy,
        _risk_manager(scenario, framework),
        scenario.engine_config(framework),
    ).run()
    fills = result.fills.select(
        "timestamp",
        pl.col("symbol").cast(pl.String),
        "quantity",
        "price",
        "commission",
        pl.col("order_type").alias("reason"),
    ).sort("timestamp", "symbol", maintain_order=True)
    rejected = result.rejections.filter(pl.col("event") == "rejected").height
    return FrameworkRun(
        framework="ml4t",
        fills=fills,
        final_equity=float(result.final_equity),
        n_closed_trades=result.trades.height,
        settings=settings,
        run_seconds=float(result.run_seconds),
        n_rejected=rejected,
    )
