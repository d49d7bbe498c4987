"""Strategy callbacks, the override check, and TopNStrategy's rebalancing rule."""

from __future__ import annotations

from datetime import datetime

import pytest

from engine import (
    BacktestEngine,
    BarBatch,
    ExecutionConfig,
    MarketData,
    MarketEvent,
    Strategy,
    TopNStrategy,
)
from tests.engine.helpers import make_panel, ts


def _flat(price: float, n: int) -> list[tuple[float, float, float, float]]:
    return [(price, price, price, price)] * n


class Both(Strategy):
    def on_timestamp_batch(
        self, timestamp: datetime, batch: BarBatch, context: dict[str, float]
    ) -> None:
        pass

    def on_market_data(self, event: MarketEvent) -> None:
        pass


class Neither(Strategy):
    pass


@pytest.mark.parametrize("strategy_cls", [Both, Neither])
def test_engine_strategy_overriding_both_or_neither_raises_type_error(strategy_cls: type) -> None:
    data = MarketData.from_frame(make_panel({"AAA": _flat(10, 2)}))
    with pytest.raises(TypeError, match="exactly one"):
        BacktestEngine(data, strategy_cls())


class PerSymbol(Strategy):
    def __init__(self) -> None:
        self.events: list[MarketEvent] = []

    def on_market_data(self, event: MarketEvent) -> None:
        self.events.append(event)
        if event.symbol == "BBB" and event.timestamp == ts(0):
            self.buy("BBB", 3)


def test_on_market_data_called_per_symbol_with_signals_and_context() -> None:
    import polars as pl

    panel = make_panel(
        {"AAA": _flat(10, 2), "BBB": _flat(20, 2)},
        signals={"score": {"AAA": [1.0, 2.0], "BBB": [3.0, None]}},
    )
    context = pl.DataFrame({"timestamp": [ts(0), ts(1)], "vix": [12.0, 13.0]}).with_columns(
        pl.col("timestamp").cast(pl.Datetime("us", "UTC"))
    )
    data = MarketData.from_frame(panel, signal_columns=["score"], context=context)
    strategy = PerSymbol()
    result = BacktestEngine(data, strategy).run()
    assert [(e.symbol, e.signals["score"]) for e in strategy.events][:3] == [
        ("AAA", 1.0),
        ("BBB", 3.0),
        ("AAA", 2.0),
    ]
    assert strategy.events[0].context == {"vix": 12.0}
    assert result.fills["price"].to_list() == [20.0]
    assert result.portfolio_states["vix"].to_list() == [12.0, 13.0]


def _topn_panel() -> MarketData:
    # scores per bar; closes constant so quantities are easy
    scores = {
        "AAA": [3.0, 1.0, 1.0, 1.0],
        "BBB": [2.0, 2.0, 2.0, None],
        "CCC": [1.0, 3.0, 3.0, 3.0],
        "DDD": [2.0, 0.0, 0.0, 0.0],
    }
    panel = make_panel(
        {"AAA": _flat(10, 4), "BBB": _flat(20, 4), "CCC": _flat(40, 4), "DDD": _flat(50, 4)},
        signals={"score": scores},
    )
    return MarketData.from_frame(panel, signal_columns=["score"])


def test_topn_ranks_buys_top_n_ties_by_name_with_floor_quantities() -> None:
    data = _topn_panel()
    result = BacktestEngine(
        data, TopNStrategy("score", n=2), config=ExecutionConfig(initial_cash=1_000.0)
    ).run()
    fills = result.fills
    # bar0: AAA 3, then BBB/DDD tie at 2 → BBB (name); 500 / 10 = 50 AAA, 500 / 20 = 25 BBB
    first = fills.filter(fills["timestamp"] == ts(1))
    assert first["symbol"].to_list() == ["AAA", "BBB"]
    assert first["quantity"].to_list() == [50.0, 25.0]
    # bar1: target {CCC, BBB}: sell AAA first, then buy CCC with 1000/2/40 = 12 shares
    second = fills.filter(fills["timestamp"] == ts(2))
    assert second["symbol"].to_list() == ["AAA", "CCC"]
    assert second["quantity"].to_list() == [-50.0, 12.0]
    # bar3: BBB has no finite score → sold at the next open, which does not exist (end of data)
    assert result.trades["symbol"].to_list() == ["AAA"]


def test_topn_rebalance_every_k_bars_only() -> None:
    data = _topn_panel()
    result = BacktestEngine(
        data,
        TopNStrategy("score", n=2, rebalance_every=2),
        config=ExecutionConfig(initial_cash=1_000.0, fill="close"),
    ).run()
    assert sorted(set(result.fills["timestamp"].to_list())) == [ts(0), ts(2)]


def test_topn_holdings_in_target_not_resized_and_weight_used() -> None:
    data = _topn_panel()
    result = BacktestEngine(
        data,
        TopNStrategy("score", n=1, weight=0.5),
        config=ExecutionConfig(initial_cash=1_000.0, fill="close"),
    ).run()
    # bar0: AAA 500/10 = 50; bar1: sell AAA, buy CCC floor(0.5*1000/40) = 12; bars 2-3: hold
    assert result.fills["quantity"].to_list() == [50.0, -50.0, 12.0]


def test_topn_unknown_signal_raises_at_start() -> None:
    data = _topn_panel()
    with pytest.raises(ValueError, match="'nope' is not a signal"):
        BacktestEngine(data, TopNStrategy("nope", n=2)).run()


@pytest.mark.parametrize(
    "kwargs", [{"n": 0}, {"n": 2, "rebalance_every": 0}, {"n": 2, "weight": 1.5}, {"n": True}]
)
def test_topn_bad_parameters_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        TopNStrategy("score", **kwargs)  # type: ignore[arg-type]
