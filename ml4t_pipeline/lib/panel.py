"""The joined market panel: prices × features × signals per (timestamp, symbol).

Signals are joined on *availability*, not on their own timestamp: a signal becomes visible at the
first bar of its symbol whose close is at or after its ``available_at`` (backward as-of join), so
no bar can see a signal before it existed. Context is not joined here; it is stored once per
timestamp and joined by the consumer (``context.join_context_asof``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import polars as pl

from ml4t_pipeline.lib import storage
from ml4t_pipeline.lib.context import join_context_asof
from ml4t_pipeline.lib.features import compute_features
from ml4t_pipeline.lib.schemas import VALIDATION_LEVELS, validate_prices
from ml4t_pipeline.lib.stamps import keys_unique_in_order
from ml4t_pipeline.lib.timing import (
    AsofJoin,
    asof_join_backward,
    check_no_lookahead,
    duplicated_rows,
    is_sorted_by_time_symbol,
    stale_signal_uses,
    status_counts,
)

SIGNAL_STATUS = "signal_status"


def _signal_value_columns(signals: pl.DataFrame) -> list[str]:
    return [c for c in signals.columns if c not in ("timestamp", "symbol", "available_at")]


def join_signals_asof(
    bars: pl.DataFrame,
    signals: pl.DataFrame,
    max_staleness: timedelta | str | None = None,
    max_fill_bars: int | None = None,
) -> AsofJoin:
    """Attach to every bar the latest signal of its symbol that was available by the bar's close.

    Parameters
    ----------
    bars : pl.DataFrame
        ``timestamp`` (``Datetime[us, UTC]``, bar close) and ``symbol``; other columns kept.
    signals : pl.DataFrame
        ``timestamp``, ``symbol``, ``available_at`` (``Datetime[us, UTC]``, non-null; set it with
        ``timing.signal_available_at``) and value columns (e.g. ``score``). Unique
        (symbol, available_at).
    max_staleness : timedelta or str, optional
        Forward-fill limit measured from ``available_at``: an older signal is not used (values
        null, status ``stale``). ``None``: no limit. E.g. a daily signal on minute bars with
        ``"1d"`` is used for at most one day.
    max_fill_bars : int, optional
        Forward-fill limit in bars of the symbol: the signal is used fresh at its first bar and
        for at most this many further bars (then ``stale``). ``None``: no limit.

    Returns
    -------
    AsofJoin
        ``frame``: the bars in input order with the signal value columns, ``signal_timestamp``,
        ``signal_available_at`` and ``signal_status`` (``fresh``: first bar to see that signal;
        ``filled``: a later bar still using it; ``stale``; ``missing``: no signal yet).
        ``counts``: bars per status.

    Raises
    ------
    ValueError
        Missing columns, null ``available_at``, two signals of one symbol with the same
        ``available_at``, or value columns clashing with bar columns.
    """
    need = ("timestamp", "symbol", "available_at")
    missing = [c for c in need if c not in signals.columns]
    if missing:
        raise ValueError(f"signals lack columns {missing} (got {signals.columns})")
    right = signals.select(
        "symbol",
        pl.col("timestamp").alias("signal_timestamp"),
        pl.col("available_at").alias("signal_available_at"),
        *_signal_value_columns(signals),
    )
    if bars.schema["symbol"] != right.schema["symbol"]:
        right = right.with_columns(pl.col("symbol").cast(bars.schema["symbol"]))
    return asof_join_backward(
        bars,
        right,
        left_on="timestamp",
        right_on="signal_available_at",
        by="symbol",
        max_staleness=max_staleness,
        max_fill_bars=max_fill_bars,
        status_col=SIGNAL_STATUS,
    )


def build_market_panel(
    prices: pl.DataFrame,
    features: pl.DataFrame,
    signals: pl.DataFrame,
    max_staleness: timedelta | str | None = None,
    max_fill_bars: int | None = None,
    *,
    keep_status: bool = False,
) -> pl.DataFrame:
    """Join prices with features (same bar) and signals (as of availability) per symbol.

    Parameters
    ----------
    prices : pl.DataFrame
        Prices contract, unique (timestamp, symbol).
    features : pl.DataFrame
        ``timestamp``, ``symbol`` and indicator columns (``features.compute_features``); left-
        joined on the exact key, so a bar without features gets nulls.
    signals : pl.DataFrame
        ``timestamp``, ``symbol``, ``available_at`` and value columns; see
        :func:`join_signals_asof`.
    max_staleness : timedelta or str, optional
        Signal forward-fill limit in time (see :func:`join_signals_asof`).
    max_fill_bars : int, optional
        Signal forward-fill limit in bars (see :func:`join_signals_asof`).
    keep_status : bool
        Also keep the ``signal_status`` column (fresh / filled / stale / missing) last; count
        it with ``timing.status_counts(panel, "signal_status")``.

    Returns
    -------
    pl.DataFrame
        Prices columns, feature columns, signal value columns, ``signal_timestamp``,
        ``signal_available_at`` (null where no signal was visible yet), sorted by (timestamp,
        symbol). Row count equals ``prices.height``. The per-status counts are available from
        :func:`join_signals_asof` when needed, or with ``keep_status``.

    Raises
    ------
    ValueError
        Duplicate keys in prices or features, clashing column names, or (as a guard) a bar that
        would see a signal before its ``available_at``.
    """
    key = ["timestamp", "symbol"]
    # Prepared prices are in (timestamp, symbol) order with no key twice (two cheap passes);
    # the panel keeps their row order, so it needs no sort check at the end either.
    prices_in_order = keys_unique_in_order(prices)
    feats = features
    if feats.schema["symbol"] != prices.schema["symbol"]:
        feats = feats.with_columns(pl.col("symbol").cast(prices.schema["symbol"]))
    # Features on exactly the prices' keys (computed from them) have no key twice either.
    same_keys = feats.height == prices.height and feats.select(key).equals(prices.select(key))
    for name, frame, known_unique in (
        ("prices", prices, prices_in_order),
        ("features", features, prices_in_order and same_keys),
    ):
        dup = frame.clear() if known_unique else duplicated_rows(frame, key)
        if dup.height:
            raise ValueError(
                f"build_market_panel: {name} has {dup.height} rows with a duplicated "
                f"(timestamp, symbol): {dup.head(5).to_dicts()}"
            )
    feature_cols = [c for c in features.columns if c not in key]
    clash = [c for c in feature_cols if c in prices.columns]
    if clash:
        raise ValueError(f"build_market_panel: feature columns clash with prices: {clash}")
    if same_keys:
        # Same bars in the same order (features computed from these prices): no join needed.
        with_features = pl.concat([prices, feats.drop(key)], how="horizontal")
    else:
        with_features = prices.join(feats, on=key, how="left", maintain_order="left")
    joined = join_signals_asof(with_features, signals, max_staleness, max_fill_bars).frame
    if joined.height != prices.height:  # a join must never add or lose bars
        raise AssertionError(
            f"market panel has {joined.height} rows but prices have {prices.height}"
        )
    early = check_no_lookahead(
        joined.select("timestamp", "symbol", pl.col("signal_available_at").alias("available_at"))
    )
    if early.height:
        raise AssertionError(f"signals visible before availability: {early.head(5).to_dicts()}")
    value_cols = _signal_value_columns(signals)
    order = [
        *prices.columns,
        *feature_cols,
        *value_cols,
        "signal_timestamp",
        "signal_available_at",
        *([SIGNAL_STATUS] if keep_status else []),
    ]
    out = joined.select(order)
    if not prices_in_order and not is_sorted_by_time_symbol(out):
        out = out.sort(key, maintain_order=True)
    return out


# ---------------------------------------------------------------------------------------------
# Month by month: prepare a large (intraday) panel in bounded memory.

INVALID_POLICIES: tuple[str, ...] = ("fail", "quarantine")
DEFAULT_WARMUP_BARS = 400
"""Bars per symbol carried from the previous month into a month's indicator windows.

Rolling windows (returns, SMA, std, z-score; at most 20 bars) are then exact. The recursive
averages (EMA 20, Wilder ATR/RSI 14) restart from an SMA seed inside the warm-up; the seed's
weight after ``w`` bars is ``(1 - alpha)^(w - 20)``: below 1e-12 for ``w = 400``, so the values
match a full-history computation to ~1e-12 relative.
"""


@dataclass(frozen=True)
class MonthReport:
    """What :func:`prepare_panel_by_month` did for one month."""

    year: int
    month: int
    rows: int
    """Panel rows written (valid price rows of the month)."""
    invalid_rows: int
    """Price rows of the month breaking a rule (quarantined)."""
    signal_counts: dict[str, int]
    """Panel rows per signal as-of status (fresh / filled / stale / missing)."""
    context_counts: dict[str, int]
    """Context timestamps per as-of status (empty without a context table)."""
    timing_violations: int
    """Paranoid level: rows using a signal before availability or older than allowed."""
    seconds: float


@dataclass(frozen=True)
class PreparedPanel:
    """Result of :func:`prepare_panel_by_month`.

    Attributes
    ----------
    months : list of MonthReport
        One per processed month, in time order.
    panel_root, context_root, quarantine_root : Path
        Hive-partitioned outputs (``context_root`` holds data only with a context table,
        ``quarantine_root`` only when rows were quarantined).
    quarantined : pl.DataFrame
        Every invalid price row with ``row_index`` (position within its month's partition),
        the price columns, ``reason``, and ``year``/``month`` of the partition.
    timing_violations : pl.DataFrame
        Paranoid level only: the stale or early signal uses found (``stale_signal_uses``
        columns plus ``rule``); empty otherwise.
    """

    months: list[MonthReport]
    panel_root: Path
    context_root: Path
    quarantine_root: Path
    quarantined: pl.DataFrame
    timing_violations: pl.DataFrame = field(default_factory=pl.DataFrame)

    @property
    def rows(self) -> int:
        """Panel rows written in total."""
        return sum(m.rows for m in self.months)


def _last_bars(frame: pl.DataFrame, n: int) -> pl.DataFrame:
    # The last n rows of every symbol, in (timestamp, symbol) order.
    if n == 0 or frame.height == 0:
        return frame.clear()
    from_end = pl.int_range(pl.len(), 0, -1).over("symbol")
    return frame.sort("timestamp", "symbol").filter(from_end <= n)


def prepare_panel_by_month(
    prices_root: str | Path,
    signals: pl.DataFrame,
    out_root: str | Path,
    *,
    context: pl.DataFrame | None = None,
    level: str = "standard",
    invalid_policy: str = "quarantine",
    warmup_bars: int = DEFAULT_WARMUP_BARS,
    max_staleness: timedelta | str | None = None,
    max_fill_bars: int | None = None,
    context_max_staleness: timedelta | str | None = None,
    max_signal_age_bars: int | None = None,
    months: Sequence[tuple[int, int]] | None = None,
    sample_size: int = 10_000,
) -> PreparedPanel:
    """Validate, compute features, join signals and context, one month at a time.

    The bounded-memory form of ``validate_prices`` → ``compute_features`` →
    :func:`build_market_panel` → ``context.join_context_asof`` for inputs too large to hold at
    once (a year of 1-minute bars for hundreds of symbols). Each month of prices is read alone
    from its partition (lazy scan, partition pruning), the last ``warmup_bars`` valid bars of
    every symbol are carried over from the previous month so windows and fill limits see
    across the boundary, and the month's panel and context are written as their own
    partitions before the next month is read. Peak memory is about one month's panel.

    Parameters
    ----------
    prices_root : str or Path
        Prices in the contract, written by ``storage.write_partitioned`` (UTC months).
    signals : pl.DataFrame
        ``timestamp``, ``symbol``, ``available_at`` and value columns (small: one row per
        signal, e.g. daily). Each month sees the signals available by its last bar.
    out_root : str or Path
        Output folder: ``panel/``, ``context/`` and ``quarantine/`` (hive-partitioned, zstd).
    context : pl.DataFrame, optional
        ``timestamp`` (when known) + market-wide columns; joined as of each distinct bar
        timestamp and stored once per timestamp (``context/``), never per symbol.
    level : {"fast", "standard", "paranoid"}
        Validation level of ``validate_prices`` per month; ``paranoid`` also reports signal
        uses before availability or older than ``max_signal_age_bars`` bars.
    invalid_policy : {"fail", "quarantine"}
        ``fail``: raise on the first month with an invalid row; ``quarantine``: leave the rows
        out of the panel and write them with their reason under ``quarantine/``.
    warmup_bars : int
        Bars per symbol carried into the next month (:data:`DEFAULT_WARMUP_BARS`); must be at
        least ``max_fill_bars`` and ``max_signal_age_bars`` so those limits count across
        months.
    max_staleness, max_fill_bars : optional
        Signal forward-fill limits (:func:`join_signals_asof`).
    context_max_staleness : optional
        Context forward-fill limit in time (``join_context_asof``).
    max_signal_age_bars : int, optional
        Required by ``paranoid``.
    months : sequence of (year, month), optional
        Only these months (e.g. one Dagster partition); the warm-up is then read from the
        previous partition. Default: every partition under ``prices_root``.
    sample_size : int
        Rows checked per month by level ``fast``.

    Returns
    -------
    PreparedPanel

    Raises
    ------
    ValueError
        Unknown level or policy; a bad ``warmup_bars``; a requested month without a
        partition; with ``fail``, a month with invalid rows (the first 20 violations are
        listed); with ``fail`` and ``paranoid``, a stale or early signal use.
    FileNotFoundError
        No partition under ``prices_root``.
    """
    if level not in VALIDATION_LEVELS:
        raise ValueError(f"unknown validation level {level!r}; expected one of {VALIDATION_LEVELS}")
    if invalid_policy not in INVALID_POLICIES:
        raise ValueError(
            f"unknown invalid_policy {invalid_policy!r}; use one of {INVALID_POLICIES}"
        )
    limits = [x for x in (max_fill_bars, max_signal_age_bars) if x is not None]
    if not isinstance(warmup_bars, int) or warmup_bars < max([0, *limits]):
        raise ValueError(
            f"warmup_bars must be an int >= max_fill_bars and max_signal_age_bars, got "
            f"{warmup_bars!r}"
        )
    if level == "paranoid" and max_signal_age_bars is None:
        raise ValueError("level 'paranoid' needs max_signal_age_bars")
    available = [(y, m) for y, m, _ in storage.list_partitions(prices_root)]
    if not available:
        raise FileNotFoundError(f"no price partitions under {prices_root}")
    todo = list(months) if months is not None else available
    unknown = [ym for ym in todo if ym not in available]
    if unknown:
        raise ValueError(f"no price partition for months {unknown} under {prices_root}")
    out = Path(out_root)
    panel_root, context_root, quarantine_root = out / "panel", out / "context", out / "quarantine"
    scan = storage.scan_partitioned(prices_root, include_partition_columns=True)

    def read_month(year: int, month: int) -> pl.DataFrame:
        return (
            scan.filter((pl.col("year") == year) & (pl.col("month") == month))
            .drop("year", "month")
            .collect()
        )

    reports: list[MonthReport] = []
    quarantined: list[pl.DataFrame] = []
    timing: list[pl.DataFrame] = []
    tail: pl.DataFrame | None = None
    previous: tuple[int, int] | None = None
    for year, month in sorted(todo):
        started = time.perf_counter()
        index = available.index((year, month))
        if tail is None or previous != available[index - 1]:
            tail = None
            if index > 0:  # warm-up from the previous partition (validated the same way)
                before = read_month(*available[index - 1])
                tail = _last_bars(
                    validate_prices(before, "standard").drop_invalid(before), warmup_bars
                )
                del before
        prices = read_month(year, month)
        # Paranoid = standard on the prices here, plus the timing checks on the panel below.
        price_level = "standard" if level == "paranoid" else level
        report = validate_prices(prices, price_level, sample_size=sample_size)
        if report.invalid.height:
            if invalid_policy == "fail":
                raise ValueError(
                    f"{year}-{month:02d}: {report.invalid.height} invalid price rows; first "
                    f"violations: {report.violations.head(20).to_dicts()}"
                )
            quarantined.append(
                report.invalid.with_columns(
                    pl.lit(year, pl.Int32).alias("year"), pl.lit(month, pl.Int32).alias("month")
                )
            )
            storage.write_partitioned(report.invalid, quarantine_root)
        valid = report.drop_invalid(prices)
        n_invalid = report.invalid.height
        del prices, report
        if valid.height == 0:
            raise ValueError(f"{year}-{month:02d}: no valid price rows left to prepare")
        chunk = valid if tail is None else pl.concat([tail, valid], how="vertical")
        first_bar = valid.get_column("timestamp").min()
        last_bar = valid.get_column("timestamp").max()
        features = compute_features(chunk)
        visible = signals.filter(pl.col("available_at") <= last_bar)
        panel = build_market_panel(
            chunk, features, visible, max_staleness, max_fill_bars, keep_status=True
        )
        del features
        in_month = pl.col("timestamp") >= first_bar
        if level == "paranoid":
            assert max_signal_age_bars is not None
            stale = stale_signal_uses(panel, max_signal_age_bars).filter(in_month)
            early = check_no_lookahead(
                panel.select(
                    "timestamp", "symbol", pl.col("signal_available_at").alias("available_at")
                )
            ).filter(in_month)
            found = pl.concat(
                [
                    stale.select("timestamp", "symbol", "signal_timestamp").with_columns(
                        pl.lit("signal_not_stale").alias("rule")
                    ),
                    early.select(
                        "timestamp",
                        "symbol",
                        pl.lit(None, pl.Datetime("us", "UTC")).alias("signal_timestamp"),
                    ).with_columns(pl.lit("signal_available_before_use").alias("rule")),
                ],
                how="vertical_relaxed",
            )
            if found.height and invalid_policy == "fail":
                raise ValueError(
                    f"{year}-{month:02d}: {found.height} signal timing violations: "
                    f"{found.head(20).to_dicts()}"
                )
            timing.append(found)
        tail = _last_bars(chunk, warmup_bars)
        del chunk
        panel = panel.filter(in_month)
        signal_counts = status_counts(panel, SIGNAL_STATUS)
        storage.write_partitioned(panel.drop(SIGNAL_STATUS), panel_root)
        context_counts: dict[str, int] = {}
        if context is not None:
            stamps = panel.select(pl.col("timestamp").unique(maintain_order=True))
            joined = join_context_asof(stamps, context, max_staleness=context_max_staleness)
            context_counts = status_counts(joined, "context_status")
            storage.write_partitioned(joined, context_root)
        reports.append(
            MonthReport(
                year=year,
                month=month,
                rows=panel.height,
                invalid_rows=n_invalid,
                signal_counts=signal_counts,
                context_counts=context_counts,
                timing_violations=timing[-1].height if level == "paranoid" else 0,
                seconds=time.perf_counter() - started,
            )
        )
        del panel
        previous = (year, month)
    return PreparedPanel(
        months=reports,
        panel_root=panel_root,
        context_root=context_root,
        quarantine_root=quarantine_root,
        quarantined=pl.concat(quarantined) if quarantined else pl.DataFrame(),
        timing_violations=pl.concat(timing) if timing else pl.DataFrame(),
    )
