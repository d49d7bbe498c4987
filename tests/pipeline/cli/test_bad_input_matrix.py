"""The bad-input matrix: every bad input is refused by the real CLI, naming what is wrong.

Each case builds a small input (6 S&P symbols x 300 days sliced from the shared daily file, a
signals file made from those prices), breaks one thing, runs ``ml4t run`` in-process into a copy
of a folder that holds a previous good run's output, and asserts three things:

1. the exit code (2: bad config or missing file; 1: a failed step or blocking check);
2. the printed message (stdout + stderr) names the offending rows, column, file or field;
3. the previous good output folder is byte-identical afterwards (every file's SHA-256).

Each case runs once (cached per module); the two test functions read the same outcome, so a case
whose refusal works but whose output folder is not yet protected shows as one passing and one
expected failure. The good run is done once per module.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from ml4t_pipeline.cli import main
from ml4t_pipeline.lib.timing import daily_close_utc

SYMBOLS = ("AAPL", "IBM", "JPM", "KO", "MSFT", "XOM")
N_DAYS = 300
STEM = "exp"  # every run uses the same experiment name: a bad run targets the good run's keys


def good_config(prices: str = "prices.parquet", signals: str = "signals.parquet") -> dict:
    """The good experiment: a signals file (no model to train), top 2 of 6, 5 % stop."""
    return {
        "name": STEM,
        "data": {
            "prices": prices,
            "signals": {"path": signals},
            "features": "computed",
            "context": {"source": "market"},
            "signal_available_at": "market_close",
            "invalid_rows": "fail",
        },
        "strategy": {"type": "TopN", "signal": "score", "n": 2, "rebalance_every": 5},
        "risk_rules": [{"type": "PriceBasedStopLoss", "stop_pct": 0.05}],
        "execution": {"fill": "next_open", "initial_cash": 100_000},
    }


def write_yaml(path: Path, cfg: dict) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def tree_hash(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (symlinks by their target text), by relative path."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@dataclass
class World:
    """The good inputs and a folder holding the good run's output."""

    root: Path  # data root of the good run
    prices: pl.DataFrame  # raw prices as in the file (naive daily dates)
    signals: pl.DataFrame  # signals file content (UTC)
    good_out: Path
    good_hash: dict[str, str]


def make_prices(data_root: Path) -> pl.DataFrame:
    raw = pl.read_parquet(data_root / "sp500_5yr_daily_ohlcv.parquet").filter(
        pl.col("symbol").is_in(SYMBOLS)
    )
    days = raw["timestamp"].unique().sort().head(N_DAYS)
    return raw.filter(pl.col("timestamp").is_in(days.implode())).sort("symbol", "timestamp")


def make_signals(prices: pl.DataFrame) -> pl.DataFrame:
    # 5-bar momentum as the score, stamped at each bar's New York session close (UTC): 16:00,
    # or 13:00 on a half day such as 2013-07-03, as the price loader stamps the bars.
    close_utc = daily_close_utc(pl.col("timestamp"))
    return (
        prices.sort("symbol", "timestamp")
        .select(
            close_utc.alias("timestamp"),
            "symbol",
            (pl.col("close") / pl.col("close").shift(5).over("symbol") - 1).alias("score"),
        )
        .drop_nulls("score")
        .with_columns(pl.col("timestamp").alias("available_at"))
    )


@pytest.fixture(scope="module")
def world(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    base = tmp_path_factory.mktemp("matrix")
    root = base / "data"
    root.mkdir()
    prices = make_prices(data_root)
    signals = make_signals(prices)
    prices.write_parquet(root / "prices.parquet")
    signals.write_parquet(root / "signals.parquet")
    cfg = write_yaml(base / "configs" / f"{STEM}.yaml", good_config())
    out = base / "good_out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML4T_DATA_ROOT", str(root))
        code = main(["run", str(cfg), "--output", str(out)])
    assert code == 0, "the good run must succeed"
    assert (out / "trades.parquet").is_file()
    return World(root, prices, signals, out, tree_hash(out))


# ---------------------------------------------------------------------------------------------
# The cases. A case gets (world, case folder) and returns the config path to run, having
# written whatever data files it needs under ``case/data`` (the data root of the bad run).


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[World, Path], Path]
    code: int
    names: tuple[str, ...]  # regexes: each must occur in stdout + stderr
    pending: str | None = None  # whose fix has not landed yet (xfail, non-strict)


def _data(case: Path) -> Path:
    d = case / "data"
    d.mkdir(exist_ok=True)
    return d


def _cfg(case: Path, cfg: dict | None = None) -> Path:
    return write_yaml(case / "configs" / f"{STEM}.yaml", cfg or good_config())


def prices_case(mutate: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[World, Path], Path]:
    def build(world: World, case: Path) -> Path:
        d = _data(case)
        mutate(world.prices).write_parquet(d / "prices.parquet")
        world.signals.write_parquet(d / "signals.parquet")
        return _cfg(case)

    return build


def signals_case(mutate: Callable[[pl.DataFrame], pl.DataFrame], **data: str) -> Callable:
    def build(world: World, case: Path) -> Path:
        d = _data(case)
        world.prices.write_parquet(d / "prices.parquet")
        mutate(world.signals).write_parquet(d / "signals.parquet")
        cfg = good_config()
        cfg["data"].update(data)
        return _cfg(case, cfg)

    return build


def csv_case(world: World, case: Path) -> Path:
    """A spreadsheet export: prices as CSV with "n/a" for a missing close."""
    d = _data(case)
    text_close(world.prices).write_csv(d / "prices.csv")
    world.signals.write_parquet(d / "signals.parquet")
    return _cfg(case, good_config(prices="prices.csv"))


def signals_duplicate(df: pl.DataFrame) -> pl.DataFrame:
    extra = df.filter(_row(df, "KO", 100)).with_columns(pl.col("score") + 1)
    return pl.concat([df, extra])


def raw_file_case(content: Callable[[World], bytes]) -> Callable[[World, Path], Path]:
    def build(world: World, case: Path) -> Path:
        d = _data(case)
        (d / "prices.parquet").write_bytes(content(world))
        world.signals.write_parquet(d / "signals.parquet")
        return _cfg(case)

    return build


def config_case(edit: Callable[[dict], None]) -> Callable[[World, Path], Path]:
    def build(world: World, case: Path) -> Path:
        d = _data(case)
        world.prices.write_parquet(d / "prices.parquet")
        world.signals.write_parquet(d / "signals.parquet")
        cfg = good_config()
        edit(cfg)
        return _cfg(case, cfg)

    return build


def path_escape_case(kind: str) -> Callable[[World, Path], Path]:
    """``data.prices`` pointing outside the data root: absolute, ``../``, or via a symlink."""

    def build(world: World, case: Path) -> Path:
        d = _data(case)
        outside = case / "outside"
        outside.mkdir()
        world.prices.write_parquet(outside / "prices.parquet")  # a valid file, just outside
        world.signals.write_parquet(d / "signals.parquet")
        if kind == "absolute":
            prices = str((outside / "prices.parquet").resolve())
        elif kind == "dotdot":
            prices = "../outside/prices.parquet"
        else:
            (d / "prices.parquet").symlink_to(outside / "prices.parquet")
            prices = "prices.parquet"
        return _cfg(case, good_config(prices=prices))

    return build


def _row(df: pl.DataFrame, symbol: str, i: int) -> pl.Expr:  # noqa: ARG001 - reads like a filter
    """True for the i-th row (file order) of ``symbol``."""
    return (pl.col("symbol") == symbol) & (pl.int_range(pl.len()).over("symbol") == i)


def set_value(column: str, value: object, symbol: str = "KO", i: int = 100) -> Callable:
    def mutate(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            pl.when(_row(df, symbol, i))
            .then(pl.lit(value, dtype=df.schema[column]))
            .otherwise(pl.col(column))
            .alias(column)
        )

    return mutate


def ko_date(world: World, i: int = 100) -> str:
    return str(world.prices.filter(pl.col("symbol") == "KO")["timestamp"][i].date())


def ko_signal_date(world: World, i: int = 100) -> str:
    return str(world.signals.filter(pl.col("symbol") == "KO")["timestamp"][i].date())


def duplicate_row(df: pl.DataFrame) -> pl.DataFrame:
    extra = df.filter(_row(df, "KO", 100)).with_columns(pl.col("close") * 1.01)
    return pl.concat([df, extra]).sort("symbol", "timestamp", maintain_order=True)


def high_below_low(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        pl.when(_row(df, "KO", 100)).then(pl.col("low") - 1).otherwise(pl.col("high")).alias("high")
    )


def reversed_symbol(df: pl.DataFrame) -> pl.DataFrame:
    ko = df.filter(pl.col("symbol") == "KO").reverse()
    return pl.concat([df.filter(pl.col("symbol") != "KO"), ko])


def text_close(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        pl.when(_row(df, "KO", 100))
        .then(pl.lit("n/a"))
        .otherwise(pl.col("close").cast(pl.String))
        .alias("close")
    )


def naive_intraday(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col("timestamp") + timedelta(hours=16))


def new_york_aware(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col("timestamp").dt.replace_time_zone("America/New_York"))


def truncated(world: World) -> bytes:
    data = (world.root / "prices.parquet").read_bytes()
    return data[: len(data) // 2]


def signal_value(column: str, value: object, symbol: str = "KO", i: int = 100) -> Callable:
    def mutate(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            pl.when(_row(df, symbol, i))
            .then(pl.lit(value, dtype=df.schema[column]))
            .otherwise(pl.col(column))
            .alias(column)
        )

    return mutate


def unknown_symbol(df: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([df, df.filter(_row(df, "KO", 100)).with_columns(symbol=pl.lit("ZZZZ"))])


def text_scores(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col("score").cast(pl.String))


def null_available_at(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        pl.when(_row(df, "KO", 100))
        .then(None)
        .otherwise(pl.col("available_at"))
        .alias("available_at")
    )


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        section, key = path.split(".")
        cfg[section][key] = value

    return edit


KO_ROW = r"{} \d\d:\d\d:\d\d\+00:00 \| KO \|"  # a row of the printed table: timestamp | KO |

CASES: tuple[Case, ...] = (
    # prices: row rules (a blocking check fails and prints the offending rows)
    Case("duplicate_keys", prices_case(duplicate_row), 1, ("prices_key_unique", "<KO>")),
    Case("high_below_low", prices_case(high_below_low), 1, ("prices_high_at_or_above_low", "<KO>")),
    Case("null_price", prices_case(set_value("open", None)), 1, ("prices_ohlcv_not_null", "<KO>")),
    Case("zero_price", prices_case(set_value("close", 0.0)), 1, ("prices_prices_positive", "<KO>")),
    Case(
        "negative_price", prices_case(set_value("low", -1.0)), 1, ("prices_prices_positive", "<KO>")
    ),
    Case(
        "inf_price",
        prices_case(set_value("high", float("inf"))),
        1,
        ("prices_ohlcv_finite", "<KO>"),
    ),
    Case(
        "nan_price",
        prices_case(set_value("close", float("nan"))),
        1,
        ("prices_ohlcv_finite", "<KO>"),
    ),
    Case(
        "negative_volume",
        prices_case(set_value("volume", -5.0)),
        1,
        ("prices_volume_non_negative", "<KO>"),
    ),
    # prices: the loader refuses the file (a failed step names the file and rows)
    Case(
        "unsorted_rows",
        prices_case(reversed_symbol),
        1,
        ("299 rows go back in time", r"'symbol': 'KO', 'timestamp': '20"),
    ),
    Case(
        "missing_column",
        prices_case(lambda df: df.drop("volume")),
        1,
        (r"prices\.parquet: columns \['volume'\] not found",),
    ),
    Case(
        "string_prices",
        prices_case(text_close),
        1,
        (r"\['close'\] are stored as text", r"'close': 'n/a'"),
    ),
    Case("csv_with_na", csv_case, 1, (r"\['close'\] are stored as text", r"'close': 'n/a'")),
    Case(
        "empty_file",
        prices_case(lambda df: df.clear()),
        1,
        (r"prices\.parquet: the table has no rows",),
    ),
    Case(
        "zero_byte_parquet",
        raw_file_case(lambda w: b""),
        1,
        (r"prices\.parquet: cannot read the Parquet file \(0 bytes",),
    ),
    Case(
        "truncated_parquet",
        raw_file_case(truncated),
        1,
        (r"prices\.parquet: cannot read the Parquet file",),
    ),
    Case(
        "naive_intraday_timestamps",
        prices_case(naive_intraday),
        1,
        ("naive timestamps are not at 00:00",),
    ),
    Case(
        "non_utc_timestamps_without_bar_length",
        prices_case(new_york_aware),
        1,
        (r"'timestamp' is timezone-aware \(Datetime\(.*America/New_York", "bar_length"),
    ),
    # signals
    Case(
        "signals_nan_score",
        signals_case(signal_value("score", float("nan"))),
        1,
        ("signals_values_finite", "<KO_SIGNAL>"),
    ),
    Case(
        "signals_inf_score",
        signals_case(signal_value("score", float("inf"))),
        1,
        ("signals_values_finite", "<KO_SIGNAL>"),
    ),
    Case(
        "signals_unknown_symbol", signals_case(unknown_symbol), 1, ("signals_symbol_known", "ZZZZ")
    ),
    Case(
        "signals_string_scores", signals_case(text_scores), 1, (r"\['score'\] are stored as text",)
    ),
    Case(
        "signals_null_available_at",
        signals_case(null_available_at),
        1,
        (r"1 signal rows have a null available_at", r"'symbol': 'KO'"),
    ),
    Case(
        "signals_duplicate_keys",
        signals_case(signals_duplicate),
        1,
        ("signals_key_unique", "<KO_SIGNAL>"),
    ),
    # data paths outside the data root
    Case("path_absolute", path_escape_case("absolute"), 2, ("data.prices",)),
    Case("path_dotdot", path_escape_case("dotdot"), 2, ("data.prices",)),
    Case("path_symlink", path_escape_case("symlink"), 2, ("data.prices",)),
    # absurd numbers
    Case("n_1e18", config_case(_set("strategy.n", 10**18)), 2, ("strategy.n",)),
    Case(
        "rebalance_every_1e30",
        config_case(_set("strategy.rebalance_every", 1e30)),
        2,
        ("strategy.rebalance_every",),
    ),
    Case(
        "initial_cash_1e308",
        config_case(_set("execution.initial_cash", 1e308)),
        2,
        ("execution.initial_cash",),
    ),
    Case(
        "initial_cash_inf",
        config_case(_set("execution.initial_cash", float("inf"))),
        2,
        ("execution.initial_cash",),
    ),
)


@dataclass
class Outcome:
    code: int
    printed: str
    before: dict[str, str]
    after: dict[str, str]


_OUTCOMES: dict[str, Outcome] = {}


@pytest.fixture
def outcome(
    request: pytest.FixtureRequest,
    world: World,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Callable[[Case], Outcome]]:
    def run(case: Case) -> Outcome:
        if case.id not in _OUTCOMES:
            folder = tmp_path_factory.mktemp(case.id)
            out = folder / "out"
            shutil.copytree(world.good_out, out, symlinks=True)
            before = tree_hash(out)
            assert before == world.good_hash
            config = case.build(world, folder)
            capsys.readouterr()
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("ML4T_DATA_ROOT", str(folder / "data"))
                code = main(["run", str(config), "--output", str(out)])
            captured = capsys.readouterr()
            _OUTCOMES[case.id] = Outcome(code, captured.out + captured.err, before, tree_hash(out))
        return _OUTCOMES[case.id]

    yield run


def _params() -> list[object]:
    params = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=False, reason=case.pending)] if case.pending else []
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@pytest.mark.parametrize("case", _params())
def test_bad_input_refused_with_exit_code_naming_offender(
    case: Case, outcome: Callable[[Case], Outcome], world: World
) -> None:
    result = outcome(case)
    assert result.code == case.code, result.printed[-3000:]
    for template in case.names:
        pattern = template.replace("<KO>", KO_ROW.format(ko_date(world))).replace(
            "<KO_SIGNAL>", KO_ROW.format(ko_signal_date(world))
        )
        assert re.search(pattern, result.printed), (
            f"{pattern!r} not in the message:\n{result.printed[-3000:]}"
        )


@pytest.mark.parametrize("case", _params())
def test_bad_input_leaves_previous_good_output_byte_identical(
    case: Case, outcome: Callable[[Case], Outcome]
) -> None:
    result = outcome(case)
    assert result.code != 0
    changed = sorted(
        k for k in result.before.keys() | result.after.keys()
        if result.before.get(k) != result.after.get(k)
    )  # fmt: skip
    assert not changed, f"files changed, added or removed: {changed[:10]}"


def test_signals_file_available_at_later_than_rule_is_kept_and_delays_use(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every signal says it became available 3 days after its bar (72 h). Under
    # signal_available_at: market_close the later of the file's value and the bar's close wins,
    # so no bar may use a signal before 3 days have passed. The run succeeds and replaces the
    # previous good output (so the tree hash must change: the identity check above can fail).
    late = world.signals.with_columns(pl.col("timestamp") + timedelta(hours=72))
    late = (
        late.rename({"timestamp": "available_at_"})
        .with_columns(world.signals["timestamp"].alias("timestamp"))
        .select("timestamp", "symbol", "score", pl.col("available_at_").alias("available_at"))
    )
    data = tmp_path / "data"
    data.mkdir()
    world.prices.write_parquet(data / "prices.parquet")
    late.write_parquet(data / "signals.parquet")
    out = tmp_path / "out"
    shutil.copytree(world.good_out, out, symlinks=True)
    config = write_yaml(tmp_path / "configs" / f"{STEM}.yaml", good_config())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML4T_DATA_ROOT", str(data))
        code = main(["run", str(config), "--output", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    assert tree_hash(out) != world.good_hash
    used = pl.read_parquet(out / "signals.parquet").sort("symbol", "timestamp")
    expected = late.sort("symbol", "timestamp")
    assert used["available_at"].to_list() == expected["available_at"].to_list()
    panels = [p for p in out.rglob("market_panel") if (p / STEM).is_dir()]
    assert len(panels) == 1, sorted(str(p) for p in out.rglob("*panel*"))
    from ml4t_pipeline.defs.io_managers import read_value

    panel = read_value(panels[0] / STEM).filter(pl.col("signal_timestamp").is_not_null())
    assert panel.height > 0
    age = panel.select(pl.col("timestamp") - pl.col("signal_timestamp")).to_series()
    assert age.min() >= timedelta(hours=72)


def test_quarantine_policy_sets_bad_rows_aside_and_runs(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Under invalid_rows: quarantine a high < low row and a null open (KO, rows 100 and 101)
    # are kept in prices_quarantine with the rules they break, left out of the panel, and the
    # run goes on.
    bad = set_value("open", None, i=101)(high_below_low(world.prices))
    data = tmp_path / "data"
    data.mkdir()
    bad.write_parquet(data / "prices.parquet")
    world.signals.write_parquet(data / "signals.parquet")
    cfg = good_config()
    cfg["data"]["invalid_rows"] = "quarantine"
    config = write_yaml(tmp_path / "configs" / f"{STEM}.yaml", cfg)
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML4T_DATA_ROOT", str(data))
        code = main(["run", str(config), "--output", str(out)])
    assert code == 0, capsys.readouterr().err[-3000:]
    quarantine = pl.read_parquet(out / "prices_quarantine.parquet").sort("timestamp")
    ko = world.prices.filter(pl.col("symbol") == "KO")["timestamp"]
    assert quarantine["symbol"].to_list() == ["KO", "KO"]
    assert [t.date() for t in quarantine["timestamp"]] == [ko[100].date(), ko[101].date()]
    assert "high_at_or_above_low" in quarantine["reason"][0]
    assert quarantine["reason"][1] == "ohlcv_not_null"
    from ml4t_pipeline.defs.io_managers import read_value

    panel = read_value(out / "assets" / "market_panel" / STEM)
    assert panel.height == world.prices.height - 2
    in_panel = panel.filter(pl.col("symbol") == "KO")["timestamp"].dt.date().to_list()
    assert ko[100].date() not in in_panel and ko[101].date() not in in_panel


# ---------------------------------------------------------------------------------------------
# Issue 25 (items 1, 6, 8): signal stamps that are no bar closes, implausible prices, data
# messages. The same two assertions as the cases above, through the same outcome cache.


def tokyo_midnight(df: pl.DataFrame) -> pl.DataFrame:
    """The scores' New York session dates written as midnight Asia/Tokyo."""
    dates = pl.col("timestamp").dt.convert_time_zone("America/New_York").dt.date()
    return df.with_columns(
        dates.cast(pl.Datetime("us")).dt.replace_time_zone("Asia/Tokyo").alias("timestamp")
    ).drop("available_at")


def saturday_copies(df: pl.DataFrame) -> pl.DataFrame:
    fridays = df.filter(pl.col("timestamp").dt.weekday() == 5)
    saturdays = fridays.with_columns(pl.col("timestamp") + timedelta(days=1))
    return pl.concat([df, saturdays]).sort("symbol", "timestamp")


def ko_priced_1e300(df: pl.DataFrame) -> pl.DataFrame:
    ko = pl.col("symbol") == "KO"
    return df.with_columns(
        pl.when(ko).then(pl.col(c) * 1e298).otherwise(pl.col(c)).alias(c)
        for c in ("open", "high", "low", "close")
    )


def ko_blank_symbol(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        pl.when(pl.col("symbol") == "KO").then(pl.lit("")).otherwise("symbol").alias("symbol")
    )


def duplicate_appended(df: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([df, df.filter(_row(df, "KO", 100))])  # at the end, not re-sorted


def all_future(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col("timestamp", "available_at").dt.offset_by("5y"))


ISSUE_25_CASES: tuple[Case, ...] = (
    Case(
        "signals_tokyo_midnight",
        signals_case(tokyo_midnight),
        1,
        ("signals_stamped_at_bar_close", r"\| \d+ \| AAPL \| 20\d\d-\d\d-\d\d 00:00:00\+09:00 \|"),
    ),
    Case(
        "prices_saturday_copies",
        prices_case(saturday_copies),
        1,
        ("prices_on_session_date", r"\| \d+ \| 20\d\d-\d\d-\d\d 2\d:00:00\+00:00 \| \w+ \|"),
    ),
    Case("prices_1e300", prices_case(ko_priced_1e300), 1, ("prices_price_level_plausible", "KO")),
    Case("prices_empty_symbol", prices_case(ko_blank_symbol), 1, ("prices_symbol_not_blank",)),
    Case(
        "prices_duplicate_appended",
        prices_case(duplicate_appended),
        1,
        ("prices_key_unique", "<KO>", f"\\| {6 * N_DAYS} \\| "),  # the copy's file row
    ),
    Case(
        "signals_all_future",
        signals_case(all_future),
        1,
        ("signals_overlap_price_bars", "become available after the last price bar"),
    ),
)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in ISSUE_25_CASES])
def test_issue_25_bad_input_refused_naming_offender(
    case: Case, outcome: Callable[[Case], Outcome], world: World
) -> None:
    test_bad_input_refused_with_exit_code_naming_offender(case, outcome, world)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in ISSUE_25_CASES])
def test_issue_25_bad_input_leaves_previous_good_output_byte_identical(
    case: Case, outcome: Callable[[Case], Outcome]
) -> None:
    test_bad_input_leaves_previous_good_output_byte_identical(case, outcome)
