"""Code versions of the assets and the tags every experiment run carries.

An asset's ``code_version`` is a hash of the source it runs: the module that defines it and
every module of this project (``ml4t_pipeline`` and ``engine``) that module imports, followed
transitively (function-level imports included). Dagster compares it with the code version each
stored value was materialized with, so an edit to, say, the report code marks every
experiment's ``performance_report`` stale ("Unsynced: code version changed") in the UI, while
the data assets, whose code did not change, stay fresh. (The data assets import the engine
through ``lib/universe.py``, whose universe-exit rule is an engine rule, so an engine edit
stales them too: the closure is conservative, by imports, not by calls.) Before, the
``dagster/code_version`` tag of a materialization was its run id, and "Unsynced" only meant
"another run happened".

Run tags (:func:`experiment_run_tags`) make runs filterable in the UI's run list by experiment,
config hash, code version and trigger.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg

OUR_PACKAGES = ("ml4t_pipeline", "engine")
"""Top-level packages whose source counts towards a code version (third-party code does not:
its version is pinned by the environment)."""

TAG_PREFIX = "ml4t/"
TRIGGERS = ("cli", "python", "new_config", "schedule", "automation", "ui")
"""Values of the ``ml4t/trigger`` run tag: what started the run."""


_SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the ``ml4t_pipeline`` and ``engine`` packages."""


@cache
def _module_file(name: str) -> Path | None:
    """The source file of module ``name`` (a package's ``__init__.py``), None if not ours.

    Found from the name alone (``a.b.c`` → ``a/b/c.py`` or ``a/b/c/__init__.py`` under the
    source root), without importing anything: ``importlib.util.find_spec`` of a name such as
    ``pkg.module.function`` would import ``pkg.module`` (e.g. VectorBT with the validation
    runner), seconds spent only to hash source files.
    """
    parts = name.split(".")
    if parts[0] not in OUR_PACKAGES or not all(part.isidentifier() for part in parts):
        return None
    base = _SOURCE_ROOT.joinpath(*parts)
    for candidate in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST, *, functions: bool) -> Iterable[ast.AST]:
    """The nodes of ``tree`` that run: ``if TYPE_CHECKING:`` bodies left out, and function bodies
    too unless ``functions``."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        if not functions and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            todo.extend(node.decorator_list)
            continue
        todo.extend(ast.iter_child_nodes(node))


_IMPORTS_CACHE = Path(__file__).resolve().parent / "__pycache__" / "ml4t_code_imports.json"
"""Where :func:`_imported_names` keeps what it parsed, keyed by each file's content hash:
parsing the ~160 modules of the closures took ~0.4 s CPU of every ``ml4t run`` and every code
location load. Beside Python's own byte-code cache (ignored by git); written atomically, and
unreadable or unwritable is the same as empty (everything is parsed again)."""


@cache
def _imports_cache() -> dict[str, Any]:
    """The cached entries (``{"<module>|<functions>|<sha256>": [names]}``), valid only for this
    exact ``versions.py`` (its hash is stored with them): a change to the parsing rules below
    starts afresh."""
    try:
        data = json.loads(_IMPORTS_CACHE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("parser") != _parser_hash():
        data = {"parser": _parser_hash(), "entries": {}}
    data["dirty"] = False
    return data


@cache
def _parser_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _save_imports_cache() -> None:
    data = _imports_cache()
    if not data["dirty"]:
        return
    data["dirty"] = False
    payload = json.dumps({"parser": data["parser"], "entries": data["entries"]}, sort_keys=True)
    tmp = _IMPORTS_CACHE.with_name(f"{_IMPORTS_CACHE.name}.{os.getpid()}.tmp")
    try:
        _IMPORTS_CACHE.parent.mkdir(exist_ok=True)
        tmp.write_text(payload, encoding="utf-8")
        os.replace(tmp, _IMPORTS_CACHE)
    except OSError:  # a read-only checkout: parse again next time
        tmp.unlink(missing_ok=True)


@cache
def _imported_names(path: Path, module: str, *, functions: bool) -> frozenset[str]:
    """Module names ``path`` (the source of ``module``) imports at run time (``if
    TYPE_CHECKING:`` blocks left out; imports inside functions only if ``functions``)."""
    source = path.read_bytes()
    key = f"{module}|{int(functions)}|{hashlib.sha256(source).hexdigest()}"
    cached = _imports_cache()
    if key in cached["entries"]:
        return frozenset(cached["entries"][key])
    names = _parse_imported_names(source, path, module, functions=functions)
    cached["entries"][key] = sorted(names)
    cached["dirty"] = True
    return names


def _parse_imported_names(
    source: bytes, path: Path, module: str, *, functions: bool
) -> frozenset[str]:
    tree = ast.parse(source, filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _runtime_nodes(tree, functions=functions):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            # ``from pkg import submodule`` imports a module too
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(names)


@cache
def code_closure(module: str) -> tuple[Path, ...]:
    """Source files of ``module`` and of every project module it imports, transitively.

    ``module``'s own imports count wherever they are (an asset body's lazy import runs with the
    asset); in the modules it reaches, only the imports made when the module loads are followed,
    not those inside their functions: ``ml4t_pipeline.config``'s lazy imports of the engine (to
    build engine objects, which only the backtest assets do) do not count for the data assets.

    Parameters
    ----------
    module : str
        A dotted module name of this project, e.g. ``"ml4t_pipeline.defs.assets_data"``.

    Returns
    -------
    tuple of Path
        Sorted, without duplicates. Parent packages' ``__init__.py`` files are included (they run
        on import).

    Raises
    ------
    ModuleNotFoundError
        If ``module`` is not a module of this project.
    """
    if _module_file(module) is None:
        raise ModuleNotFoundError(f"{module!r} is not a module of {OUR_PACKAGES}")
    seen: set[str] = set()
    files: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        files.add(path)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imported_names(path, name, functions=name == module) - seen)
    _save_imports_cache()
    return tuple(sorted(files))


def source_hash(files: Iterable[Path], *, root: Path | None = None) -> str:
    """SHA-256 (first 12 hex digits) of the files' paths (relative to ``root``) and bytes."""
    digest = hashlib.sha256()
    for path in sorted(files):
        name = path.relative_to(root) if root is not None else path.name
        digest.update(str(name).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def _project_root() -> Path:
    file = _module_file("ml4t_pipeline")
    assert file is not None
    return file.parent.parent


@cache
def module_code_version(module: str) -> str:
    """The code version of every asset defined in ``module``: :func:`source_hash` of its
    :func:`code_closure`, paths relative to the project root (so two clones agree)."""
    return source_hash(code_closure(module), root=_project_root())


def versioned_assets(modules: Sequence[ModuleType]) -> list[Any]:
    """The assets of ``modules`` with each asset's ``code_version`` set to its module's
    :func:`module_code_version` (observable source assets are left as they are)."""
    out: list[Any] = []
    for module in modules:
        version = module_code_version(module.__name__)
        for item in dg.load_assets_from_modules([module]):
            if isinstance(item, dg.AssetsDefinition) and item.is_executable:
                out.extend(
                    dg.map_asset_specs(
                        lambda spec, v=version: spec.replace_attributes(code_version=v), [item]
                    )
                )
            else:
                out.append(item)
    return out


def experiment_run_tags(
    experiment: str, *, trigger: str, config_hash: str | None = None
) -> dict[str, str]:
    """Tags of a run of one experiment: ``ml4t/experiment``, ``ml4t/trigger`` (one of
    :data:`TRIGGERS`), ``ml4t/code_version`` (of the backtest's code) and, when known,
    ``ml4t/config_hash``.

    Raises
    ------
    ValueError
        If ``trigger`` is not one of :data:`TRIGGERS`.
    """
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
    tags = {
        f"{TAG_PREFIX}experiment": experiment,
        f"{TAG_PREFIX}trigger": trigger,
        f"{TAG_PREFIX}code_version": module_code_version("ml4t_pipeline.defs.assets_backtest"),
    }
    if config_hash:
        tags[f"{TAG_PREFIX}config_hash"] = config_hash
    return tags
