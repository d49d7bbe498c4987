"""The IO manager's storage: round trips by type, atomic replacement."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from ml4t_pipeline.defs.io_managers import read_value, write_value


def test_write_value_round_trips_each_type(tmp_path: Path) -> None:
    frame = pl.DataFrame({"a": [1.0, 2.0], "s": ["x", "y"]})
    cases = {
        "frame": frame,
        "tables": {"t1": frame, "t2": frame.head(1)},
        "json": {"sharpe": 1.25, "n_trades": 3},
        "html": "<html><body>hi</body></html>",
    }
    for name, value in cases.items():
        write_value(value, tmp_path / "asset" / name)
        back = read_value(tmp_path / "asset" / name)
        if isinstance(value, pl.DataFrame):
            assert back.equals(value)
        elif isinstance(value, dict) and name == "tables":
            assert set(back) == {"t1", "t2"} and back["t2"].equals(frame.head(1))
        else:
            assert back == value


def test_write_value_replaces_previous_version_without_leftovers(tmp_path: Path) -> None:
    stem = tmp_path / "asset" / "demo"
    write_value({"t": pl.DataFrame({"a": [1]})}, stem)
    write_value({"t": pl.DataFrame({"a": [2]})}, stem)
    assert read_value(stem)["t"]["a"].to_list() == [2]
    assert [p.name for p in (tmp_path / "asset").iterdir()] == ["demo"]


def test_read_value_missing_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="materialize the upstream"):
        read_value(tmp_path / "nothing")
