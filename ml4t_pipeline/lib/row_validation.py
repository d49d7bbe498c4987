"""Row-level validation: apply row rules to a table and split it into valid rows and offending
rows, naming every rule each row breaks (:func:`validate_rows`, :class:`TableValidation`).
Nothing is dropped or repaired. The tables' own rules and schemas are in
:mod:`ml4t_pipeline.lib.schemas` (and :mod:`ml4t_pipeline.lib.price_rules`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandera.polars as pa
import polars as pl

from ml4t_pipeline.lib.price_rules import RowRule

__all__ = ["PriceValidation", "TableValidation", "check_structure", "validate_rows"]


@dataclass(frozen=True)
class TableValidation:
    """Outcome of a row-level validation; ``valid.height + invalid.height`` = input rows.

    Attributes
    ----------
    valid : pl.DataFrame
        Rows passing every rule, input columns and order.
    invalid : pl.DataFrame
        Rows breaking at least one rule: ``row_index`` (UInt32, position in the input), every
        input column, and ``reason`` (String, broken rule names joined by ``"; "``).
    violations : pl.DataFrame
        One row per (row, broken rule): ``row_index``, the table's key columns (``timestamp``,
        ``symbol`` for prices), ``rule``; ordered by row_index then rule order.
    n_violations : int
        ``violations.height``.
    summary : dict[str, int]
        Rule name → number of *checked* rows breaking it, every rule present (zeros included).
    level : str
        Validation level that produced this result (``"fast"``, ``"standard"``, ``"paranoid"``).
    sampled : bool
        True when only a sample of the rows was checked (level ``fast`` on a frame larger than
        the sample). Then ``valid`` and ``invalid`` hold only the checked rows, and nothing is
        known about the others: an empty ``invalid`` does *not* mean the table is clean.
    n_rows : int
        Rows in the input.
    n_checked : int
        Rows the row rules were applied to (``n_rows`` unless ``sampled``).
    """

    valid: pl.DataFrame
    invalid: pl.DataFrame
    violations: pl.DataFrame
    n_violations: int
    summary: dict[str, int] = field(default_factory=dict)
    level: str = "standard"
    sampled: bool = False
    n_rows: int = 0
    n_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when no *checked* row breaks any rule (see ``sampled``)."""
        return self.n_violations == 0

    @property
    def n_unchecked(self) -> int:
        """Rows no row rule was applied to (0 unless ``sampled``)."""
        return self.n_rows - self.n_checked

    def drop_invalid(self, df: pl.DataFrame) -> pl.DataFrame:
        """``df`` without the rows found invalid (by ``row_index``), other rows in input order.

        ``df`` must be the frame that was validated. For a sampled result the unchecked rows are
        kept: they were not found invalid, which is not the same as valid.
        """
        if df.height != self.n_rows:
            raise ValueError(
                f"drop_invalid: frame has {df.height} rows, the validated one had {self.n_rows}"
            )
        if self.invalid.height == 0:
            return df
        keep = np.ones(df.height, dtype=bool)
        keep[self.invalid["row_index"].to_numpy()] = False
        return df.filter(pl.Series(keep))

    def rows_breaking(self, rule: str) -> pl.DataFrame:
        """Violations of one rule (``row_index``, key columns, ``rule``)."""
        if rule not in self.summary:
            raise ValueError(f"unknown rule {rule!r}; known: {list(self.summary)}")
        return self.violations.filter(pl.col("rule") == rule)


PriceValidation = TableValidation  # the name used by the issue-2 API


def _symbol_as_string(df: pl.DataFrame) -> pl.DataFrame:
    if "symbol" in df.columns and isinstance(df.schema["symbol"], pl.Categorical | pl.Enum):
        return df.with_columns(pl.col("symbol").cast(pl.String))
    return df


def check_structure(df: pl.DataFrame, model: type[pa.DataFrameModel]) -> None:
    """Check names and dtypes only (no value checks) against a schema model, all errors at once.

    ``symbol`` may be Categorical/Enum in memory; it is compared as String.

    Raises
    ------
    pandera.errors.SchemaErrors
        Listing every missing column and wrong dtype (``lazy=True``).
    """
    model.validate(_symbol_as_string(df.head(0)), lazy=True)


def validate_rows(
    df: pl.DataFrame, rules: Sequence[RowRule], key: Sequence[str]
) -> TableValidation:
    """Apply row rules to every row and split the frame into valid and invalid rows.

    Parameters
    ----------
    df : pl.DataFrame
        Any table; must not have columns named ``row_index`` or ``reason``.
    rules : sequence of RowRule
        The rules, in report order; names must be unique.
    key : sequence of str
        Columns identifying a row in ``violations`` (e.g. ``("timestamp", "symbol")``).

    Returns
    -------
    TableValidation
        Nothing is dropped: ``valid`` + ``invalid`` hold every input row.

    Raises
    ------
    ValueError
        Reserved column names present, or duplicate rule names.
    """
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate rule names: {names}")
    reserved = [c for c in ("row_index", "reason") if c in df.columns]
    if reserved:
        raise ValueError(f"columns {reserved} are reserved for the validation report")
    flag = "__broken_"
    flag_cols = [f"{flag}{r.name}" for r in rules]
    # Only the Boolean flags are computed over the whole frame; the report columns (row index,
    # reason) are built for the broken rows alone, and a clean frame is returned without a copy.
    flags = df.select([(~r.passes()).fill_null(True).alias(f"{flag}{r.name}") for r in rules])
    totals = flags.select([pl.col(c).sum().alias(c.removeprefix(flag)) for c in flag_cols])
    counts = {k: int(v[0]) for k, v in totals.to_dict(as_series=False).items()}
    id_cols = ["row_index", *key]
    if not any(counts.values()):
        return TableValidation(
            valid=df,
            invalid=df.clear()
            .with_row_index("row_index")
            .with_columns(pl.lit(None, pl.String).alias("reason")),
            violations=df.select(key)
            .clear()
            .with_row_index("row_index")
            .with_columns(pl.lit(None, pl.String).alias("rule")),
            n_violations=0,
            summary=counts,
            n_rows=df.height,
            n_checked=df.height,
        )
    any_broken = flags.select(pl.any_horizontal(flag_cols)).to_series()
    valid = df.filter(~any_broken)
    rows = any_broken.arg_true()
    reason = pl.concat_str(
        [pl.when(pl.col(f"{flag}{r.name}")).then(pl.lit(r.name)) for r in rules],
        separator="; ",
        ignore_nulls=True,
    )
    broken = pl.concat(
        [
            rows.cast(pl.UInt32).alias("row_index").to_frame(),
            df[rows],
            flags[rows].with_columns(reason.alias("reason")),
        ],
        how="horizontal",
    )
    invalid = broken.select(["row_index", *df.columns, "reason"])
    violations = (
        broken.select([*id_cols, *flag_cols])
        .unpivot(index=id_cols, variable_name="rule", value_name="x")
        .filter(pl.col("x"))
        .with_columns(pl.col("rule").str.strip_prefix(flag).cast(pl.Enum(names)))
        .sort(["row_index", "rule"])
        .with_columns(pl.col("rule").cast(pl.String))
        .drop("x")
    )
    return TableValidation(
        valid=valid,
        invalid=invalid,
        violations=violations,
        n_violations=violations.height,
        summary=counts,
        n_rows=df.height,
        n_checked=df.height,
    )
