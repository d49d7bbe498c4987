"""Resources: where experiment configs live and where data paths resolve."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from ml4t_pipeline.config import CONFIG_SUFFIXES, DATA_ROOT_ENV, ExperimentConfig, load_config
from ml4t_pipeline.lib.keys import check_partition_key

CONFIGS_ENV = "ML4T_CONFIGS_DIR"
BUILT_IN_CODE = "built in code (no file)"
"""What lineage names as the config file of an experiment handed in as an object."""


def default_configs_dir() -> str:
    """``$ML4T_CONFIGS_DIR``, else ``configs/`` in the current directory, else the repo's."""
    env = os.environ.get(CONFIGS_ENV)
    if env:
        return env
    here = Path.cwd() / "configs"
    if here.is_dir():
        return str(here)
    return str(Path(__file__).resolve().parents[2] / "configs")


class ExperimentsResource(dg.ConfigurableResource):
    """Maps an experiment partition key to its validated config.

    Attributes
    ----------
    configs_dir : str
        Folder of experiment files (YAML or JSON); the partition key is the file stem.
    data_root : str | None
        Root for relative data paths; defaults to ``$ML4T_DATA_ROOT``.
    inline : dict[str, str]
        Experiments handed in as objects rather than files (the Python API's configs built in
        code): partition key → the validated config's JSON. A key found here is never looked
        up in ``configs_dir``.
    """

    configs_dir: str
    data_root: str | None = None
    inline: dict[str, str] = {}

    def config_path(self, key: str) -> Path:
        """Path of the config file for partition ``key`` (``.yaml``, ``.yml`` or ``.json``).

        Raises
        ------
        UnsafePartitionKeyError
            ``key`` is not a safe file stem (e.g. ``../../x``): no path is built from it.
        FileNotFoundError
            No config file with that stem in ``configs_dir``.
        """
        check_partition_key(key, what="experiment partition key")
        if key in self.inline:
            raise FileNotFoundError(f"experiment {key!r} was built in code: it has no file")
        base = Path(self.configs_dir)
        for suffix in CONFIG_SUFFIXES:
            path = base / f"{key}{suffix}"
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"experiment {key!r}: no {key}.yaml, {key}.yml or {key}.json in {base.resolve()}"
        )

    def load(self, key: str) -> ExperimentConfig:
        """Load and validate the experiment config for partition ``key``."""
        if key in self.inline:
            return ExperimentConfig.model_validate_json(self.inline[key])
        return load_config(self.config_path(key), data_root=self.root())

    def source(self, key: str) -> str:
        """Where partition ``key``'s config came from: its file's path, or
        :data:`BUILT_IN_CODE` for one handed in as an object."""
        return BUILT_IN_CODE if key in self.inline else str(self.config_path(key))

    def root(self) -> str | None:
        """The data root relative paths resolve against (None: current directory)."""
        return self.data_root or os.environ.get(DATA_ROOT_ENV)

    def experiment_keys(self) -> list[str]:
        """Stems of every ``*.yaml`` / ``*.yml`` / ``*.json`` file in ``configs_dir``, sorted.

        Every stem is listed, safe or not; callers that turn stems into partitions check them
        (``experiment_configs_sensor`` skips and reports unsafe ones).
        """
        base = Path(self.configs_dir)
        return (
            sorted({p.stem for p in base.iterdir() if p.suffix in CONFIG_SUFFIXES and p.is_file()})
            if base.is_dir()
            else []
        )
