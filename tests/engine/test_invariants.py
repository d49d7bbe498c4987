"""Hypothesis invariants over generated bars and order streams."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import (
    BacktestEngine,
    ExecutionConfig,
    FixedPercentageSlippage,
    MarketData,
    MaxLeverageRule,
    MaxPositionSizeRule,
    MaxPositionsRule,
    PercentageCommission,
    PriceBasedStopLoss,
    PriceBasedTakeProfit,
    RiskManager,
    TimeBasedExit,
)
from tests.engine.helpers import Script, ts

SYMBOLS = ["AAA", "BBB", "CCC"]


@st.composite
def scenario(draw: Any) -> dict[str, Any]:
    n_bars = draw(st.integers(min_value=2, max_value=15))
    rows = []
    for sym in SYMBOLS:
        price = draw(st.floats(min_value=5, max_value=200))
        for k in range(n_bars):
            if k > 0 and draw(st.integers(0, 9)) == 0:
                continue  # missing bar
            o = price * draw(st.floats(min_value=0.9, max_value=1.1))
            c = price * draw(st.floats(min_value=0.9, max_value=1.1))
            h = max(o, c) * draw(st.floats(min_value=1.0, max_value=1.05))
            lo = min(o, c) * draw(st.floats(min_value=0.95, max_value=1.0))
            rows.append((ts(k), sym, o, h, lo, c, 1000.0))
            price = c
    orders = draw(
        st.lists(
            st.tuples(
                st.integers(0, n_bars - 1),
                st.sampled_from(SYMBOLS),
                st.integers(-60, 60).filter(lambda q: q != 0),
                st.sampled_from(["market", "limit", "stop", "trail", "bracket", "day"]),
            ),
            max_size=12,
        )
    )
    return {
        "rows": rows,
        "orders": orders,
        "fill": draw(st.sampled_from(["next_open", "close"])),
        "allow_short": draw(st.booleans()),
        "rules": draw(st.sampled_from(["none", "exits", "portfolio"])),
        "cap": draw(st.sampled_from([None, 0.02])),
    }


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_engine_invariants_hold_for_random_orders(sc: dict[str, Any]) -> None:
    panel = pl.DataFrame(
        sc["rows"],
        schema=["timestamp", "symbol", "open", "high", "low", "close", "volume"],
        orient="row",
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    data = MarketData.from_frame(panel)
    plan: dict[int, Any] = {}
    for k, sym, q, kind in sc["orders"]:

        def act(s: Any, sym: str = sym, q: int = q, kind: str = kind) -> None:
            price = s.get_price(sym)
            if price != price:  # symbol has no price yet
                return
            kw = {}
            if kind == "limit":
                kw["limit_price"] = price * (0.98 if q > 0 else 1.02)
            elif kind == "stop":
                kw["stop_price"] = price * (1.02 if q > 0 else 0.98)
            elif kind == "trail":
                kw["trail_percent"] = 0.03
            elif kind == "day":
                kw["limit_price"] = price * (0.99 if q > 0 else 1.01)
                kw["tif"] = "DAY"
            elif kind == "bracket":
                up, down = price * 1.03, price * 0.97
                kw["take_profit"], kw["stop_loss"] = (up, down) if q > 0 else (down, up)
            (s.buy if q > 0 else s.sell)(sym, abs(q), **kw)

        previous = plan.get(k)
        plan[k] = lambda s, a=act, p=previous: (p(s) if p else None, a(s))
    cfg = ExecutionConfig(
        fill=sc["fill"],
        allow_short=sc["allow_short"],
        initial_cash=5_000.0,
        commission=PercentageCommission(0.001),
        slippage=FixedPercentageSlippage(0.001),
        max_volume_participation=sc["cap"],
    )
    risk = {
        "none": None,
        "exits": RiskManager(
            [PriceBasedStopLoss(0.03), PriceBasedTakeProfit(0.04), TimeBasedExit(3)]
        ),
        "portfolio": RiskManager(
            [MaxPositionsRule(2), MaxPositionSizeRule(0.3), MaxLeverageRule(1.0)]
        ),
    }[sc["rules"]]
    result = BacktestEngine(data, Script(plan), risk, cfg).run()
    fills = result.fills
    states = result.portfolio_states

    # every raw fill price lies within its bar's [low, high]
    joined = fills.join(panel, on=["timestamp", "symbol"], how="left")
    assert joined["low"].null_count() == 0  # never a fill on a bar the symbol lacks
    px = joined["price_before_slippage"].to_numpy()
    assert np.all(px >= joined["low"].to_numpy() - 1e-9)
    assert np.all(px <= joined["high"].to_numpy() + 1e-9)

    # filled quantity never above the order's
    orders = result.orders
    assert np.all(
        np.abs(orders["filled"].to_numpy()) <= np.abs(orders["quantity"].to_numpy()) + 1e-9
    )

    # equity = cash + Σ quantity × last close, rebuilt from the fills independently
    qty = {s: 0.0 for s in SYMBOLS}
    mark = {s: float("nan") for s in SYMBOLS}
    cash = 5_000.0
    fill_rows = fills.rows(named=True)
    bars = panel.sort("timestamp").partition_by("timestamp", as_dict=True, maintain_order=True)
    for state, (key, bar) in zip(states.rows(named=True), bars.items(), strict=True):
        t = key[0]
        for f in (f for f in fill_rows if f["timestamp"] == t):
            qty[f["symbol"]] += f["quantity"]
            cash -= f["quantity"] * f["price"] + f["commission"]
        for sym, close in zip(bar["symbol"], bar["close"], strict=True):
            mark[sym] = close
        value = sum(q * mark[s] for s, q in qty.items() if q != 0)
        assert abs(state["cash"] - cash) <= 1e-6 * max(1.0, abs(cash))
        assert abs(state["equity"] - (cash + value)) <= 1e-6 * max(1.0, abs(cash + value))
        if not sc["allow_short"]:
            assert state["cash"] >= -1e-6
            assert all(q >= -1e-9 for q in qty.values())
