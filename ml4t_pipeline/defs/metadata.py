"""Metadata every materialization reports: rows, time range, symbols, preview, column schema."""

from __future__ import annotations

import math
from typing import Any

import dagster as dg
import polars as pl

_TYPE_NAMES = {
    pl.Float64: "float64",
    pl.Float32: "float32",
    pl.Int64: "int64",
    pl.Int32: "int32",
    pl.String: "string",
    pl.Boolean: "bool",
    pl.Categorical: "categorical",
}


def _type_name(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return f"datetime[{dtype.time_unit}, {dtype.time_zone}]"
    return _TYPE_NAMES.get(type(dtype), str(dtype))


def column_schema(
    frame: pl.DataFrame, descriptions: dict[str, str] | None = None
) -> dg.TableSchema:
    """A Dagster table schema for ``frame``, with descriptions where known."""
    return _table_schema(frame.schema, descriptions or {})


def _table_schema(schema: pl.Schema, descriptions: dict[str, str]) -> dg.TableSchema:
    # Without the frame in scope: Dagster builds a record type's checked constructor on its first
    # call and keeps a copy of the caller's local variables with it for good, so the process's
    # first stored table (prices_raw, 33 MB on the S&P file) stayed in memory to the end.
    columns = [
        dg.TableColumn(name, _type_name(dtype), description=descriptions.get(name))
        for name, dtype in schema.items()
    ]
    return dg.TableSchema(columns=columns)


def pandera_descriptions(model: Any) -> dict[str, str]:
    """Column descriptions from a pandera ``DataFrameModel`` (empty when it has none)."""
    try:
        columns = model.to_schema().columns
    except Exception:  # pragma: no cover - a model without a schema
        return {}
    return {name: col.description for name, col in columns.items() if col.description}


def markdown_table(frame: pl.DataFrame, max_rows: int = 20, float_digits: int = 4) -> str:
    """Render the first ``max_rows`` rows of ``frame`` as a GitHub markdown table."""
    if frame.width == 0:
        return "_(no columns)_"
    head = frame.head(max_rows)

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.{float_digits}g}"
        return str(v).replace("|", "\\|")

    lines = [
        "| " + " | ".join(head.columns) + " |",
        "|" + "---|" * head.width,
    ]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in head.iter_rows()]
    if frame.height > max_rows:
        lines.append(f"\n_{frame.height - max_rows} more rows_")
    return "\n".join(lines)


def _cell(value: Any, float_digits: int) -> str | int | float | bool | None:
    """A table cell Dagster can store: numbers kept (floats to ``float_digits`` significant
    digits, non-finite ones as text), anything else as text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return float(f"{value:.{float_digits}g}")
    return str(value)


def table_value(
    frame: pl.DataFrame, max_rows: int = 20, float_digits: int = 6
) -> dg.TableMetadataValue:
    """The first ``max_rows`` rows of ``frame`` as a Dagster table: the UI shows it as a sortable
    table with typed columns (not markdown text behind "Show Markdown").

    Floats keep ``float_digits`` significant digits; dates and times become ISO text.
    """
    head = frame.head(max_rows)
    records = [
        dg.TableRecord({k: _cell(v, float_digits) for k, v in row.items()})
        for row in head.iter_rows(named=True)
    ]
    return dg.MetadataValue.table(records, schema=column_schema(head))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def table_text(table: dg.TableMetadataValue) -> str:
    """A :func:`table_value` table as markdown text (for terminals and logs)."""
    rows = [record.data for record in table.records]
    names = [column.name for column in table.schema.columns]
    frame = pl.DataFrame(
        {
            name: [None if (v := row.get(name)) is None else str(v) for row in rows]
            for name in names
        },
        schema=dict.fromkeys(names, pl.String),
    )
    return markdown_table(frame, max_rows=max(len(rows), 1))


def frame_metadata(
    frame: pl.DataFrame, descriptions: dict[str, str] | None = None, preview_rows: int = 5
) -> dict[str, Any]:
    """Core metadata of a table: row count, time range, symbol count, preview, column schema."""
    meta: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(frame.height),
        "dagster/column_schema": column_schema(frame, descriptions),
    }
    if "timestamp" in frame.columns and frame.height:
        meta["time_range"] = dg.MetadataValue.text(
            f"{frame['timestamp'].min()} .. {frame['timestamp'].max()}"
        )
    if "symbol" in frame.columns:
        meta["n_symbols"] = dg.MetadataValue.int(frame["symbol"].n_unique())
    meta["preview"] = table_value(frame, preview_rows)
    return meta


def metrics_metadata(metrics: dict[str, Any]) -> dict[str, Any]:
    """One float/int metadata entry per headline metric (plotted over time by the UI)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            out[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            out[key] = dg.MetadataValue.float(value if math.isfinite(value) else float("nan"))
    return out


_RATIO_WORDS = ("sharpe", "sortino", "calmar", "information_ratio", "profit_factor", "beta")
_FRACTION_WORDS = (
    "return", "cagr", "volatility", "drawdown", "win_rate", "exposure", "turnover", "alpha",
    "tracking_error", "capture", "rate",
)  # fmt: skip
_CURRENCY_WORDS = ("equity", "cost", "commission", "slippage", "pnl", "cash", "profit", "value")


def metric_unit(name: str) -> str:
    """The unit of a headline metric, from its name: ``count``, ``ratio``, ``fraction`` (0.05 =
    5 %), ``currency``, ``bars`` or ``""`` when the name says nothing."""
    if name.startswith("n_") or name.endswith("_count"):
        return "count"
    if "bars" in name or "duration" in name:
        return "bars"
    if any(word in name for word in _RATIO_WORDS):
        return "ratio"
    if any(word in name for word in _FRACTION_WORDS):
        return "fraction"
    if any(word in name for word in _CURRENCY_WORDS):
        return "currency"
    return ""


def metrics_table(metrics: dict[str, Any], float_digits: int = 6) -> dg.TableMetadataValue:
    """The headline metrics as a sortable table: ``metric``, ``value`` (``float_digits``
    significant digits), ``unit`` (:func:`metric_unit`)."""
    rows = [
        {"metric": key, "value": _cell(value, float_digits), "unit": metric_unit(key)}
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("metric", "string"),
            dg.TableColumn("value", "float64"),
            dg.TableColumn("unit", "string"),
        ]
    )
    return dg.MetadataValue.table([dg.TableRecord(r) for r in rows], schema=schema)
