"""The parity matrix: every catalogue scenario against every reference framework, counted.

``run_matrix`` runs each scenario of :func:`scenarios.catalogue` through our engine (under the
framework's preset) and through the framework's own driver, compares the fills, and returns one
row per (scenario, framework) with the columns of :data:`MATRIX_COLUMNS`. ``write_matrix``
writes that table as Parquet and renders the docs table (``matrix_markdown``).

Fills are compared *netted per bar*: the fills of one (bar, symbol, side) are summed (quantity,
commission) and priced at their quantity-weighted average, because a reversal is one order of
twice the size in VectorBT (``upon_opposite_entry="reverse"``) and two orders (close, then open)
in Backtrader and our engine. A matched row agrees when its quantity is equal and its price
within ``price_tol``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from ml4t_pipeline.lib.crossval.compare import FrameworkRun, compare_fills
from ml4t_pipeline.lib.crossval.scenarios import (
    FRAMEWORKS,
    Scenario,
    ScenarioData,
    catalogue,
    load_prices,
    panel_symbols,
    prepare_inputs,
    run_ml4t_scenario,
    scenario_data,
)

MATRIX_COLUMNS: tuple[str, ...] = (
    "scenario",
    "framework",
    "status",
    "driver",
    "preset",
    "n_symbols",
    "n_bars",
    "fills_ours",
    "fills_theirs",
    "matched",
    "missing",
    "extra",
    "price_gaps",
    "max_price_gap",
    "final_equity_ours",
    "final_equity_theirs",
    "final_equity_gap",
    "knob",
    "seconds",
)
"""Columns of the matrix table (one row per scenario and framework).

``status``: ``"matched"`` (0 fill differences and |final-equity gap| < $0.01), ``"gap"``, or
``"not_expressed"`` (the reason is in ``knob``). ``matched``/``missing``/``extra`` count netted
fills (module docstring); ``price_gaps`` counts matched rows whose quantity differs or whose
price differs by more than the tolerance; ``final_equity_gap`` = ours − theirs, currency;
``knob`` names the setting that explains a gap (or why the scenario is not expressed).
"""

EQUITY_TOL = 0.01
"""Largest |final-equity gap| (currency) still counted as matched."""


def net_fills(fills: pl.DataFrame) -> pl.DataFrame:
    """Net a fills table per (timestamp, symbol, side): summed quantity and commission,
    quantity-weighted average price (currency per share)."""
    side = pl.when(pl.col("quantity") > 0).then(pl.lit("buy")).otherwise(pl.lit("sell"))
    return (
        fills.with_columns(side.alias("_side"))
        .group_by("timestamp", "symbol", "_side", maintain_order=True)
        .agg(
            pl.col("quantity").sum(),
            ((pl.col("price") * pl.col("quantity")).sum() / pl.col("quantity").sum()).alias(
                "price"
            ),
            pl.col("commission").sum(),
        )
        .drop("_side")
        .sort("timestamp", "symbol", maintain_order=True)
    )


@dataclass(frozen=True)
class ParityResult:
    """One (scenario, framework) cell: the two runs and the table row."""

    row: dict[str, Any]
    ours: FrameworkRun | None
    theirs: FrameworkRun | None


def run_framework(scenario: Scenario, data: ScenarioData, framework: str) -> FrameworkRun:
    """The reference framework's own run of ``scenario``."""
    if framework == "backtrader":
        if scenario.kind == "topn":
            from ml4t_pipeline.lib.crossval.backtrader_run import run_backtrader

            return run_backtrader(data.inputs)
        from ml4t_pipeline.lib.crossval.parity_backtrader import run_backtrader_scenario

        return run_backtrader_scenario(scenario, data)
    if framework == "vectorbt":
        if scenario.kind == "topn":
            from ml4t_pipeline.lib.crossval.vectorbt_run import run_vectorbt

            return run_vectorbt(data.inputs)
        from ml4t_pipeline.lib.crossval.parity_vectorbt import run_vectorbt_scenario

        return run_vectorbt_scenario(scenario, data)
    raise ValueError(f"unknown framework {framework!r}; known: {list(FRAMEWORKS)}")


def driver_name(scenario: Scenario, framework: str) -> str:
    """``"independent"`` (the framework's own API) or ``"callbacks"`` (restates our rules)."""
    if scenario.kind == "topn" and framework == "vectorbt":
        return "callbacks"
    return "independent"


def compare_scenario(
    scenario: Scenario,
    data: ScenarioData,
    framework: str,
    price_tol: float = 1e-6,
    engine_overrides: dict[str, Any] | None = None,
    zipline_py: str | None = None,
    trail_settings: dict[str, Any] | None = None,
) -> ParityResult:
    """Run ``scenario`` in our engine and in ``framework`` and count the differences.

    Parameters
    ----------
    scenario : Scenario
    data : ScenarioData
    framework : {"backtrader", "vectorbt"}
    price_tol : float, default 1e-6
        Currency per share.
    engine_overrides : dict, optional
        Replace the scenario's ``ExecutionConfig`` overrides for this framework (to show that a
        gap opens or closes with one setting).
    zipline_py : str, optional
        The Zipline venv's interpreter (``framework="zipline"``; default
        ``$ML4T_ZIPLINE_PYTHON``).
    trail_settings : dict, optional
        Replace the scenario's ``DynamicTrailingStop`` keywords for this framework (``{}``:
        the default reference price).

    Returns
    -------
    ParityResult
    """
    base = {
        "scenario": scenario.name,
        "framework": framework,
        "driver": driver_name(scenario, framework),
        "n_symbols": len(data.symbols),
        "n_bars": data.inputs.n_dates,
    }
    if framework == "zipline":
        return _compare_zipline(scenario, data, base, price_tol, zipline_py)
    if framework in scenario.not_expressed:
        row = {
            **base,
            "status": "not_expressed",
            "preset": framework,
            "knob": scenario.not_expressed[framework],
        }
        return ParityResult(row=_complete(row), ours=None, theirs=None)
    if engine_overrides is not None:
        overrides = dict(scenario.engine_overrides)
        overrides[framework] = engine_overrides
        scenario = _with_overrides(scenario, overrides)
    if trail_settings is not None:
        scenario = replace(
            scenario, trail_settings={**scenario.trail_settings, framework: trail_settings}
        )
    start = time.perf_counter()
    ours = run_ml4t_scenario(scenario, data, framework)
    theirs = run_framework(scenario, data, framework)
    cmp = compare_fills(net_fills(ours.fills), net_fills(theirs.fills), price_tol)
    gap = ours.final_equity - theirs.final_equity
    differences = cmp.n_missing + cmp.n_extra + cmp.n_mismatched
    matched = differences == 0 and abs(gap) < EQUITY_TOL
    extra_settings = dict(scenario.engine_overrides.get(framework, {}))
    if scenario.trailing is not None:
        extra_settings.update(scenario.trail_settings.get(framework, {}))
    preset = framework + "".join(f", {k}={v}" for k, v in extra_settings.items())
    row = {
        **base,
        "status": "matched" if matched else "gap",
        "preset": preset,
        "fills_ours": ours.n_fills,
        "fills_theirs": theirs.n_fills,
        "matched": cmp.n_matched,
        "missing": cmp.n_missing,
        "extra": cmp.n_extra,
        "price_gaps": cmp.n_mismatched,
        "max_price_gap": cmp.max_price_diff,
        "final_equity_ours": ours.final_equity,
        "final_equity_theirs": theirs.final_equity,
        "final_equity_gap": gap,
        "knob": "" if matched else scenario.knobs.get(framework, "unexplained"),
        "seconds": time.perf_counter() - start,
    }
    return ParityResult(row=_complete(row), ours=ours, theirs=theirs)


def _compare_zipline(
    scenario: Scenario,
    data: ScenarioData,
    base: dict[str, Any],
    price_tol: float,
    zipline_py: str | None,
) -> ParityResult:
    from ml4t_pipeline.lib.crossval.parity_zipline import (
        delayed,
        run_zipline_scenario,
        zipline_python,
        zipline_reason,
        zipline_view,
    )

    python = zipline_python(zipline_py)
    reason = zipline_reason(scenario)
    if reason is None and python is None:
        reason = "Zipline venv not given (--zipline-python or $ML4T_ZIPLINE_PYTHON)"
    if reason is not None:
        row = {**base, "status": "not_expressed", "preset": "none", "knob": reason}
        return ParityResult(row=_complete(row), ours=None, theirs=None)
    assert python is not None
    start = time.perf_counter()
    _, zdata = zipline_view(scenario, data)
    ours = run_ml4t_scenario(replace(scenario, fill="close"), delayed(zdata), "zipline")
    theirs = run_zipline_scenario(scenario, zdata, python)
    row = _row(base, ours, theirs, price_tol, "", start)
    row["preset"] = "none: fill=close, signals one bar late"
    return ParityResult(row=_complete(row), ours=ours, theirs=theirs)


def _row(
    base: dict[str, Any],
    ours: FrameworkRun,
    theirs: FrameworkRun,
    price_tol: float,
    knob: str,
    start: float,
) -> dict[str, Any]:
    cmp = compare_fills(net_fills(ours.fills), net_fills(theirs.fills), price_tol)
    gap = ours.final_equity - theirs.final_equity
    matched = cmp.n_missing + cmp.n_extra + cmp.n_mismatched == 0 and abs(gap) < EQUITY_TOL
    return {
        **base,
        "status": "matched" if matched else "gap",
        "fills_ours": ours.n_fills,
        "fills_theirs": theirs.n_fills,
        "matched": cmp.n_matched,
        "missing": cmp.n_missing,
        "extra": cmp.n_extra,
        "price_gaps": cmp.n_mismatched,
        "max_price_gap": cmp.max_price_diff,
        "final_equity_ours": ours.final_equity,
        "final_equity_theirs": theirs.final_equity,
        "final_equity_gap": gap,
        "knob": "" if matched else (knob or "unexplained"),
        "seconds": time.perf_counter() - start,
    }


def _with_overrides(scenario: Scenario, overrides: dict[str, dict[str, Any]]) -> Scenario:
    return replace(scenario, engine_overrides=overrides)


_SCHEMA: dict[str, Any] = {
    "scenario": pl.String,
    "framework": pl.String,
    "status": pl.String,
    "driver": pl.String,
    "preset": pl.String,
    "n_symbols": pl.Int64,
    "n_bars": pl.Int64,
    "fills_ours": pl.Int64,
    "fills_theirs": pl.Int64,
    "matched": pl.Int64,
    "missing": pl.Int64,
    "extra": pl.Int64,
    "price_gaps": pl.Int64,
    "max_price_gap": pl.Float64,
    "final_equity_ours": pl.Float64,
    "final_equity_theirs": pl.Float64,
    "final_equity_gap": pl.Float64,
    "knob": pl.String,
    "seconds": pl.Float64,
}


def _complete(row: dict[str, Any]) -> dict[str, Any]:
    return {c: row.get(c) for c in MATRIX_COLUMNS}


def run_matrix(
    data_root: Path,
    scenarios: list[str] | None = None,
    frameworks: tuple[str, ...] = FRAMEWORKS,
    n_symbols: int | None = 12,
    n_bars: int | None = None,
    progress: Any = None,
    initial_cash: float | None = None,
    zipline_py: str | None = None,
) -> pl.DataFrame:
    """Run the parity matrix on the real S&P file under ``data_root``.

    Parameters
    ----------
    data_root : Path
        Folder holding ``sp500_5yr_daily_ohlcv.parquet``.
    scenarios : list of str, optional
        Scenario names (default: the whole catalogue).
    frameworks : tuple of str
        Subset of :data:`FRAMEWORKS`, optionally with ``"zipline"``
        (:mod:`~ml4t_pipeline.lib.crossval.parity_zipline`).
    n_symbols : int, optional
        Symbols of the panel, spread evenly over the clean S&P symbols (None: all 461). The
        ``topn`` scenario always runs on the symbols given here.
    n_bars : int, optional
        First bars of the file to use (None: all 1,259). A scenario's own ``n_bars`` cuts
        further.
    progress : callable, optional
        Called with each finished row (e.g. to print it).
    initial_cash : float, optional
        Replace every signal scenario's starting cash (currency), e.g. for a large panel
        where the default would make cash bind; ``cash_constrained`` keeps its own.
    zipline_py : str, optional
        Interpreter of the Zipline venv when ``frameworks`` holds ``"zipline"``.

    Returns
    -------
    polars.DataFrame
        Columns :data:`MATRIX_COLUMNS`, one row per scenario and framework.

    Raises
    ------
    KeyError
        An unknown scenario name.
    """
    known = {s.name: s for s in catalogue()}
    names = list(known) if scenarios is None else list(scenarios)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown scenarios {unknown}; known: {list(known)}")
    prices = load_prices(data_root)
    inputs, volume = prepare_inputs(prices, panel_symbols(prices, n_symbols), n_bars)
    rows = []
    for name in names:
        scenario = known[name]
        if initial_cash is not None and scenario.kind == "signals" and name != "cash_constrained":
            scenario = replace(scenario, initial_cash=initial_cash)
        data = scenario_data(inputs, volume, scenario)
        for framework in frameworks:
            row = compare_scenario(scenario, data, framework, zipline_py=zipline_py).row
            rows.append(row)
            if progress is not None:
                progress(row)
    return pl.DataFrame(rows, schema=_SCHEMA, orient="row")


def matrix_markdown(table: pl.DataFrame) -> str:
    """The matrix as a markdown table (one row per scenario and framework); ``our settings``
    is the preset and the settings our run switched on for that framework."""
    head = (
        "| scenario | framework | status | driver | our settings | fills ours / theirs "
        "| matched | missing | extra | price gaps | final-equity gap | knob |"
    )
    lines = [head, "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in table.iter_rows(named=True):
        if r["status"] == "not_expressed":
            lines.append(
                f"| {r['scenario']} | {r['framework']} | not expressed | {r['driver']} | – "
                f"| – | – | – | – | – | – | {r['knob']} |"
            )
            continue
        lines.append(
            f"| {r['scenario']} | {r['framework']} | {r['status']} | {r['driver']} "
            f"| {r['preset'] or ''} "
            f"| {r['fills_ours']:,} / {r['fills_theirs']:,} | {r['matched']:,} "
            f"| {r['missing']:,} | {r['extra']:,} | {r['price_gaps']:,} "
            f"| {r['final_equity_gap']:+,.2f} | {r['knob'] or ''} |"
        )
    return "\n".join(lines)


def write_matrix(table: pl.DataFrame, parquet: Path, markdown: Path | None = None) -> None:
    """Write the matrix as Parquet (zstd) and, optionally, its markdown table."""
    parquet = Path(parquet)
    parquet.parent.mkdir(parents=True, exist_ok=True)
    table.write_parquet(parquet, compression="zstd")
    if markdown is not None:
        Path(markdown).write_text(matrix_markdown(table) + "\n", encoding="utf-8")


DOCS_START = "<!-- parity-matrix:start -->"
DOCS_END = "<!-- parity-matrix:end -->"


def replace_docs_table(page: Path, table: pl.DataFrame, section: str = "matrix") -> None:
    """Replace the text between the ``<!-- parity-<section>:start/end -->`` markers of
    ``page`` with the markdown table of ``table``.

    Raises
    ------
    ValueError
        The page lacks either marker (named).
    """
    start, end = f"<!-- parity-{section}:start -->", f"<!-- parity-{section}:end -->"
    text = Path(page).read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise ValueError(f"{page} lacks the markers {start} / {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    body = matrix_markdown(table)
    Path(page).write_text(f"{head}{start}\n{body}\n{end}{tail}", encoding="utf-8")


def unexplained_gaps(table: pl.DataFrame) -> pl.DataFrame:
    """Rows with a gap and no named setting explaining it (``knob == "unexplained"``)."""
    return table.filter((pl.col("status") == "gap") & (pl.col("knob") == "unexplained"))
