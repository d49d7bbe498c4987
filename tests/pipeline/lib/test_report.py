"""Specification of the HTML performance report and its plots (ml4t_pipeline.lib.report)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from ml4t_pipeline.lib.report import (
    equity_drawdown_png,
    format_metric,
    png_markdown,
    render_report_html,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID_TAGS = {"meta", "img", "br", "hr", "link", "input", "col", "source"}
LINEAGE = {
    "config_hash": "sha256:abc123",
    "data_version_prices": "d41d8cd9",
    "code_version": "0.1.0+g1234567",
    "generated_at": "2026-01-02T03:04:05+00:00",
}
METRICS = {
    "total_return": 0.1234,
    "cagr": 0.05,
    "sharpe": 1.2345,
    "max_drawdown": -0.2,
    "win_rate": 0.5,
    "n_trades": 3.0,
    "final_equity": 1_123_400.0,
}


class _Collector(HTMLParser):
    """Parse HTML, check tag balance, and collect ids, src/href references and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: list[str] = []
        self.refs: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.append(value)
            if name in ("src", "href") and value:
                self.refs.append(value)
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(document: str) -> _Collector:
    parser = _Collector()
    parser.feed(document)
    parser.close()
    return parser


def _states(n: int = 30) -> pl.DataFrame:
    start = datetime(2020, 1, 2, 21, tzinfo=UTC)
    equity = [1_000_000.0 * (1 + 0.01 * ((i % 7) - 3) + 0.002 * i) for i in range(n)]
    frame = pl.DataFrame(
        {
            "timestamp": pl.Series(
                [start + timedelta(days=i) for i in range(n)], dtype=pl.Datetime("us", "UTC")
            ),
            "equity": equity,
        }
    )
    return frame.with_columns(
        cash=pl.col("equity") * 0.5,
        positions_value=pl.col("equity") * 0.5,
        n_positions=pl.lit(2, dtype=pl.Int64),
        drawdown=pl.col("equity") / pl.col("equity").cum_max() - 1.0,
        **{"return": pl.col("equity").pct_change().fill_null(0.0)},
        cumulative_return=pl.col("equity") / pl.col("equity").first() - 1.0,
    )


def _trades(n: int = 3) -> pl.DataFrame:
    t0 = datetime(2020, 1, 3, 21, tzinfo=UTC)
    reasons = ["PriceBasedStopLoss", "TimeBasedExit", "PriceBasedStopLoss", "strategy"]
    pnl = [-500.0, 1200.0, -300.0, 50.0]
    ret = [-0.05, 0.12, -0.03, 0.005]
    held = [3, 10, 5, 1]
    return pl.DataFrame(
        {
            "trade_id": pl.Series([i + 1 for i in range(n)], dtype=pl.Int64),
            "symbol": [["AAPL", "MSFT", "A&B <Corp>", "IBM"][i % 4] for i in range(n)],
            "side": ["long"] * n,
            "entry_timestamp": pl.Series(
                [t0 + timedelta(days=i) for i in range(n)], dtype=pl.Datetime("us", "UTC")
            ),
            "exit_timestamp": pl.Series(
                [t0 + timedelta(days=i + held[i % 4]) for i in range(n)],
                dtype=pl.Datetime("us", "UTC"),
            ),
            "entry_price": [100.0] * n,
            "exit_price": [100.0 * (1 + ret[i % 4]) for i in range(n)],
            "quantity": [100.0] * n,
            "commission": [1.0] * n,
            "pnl_net": [pnl[i % 4] for i in range(n)],
            "return_pct": [ret[i % 4] for i in range(n)],
            "bars_held": pl.Series([held[i % 4] for i in range(n)], dtype=pl.Int64),
            "exit_reason": [reasons[i % 4] for i in range(n)],
        }
    )


def _render(**overrides: object) -> str:
    kwargs: dict[str, object] = {
        "title": "Top-10 <ridge> & friends",
        "metrics": METRICS,
        "portfolio_states": _states(),
        "trades": _trades(),
        "lineage": LINEAGE,
    }
    kwargs.update(overrides)
    return render_report_html(**kwargs)  # type: ignore[arg-type]


# --- PNG ---------------------------------------------------------------------------------------


def test_equity_drawdown_png_states_png_magic_and_deterministic() -> None:
    first = equity_drawdown_png(_states(), title="demo")
    again = equity_drawdown_png(_states(), title="demo")

    assert first.startswith(PNG_MAGIC)
    assert first == again


def test_equity_drawdown_png_one_row_renders() -> None:
    png = equity_drawdown_png(_states(1))

    assert png.startswith(PNG_MAGIC)


def test_equity_drawdown_png_naive_and_date_timestamps_render() -> None:
    naive = _states().with_columns(pl.col("timestamp").dt.replace_time_zone(None))
    dates = _states().with_columns(pl.col("timestamp").dt.date())

    assert equity_drawdown_png(naive).startswith(PNG_MAGIC)
    assert equity_drawdown_png(dates).startswith(PNG_MAGIC)


def test_equity_drawdown_png_positive_drawdown_raises_naming_row() -> None:
    states = _states().with_columns(
        pl.when(pl.int_range(pl.len()) == 4)
        .then(0.1)
        .otherwise(pl.col("drawdown"))
        .alias("drawdown")
    )

    with pytest.raises(ValueError, match=r"1 row\(s\) with drawdown above 0.*2020, 1, 6"):
        equity_drawdown_png(states)


@pytest.mark.parametrize(
    ("states", "message"),
    [
        (_states().head(0), "no rows"),
        (_states().drop("drawdown"), r"missing column\(s\) \['drawdown'\]"),
        (pl.concat([_states(3), _states(3).tail(1)]), "duplicate timestamp"),
        (
            _states().with_columns(pl.lit(None, dtype=pl.Float64).alias("equity")),
            "non-finite equity",
        ),
    ],
)
def test_equity_drawdown_png_bad_states_raise_value_error(
    states: pl.DataFrame, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        equity_drawdown_png(states)


def test_png_markdown_png_bytes_data_uri_round_trips() -> None:
    png = equity_drawdown_png(_states(5))

    markdown = png_markdown(png)

    match = re.fullmatch(r"!\[equity\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match is not None
    assert base64.b64decode(match.group(1)) == png


def test_png_markdown_not_png_raises_value_error() -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        png_markdown(b"GIF89a....")


# --- metric formatting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("total_return", 0.1234, "12.34%"),
        ("max_drawdown", -0.2, "-20.00%"),
        ("annual_volatility", 0.15, "15.00%"),
        ("win_rate", 0.5, "50.00%"),
        ("sharpe", 1.2345, "1.23"),
        ("n_trades", 1234.0, "1,234"),
        ("final_equity", 1_123_400.0, "1,123,400.00"),
        ("profit_factor", float("inf"), "inf"),
        ("sortino", float("nan"), "n/a"),
    ],
)
def test_format_metric_by_kind_expected_text(name: str, value: float, shown: str) -> None:
    assert format_metric(name, value) == shown


# --- HTML --------------------------------------------------------------------------------------


def test_render_report_html_full_inputs_every_section_present_and_balanced() -> None:
    document = _render()
    parsed = _parse(document)
    text = " ".join(parsed.text)

    assert parsed.errors == []
    assert parsed.stack == []
    assert document.startswith("<!DOCTYPE html>")
    for section in ("lineage", "metrics", "equity", "exit-reasons", "trades"):
        assert section in parsed.ids
    for heading in ("Headline metrics", "Equity and drawdown", "Trades by exit reason", "Trades"):
        assert heading in text
    for key, value in LINEAGE.items():
        assert key in text
        assert value in text
    assert "12.34%" in text and "-20.00%" in text and "1,123,400.00" in text
    assert parsed.tags.count("img") == 1


def test_render_report_html_refs_only_inline_data_no_network() -> None:
    document = _render()
    parsed = _parse(document)

    assert parsed.refs, "the figure must be embedded"
    assert all(ref.startswith("data:image/png;base64,") for ref in parsed.refs)
    assert "http://" not in document
    assert "https://" not in document
    assert "<link" not in document and "<script" not in document


def test_render_report_html_markup_in_text_escaped() -> None:
    document = _render(lineage={**LINEAGE, "note": "<script>alert(1)</script>"})
    parsed = _parse(document)

    assert "<script>" not in document
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    assert "Top-10 &lt;ridge&gt; &amp; friends" in document
    assert "A&amp;B &lt;Corp&gt;" in document
    assert "A&B <Corp>" in " ".join(parsed.text)


def test_render_report_html_exit_reason_table_hand_checked_figures() -> None:
    # Four trades: stop-loss twice (-500, -300; returns -5%, -3%; 3 and 5 bars), one time exit
    # (+1200, 12%, 10 bars), one strategy exit (+50, 0.5%, 1 bar).
    document = _render(trades=_trades(4))
    section = document.split('id="exit-reasons"')[1].split("</section>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", section)
    cells = [found for row in rows if (found := re.findall(r"<td[^>]*>(.*?)</td>", row))]

    assert cells == [
        ["PriceBasedStopLoss", "2", "0.0%", "-800.00", "-4.00%", "4.0"],
        ["TimeBasedExit", "1", "100.0%", "1,200.00", "12.00%", "10.0"],
        ["strategy", "1", "100.0%", "50.00", "0.50%", "1.0"],
    ]


def test_render_report_html_many_trades_first_50_listed() -> None:
    document = _render(trades=_trades(120))
    section = document.split('id="trades"')[1].split("</section>")[0]

    assert len(re.findall(r"<tr>", section)) == 1 + 50  # header + 50 trades
    assert "Showing the first 50 of 120 trades" in section
    assert ">2020-01-03 21:00<" in section  # first entry, UTC
    assert ">-5.00%<" in section  # return_pct as a percentage


def test_render_report_html_zero_trades_says_no_trades() -> None:
    for trades in (_trades().head(0), pl.DataFrame()):
        document = _render(trades=trades)
        parsed = _parse(document)

        assert parsed.errors == []
        for section in ("exit-reasons", "trades"):
            body = document.split(f'id="{section}"')[1].split("</section>")[0]
            assert "No trades." in body
            assert "<table" not in body


def test_render_report_html_one_row_and_empty_states_render() -> None:
    one = _parse(_render(portfolio_states=_states(1), trades=_trades().head(0)))
    empty_doc = _render(portfolio_states=_states().head(0), metrics={})
    empty = _parse(empty_doc)

    assert one.errors == [] and one.tags.count("img") == 1
    assert empty.errors == [] and empty.tags.count("img") == 0
    assert "No portfolio states" in empty_doc
    assert "No metrics." in empty_doc


def test_render_report_html_trades_without_summary_columns_raise() -> None:
    with pytest.raises(ValueError, match=r"missing column\(s\) \['exit_reason'\]"):
        _render(trades=_trades().drop("exit_reason"))


def test_render_report_html_missing_generated_at_added_in_utc() -> None:
    lineage = {k: v for k, v in LINEAGE.items() if k != "generated_at"}

    document = _render(lineage=lineage)

    assert re.search(r"generated_at</th><td><code>\d{4}-\d\d-\d\dT[\d:]{8}\+00:00<", document)


def test_render_report_html_same_inputs_identical_document() -> None:
    assert _render() == _render()


# --- writing -----------------------------------------------------------------------------------


def test_write_report_new_folder_written_atomically_no_temp_left(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"

    written = write_report(target, "<p>first</p>")
    write_report(target, "<p>second é</p>")

    assert written == target.resolve()
    assert target.read_text(encoding="utf-8") == "<p>second é</p>"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


def test_write_report_failure_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    write_report(target, "<p>old</p>")

    with pytest.raises(UnicodeEncodeError):
        write_report(target, "bad \ud800 surrogate")

    assert target.read_text(encoding="utf-8") == "<p>old</p>"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_memo_png_same_content_drawn_once_other_content_drawn_again() -> None:
    from ml4t_pipeline.lib.plots import memo_png

    calls: list[int] = []

    @memo_png
    def draw(frame: pl.DataFrame, title: str = "") -> bytes:
        calls.append(frame.height)
        return f"{title}:{frame['x'].sum()}".encode()

    a = pl.DataFrame({"x": [1.0, 2.0]})
    assert draw(a, title="t") == draw(a.clone(), title="t") == b"t:3.0"
    assert len(calls) == 1  # equal content (a copy): the cached bytes
    assert draw(pl.DataFrame({"x": [1.0, 2.5]}), title="t") == b"t:3.5"
    assert draw(a, title="u") == b"u:3.0"
    assert len(calls) == 3  # other rows, other title: drawn again
