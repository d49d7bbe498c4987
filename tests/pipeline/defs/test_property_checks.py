"""Each property of a prepared table is its own asset check, named as a predicate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from ml4t_pipeline.cli import DATA_ASSETS, materialize_experiment
from ml4t_pipeline.defs.assets_data.checks import TABLE_RULES, _rule_check_name
from ml4t_pipeline.lib.io import load_demo_prices


@pytest.fixture(autouse=True, scope="module")
def _data_root_is_basetemp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The configs here name data files under pytest's temporary folders: make that the data
    root (data paths must stay inside ``ML4T_DATA_ROOT``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML4T_DATA_ROOT", str(tmp_path_factory.getbasetemp()))
        yield


CONFIG = """\
name: {name}
data:
  prices: demo
  signals:
    path: {signals}
strategy: {{type: TopN, signal: score, n: 2}}
"""


def _run(tmp_path: Path, signals: pl.DataFrame) -> dict[str, bool]:
    signals.write_parquet(tmp_path / "scores.parquet")
    (tmp_path / "exp.yaml").write_text(
        CONFIG.format(name="exp", signals=tmp_path / "scores.parquet")
    )
    result = materialize_experiment(
        tmp_path / "exp.yaml", tmp_path / "storage", selection=DATA_ASSETS
    )
    return {c.check_name: c.passed for c in result.get_asset_check_evaluations()}


def _scores() -> pl.DataFrame:
    prices = load_demo_prices()
    return prices.select("timestamp", "symbol", (pl.col("close") * 0 + 1.0).alias("score"))


def test_property_checks_exist_for_every_rule(tmp_path: Path) -> None:
    checks = _run(tmp_path, _scores())
    for asset, rules in TABLE_RULES.items():
        for rule in rules:
            assert checks[_rule_check_name(asset, rule)] is True, (asset, rule)


def test_property_checks_name_the_broken_property_only(tmp_path: Path) -> None:
    scores = _scores()
    bad = pl.concat(
        [
            scores,
            scores.head(1),  # a duplicate key
            scores.head(1).with_columns(pl.lit("ZZZZ").alias("symbol")),  # unknown symbol
        ]
    )
    checks = _run(tmp_path, bad)
    assert checks["signals_key_unique"] is False
    assert checks["signals_symbol_known"] is False
    assert checks["signals_values_finite"] is True
    assert checks["signals_available_at_not_null"] is True
    assert checks["signals_valid"] is False
