"""Per-symbol technical indicators as polars expressions, each known at its bar's close.

Every window runs over one symbol's bars in timestamp order (``.over("symbol")`` after sorting)
and uses only rows at or before the bar, so a value stamped t is available at t's close. Windows
count bars, not calendar days: a symbol's missing days are simply not bars. Warm-up rows, where a
window is not yet full, are null; nothing is filled.
"""

from __future__ import annotations

import polars as pl

from ml4t_pipeline.lib.stamps import has_adjacent_duplicate, in_key_order

ATR_WINDOW = 14
RSI_WINDOW = 14
MA_WINDOW = 20

FEATURE_COLUMNS: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ret_20",
    "vol_20",
    "atr_14_pct",
    "rsi_14",
    "close_to_sma_20",
    "close_to_ema_20",
    "zscore_20",
)
"""Scale-free model inputs (the level-valued ``atr_14``, ``sma_20``, ``ema_20`` are not in it)."""

OUTPUT_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "symbol",
    "ret_1",
    "ret_5",
    "ret_20",
    "vol_20",
    "atr_14",
    "atr_14_pct",
    "rsi_14",
    "sma_20",
    "ema_20",
    "close_to_sma_20",
    "close_to_ema_20",
    "zscore_20",
)
"""Columns of :func:`compute_features`' output, in order."""


def _bar_number() -> pl.Expr:
    # 0 for a symbol's first bar, 1 for the second, ... (each symbol's rows in time order).
    return pl.int_range(pl.len(), dtype=pl.Int64).over("symbol")


def sma_seeded_smoothing(x: pl.Expr, window: int, alpha: float, first_bar: int) -> pl.Expr:
    """Recursive smoothing ``s_t = (1 - alpha) s_{t-1} + alpha x_t`` seeded with an SMA.

    ``s`` starts at bar ``first_bar`` (0-based within the symbol) as the mean of ``x`` over the
    ``window`` bars ending there and is null before. With ``alpha = 1/n`` this is Wilder's
    smoothing (Wilder 1978, *New Concepts in Technical Trading Systems*); with ``alpha =
    2/(n+1)`` an EMA seeded with its SMA. Per symbol; each symbol's rows must be in time order.
    """
    bar = _bar_number()
    seeded = (
        pl.when(bar == first_bar)
        .then(x.rolling_mean(window, min_samples=window).over("symbol"))
        .when(bar > first_bar)
        .then(x)
        .otherwise(None)
    )
    return seeded.ewm_mean(alpha=alpha, adjust=False).over("symbol")


def compute_features(prices: pl.DataFrame) -> pl.DataFrame:
    """Compute the indicator table from prices (long format, one row per bar and symbol).

    Parameters
    ----------
    prices : pl.DataFrame
        Prices contract: ``timestamp`` (UTC bar close), ``symbol``, ``high``, ``low``, ``close``
        (Float64, currency per share); other columns are ignored. Any row order.

    Returns
    -------
    pl.DataFrame
        ``OUTPUT_COLUMNS``, one row per input row, sorted by (timestamp, symbol); all Float64:

        - ``ret_k`` (k = 1, 5, 20): simple return ``close_t / close_{t-k} - 1`` (fraction); null
          for a symbol's first k bars.
        - ``vol_20``: sample standard deviation (ddof = 1) of the last 20 ``ret_1``, per bar and
          **not annualised** (multiply by sqrt(252) for daily bars); first value at bar 20.
        - ``atr_14``: Wilder's average true range (Wilder 1978). True range ``TR_t = max(high_t -
          low_t, |high_t - close_{t-1}|, |low_t - close_{t-1}|)`` from bar 1 on (bar 0 has no
          previous close); ``ATR_14`` at bar 14 = mean(TR_1..TR_14), then ``ATR_t = (13 ATR_{t-1}
          + TR_t) / 14``. Currency per share. ``atr_14_pct = atr_14 / close``.
        - ``rsi_14``: Wilder's RSI (Wilder 1978): gains/losses of close changes smoothed as ATR
          above; ``RSI = 100 - 100 / (1 + avg_gain / avg_loss)`` in [0, 100]; 100 when
          avg_loss = 0 < avg_gain, 50 when both are 0; first value at bar 14.
        - ``sma_20``: 20-bar mean of close; ``ema_20``: EMA with alpha 2/21 seeded with the SMA at
          bar 19; ``close_to_sma_20 = close / sma_20 - 1``, ``close_to_ema_20`` likewise;
          ``zscore_20 = (close - sma_20) / std_20(close)`` (ddof = 1; null when the std is 0).

        A null input (e.g. a null high) makes the dependent values of that bar null; the
        recursive averages carry on from the last known state.

    Raises
    ------
    ValueError
        If a required column is missing or the (timestamp, symbol) key is not unique (windows
        would mix two rows of one bar).
    """
    required = ("timestamp", "symbol", "high", "low", "close")
    missing = [c for c in required if c not in prices.columns]
    if missing:
        raise ValueError(f"compute_features: missing columns {missing} (got {prices.columns})")
    # The windows below run per symbol in row order, so each symbol's rows must be in time order.
    # Prepared prices come in (timestamp, symbol) order: used as they are (the windows then run
    # on each symbol's rows in place, ~0.3 s less on the S&P file than sorting by symbol first).
    frame = prices.select(required)
    key = ["timestamp", "symbol"]
    if not in_key_order(frame):
        frame = frame.sort(["symbol", "timestamp"])
        key = ["symbol", "timestamp"]
    if has_adjacent_duplicate(frame, key):  # sorted by the key: twins are neighbours
        dup = prices.filter(pl.struct("timestamp", "symbol").is_duplicated())
        raise ValueError(
            f"compute_features: {dup.height} rows share a (timestamp, symbol) key; validate "
            f"prices first. First rows: {dup.head(5).to_dicts()}"
        )

    def by_symbol(e: pl.Expr) -> pl.Expr:
        return e.over("symbol")

    # One lazy query: polars plans the four steps together (the symbol groups and shared
    # windows such as the previous close computed once) instead of four eager passes.
    close, high, low = pl.col("close"), pl.col("high"), pl.col("low")
    prev_close = by_symbol(close.shift(1))
    query = frame.lazy().with_columns(
        *[(close / by_symbol(close.shift(k)) - 1.0).alias(f"ret_{k}") for k in (1, 5, 20)],
        pl.max_horizontal(high - low, (high - prev_close).abs(), (low - prev_close).abs()).alias(
            "_tr_raw"
        ),
        (close - prev_close).alias("_change"),
        prev_close.is_null().alias("_no_prev"),
        by_symbol(close.rolling_mean(MA_WINDOW, min_samples=MA_WINDOW)).alias("sma_20"),
        by_symbol(close.rolling_std(MA_WINDOW, min_samples=MA_WINDOW)).alias("_std_close_20"),
    )
    # max_horizontal skips nulls; a true range needs all of high, low and the previous close.
    tr_defined = ~pl.col("_no_prev") & high.is_not_null() & low.is_not_null()
    query = query.with_columns(
        pl.when(tr_defined).then(pl.col("_tr_raw")).otherwise(None).alias("_tr"),
        pl.col("_change").clip(lower_bound=0.0).alias("_gain"),
        (-pl.col("_change")).clip(lower_bound=0.0).alias("_loss"),
        by_symbol(pl.col("ret_1").rolling_std(MA_WINDOW, min_samples=MA_WINDOW)).alias("vol_20"),
        sma_seeded_smoothing(close, MA_WINDOW, 2.0 / (MA_WINDOW + 1), MA_WINDOW - 1).alias(
            "ema_20"
        ),
    )
    wilder = 1.0 / ATR_WINDOW
    query = query.with_columns(
        sma_seeded_smoothing(pl.col("_tr"), ATR_WINDOW, wilder, ATR_WINDOW).alias("atr_14"),
        sma_seeded_smoothing(pl.col("_gain"), RSI_WINDOW, 1.0 / RSI_WINDOW, RSI_WINDOW).alias(
            "_avg_gain"
        ),
        sma_seeded_smoothing(pl.col("_loss"), RSI_WINDOW, 1.0 / RSI_WINDOW, RSI_WINDOW).alias(
            "_avg_loss"
        ),
    )
    gain, loss = pl.col("_avg_gain"), pl.col("_avg_loss")
    rsi = (
        pl.when(gain.is_null() | loss.is_null())
        .then(None)
        .when((loss == 0) & (gain == 0))
        .then(50.0)
        .when(loss == 0)
        .then(100.0)
        .otherwise(100.0 - 100.0 / (1.0 + gain / loss))
    )
    std20 = pl.col("_std_close_20")
    query = query.with_columns(
        rsi.alias("rsi_14"),
        (pl.col("atr_14") / close).alias("atr_14_pct"),
        (close / pl.col("sma_20") - 1.0).alias("close_to_sma_20"),
        (close / pl.col("ema_20") - 1.0).alias("close_to_ema_20"),
        pl.when(std20 > 0).then((close - pl.col("sma_20")) / std20).alias("zscore_20"),
    )
    query = query.select(OUTPUT_COLUMNS)
    if key[0] != "timestamp":  # rows were sorted by symbol for the windows: back to key order
        query = query.sort(["timestamp", "symbol"])
    return query.collect()
