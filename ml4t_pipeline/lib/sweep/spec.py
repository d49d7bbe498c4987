"""Sweep specification: the ``sweep:`` block of an experiment file, expanded into trials.

A sweep file is an ordinary experiment file (YAML or JSON) with one extra top-level block::

    sweep:
      grid:                              # every combination (Cartesian product)
        strategy.n: [10, 25, 50]
        strategy.rebalance_every: [1, 5]
        risk_rules[0].stop_pct: [0.03, 0.05]
      axes: [strategy.n, "risk_rules[0].stop_pct"]   # heatmap axes of the report (optional)

or, for a random search::

    sweep:
      random:
        n_trials: 40
        seed: 7
        params:
          strategy.n: {type: int, low: 5, high: 50}          # inclusive bounds
          risk_rules[0].stop_pct: {type: uniform, low: 0.02, high: 0.10}
          execution.commission.rate: {type: loguniform, low: 0.0001, high: 0.005}
          strategy.rebalance_every: [1, 5, 21]               # a list is a uniform choice

A walk-forward evaluation sweeps the backtest window over the same prepared data (every trial
shares one panel; features and the model use the data before each window's start)::

    sweep:
      grid:
        backtest:                        # one trial per test window (start and end paired)
          - {start: 2015-01-01, end: 2015-12-31}
          - {start: 2016-01-01, end: 2016-12-31}
          - {start: 2017-01-01, end: 2017-12-31}
        strategy.n: [10, 25]

``backtest.start`` and ``backtest.end`` are paths too (a grid over both is their Cartesian
product, and a trial whose start is after its end is refused when the sweep loads). Swept
dates and datetimes are kept in the trials' ``params`` as ISO strings.

A *path* names one config field with dots for mapping keys and ``[i]`` for list items. Every
path must exist in the base experiment (fields left at their defaults count) or be a key of a
free-form mapping such as ``execution.commission`` that the engine then checks. Every trial's
config is validated exactly as ``ml4t run`` validates a file (pydantic models, then a trial
build of each engine component) before any trial runs; the first bad value stops the sweep with
the path and value named.

The ``sweep`` block is removed before the rest of the file is validated as an
:class:`~ml4t_pipeline.config.ExperimentConfig`, so the base experiment obeys the same schema
as any other experiment file.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ml4t_pipeline.config import (
    ConfigError,
    ExperimentConfig,
    _check_engine_specs,
    read_config_file,
)

__all__ = [
    "CPCVSpec",
    "Choice",
    "GatesSpec",
    "StatsSpec",
    "WalkForwardSpec",
    "IntRange",
    "LogUniform",
    "RandomSpec",
    "SweepFile",
    "SweepSpec",
    "Trial",
    "Uniform",
    "canonical_json",
    "data_key",
    "expand_trials",
    "get_path",
    "load_sweep_file",
    "parse_path",
    "set_path",
    "sweep_from_mapping",
]

MAX_TRIALS = 100_000
_TOKEN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Uniform(_Strict):
    """Continuous uniform draw on ``[low, high)``."""

    type: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if not self.high > self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self


class LogUniform(_Strict):
    """Log-uniform draw: ``exp(U[ln low, ln high))``; both bounds positive."""

    type: Literal["loguniform"]
    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        if not self.high > self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self


class IntRange(_Strict):
    """Integer draw, uniform on ``low..high`` inclusive."""

    type: Literal["int"]
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be at least low ({self.low})")
        return self


class Choice(_Strict):
    """Uniform choice among ``values`` (a plain list in the file means the same)."""

    type: Literal["choice"]
    values: list[Any] = Field(min_length=1)


Distribution = Annotated[Uniform | LogUniform | IntRange | Choice, Field(discriminator="type")]


class RandomSpec(_Strict):
    """Random search: ``n_trials`` draws from ``params`` with ``numpy.random.default_rng(seed)``.

    Identical draws are kept once (so fewer than ``n_trials`` trials may result when the
    space is small); the draw order is deterministic for a given seed and file.
    """

    n_trials: int = Field(ge=1, le=MAX_TRIALS)
    seed: int = 0
    params: dict[str, Distribution] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _lists_are_choices(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("params"), dict):
            raw = dict(raw)
            raw["params"] = {
                k: ({"type": "choice", "values": v} if isinstance(v, list) else v)
                for k, v in raw["params"].items()
            }
        return raw


class StatsSpec(_Strict):
    """``sweep.stats``: settings of the multiple-testing statistics.

    Attributes
    ----------
    bootstrap_reps : int
        Replications of the SPA / Reality Check / StepM bootstrap (``arch.bootstrap``); 0
        leaves those three tests out (the summary says so). Their cost grows with
        ``reps × T × N``: about 2–6 s per test for 1,000 trials of 1,259 bars at 1,000 reps.
    block_size : int, optional
        Mean block length of the stationary bootstrap in bars (default ``sqrt(T)``).
    seed : int
        Seed of the bootstrap (same seed and returns, same p-values).
    alpha : float
        Significance level of StepM, the adjusted p-values' counts and the minimum track
        record length.
    """

    bootstrap_reps: int = Field(1000, ge=0, le=100_000)
    block_size: int | None = Field(None, ge=1)
    seed: int = 0
    alpha: float = Field(0.05, gt=0, lt=1)

    @model_validator(mode="after")
    def _enough_reps(self) -> StatsSpec:
        if 0 < self.bootstrap_reps < 10:
            raise ValueError(f"bootstrap_reps must be 0 (off) or >= 10, got {self.bootstrap_reps}")
        return self


class GatesSpec(_Strict):
    """``sweep.gates``: thresholds of the ``sweep_results`` asset checks.

    A gate whose statistic cannot be computed (too few ``ok`` trials or bars, bootstrap
    off) fails, saying why. Failures warn unless ``blocking`` is true: then they fail the
    Dagster step (severity ERROR on blocking checks) after the results are stored.

    Attributes
    ----------
    best_trial_dsr_at_least : float
        ``best_trial_dsr_at_least`` passes when the best trial's Deflated Sharpe Ratio is at
        least this (default 0.95).
    pbo_at_most : float
        ``pbo_at_most`` passes when the probability of backtest overfitting is at most this
        (default 0.5).
    spa_pvalue_at_most : float
        ``spa_pvalue_at_most`` passes when Hansen's SPA p-value is at most this (default
        0.05): some trial beats cash after the search is accounted for.
    blocking : bool
        False (default): failed gates warn. True: they block.
    """

    best_trial_dsr_at_least: float = Field(0.95, ge=0, le=1)
    pbo_at_most: float = Field(0.5, ge=0, le=1)
    spa_pvalue_at_most: float = Field(0.05, ge=0, le=1)
    blocking: bool = False


_DURATION = re.compile(r"^\s*(\d+)\s*([dwmy])\s*$")
_UNIT_WORDS = {"d": "days", "w": "weeks", "m": "months", "y": "years"}

WF_SELECT = ("sharpe", "dsr", "psr", "sortino", "cagr", "calmar", "total_return")
"""What a walk-forward fold may select its variant by (the highest in-sample value wins)."""


class WalkForwardSpec(_Strict):
    """``sweep.walk_forward``: walk-forward optimisation over the swept variants.

    ``train``, ``test`` and ``step`` are bar counts (int) or calendar lengths (``"3y"``,
    ``"6m"``, ``"2w"``, ``"90d"``); all three in the same kind.

    Attributes
    ----------
    train, test, step : int or str
        In-sample window, out-of-sample window, and how far each fold moves.
    select : str
        The in-sample statistic the best variant is chosen by, one of :data:`WF_SELECT`
        (``dsr``: the PSR against the expected maximum Sharpe ratio of the fold's variants;
        ``psr``: against zero).
    anchored : bool
        True: every train window starts at the first bar (expanding); False: rolling.
    purge : int, optional
        Bars left out at the end of each train window before selecting, so no in-sample
        bar's label reaches into the test window. Default: the signal model's label horizon
        (``data.signals.horizon``) when the base experiment has one, else 0.
    embargo : int
        Further bars left out between the purge and the test window (default 0).
    """

    train: int | str
    test: int | str
    step: int | str | None = None
    select: str = "sharpe"
    anchored: bool = False
    purge: int | None = Field(None, ge=0)
    embargo: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> WalkForwardSpec:
        if self.select not in WF_SELECT:
            raise ValueError(f"select: {self.select!r} is not one of {list(WF_SELECT)}")
        values = [self.train, self.test] + ([self.step] if self.step is not None else [])
        kinds = set()
        for value in values:
            if isinstance(value, int):
                if value < 1:
                    raise ValueError(f"window lengths must be >= 1 bar, got {value}")
                kinds.add("bars")
            else:
                match = _DURATION.match(value)
                if match is None or int(match.group(1)) < 1:
                    raise ValueError(
                        f"window length {value!r}: give a bar count or <n>d/w/m/y (e.g. '3y')"
                    )
                kinds.add("calendar")
        if len(kinds) > 1:
            raise ValueError("train, test and step must all be bar counts or all calendar lengths")
        return self

    def offsets(self) -> tuple[Any, Any, Any]:
        """``(train, test, step)``: bar counts (int) or ``(n, unit)`` calendar lengths with unit
        ``days``, ``weeks``, ``months`` or ``years``; ``step`` defaults to ``test``."""
        step = self.step if self.step is not None else self.test
        return _length(self.train), _length(self.test), _length(step)


class CPCVSpec(_Strict):
    """``sweep.cpcv``: combinatorial purged cross-validation of the selection
    (:mod:`~ml4t_pipeline.lib.sweep.cpcv`; needs ``skfolio``, the ``research`` extra).

    Attributes
    ----------
    n_folds : int
        Contiguous groups of bars (≥ 3).
    n_test_folds : int
        Test groups per split (2 ≤ k < n_folds).
    select : str
        The in-sample statistic, as for ``walk_forward`` (:data:`WF_SELECT`).
    purge : int, optional
        Training bars dropped on both sides of each test group; default the signal model's
        label horizon (``data.signals.horizon``), else 0.
    embargo : int
        Further training bars dropped after each test group (default 0).
    """

    n_folds: int = Field(10, ge=3, le=64)
    n_test_folds: int = Field(2, ge=2)
    select: str = "sharpe"
    purge: int | None = Field(None, ge=0)
    embargo: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> CPCVSpec:
        if self.select not in WF_SELECT:
            raise ValueError(f"select: {self.select!r} is not one of {list(WF_SELECT)}")
        if self.n_test_folds >= self.n_folds:
            raise ValueError(
                f"n_test_folds ({self.n_test_folds}) must be below n_folds ({self.n_folds})"
            )
        import importlib.util

        if importlib.util.find_spec("skfolio") is None:
            raise ValueError(
                "needs skfolio (CombinatorialPurgedCV), which is not installed: "
                'pip install -e ".[research]"'
            )
        return self


def _length(value: int | str) -> int | tuple[int, str]:
    if isinstance(value, int):
        return value
    match = _DURATION.match(value)
    assert match is not None
    return int(match.group(1)), _UNIT_WORDS[match.group(2)]


class SweepSpec(_Strict):
    """The ``sweep:`` block: exactly one of ``grid`` and ``random``, plus report and run options.

    Attributes
    ----------
    grid : dict[str, list], optional
        Path → values; the trials are the Cartesian product in file order.
    random : RandomSpec, optional
        Random search.
    axes : list[str], optional
        Two swept paths for the report's Sharpe heatmap (default: the first two swept paths).
    backend : {"serial", "processes", "ray"}, optional
        Default execution backend (the command line's ``--backend`` wins).
    workers : int, optional
        Default number of workers.
    ray_address : str, optional
        A Ray cluster to connect to with ``backend: ray`` (``--ray-address`` wins; this wins
        over ``$RAY_ADDRESS``). The prepared data and the trials are sent to that cluster's
        hosts, so read a sweep file you did not write before running it. Unset (and no
        ``$RAY_ADDRESS``): a local Ray listening on 127.0.0.1 only.
    pbo_splits : int
        ``S`` of the CSCV estimate of the probability of backtest overfitting (even, ≥ 2).
    stats : StatsSpec
        Bootstrap settings of the multiple-testing statistics.
    gates : GatesSpec
        Thresholds of the ``sweep_results`` asset checks.
    walk_forward : WalkForwardSpec, optional
        Walk-forward optimisation over the variants (:mod:`~ml4t_pipeline.lib.sweep.walkforward`).
    cpcv : CPCVSpec, optional
        Combinatorial purged cross-validation of the selection (:mod:`~ml4t_pipeline.lib.sweep.
        cpcv`).
    """

    grid: dict[str, list[Any]] | None = None
    random: RandomSpec | None = None
    axes: list[str] | None = Field(None, min_length=1, max_length=2)
    backend: Literal["serial", "processes", "ray"] | None = None
    workers: int | None = Field(None, ge=1, le=1024)
    ray_address: str | None = None
    pbo_splits: int = Field(16, ge=2, le=32)
    stats: StatsSpec = Field(default_factory=StatsSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    walk_forward: WalkForwardSpec | None = None
    cpcv: CPCVSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SweepSpec:
        if (self.grid is None) == (self.random is None):
            raise ValueError("give exactly one of 'grid' and 'random'")
        if self.grid is not None:
            if not self.grid:
                raise ValueError("grid: needs at least one path")
            for path, values in self.grid.items():
                if not values:
                    raise ValueError(f"grid: {path}: needs at least one value")
            size = int(np.prod([len(v) for v in self.grid.values()], dtype=np.float64))
            if size > MAX_TRIALS:
                raise ValueError(f"grid: {size} combinations, more than {MAX_TRIALS}")
        if self.walk_forward is not None:
            windows = [p for p in self.paths() if p == "backtest" or p.startswith("backtest.")]
            if windows:
                raise ValueError(
                    f"walk_forward chooses the windows itself: do not also sweep {windows}"
                )
        if self.pbo_splits % 2:
            raise ValueError(f"pbo_splits must be even, got {self.pbo_splits}")
        for path in self.axes or []:
            if path not in self.paths():
                raise ValueError(f"axes: {path!r} is not a swept path (swept: {self.paths()})")
        return self

    def paths(self) -> list[str]:
        """The swept paths in file order."""
        if self.grid is not None:
            return list(self.grid)
        assert self.random is not None
        return list(self.random.params)


@dataclass(frozen=True)
class Trial:
    """One point of the sweep.

    Attributes
    ----------
    index : int
        Position in the expansion order (0-based).
    params : dict[str, Any]
        Swept path → value.
    config : ExperimentConfig
        The validated experiment of this trial.
    """

    index: int
    params: dict[str, Any]
    config: ExperimentConfig

    def config_json(self) -> str:
        """Canonical JSON of the trial's config without ``name``/``description`` (hash input)."""
        dump = self.config.model_dump(mode="json", exclude={"name", "description"})
        return canonical_json(dump)


@dataclass(frozen=True)
class SweepFile:
    """A loaded sweep file: the base experiment (``sweep`` block removed) and the block.

    Attributes
    ----------
    path : Path
        The file.
    raw : dict
        The file's mapping without ``sweep`` (``name`` defaulted to the file stem).
    base : ExperimentConfig
        The validated base experiment.
    spec : SweepSpec
        The validated ``sweep`` block.
    trials : list[Trial]
        Every trial, each config already validated.
    """

    path: Path
    raw: dict[str, Any]
    base: ExperimentConfig
    spec: SweepSpec
    trials: list[Trial] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The sweep's name: the file stem (its Dagster partition key)."""
        return self.path.stem


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def data_key(cfg: ExperimentConfig) -> str:
    """SHA-256 (16 hex digits) of a config's ``data`` section: trials sharing it share data."""
    text = canonical_json(cfg.data.model_dump(mode="json"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_path(path: str) -> list[str | int]:
    """Split ``risk_rules[0].stop_pct`` into ``["risk_rules", 0, "stop_pct"]``.

    Raises
    ------
    ValueError
        A path that is empty or not made of names, dots and ``[index]`` parts.
    """
    tokens: list[str | int] = []
    pos = 0
    text = path.strip()
    while pos < len(text):
        if tokens and text[pos] == ".":
            pos += 1
        match = _TOKEN.match(text, pos)
        if match is None or (match.group(1) and tokens and text[pos - 1] != "."):
            raise ValueError(f"sweep path {path!r} is malformed at character {pos}")
        tokens.append(match.group(1) if match.group(1) else int(match.group(2)))
        pos = match.end()
    if not tokens or not isinstance(tokens[0], str):
        raise ValueError(f"sweep path {path!r} must start with a field name")
    return tokens


def get_path(tree: Any, path: str) -> Any:
    """The value at ``path`` in a nested dict/list (KeyError/IndexError if absent)."""
    node = tree
    for token in parse_path(path):
        node = node[token]
    return node


def set_path(tree: dict[str, Any], path: str, value: Any, *, known: dict[str, Any]) -> None:
    """Set ``path`` in ``tree`` (in place), checking it against the full config ``known``.

    ``known`` is the base experiment with every default filled in: each part of the path
    except the last must exist there; the last must exist too unless its parent is a free-form
    mapping (``execution.commission``, a risk rule), which the engine validates later.

    Raises
    ------
    ValueError
        The path does not exist (the message names it and lists the keys that do).
    """
    tokens = parse_path(path)
    node: Any = tree
    ref: Any = known
    for depth, token in enumerate(tokens):
        last = depth == len(tokens) - 1
        where = _render(tokens[: depth + 1])
        if isinstance(token, int):
            if not isinstance(ref, list):
                raise ValueError(f"sweep path {path!r}: {_render(tokens[:depth])} is not a list")
            if token >= len(ref):
                raise ValueError(
                    f"sweep path {path!r}: {where} does not exist "
                    f"({_render(tokens[:depth])} has {len(ref)} items)"
                )
        else:
            if not isinstance(ref, dict):
                raise ValueError(f"sweep path {path!r}: {_render(tokens[:depth])} is not a mapping")
            if token not in ref and not (last and _free_form(tokens[:depth])):
                raise ValueError(
                    f"sweep path {path!r}: unknown field {where!r} (known: {sorted(ref)})"
                )
        if last:
            node[token] = copy.deepcopy(value)
            return
        ref = ref[token] if isinstance(token, int) or token in ref else {}
        if isinstance(token, int):
            node = node[token]
        else:
            if token not in node or node[token] is None:
                node[token] = copy.deepcopy(ref)
            node = node[token]


def _free_form(parent: list[str | int]) -> bool:
    # mappings whose keys the engine's registries check, not the pydantic models
    return parent in (["execution", "commission"], ["execution", "slippage"]) or (
        len(parent) == 2 and parent[0] == "risk_rules"
    )


def _render(tokens: list[str | int]) -> str:
    out = ""
    for token in tokens:
        out += f"[{token}]" if isinstance(token, int) else (f".{token}" if out else token)
    return out or "<root>"


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    raw = read_config_file(path)  # bounded: size, depth, values; no YAML aliases
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def _errors(exc: ValidationError, prefix: str = "") -> str:
    return "\n".join(
        f"  {prefix}{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
        for err in exc.errors()
    )


def load_sweep_file(path: str | Path) -> SweepFile:
    """Read a sweep file (YAML, or JSON by its ``.json`` suffix) and expand every trial.

    Returns
    -------
    SweepFile
        With ``trials`` filled in; each trial's config is validated.

    Raises
    ------
    ConfigError
        The file is missing or unreadable, has no ``sweep`` block, the block or the base
        experiment breaks its schema, a path does not exist, or a trial's value is refused
        (the message names the path and the value).
    """
    path = Path(path)
    return sweep_from_mapping(_read_mapping(path), path)


def sweep_from_mapping(mapping: dict[str, Any], path: str | Path) -> SweepFile:
    """:func:`load_sweep_file` for a mapping already in memory (the Python API).

    ``path`` stands for the file in messages and names the sweep (its stem); the mapping is
    copied, not changed.

    Raises
    ------
    ConfigError
        As :func:`load_sweep_file`.
    """
    path = Path(path)
    raw = copy.deepcopy(dict(mapping))
    if "sweep" not in raw:
        raise ConfigError(f"{path}: no 'sweep:' block (an experiment file? use `ml4t run`)")
    block = raw.pop("sweep")
    raw.setdefault("name", path.stem)
    try:
        spec = SweepSpec.model_validate(block)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid sweep block:\n{_errors(exc, 'sweep.')}") from exc
    try:
        base = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid base experiment:\n{_errors(exc)}") from exc
    _check_engine_specs(base, path)
    sweep = SweepFile(path=path, raw=raw, base=base, spec=spec)
    sweep.trials.extend(expand_trials(sweep))
    return sweep


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dates and datetimes (YAML reads ``2015-01-02`` as a date)
    become ISO strings, which the config models read back as the same date/datetime."""
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _points(spec: SweepSpec) -> list[dict[str, Any]]:
    if spec.grid is not None:
        names = list(spec.grid)
        return [
            dict(zip(names, _plain(list(combo)), strict=True))
            for combo in itertools.product(*spec.grid.values())
        ]
    assert spec.random is not None
    rng = np.random.default_rng(spec.random.seed)
    points: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(spec.random.n_trials):
        point = {name: _plain(_draw(dist, rng)) for name, dist in spec.random.params.items()}
        key = canonical_json(point)
        if key not in seen:
            seen.add(key)
            points.append(point)
    return points


def _draw(dist: Uniform | LogUniform | IntRange | Choice, rng: np.random.Generator) -> Any:
    if isinstance(dist, Uniform):
        return float(rng.uniform(dist.low, dist.high))
    if isinstance(dist, LogUniform):
        return float(np.exp(rng.uniform(np.log(dist.low), np.log(dist.high))))
    if isinstance(dist, IntRange):
        return int(rng.integers(dist.low, dist.high, endpoint=True))
    return copy.deepcopy(dist.values[int(rng.integers(len(dist.values)))])


def expand_trials(sweep: SweepFile) -> list[Trial]:
    """Every trial of ``sweep``, each config validated like an experiment file.

    Raises
    ------
    ConfigError
        An unknown path, or a value the config schema or the engine refuses; the message names
        the path, the value and the trial's other parameters. ``data.stream: monthly`` is
        refused (trials share one in-memory panel).
    """
    known = sweep.base.model_dump(mode="python")
    for name in sweep.spec.paths():
        try:
            set_path(copy.deepcopy(sweep.raw), name, None, known=known)
        except ValueError as exc:
            raise ConfigError(f"{sweep.path}: {exc}") from exc
    trials = []
    for index, point in enumerate(_points(sweep.spec)):
        raw = copy.deepcopy(sweep.raw)
        for name, value in point.items():
            set_path(raw, name, value, known=known)
        where = ", ".join(f"{k}={v!r}" for k, v in point.items())
        try:
            cfg = ExperimentConfig.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(
                f"{sweep.path}: trial {index} ({where}) is refused:\n{_errors(exc)}"
            ) from exc
        _check_engine_specs(cfg, f"{sweep.path} trial {index} ({where})")
        if cfg.data.stream == "monthly":
            raise ConfigError(
                f"{sweep.path}: trial {index} ({where}): data.stream 'monthly' is not available "
                "in a sweep: its trials share one in-memory panel per data section (the results "
                "equal a monthly run's); remove the key or set it to 'whole'"
            )
        trials.append(Trial(index=index, params=point, config=cfg))
    return trials
