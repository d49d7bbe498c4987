"""The outputs of a run, as polars frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import polars as pl

from engine.config import ExecutionConfig
from engine.orders import Order

if TYPE_CHECKING:
    from engine.mechanics import MechanicsOutput
    from engine.recorder import Recorder


@dataclass(frozen=True)
class BacktestResult:
    """Everything a run produced.

    Attributes
    ----------
    trades : pl.DataFrame
        One row per round trip (or closed part of one, ``partial=True``); positions still open
        at the end are not included unless ``close_at_end``. Columns: trade_id (Int64), symbol,
        side ("long"/"short"), entry_timestamp, exit_timestamp (fill bars, Datetime us UTC),
        entry_price, exit_price (after slippage; entry is the average of the entry fills),
        quantity (> 0), entry_commission, exit_commission, commission, slippage, total_cost
        (currency), exit_reason (rule name, "strategy", "bracket_*", "end_of_data"),
        pnl_gross = (exit − entry) × quantity × direction, pnl_net = pnl_gross − commission,
        return_pct = pnl_net / (entry_price × quantity), pnl_percent = 100 × return_pct,
        bars_held (Int64, the symbol's bars from entry fill to exit fill), days_held,
        mfe / mae (currency, from bar highs/lows while held, ≥ 0 / ≤ 0), mfe_pct, mae_pct,
        stop_loss_at_exit, take_profit_at_exit, partial (Boolean), decision_timestamp (bar
        whose close produced the entry order), and ``entry_<col>`` / ``exit_<col>`` for every
        signal, indicator and context column (values at the entry / exit decision bar).
    portfolio_states : pl.DataFrame
        One row per timestamp: timestamp, equity, cash, positions_value, gross_leverage,
        net_leverage, n_positions (Int64), return, cumulative_return, drawdown (≤ 0), and the
        context columns.
    fills : pl.DataFrame
        One row per fill: fill_id, order_id, timestamp, symbol, side, quantity (signed),
        price_before_slippage, price, commission, slippage, order_type, reason.
    orders : pl.DataFrame
        Every order with its final status (built on first access).
    rejections : pl.DataFrame
        Rejected, cancelled, expired and shrunk orders: timestamp, order_id, symbol, quantity,
        order_type, event, reason, rule (built on first access).
    open_positions : pl.DataFrame
        Positions still open after the last bar: symbol, side, quantity (signed), avg_price,
        mark (last close), entry_timestamp, entry_commission (not yet charged to a trade),
        unrealized_pnl = (mark − avg_price) × quantity − entry_commission, stop_loss,
        take_profit. Reconciliation: Σ trades.pnl_net + Σ unrealized_pnl = final equity −
        initial cash.
    config : ExecutionConfig
    n_bar_events : int
        Rows of market data processed.
    run_seconds : float
        Wall time of the loop (excluding frame building).
    risk_context_builds : int
        RiskContexts built for hook C.
    corporate_actions : pl.DataFrame
        With ``ExecutionConfig.corporate_actions``: one row per split or dividend that
        touched the portfolio (:meth:`engine.mechanics.MarketMechanics.events_frame`); an
        empty frame otherwise. With any market mechanics set, ``portfolio_states`` also has
        the per-bar cash lines ``dividends``, ``interest`` and ``borrow_fee`` (currency).
    compiled : bool
        True when the run took the compiled whole-run path (:mod:`engine.compiled.topn`), False
        for the per-timestamp Python loop; both give the same frames.
    """

    trades: pl.DataFrame
    portfolio_states: pl.DataFrame
    fills: pl.DataFrame
    open_positions: pl.DataFrame
    config: ExecutionConfig
    n_bar_events: int
    run_seconds: float
    risk_context_builds: int = 0
    compiled: bool = False
    corporate_actions: pl.DataFrame = field(default_factory=pl.DataFrame)
    _recorder: Recorder | None = field(default=None, repr=False, compare=False)
    _order_list: Sequence[Order] = field(default_factory=list, repr=False, compare=False)

    @cached_property
    def orders(self) -> pl.DataFrame:
        """Every order with its final status (see the class docstring)."""
        if self._recorder is None:
            raise ValueError("this result holds no order records")
        return self._recorder.orders_frame(self._order_list)

    @cached_property
    def rejections(self) -> pl.DataFrame:
        """Rejected, cancelled, expired and shrunk orders (see the class docstring)."""
        if self._recorder is None:
            raise ValueError("this result holds no order records")
        return self._recorder.rejections_frame()

    @classmethod
    def from_run(
        cls,
        *,
        recorder: Recorder,
        orders: Sequence[Order],
        open_positions: pl.DataFrame,
        config: ExecutionConfig,
        n_bar_events: int,
        run_seconds: float,
        risk_context_builds: int,
        compiled: bool = False,
        mechanics: MechanicsOutput | None = None,
    ) -> BacktestResult:
        """Build the result frames from a finished run's recorder and orders.

        Raises nothing; the frames follow the schemas in the class docstring.
        """
        states = recorder.states_frame(config.initial_cash)
        actions = pl.DataFrame()
        if mechanics is not None:
            states = mechanics.add_state_columns(states)
            actions = mechanics.events_frame()
        return cls(
            trades=recorder.trades_frame(),
            portfolio_states=states,
            corporate_actions=actions,
            fills=recorder.fills_frame(),
            open_positions=open_positions,
            config=config,
            n_bar_events=n_bar_events,
            run_seconds=run_seconds,
            risk_context_builds=risk_context_builds,
            compiled=compiled,
            _recorder=recorder,
            _order_list=orders,
        )

    @property
    def final_equity(self) -> float:
        """Equity after the last bar (initial cash if there were no bars)."""
        if self.portfolio_states.height == 0:
            return self.config.initial_cash
        return float(self.portfolio_states.get_column("equity")[-1])

    def metrics(
        self, periods_per_year: float = 252.0, risk_free_rate: float = 0.0
    ) -> dict[str, float]:
        """:func:`engine.compute_metrics` of this run (fills used for turnover)."""
        from engine.metrics import compute_metrics

        return compute_metrics(
            self.portfolio_states,
            self.trades,
            periods_per_year=periods_per_year,
            risk_free_rate=risk_free_rate,
            fills=self.fills,
            initial_cash=self.config.initial_cash,
        )
