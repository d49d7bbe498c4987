"""The parity scenario catalogue (issue 31): one execution feature per scenario, on real data.

Every signal scenario trades the same per-symbol crossover signals on real S&P 500 bars
(``sp500_5yr_daily_ohlcv.parquet``): the ``fast``-bar simple moving average of the close
crossing above the ``slow``-bar one is a long entry (short exit), crossing below a long exit
(short entry), both known at the bar's close. Each symbol trades a fixed number of shares,
``floor(position_value / first close)``, so the three frameworks size every order identically
without reading equity. A scenario then switches on one feature (a stop-loss, a commission
model, a limit entry, ...) and says which framework can express it and which setting explains
a remaining gap.

Drivers, each written against its own framework's API:

- ours: :class:`ScenarioStrategy` (``engine.Strategy``) + ``engine.RiskManager`` rules under a
  named execution preset (``ExecutionConfig.preset``);
- Backtrader: ``parity_backtrader.run_backtrader_scenario`` (a ``bt.Strategy`` with native
  ``Stop`` / ``Limit`` / ``StopTrail`` / bracket orders, ``BackBroker`` slippage, commission and
  volume filler);
- VectorBT: ``parity_vectorbt.run_vectorbt_scenario`` (``Portfolio.from_signals`` /
  ``from_orders``: ``sl_stop``, ``tp_stop``, ``sl_trail``, ``fees``, ``fixed_fees``,
  ``slippage``).

The top-N scenario (``topn_stop``) reuses the issue-7 drivers (``backtrader_run``,
``vectorbt_run``); its VectorBT run is written as ``from_order_func`` callbacks that restate our
semantics, so it is marked ``driver="callbacks"`` in the matrix.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from ml4t_pipeline.lib.crossval.reference import (
    SP500_FILE,
    ReferenceInputs,
    build_reference_inputs,
    select_clean_symbols,
)

FRAMEWORKS: tuple[str, ...] = ("backtrader", "vectorbt")
"""Reference frameworks of the matrix, in table order."""

SMALL_PANEL_SYMBOLS = 12
"""Symbols of the default panel (evenly spaced over the clean S&P symbols, by name)."""


@dataclass(frozen=True)
class Scenario:
    """One row group of the parity matrix: a strategy variant and how each framework runs it.

    Parameters
    ----------
    name : str
        Identifier (snake case), the ``scenario`` column of the matrix.
    title : str
        One-line description for the docs table.
    kind : {"signals", "target_weights", "topn", "ranked"}
        ``signals``: the crossover signals (module docstring). ``target_weights``: every
        ``rebalance_every`` bars, target ``target_weight`` of equity in every symbol
        (``order_target_percent``). ``topn``: the issue-7 reference strategy through its own
        drivers. ``ranked``: ``engine.TopNStrategy`` on the 20-day return (``n_top``,
        ``target_weight`` of equity per new position, every bar) with the scenario's rules,
        against a Backtrader strategy that ranks and sizes the same way.
    direction : {"long", "short", "both"}
    stop_loss, take_profit, trailing : float, optional
        Fractions from the entry fill (trailing: from the best price since entry).
    bracket : tuple of (float, float), optional
        ``(stop_pct, target_pct)``: the entry carries absolute stop-loss / take-profit children
        at the decision close × (1 ∓ pct); exits come only from the children.
    time_exit : int, optional
        Exit at the close of the first bar with ``bars_held >= time_exit`` (entry bar = 0).
    entry_order : {"market", "limit", "stop"}
        Entry order type; limit / stop entries are day orders at the decision close
        × (1 ∓ ``entry_offset``) (limit below, stop above for a long).
    entry_offset : float
    commission : tuple of (str, float), optional
        ``("percent", rate)`` of traded value or ``("per_share", currency per share)``.
    slippage : tuple of (str, float), optional
        ``("percent", fraction)`` or ``("fixed", currency per share)``, against the trader.
    fill : {"next_open", "close"}
    volume_cap : float, optional
        Largest fraction of a bar's volume one order may fill on that bar.
    initial_cash, position_value : float
        Currency.
    n_bars : int, optional
        Use only the first ``n_bars`` bars of the panel.
    n_symbols : int, optional
        Use only the first ``n_symbols`` symbols of the panel.
    rebalance_every, target_weight : int, float
        ``target_weights`` scenarios (``target_weight`` also sizes ``ranked`` entries).
    n_top : int
        ``ranked`` scenarios: symbols held.
    not_expressed : dict of str to str
        Framework → why the scenario cannot be written with that framework's own API.
    engine_overrides : dict of str to dict
        Framework → extra ``ExecutionConfig`` fields our run uses beside the preset when
        compared with that framework (e.g. VectorBT ``from_signals``: ``exit_conflict =
        "stop_wins"``).
    knobs : dict of str to str
        Framework → the semantic setting that explains a remaining gap (empty when none is
        expected).
    fast, slow : int
        Moving-average windows, bars.
    target_rounding : {"position", "order"}
        ``target_weights`` only. ``position``: our ``order_target_percent`` helper (the target
        position is rounded down to whole shares, so a sell rounds up). ``order``: the
        strategy computes ``target_shares - position`` itself and truncates that order size
        toward zero, as Backtrader's ``order_target_percent`` (``getsize`` of the value
        difference) and VectorBT's ``size_granularity`` do.
    """

    name: str
    title: str
    kind: str = "signals"
    direction: str = "long"
    stop_loss: float | None = None
    take_profit: float | None = None
    trailing: float | None = None
    bracket: tuple[float, float] | None = None
    time_exit: int | None = None
    entry_order: str = "market"
    entry_offset: float = 0.0
    commission: tuple[str, float] | None = None
    slippage: tuple[str, float] | None = None
    fill: str = "next_open"
    volume_cap: float | None = None
    initial_cash: float = 1_000_000.0
    position_value: float = 10_000.0
    n_bars: int | None = None
    n_symbols: int | None = None
    rebalance_every: int = 21
    target_weight: float = 0.0
    n_top: int = 3
    not_expressed: dict[str, str] = field(default_factory=dict)
    engine_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    knobs: dict[str, str] = field(default_factory=dict)
    fast: int = 10
    slow: int = 30
    target_rounding: str = "position"

    def __post_init__(self) -> None:
        if self.kind not in ("signals", "target_weights", "topn", "ranked"):
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if self.direction not in ("long", "short", "both"):
            raise ValueError(f"{self.name}: unknown direction {self.direction!r}")
        if self.entry_order not in ("market", "limit", "stop"):
            raise ValueError(f"{self.name}: unknown entry_order {self.entry_order!r}")
        if self.target_rounding not in ("position", "order"):
            raise ValueError(f"{self.name}: unknown target_rounding {self.target_rounding!r}")
        if self.fill not in ("next_open", "close"):
            raise ValueError(f"{self.name}: unknown fill {self.fill!r}")
        unknown = sorted(set(self.not_expressed) - set(FRAMEWORKS))
        if unknown:
            raise ValueError(f"{self.name}: not_expressed names unknown frameworks {unknown}")

    @property
    def has_levels(self) -> bool:
        """True when positions carry stop-loss / take-profit / trailing levels."""
        return any(x is not None for x in (self.stop_loss, self.take_profit, self.trailing))

    def engine_config(self, framework: str) -> Any:
        """Our ``ExecutionConfig`` for the comparison with ``framework`` (its preset; no
        preset for a framework without one, e.g. Zipline)."""
        from engine import (
            EXECUTION_PRESETS,
            ExecutionConfig,
            FixedPercentageSlippage,
            NoCommission,
            NoSlippage,
            PercentageCommission,
            PerShareCommission,
        )

        commission: Any = NoCommission()
        if self.commission is not None:
            kind, value = self.commission
            commission = (
                PercentageCommission(value) if kind == "percent" else PerShareCommission(value)
            )
        slippage: Any = NoSlippage()
        if self.slippage is not None:
            kind, value = self.slippage
            slippage = (
                FixedPercentageSlippage(value) if kind == "percent" else FixedAmountSlippage(value)
            )
        fields: dict[str, Any] = {
            "fill": self.fill,
            "commission": commission,
            "slippage": slippage,
            "initial_cash": self.initial_cash,
            "allow_short": self.direction != "long",
            "max_volume_participation": self.volume_cap,
            **self.engine_overrides.get(framework, {}),
        }
        if framework in EXECUTION_PRESETS:
            return ExecutionConfig.preset(framework, **fields)
        return ExecutionConfig(**fields)  # no preset (Zipline: fill="close", see parity_zipline)


def _fixed_amount_slippage_class() -> type:
    from engine import SlippageModel

    class _FixedAmountSlippage(SlippageModel):
        """A fixed amount per share against the trader (Backtrader ``slip_fixed``).

        ``buy: price + amount``; ``sell: price - amount`` (currency per share, >= 0).
        """

        def __init__(self, amount: float) -> None:
            if not (math.isfinite(amount) and amount >= 0):
                raise ValueError(f"amount must be a finite number >= 0, got {amount!r}")
            self.amount = float(amount)

        def __repr__(self) -> str:
            return f"FixedAmountSlippage(amount={self.amount})"

        def fill_price(self, price: float, quantity: float, bar: Any, order_type: str) -> float:
            return price + self.amount if quantity > 0 else price - self.amount

    return _FixedAmountSlippage


def FixedAmountSlippage(amount: float) -> Any:  # noqa: N802 - reads as the model's class name
    """A slippage model moving every fill ``amount`` currency per share against the trader.

    The engine has fractional models only (``FixedPercentageSlippage``, ``FixedBpsSlippage``);
    this small ``engine.SlippageModel`` is Backtrader's ``slip_fixed`` for the parity scenario.

    Raises
    ------
    ValueError
        ``amount`` negative or not finite.
    """
    return _fixed_amount_slippage_class()(amount)


_NO_LIMIT_VBT = (
    "open-source VectorBT 1.2.0 has no limit or stop entry orders (from_signals fills "
    "signals at `price`; there is no pending order book)"
)
_ONE_SL_SLOT = (
    "from_signals has one stop-loss slot: sl_stop is either fixed or trailing (sl_trail), "
    "so a fixed stop and a trailing stop cannot both be armed"
)
_TRAIL_BT = (
    "trailing reference price: Backtrader's StopTrail ratchets on each bar's close "
    "(Order.trailadjust(close)) and starts from the close of the fill bar; ours ratchets on "
    "the highs (lows for shorts) from the entry fill. No engine setting trails on closes; "
    "the driver's trail_on_highs=True closes the gap"
)
_TRAIL_VBT = (
    "trailing high-water mark: from_signals starts it at the entry fill and updates it with "
    "the high only on bars after the entry bar; ours includes the entry bar's high (after "
    "the open fill). No engine setting excludes the entry bar; the driver's "
    "trail_includes_entry_bar=True closes it but for entry bars that rally past the trail"
)
_STOP_WINS = {"vectorbt": {"exit_conflict": "stop_wins"}}
_RANKED_VBT = (
    "from_signals cannot rank symbols and size each entry from the equity at the decision "
    "close; the issue-7 from_order_func callbacks (topn_stop) restate our rules and carry "
    "only a fixed stop"
)
_COC_BT = (
    "cheat-on-close timing: Backtrader (coc=True) executes the close fill in the next bar's "
    "broker cycle, so the stop submitted on its notification is first checked two bars after "
    "the entry close; ours (fill='close', stop_activation='next_bar') checks it on the next "
    "bar. No engine setting delays the stop by a further bar."
)
_BRACKET_VBT = (
    "bracket stop above the entry fill: when the entry opens through the bracket's absolute "
    "stop, VectorBT's sl_stop (a fraction >= 0 of the entry fill) cannot place the level "
    "there (clipped to the fill); ours and Backtrader keep the absolute level"
)
_TARGET_ROUNDING = (
    "target rounding: order_target_percent floors the target position (a sell rounds up); "
    "Backtrader (getsize of the value difference) and VectorBT (size_granularity) truncate "
    "the order size. Scenario setting target_rounding='order' closes the gap."
)


def catalogue() -> list[Scenario]:
    """Every scenario of the parity matrix, in table order.

    Returns
    -------
    list of Scenario
        At least 16 scenarios; names are unique.
    """
    sc = [
        Scenario("long_only", "Long only, market orders at the next open"),
        Scenario(
            "long_short",
            "Long/short: a crossover reverses the position",
            direction="both",
        ),
        Scenario("short_only", "Short only", direction="short"),
        Scenario(
            "stop_loss",
            "Long, 4 % stop-loss from the entry fill",
            stop_loss=0.04,
            engine_overrides=_STOP_WINS,
            knobs={"vectorbt": "exit_conflict=stop_wins (from_signals: stop before signal)"},
        ),
        Scenario(
            "take_profit",
            "Long, 6 % take-profit",
            take_profit=0.06,
            engine_overrides=_STOP_WINS,
        ),
        Scenario(
            "stop_loss_take_profit",
            "Long, 4 % stop-loss and 6 % take-profit (stop wins a bar touching both)",
            stop_loss=0.04,
            take_profit=0.06,
            engine_overrides=_STOP_WINS,
        ),
        Scenario(
            "commission_percent",
            "Long, 0.1 % commission on traded value",
            commission=("percent", 0.001),
        ),
        Scenario(
            "commission_per_share",
            "Long, $0.005 per share commission",
            commission=("per_share", 0.005),
        ),
        Scenario(
            "slippage_percent",
            "Long, 0.05 % slippage against the trader",
            slippage=("percent", 0.0005),
        ),
        Scenario(
            "slippage_fixed",
            "Long, $0.02 per share slippage against the trader",
            slippage=("fixed", 0.02),
        ),
        Scenario(
            "trailing_stop",
            "Long, 5 % trailing stop",
            trailing=0.05,
            engine_overrides=_STOP_WINS,
            knobs={"backtrader": _TRAIL_BT, "vectorbt": _TRAIL_VBT},
        ),
        Scenario(
            "short_trailing_stop",
            "Short, 5 % trailing stop",
            direction="short",
            trailing=0.05,
            engine_overrides=_STOP_WINS,
            knobs={"backtrader": _TRAIL_BT, "vectorbt": _TRAIL_VBT},
        ),
        Scenario(
            "trailing_take_profit",
            "Long, 5 % trailing stop and 8 % take-profit",
            trailing=0.05,
            take_profit=0.08,
            engine_overrides=_STOP_WINS,
            knobs={"backtrader": _TRAIL_BT, "vectorbt": _TRAIL_VBT},
        ),
        Scenario(
            "trailing_stop_loss",
            "Long, 6 % trailing stop and 3 % fixed stop-loss",
            trailing=0.06,
            stop_loss=0.03,
            not_expressed={"vectorbt": _ONE_SL_SLOT},
            knobs={"backtrader": _TRAIL_BT},
        ),
        Scenario(
            "three_rules",
            "Long, 3 % stop-loss, 6 % trailing stop and 8 % take-profit",
            stop_loss=0.03,
            trailing=0.06,
            take_profit=0.08,
            not_expressed={"vectorbt": _ONE_SL_SLOT},
            knobs={"backtrader": _TRAIL_BT},
        ),
        Scenario(
            "bracket",
            "Long bracket: market entry with a 4 % stop and an 8 % target child (no signal exit)",
            bracket=(0.04, 0.08),
            engine_overrides=_STOP_WINS,
            knobs={"vectorbt": _BRACKET_VBT},
        ),
        Scenario(
            "limit_entry",
            "Long, day limit entry 1 % below the decision close",
            entry_order="limit",
            entry_offset=0.01,
            not_expressed={"vectorbt": _NO_LIMIT_VBT},
        ),
        Scenario(
            "stop_entry",
            "Long, day stop entry 1 % above the decision close",
            entry_order="stop",
            entry_offset=0.01,
            not_expressed={"vectorbt": _NO_LIMIT_VBT},
        ),
        Scenario(
            "volume_cap",
            "Long, each order fills at most 0.002 % of the bar's volume per bar",
            volume_cap=2e-5,
            position_value=50_000.0,
            initial_cash=5_000_000.0,
            not_expressed={
                "vectorbt": "from_signals/from_orders have no volume participation limit "
                "(an order fills whole or is refused)"
            },
        ),
        Scenario(
            "time_exit",
            "Long, exit after 10 bars held (or on the signal)",
            time_exit=10,
        ),
        Scenario(
            "same_close",
            "Long with a 4 % stop-loss, market orders at the decision bar's close",
            fill="close",
            stop_loss=0.04,
            engine_overrides=_STOP_WINS,
            knobs={"backtrader": _COC_BT},
        ),
        Scenario(
            "target_weights",
            "Rebalance to 7 % of equity in each symbol every 21 bars",
            kind="target_weights",
            target_weight=0.07,
            commission=("percent", 0.001),
            knobs={"backtrader": _TARGET_ROUNDING, "vectorbt": _TARGET_ROUNDING},
        ),
        Scenario(
            "target_weights_order_rounding",
            "Rebalance to 7 % of equity every 21 bars, order size truncated (as the frameworks)",
            kind="target_weights",
            target_weight=0.07,
            commission=("percent", 0.001),
            target_rounding="order",
        ),
        Scenario(
            "cash_constrained",
            "Long with $40,000 cash for 12 symbols of $10,000: buys refused for lack of cash",
            initial_cash=40_000.0,
            commission=("percent", 0.001),
        ),
        Scenario(
            "stress_1000_bars",
            "Stress: long/short, stop-loss, take-profit, commission, 1,000 bars",
            direction="both",
            stop_loss=0.04,
            take_profit=0.08,
            commission=("percent", 0.001),
            n_bars=1000,
            engine_overrides=_STOP_WINS,
        ),
        Scenario(
            "topn_take_profit",
            "Top-3 by 20-day return, 30 % of equity each, 6 % take-profit, 0.1 % commission",
            kind="ranked",
            target_weight=0.3,
            take_profit=0.06,
            commission=("percent", 0.001),
            not_expressed={"vectorbt": _RANKED_VBT},
        ),
        Scenario(
            "topn_stop_loss_take_profit",
            "Top-3 by 20-day return, 4 % stop-loss and 6 % take-profit",
            kind="ranked",
            target_weight=0.3,
            stop_loss=0.04,
            take_profit=0.06,
            commission=("percent", 0.001),
            not_expressed={"vectorbt": _RANKED_VBT},
        ),
        Scenario(
            "topn_trailing_stop",
            "Top-3 by 20-day return, 5 % trailing stop",
            kind="ranked",
            target_weight=0.3,
            trailing=0.05,
            commission=("percent", 0.001),
            not_expressed={"vectorbt": _RANKED_VBT},
            knobs={"backtrader": _TRAIL_BT},
        ),
        Scenario(
            "topn_stop",
            "Top-25 by 20-day return, 5 % stop, 0.1 % commission (issue 7 reference)",
            kind="topn",
        ),
    ]
    names = [s.name for s in sc]
    if len(set(names)) != len(names):
        raise AssertionError("duplicate scenario names")
    return sc


def get_scenario(name: str) -> Scenario:
    """The catalogue scenario called ``name``.

    Raises
    ------
    KeyError
        Unknown name (the known names are listed).
    """
    for s in catalogue():
        if s.name == name:
            return s
    raise KeyError(f"unknown scenario {name!r}; known: {[s.name for s in catalogue()]}")


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ScenarioData:
    """The prepared inputs of a scenario run (identical for every framework).

    Attributes
    ----------
    inputs : ReferenceInputs
        Wide OHLC (and the issue-7 ``score``) matrices and the long panel.
    volume : pandas.DataFrame
        Wide volume, shares, same shape as ``inputs.close``.
    entry_long, exit_long, entry_short, exit_short : numpy.ndarray
        Boolean ``(n_bars, n_symbols)``: the crossover signals at each bar's close.
    quantity : numpy.ndarray
        Float ``(n_symbols,)``: shares per entry, ``floor(position_value / first close)``.
    """

    inputs: ReferenceInputs
    volume: pd.DataFrame
    entry_long: np.ndarray
    exit_long: np.ndarray
    entry_short: np.ndarray
    exit_short: np.ndarray
    quantity: np.ndarray

    @property
    def symbols(self) -> tuple[str, ...]:
        """Column order of every matrix."""
        return self.inputs.symbols


def load_prices(data_root: Path) -> pl.DataFrame:
    """The real S&P 500 daily file under ``data_root``.

    Raises
    ------
    FileNotFoundError
        The file is not there (path named).
    """
    path = Path(data_root) / SP500_FILE
    if not path.exists():
        raise FileNotFoundError(f"parity data file not found: {path}")
    return pl.read_parquet(path)


def panel_symbols(prices: pl.DataFrame, n_symbols: int | None) -> list[str]:
    """``n_symbols`` clean symbols spread evenly over the sorted clean list (all when None)."""
    clean = select_clean_symbols(prices)
    if n_symbols is None or n_symbols >= len(clean):
        return clean
    if n_symbols < 1:
        raise ValueError(f"n_symbols must be >= 1, got {n_symbols}")
    picks = np.linspace(0, len(clean) - 1, n_symbols).round().astype(int)
    return [clean[k] for k in picks]


def prepare_inputs(
    prices: pl.DataFrame, symbols: list[str], n_bars: int | None = None
) -> tuple[ReferenceInputs, pd.DataFrame]:
    """Reference inputs and the wide volume for ``symbols``, on the first ``n_bars`` dates."""
    if n_bars is not None:
        dates = prices["timestamp"].unique().sort().head(n_bars)
        prices = prices.filter(pl.col("timestamp").is_in(dates.implode()))
    inputs = build_reference_inputs(prices, symbols)
    volume = (
        prices.filter(pl.col("symbol").is_in(symbols))
        .with_columns(pl.col("timestamp").cast(pl.Datetime("us")).alias("date"))
        .pivot(on="symbol", index="date", values="volume")
        .sort("date")
        .select("date", *inputs.symbols)
        .to_pandas()
        .set_index("date")
        .astype("float64")
    )
    volume.index = inputs.close.index
    return inputs, volume


def scenario_data(
    inputs: ReferenceInputs, volume: pd.DataFrame, scenario: Scenario
) -> ScenarioData:
    """Signals and sizes of ``scenario`` on prepared inputs (restricted to its bars/symbols)."""
    if scenario.n_bars is not None and scenario.n_bars < inputs.n_dates:
        inputs, volume = _head(inputs, volume, scenario.n_bars)
    if scenario.n_symbols is not None and scenario.n_symbols < len(inputs.symbols):
        keep = list(inputs.symbols[: scenario.n_symbols])
        inputs = _subset(inputs, keep)
        volume = volume[keep]
    close = inputs.close.to_numpy()
    fast = inputs.close.rolling(scenario.fast).mean().to_numpy()
    slow = inputs.close.rolling(scenario.slow).mean().to_numpy()
    above = fast > slow
    valid = np.isfinite(fast) & np.isfinite(slow)
    prev_above = np.vstack([above[:1], above[:-1]])
    prev_valid = np.vstack([np.zeros_like(valid[:1]), valid[:-1]])
    both = valid & prev_valid
    up = both & above & ~prev_above
    down = both & ~above & prev_above
    qty = np.floor(scenario.position_value / close[0])
    return ScenarioData(
        inputs=inputs,
        volume=volume,
        entry_long=up,
        exit_long=down,
        entry_short=down,
        exit_short=up,
        quantity=qty,
    )


def _head(inputs: ReferenceInputs, volume: pd.DataFrame, n: int) -> tuple[ReferenceInputs, Any]:
    stamps = inputs.timestamps[:n]
    panel = inputs.panel.filter(
        pl.col("timestamp").is_in(pl.Series(stamps).cast(pl.Datetime("us", "UTC")).implode())
    )
    return (
        replace(
            inputs,
            open=inputs.open.iloc[:n],
            high=inputs.high.iloc[:n],
            low=inputs.low.iloc[:n],
            close=inputs.close.iloc[:n],
            score=inputs.score.iloc[:n],
            timestamps=stamps,
            panel=panel,
        ),
        volume.iloc[:n],
    )


def _subset(inputs: ReferenceInputs, symbols: list[str]) -> ReferenceInputs:
    return replace(
        inputs,
        symbols=tuple(symbols),
        open=inputs.open[symbols],
        high=inputs.high[symbols],
        low=inputs.low[symbols],
        close=inputs.close[symbols],
        score=inputs.score[symbols],
        panel=inputs.panel.filter(pl.col("symbol").is_in(symbols)),
    )


# ---------------------------------------------------------------------------- our engine


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
                    for j, symbol in enumerate(data.symbols):
                        if scenario.target_rounding == "position":
                            self.order_target_percent(symbol, scenario.target_weight)
                            continue
                        target = scenario.target_weight * self.equity / close[i, j]
                        delta = math.trunc(target - self.get_position(symbol))
                        if delta > 0:
                            self.buy(symbol, delta)
                        elif delta < 0:
                            self.sell(symbol, -delta)
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


def _risk_manager(scenario: Scenario) -> Any:
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
        rules.append(DynamicTrailingStop(initial_trail_pct=scenario.trailing))
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
        _risk_manager(scenario),
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


FEATURE_SCENARIOS: dict[str, str] = {
    "topn": "topn_stop",
    "stop_loss": "stop_loss",
    "take_profit": "take_profit",
    "trailing_stop": "trailing_stop",
    "time_exit": "time_exit",
    "commission_percent": "commission_percent",
    "commission_per_share": "commission_per_share",
    "slippage_percent": "slippage_percent",
    "slippage_fixed": "slippage_fixed",
    "short": "long_short",
    "volume_cap": "volume_cap",
    "same_close": "same_close",
}
"""An experiment feature → the catalogue scenario that checks its semantics."""

_RULE_FEATURES = {
    "PriceBasedStopLoss": "stop_loss",
    "PriceBasedTakeProfit": "take_profit",
    "DynamicTrailingStop": "trailing_stop",
    "TimeBasedExit": "time_exit",
}
_COMMISSION_FEATURES = {
    "Percentage": "commission_percent",
    "PercentageCommission": "commission_percent",
    "PerShare": "commission_per_share",
    "PerShareCommission": "commission_per_share",
}
_SLIPPAGE_FEATURES = {
    "FixedPercentage": "slippage_percent",
    "FixedPercentageSlippage": "slippage_percent",
    "FixedBps": "slippage_percent",
    "FixedBpsSlippage": "slippage_percent",
}


def experiment_features(
    strategy: str,
    rules: list[str],
    commission: str | None,
    slippage: str | None,
    fill: str,
    allow_short: bool,
    volume_cap: bool,
) -> list[str]:
    """The parity features an experiment uses (keys of :data:`FEATURE_SCENARIOS`), or
    ``"unknown:<name>"`` for a part no catalogue scenario covers.

    Parameters
    ----------
    strategy : str
        Strategy type (``"TopN"``, ...).
    rules : list of str
        Risk rule types, in config order.
    commission, slippage : str, optional
        Model type names (``None``, ``"None"``, ``"NoCommission"``, ``"NoSlippage"``: none).
    fill : {"next_open", "close"}
    allow_short, volume_cap : bool
    """
    out: list[str] = ["topn" if strategy in ("TopN", "TopNStrategy") else f"unknown:{strategy}"]
    for rule in rules:
        out.append(_RULE_FEATURES.get(rule, f"unknown:{rule}"))
    if commission not in (None, "None", "NoCommission"):
        out.append(_COMMISSION_FEATURES.get(str(commission), f"unknown:{commission}"))
    if slippage not in (None, "None", "NoSlippage"):
        out.append(_SLIPPAGE_FEATURES.get(str(slippage), f"unknown:{slippage}"))
    if fill == "close":
        out.append("same_close")
    if allow_short:
        out.append("short")
    if volume_cap:
        out.append("volume_cap")
    return list(dict.fromkeys(out))


def feature_coverage(features: list[str]) -> list[dict[str, Any]]:
    """Per feature and framework: the catalogue scenario, whether the framework's own API
    expresses it, and the setting behind a known gap.

    Returns
    -------
    list of dict
        Keys ``feature``, ``scenario`` (None for an unknown feature), ``framework``,
        ``expressed`` (bool), ``note`` (the not-expressed reason or the gap's setting, else
        ``""``).
    """
    rows: list[dict[str, Any]] = []
    for feature in features:
        name = FEATURE_SCENARIOS.get(feature)
        for framework in FRAMEWORKS:
            if name is None:
                rows.append(
                    {
                        "feature": feature,
                        "scenario": None,
                        "framework": framework,
                        "expressed": False,
                        "note": "no catalogue scenario",
                    }
                )
                continue
            s = get_scenario(name)
            reason = s.not_expressed.get(framework)
            rows.append(
                {
                    "feature": feature,
                    "scenario": name,
                    "framework": framework,
                    "expressed": reason is None,
                    "note": reason or s.knobs.get(framework, ""),
                }
            )
    return rows
