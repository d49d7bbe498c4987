"""The sweep report: Sharpe heatmap over two swept parameters, the distribution of trial
Sharpe ratios with the deflated threshold, and the equity of the top trials.

Figures are PNG bytes drawn on a fresh Agg canvas (no ``pyplot``, no global backend), like
:mod:`ml4t_pipeline.lib.plots`; the HTML embeds them as base64 data URIs, so the file is
self-contained.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "equity_top_png",
    "walk_forward_png",
    "render_sweep_html",
    "sharpe_heatmap_png",
    "sharpe_histogram_png",
]

_BLUE, _RED, _GREY = "#1f6feb", "#d1242f", "#6e7781"


def _figure(width: float, height: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def sharpe_heatmap_png(table: pl.DataFrame, x: str, y: str | None) -> bytes:
    """Mean annual Sharpe ratio of the ``ok`` trials per (``x``, ``y``) cell.

    Parameters
    ----------
    table : pl.DataFrame
        ``sweep_results`` rows: columns ``x``, ``y``, ``status``, ``sharpe``.
    x, y : str
        Swept paths (``y`` None: one row). Other swept parameters are averaged over; the
        title says so.

    Returns
    -------
    bytes
        A PNG image.
    """
    ok = table.filter((pl.col("status") == "ok") & pl.col("sharpe").is_not_null())
    fig, ax = _figure(8, 5)
    if ok.height == 0:
        ax.text(0.5, 0.5, "No successful trials.", ha="center", va="center")
        ax.set_axis_off()
        return _png(fig)
    keys = [x] if y is None else [x, y]
    cells = ok.group_by(keys).agg(pl.col("sharpe").mean(), pl.len().alias("n"))
    xs = sorted(cells[x].unique().to_list())
    ys = [None] if y is None else sorted(cells[y].unique().to_list())
    grid = np.full((len(ys), len(xs)), np.nan)
    for row in cells.iter_rows(named=True):
        grid[ys.index(row[y] if y else None), xs.index(row[x])] = row["sharpe"]
    limit = float(np.nanmax(np.abs(grid))) or 1.0
    image = ax.imshow(grid, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto", origin="lower")
    ax.set_xticks(range(len(xs)), [_label(v) for v in xs], rotation=45 if len(xs) > 8 else 0)
    ax.set_yticks(range(len(ys)), [_label(v) if v is not None else "" for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y or "")
    if len(xs) * len(ys) <= 120:
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, label="annual Sharpe ratio")
    averaged = int(cells["n"].max()) > 1
    ax.set_title("Sharpe ratio" + (" (mean over the other parameters)" if averaged else ""))
    return _png(fig)


def sharpe_histogram_png(sharpes: np.ndarray, threshold: float | None, best: float | None) -> bytes:
    """Histogram of the trials' annual Sharpe ratios with the deflated threshold.

    Parameters
    ----------
    sharpes : ndarray[float64], shape (N,)
        Annual Sharpe ratios of the ``ok`` trials.
    threshold : float, optional
        The expected maximum Sharpe ratio of N unskilled trials (annualised ``SR0`` of the DSR).
    best : float, optional
        The best trial's annual Sharpe ratio.
    """
    fig, ax = _figure(8, 4)
    values = sharpes[np.isfinite(sharpes)]
    if values.size == 0:
        ax.text(0.5, 0.5, "No successful trials.", ha="center", va="center")
        ax.set_axis_off()
        return _png(fig)
    ax.hist(values, bins=min(40, max(5, values.size // 3)), color=_BLUE, alpha=0.75)
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(
            threshold,
            color=_RED,
            linestyle="--",
            label=f"expected max of N noise trials ({threshold:.2f})",
        )
    if best is not None and math.isfinite(best):
        ax.axvline(best, color="black", linewidth=1.2, label=f"best trial ({best:.2f})")
    ax.set_xlabel("annual Sharpe ratio")
    ax.set_ylabel("trials")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def equity_top_png(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Equity of the top trials, each as growth of 1 (``Π(1 + r)``).

    Parameters
    ----------
    curves : dict[str, (timestamps, returns)]
        Label → (``datetime64`` timestamps, per-bar returns).
    """
    fig, ax = _figure(10, 4.5)
    if not curves:
        ax.text(0.5, 0.5, "No successful trials.", ha="center", va="center")
        ax.set_axis_off()
        return _png(fig)
    for label, (times, returns) in curves.items():
        ax.plot(
            times.astype("datetime64[ms]").astype(object),
            np.cumprod(1.0 + returns),
            linewidth=1.1,
            label=label,
        )
    ax.set_ylabel("growth of 1")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "—"
    return html.escape(str(value))


def _table(frame: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in frame.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_sweep_html(
    summary: dict[str, Any], table: pl.DataFrame, figures: dict[str, bytes]
) -> str:
    """The self-contained HTML of ``sweep_report.html``.

    Parameters
    ----------
    summary : dict
        ``sweep_summary.json``'s content.
    table : pl.DataFrame
        ``sweep_results``.
    figures : dict[str, bytes]
        ``heatmap``, ``histogram``, ``equity`` PNGs.
    """
    dsr = summary.get("deflated_sharpe") or {}
    pbo = summary.get("pbo") or {}
    psr = summary.get("psr") or {}
    spa = summary.get("spa") or {}
    mt = summary.get("multiple_testing") or {}
    facts = {
        "trials": summary["n_trials"],
        "ok / failed": f"{summary['n_ok']} / {summary['n_failed']}",
        "computed now / reused": f"{summary['n_computed']} / {summary['n_reused']}",
        "best trial": (summary.get("best_trial") or {}).get("trial"),
        "best annual Sharpe": dsr.get("sharpe_annual"),
        "deflated threshold (annual)": dsr.get("expected_max_sharpe_annual"),
        "Deflated Sharpe Ratio": dsr.get("dsr", None),
        "PBO (CSCV)": pbo.get("pbo"),
        "CSCV splits S": pbo.get("n_splits"),
        "PSR of the best trial (vs Sharpe 0)": psr.get("psr"),
        "minimum track record (bars)": psr.get("min_track_record_length"),
        "minimum track record (years)": psr.get("min_track_record_years"),
        "bars in the sample": psr.get("n_periods"),
        "Hansen SPA p-value": spa.get("spa_pvalue", None),
        "White Reality Check p-value": spa.get("reality_check_pvalue"),
        "StepM: trials better than cash": (
            None
            if "stepm_superior_trials" not in spa
            else ", ".join(map(str, spa["stepm_superior_trials"])) or "none"
        ),
        "trials with p ≤ α: raw / Holm / BY": (
            None
            if "n_significant" not in mt
            else f"{mt['n_significant']} / {mt['n_significant_holm']} / {mt['n_significant_by']}"
            f" of {mt['n_tested']} (α = {mt['alpha']:g})"
        ),
        "code version": summary.get("code_version"),
    }
    facts_html = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in facts.items()
    )
    params = list(summary["swept"])
    top = table.filter(pl.col("status") == "ok").sort("sharpe", descending=True, nulls_last=True)
    top = top.select(
        ["trial", *params, "sharpe", "cagr", "max_drawdown", "n_trades", "turnover", "seconds"]
    ).head(15)
    failed = table.filter(pl.col("status") == "failed").select(["trial", *params, "error"]).head(20)
    verdict = (
        "The best trial's Sharpe ratio is significant after deflating for the number of trials."
        if dsr.get("significant")
        else "The best trial's Sharpe ratio is <b>not</b> significant after deflating for the "
        "number of trials (DSR ≤ 0.95)."
    )
    gates = summary.get("gates") or []
    gates_html = "".join(
        f"<tr><th>{html.escape(g['name'])}</th><td>{_fmt(g['value'])}</td>"
        f"<td>{_fmt(g['threshold'])}</td><td>{'pass' if g['passed'] else '<b>fail</b>'}</td>"
        f"<td style='text-align:left'>{html.escape(g['detail'])}</td></tr>"
        for g in gates
    )
    gates_block = (
        f"<p id='verdict'><b>Verdict:</b> {html.escape(summary.get('verdict', ''))}"
        f"{' (blocking)' if gates and gates[0]['blocking'] else ' (warnings)'}</p>"
        "<table><thead><tr><th>gate</th><th>value</th><th>threshold</th><th>result</th>"
        f"<th>detail</th></tr></thead><tbody>{gates_html}</tbody></table>"
        if gates
        else ""
    )
    wf_block = _walk_forward_html(summary.get("walk_forward"), figures.get("walk_forward"))
    wf_block += _cpcv_html(summary.get("cpcv"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sweep {html.escape(summary["sweep"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f6f8fa; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Sweep {html.escape(summary["sweep"])}</h1>
<p>{summary["kind"]} over {", ".join(html.escape(p) for p in params)}. {verdict}
PBO is the probability that the in-sample best variant ranks in the bottom half out of sample
(Bailey, Borwein, López de Prado &amp; Zhu); DSR after Bailey &amp; López de Prado (2014);
PSR and minimum track record length after Bailey &amp; López de Prado (2012); SPA (Hansen 2005),
Reality Check (White 2000) and StepM (Romano &amp; Wolf 2005) from <code>arch.bootstrap</code>,
on the mean per-bar excess return against cash; Holm and Benjamini–Hochberg–Yekutieli adjusted
p-values from <code>statsmodels</code>.</p>
{gates_block}
<table>{facts_html}</table>
{wf_block}
<h2 id="heatmap">Sharpe ratio over the parameters</h2>
{_img(figures["heatmap"], "Sharpe heatmap")}
<h2 id="distribution">Distribution of trial Sharpe ratios</h2>
{_img(figures["histogram"], "Sharpe histogram")}
<h2 id="equity">Equity of the top trials</h2>
{_img(figures["equity"], "equity of the top trials")}
<h2 id="top">Top trials</h2>
{_table(top)}
<h2 id="failed">Failed trials</h2>
{_table(failed) if failed.height else "<p>None.</p>"}
</body></html>
"""


def walk_forward_png(times: np.ndarray, equity: np.ndarray, boundaries: np.ndarray) -> bytes:
    """The stitched out-of-sample equity of a walk-forward optimisation (growth of 1), with a
    dotted line at each fold's first out-of-sample bar.

    Parameters
    ----------
    times : ndarray[datetime64], shape (T,)
        The out-of-sample bars, increasing.
    equity : ndarray[float64], shape (T,)
        Growth of 1 at each bar.
    boundaries : ndarray[datetime64]
        First bar of each fold's test window.
    """
    fig, ax = _figure(10, 4)
    if times.size == 0:
        ax.text(0.5, 0.5, "No out-of-sample bars.", ha="center", va="center")
        ax.set_axis_off()
        return _png(fig)
    ax.plot(times.astype("datetime64[ms]").astype(object), equity, color=_BLUE, linewidth=1.2)
    for start in np.asarray(boundaries).astype("datetime64[ms]").astype(object):
        ax.axvline(start, color=_GREY, linestyle=":")
    ax.set_ylabel("growth of 1 (out of sample)")
    ax.grid(True, alpha=0.3)
    return _png(fig)


def _walk_forward_html(section: dict[str, Any] | None, png: bytes | None) -> str:
    if not section:
        return ""
    if section.get("reason"):
        reason = html.escape(section["reason"])
        return f"<h2 id='walk-forward'>Walk-forward</h2><p>n/a: {reason}</p>"
    oos, ins = section["oos"], section["is"]
    facts = {
        "folds": section["n_folds"],
        "selected by": section["select"],
        "purge / embargo (bars)": f"{section['purge']} / {section['embargo']}",
        "OOS annual Sharpe (stitched)": oos.get("sharpe"),
        "IS annual Sharpe (mean of the chosen)": ins.get("sharpe"),
        "degradation ratio (OOS / IS Sharpe)": section.get("degradation_ratio"),
        "walk-forward efficiency (OOS / IS annual return)": section.get("efficiency"),
        "OOS CAGR": oos.get("cagr"),
        "OOS max drawdown": oos.get("max_drawdown"),
        "OOS total return": oos.get("total_return"),
    }
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in facts.items()
    )
    folds = pl.DataFrame(
        [
            {
                "fold": f["fold"],
                "train": f"{f['train_start'][:10]} → {f['train_end'][:10]}",
                "test": f"{f['test_start'][:10]} → {f['test_end'][:10]}",
                "trial": f["trial"],
                "params": ", ".join(f"{k}={v}" for k, v in f["params"].items()),
                f"IS {section['select']}": f["is_score"],
                "IS Sharpe": f["is_sharpe"],
                "OOS Sharpe": f["oos_sharpe"],
                "OOS return": f["oos_total_return"],
            }
            for f in section["folds"]
        ]
    )
    image = _img(png, "walk-forward out-of-sample equity") if png else ""
    return (
        "<h2 id='walk-forward'>Walk-forward: stitched out-of-sample</h2>"
        "<p>Each fold picks the variant with the best in-sample value and runs it alone on the "
        "fold's test window; the test windows' returns are chained into one equity curve.</p>"
        f"<table>{rows}</table>{image}{_table(folds)}"
    )


def _cpcv_html(section: dict[str, Any] | None) -> str:
    if not section:
        return ""
    head = "<h2 id='cpcv'>Combinatorial purged cross-validation</h2>"
    if section.get("reason"):
        return f"{head}<p>n/a: {html.escape(section['reason'])}</p>"
    q = section["sharpe_quantiles"]
    facts = {
        "groups N / test groups k": f"{section['n_folds']} / {section['n_test_folds']}",
        "splits / paths": f"{section['n_splits']} / {section['n_paths']}",
        "purge / embargo (bars)": f"{section['purge']} / {section['embargo']}",
        "selected by": section["select"],
        "OOS annual Sharpe: mean ± std": f"{section['sharpe_mean']:.3f} ± "
        f"{section['sharpe_std']:.3f}",
        "OOS annual Sharpe: 5 % / 50 % / 95 %": f"{q['0.05']:.3f} / {q['0.5']:.3f} / "
        f"{q['0.95']:.3f}",
        "paths with Sharpe > 0": section["share_positive"],
    }
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in facts.items()
    )
    return (
        f"{head}<p>Each split selects the best variant on its purged training groups; its "
        "returns on the test groups recombine into complete out-of-sample paths "
        "(López de Prado 2018, ch. 12; splits from <code>skfolio</code>).</p>"
        f"<table>{rows}</table>"
    )
