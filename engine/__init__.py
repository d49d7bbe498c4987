"""ml4t event-driven backtesting engine: polars/NumPy in, polars out, no Dagster.

Example
-------
>>> from engine import BacktestEngine, ExecutionConfig, MarketData, TopNStrategy
>>> # data = MarketData.from_frame(panel, signal_columns=["score"])
>>> # result = BacktestEngine(data, TopNStrategy("score", n=25)).run()
"""

from __future__ import annotations

from engine.chunked import ChunkedMarketData
from engine.config import EXECUTION_PRESETS, ExecutionConfig
from engine.costs import COMMISSION_REGISTRY, SLIPPAGE_REGISTRY
from engine.costs.commission import (
    CommissionModel,
    NoCommission,
    PercentageCommission,
    PerShareCommission,
    PerTradeCommission,
    TieredCommission,
)
from engine.costs.slippage import (
    FixedBpsSlippage,
    FixedPercentageSlippage,
    NoSlippage,
    OrderTypeDependentSlippage,
    SlippageModel,
    SpreadAwareSlippage,
    VolumeAwareSlippage,
)
from engine.data import BarBatch, BarView, MarketData
from engine.engine import BacktestEngine
from engine.events import Fill, MarketEvent
from engine.feature_provider import (
    CallableFeatureProvider,
    FeatureProvider,
    PrecomputedFeatureProvider,
)
from engine.metrics import METRIC_KEYS, compute_metrics
from engine.orders import Order, OrderStatus, OrderType, TimeInForce
from engine.registry import build_commission, build_rule, build_slippage, build_strategy
from engine.results import BacktestResult
from engine.risk import (
    RULE_REGISTRY,
    ExitType,
    OrderDecision,
    PortfolioSnapshot,
    RiskContext,
    RiskDecision,
    RiskManager,
    RiskRule,
)
from engine.risk.batch import BatchDecision, PositionBatch
from engine.risk.rules import (
    BreakEvenRule,
    CompositeRule,
    DynamicTrailingStop,
    FunctionRule,
    MaxDailyLossRule,
    MaxDrawdownRule,
    MaxLeverageRule,
    MaxPositionSizeRule,
    MaxPositionsRule,
    PartialProfitTaking,
    PriceBasedStopLoss,
    PriceBasedTakeProfit,
    RegimeDependentRule,
    SessionEndExit,
    TimeBasedExit,
    VolatilityScaledStopLoss,
    VolatilityScaledTakeProfit,
)
from engine.strategies import STRATEGY_REGISTRY, TopNStrategy
from engine.strategy import Strategy

__all__ = [
    "EXECUTION_PRESETS",
    "CallableFeatureProvider",
    "FeatureProvider",
    "PrecomputedFeatureProvider",
    "BatchDecision",
    "PositionBatch",
    "VolatilityScaledTakeProfit",
    "VolatilityScaledStopLoss",
    "SessionEndExit",
    "RegimeDependentRule",
    "PartialProfitTaking",
    "MaxPositionsRule",
    "MaxPositionSizeRule",
    "MaxLeverageRule",
    "MaxDrawdownRule",
    "MaxDailyLossRule",
    "DynamicTrailingStop",
    "BreakEvenRule",
    "COMMISSION_REGISTRY",
    "METRIC_KEYS",
    "RULE_REGISTRY",
    "SLIPPAGE_REGISTRY",
    "STRATEGY_REGISTRY",
    "BacktestEngine",
    "BacktestResult",
    "BarBatch",
    "BarView",
    "CommissionModel",
    "CompositeRule",
    "ExecutionConfig",
    "ExitType",
    "Fill",
    "FixedBpsSlippage",
    "FixedPercentageSlippage",
    "FunctionRule",
    "ChunkedMarketData",
    "MarketData",
    "MarketEvent",
    "NoCommission",
    "NoSlippage",
    "Order",
    "OrderDecision",
    "OrderStatus",
    "OrderType",
    "OrderTypeDependentSlippage",
    "PerShareCommission",
    "PerTradeCommission",
    "PercentageCommission",
    "PortfolioSnapshot",
    "PriceBasedStopLoss",
    "PriceBasedTakeProfit",
    "RiskContext",
    "RiskDecision",
    "RiskManager",
    "RiskRule",
    "SlippageModel",
    "SpreadAwareSlippage",
    "Strategy",
    "TieredCommission",
    "TimeBasedExit",
    "TimeInForce",
    "TopNStrategy",
    "VolumeAwareSlippage",
    "build_commission",
    "build_rule",
    "build_slippage",
    "build_strategy",
    "compute_metrics",
]
