"""Assets declare code versions derived from their source; runs carry filterable tags (issue 26)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from ml4t_pipeline.definitions import ASSET_MODULES, build_definitions
from ml4t_pipeline.defs import versions
from ml4t_pipeline.runner import materialize_experiment
from tests.conftest import REPO_ROOT

DEMO = REPO_ROOT / "configs" / "demo.yaml"


def _relative(files: tuple[Path, ...]) -> set[str]:
    return {p.relative_to(REPO_ROOT).as_posix() for p in files}


def test_every_asset_has_its_modules_code_version() -> None:
    defs = build_definitions(configs_dir=str(REPO_ROOT / "configs"))
    graph = defs.resolve_asset_graph()
    by_module = {m.__name__: versions.module_code_version(m.__name__) for m in ASSET_MODULES}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_executable or node.is_observable:
            continue
        assert node.code_version is not None, key
        assert re.fullmatch(r"[0-9a-f]{12}", node.code_version), key
        assert node.code_version in by_module.values(), key


def test_data_assets_code_excludes_backtest_only_modules() -> None:
    data = _relative(versions.code_closure("ml4t_pipeline.defs.assets_data"))
    backtest = _relative(versions.code_closure("ml4t_pipeline.defs.assets_backtest"))
    assert {"ml4t_pipeline/lib/features.py", "ml4t_pipeline/lib/schemas.py"} <= data
    # one code version for the data assets: it covers every module of their package
    package = REPO_ROOT / "ml4t_pipeline" / "defs" / "assets_data"
    assert _relative(tuple(package.glob("*.py"))) <= data
    # the report and the attribution run only in the backtest assets
    assert "ml4t_pipeline/lib/report.py" not in data
    assert not {f for f in data if f.startswith("ml4t_pipeline/lib/attribution/")}
    assert {
        "engine/broker/accounting.py",
        "ml4t_pipeline/lib/report.py",
        "ml4t_pipeline/lib/experiment.py",
        "ml4t_pipeline/lib/attribution/tables.py",
    } <= (backtest)
    # an edit to the report changes the backtest's version only
    assert versions.module_code_version(
        "ml4t_pipeline.defs.assets_data"
    ) != versions.module_code_version("ml4t_pipeline.defs.assets_backtest")


def test_source_hash_follows_content_and_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    first = versions.source_hash([a, b], root=tmp_path)
    assert versions.source_hash([b, a], root=tmp_path) == first  # order-free
    a.write_text("x = 2\n")
    assert versions.source_hash([a, b], root=tmp_path) != first
    a.write_text("x = 1\n")
    assert versions.source_hash([a, b], root=tmp_path) == first


def test_code_closure_refuses_foreign_module() -> None:
    with pytest.raises(ModuleNotFoundError, match="not a module of"):
        versions.code_closure("json")


def test_run_tags_refuse_unknown_trigger() -> None:
    with pytest.raises(ValueError, match="trigger must be one of"):
        versions.experiment_run_tags("demo", trigger="cron")


def test_materialization_records_code_version_and_run_tags_then_code_change_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_experiment(
        DEMO, tmp_path / "storage", instance=instance, selection=["prices_raw"], trigger="cli",
        config_hash="abc123",
    )  # fmt: skip
    assert result.success
    data_version = versions.module_code_version("ml4t_pipeline.defs.assets_data")
    record = instance.fetch_materializations(dg.AssetKey("prices_raw"), limit=1).records[0]
    materialization = record.event_log_entry.asset_materialization
    assert materialization is not None
    assert materialization.tags["dagster/code_version"] == data_version  # not the run id
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags["ml4t/experiment"] == "demo"
    assert tags["ml4t/trigger"] == "cli"
    assert tags["ml4t/config_hash"] == "abc123"
    assert tags["ml4t/code_version"] == versions.module_code_version(
        "ml4t_pipeline.defs.assets_backtest"
    )

    def status() -> StaleStatus:
        assets = versions.versioned_assets(ASSET_MODULES)
        resolver = get_stale_status_resolver(instance, assets)
        return resolver.get_status(dg.AssetKey("prices_raw"), "demo")

    assert status() == StaleStatus.FRESH
    real = versions.module_code_version

    def edited(module: str) -> str:
        return "0" * 12 if module == "ml4t_pipeline.defs.assets_data" else real(module)

    monkeypatch.setattr(versions, "module_code_version", edited)
    assert status() == StaleStatus.STALE


def _forget_parsed_imports() -> None:
    for cached in (
        versions._imports_cache,
        versions._imported_names,
        versions.code_closure,
        versions.module_code_version,
    ):
        cached.cache_clear()


@pytest.mark.parametrize("start", ["no file", "corrupt file"])
def test_code_versions_from_imports_cache_equal_fresh_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    # Arrange: the parsed-imports cache in a fresh place (absent, or not JSON)
    cache_file = tmp_path / "imports.json"
    if start == "corrupt file":
        cache_file.write_text("{not json")
    monkeypatch.setattr(versions, "_IMPORTS_CACHE", cache_file)
    names = [m.__name__ for m in ASSET_MODULES]

    # Act: a cold process (parses every file, writes the cache), then a warm one (reads it)
    _forget_parsed_imports()
    cold = {n: (versions.code_closure(n), versions.module_code_version(n)) for n in names}
    _forget_parsed_imports()

    def parse_again(*args: object, **kwargs: object) -> frozenset[str]:
        raise AssertionError(f"parsed again: {args[1]}")

    monkeypatch.setattr(versions, "_parse_imported_names", parse_again)
    warm = {n: (versions.code_closure(n), versions.module_code_version(n)) for n in names}
    _forget_parsed_imports()

    # Assert: one entry per parsed file, none parsed again, the same closures and versions
    files = set().union(*(closure for closure, _ in cold.values()))
    entries = json.loads(cache_file.read_text())["entries"]
    assert len(entries) >= len(files)
    assert warm == cold
