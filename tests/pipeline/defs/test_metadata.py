"""Metadata helpers: typed, sortable tables instead of markdown text (issue 26)."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from ml4t_pipeline.defs.metadata import metric_unit, metrics_table, table_value


def test_table_value_keeps_types_rounds_floats_and_limits_rows() -> None:
    frame = pl.DataFrame(
        {
            "timestamp": [datetime(2020, 1, d, 21, tzinfo=UTC) for d in (2, 3, 6)],
            "symbol": ["A", "B", "C"],
            "value": [1.0 / 3.0, float("nan"), 2.5],
            "n": [1, 2, 3],
        }
    )
    table = table_value(frame, max_rows=2, float_digits=4)
    assert isinstance(table, dg.TableMetadataValue)
    assert [c.name for c in table.schema.columns] == ["timestamp", "symbol", "value", "n"]
    rows = [record.data for record in table.records]
    assert len(rows) == 2
    assert rows[0]["value"] == 0.3333
    assert rows[0]["n"] == 1
    assert rows[0]["timestamp"].startswith("2020-01-02 21:00:00")
    assert rows[1]["value"] == "nan"  # non-finite floats are shown, never dropped


def test_metric_units_follow_names() -> None:
    assert metric_unit("n_trades") == "count"
    assert metric_unit("sharpe") == "ratio"
    assert metric_unit("profit_factor") == "ratio"
    assert metric_unit("max_drawdown") == "fraction"
    assert metric_unit("total_return") == "fraction"
    assert metric_unit("final_equity") == "currency"
    assert metric_unit("total_costs") == "currency"


def test_metrics_table_lists_numeric_metrics_with_units() -> None:
    table = metrics_table({"sharpe": 0.123456789, "n_trades": 12, "ok": True, "name": "x"})
    rows = {r.data["metric"]: r.data for r in table.records}
    assert set(rows) == {"sharpe", "n_trades"}
    assert math.isclose(rows["sharpe"]["value"], 0.123457)
    assert rows["sharpe"]["unit"] == "ratio"
    assert rows["n_trades"] == {"metric": "n_trades", "value": 12, "unit": "count"}


def test_frame_metadata_first_call_in_process_frame_released() -> None:
    # Dagster builds a record type's checked constructor on its first call and keeps the calling
    # function's local variables with it; the first stored table must not stay in memory. A fresh
    # interpreter, so that this call is the process's first.
    code = (
        "import gc, weakref\n"
        "import polars as pl\n"
        "from ml4t_pipeline.defs.metadata import frame_metadata\n"
        "frame = pl.DataFrame({'symbol': ['A', 'B'], 'close': [1.0, 2.0]})\n"
        "ref = weakref.ref(frame)\n"
        "frame_metadata(frame)\n"
        "del frame\n"
        "gc.collect()\n"
        "print('released' if ref() is None else 'kept')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "released"
