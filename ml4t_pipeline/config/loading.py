"""Reading experiment files within bounds (size, depth, values, no YAML aliases) and validating
them: :func:`load_config`, :func:`validate_config`."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ml4t_pipeline.config._base import ConfigError
from ml4t_pipeline.config.experiment import ExperimentConfig
from ml4t_pipeline.config.paths import check_data_paths
from ml4t_pipeline.config.specs import build_rule

MAX_CONFIG_BYTES = 1 << 20
"""Largest config or sweep file read (1 MiB; real experiment files are a few KB)."""
MAX_CONFIG_DEPTH = 64
"""Deepest nesting of mappings and lists accepted in a config or sweep file."""
MAX_CONFIG_NODES = 10_000
"""Most values (scalars, mappings and lists together) accepted in a config or sweep file."""


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number (numbers must be finite)")


class _LimitError(Exception):
    """A config file breaks a size, depth or YAML-alias limit (``line`` is 1-based or None)."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses aliases and bounds depth and node count while composing.

    An alias (``*name``) makes one node appear many times: nine levels of ten aliases expand to
    10^9 values, which every later walk of the tree (validation, hashing, copying) pays for.
    Composition is recursive in PyYAML, so depth is checked here, before Python's recursion
    limit is reached.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.AliasEvent):
            raise _LimitError(
                f"YAML alias *{event.anchor} is not allowed in a config file (anchors and "
                "aliases, including `<<: *name` merge keys, are refused); write the values out",
                line,
            )
        self._nodes += 1
        if self._nodes > MAX_CONFIG_NODES:
            raise _LimitError(f"more than {MAX_CONFIG_NODES:,} values in one file", line)
        self._depth += 1
        if self._depth > MAX_CONFIG_DEPTH:
            raise _LimitError(f"nested deeper than {MAX_CONFIG_DEPTH} levels", line)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _json_depth_line(text: str) -> int | None:
    """The 1-based line where the nesting of JSON ``text`` first exceeds the depth limit."""
    depth, line = 0, 1
    for match in re.finditer(r'"(?:[^"\\\n]|\\.)*"|[\[\]{}\n]', text):
        token = match.group()
        if token == "\n":
            line += 1
        elif token in "[{":
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                return line
        elif token in "]}":
            depth -= 1
    return None


def _check_tree(value: Any) -> None:
    """Bound the depth and the number of values of a parsed JSON tree (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_CONFIG_NODES:
            raise _LimitError(f"more than {MAX_CONFIG_NODES:,} values in one file", None)
        if depth > MAX_CONFIG_DEPTH:
            raise _LimitError(f"nested deeper than {MAX_CONFIG_DEPTH} levels", None)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def read_config_file(path: str | Path) -> Any:
    """Parse a config or sweep file (JSON for a ``.json`` suffix, else YAML) within bounds.

    The file may hold at most :data:`MAX_CONFIG_BYTES` bytes of UTF-8, nest at most
    :data:`MAX_CONFIG_DEPTH` levels and hold at most :data:`MAX_CONFIG_NODES` values; YAML
    anchors and aliases (``&name``/``*name``, merge keys ``<<: *name``) are refused, as are JSON's
    bare ``NaN``/``Infinity``. YAML is read with PyYAML's safe loader (no Python objects).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    Any
        The parsed document (usually a dict).

    Raises
    ------
    ConfigError
        The file cannot be read, is too large, is not UTF-8, is not valid YAML/JSON, or breaks
        a limit; the message names the file and, where known, the line. Never a traceback
        from the parser.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"{path}: {size:,} bytes is larger than the {MAX_CONFIG_BYTES:,}-byte limit "
                    "for a config file (nothing was parsed)"
                )
            data = fh.read(MAX_CONFIG_BYTES + 1)  # a file that grows (or a device) stops here
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: larger than the {MAX_CONFIG_BYTES:,}-byte limit for a config file "
            "(nothing was parsed)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text ({exc.reason})") from exc
    if path.suffix.lower() == ".json":
        return _parse_json(path, text)
    return _parse_yaml(path, text)


def _parse_json(path: Path, text: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
        _check_tree(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})"
        ) from exc
    except ValueError as exc:  # a bare NaN/Infinity
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    except (RecursionError, _LimitError) as exc:
        line = getattr(exc, "line", None) or _json_depth_line(text)
        reason = (
            str(exc)
            if isinstance(exc, _LimitError)
            else (f"nested deeper than {MAX_CONFIG_DEPTH} levels")
        )
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: {reason}") from None
    return value


def _parse_yaml(path: Path, text: str) -> Any:
    loader = _BoundedLoader(text)
    loader.name = str(path)  # marks in messages name the file, not "<unicode string>"
    try:
        return loader.get_single_data()
    except _LimitError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        reason = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError(f"{where}: not valid YAML: {reason or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested deeper than {MAX_CONFIG_DEPTH} levels") from None
    finally:
        loader.dispose()


def load_config(path: str | Path, *, data_root: str | Path | None = None) -> ExperimentConfig:
    """Read and validate one experiment file (YAML, or JSON for a ``.json`` suffix).

    Parameters
    ----------
    path : str or Path
    data_root : str or Path, optional
        The data root the data paths must stay inside (default: :func:`resolve_data_root`).

    Raises
    ------
    ConfigError
        If the file is missing, is not YAML/JSON, or breaks the schema; the message lists every
        offending key with its location (e.g. ``execution.fil: Extra inputs are not permitted``).
        :class:`DataPathError` when a data path resolves outside the data root. A sweep file
        (a top-level ``sweep:`` block) is refused with a pointer to ``ml4t sweep``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment config not found: {path}")
    raw = read_config_file(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    if "sweep" in raw:
        raise ConfigError(
            f"{path}: this is a sweep file (it has a `sweep:` block), not one experiment; run it "
            f"with `ml4t sweep {path} --output DIR`, or remove the block to run the base experiment"
        )
    raw.setdefault("name", path.stem)
    return validate_config(raw, source=path, data_root=data_root)


def validate_config(
    raw: Mapping[str, Any], *, source: str | Path, data_root: str | Path | None = None
) -> ExperimentConfig:
    """Validate one experiment given as plain data, exactly as :func:`load_config` validates a
    file: the schema, every engine component built once, the data paths inside the data root.

    Parameters
    ----------
    raw : Mapping
        The sections of an experiment file (``name`` required: nothing to take it from).
    source : str or Path
        What the messages name as the config's origin (a path, ``"Experiment(config)"``).
    data_root : str or Path, optional
        As for :func:`load_config`.

    Raises
    ------
    ConfigError
        As for :func:`load_config` (the messages start with ``source``).
    """
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError(f"{source}: invalid experiment config:\n" + "\n".join(lines)) from exc
    _check_engine_specs(cfg, source)
    check_data_paths(cfg, data_root=data_root, source=source)
    return cfg


def _check_engine_specs(cfg: ExperimentConfig, source: Path | str) -> None:
    """Build every engine component once so bad rule names or parameters fail at load time."""
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("strategy", cfg.strategy.build),
        ("execution", cfg.execution.engine_config),
    ]
    checks += [
        (f"risk_rules[{i}]", lambda r=r: build_rule(r))  # type: ignore[misc]
        for i, r in enumerate(cfg.risk_rules)
    ]
    for where, build in checks:
        try:
            build()
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: {where}: {exc}") from exc
