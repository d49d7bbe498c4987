"""Data paths: the data root and the confinement of every data path of a config to it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ml4t_pipeline.config._base import (
    ALLOW_OUTSIDE_ROOT_ENV,
    DATA_ROOT_ENV,
    DEMO_PRICES,
    DataPathError,
)
from ml4t_pipeline.config.data import FileSignalsConfig

if TYPE_CHECKING:
    from ml4t_pipeline.config.experiment import ExperimentConfig


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """The data root, resolved (symlinks followed).

    ``data_root`` if given, else ``$ML4T_DATA_ROOT``, else the current directory. A relative
    root resolves against the current directory.
    """
    root = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV)
    return Path(root).expanduser().resolve() if root else Path.cwd().resolve()


def outside_root_allowed() -> bool:
    """True when ``$ML4T_ALLOW_OUTSIDE_DATA_ROOT`` is ``1``, ``true`` or ``yes``."""
    return os.environ.get(ALLOW_OUTSIDE_ROOT_ENV, "").strip().lower() in ("1", "true", "yes")


def _root_text(root: Path) -> str:
    env = os.environ.get(DATA_ROOT_ENV)
    origin = f"${DATA_ROOT_ENV}={env!r}" if env else f"${DATA_ROOT_ENV} unset: current directory"
    return f"{root} ({origin})"


def confine_data_path(
    value: str, *, field: str = "data path", data_root: str | Path | None = None
) -> Path:
    """Resolve a data path and check that it stays inside the data root.

    Relative paths join the root; ``~`` expands; the result is resolved with symlinks followed,
    so ``../`` and links pointing out are caught. The file need not exist.

    Parameters
    ----------
    value : str
        The path as written in the config.
    field : str
        The config field, for the message (e.g. ``data.prices``).
    data_root : str or Path, optional
        See :func:`resolve_data_root`.

    Returns
    -------
    Path
        The resolved absolute path.

    Raises
    ------
    DataPathError
        The path resolves outside the root and ``$ML4T_ALLOW_OUTSIDE_DATA_ROOT`` is not set.
    """
    root = resolve_data_root(data_root)
    p = Path(value).expanduser()
    resolved = (p if p.is_absolute() else root / p).resolve()
    if not resolved.is_relative_to(root) and not outside_root_allowed():
        raise DataPathError(
            f"{field}: {value!r} resolves to {resolved}, outside the data root "
            f"{_root_text(root)}. Data paths must stay inside the data root: move the file "
            f"under it, point ${DATA_ROOT_ENV} at a folder that contains it, or set "
            f"{ALLOW_OUTSIDE_ROOT_ENV}=1 to allow paths outside the root"
        )
    return resolved


def resolve_data_path(
    value: str, *, data_root: str | Path | None = None, field: str = "data path"
) -> Path:
    """Resolve a data path from a config (confined to the data root, see
    :func:`confine_data_path`) and check that it exists.

    Raises
    ------
    DataPathError
        The path resolves outside the data root.
    FileNotFoundError
        If the resolved path does not exist; the message names the variable to set.
    """
    p = confine_data_path(value, field=field, data_root=data_root)
    if not p.exists():
        raise FileNotFoundError(
            f"{field}: data file {p} not found (relative data paths resolve against "
            f"${DATA_ROOT_ENV}, currently {os.environ.get(DATA_ROOT_ENV)!r})"
        )
    return p


def data_paths(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """Every data path of ``cfg`` as ``(field, value)``: files only (not ``demo``/``computed``)."""
    out: list[tuple[str, str]] = []
    if cfg.data.prices != DEMO_PRICES:
        out.append(("data.prices", cfg.data.prices))
    if isinstance(cfg.data.signals, FileSignalsConfig):
        out.append(("data.signals.path", cfg.data.signals.path))
    if cfg.data.features != "computed":
        out.append(("data.features", cfg.data.features))
    if cfg.data.context.path:
        out.append(("data.context.path", cfg.data.context.path))
    if cfg.data.universe is not None:
        out.append(("data.universe.membership", cfg.data.universe.membership))
    if cfg.data.corporate_actions is not None:
        out.append(("data.corporate_actions.path", cfg.data.corporate_actions.path))
    bench = cfg.reporting.benchmark
    if bench is not None:
        out.append(("reporting.benchmark.path", bench.path))
        if bench.corporate_actions is not None:
            out.append(("reporting.benchmark.corporate_actions.path", bench.corporate_actions.path))
    return out


def check_data_paths(
    cfg: ExperimentConfig,
    *,
    data_root: str | Path | None = None,
    source: str | Path | None = None,
) -> None:
    """Check that every data path of ``cfg`` stays inside the data root (files need not exist).

    Raises
    ------
    DataPathError
        Naming every offending field and the root.
    """
    errors = []
    for field, value in data_paths(cfg):
        try:
            confine_data_path(value, field=field, data_root=data_root)
        except DataPathError as exc:
            errors.append(str(exc))
    if errors:
        prefix = f"{source}: " if source is not None else ""
        raise DataPathError(prefix + "\n".join(errors))
