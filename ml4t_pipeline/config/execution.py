"""The ``execution``, ``reporting`` (benchmark), ``tracking`` and ``backtest`` sections."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from ml4t_pipeline.config._base import _NUMBER, MAX_BARS, MAX_CASH, MAX_ROWS, _Strict
from ml4t_pipeline.config.data import CorporateActionsConfig, FinancingConfig
from ml4t_pipeline.config.specs import _cost_spec

if TYPE_CHECKING:
    import engine as engine_mod


class ExecutionConfig(_Strict):
    """Fill mode, costs, cash, and the engine's fill-semantics settings.

    Attributes
    ----------
    fill : {"next_open", "close"}
        ``next_open`` (default; a decision at bar t's close trades at t+1's open) or ``close``
        (same bar's close).
    commission, slippage : dict
        Registry specs such as ``{type: Percentage, rate: 0.001}`` or ``{type: SpreadAware,
        spread_fraction: 0.5}`` (numbers finite; rates and percentages in [0, 0.1], basis
        points in [0, 1000], costs in [0, 1e6] currency; :data:`COST_PARAM_LIMITS`).
        Costs read only what a fill may know (docs/how-to/cost-model.md): ``SpreadAware``
        pays ``spread_fraction`` of the last quoted spread before the fill (``data.quotes``;
        the previous bar's close quote for a fill at the open), else of the Corwin–Schultz
        estimate averaged over the last ``window`` (default 20) pairs of completed bars;
        ``VolumeAware`` takes sigma from the previous bar and, by default, the fill bar's
        volume (``volume: completed`` with ``volume_window: N``: the mean of the last N
        completed bars).
    initial_cash : float
        Currency, in (0, 1e12].
    fractional_shares, allow_short : bool
    preset : {"backtrader", "vectorbt"} | None
        Framework fill semantics (``engine.EXECUTION_PRESETS``); the settings below override it.
    max_volume_participation : float | None
        Largest fraction of a bar's volume one order may fill on that bar, in (0, 1].
    close_at_end : bool | None
        Close every open position at the last bar's close (``exit_reason = end_of_data``).
    bar_event_order : {"chronological", "stops_first"} | None
    stop_activation : {"next_bar", "entry_bar", "second_bar"} | None
    exit_conflict : {"open_sell_wins", "stop_wins"} | None
        ``stop_wins`` needs ``bar_event_order: stops_first``.
    cash_check : {"execution", "submission"} | None
    reentry_cooldown_bars : int | None
        0 to 10,000 bars.
    cash_tolerance : float | None
        Currency, in [0, 1000].
    target_rounding : {"position", "order"} | None
        Whole-share rounding of ``order_target_value`` / ``order_target_percent``: the target
        position (default) or the order size (Backtrader, VectorBT).
    financing : FinancingConfig | None
        Interest on cash and short borrow fees, accrued per bar (default None: none).

    The settings from ``max_volume_participation`` on are :class:`engine.ExecutionConfig`'s
    fields with the same names and meanings (documented there and in the README's "Fill
    semantics settings"); ``None`` (omitted) keeps the engine's default or the preset's value.
    """

    fill: Literal["next_open", "close"] = "next_open"
    commission: Annotated[dict[str, Any], BeforeValidator(_cost_spec("commission"))] = Field(
        default_factory=lambda: {"type": "Percentage", "rate": 0.0}
    )
    slippage: Annotated[dict[str, Any], BeforeValidator(_cost_spec("slippage"))] = Field(
        default_factory=lambda: {"type": "NoSlippage"}
    )
    initial_cash: Annotated[float, _NUMBER, Field(gt=0, le=MAX_CASH)] = 1_000_000.0
    fractional_shares: bool = False
    allow_short: bool = False
    preset: Literal["backtrader", "vectorbt"] | None = None
    max_volume_participation: Annotated[float, _NUMBER, Field(gt=0, le=1)] | None = None
    close_at_end: bool | None = None
    bar_event_order: Literal["chronological", "stops_first"] | None = None
    stop_activation: Literal["next_bar", "entry_bar", "second_bar"] | None = None
    exit_conflict: Literal["open_sell_wins", "stop_wins"] | None = None
    cash_check: Literal["execution", "submission"] | None = None
    reentry_cooldown_bars: Annotated[int, _NUMBER, Field(ge=0, le=MAX_BARS)] | None = None
    cash_tolerance: Annotated[float, _NUMBER, Field(ge=0, le=1000)] | None = None
    target_rounding: Literal["position", "order"] | None = None
    financing: FinancingConfig | None = None

    def engine_overrides(self) -> dict[str, Any]:
        """The fill-semantics settings given explicitly (engine field name → value)."""
        return {k: getattr(self, k) for k in ENGINE_SETTINGS if getattr(self, k) is not None}

    def engine_config(self) -> engine_mod.ExecutionConfig:
        """The :class:`engine.ExecutionConfig` of this section: preset, then explicit settings.

        Raises
        ------
        ValueError
            An unknown preset or an invalid combination (the engine's message).
        """
        import engine

        presets: dict[str, dict[str, Any]] = engine.EXECUTION_PRESETS
        base = dict(presets[self.preset]) if self.preset is not None else {}
        return engine.ExecutionConfig(
            fill=self.fill,
            commission=engine.build_commission(dict(self.commission)),
            slippage=engine.build_slippage(dict(self.slippage)),
            initial_cash=self.initial_cash,
            fractional_shares=self.fractional_shares,
            allow_short=self.allow_short,
            financing=self.financing.engine() if self.financing is not None else None,
            **{**base, **self.engine_overrides()},
        )


ENGINE_SETTINGS = (
    "max_volume_participation",
    "close_at_end",
    "bar_event_order",
    "stop_activation",
    "exit_conflict",
    "cash_check",
    "reentry_cooldown_bars",
    "cash_tolerance",
    "target_rounding",
)
"""``execution`` keys passed to :class:`engine.ExecutionConfig` under the same name when given."""


class BenchmarkConfig(_Strict):
    """A benchmark read offline from a price file (e.g. SPY in the Lean daily file).

    The file has the prices schema (timestamp, symbol, OHLCV) and is stamped like the prices
    (daily dates become the session's close); the benchmark's bar return is its close-to-close
    return (:func:`ml4t_pipeline.lib.benchmark.load_benchmark_returns`). Raw closes give a price
    return (dividends not included) unless ``corporate_actions`` is given.

    Attributes
    ----------
    symbol : str
        The benchmark's symbol in the file.
    path : str
        Data path (inside the data root, like ``data.prices``).
    corporate_actions : CorporateActionsConfig or None
        The benchmark's splits and dividends (``{path, format: table|lean}``, e.g. Lean's
        factor file for SPY): its closes are then total-return adjusted (dividends
        reinvested on the ex-date, splits removed; LEAN's ``Adjusted``), so the comparison is
        against a total-return index. None (default): the file's closes as they are.
    """

    symbol: str = Field(min_length=1, max_length=64)
    path: str = Field(min_length=1)
    corporate_actions: CorporateActionsConfig | None = None


class ReportingConfig(_Strict):
    """Report settings.

    Attributes
    ----------
    risk_free_rate : float
        Annual risk-free rate as a fraction, in [-0.1, 0.5].
    periods_per_year : int
        Bars per year for annualising, 1 to 100,000 (252 daily; 98,280 = 252 × 390 minutes).
    title : str | None
    benchmark : BenchmarkConfig | None
        ``{symbol: SPY, path: lean_daily_ohlcv_unadjusted.parquet}``: alpha, beta, information
        ratio, tracking error and up/down capture against it (``bench_*`` metrics) and its equity
        on the report's chart. None (default): only the equal-weight universe is a benchmark.
    """

    risk_free_rate: Annotated[float, _NUMBER, Field(ge=-0.1, le=0.5)] = 0.0
    periods_per_year: Annotated[int, _NUMBER, Field(ge=1, le=MAX_ROWS)] = 252
    title: str | None = None
    benchmark: BenchmarkConfig | None = None


class MlflowTrackingConfig(_Strict):
    """Where an experiment's runs are logged in MLflow (the ``tracking`` extra).

    Attributes
    ----------
    uri : str | None
        MLflow tracking URI (``sqlite:///path/mlflow.db``, ``http://host:5000``, ...). Default:
        ``sqlite:///<storage>/mlflow.db``, beside the stored asset values, where ``<storage>``
        is ``$ML4T_STORAGE_DIR`` or ``.ml4t_storage`` in the working directory
        (:func:`ml4t_pipeline.lib.tracking.default_tracking_uri`). A remote URI sends the
        resolved config, the metrics, the report and the trades to that host.
    experiment : str | None
        MLflow experiment name (default: the config's ``name``).
    """

    uri: str | None = None
    experiment: str | None = Field(default=None, min_length=1, max_length=250)


class TrackingConfig(_Strict):
    """Experiment tracking. ``mlflow: {}`` logs every backtest to MLflow with the defaults;
    absent (the default), nothing is logged. Not part of the config hash: where results are
    logged does not change them."""

    mlflow: MlflowTrackingConfig | None = None


class BacktestConfig(_Strict):
    """The backtest window: the engine trades from ``start`` to ``end``, both inclusive.

    Data before ``start`` is still read and prepared: features, context and the walk-forward
    model's signals are computed on the whole history first, so an indicator or a score at
    the first traded bar has its full look-back. The engine then runs only the window's bars
    (:meth:`engine.MarketData.between`): cash, positions and portfolio states start at the
    first bar at or after ``start``; the last state is the last bar at or before ``end``,
    where ``execution.close_at_end`` closes the book. Both ``None`` (the default): the whole
    data. A sweep may vary them (``backtest.start`` / ``backtest.end`` are grid paths), e.g.
    one trial per walk-forward test period over the same prepared data.

    Attributes
    ----------
    start, end : date or datetime, optional
        A date (``2015-01-02``) means its whole UTC calendar day, so ``end: 2015-12-31``
        keeps that day's close; a datetime must carry a timezone (``2015-01-02T21:00:00Z``)
        and is compared with the bar close timestamps. ``start`` must not be after ``end``.
        A window that holds no bar of the data fails the run with the data's time range.
    """

    start: date | datetime | None = None
    end: date | datetime | None = None

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: date | datetime | None) -> date | datetime | None:
        if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError(
                f"{value.isoformat()} has no timezone: give one (e.g. "
                f"{value.date().isoformat()}T21:00:00Z; bar closes are UTC) or a plain date"
            )
        return value

    @model_validator(mode="after")
    def _ordered(self) -> BacktestConfig:
        if (
            self.start is not None
            and self.end is not None
            and _day_start(self.start) > _day_end(self.end)
        ):
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self

    def window(self) -> dict[str, date | datetime | None]:
        """``{"start": ..., "end": ...}`` for :meth:`engine.BacktestEngine.run` /
        :meth:`engine.MarketData.between`."""
        return {"start": self.start, "end": self.end}

    @property
    def is_set(self) -> bool:
        """True when a bound is given."""
        return self.start is not None or self.end is not None


def _day_start(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time(0), tzinfo=UTC)


def _day_end(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.combine(value, time.max, tzinfo=UTC)
