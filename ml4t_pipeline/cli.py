"""The ``ml4t`` console script.

``ml4t run CONFIG.yaml --output DIR``
    Materializes the whole asset graph for one experiment in-process and writes
    ``trades.parquet``, ``portfolio_states.parquet``, ``signals.parquet``, ``fills.parquet``,
    ``rejections.parquet``, ``prices_quarantine.parquet``, ``metrics.json`` and ``report.html``
    into DIR (asset values live under ``DIR/assets``). Prints the headline metrics.
``ml4t compare DIR [DIR ...]``
    Prints one row per experiment (metrics, config hash, code version) from ``ml4t run`` output
    folders or from a storage folder, like the ``experiment_comparison`` asset.
``ml4t report DIR``
    Rebuilds ``report.html`` and the attribution tables from a run's output folder.
``ml4t validate CONFIG.yaml``
    Prepares and validates the experiment's data only; prints each failing check with its
    offending rows and exits non-zero when a blocking check fails.

Exit codes: 0 success, 1 a run or blocking check failed, 2 a bad config or missing file.
With ``DAGSTER_HOME`` set the runs are recorded in that Dagster instance (visible in the UI);
otherwise an ephemeral instance is used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from ml4t_pipeline.config import ConfigError, load_config
from ml4t_pipeline.defs import (
    assets_attribution,
    assets_backtest,
    assets_data,
    assets_validation,
    sources,
)
from ml4t_pipeline.defs.io_managers import Ml4tIOManager, read_value
from ml4t_pipeline.defs.partitions import EXPERIMENTS
from ml4t_pipeline.defs.resources import ExperimentsResource
from ml4t_pipeline.lib import comparison
from ml4t_pipeline.lib import report as report_lib
from ml4t_pipeline.lib.comparison import LINEAGE_FIELDS

HEADLINE = (
    "total_return",
    "cagr",
    "sharpe",
    "max_drawdown",
    "win_rate",
    "n_trades",
    "final_equity",
)
DATA_ASSETS = ("prices_raw", "prices", "prices_quarantine", "features", "market_context",
               "signals", "market_panel")  # fmt: skip


def _instance() -> dg.DagsterInstance:
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def materialize_experiment(
    config_path: Path,
    storage_dir: Path,
    *,
    selection: Sequence[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    validate: bool = False,
) -> dg.ExecuteInProcessResult:
    """Materialize the graph (or ``selection``) for one experiment file in-process.

    The experiment's partition key is the file stem; its folder becomes the configs folder.
    ``validate`` adds the cross-framework validation assets (VectorBT, Backtrader).
    """
    key = config_path.stem
    instance = instance or _instance()
    if not instance.has_dynamic_partition(EXPERIMENTS, key):
        instance.add_dynamic_partitions(EXPERIMENTS, [key])
    modules = [sources, assets_data, assets_backtest, assets_attribution]
    if validate:
        modules.append(assets_validation)
    assets = [*dg.load_assets_from_modules(modules)]
    return dg.materialize(
        assets,
        partition_key=key,
        instance=instance,
        selection=list(selection) if selection else None,
        resources={
            "experiments": ExperimentsResource(configs_dir=str(config_path.parent.resolve())),
            "io_manager": Ml4tIOManager(base_dir=str(storage_dir.resolve())),
        },
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        raise_on_error=False,
    )


def failed_checks(result: dg.ExecuteInProcessResult) -> list[dict[str, Any]]:
    """Every failed asset check in a run, with its metadata rendered as text."""
    out = []
    for event in result.get_asset_check_evaluations():
        if event.passed:
            continue
        out.append(
            {
                "asset": event.asset_key.to_user_string(),
                "check": event.check_name,
                "metadata": {k: getattr(v, "value", v) for k, v in event.metadata.items()},
            }
        )
    return out


def _print_failures(result: dg.ExecuteInProcessResult) -> None:
    for check in failed_checks(result):
        print(f"FAILED check {check['asset']}:{check['check']}", file=sys.stderr)
        for name, value in check["metadata"].items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            print(f"  {name}:\n    " + str(text).replace("\n", "\n    "), file=sys.stderr)
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            err = event.step_failure_data.error
            cause = err.cause or err
            print(f"FAILED step {event.step_key}: {cause.message.strip()}", file=sys.stderr)


def _format(name: str, value: Any) -> str:
    if isinstance(value, float) and name not in ("sharpe", "final_equity", "sortino", "calmar"):
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:,.2f}" if name == "final_equity" else f"{value:.3f}"
    return str(value)


def cmd_run(args: argparse.Namespace) -> int:
    """``ml4t run``: materialize everything and write the output files."""
    config_path = Path(args.config)
    cfg = load_config(config_path)
    out = Path(args.output)
    storage = out / "assets"
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = materialize_experiment(config_path, storage, validate=args.validate)
    elapsed = time.perf_counter() - started
    if not result.success:
        _print_failures(result)
        print(
            f"run failed for experiment {cfg.name!r} (asset values in {storage})", file=sys.stderr
        )
        return 1
    key = config_path.stem
    backtest = read_value(storage / "backtest" / key)
    for name in ("trades", "portfolio_states", "fills", "rejections"):
        backtest[name].write_parquet(out / f"{name}.parquet")
    for name in ("signals", "prices_quarantine"):
        frame = read_value(storage / name / key)
        frame.with_columns(pl.col("symbol").cast(pl.String)).write_parquet(out / f"{name}.parquet")
    metrics = read_value(storage / "metrics" / key)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    shutil.copyfile(storage / "performance_report" / f"{key}.html", out / "report.html")
    (out / "lineage.json").write_text(json.dumps(run_lineage(result), indent=2, sort_keys=True))
    settings = {
        "periods_per_year": cfg.reporting.periods_per_year,
        "risk_free_rate": cfg.reporting.risk_free_rate,
        "horizon": assets_attribution.ic_horizon(cfg),
        "title": cfg.reporting.title or f"ml4t experiment: {cfg.name}",
    }
    (out / "report_settings.json").write_text(json.dumps(settings, indent=2))
    report_lib.rebuild_report(out, **settings)
    if args.validate:
        table = read_value(storage / "cross_framework_validation" / key)["summary"]
        table.write_parquet(out / "cross_framework_validation.parquet")
        print(comparison.format_frame(table))
    print(f"experiment {cfg.name} ({config_path}) finished in {elapsed:.1f} s")
    for name in HEADLINE:
        if name in metrics:
            print(f"  {name:<14} {_format(name, metrics[name])}")
    print(f"report: {(out / 'report.html').resolve()}")
    return 0


def run_lineage(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """Lineage of a run: experiment, config hash, code version, input versions, run id."""
    lineage: dict[str, Any] = {"run_id": result.run_id}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key.to_user_string() != "backtest":
            continue
        for name, value in materialization.metadata.items():
            if name in LINEAGE_FIELDS:
                lineage[name] = getattr(value, "value", value)
    return lineage


def cmd_compare(args: argparse.Namespace) -> int:
    """``ml4t compare``: one row per experiment from run output folders or a storage folder."""
    metrics: dict[str, dict[str, Any]] = {}
    lineage: dict[str, dict[str, Any]] = {}
    for folder in map(Path, args.folders):
        if (folder / "metrics.json").is_file():  # an `ml4t run` output folder
            name = folder.name
            metrics[name] = json.loads((folder / "metrics.json").read_text())
            if (folder / "lineage.json").is_file():
                lineage[name] = json.loads((folder / "lineage.json").read_text())
        elif (folder / "metrics").is_dir():  # an IO-manager storage folder
            for path in sorted((folder / "metrics").glob("*.json")):
                metrics[path.stem] = json.loads(path.read_text())
        else:
            raise FileNotFoundError(f"{folder}: neither metrics.json nor a metrics/ folder")
    table = comparison.comparison_table(metrics, lineage)
    print(comparison.format_table(table))
    if args.output:
        table.write_parquet(args.output)
        print(f"comparison table: {Path(args.output).resolve()}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``ml4t report DIR``: rebuild report.html and the attribution tables of a run folder."""
    folder = Path(args.folder)
    if not (folder / "trades.parquet").is_file():
        raise FileNotFoundError(f"{folder}: not an `ml4t run` output folder (no trades.parquet)")
    settings_file = folder / "report_settings.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    path = report_lib.rebuild_report(folder, **settings)
    print(f"report: {path.resolve()}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """``ml4t validate``: prepare and validate the data assets only."""
    config_path = Path(args.config)
    cfg = load_config(config_path)
    storage = Path(args.storage) if args.storage else Path(".ml4t_storage")
    result = materialize_experiment(config_path, storage, selection=DATA_ASSETS)
    for event in result.get_asset_check_evaluations():
        status = "passed" if event.passed else "FAILED"
        print(f"{status:<7} {event.asset_key.to_user_string()}:{event.check_name}")
    if not result.success:
        _print_failures(result)
        return 1
    print(f"data for experiment {cfg.name!r} is valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ml4t`` command."""
    parser = argparse.ArgumentParser(prog="ml4t", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize one experiment and write its outputs")
    run.add_argument("config", help="experiment YAML file")
    run.add_argument("--output", "-o", default="out", help="output folder (default: out)")
    run.add_argument(
        "--validate",
        action="store_true",
        help="also run VectorBT and Backtrader and compare fills (needs the validation extra)",
    )
    run.set_defaults(func=cmd_run)
    val = sub.add_parser("validate", help="prepare and validate one experiment's data")
    val.add_argument("config", help="experiment YAML file")
    val.add_argument("--storage", help="where prepared tables are written (default .ml4t_storage)")
    val.set_defaults(func=cmd_validate)
    rep = sub.add_parser("report", help="rebuild report.html from a run's output folder")
    rep.add_argument("folder", help="an `ml4t run` output folder")
    rep.set_defaults(func=cmd_report)
    cmp_ = sub.add_parser("compare", help="compare experiments' metrics side by side")
    cmp_.add_argument(
        "folders", nargs="+", help="`ml4t run` output folders, or a storage folder (.ml4t_storage)"
    )
    cmp_.add_argument("--output", help="also write the table to this Parquet file")
    cmp_.set_defaults(func=cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ml4t`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
