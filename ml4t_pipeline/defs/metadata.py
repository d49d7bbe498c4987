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
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, _type_name(dtype), description=descriptions.get(name))
            for name, dtype in frame.schema.items()
        ]
    )


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
    meta["preview"] = dg.MetadataValue.md(markdown_table(frame, preview_rows))
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
