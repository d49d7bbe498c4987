"""The data checks' shortcuts give the verdicts of the full checks (issue 27, main-job latency).

``stamps.symbol_text_rank`` orders Categorical/Enum symbols as their text does without a text
copy of every row; ``price_rules.price_rules_for`` settles ``key_unique`` and
``timestamp_sorted_within_symbol`` by two passes over the keys when the rows are in
(timestamp, symbol) order; the ``on_session_date`` rule judges each distinct stamp once.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from ml4t_pipeline.lib.price_rules import PRICE_RULES, Plausibility, price_rules_for
from ml4t_pipeline.lib.row_validation import validate_rows
from ml4t_pipeline.lib.schemas import validate_features, validate_prices, validate_signals
from ml4t_pipeline.lib.stamps import is_sorted_by_time_symbol, symbol_text_rank
from ml4t_pipeline.lib.timing import signal_uses_before_available

UTC = pl.Datetime("us", "UTC")
SYMBOLS = ["MSFT", "AAPL", "b", "A", "ZZ", "AA", "É"]  # insertion order is not text order


def _prices(stamps: list[int], symbols: list[str]) -> pl.DataFrame:
    """Bars (open = high = low = close = 10) at whole days after 2013-01-01 21:00 UTC."""
    start = dt.datetime(2013, 1, 1, 21, tzinfo=dt.UTC)
    n = len(stamps)
    return pl.DataFrame(
        {
            "timestamp": pl.Series([start + dt.timedelta(days=d) for d in stamps], dtype=UTC),
            "symbol": pl.Series(symbols, dtype=pl.String),
            **{
                c: pl.Series([10.0] * n, dtype=pl.Float64) for c in ("open", "high", "low", "close")
            },
            "volume": pl.Series([1e5] * n, dtype=pl.Float64),
        }
    )


rows = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(SYMBOLS)), min_size=0, max_size=30)


@settings(max_examples=60, deadline=None)
@given(rows=rows, sort=st.booleans(), enum=st.booleans())
def test_symbol_text_rank_categorical_or_enum_orders_like_the_text(
    rows: list[tuple[int, str]], sort: bool, enum: bool
) -> None:
    frame = _prices([d for d, _ in rows], [s for _, s in rows])
    if sort:
        frame = frame.sort("timestamp", "symbol")
    dtype = pl.Enum(SYMBOLS) if enum else pl.Categorical
    coded = frame.with_columns(pl.col("symbol").cast(dtype))
    ranks = coded.select(symbol_text_rank(coded).alias("r")).to_series()
    text = frame["symbol"]
    for i in range(1, frame.height):  # every neighbouring pair compares as its text does
        assert (ranks[i - 1] <= ranks[i]) == (text[i - 1] <= text[i])
        assert (ranks[i - 1] == ranks[i]) == (text[i - 1] == text[i])
    assert is_sorted_by_time_symbol(coded) == is_sorted_by_time_symbol(frame)


def test_is_sorted_by_time_symbol_categorical_in_insertion_not_text_order_is_unsorted() -> None:
    # Categories met as MSFT then AAPL: their codes are in that order, the text is not.
    frame = _prices([0, 0], ["MSFT", "AAPL"]).with_columns(pl.col("symbol").cast(pl.Categorical))
    assert not is_sorted_by_time_symbol(frame)
    assert is_sorted_by_time_symbol(frame.reverse())


@settings(max_examples=60, deadline=None)
@given(rows=rows, sort=st.booleans(), categorical=st.booleans())
def test_price_rules_for_gives_the_verdicts_of_price_rules(
    rows: list[tuple[int, str]], sort: bool, categorical: bool
) -> None:
    frame = _prices([d for d, _ in rows], [s for _, s in rows])
    if sort:
        frame = frame.sort("timestamp", "symbol")
    if categorical:
        frame = frame.with_columns(pl.col("symbol").cast(pl.Categorical))
    fast = validate_rows(frame, price_rules_for(frame), ("timestamp", "symbol"))
    full = validate_rows(frame, PRICE_RULES, ("timestamp", "symbol"))
    assert fast.summary == full.summary
    assert fast.violations.equals(full.violations)
    assert fast.invalid.equals(full.invalid)
    assert fast.valid.equals(full.valid)


def test_price_rules_for_keeps_the_key_rules_for_a_repeated_key_in_order() -> None:
    twins = _prices([0, 1, 1, 2], ["A", "A", "A", "A"])
    assert price_rules_for(twins) == PRICE_RULES
    report = validate_rows(twins, price_rules_for(twins), ("timestamp", "symbol"))
    assert report.rows_breaking("key_unique")["row_index"].to_list() == [1, 2]


def test_price_rules_for_settles_the_key_rules_for_unique_keys_in_order() -> None:
    frame = _prices([0, 0, 1, 1], ["A", "B", "A", "B"])
    rules = {r.name: r for r in price_rules_for(frame)}
    for name in ("key_unique", "timestamp_sorted_within_symbol"):
        assert frame.select(rules[name].passes()).to_series().all()
        assert rules[name] is not next(r for r in PRICE_RULES if r.name == name)


def test_validate_prices_on_session_date_each_row_of_a_repeated_stamp_judged() -> None:
    # 2013-01-04 is a Friday, 01-05 a Saturday; two symbols share each stamp.
    days = [3, 3, 4, 4]
    frame = _prices(days, ["A", "B", "A", "B"])
    for calendar in ("XNYS", "weekdays"):
        report = validate_prices(frame, plausibility=Plausibility(calendar=calendar))
        assert report.rows_breaking("on_session_date")["row_index"].to_list() == [2, 3]


def _scores(rows: list[tuple[int, str]], categorical: bool) -> pl.DataFrame:
    frame = _prices([d for d, _ in rows], [s for _, s in rows])
    out = frame.select(
        "timestamp",
        "symbol",
        pl.col("close").alias("score"),
        pl.col("timestamp").alias("available_at"),
    )
    return out.with_columns(pl.col("symbol").cast(pl.Categorical)) if categorical else out


@settings(max_examples=40, deadline=None)
@given(rows=rows, sort=st.booleans(), categorical=st.booleans())
def test_validate_signals_and_features_shortcuts_give_the_text_verdicts(
    rows: list[tuple[int, str]], sort: bool, categorical: bool
) -> None:
    # The same table as text symbols (no shortcut for symbol_known) and possibly Categorical.
    frame = _scores(rows, categorical)
    if sort:
        frame = frame.sort("timestamp", "symbol")
    text = frame.with_columns(pl.col("symbol").cast(pl.String))
    known = ["AAPL", "A", "É"]
    for check in (validate_signals, validate_features):
        fast = check(frame, known)
        full = check(text, known)
        assert fast.summary == full.summary
        assert fast.violations.equals(full.violations)
        assert fast.invalid["row_index"].equals(full.invalid["row_index"])


def test_validate_signals_twin_keys_in_key_order_break_key_unique() -> None:
    frame = _scores([(0, "A"), (1, "A"), (1, "A"), (1, "B")], categorical=True)
    report = validate_signals(frame, ["A"])
    assert report.rows_breaking("key_unique")["row_index"].to_list() == [1, 2]
    assert report.rows_breaking("symbol_known")["row_index"].to_list() == [3]


def test_signal_uses_before_available_many_offenders_in_panel_order() -> None:
    # 40 symbols x 200 bars, every other bar using a signal stamped available a day late: the
    # offending rows come back in panel order, each with the signal's availability.
    start = dt.datetime(2013, 1, 1, 21, tzinfo=dt.UTC)
    bars = [start + dt.timedelta(days=d) for d in range(200)]
    symbols = [f"S{i:02d}" for i in range(40)]
    panel = pl.DataFrame(
        {
            "timestamp": pl.Series([b for b in bars for _ in symbols], dtype=UTC),
            "symbol": [s for _ in bars for s in symbols],
        }
    ).with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0)
        .then(pl.col("timestamp"))
        .otherwise(None)
        .alias("signal_timestamp")
    )
    signals = panel.select(
        "timestamp",
        "symbol",
        (pl.col("timestamp") + pl.duration(days=1)).alias("available_at"),
    )
    bad = signal_uses_before_available(panel, signals)
    assert bad["row_index"].to_list() == list(range(0, panel.height, 2))
    assert bad["available_at"].equals(
        panel["timestamp"].gather_every(2) + dt.timedelta(days=1), check_names=False
    )
