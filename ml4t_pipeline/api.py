"""The Python API for notebooks and scripts: ``Experiment(...).run()`` → :class:`ExperimentResult`.

An :class:`Experiment` is one experiment config (the same YAML/JSON file ``ml4t run`` takes, or
the same pydantic :class:`~ml4t_pipeline.config.ExperimentConfig` built in code). Running it
goes through **the same code path as** ``ml4t run``: the asset graph is materialized in-process
by :func:`ml4t_pipeline.runner.run_to_folder` and the output folder holds the same files. The
result object reads them back as polars frames and draws the figures.

Example
-------
>>> from ml4t_pipeline import Experiment
>>> exp = Experiment.from_file("configs/demo.yaml")      # doctest: +SKIP
>>> result = exp.run()                                   # doctest: +SKIP
>>> result.metrics["sharpe"], result.trades.height       # doctest: +SKIP

Where things go
---------------
- ``output=None`` (default): the run is written to a new temporary folder that lives as long
  as the result object (it is deleted when the result is garbage-collected or
  :meth:`ExperimentResult.cleanup` is called). Pass ``output="out/demo"`` to keep the files.
- A config built in code is handed to the run as the validated object itself, under its
  ``name`` (the Dagster partition key); no file is written. ``run.json``
  records ``config_path: null`` and the SHA-256 of the config's canonical JSON, and the
  report's lineage says "built in code". To keep the config beside the results, write it
  yourself: :meth:`Experiment.save` (a YAML file ``ml4t run`` takes as it is).
- Relative data paths resolve against ``ML4T_DATA_ROOT`` exactly as for ``ml4t run``.
- With ``DAGSTER_HOME`` set the run is recorded in that Dagster instance (visible in the UI).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import tempfile
import warnings
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter, StrMethodFormatter
from pydantic import ValidationError

from engine.metrics import HEADLINE_METRIC_KEYS
from ml4t_pipeline.config import (
    CONFIG_SUFFIXES,
    ConfigError,
    ExperimentConfig,
    load_config,
    validate_config,
)
from ml4t_pipeline.lib.progress import progress
from ml4t_pipeline.lib.report import format_metric

__all__ = ["HEADLINE_METRICS", "Experiment", "ExperimentFailed", "ExperimentResult"]

HEADLINE_METRICS: tuple[str, ...] = HEADLINE_METRIC_KEYS
"""The metrics shown by :meth:`ExperimentResult._repr_html_` (all of them are in ``metrics``)."""

_YAML_SUFFIXES = (".yaml", ".yml")
_UNAWAITED_SHUTDOWN = "coroutine 'BaseEventLoop.shutdown_asyncgens' was never awaited"


class ExperimentFailed(RuntimeError):
    """Raised by :meth:`Experiment.run` when a step or a blocking check failed.

    The message lists each failed check with its offending rows, and each failed step with
    its error, as ``ml4t run`` prints them.
    """


class Experiment:
    """One experiment, ready to run through the pipeline.

    Parameters
    ----------
    config : ExperimentConfig
        The validated experiment (see :mod:`ml4t_pipeline.config`).
    path : str or Path, optional
        The file the config was read from (YAML or JSON); runs use that file as it is
        (partition key = its stem, as with ``ml4t run``). Without it (a config built in code)
        runs are handed the config object itself; nothing is written.

    Raises
    ------
    ConfigError
        A strategy, rule or cost model the engine cannot build (checked exactly as
        :func:`~ml4t_pipeline.config.load_config` checks a file).

    Examples
    --------
    >>> from ml4t_pipeline import Experiment
    >>> from ml4t_pipeline.config import ExperimentConfig
    >>> exp = Experiment(ExperimentConfig(name="tiny", strategy={"type": "TopN", "n": 2}))
    >>> exp.name
    'tiny'
    """

    def __init__(
        self, config: ExperimentConfig, *, path: str | Path | None = None, _validated: bool = False
    ) -> None:
        if not isinstance(config, ExperimentConfig):
            raise TypeError(
                f"Experiment needs an ExperimentConfig, got {type(config).__name__}; "
                "use Experiment.from_dict or Experiment.from_file"
            )
        self.path = Path(path) if path is not None else None
        if self.path is None and not _validated:
            # The same validation as a file, from the object's own plain data (this is also
            # what the run's resource reads back, so a config that cannot make the round trip
            # is refused here, not mid-run).
            config = validate_config(_plain(config), source="Experiment(config)")
        self.config = config

    @property
    def name(self) -> str:
        """The experiment's name (``config.name``)."""
        return self.config.name

    @classmethod
    def from_file(cls, path: str | Path) -> Experiment:
        """Read an experiment file (YAML or JSON, as :func:`load_config` reads it).

        Runs use the file as it is (partition key = its stem, lineage names the file), unless
        a sibling of the same stem comes first in ``ml4t run``'s lookup (``demo.yaml`` beside
        ``demo.json``): then the validated config is handed to the run as an object.

        Raises
        ------
        ConfigError
            Missing file, unreadable content, or a schema error naming the key.
        """
        path = Path(path)
        cfg = load_config(path)
        # The file runs as it is (partition key = its stem, as with `ml4t run`) when it is the
        # one its folder resolves that stem to; one shadowed by a sibling of the same stem
        # (demo.json beside demo.yaml) runs as the config object, under cfg.name.
        siblings = (path.with_suffix(suffix) for suffix in CONFIG_SUFFIXES)
        first = next((s for s in siblings if s.is_file()), None)
        if first is not None and first.resolve() == path.resolve():
            return cls(cfg, path=path)
        return cls(cfg, _validated=True)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Experiment:
        """Build an experiment from a plain mapping with the sections of an experiment file.

        Raises
        ------
        ConfigError
            Unknown keys or bad values (the message names the key, e.g.
            ``execution.fil: Extra inputs are not permitted``), or values that are not plain
            data (str, numbers, bools, lists, dicts).
        """
        if not isinstance(raw, Mapping):
            raise ConfigError(f"from_dict needs a mapping, got {type(raw).__name__}")
        try:
            plain = json.loads(json.dumps(dict(raw)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"from_dict: not plain data: {exc}") from exc
        return cls(validate_config(plain, source="from_dict"), _validated=True)

    def to_yaml(self) -> str:
        """The config as YAML text, with the file's key names (``class``, not ``class_``)."""
        return yaml.safe_dump(_plain(self.config), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        """Write the config as a YAML file, a record of what ran (``ml4t run PATH`` runs it).

        Nothing else writes a config file: runs of a config built in code are handed the
        object itself. Parent folders are created; an existing file is replaced.

        Parameters
        ----------
        path : str or Path
            The file to write (``.yaml`` or ``.yml``).

        Returns
        -------
        Path
            ``path``.

        Raises
        ------
        ConfigError
            ``path`` does not end in ``.yaml`` / ``.yml``.
        """
        path = Path(path)
        if path.suffix not in _YAML_SUFFIXES:
            raise ConfigError(f"save: {path} must end in .yaml or .yml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path

    def run(
        self,
        output: str | Path | None = None,
        *,
        validate: bool = False,
        show_progress: bool | None = None,
        start: date | datetime | str | None = None,
        end: date | datetime | str | None = None,
    ) -> ExperimentResult:
        """Materialize the experiment and return its outputs.

        Parameters
        ----------
        output : str or Path, optional
            Output folder (the files of ``ml4t run --output``). ``None``: a temporary folder
            kept alive by the returned result.
        validate : bool, default False
            Also run VectorBT and Backtrader and compare fills (needs the ``validation``
            extra), like ``ml4t run --validate``.
        show_progress : bool, optional
            Force the progress display on or off (default: shown on a terminal or in Jupyter,
            silent in CI and tests; see :mod:`ml4t_pipeline.lib.progress`).
        start, end : date, datetime or ISO string, optional
            The backtest window (:class:`~ml4t_pipeline.config.BacktestConfig`): given, they
            replace the config's ``backtest.start`` / ``backtest.end`` for this run (handed to
            the run as a config object, under ``cfg.name``). Data before ``start`` still feeds
            the features and the model.

        Returns
        -------
        ExperimentResult

        Raises
        ------
        ExperimentFailed
            A failed step or blocking check (e.g. invalid price rows under
            ``invalid_rows: fail``); the message names the offending rows.
        ConfigError, FileNotFoundError
            A config or data path problem, as ``ml4t run`` reports them.
        """
        if start is not None or end is not None:
            window = self.config.backtest.model_dump()
            window.update({k: v for k, v in (("start", start), ("end", end)) if v is not None})
            raw = self.config.model_dump(by_alias=True)
            try:
                cfg = ExperimentConfig.model_validate({**raw, "backtest": window})
            except ValidationError as exc:
                raise ConfigError(f"run(start=, end=): {exc}") from None
            return Experiment(cfg).run(output, validate=validate, show_progress=show_progress)
        keep: list[tempfile.TemporaryDirectory[str]] = []
        experiment = self.path if self.path is not None else self.config
        if output is None:
            folder = tempfile.TemporaryDirectory(prefix=f"ml4t-run-{self.name}-")
            keep.append(folder)
            out = Path(folder.name) / self.name
        else:
            out = Path(output)
        with progress(f"experiment {self.name}: running the asset graph", force=show_progress):
            try:
                out = _run_to_folder(experiment, out, validate=validate)
            except BaseException:
                for folder in keep:
                    folder.cleanup()
                raise
        return ExperimentResult(out, self.config, _keep=keep)

    def __repr__(self) -> str:
        source = str(self.path) if self.path is not None else "built in code"
        return f"Experiment(name={self.name!r}, source={source!r})"


def _plain(cfg: ExperimentConfig) -> dict[str, Any]:
    # The config as plain data under the file's key names (aliases such as ``class``).
    plain: dict[str, Any] = cfg.model_dump(mode="json", by_alias=True)
    return plain


def _run_to_folder(experiment: Path | ExperimentConfig, output: Path, *, validate: bool) -> Path:
    """``ml4t run``'s code path: materialize the graph and publish the output files."""
    from ml4t_pipeline import runner  # imports Dagster: only when something runs

    with warnings.catch_warnings():
        # Dagster's in-process executor cannot close its event loop's async generators inside
        # a running loop (Jupyter's); the coroutine it leaves behind is harmless.
        warnings.filterwarnings("ignore", _UNAWAITED_SHUTDOWN, RuntimeWarning)
        outcome = runner.run_to_folder(experiment, output, validate=validate)
    if not outcome.success:
        source = experiment if isinstance(experiment, Path) else "built in code"
        raise ExperimentFailed(
            f"experiment {outcome.experiment!r} ({source}) failed; the output folder "
            f"{outcome.output} was left as it was:\n{outcome.failure}"
        )
    for text in outcome.warnings:
        warnings.warn(text, UserWarning, stacklevel=3)
    return outcome.output


class ExperimentResult:
    """The outputs of one run, read from its output folder (the files of ``ml4t run``).

    Frames are read on first access and cached.

    Attributes
    ----------
    output : Path
        The output folder.
    config : ExperimentConfig
        The experiment that produced it.
    """

    def __init__(
        self,
        output: str | Path,
        config: ExperimentConfig,
        *,
        _keep: list[tempfile.TemporaryDirectory[str]] | None = None,
    ) -> None:
        self.output = Path(output)
        self.config = config
        self._keep = list(_keep or [])
        self._cache: dict[str, Any] = {}

    @classmethod
    def from_folder(cls, output: str | Path, config: ExperimentConfig) -> ExperimentResult:
        """Open an existing ``ml4t run`` output folder (nothing is run)."""
        folder = Path(output)
        if not (folder / "trades.parquet").is_file():
            raise FileNotFoundError(
                f"{folder}: not an `ml4t run` output folder (no trades.parquet)"
            )
        return cls(folder, config)

    def _frame(self, name: str) -> pl.DataFrame:
        if name not in self._cache:
            self._cache[name] = pl.read_parquet(self.output / f"{name}.parquet")
        frame: pl.DataFrame = self._cache[name]
        return frame

    @property
    def trades(self) -> pl.DataFrame:
        """One row per round trip (``trades.parquet``; columns in the README's output table)."""
        return self._frame("trades")

    @property
    def fills(self) -> pl.DataFrame:
        """One row per fill, commission and slippage separate (``fills.parquet``)."""
        return self._frame("fills")

    @property
    def portfolio_states(self) -> pl.DataFrame:
        """One row per bar: equity, cash, positions value, leverage, return, drawdown."""
        return self._frame("portfolio_states")

    @property
    def rejections(self) -> pl.DataFrame:
        """Orders rejected or cancelled, with the reason (``rejections.parquet``)."""
        return self._frame("rejections")

    @property
    def signals(self) -> pl.DataFrame:
        """The scores used, with ``available_at`` (``signals.parquet``)."""
        return self._frame("signals")

    @property
    def prices_quarantine(self) -> pl.DataFrame:
        """Price rows set aside under ``invalid_rows: quarantine``, with ``reason``."""
        return self._frame("prices_quarantine")

    @property
    def metrics(self) -> dict[str, Any]:
        """Headline metrics (``metrics.json``: Sharpe, Sortino, CAGR, max drawdown, ...).

        Formulas: :func:`engine.compute_metrics` and
        :func:`ml4t_pipeline.lib.performance.compute_performance`. A value that is undefined
        (e.g. a ratio with a zero denominator) is NaN.
        """
        if "metrics" not in self._cache:
            raw = json.loads((self.output / "metrics.json").read_text())
            self._cache["metrics"] = {k: math.nan if v is None else v for k, v in raw.items()}
        metrics: dict[str, Any] = self._cache["metrics"]
        return metrics

    @property
    def lineage(self) -> dict[str, Any]:
        """Run id, config hash, code version and input data versions (``lineage.json``)."""
        path = self.output / "lineage.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def report_path(self) -> Path:
        """Path of the self-contained HTML report."""
        return self.output / "report.html"

    def report(self, *, as_path: bool = False) -> str | Path:
        """The HTML report: its text (default) or, with ``as_path=True``, its path.

        In Jupyter, ``IPython.display.HTML(result.report())`` shows it inline.
        """
        return self.report_path if as_path else self.report_path.read_text()

    def plot_equity(self, ax: Axes | None = None) -> Figure:
        """Equity curve (currency) against time (UTC).

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Draw into this axes (its figure is returned); default a new 9 × 4 in figure.

        Returns
        -------
        matplotlib.figure.Figure
        """
        fig, ax = _axes(ax)
        states = self.portfolio_states
        ax.plot(_times(states["timestamp"]), states["equity"].to_numpy(), color="#1f6feb")
        ax.set_ylabel("Equity")
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.set_title(f"{self.config.name}: equity")
        _date_axis(ax)
        return fig

    def plot_drawdown(self, ax: Axes | None = None) -> Figure:
        """Underwater curve: drawdown = equity / running peak − 1 (fraction, ≤ 0).

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Draw into this axes (its figure is returned); default a new 9 × 4 in figure.

        Returns
        -------
        matplotlib.figure.Figure
        """
        fig, ax = _axes(ax)
        states = self.portfolio_states
        x, dd = _times(states["timestamp"]), states["drawdown"].to_numpy()
        ax.fill_between(x, dd, 0.0, color="#d1242f", alpha=0.35, linewidth=0)
        ax.plot(x, dd, color="#d1242f", linewidth=0.8)
        ax.set_ylabel("Drawdown")
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
        ax.set_title(f"{self.config.name}: drawdown")
        _date_axis(ax)
        return fig

    def cleanup(self) -> None:
        """Delete the temporary folders this result keeps alive (``output=None`` runs)."""
        for folder in self._keep:
            folder.cleanup()
        self._keep.clear()
        self._cache.clear()

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
            f"<td style='text-align:right'>{html.escape(format_metric(name, self.metrics[name]))}"
            "</td></tr>"
            for name in HEADLINE_METRICS
            if name in self.metrics
        )
        fig = Figure(figsize=(4.5, 2.2), dpi=80, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        states = self.portfolio_states
        ax.plot(_times(states["timestamp"]), states["equity"].to_numpy(), color="#1f6feb")
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.grid(True, alpha=0.3)
        _date_axis(ax)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
        png = base64.b64encode(buffer.getvalue()).decode("ascii")
        title = html.escape(f"experiment {self.config.name}")
        where = html.escape(str(self.output))
        return (
            f"<div><strong>{title}</strong> <small>({where})</small>"
            "<div style='display:flex;gap:1em;align-items:flex-start'>"
            f"<table>{rows}</table>"
            f"<img alt='equity curve' src='data:image/png;base64,{png}'></div></div>"
        )

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={format_metric(k, self.metrics[k])}"
            for k in ("total_return", "sharpe", "max_drawdown", "n_trades")
            if k in self.metrics
        )
        return f"ExperimentResult({self.config.name!r}, {shown}, output={str(self.output)!r})"


class _Figure(Figure):
    """A matplotlib Figure that shows itself as a PNG in Jupyter, with or without pyplot."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", metadata={"Software": None})
        return buffer.getvalue()


def _axes(ax: Axes | None) -> tuple[Figure, Axes]:
    if ax is not None:
        figure = ax.get_figure()
        if not isinstance(figure, Figure):
            raise ValueError("ax must belong to a matplotlib Figure")
        return figure, ax
    fig = _Figure(figsize=(9, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    new = fig.add_subplot()
    new.grid(True, alpha=0.3)
    return fig, new


def _times(timestamps: pl.Series) -> Any:
    if isinstance(timestamps.dtype, pl.Datetime) and timestamps.dtype.time_zone is not None:
        timestamps = timestamps.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return timestamps.to_numpy()


def _date_axis(ax: Axes) -> None:
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
