"""Parameter sweeps, the faces: :class:`Sweep` (Python), ``ml4t sweep`` (CLI) and the data
preparation they hand to :func:`~ml4t_pipeline.lib.sweep.runner.run_sweep`.

They sit beside :mod:`ml4t_pipeline.cli` and :mod:`ml4t_pipeline.api` because they run the
Dagster data assets (:func:`prepare_data`, through :func:`ml4t_pipeline.runner.
materialize_experiment`); the sweep itself (:mod:`ml4t_pipeline.lib.sweep`) is Dagster-free.

**Python.** The same sweep as ``ml4t sweep CONFIG --output DIR``: the file is validated and
expanded by :func:`~ml4t_pipeline.lib.sweep.spec.load_sweep_file`, the trials run through
:func:`~ml4t_pipeline.lib.sweep.runner.run_sweep` (serial, processes or Ray; resumable) and the
outputs are written by :func:`~ml4t_pipeline.lib.sweep.results.write_outputs`, so a sweep run
here and one run from the command line into the same folder share their stored trials.

>>> from ml4t_pipeline import Sweep                                   # doctest: +SKIP
>>> sweep = Sweep.from_file("configs/sweeps/sp500_top25_sweep.yaml")  # doctest: +SKIP
>>> result = sweep.run("out/sweep", backend="ray", workers=2)         # doctest: +SKIP
>>> result.table.sort("sharpe", descending=True).head()               # doctest: +SKIP
>>> result.deflated_sharpe, result.pbo                                # doctest: +SKIP

**CLI.** ``ml4t sweep CONFIG --output DIR`` runs (or resumes) a sweep; registered in
:func:`ml4t_pipeline.cli.build_parser` by :func:`add_sweep_parser`. Prints the counts, the best
trial, the Deflated Sharpe Ratio and the PBO; writes ``sweep_results.parquet``,
``sweep_summary.json`` and ``sweep_report.html`` into DIR. A progress bar (trials done/total,
ETA) is drawn on stderr when a person watches (:mod:`ml4t_pipeline.lib.progress`). It also
prints the PSR and minimum track record length, the SPA / Reality Check p-values, the Holm and
BY counts, the walk-forward headline (with ``sweep.walk_forward``) and the gates' verdict.

Exit codes: 0 the sweep ran (failed trials are recorded, not fatal), 1 the data preparation
failed or no trial succeeded, 2 a bad sweep file (its message names the path), a sweep folder in
use by another sweep or run ("in use by pid N", its lock ``DIR.lock``), or a full disk.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from ml4t_pipeline.config import ExperimentConfig
from ml4t_pipeline.lib.progress import progress
from ml4t_pipeline.lib.sweep import runner as sweep_runner
from ml4t_pipeline.lib.sweep.runner import (
    BACKENDS,
    PreparedData,
    SweepError,
    SweepRun,
    TrialStore,
    run_sweep,
    sweep_lock,
)
from ml4t_pipeline.lib.sweep.spec import SweepFile, load_sweep_file, sweep_from_mapping

__all__ = ["Sweep", "SweepResult", "add_sweep_parser", "cmd_sweep", "prepare_data"]


def _materialize_data(config: ExperimentConfig, storage: Path) -> None:
    """Run the data assets of one validated experiment config into ``storage`` (in-process
    Dagster; the config object is handed over, no file is written)."""
    from ml4t_pipeline.runner import DATA_ASSETS, failure_text, materialize_experiment

    result = materialize_experiment(config, storage, selection=DATA_ASSETS)
    if not result.success:
        lines = failure_text(result).replace("\n", "\n  ")
        raise SweepError(f"preparing the sweep's data ({storage.parent}) failed:\n  {lines}")


def prepare_data(raw: dict[str, Any], cfg: ExperimentConfig, folder: Path) -> PreparedData:
    """The sweep's data for one data section: the Dagster data assets stored under ``folder``
    (reused while their inputs and code are unchanged), read back
    (:func:`ml4t_pipeline.lib.sweep.runner.prepare_data`). The ``prepare`` callable the faces
    and the ``sweep_results`` asset hand to :func:`~ml4t_pipeline.lib.sweep.runner.run_sweep`.

    Raises
    ------
    ml4t_pipeline.lib.sweep.runner.SweepError
        A data asset or a blocking check failed (the message lists them with their offending
        rows).
    """
    return sweep_runner.prepare_data(raw, cfg, folder, materialize=_materialize_data)


class Sweep:
    """A validated parameter sweep: a base experiment and its trials.

    Build it with :meth:`from_file` (YAML, or JSON by suffix) or :meth:`from_dict` (the same
    mapping in memory, with its ``sweep:`` block). Every trial's config is validated when the
    sweep is built, so a bad path or value fails here, naming it, before anything runs.

    Raises
    ------
    ml4t_pipeline.config.ConfigError
        From the constructors: a missing or unreadable file, no ``sweep:`` block, a block or
        base experiment that breaks its schema, an unknown path, or a refused value.
    """

    def __init__(self, sweep: SweepFile) -> None:
        self._sweep = sweep

    @classmethod
    def from_file(cls, path: str | Path) -> Sweep:
        """The sweep of an experiment file with a ``sweep:`` block."""
        return cls(load_sweep_file(path))

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], name: str = "sweep") -> Sweep:
        """The sweep of an in-memory experiment mapping with a ``sweep:`` key.

        ``name`` names the sweep (and its experiment, unless the mapping has a ``name``);
        relative data paths resolve against the data root as for a file.
        """
        return cls(sweep_from_mapping(dict(mapping), Path(name)))

    @property
    def name(self) -> str:
        """The sweep's name (the file stem, or ``from_dict``'s ``name``)."""
        return self._sweep.name

    @property
    def sweep_file(self) -> SweepFile:
        """The loaded sweep (base config, block, trials) the runner takes."""
        return self._sweep

    def __len__(self) -> int:
        return len(self._sweep.trials)

    @property
    def trials(self) -> pl.DataFrame:
        """One row per trial: ``trial`` (Int64) and a column per swept path."""
        rows = [{"trial": t.index} | dict(t.params) for t in self._sweep.trials]
        return pl.DataFrame(rows, infer_schema_length=None)

    def backend_and_workers(
        self, backend: str | None = None, workers: int | None = None
    ) -> tuple[str, int]:
        """The backend and worker count a run uses: the arguments, else the ``sweep:`` block's,
        else ``serial`` and the number of CPUs.

        Raises
        ------
        ValueError
            An unknown backend, or fewer than one worker.
        """
        spec = self._sweep.spec
        backend = backend or spec.backend or "serial"
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
        workers = workers or spec.workers or (os.cpu_count() or 1)
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        return backend, workers

    def run(
        self,
        output: str | Path,
        *,
        backend: str | None = None,
        workers: int | None = None,
        ray_address: str | None = None,
        retry_failed: bool = False,
        show_progress: bool | None = None,
        variants: bool = True,
    ) -> SweepResult:
        """Run (or resume) the sweep into ``output`` and write its outputs there.

        Parameters
        ----------
        output : str or Path
            The sweep folder: stored trials there are reused (same config, data and code).
        backend : {"serial", "processes", "ray"}, optional
            Default: the block's ``backend``, else ``serial``.
        workers : int, optional
            Parallel workers for ``processes``/``ray``; default the block's, else the CPUs.
        ray_address : str, optional
            A Ray cluster; default the block's ``ray_address``, else ``$RAY_ADDRESS``, else a
            local Ray started (and stopped) for this sweep.
        retry_failed : bool
            Run the trials whose stored record is ``failed`` again.
        show_progress : bool, optional
            Force the progress bar on or off (default: shown on a terminal or in Jupyter).
        variants : bool, default True
            Run qualifying trials as compiled variant passes (``docs/how-to/sweep.md``); False:
            one backtest per trial. The results are the same.

        Returns
        -------
        SweepResult

        Raises
        ------
        ml4t_pipeline.lib.sweep.runner.SweepError
            The data preparation failed, an unknown backend, or Ray is not installed.
        ml4t_pipeline.lib.output.OutputInUseError
            Another sweep (or run) holds the folder's lock ``<output>.lock``; its pid is in the
            message. Nothing is computed.
        ValueError
            ``workers`` below 1.
        """
        backend, workers = self.backend_and_workers(backend, workers)
        out = Path(output)
        title = f"sweep {self.name}"
        with sweep_lock(out):  # the trials and the outputs, as one sweep into the folder
            with progress(f"{title}: preparing data", total=len(self), force=show_progress) as bar:

                def prepared(pending: int, total: int) -> None:
                    bar.update(f"{title}: trials", total=total)
                    bar.advance(total - pending)

                run = run_sweep(
                    self._sweep,
                    out,
                    backend=backend,
                    workers=workers,
                    ray_address=ray_address or self._sweep.spec.ray_address,
                    retry_failed=retry_failed,
                    on_prepared=prepared,
                    on_trial=lambda record: bar.advance(),
                    hold_lock=False,
                    prepare=prepare_data,
                    variants=variants,
                )
            from ml4t_pipeline.lib.sweep.results import write_outputs  # scipy: import on use

            outputs = write_outputs(self._sweep, run, out)
        result = SweepResult(out, run, outputs["table"], outputs["summary"])
        if self._sweep.base.tracking.mlflow is not None:  # one parent MLflow run, a child per trial
            from ml4t_pipeline.defs.io_managers import default_storage_dir
            from ml4t_pipeline.lib import tracking

            parent = tracking.track_sweep(
                self._sweep, outputs["summary"], outputs["table"], storage_dir=default_storage_dir()
            )
            result.mlflow_run_id = None if parent is None else parent.run_id
        return result

    def __repr__(self) -> str:
        return f"Sweep({self.name!r}, {len(self)} trials, paths {self._sweep.spec.paths()})"


class SweepResult:
    """What :meth:`Sweep.run` produced; the same as the files in its folder.

    Attributes
    ----------
    output : Path
        The sweep folder (``sweep_results.parquet``, ``sweep_summary.json``,
        ``sweep_report.html``, ``trials/``).
    run : SweepRun
        The runner's account (records, computed/reused counts, wall times, backend).
    table : pl.DataFrame
        ``sweep_results.parquet``: one row per trial (``trial``, a column per swept path, the
        metrics, ``hash``, ``status``, ``seconds``, ``error``).
    summary : dict
        ``sweep_summary.json``: counts, best trial, Deflated Sharpe Ratio, PBO, PSR and minimum
        track record length, SPA / Reality Check / StepM, adjusted p-value counts, walk-forward,
        gates and verdict, lineage.
    mlflow_run_id : str or None
        The sweep's parent MLflow run (children: one per trial) when the base experiment sets
        ``tracking.mlflow``; None otherwise.
    """

    def __init__(
        self, output: Path, run: SweepRun, table: pl.DataFrame, summary: dict[str, Any]
    ) -> None:
        self.output = output
        self.run = run
        self.table = table
        self.summary = summary
        self.mlflow_run_id: str | None = None

    @property
    def best(self) -> dict[str, Any] | None:
        """The best trial by Sharpe (``trial``, ``params``, ``sharpe``), None if none succeeded."""
        best: dict[str, Any] | None = self.summary["best_trial"]
        return best

    @property
    def deflated_sharpe(self) -> float | None:
        """The best trial's Deflated Sharpe Ratio (a probability; Bailey & López de Prado 2014).

        None when it cannot be computed (the reason is in ``summary["deflated_sharpe"]``).
        """
        value: float | None = self.summary["deflated_sharpe"].get("dsr")
        return value

    @property
    def pbo(self) -> float | None:
        """Probability of Backtest Overfitting by CSCV (Bailey, Borwein, López de Prado & Zhu
        2015), a fraction in [0, 1]; None when it cannot be computed (reason in the summary)."""
        value: float | None = self.summary["pbo"].get("pbo")
        return value

    @property
    def spa_pvalue(self) -> float | None:
        """Hansen's SPA p-value of "no trial beats cash" (``arch.bootstrap``); None when not
        computed (the reason is in ``summary["spa"]``)."""
        value: float | None = self.summary["spa"].get("spa_pvalue")
        return value

    @property
    def verdict(self) -> str:
        """The gates' verdict line, e.g. ``"1 of 3 gates fail (passed: ...; failed: ...)"``."""
        return str(self.summary["verdict"])

    @property
    def walk_forward(self) -> dict[str, Any] | None:
        """``summary["walk_forward"]`` (folds, chosen trials, IS vs OOS, degradation ratio), or
        None when the sweep file has no ``walk_forward``."""
        section: dict[str, Any] | None = self.summary.get("walk_forward")
        return section

    @property
    def report_path(self) -> Path:
        """``sweep_report.html`` (heatmap, Sharpe distribution, top equity curves)."""
        return self.output / "sweep_report.html"

    def returns(self, trial: int) -> pl.DataFrame:
        """One trial's per-bar ``timestamp`` (UTC), ``return`` (fraction) and ``equity``
        (currency).

        Raises
        ------
        KeyError
            No such trial, or the trial failed (its ``error`` is in :attr:`table`).
        """
        rows = self.table.filter(pl.col("trial") == trial)
        if rows.height == 0:
            raise KeyError(f"no trial {trial}; trials are 0..{self.table.height - 1}")
        row = rows.row(0, named=True)
        if row["status"] != "ok":
            raise KeyError(f"trial {trial} failed: {row['error']}")
        return TrialStore(self.output).load_returns(row["hash"])

    def _repr_html_(self) -> str:
        s = self.summary
        best = self.best
        cells = [
            ("trials", f"{s['n_trials']} ({s['n_ok']} ok, {s['n_failed']} failed)"),
            ("computed / reused", f"{s['n_computed']} / {s['n_reused']}"),
            ("best trial", "n/a" if best is None else f"{best['trial']} {best['params']}"),
            ("best Sharpe", _fmt(None if best is None else best["sharpe"])),
            ("deflated Sharpe", _fmt(self.deflated_sharpe)),
            ("PBO", _fmt(self.pbo)),
            ("SPA p-value", _fmt(self.spa_pvalue)),
            ("verdict", self.verdict),
            ("folder", str(self.output)),
        ]
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in cells
        )
        return f"<b>Sweep {html.escape(self.run_name)}</b><table>{body}</table>"

    @property
    def run_name(self) -> str:
        """The sweep's name as recorded in the summary."""
        return str(self.summary.get("sweep", self.output.name))

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"SweepResult({s['n_trials']} trials, {s['n_ok']} ok, deflated Sharpe "
            f"{_fmt(self.deflated_sharpe)}, PBO {_fmt(self.pbo)}, folder {str(self.output)!r})"
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def add_sweep_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand to the ``ml4t`` parser's subparsers ``sub``."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "sweep", help="run a parameter sweep (grid or random) with DSR and PBO across trials"
    )
    parser.add_argument("config", help="experiment file (YAML or JSON) with a sweep: block")
    parser.add_argument("--output", "-o", required=True, help="sweep folder (resumed if it exists)")
    parser.add_argument(
        "--backend",
        choices=["serial", "processes", "ray"],
        default=None,
        help="where the trials run (default: the file's sweep.backend, else serial)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel workers (default: file, else CPUs)"
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to send the data and trials to (default: the file's "
        "sweep.ray_address, else $RAY_ADDRESS, else a local Ray on 127.0.0.1)",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="run trials again whose record is 'failed'"
    )
    parser.add_argument(
        "--no-variants",
        dest="variants",
        action="store_false",
        help="one backtest per trial, no compiled variant passes (the same results, slower)",
    )
    parser.set_defaults(func=cmd_sweep)
    return parser


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the ``sweep`` subcommand; returns the exit code."""
    from ml4t_pipeline.config import ConfigError

    try:
        sweep = Sweep.from_file(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        backend, workers = sweep.backend_and_workers(args.backend, args.workers)
    except ValueError as exc:
        print(f"error: --workers/--backend: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output)
    print(f"sweep {sweep.name}: {len(sweep)} trials, backend {backend}"
          + ("" if backend == "serial" else f" x{workers}"), file=sys.stderr)  # fmt: skip
    if backend == "ray":
        address = (
            args.ray_address or sweep.sweep_file.spec.ray_address or os.environ.get("RAY_ADDRESS")
        )
        print(
            f"sweep {sweep.name}: the prepared data and the trials go to the Ray cluster at "
            f"{address}"
            if address
            else f"sweep {sweep.name}: on a local Ray listening on 127.0.0.1 only",
            file=sys.stderr,
        )
    try:
        result = sweep.run(
            out,
            backend=backend,
            workers=workers,
            ray_address=args.ray_address,
            retry_failed=args.retry_failed,
            variants=args.variants,
        )
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    run, summary = result.run, result.summary
    print(
        f"sweep {sweep.name}: {summary['n_trials']} trials ({summary['n_ok']} ok, "
        f"{summary['n_failed']} failed; {summary['n_computed']} computed now, "
        f"{summary['n_reused']} reused) in {run.seconds:.1f} s "
        f"+ {run.prepare_seconds:.1f} s data preparation"
    )
    if run.variant_trials:  # docs/how-to/sweep.md: many variants in one compiled pass
        print(f"  variant pass  {run.variant_trials} of {run.computed} computed trials")
    best = summary["best_trial"]
    if best is not None:
        params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
        print(f"  best trial    {best['trial']} ({params}): Sharpe {best['sharpe']:.3f}")
    dsr, pbo = summary["deflated_sharpe"], summary["pbo"]
    if dsr.get("dsr") is not None:
        print(
            f"  deflated SR   {dsr['dsr']:.3f} (threshold Sharpe "
            f"{dsr['expected_max_sharpe_annual']:.3f} for {dsr['n_trials']} trials)"
        )
    else:
        print(f"  deflated SR   n/a ({dsr.get('reason')})")
    print(f"  PBO           {pbo['pbo']:.3f}" if pbo.get("pbo") is not None
          else f"  PBO           n/a ({pbo.get('reason')})")  # fmt: skip
    psr, spa, mt = summary["psr"], summary["spa"], summary["multiple_testing"]
    if psr.get("psr") is not None:
        trl = psr["min_track_record_length"]
        print(
            f"  PSR (SR > 0)  {psr['psr']:.3f}; minimum track record "
            + ("n/a (no edge)" if trl is None else f"{trl:.0f} bars ({psr['n_periods']} here)")
        )
    if spa.get("spa_pvalue") is not None:
        print(
            f"  SPA p-value   {spa['spa_pvalue']:.3f} (Reality Check "
            f"{spa['reality_check_pvalue']:.3f}; StepM finds {len(spa['stepm_superior'])} "
            "trial(s) better than cash)"
        )
    else:
        print(f"  SPA p-value   n/a ({spa.get('reason')})")
    if "n_significant_holm" in mt:
        print(
            f"  p <= {mt['alpha']:g}      {mt['n_significant']} trials raw, "
            f"{mt['n_significant_holm']} after Holm, {mt['n_significant_by']} after BY"
        )
    wf = summary.get("walk_forward")
    if wf is not None:
        if wf.get("reason"):
            print(f"  walk-forward  n/a ({wf['reason']})")
        else:
            ratio = wf["degradation_ratio"]
            print(
                f"  walk-forward  {wf['n_folds']} folds: OOS Sharpe {_fmt(wf['oos']['sharpe'])}, "
                f"IS Sharpe {_fmt(wf['is']['sharpe'])}, degradation ratio {_fmt(ratio)}"
            )
    print(f"  verdict       {summary['verdict']}")
    print(f"report: {(out / 'sweep_report.html').resolve()}")
    return 0 if summary["n_ok"] else 1
