"""The ``ml4t`` console script.

``ml4t run CONFIG.yaml --output DIR``
    Materializes the whole asset graph for one experiment in-process
    (:func:`ml4t_pipeline.runner.run_to_folder`) and publishes ``trades.parquet``,
    ``portfolio_states.parquet``, ``signals.parquet``, ``fills.parquet``, ``rejections.parquet``,
    ``prices_quarantine.parquet``, ``metrics.json``, ``report.html``, the attribution tables and
    the asset values (``DIR/assets``) as one set: everything is written into a staging folder
    ``DIR.tmp-<pid>-<hex>`` beside DIR, the completion marker ``DIR/run.json`` (every file with
    its SHA-256 and size) is written last, and the set is swapped in with one atomic rename. A
    failed or killed run leaves DIR as it was. The run holds the lock file ``DIR.lock``; a second
    run into the same DIR stops at once with "output folder DIR is in use by pid N". A run that
    makes no trades prints a warning on stderr (and records it in ``run.json``) but succeeds.
    Prints the headline metrics. A failed run prints its cause first (the failed checks with
    their offending rows, the failed steps with their error), then where the full Dagster
    traces are: ``DIR.error.log`` beside DIR; ``--verbose`` also prints them.
``ml4t compare DIR [DIR ...]``
    Prints one row per experiment (metrics, config hash, code version) from ``ml4t run`` output
    folders (each must have a valid ``run.json``) or from a storage folder, like the
    ``experiment_comparison`` asset.
``ml4t report DIR``
    Rebuilds ``report.html`` and the attribution tables of a complete run folder (valid
    ``run.json``), as one atomic set again, and updates ``run.json``.
``ml4t validate CONFIG.yaml``
    Prepares and validates the experiment's data only; prints each failing check with its
    offending rows and exits non-zero when a blocking check fails.
``ml4t parity [--scenarios A,B] [--symbols N|all] [--bars N] [--output FILE] [--docs PAGE]``
    Runs the parity matrix (:mod:`ml4t_pipeline.lib.crossval.matrix`, needs the
    ``validation`` extra): every catalogue scenario through our engine, Backtrader and VectorBT
    (``--frameworks``; ``zipline`` too with ``--zipline-python`` naming a separate venv) on the
    real S&P file of ``$ML4T_DATA_ROOT``; writes the table as Parquet (default
    ``parity_matrix.parquet``) and, with ``--docs``, replaces the generated table of that
    page (between its ``parity-matrix`` markers, or ``parity-SECTION`` with
    ``--docs-section``); exits 1 when a gap has no named setting.
``ml4t register [KEY ...] [--configs DIR]``
    Registers experiment files (default: every file of the configs folder) as partitions of the
    Dagster instance of ``$DAGSTER_HOME``, as ``experiment_configs_sensor`` does, so
    ``dagster job execute ... --tags '{"dagster/partition": KEY}'`` can run them without
    ``dagster dev``; exits 2 when a key is refused (named on stderr).

Exit codes:

- 0 success (also a run with zero trades, which warns);
- 1 a run, step or blocking check failed (the previous output folder is unchanged);
- 2 the command could not start or finish its output: a bad config, a missing file, an
  experiment file whose stem is not a safe partition key, an output folder that cannot be
  created or replaced (its parent is a file or read-only, or it is not empty and has no valid
  ``run.json``), a full disk ("no space left on the disk holding DIR (N MiB free ...)"), an
  output folder in use by another run or sweep ("in use by pid N"), a lock file that is a
  symbolic link or not ours (``DIR.lock`` or a storage lock), or a folder without a valid
  ``run.json`` given to ``report``/``compare``.

Errors are printed as one ``error: ...`` line without a Python traceback; ``--verbose`` (any
subcommand) adds the traces.

With ``DAGSTER_HOME`` set the runs are recorded in that Dagster instance (visible in the UI);
otherwise an ephemeral instance is used. The paths recorded in Dagster's metadata name
``DIR/assets`` (where the values are once the set is swapped in), not the staging folder, and
the run is tagged ``ml4t/output_folder``; ``DIR/run.json``'s ``run_id`` says which run's values
DIR holds.
"""

# ruff: noqa: E402  (the cyclic garbage collector is paused for the imports below)

from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

# Polars' allocator (jemalloc) keeps the pages it frees resident for about a second more
# (``muzzy_decay_ms:1000``, pages marked MADV_FREE count in RSS until the kernel takes them); a
# run frees hundreds of MB step after step, which stacked onto the next step's peak. Returned at
# once instead: S&P run peak RSS -60 to -110 MiB for +0.1 to 0.4 s system CPU. Read once by
# ``import polars`` (through the imports below); a user's own ``_RJEM_MALLOC_CONF`` comes last,
# so it wins.
os.environ["_RJEM_MALLOC_CONF"] = ",".join(
    filter(None, ["muzzy_decay_ms:0", os.environ.get("_RJEM_MALLOC_CONF")])
)

# The imports below make ~450,000 objects that live as long as the process (Dagster, polars,
# pandas, pandera, matplotlib, numba, our definitions). With the cyclic garbage collector on, each
# full collection during them walks every object made so far: five of them, 0.4-0.5 s of the
# 1.8-2.4 s CPU of `import ml4t_pipeline.cli`. Imports leave next to no cyclic garbage, so the
# collector is paused for them and the objects are then filed in its oldest generation
# (`gc.freeze()` + `gc.unfreeze()`: a list splice, no walk) instead of sitting in the youngest,
# which the next young collection would walk whole. A caller's own freeze is left as it is.
_GC_WAS_ENABLED = gc.isenabled()
gc.disable()

import dagster as dg

from engine.metrics import SUMMARY_METRIC_KEYS
from ml4t_pipeline.config import ConfigError, load_config
from ml4t_pipeline.defs.assets_data import SKIPPED_KEY
from ml4t_pipeline.defs.partitions import UnsafePartitionKeyError
from ml4t_pipeline.lib import comparison
from ml4t_pipeline.lib import output as output_lib
from ml4t_pipeline.lib.lockfile import UnsafeLockFileError
from ml4t_pipeline.lib.output import OutputError
from ml4t_pipeline.lib.progress import progress
from ml4t_pipeline.runner import (
    DATA_ASSETS,
    DiskFullError,
    disk_full_error,
    failed_checks,
    failure_text,
    failure_trace,
    is_disk_full,
    materialize_experiment,
    rebuild_report_in_place,
    run_lineage,
    run_to_folder,
)
from ml4t_pipeline.sweeps import add_sweep_parser

if _GC_WAS_ENABLED:
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()  # the frozen objects go to the oldest generation
    gc.enable()

__all__ = [
    "DATA_ASSETS",
    "build_parser",
    "failed_checks",
    "console_main",
    "main",
    "materialize_experiment",
    "run_lineage",
]

HEADLINE = SUMMARY_METRIC_KEYS


def _print_failures(result: dg.ExecuteInProcessResult, *, verbose: bool = False) -> None:
    text = failure_text(result)
    if text:
        print(text, file=sys.stderr)
    trace = failure_trace(result) if verbose else ""
    if trace:
        print(f"\n{trace}", file=sys.stderr)


def _failure_exit_code(result: dg.ExecuteInProcessResult | None) -> int:
    """1 for a failed run; 2 when a step was refused an unsafe lock file (a path to clear)."""
    for event in result.all_events if result is not None else []:
        error = event.step_failure_data.error if event.is_step_failure else None
        while error is not None:
            if error.cls_name == UnsafeLockFileError.__name__:
                return 2
            error = error.cause
    return 1


def _format(name: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and name not in ("sharpe", "final_equity", "sortino", "calmar"):
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:,.2f}" if name == "final_equity" else f"{value:.3f}"
    return str(value)


def cmd_run(args: argparse.Namespace) -> int:
    """``ml4t run``: materialize everything and publish the output set atomically.

    The objects alive before the run (the imported modules: Dagster, polars, pandas,
    matplotlib, ...) are frozen out of Python's cyclic garbage collector for the run
    (``gc.freeze``, undone at the end): a full collection then walks only what the run made,
    not those hundreds of thousands of objects (one such walk took 0.3 s in the middle of the
    S&P run). Nothing of the run's own garbage is kept longer.
    """
    config_path = Path(args.config)
    freeze = gc.get_freeze_count() == 0  # a caller's own freeze is left as it is
    if freeze:
        gc.freeze()
    try:
        with progress(f"experiment {config_path.stem}: preparing data, training, backtesting"):
            outcome = run_to_folder(
                config_path, Path(args.output), validate=args.validate, trigger="cli"
            )
    finally:
        if freeze:
            gc.unfreeze()
    if not outcome.success:
        if outcome.failure:
            print(outcome.failure, file=sys.stderr)  # the cause first
        print(
            f"run failed for experiment {outcome.experiment!r}; output folder "
            f"{outcome.output} left unchanged",
            file=sys.stderr,
        )
        if args.verbose and outcome.trace:
            print(f"\n{outcome.trace}", file=sys.stderr)
        elif outcome.log_path is not None:
            print(f"full trace: {outcome.log_path} (or rerun with --verbose)", file=sys.stderr)
        elif outcome.trace:
            print("rerun with --verbose for the full trace", file=sys.stderr)
        return _failure_exit_code(outcome.result)
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    out = outcome.output
    if args.validate:
        import polars as pl

        table = pl.read_parquet(out / "cross_framework_validation.parquet")
        print(comparison.format_frame(table))
    print(f"experiment {outcome.experiment} ({config_path}) finished in {outcome.elapsed:.1f} s")
    for name in HEADLINE:
        if name in outcome.metrics:
            print(f"  {name:<14} {_format(name, outcome.metrics[name])}")
    print(f"report: {(out / 'report.html').resolve()}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``ml4t compare``: one row per experiment from run output folders or a storage folder."""
    metrics: dict[str, dict[str, Any]] = {}
    lineage: dict[str, dict[str, Any]] = {}
    for folder in map(Path, args.folders):
        if (folder / "metrics").is_dir() and not (folder / "metrics.json").exists():
            for path in sorted((folder / "metrics").glob("*.json")):  # a storage folder
                metrics[path.stem] = output_lib.loads_strict(path.read_text())
            continue
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder")
        manifest = output_lib.read_manifest(folder)  # an `ml4t run` output folder
        wanted = [name for name in ("metrics.json", "lineage.json") if name in manifest["files"]]
        texts = {name: (folder / name).read_text() for name in wanted}
        output_lib.verify_files(folder, manifest, wanted)
        if "metrics.json" not in texts:
            raise output_lib.IncompleteOutputError(folder, f"{folder}: run.json lists no metrics")
        name = folder.resolve().name
        metrics[name] = output_lib.loads_strict(texts["metrics.json"])
        if "lineage.json" in texts:
            lineage[name] = output_lib.loads_strict(texts["lineage.json"])
    table = comparison.comparison_table(metrics, lineage)
    print(comparison.format_table(table))
    if args.output:
        table.write_parquet(args.output)
        print(f"comparison table: {Path(args.output).resolve()}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``ml4t report DIR``: rebuild report.html and the attribution tables of a run folder."""
    folder = Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    output_lib.read_manifest(folder)  # refuse before taking the lock
    path = rebuild_report_in_place(folder)
    print(f"report: {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """``ml4t validate``: prepare and validate the data assets only."""
    config_path = Path(args.config)
    cfg = load_config(config_path)
    storage = Path(args.storage) if args.storage else Path(".ml4t_storage")
    with progress(f"experiment {cfg.name}: preparing and validating data"):
        result = materialize_experiment(config_path, storage, selection=DATA_ASSETS)
    for event in result.get_asset_check_evaluations():
        name = f"{event.asset_key.to_user_string()}:{event.check_name}"
        skipped = event.metadata.get(SKIPPED_KEY)
        if skipped is not None:  # a check that could not run is not reported as passed
            print(f"skipped {name} ({getattr(skipped, 'value', skipped)})")
        else:
            print(f"{'passed' if event.passed else 'FAILED':<7} {name}")
    if not result.success:
        _print_failures(result, verbose=args.verbose)
        if not args.verbose and failure_trace(result):
            print("rerun with --verbose for the full trace", file=sys.stderr)
        return _failure_exit_code(result)
    print(f"data for experiment {cfg.name!r} is valid")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    """``ml4t register``: add experiment partitions to the instance of ``$DAGSTER_HOME``."""
    from ml4t_pipeline.defs.partitions import EXPERIMENTS
    from ml4t_pipeline.defs.resources import default_configs_dir
    from ml4t_pipeline.defs.sensors import register_experiments

    if not os.environ.get("DAGSTER_HOME"):
        print("error: set DAGSTER_HOME to the instance folder first", file=sys.stderr)
        return 2
    configs = args.configs or default_configs_dir()
    with dg.DagsterInstance.get() as instance:
        added, refused = register_experiments(instance, configs, args.keys or None)
        known = instance.get_dynamic_partitions(EXPERIMENTS)
    for key, reason in refused.items():
        print(f"error: experiment {key!r} refused: {reason}", file=sys.stderr)
    print(f"experiments partitions: {known} (added {added or 'none'})")
    return 2 if refused else 0


def cmd_parity(args: argparse.Namespace) -> int:
    """``ml4t parity``: regenerate the parity matrix (Parquet and, optionally, the docs table)."""
    from ml4t_pipeline.lib.crossval.matrix import (
        replace_docs_table,
        run_matrix,
        unexplained_gaps,
        write_matrix,
    )

    root = Path(args.data_root or os.environ.get("ML4T_DATA_ROOT") or "data")
    n_symbols = None if args.symbols == "all" else int(args.symbols)
    names = args.scenarios.split(",") if args.scenarios else None
    frameworks = tuple(args.frameworks.split(","))

    def show(row: dict[str, Any]) -> None:
        gap = row["final_equity_gap"]
        figures = "" if gap is None else f" fills {row['fills_ours']}/{row['fills_theirs']}, "
        figures += "" if gap is None else f"missing {row['missing']}, extra {row['extra']}, "
        figures += "" if gap is None else f"price gaps {row['price_gaps']}, equity {gap:+.2f}"
        print(f"{row['scenario']:<32} {row['framework']:<11} {row['status']:<14}{figures}")

    try:
        table = run_matrix(
            root,
            names,
            frameworks,
            n_symbols=n_symbols,
            n_bars=args.bars,
            progress=show,
            initial_cash=args.cash,
            zipline_py=args.zipline_python,
        )
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    write_matrix(table, Path(args.output))
    print(f"matrix: {table.height} rows -> {args.output}")
    if args.docs:
        replace_docs_table(Path(args.docs), table, args.docs_section)
        print(f"docs table updated: {args.docs}")
    bad = unexplained_gaps(table)
    for row in bad.iter_rows(named=True):
        print(f"error: unexplained gap: {row['scenario']} vs {row['framework']}", file=sys.stderr)
    return 1 if bad.height else 0


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
    reg = sub.add_parser(
        "register",
        help="register experiment files as partitions of the Dagster instance ($DAGSTER_HOME)",
    )
    reg.add_argument("keys", nargs="*", help="experiment file stems (default: every file)")
    reg.add_argument("--configs", default=None, help="configs folder (default: ./configs)")
    reg.set_defaults(func=cmd_register)
    par = sub.add_parser(
        "parity",
        help="run the parity matrix against Backtrader and VectorBT (needs the validation extra)",
    )
    par.add_argument("--scenarios", help="comma-separated scenario names (default: all)")
    par.add_argument(
        "--symbols", default="12", help="symbols of the S&P panel, or 'all' (default: 12)"
    )
    par.add_argument("--bars", type=int, default=None, help="first N bars only (default: all)")
    par.add_argument(
        "--frameworks", default="backtrader,vectorbt", help="comma-separated (default: both)"
    )
    par.add_argument("--data-root", help="data folder (default: $ML4T_DATA_ROOT)")
    par.add_argument(
        "--cash", type=float, default=None, help="starting cash of the signal scenarios"
    )
    par.add_argument("--output", default="parity_matrix.parquet", help="Parquet file to write")
    par.add_argument("--docs", help="docs page whose generated table is replaced")
    par.add_argument(
        "--docs-section",
        default="matrix",
        help="which generated table of the page: <!-- parity-SECTION:start --> (default matrix)",
    )
    par.add_argument(
        "--zipline-python",
        help="python of a venv with zipline-reloaded (with --frameworks ...,zipline)",
    )
    par.set_defaults(func=cmd_parity)
    add_sweep_parser(sub)
    for command in sub.choices.values():
        command.add_argument(
            "--verbose",
            "-v",
            action="store_true",
            help="on failure also print the full traces (Dagster steps, Python exceptions)",
        )
    return parser


def _output_folder(args: argparse.Namespace) -> Path:
    """The folder a command writes (for a disk-full message that names no file): its
    ``--output``/``--storage`` folder, or the folder of its ``--output`` file."""
    for name in ("output", "folder", "storage"):
        value = getattr(args, name, None)
        if value:
            path = Path(value).absolute()
            return path if path.is_dir() else path.parent
    return Path.cwd()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ml4t`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    try:
        return int(args.func(args))
    except (
        ConfigError,
        FileNotFoundError,
        OutputError,
        UnsafeLockFileError,
        UnsafePartitionKeyError,
    ) as exc:
        message = str(exc)
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            path = exc.path if isinstance(exc, OutputError) else _output_folder(args)
            message = str(disk_full_error(path, message))
        print(f"error: {message}", file=sys.stderr)
        if verbose:
            traceback.print_exception(exc, file=sys.stderr)
        return 2
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        # e.g. a sweep's trial store or a polars writer: "No space left on device (os error 28)"
        filename = getattr(exc, "filename", None)
        folder = Path(filename).absolute().parent if filename else _output_folder(args)
        print(f"error: {disk_full_error(folder, f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        if verbose:
            traceback.print_exception(exc, file=sys.stderr)
        return 2


def console_main() -> NoReturn:
    """The ``ml4t`` console script: :func:`main` on the command line, then exit with its code.

    The process ends without the interpreter's teardown (freeing the ~500,000 objects of
    Dagster, polars, pandas, matplotlib and the run one by one, module by module: ~0.4 s of CPU
    after an S&P ``ml4t run``), as mypy's command line does: the exit handlers (``atexit``:
    logging's flush, temporary folders, coverage data) run and stdout/stderr are flushed first,
    then ``os._exit``. Everything the command writes is closed and synced before :func:`main`
    returns. A process with another non-daemon thread still running, or one whose streams
    cannot be flushed (a closed pipe), exits the ordinary way, as does an exception raised by
    :func:`main`.
    """
    code = main()
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython's, undocumented
    if run_exit_handlers is None or any(not t.daemon for t in others):
        sys.exit(code)
    run_exit_handlers()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)  # the interpreter reports it as usual
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
