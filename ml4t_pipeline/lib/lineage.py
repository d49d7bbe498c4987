"""Lineage helpers: content hashes of files and frames, and the code version.

Every materialization records where its numbers came from: the experiment's config hash, the
content hash of each input, and the git commit of the code (when the code runs from a checkout).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from ml4t_pipeline.config import ExperimentConfig


def file_content_hash(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 (first 16 hex digits) of a file's bytes, or of every file under a directory.

    A directory hashes each file's relative path and bytes in sorted order, so a new or changed
    partition file changes the hash.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    return digest.hexdigest()[:16]


def frame_content_hash(frame: pl.DataFrame) -> str:
    """Order-sensitive hash (16 hex digits) of a frame's column names, dtypes and values."""
    digest = hashlib.sha256()
    digest.update(repr(frame.schema).encode())
    for name in frame.columns:
        column = frame.get_column(name)
        if column.dtype == pl.Categorical:
            column = column.cast(pl.String)
        digest.update(name.encode())
        # Arrow IPC bytes of one column: values and validity, independent of chunking
        buffer = io.BytesIO()
        pl.DataFrame({name: column}).rechunk().write_ipc(buffer, compression="uncompressed")
        digest.update(buffer.getvalue())
    return digest.hexdigest()[:16]


def code_version() -> str:
    """The git commit of the code (with ``-dirty`` for local changes), or ``unknown``."""
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def experiment_input_hashes(cfg: ExperimentConfig, data_root: str | None) -> dict[str, str]:
    """Content hashes of an experiment's input files, keyed by their source asset's name.

    Keys: ``prices_file``, ``signals_file``, ``features_file``, ``context_file``,
    ``corporate_actions_file`` (``data.corporate_actions``), ``membership_file``
    (``data.universe.membership``) and ``benchmark_file``
    (``reporting.benchmark``'s price file and its corporate actions, one version for both).
    Only inputs that are files appear: the demo prices (a package), model-made signals,
    computed features and the ``market`` context (derived from the prices) have no file to
    watch.

    Raises
    ------
    FileNotFoundError
        If a configured file does not exist (the message names it).
    """
    from ml4t_pipeline.config import DEMO_PRICES, FileSignalsConfig, resolve_data_path

    out: dict[str, str] = {}
    if cfg.data.prices != DEMO_PRICES:
        out["prices_file"] = file_content_hash(
            resolve_data_path(cfg.data.prices, data_root=data_root)
        )
    if isinstance(cfg.data.signals, FileSignalsConfig):
        path = resolve_data_path(cfg.data.signals.path, data_root=data_root)
        out["signals_file"] = file_content_hash(path)
    if cfg.data.features != "computed":
        out["features_file"] = file_content_hash(
            resolve_data_path(cfg.data.features, data_root=data_root)
        )
    if cfg.data.context.source != "market" and cfg.data.context.path:
        out["context_file"] = file_content_hash(
            resolve_data_path(cfg.data.context.path, data_root=data_root)
        )
    actions = cfg.data.corporate_actions
    if actions is not None:
        out["corporate_actions_file"] = file_content_hash(
            resolve_data_path(actions.path, data_root=data_root)
        )
    universe = cfg.data.universe
    if universe is not None:
        out["membership_file"] = file_content_hash(
            resolve_data_path(universe.membership, data_root=data_root)
        )
    bench = cfg.reporting.benchmark
    if bench is not None:
        out["benchmark_file"] = benchmark_content_hash(cfg, data_root)
    return out


def benchmark_content_hash(cfg: ExperimentConfig, data_root: str | None) -> str:
    """The ``benchmark_file`` version: the hash of ``reporting.benchmark``'s price file, combined
    with its corporate-actions table's when one is configured.

    Raises
    ------
    ValueError
        If the experiment has no ``reporting.benchmark``.
    FileNotFoundError
        If a configured file does not exist.
    """
    from ml4t_pipeline.config import resolve_data_path

    bench = cfg.reporting.benchmark
    if bench is None:
        raise ValueError(f"experiment {cfg.name!r} has no reporting.benchmark")
    parts = [file_content_hash(resolve_data_path(bench.path, data_root=data_root))]
    if bench.corporate_actions is not None:
        table = resolve_data_path(bench.corporate_actions.path, data_root=data_root)
        parts.append(file_content_hash(table))
    return _combined(parts)


def _combined(parts: list[str]) -> str:
    """One version for several files: the first file's hash alone, else a hash of the list."""
    if len(parts) == 1:
        return parts[0]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
