"""Walk-forward scikit-learn signals: a cross-sectional model retrained every calendar month.

The pipeline trains its own model when the experiment brings no signal file. Every step is built
so that nothing is used before it was known:

* **Label.** For a row (t, s) the label is the forward simple return
  ``close(s, t+h) / close(s, t) - 1`` where ``t+h`` is the ``h``-th *next bar of that symbol*
  (its own bar sequence, so a missing day shifts the label end rather than mixing symbols). The
  label becomes known at the close of that bar: ``label_available_at = timestamp(s, t+h)``.
* **Features.** Each feature is transformed cross-sectionally per timestamp (centred rank or
  z-score across the symbols of that bar), so the model learns to *rank* the universe. The
  transform at t uses only values stamped t, all known at t's close.
* **Target.** The label minus the mean label of the same timestamp (over the training rows whose
  label is already known at the cut-off), so the model predicts relative performance.
* **Walk-forward.** For each calendar month M (UTC) the cut-off is the first bar of M. The model
  for M is fitted only on rows whose ``label_available_at`` is *strictly before* that cut-off, and
  it scores every bar of M. The window expands: all earlier known labels are used. A month is
  scored only once the training rows span at least ``min_train_periods`` distinct timestamps.

Rows with any null feature (indicator warm-up, missing inputs) are neither used for training nor
scored: they are absent from the output, never filled. NaN or infinite feature values are an
error, not a missing value.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from ml4t_pipeline.lib.memory import import_without_collection
from ml4t_pipeline.lib.stamps import duplicated_rows, in_key_order

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge

__all__ = [
    "FitRecord",
    "WalkForwardResult",
    "gather_rows",
    "run_walk_forward",
    "training_cutoff_violations",
    "walk_forward_signals",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_LABEL = np.iinfo(np.int64).max  # sentinel "label never available"
_GBM_MAX_ITER = 50
_GBM_MAX_LEAF_NODES = 15
_GBM_LEARNING_RATE = 0.05
_SHOW = 5  # offending keys quoted in error messages
BLAS_THREADS = 1
"""BLAS threads of the walk-forward fits and predictions (pinned: see :func:`run_walk_forward`)."""


@dataclass(frozen=True, slots=True)
class FitRecord:
    """One monthly model fit of the walk-forward run.

    Attributes
    ----------
    trained_at : datetime
        The cut-off (tz-aware UTC): the first bar of the month the model scores. Stored in the
        output as ``model_trained_at``.
    max_label_available_at : datetime
        Latest ``label_available_at`` among the training rows. Always strictly before
        ``trained_at`` (see :func:`training_cutoff_violations`).
    max_train_timestamp : datetime
        Latest feature timestamp among the training rows.
    n_rows : int
        Training rows (timestamp, symbol) used for the fit.
    n_timestamps : int
        Distinct timestamps among the training rows.
    first_scored_at, last_scored_at : datetime
        First and last bar of the month scored with this model.
    n_predictions : int
        Rows scored with this model.
    """

    trained_at: datetime
    max_label_available_at: datetime
    max_train_timestamp: datetime
    n_rows: int
    n_timestamps: int
    first_scored_at: datetime
    last_scored_at: datetime
    n_predictions: int


@dataclass(frozen=True, slots=True)
class WalkForwardResult:
    """Output of :func:`run_walk_forward`.

    Attributes
    ----------
    signals : pl.DataFrame
        Columns timestamp, symbol, score, available_at, model_trained_at (see
        :func:`walk_forward_signals`).
    fits : tuple[FitRecord, ...]
        One record per fitted model, in time order.
    n_rows_null_features : int
        Feature rows with at least one null feature: not trained on, not scored.
    n_rows_before_first_model : int
        Complete feature rows in months before enough training history existed: not scored.
    """

    signals: pl.DataFrame
    fits: tuple[FitRecord, ...]
    n_rows_null_features: int
    n_rows_before_first_model: int

    def fits_frame(self) -> pl.DataFrame:
        """Return the fit log as a frame (one row per fit), e.g. for Dagster metadata."""
        schema: dict[str, pl.DataType] = {
            "trained_at": pl.Datetime("us", "UTC"),
            "max_label_available_at": pl.Datetime("us", "UTC"),
            "max_train_timestamp": pl.Datetime("us", "UTC"),
            "n_rows": pl.Int64(),
            "n_timestamps": pl.Int64(),
            "first_scored_at": pl.Datetime("us", "UTC"),
            "last_scored_at": pl.Datetime("us", "UTC"),
            "n_predictions": pl.Int64(),
        }
        rows = [
            (
                f.trained_at,
                f.max_label_available_at,
                f.max_train_timestamp,
                f.n_rows,
                f.n_timestamps,
                f.first_scored_at,
                f.last_scored_at,
                f.n_predictions,
            )
            for f in self.fits
        ]
        return pl.DataFrame(rows, schema=schema, orient="row")


def training_cutoff_violations(fits: Sequence[FitRecord]) -> list[FitRecord]:
    """Return the fits that used information not known strictly before their cut-off.

    A fit violates the walk-forward rule when its latest training label became available at or
    after ``trained_at`` (or a training feature row is stamped at or after it).

    Parameters
    ----------
    fits : sequence of FitRecord
        Usually ``run_walk_forward(...).fits``.

    Returns
    -------
    list[FitRecord]
        The offending records; empty when every fit is clean.
    """
    return [
        f
        for f in fits
        if f.max_label_available_at >= f.trained_at or f.max_train_timestamp >= f.trained_at
    ]


def walk_forward_signals(
    prices: pl.DataFrame,
    features: pl.DataFrame,
    feature_columns: list[str],
    *,
    horizon: int = 5,
    retrain: Literal["monthly"] = "monthly",
    min_train_periods: int = 252,
    model: Literal["ridge", "gbm"] = "ridge",
    alpha: float = 1.0,
    seed: int = 0,
    preprocess: Literal["rank", "zscore"] = "rank",
) -> pl.DataFrame:
    """Score every (timestamp, symbol) with a monthly-retrained, expanding-window model.

    See the module docstring for the label, preprocessing and cut-off rules. This is
    ``run_walk_forward(...).signals``; call :func:`run_walk_forward` to also get the fit log.

    Parameters
    ----------
    prices : pl.DataFrame
        Prices contract, one row per (timestamp, symbol). Needs ``timestamp`` (Datetime, tz UTC,
        bar close), ``symbol`` (String or Categorical) and ``close`` (Float64, currency per
        share, finite and > 0). Other columns are ignored.
    features : pl.DataFrame
        One row per (timestamp, symbol) with ``timestamp``, ``symbol`` and the
        ``feature_columns`` (numeric; null allowed for warm-up, NaN/inf not). The rows of this
        frame are the rows that get scored.
    feature_columns : list[str]
        Model inputs, non-empty and unique.
    horizon : int, default 5
        Label horizon in bars of the symbol (>= 1).
    retrain : {"monthly"}
        Retraining calendar: the first bar of each calendar month (UTC).
    min_train_periods : int, default 252
        Minimum distinct timestamps among the training rows before a month is scored (>= 1).
    model : {"ridge", "gbm"}
        ``"ridge"``: :class:`sklearn.linear_model.Ridge` (``alpha``, with intercept).
        ``"gbm"``: :class:`sklearn.ensemble.HistGradientBoostingRegressor` with 50 iterations,
        15 leaves, learning rate 0.05, no early stopping, ``random_state=seed`` (slower).
    alpha : float, default 1.0
        Ridge L2 penalty (> 0). Unused by ``"gbm"``.
    seed : int, default 0
        Random state for ``"gbm"``. Ridge is deterministic and ignores it.
    preprocess : {"rank", "zscore"}, default "rank"
        Cross-sectional transform per timestamp over the rows with complete features.
        ``"rank"``: average rank scaled to [-0.5, 0.5] (0 when one symbol). ``"zscore"``:
        (x - mean) / std (population std; 0 when std is 0).

    Returns
    -------
    pl.DataFrame
        Columns ``timestamp`` (Datetime us UTC), ``symbol`` (String), ``score`` (Float64:
        predicted ``horizon``-bar forward simple return relative to the cross-sectional mean,
        a fraction), ``available_at`` (= timestamp: the features are known at that close and
        the model was fitted before), ``model_trained_at`` (Datetime us UTC: the cut-off of the
        model used, the first bar of the month). Sorted by (timestamp, symbol). Rows with a
        null feature or in months before enough history are absent. Deterministic.

    Raises
    ------
    ValueError
        Bad parameters; missing columns; duplicate (timestamp, symbol) keys; null, non-finite
        or non-positive closes; NaN or infinite feature values (the messages name the rows).
    TypeError
        ``timestamp`` not a tz-aware UTC Datetime; a feature column not numeric.
    """
    return run_walk_forward(
        prices,
        features,
        feature_columns,
        horizon=horizon,
        retrain=retrain,
        min_train_periods=min_train_periods,
        model=model,
        alpha=alpha,
        seed=seed,
        preprocess=preprocess,
    ).signals


def run_walk_forward(
    prices: pl.DataFrame,
    features: pl.DataFrame,
    feature_columns: list[str],
    *,
    horizon: int = 5,
    retrain: Literal["monthly"] = "monthly",
    min_train_periods: int = 252,
    model: Literal["ridge", "gbm"] = "ridge",
    alpha: float = 1.0,
    seed: int = 0,
    preprocess: Literal["rank", "zscore"] = "rank",
) -> WalkForwardResult:
    """Run the walk-forward model and return the signals together with the fit log.

    Parameters, returned signals and exceptions are those of :func:`walk_forward_signals`.

    Returns
    -------
    WalkForwardResult
        ``signals``, ``fits`` (one :class:`FitRecord` per monthly fit) and counts of the rows
        not scored.
    """
    _check_params(feature_columns, horizon, retrain, min_train_periods, model, alpha, preprocess)
    px = _prepared_prices(prices)
    fx = _prepared_features(features, feature_columns)

    # The label shifts run per symbol in row order: time order within each symbol is enough
    # (prepared prices are in (timestamp, symbol) order; anything else is sorted by symbol).
    in_time_order = in_key_order(px)
    labels = (
        (px if in_time_order else px.sort("symbol", "timestamp"))
        .with_columns(
            (pl.col("close").shift(-horizon).over("symbol") / pl.col("close") - 1.0).alias(
                "_label"
            ),
            pl.col("timestamp").shift(-horizon).over("symbol").alias("_label_available_at"),
        )
        .select("timestamp", "symbol", "_label", "_label_available_at")
    )
    complete = pl.all_horizontal([pl.col(c).is_not_null() for c in feature_columns])
    n_null = fx.height - fx.select(complete.sum()).item()
    month_starts = _month_starts(_as_us(fx["timestamp"]))
    if in_time_order and _same_keys(fx, labels):
        # Features row for row on the prices' keys (the pipeline computes them from these
        # prices), in (timestamp, symbol) order: the labels are attached by position, and the
        # complete rows stay in key order. Same rows as the join below, without its hash tables
        # (~220 MB transient on 505 symbols x 5 years).
        # The timestamp column is flagged sorted (it is: key order), so the per-timestamp
        # windows of the cross-sectional transform find their groups as runs instead of by
        # hashing (0.48 -> 0.33 s for 9 inputs on 580k rows; the same values).
        panel = fx.with_columns(
            labels["_label"], labels["_label_available_at"], pl.col("timestamp").set_sorted()
        ).filter(complete)
    else:
        panel = (
            fx.filter(complete)
            .join(labels, on=["timestamp", "symbol"], how="left")
            .sort("timestamp", "symbol")  # first: the per-timestamp windows then run faster
        )
    del px, fx, labels
    panel = panel.with_columns([_cross_sectional(c, preprocess) for c in feature_columns])

    ts = _as_us(panel["timestamp"])
    # Row-major: the fits gather whole rows (a row of a column-major matrix is 9 strided reads).
    x = panel.select(feature_columns).to_numpy(order="c").astype(np.float64, copy=False)
    y = panel["_label"].fill_null(np.nan).to_numpy().astype(np.float64, copy=False)
    label_at = _as_us(panel["_label_available_at"], null=_NO_LABEL)
    has_label = np.isfinite(y)
    uniq_ts, tid = np.unique(ts, return_inverse=True)

    bounds = np.append(month_starts, _NO_LABEL)
    fits: list[FitRecord] = []
    picked: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    trained: list[np.ndarray] = []
    n_before = 0
    # The fits skip scikit-learn's own finiteness scans of every training matrix and target
    # (``assume_finite``): the features were checked finite above, their cross-sectional
    # transforms are finite, and the targets come from rows with a finite label. One scan here
    # keeps the guarantee (an overflow in a z-score would otherwise reach the fit silently).
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        shown = panel.select("timestamp", "symbol")[bad[:_SHOW]].rows()
        columns = [c for c, ok in zip(feature_columns, finite.all(axis=0), strict=True) if not ok]
        raise ValueError(
            f"the {preprocess!r} cross-sectional transform of {columns} gave NaN or infinite "
            f"values on {bad.size} row(s) (finite inputs overflowing), e.g. {shown}"
        )
    del finite
    # The training rows of each month are gathered into one reused buffer (``rows_buffer``) and
    # the fit runs on a C-contiguous view of its first rows: the same values in the same layout
    # as a fresh ``x[train]`` (so the same fitted bits), without a new ~40 MB array and its page
    # faults per month. Ridge centres that view in place (``copy_X=False``); the buffer is
    # rewritten before every fit.
    rows_buffer = np.empty_like(x, order="C")
    # The per-row vectors of each fit (training rows' timestamp ids, labels, targets) are taken
    # into reused buffers the same way: the same values, without three fresh arrays per month.
    tid_buffer = np.empty(tid.size, dtype=tid.dtype)
    y_buffer = np.empty(y.size, dtype=np.float64)
    target_buffer = np.empty(y.size, dtype=np.float64)
    # The training rows are exactly the labelled rows whose label time is before the cut-off, so
    # their latest label time is the last sorted label time before it (a search, not a pass over
    # the rows); their latest stamp is the last training row's (rows in time order).
    label_times = np.sort(label_at[has_label])
    # One BLAS thread for every fit and prediction: OpenBLAS splits a product such as Ridge's
    # ``X.T @ X`` by thread, and the sums of the parts round differently, so scores computed
    # with 1 and with 2 threads differ in the last bits (and then which stocks rank top). With
    # the count pinned, a laptop, a CI machine and a cluster node score alike.
    with threadpool_limits(limits=BLAS_THREADS, user_api="blas"), _fit_config():
        for cutoff, next_cutoff in zip(bounds[:-1], bounds[1:], strict=True):
            lo = int(np.searchsorted(ts, cutoff, side="left"))
            hi = int(np.searchsorted(ts, next_cutoff, side="left"))
            if hi == lo:
                continue
            # Training rows: stamped before the cut-off (prefix [0, lo)) with a label known strictly
            # before it. label_at > timestamp always, so the prefix holds every candidate row.
            train = np.flatnonzero(has_label[:lo] & (label_at[:lo] < cutoff))
            n = train.size
            train_tid = np.take(tid, train, out=tid_buffer[:n], mode="clip")
            counts = np.bincount(train_tid, minlength=uniq_ts.size)
            n_timestamps = int(np.count_nonzero(counts))
            if n_timestamps < min_train_periods:
                n_before += hi - lo
                continue
            train_y = np.take(y, train, out=y_buffer[:n], mode="clip")
            sums = np.bincount(train_tid, weights=train_y, minlength=uniq_ts.size)
            # each timestamp's mean label divided once (the same quotient for each of its rows)
            means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
            target = np.take(means, train_tid, out=target_buffer[:n], mode="clip")
            np.subtract(train_y, target, out=target)  # train_y - means[train_tid]
            estimator = _estimator(model, alpha, seed)
            estimator.fit(gather_rows(x, train, rows_buffer), target)
            picked.append(np.arange(lo, hi))
            # scored on a column-major block, the layout the scores were always computed in
            # (BLAS sums a row's products in another order for a row-major one: other bits)
            month = np.asfortranarray(x[lo:hi])
            scores.append(np.asarray(estimator.predict(month), dtype=np.float64))
            trained.append(np.full(hi - lo, cutoff, dtype=np.int64))
            fits.append(
                FitRecord(
                    trained_at=_to_datetime(int(cutoff)),
                    max_label_available_at=_to_datetime(
                        int(label_times[np.searchsorted(label_times, cutoff, side="left") - 1])
                    ),
                    max_train_timestamp=_to_datetime(int(ts[train[-1]])),
                    n_rows=int(n),
                    n_timestamps=n_timestamps,
                    first_scored_at=_to_datetime(int(ts[lo])),
                    last_scored_at=_to_datetime(int(ts[hi - 1])),
                    n_predictions=hi - lo,
                )
            )
    del rows_buffer, tid_buffer, y_buffer, target_buffer

    rows = np.concatenate(picked) if picked else np.empty(0, dtype=np.int64)
    signals = (
        panel.select("timestamp", "symbol")[rows]
        .with_columns(
            pl.Series("score", np.concatenate(scores) if scores else np.empty(0), dtype=pl.Float64),
            pl.col("timestamp").alias("available_at"),
            pl.Series(
                "model_trained_at",
                np.concatenate(trained) if trained else np.empty(0, dtype=np.int64),
                dtype=pl.Int64,
            )
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC"),
        )
        .select("timestamp", "symbol", "score", "available_at", "model_trained_at")
    )
    return WalkForwardResult(
        signals=signals,
        fits=tuple(fits),
        n_rows_null_features=int(n_null),
        n_rows_before_first_model=n_before,
    )


# --- helpers -------------------------------------------------------------------------------------


def _check_params(
    feature_columns: list[str],
    horizon: int,
    retrain: str,
    min_train_periods: int,
    model: str,
    alpha: float,
    preprocess: str,
) -> None:
    if not feature_columns:
        raise ValueError("feature_columns is empty: the model needs at least one input")
    dupes = sorted({c for c in feature_columns if feature_columns.count(c) > 1})
    if dupes:
        raise ValueError(f"feature_columns lists {dupes} more than once")
    reserved = {"timestamp", "symbol"}.intersection(feature_columns)
    if reserved:
        raise ValueError(f"feature_columns may not include key columns {sorted(reserved)}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be an int >= 1 (bars), got {horizon!r}")
    if retrain != "monthly":
        raise ValueError(f"retrain must be 'monthly', got {retrain!r}")
    if (
        isinstance(min_train_periods, bool)
        or not isinstance(min_train_periods, int)
        or min_train_periods < 1
    ):
        raise ValueError(f"min_train_periods must be an int >= 1, got {min_train_periods!r}")
    if model not in ("ridge", "gbm"):
        raise ValueError(f"model must be 'ridge' or 'gbm', got {model!r}")
    if not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be finite and > 0, got {alpha!r}")
    if preprocess not in ("rank", "zscore"):
        raise ValueError(f"preprocess must be 'rank' or 'zscore', got {preprocess!r}")


def _check_keys(df: pl.DataFrame, name: str, columns: Sequence[str]) -> pl.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; it has {df.columns}")
    dtype = df.schema["timestamp"]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone != "UTC":
        raise TypeError(
            f"{name}.timestamp must be a tz-aware UTC Datetime marking the bar close, got {dtype}"
        )
    sym = df.schema["symbol"]
    if sym != pl.String and not isinstance(sym, pl.Categorical | pl.Enum):
        raise TypeError(f"{name}.symbol must be String or Categorical, got {df.schema['symbol']}")
    out = df.select(columns).with_columns(
        pl.col("timestamp").cast(pl.Datetime("us", "UTC")), pl.col("symbol").cast(pl.String)
    )
    bad_keys = out.filter(pl.col("timestamp").is_null() | pl.col("symbol").is_null())
    if bad_keys.height:
        raise ValueError(f"{name} has {bad_keys.height} row(s) with a null timestamp or symbol")
    # In (timestamp, symbol) order (prepared tables are) a duplicated key sits next to its twin:
    # a cheap test first; the struct hash runs only to name the rows, or on unsorted input.
    dup = duplicated_rows(out, ["timestamp", "symbol"])
    if dup.height:
        keys = dup.select("timestamp", "symbol").unique().sort("timestamp", "symbol")
        raise ValueError(
            f"{name} has {dup.height} rows on duplicate (timestamp, symbol) keys, e.g. "
            f"{keys.head(_SHOW).rows()}"
        )
    return out


def _same_keys(left: pl.DataFrame, right: pl.DataFrame) -> bool:
    """True when both frames hold the same (timestamp, symbol) keys in the same row order."""
    keys = ["timestamp", "symbol"]
    return left.height == right.height and left.select(keys).equals(right.select(keys))


def _prepared_prices(prices: pl.DataFrame) -> pl.DataFrame:
    px = _check_keys(prices, "prices", ["timestamp", "symbol", "close"])
    if not px.schema["close"].is_numeric():
        raise TypeError(f"prices.close must be numeric, got {px.schema['close']}")
    px = px.with_columns(pl.col("close").cast(pl.Float64))
    close = pl.col("close")
    bad = px.filter(close.is_null() | ~close.is_finite() | (close <= 0))
    if bad.height:
        raise ValueError(
            f"prices has {bad.height} row(s) whose close is null, non-finite or <= 0, "
            f"which would make the forward-return label meaningless, e.g. "
            f"{bad.sort('timestamp', 'symbol').head(_SHOW).rows()}"
        )
    return px


def _prepared_features(features: pl.DataFrame, feature_columns: list[str]) -> pl.DataFrame:
    fx = _check_keys(features, "features", ["timestamp", "symbol", *feature_columns])
    not_numeric = [c for c in feature_columns if not fx.schema[c].is_numeric()]
    if not_numeric:
        raise TypeError(f"feature column(s) {not_numeric} are not numeric")
    fx = fx.with_columns([pl.col(c).cast(pl.Float64) for c in feature_columns])
    for c in feature_columns:
        bad = fx.filter(pl.col(c).is_not_null() & ~pl.col(c).is_finite())
        if bad.height:
            examples = bad.sort("timestamp", "symbol").select("timestamp", "symbol", c)
            raise ValueError(
                f"features.{c} has {bad.height} NaN/infinite value(s) (null marks a missing "
                f"value; NaN/inf is an upstream error), e.g. {examples.head(_SHOW).rows()}"
            )
    return fx


def _cross_sectional(column: str, how: str) -> pl.Expr:
    x = pl.col(column)
    n = pl.len().over("timestamp")
    if how == "rank":
        rank = x.rank("average").over("timestamp")
        return pl.when(n > 1).then((rank - 1.0) / (n - 1.0) - 0.5).otherwise(0.0).alias(column)
    std = x.std(ddof=0).over("timestamp")
    return (
        pl.when(std > 0).then((x - x.mean().over("timestamp")) / std).otherwise(0.0).alias(column)
    )


def _as_us(series: pl.Series, null: int | None = None) -> np.ndarray:
    raw = series.dt.replace_time_zone(None).cast(pl.Int64)
    if null is not None:
        raw = raw.fill_null(null)
    return raw.to_numpy().astype(np.int64, copy=False)


def _month_starts(ts_us: np.ndarray) -> np.ndarray:
    uniq = np.unique(ts_us)
    months = uniq.astype("datetime64[us]").astype("datetime64[M]")
    first = np.ones(uniq.size, dtype=bool)
    first[1:] = months[1:] != months[:-1]
    return uniq[first]


def _to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def gather_rows(x: np.ndarray, rows: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """Copy ``x[rows]`` into the first ``rows.size`` rows of ``buffer`` and return that view.

    The view holds the values of ``x[rows]`` in the same layout (C-contiguous rows), so an
    estimator fitted on it computes what it would on a fresh ``x[rows]``, without allocating.

    Parameters
    ----------
    x : np.ndarray
        2-D float64 matrix (any memory order).
    rows : np.ndarray
        int64 row positions into ``x``, each in ``[0, len(x))``.
    buffer : np.ndarray
        C-contiguous float64 array of shape ``(>= rows.size, x.shape[1])``; overwritten.

    Returns
    -------
    np.ndarray
        ``buffer[: rows.size]``, equal to ``x[rows]``.

    Raises
    ------
    ValueError
        ``buffer`` not C-contiguous, too short or of another width.
    """
    if (
        not buffer.flags["C_CONTIGUOUS"]
        or buffer.shape[0] < rows.size
        or buffer.shape[1:] != x.shape[1:]
    ):
        raise ValueError(
            f"buffer must be C-contiguous with at least {rows.size} rows of width "
            f"{x.shape[1:]}, got shape {buffer.shape}"
        )
    # mode="clip": no bounds pass and no temporary buffer (the positions are in range)
    return np.take(x, rows, axis=0, out=buffer[: rows.size], mode="clip")


def _fit_config() -> AbstractContextManager[None]:
    # scikit-learn without its per-call finiteness scans (the caller checked the inputs)
    sklearn = import_without_collection("sklearn")  # with scipy.stats: ~300k objects
    return sklearn.config_context(assume_finite=True)


def _estimator(model: str, alpha: float, seed: int) -> Ridge | HistGradientBoostingRegressor:
    # imported here: sklearn.ensemble alone takes seconds to import, and most runs use Ridge
    if model == "ridge":
        import_without_collection("sklearn.linear_model")
        from sklearn.linear_model import Ridge

        # copy_X=False: Ridge centres the training matrix in place instead of copying it first;
        # the caller hands it the month's rows in a buffer it rewrites before each fit
        # (``gather_rows``), so the same arithmetic runs without a copy of up to 480k x 9 floats.
        return Ridge(alpha=alpha, copy_X=False)
    import_without_collection("sklearn.ensemble")
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        max_iter=_GBM_MAX_ITER,
        max_leaf_nodes=_GBM_MAX_LEAF_NODES,
        learning_rate=_GBM_LEARNING_RATE,
        early_stopping=False,
        random_state=seed,
    )
