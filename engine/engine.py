"""BacktestEngine: the per-timestamp loop and nothing else."""

from __future__ import annotations

import gc
import time
from collections import deque
from datetime import date, datetime
from datetime import time as clock_time

from engine.broker import Broker
from engine.chunked import ChunkedMarketData, ChunkStream
from engine.compiled import plan, topn
from engine.config import ExecutionConfig
from engine.data import BarBatch, MarketData
from engine.mechanics import compiled_outputs
from engine.recorder import Recorder
from engine.results import BacktestResult
from engine.risk.manager import RiskManager
from engine.strategies import TopNStrategy
from engine.strategy import Strategy

_discard: deque[object] = deque(maxlen=0)
_consume = _discard.extend
"""Run an iterator to its end, keeping nothing (``deque(maxlen=0).extend``)."""


def _first_window(stream: ChunkStream) -> MarketData:
    window = stream.advance()
    if window is None:  # pragma: no cover - advance raises when no chunk has a bar
        raise ValueError("the chunked market data has no bars")
    return window


def _current(stream: ChunkStream) -> MarketData:
    window = stream.window
    if window is None:  # pragma: no cover - set by the first advance
        raise RuntimeError("no current window")
    return window


def _seeds_day(value: date | datetime) -> date | datetime:
    """A naive midnight ``datetime`` (the seeds' ``datetime(2020, 1, 1)``) as its date."""
    if isinstance(value, datetime) and value.tzinfo is None and value.time() == clock_time(0):
        return value.date()
    return value


def _overrides(strategy: Strategy, name: str) -> bool:
    return getattr(type(strategy), name) is not getattr(Strategy, name)


class BacktestEngine:
    """Event-driven backtest over a :class:`MarketData` panel.

    Per timestamp t, in this order (DESIGN.md):

    1. fill working orders against t's bar (market orders at the open, in submission order;
       limit/stop/trailing orders on the high/low), then the stop-loss / take-profit levels of
       open positions (gap → the open; stop wins over target) — or, with
       ``bar_event_order="stops_first"``, resting orders and levels first, then the open's
       market orders (see :class:`ExecutionConfig`); hook D
       (``RiskManager.record_fill``) and ``Strategy.on_fill`` see every fill; positions opened
       or increased get their initial levels from the ``on_entry`` rules once the step's
       fills are done (active from t+1);
    2. mark to t's closes; hook C (``RiskManager.evaluate_positions``: vectorised rules once
       for all positions, other rules once per position on a shared ``RiskContext``): level
       updates (effective from t+1) and exit orders tagged with the rule's name;
    3. the strategy callback (``on_timestamp_batch`` once, or ``on_market_data`` per symbol);
    4. hook B (``RiskManager.validate_order``) passes, shrinks or rejects each new order
       (after the ``reentry_cooldown_bars`` check); with ``cash_check="submission"`` the
       accepted orders are then pseudo-executed at their creation prices;
    5. with ``fill="close"``, market orders from steps 2-4 fill at t's close;
    6. record the portfolio state (equity = cash + Σ quantity × latest close).

    With :class:`ChunkedMarketData` the chunks are built one at a time; at each boundary the
    run state (cash, positions, working orders, levels, MFE/MAE extremes, marks) carries on
    and the rows it still points at are carried into the next window, so the results equal a
    run over the concatenated panel (see :class:`ChunkedMarketData` for the one lookback
    limit). ``close_at_end`` reads the next chunk's frame ahead at each chunk's last bar to
    know whether the run ends there.

    Parameters
    ----------
    data : MarketData or ChunkedMarketData
    strategy : Strategy
        Must override exactly one of ``on_timestamp_batch`` / ``on_market_data``.
    risk_manager : RiskManager or None
    config : ExecutionConfig, optional
        Default ``ExecutionConfig()``.
    compiled : bool, default True
        Run a qualifying run (:func:`engine.compiled.plan.compiled_reason`: the built-in
        :class:`TopNStrategy` with the built-in fixed-percent rules and plain fill settings) as
        one compiled kernel instead of the per-timestamp loop below; the results are the same
        (``tests/engine/test_fastpath.py``). ``False``: always the loop.

    Raises
    ------
    TypeError
        If the strategy overrides both bar callbacks or neither, or an argument has the wrong
        type.
    """

    def __init__(
        self,
        data: MarketData | ChunkedMarketData,
        strategy: Strategy,
        risk_manager: RiskManager | None = None,
        config: ExecutionConfig | None = None,
        *,
        compiled: bool = True,
    ) -> None:
        if not isinstance(data, MarketData | ChunkedMarketData):
            raise TypeError(
                f"data must be a MarketData or ChunkedMarketData, got {type(data).__name__}"
            )
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a Strategy, got {type(strategy).__name__}")
        if risk_manager is not None and not isinstance(risk_manager, RiskManager):
            raise TypeError(f"risk_manager must be a RiskManager, got {risk_manager!r}")
        if config is not None and not isinstance(config, ExecutionConfig):
            raise TypeError(f"config must be an ExecutionConfig, got {config!r}")
        if (
            isinstance(data, ChunkedMarketData)
            and config is not None
            and config.delisting is not None
        ):
            raise ValueError(
                "delisting needs the whole panel (it reads each symbol's next bar); "
                "not with ChunkedMarketData"
            )
        batch = _overrides(strategy, "on_timestamp_batch")
        per_symbol = _overrides(strategy, "on_market_data")
        if batch and per_symbol:
            raise TypeError(
                f"{type(strategy).__name__} overrides both on_timestamp_batch and "
                "on_market_data; override exactly one"
            )
        if not batch and not per_symbol:
            raise TypeError(
                f"{type(strategy).__name__} overrides neither on_timestamp_batch nor "
                "on_market_data; override exactly one"
            )
        self.data = data
        self.strategy = strategy
        self.risk_manager = risk_manager
        self.config = config if config is not None else ExecutionConfig()
        self.batch_mode = batch
        self.compiled = compiled
        self.compiled_reason: str | None = (
            plan.compiled_reason(data, strategy, risk_manager, self.config)
            if compiled
            else "compiled=False"
        )
        """Why the run takes the Python loop (``None``: the compiled path)."""

    def _run_compiled(self) -> BacktestResult | None:
        """The run through the compiled driver (:mod:`engine.compiled.topn`); ``None`` when
        the kernel hands the run back to the Python loop (a case it does not cover, found
        during the run)."""
        started = time.perf_counter()
        cfg = self.config
        strategy = self.strategy
        risk = self.risk_manager
        data = self.data
        if not isinstance(data, MarketData) or not isinstance(strategy, TopNStrategy):
            return None  # pragma: no cover - compiled_reason rules these out
        cfg.commission.reset()
        if risk is not None:
            risk.reset()
        run = topn.CompiledRun(data, plan.plan_topn(data, strategy, risk, cfg))
        if run.status != topn.ST_OK:
            return None
        strategy._bar = run.n_bars
        if risk is not None:
            risk.fills_seen = run.n_fills
        recorder = Recorder(data, run.records)
        open_positions = run.open_positions_frame(data)
        mechanics = (
            compiled_outputs(
                data,
                cfg.corporate_actions,
                cfg.financing,
                cfg.fractional_shares,
                run.mechanics_out,
            )
            if cfg.has_mechanics
            else None
        )
        elapsed = time.perf_counter() - started
        return BacktestResult.from_run(
            recorder=recorder,
            orders=[],
            open_positions=open_positions,
            config=cfg,
            n_bar_events=data.n_bar_events,
            run_seconds=elapsed,
            risk_context_builds=0,
            compiled=True,
            mechanics=mechanics,
        )

    def run(
        self,
        start: date | datetime | None = None,
        end: date | datetime | None = None,
        *,
        start_date: date | datetime | None = None,
        end_date: date | datetime | None = None,
    ) -> BacktestResult:
        """Run the backtest from the first to the last timestamp, or over a window.

        Parameters
        ----------
        start, end : date or datetime, optional
            The backtest window, both inclusive (:meth:`MarketData.between`: a tz-aware
            datetime is compared with the bar closes, a date means its whole UTC day).
            Trading and portfolio states start at the first bar at or after ``start``; the run
            ends with the last bar at or before ``end`` (``close_at_end`` closes there).
            Signals and indicators at the window's bars keep the values computed from the
            full history before the engine. A window run equals a run on the cut data.

        Returns
        -------
        BacktestResult
            Trades, portfolio states, fills, orders and rejections as polars frames.

        start_date, end_date : date or datetime, optional
            The seeds' names of ``start`` and ``end`` (give one name per bound). A naive
            datetime at midnight, as the seeds write them (``datetime(2020, 1, 1)``), means
            that date (its whole UTC day); another naive datetime is refused.

        Raises
        ------
        ValueError
            A bad bound, ``start`` after ``end``, a window with no bar, or a bound given under
            both names.
        """
        if start_date is not None or end_date is not None:
            if (start is not None and start_date is not None) or (
                end is not None and end_date is not None
            ):
                raise ValueError("give start/end or start_date/end_date (their seeds' names)")
            start = start if start_date is None else _seeds_day(start_date)
            end = end if end_date is None else _seeds_day(end_date)
        if start is not None or end is not None:
            windowed = BacktestEngine(
                self.data.between(start, end),
                self.strategy,
                self.risk_manager,
                self.config,
                compiled=self.compiled,
            )
            return windowed.run()
        if self.compiled_reason is None:
            compiled = self._run_compiled()
            if compiled is not None:
                return compiled
        started = time.perf_counter()
        cfg = self.config
        strategy = self.strategy
        risk = self.risk_manager
        stream: ChunkStream | None = None
        if isinstance(self.data, ChunkedMarketData):
            stream = self.data.stream()
            data = _first_window(stream)
        else:
            data = self.data
        cfg.commission.reset()
        recorder = Recorder(data)
        on_fill = strategy.on_fill if _overrides(strategy, "on_fill") else None
        broker = Broker(data, cfg, risk, recorder, on_fill)
        if risk is not None:
            risk.reset()
        position_rules = risk is not None and risk.needs_position_contexts
        close_at_end = cfg.close_at_end
        batch_mode = self.batch_mode
        stops_first = cfg.bar_event_order == "stops_first"
        submission_check = cfg.cash_check == "submission"
        empty_context: dict[str, float] = {}

        def run_window(data: MarketData) -> None:
            """Steps 1-6 for every timestamp of ``data`` (the whole panel or one window)."""
            datetimes = data.datetimes
            context_columns = data.context
            on_event = strategy.on_market_data
            last = data.n_timestamps - 1
            on_batch = strategy.on_timestamp_batch

            def strategy_step(i: int, lo: int, hi: int) -> None:
                """Step 3 of bar ``i`` (data rows ``lo:hi``) for the lane's loop."""
                context = data.context_at(i) if context_columns else empty_context
                if batch_mode:
                    on_batch(datetimes[i], BarBatch(data, i, lo, hi), context)
                else:
                    _consume(map(on_event, BarBatch(data, i, lo, hi).iter_events(context)))

            # while the market-order lane lasts, its own loop (steps 1-2 in one compiled call
            # per bar); the window's last bar always here (close_at_end looks ahead there)
            # (a batch strategy without context columns: called by the lane's loop itself)
            direct = batch_mode and not context_columns
            first = broker.lane_bars(
                data.first_index, last, strategy_step, on_batch if direct else None, empty_context
            )
            for i in range(first, data.n_timestamps):
                broker.begin_bar(i)
                # 1. fills at the open, then intrabar levels (or levels first: stops_first)
                if stops_first:
                    broker.stops_first_step()
                else:
                    broker.chronological_step()
                # 2. marks and risk exits (the compiled rules run inside update_marks)
                compiled = broker.update_marks()
                if position_rules and not compiled and risk is not None and broker.trades:
                    prepared = broker.position_batch()
                    if prepared is not None:
                        actions = risk.evaluate_positions(*prepared)
                        if actions.any:
                            broker.apply_actions(prepared[0], actions)
                # 3. strategy
                context = data.context_at(i) if context_columns else empty_context
                batch = BarBatch(data, i, broker.lo, broker.hi)
                if batch_mode:
                    strategy.on_timestamp_batch(datetimes[i], batch, context)
                else:
                    # one event per symbol, delivered in order; map drives the calls from C
                    # (no Python loop step per event), deque(maxlen=0) discards the returns
                    _consume(map(on_event, batch.iter_events(context)))
                # 4. order validation, 5. fills at the close
                broker.validate_new_orders()
                if submission_check:
                    broker.check_submission_cash()
                broker.fill_at_close()
                if broker.mechanics is not None:
                    broker.mechanics.end_of_bar(broker)
                if close_at_end and i == last and (stream is None or stream.is_last()):
                    broker.close_all("end_of_data")
                # 6. record
                broker.record_state()

        n_bar_events = data.n_bar_events
        strategy._broker = broker
        # the loop allocates many short-lived objects (orders, fills, contexts); frequent
        # young-generation collections would rescan them, so collect less often during the run
        thresholds = gc.get_threshold()
        gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
        try:
            strategy.on_start()
            run_window(data)
            while stream is not None:
                # chunk boundary: keep only the rows the run state points at (the finished
                # window is freed before the next chunk is read), then build the next window
                remap = stream.release(broker.referenced_rows())
                recorder.seal()
                carried = _current(stream)
                broker.rebase(carried, remap)
                recorder.data = carried
                data = carried
                del remap
                nxt = stream.advance()
                if nxt is None:
                    break
                broker.rebase(nxt, None)
                recorder.data = nxt
                data = nxt
                del nxt
                n_bar_events += data.n_bar_events
                run_window(data)
            strategy.on_end()
        finally:
            strategy._broker = None
            gc.set_threshold(*thresholds)
        if risk is not None:
            risk.fills_seen = broker.n_fills
        elapsed = time.perf_counter() - started
        return BacktestResult.from_run(
            recorder=recorder,
            orders=broker.orders,
            open_positions=broker.open_positions_frame(),
            config=cfg,
            n_bar_events=n_bar_events,
            run_seconds=elapsed,
            risk_context_builds=risk.context_builds if risk is not None else 0,
            mechanics=broker.mechanics,
        )
