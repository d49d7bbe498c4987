"""Fill-level comparison of two backtest runs (ours against a framework's, or two frameworks).

A run is reduced to a fills table (one row per execution) plus its final equity and closed-trade
count (``FrameworkRun``). ``compare_fills`` matches fills on (timestamp, symbol, side) and the
occurrence index within that key, then reports matched / missing / extra rows and the price and
quantity differences of the matched ones. Nothing is tolerated silently: a matched row whose
price differs by more than ``price_tol`` or whose quantity differs at all is a mismatch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ml4t_pipeline.lib.crossval.reference import ReferenceInputs, ReferenceSpec

FILL_COLUMNS: tuple[str, ...] = ("timestamp", "symbol", "quantity", "price", "commission")
"""Columns every fills table handed to ``compare_fills`` must have."""

FILL_SCHEMA: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us", "UTC"),
    "symbol": pl.String(),
    "quantity": pl.Float64(),
    "price": pl.Float64(),
    "commission": pl.Float64(),
    "reason": pl.String(),
}
"""The fills table a framework driver returns: bar close (UTC), symbol, signed shares, fill
price (currency per share), commission (currency) and the framework's order kind."""


def fills_frame(columns: dict[str, Any]) -> pl.DataFrame:
    """A framework's fills as :data:`FILL_SCHEMA`, sorted by time then symbol (stable, so a
    bar's fills of one symbol keep the framework's order).

    Parameters
    ----------
    columns : dict
        The six columns of :data:`FILL_SCHEMA` as lists, NumPy arrays or Series of one length.

    Raises
    ------
    polars.exceptions.PolarsError
        A column missing, of another length or not castable to its dtype.
    """
    return pl.DataFrame(columns, schema=FILL_SCHEMA).sort(
        "timestamp", "symbol", maintain_order=True
    )


def vectorbt_fills(records: Any, inputs: ReferenceInputs, reasons: Any) -> pl.DataFrame:
    """:func:`fills_frame` of a VectorBT portfolio's order records (``pf.orders.values``:
    ``idx`` bar, ``col`` symbol column, ``side`` 0 buy / 1 sell, ``size`` shares, ``price``,
    ``fees``), one ``reasons`` entry per record."""
    side_sign = np.where(records["side"] == 0, 1.0, -1.0)
    return fills_frame(
        {
            "timestamp": pl.Series(inputs.timestamps[records["idx"]]).cast(
                pl.Datetime("us", "UTC")
            ),
            "symbol": np.asarray(inputs.symbols, dtype=object)[records["col"]].tolist(),
            "quantity": side_sign * records["size"],
            "price": records["price"],
            "commission": records["fees"],
            "reason": reasons,
        }
    )


_KEY = ["timestamp", "symbol", "side", "occurrence"]


@dataclass(frozen=True)
class FrameworkRun:
    """The comparable outcome of one backtest run.

    Attributes
    ----------
    framework : str
        ``"ml4t"``, ``"backtrader"`` or ``"vectorbt"``.
    fills : polars.DataFrame
        One row per execution: ``timestamp`` (``Datetime("us", "UTC")``, the close stamp of the
        bar the fill happened in), ``symbol`` (String), ``quantity`` (Float64, signed shares:
        + buy, - sell), ``price`` (Float64, currency per share), ``commission`` (Float64,
        currency), ``reason`` (String: ``"market"`` or ``"stop"``), sorted by (timestamp,
        symbol).
    final_equity : float
        Cash plus positions marked at the last close, currency.
    n_closed_trades : int
        Round trips closed by the end of the run.
    settings : dict
        The framework settings that produced the run (documented per framework).
    run_seconds : float
        Wall time of the simulation itself (data preparation excluded).
    n_rejected : int
        Orders the framework refused for lack of cash.
    """

    framework: str
    fills: pl.DataFrame
    final_equity: float
    n_closed_trades: int
    settings: dict[str, Any] = field(default_factory=dict)
    run_seconds: float = 0.0
    n_rejected: int = 0

    @property
    def n_fills(self) -> int:
        """Number of executions."""
        return self.fills.height


@dataclass(frozen=True)
class FillComparison:
    """Result of ``compare_fills``.

    Attributes
    ----------
    matched : polars.DataFrame
        Fills present in both runs: key columns, ``quantity_ours``/``quantity_theirs``,
        ``price_ours``/``price_theirs``, ``commission_ours``/``commission_theirs``,
        ``price_diff`` and ``quantity_diff`` (ours - theirs), ``ok`` (Boolean: quantity equal
        and ``|price_diff| <= price_tol``).
    missing : polars.DataFrame
        Fills of ``theirs`` with no counterpart in ``ours``.
    extra : polars.DataFrame
        Fills of ``ours`` with no counterpart in ``theirs``.
    price_tol : float
        Absolute price tolerance used, currency per share.
    """

    matched: pl.DataFrame
    missing: pl.DataFrame
    extra: pl.DataFrame
    price_tol: float

    @property
    def n_matched(self) -> int:
        """Rows present in both runs (whether or not their price/quantity agree)."""
        return self.matched.height

    @property
    def n_missing(self) -> int:
        """Rows only in ``theirs``."""
        return self.missing.height

    @property
    def n_extra(self) -> int:
        """Rows only in ``ours``."""
        return self.extra.height

    @property
    def n_mismatched(self) -> int:
        """Matched rows whose quantity differs or whose price differs by more than the tol."""
        return int((~self.matched["ok"]).sum()) if self.matched.height else 0

    @property
    def max_price_diff(self) -> float:
        """Largest absolute price difference among matched rows (0.0 when none match)."""
        if not self.matched.height:
            return 0.0
        return float(self.matched["price_diff"].abs().max())  # type: ignore[arg-type]

    @property
    def identical(self) -> bool:
        """True when every fill matches within tolerance and none is missing or extra."""
        return self.n_missing == 0 and self.n_extra == 0 and self.n_mismatched == 0

    def first_difference(self) -> pl.DataFrame:
        """The earliest differing rows (missing, extra or mismatched), at most 10, by time."""
        parts = [
            self.missing.select("timestamp", "symbol", "side", "quantity", "price").with_columns(
                pl.lit("missing").alias("kind")
            ),
            self.extra.select("timestamp", "symbol", "side", "quantity", "price").with_columns(
                pl.lit("extra").alias("kind")
            ),
            self.matched.filter(~pl.col("ok"))
            .select(
                "timestamp",
                "symbol",
                "side",
                pl.col("quantity_ours").alias("quantity"),
                pl.col("price_ours").alias("price"),
            )
            .with_columns(pl.lit("mismatched").alias("kind")),
        ]
        return pl.concat(parts).sort("timestamp", "symbol").head(10)


def _prepare(fills: pl.DataFrame, who: str) -> pl.DataFrame:
    missing = [c for c in FILL_COLUMNS if c not in fills.columns]
    if missing:
        raise ValueError(f"{who} fills lack columns {missing} (need {list(FILL_COLUMNS)})")
    zero = fills.filter(pl.col("quantity") == 0)
    if zero.height:
        raise ValueError(f"{who} fills have zero quantity rows: {zero.head(5).rows()}")
    frame = fills.select(
        pl.col("timestamp"),
        pl.col("symbol").cast(pl.String),
        pl.col("quantity").cast(pl.Float64),
        pl.col("price").cast(pl.Float64),
        pl.col("commission").cast(pl.Float64),
    ).with_columns(
        pl.when(pl.col("quantity") > 0).then(pl.lit("buy")).otherwise(pl.lit("sell")).alias("side")
    )
    return frame.with_columns(
        pl.int_range(pl.len()).over("timestamp", "symbol", "side").alias("occurrence")
    )


def compare_fills(
    ours: pl.DataFrame, theirs: pl.DataFrame, price_tol: float = 1e-6
) -> FillComparison:
    """Match two fills tables row by row.

    Rows are keyed by (timestamp, symbol, side) plus the occurrence index inside that key (in
    input order), so two buys of one symbol on one bar pair up first-with-first.

    Parameters
    ----------
    ours, theirs : polars.DataFrame
        Fills tables with at least ``FILL_COLUMNS`` (``quantity`` signed shares, ``price``
        currency per share, ``commission`` currency). ``timestamp`` dtypes must agree.
    price_tol : float, default 1e-6
        Largest absolute price difference (currency per share) still counted as equal.

    Returns
    -------
    FillComparison

    Raises
    ------
    ValueError
        A missing column, a zero quantity (rows listed), a negative ``price_tol``, or
        ``timestamp`` dtypes that differ between the two tables.
    """
    if not (price_tol >= 0 and math.isfinite(price_tol)):
        raise ValueError(f"price_tol must be a finite number >= 0, got {price_tol!r}")
    a = _prepare(ours, "ours")
    b = _prepare(theirs, "theirs")
    if a.schema["timestamp"] != b.schema["timestamp"]:
        raise ValueError(
            f"timestamp dtypes differ: ours {a.schema['timestamp']}, theirs {b.schema['timestamp']}"
        )
    both = a.join(b, on=_KEY, how="inner", suffix="_theirs").rename(
        {"quantity": "quantity_ours", "price": "price_ours", "commission": "commission_ours"}
    )
    both = both.with_columns(
        (pl.col("price_ours") - pl.col("price_theirs")).alias("price_diff"),
        (pl.col("quantity_ours") - pl.col("quantity_theirs")).alias("quantity_diff"),
    ).with_columns(
        ((pl.col("quantity_diff") == 0) & (pl.col("price_diff").abs() <= price_tol)).alias("ok")
    )
    missing = b.join(a, on=_KEY, how="anti")
    extra = a.join(b, on=_KEY, how="anti")
    return FillComparison(
        matched=both.sort("timestamp", "symbol"),
        missing=missing.sort("timestamp", "symbol"),
        extra=extra.sort("timestamp", "symbol"),
        price_tol=price_tol,
    )


@dataclass(frozen=True)
class RunComparison:
    """Fill-level and headline comparison of two runs (``compare_runs``).

    Attributes
    ----------
    ours, theirs : FrameworkRun
    fills : FillComparison
    """

    ours: FrameworkRun
    theirs: FrameworkRun
    fills: FillComparison

    @property
    def equity_gap(self) -> float:
        """``ours.final_equity - theirs.final_equity``, currency."""
        return self.ours.final_equity - self.theirs.final_equity

    @property
    def trade_count_gap(self) -> int:
        """Closed trades of ours minus theirs."""
        return self.ours.n_closed_trades - self.theirs.n_closed_trades

    def agrees(self, equity_tol: float = 0.01) -> bool:
        """True when the fills are identical and the equity gap is at most ``equity_tol``."""
        return (
            self.fills.identical
            and self.trade_count_gap == 0
            and abs(self.equity_gap) <= equity_tol
        )

    def summary_markdown(self) -> str:
        """A short markdown table of the comparison (for a Dagster materialization)."""
        a, b, f = self.ours, self.theirs, self.fills
        lines = [
            f"### {a.framework} vs {b.framework}",
            "",
            f"| | {a.framework} | {b.framework} | gap |",
            "|---|---:|---:|---:|",
            f"| fills | {a.n_fills:,} | {b.n_fills:,} | {a.n_fills - b.n_fills:+,} |",
            f"| closed trades | {a.n_closed_trades:,} | {b.n_closed_trades:,} "
            f"| {self.trade_count_gap:+,} |",
            f"| final equity | {a.final_equity:,.2f} | {b.final_equity:,.2f} "
            f"| {self.equity_gap:+,.2f} |",
            "",
            f"Fills: {f.n_matched:,} matched ({f.n_mismatched:,} with a price or quantity "
            f"difference, max |price diff| {f.max_price_diff:.6g}), {f.n_missing:,} missing, "
            f"{f.n_extra:,} extra (price tolerance {f.price_tol:g}).",
            "",
            "**Identical.**" if self.agrees() else "**Not identical.**",
        ]
        return "\n".join(lines)


def compare_runs(
    ours: FrameworkRun, theirs: FrameworkRun, price_tol: float = 1e-6
) -> RunComparison:
    """Compare two runs fill for fill and on their headline figures.

    Parameters
    ----------
    ours, theirs : FrameworkRun
    price_tol : float, default 1e-6
        Passed to ``compare_fills``.

    Returns
    -------
    RunComparison
    """
    return RunComparison(
        ours=ours, theirs=theirs, fills=compare_fills(ours.fills, theirs.fills, price_tol)
    )


def run_ml4t(
    inputs: ReferenceInputs, spec: ReferenceSpec | None = None, **config: Any
) -> FrameworkRun:
    """Run the reference spec through our engine and return its fills as a ``FrameworkRun``.

    ``TopNStrategy("score", n, weight=weight)`` + ``RiskManager([PriceBasedStopLoss(stop_pct)])``
    + ``ExecutionConfig(fill="next_open", commission=PercentageCommission(rate),
    initial_cash=initial_cash, **config)``.

    Parameters
    ----------
    inputs : ReferenceInputs
        Its long ``panel`` is used (``score`` as the signal column).
    spec : ReferenceSpec, optional
        Default: the issue-7 reference.
    **config
        Extra ``ExecutionConfig`` fields (e.g. the cross-framework settings once they exist).

    Returns
    -------
    FrameworkRun
        ``framework="ml4t"``; ``reason`` is ``"market"`` for market orders, else ``"stop"``.
    """
    from engine import (
        BacktestEngine,
        ExecutionConfig,
        MarketData,
        PercentageCommission,
        PriceBasedStopLoss,
        RiskManager,
        TopNStrategy,
    )

    spec = spec or ReferenceSpec()
    data = MarketData.from_frame(inputs.panel, signal_columns=["score"])
    cfg = ExecutionConfig(
        fill="next_open",
        commission=PercentageCommission(spec.commission_rate),
        initial_cash=spec.initial_cash,
        **config,
    )
    result = BacktestEngine(
        data,
        TopNStrategy("score", n=spec.n, weight=spec.weight),
        RiskManager([PriceBasedStopLoss(spec.stop_pct)]),
        cfg,
    ).run()
    fills = result.fills.select(
        "timestamp",
        pl.col("symbol").cast(pl.String),
        "quantity",
        "price",
        "commission",
        pl.when(pl.col("order_type") == "market")
        .then(pl.lit("market"))
        .otherwise(pl.lit("stop"))
        .alias("reason"),
    ).sort("timestamp", "symbol", maintain_order=True)
    rejected = result.rejections.filter(pl.col("event") == "rejected").height
    return FrameworkRun(
        framework="ml4t",
        fills=fills,
        final_equity=float(result.final_equity),
        n_closed_trades=result.trades.height,
        settings={"fill": "next_open", **config},
        run_seconds=float(result.run_seconds),
        n_rejected=rejected,
    )
