"""Write the example notebooks of this folder from the cells below (outputs stripped).

Run ``python examples/make_notebooks.py`` after changing a cell; the notebooks are generated
files, so a change to an example is a diff of this script. ``tests/docs/test_notebooks.py``
checks that the stored notebooks equal what this script writes and executes each of them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str) -> nbformat.NotebookNode:
    """A Markdown cell (surrounding blank lines removed)."""
    return new_markdown_cell(text.strip("\n"))


def code(text: str) -> nbformat.NotebookNode:
    """A code cell (surrounding blank lines removed)."""
    return new_code_cell(text.strip("\n"))


SETUP_DATA_ROOT = """
DATA_ROOT = Path(os.environ.get("ML4T_DATA_ROOT", "../../shared/data")).resolve()
os.environ["ML4T_DATA_ROOT"] = str(DATA_ROOT)  # relative data paths in configs resolve here
SP500 = DATA_ROOT / "sp500_5yr_daily_ohlcv.parquet"
assert SP500.is_file(), f"set ML4T_DATA_ROOT to the folder holding {SP500.name}"
"""

SINGLE_ASSET = [
    md(
        """
# A single-asset ML strategy on the demo data

A walk-forward logistic regression predicts whether AAPL rises over the next five days. We go
long when the model is confident and stay flat otherwise. The data is the real daily OHLCV
that ships in `bokeh-sampledata`, so nothing is downloaded.

The steps:

1. compute features with `DataPreparer`, the pipeline's own indicator code;
2. fit the model year by year, only on labels that were known before the year began;
3. check the predictions' timing with `DataPreparer.validate(level="paranoid")`;
4. run the experiment through the pipeline with `Experiment` and look at the result.
"""
    ),
    code(
        """
import os
import tempfile
from pathlib import Path

import polars as pl
from sklearn.linear_model import LogisticRegression

from ml4t_pipeline import DataPreparer, Experiment
from ml4t_pipeline.lib.io import load_demo_prices

prices = load_demo_prices().filter(pl.col("symbol") == "AAPL")
panel = DataPreparer(prices).add_features().validate().to_panel()
panel.select("timestamp", "close", "ret_5", "ret_20", "rsi_14", "zscore_20").tail(3)
"""
    ),
    md(
        """
## Labels and their timing

The label of bar *t* says whether the close five bars later is higher. It is **known** only
at that later close (`label_known_at`). A model fitted at the start of a year may only use rows
whose label was known by then.
"""
    ),
    code(
        """
FEATURES = ["ret_1", "ret_5", "ret_20", "vol_20", "rsi_14", "zscore_20", "close_to_sma_20"]
HORIZON = 5

data = panel.with_columns(
    (pl.col("close").shift(-HORIZON) > pl.col("close")).alias("up"),
    pl.col("timestamp").shift(-HORIZON).alias("label_known_at"),
).drop_nulls(FEATURES)

predictions = []
for year in range(2003, data["timestamp"].dt.year().max() + 1):
    bars = data.filter(pl.col("timestamp").dt.year() == year)
    if bars.height == 0:
        continue
    year_start = bars["timestamp"].min()
    train = data.filter(pl.col("label_known_at") < year_start)  # no label from the future
    model = LogisticRegression(C=0.1, max_iter=1000)
    model.fit(train.select(FEATURES).to_numpy(), train["up"].to_numpy())
    p_up = model.predict_proba(bars.select(FEATURES).to_numpy())[:, 1]
    predictions.append(bars.select("timestamp", "symbol").with_columns(p_up=p_up))

predictions = pl.concat(predictions)
predictions["p_up"].describe()
"""
    ),
    md(
        """
## Trade only the confident days

We keep the predictions with `p_up > 0.55`, one row per confident day. A score comes from
features known at its bar's close, so it is available at that close
(`available_at="market_close"`). With `max_fill_bars=0` a score is used on its own bar only and
never carried forward, so the strategy is flat on days without a confident score. The paranoid
validation runs the pipeline's look-ahead checks on the joined panel.
"""
    ),
    code(
        """
signals = predictions.filter(pl.col("p_up") > 0.55)
checked = (
    DataPreparer(prices)
    .add_signals(signals, available_at="market_close")
    .validate(level="paranoid", max_fill_bars=0, max_signal_age_bars=0)
)
in_market = checked.to_panel()["p_up"].is_not_null().mean()
print(f"{signals.height} confident days; a score is visible on {in_market:.0%} of the bars")
"""
    ),
    md(
        """
## Run it through the pipeline

The signals file goes into a data folder (`ML4T_DATA_ROOT`), and the experiment is built in
code. `run()` materializes the same asset graph as `ml4t run`: validation, the backtest, the
metrics and the report. A top-1 strategy on a single symbol holds AAPL whenever a score is
visible. It has a 5 % stop-loss and pays 0.1 % commission.
"""
    ),
    code(
        """
root = Path(tempfile.mkdtemp(prefix="ml4t-nb1-"))
signals.write_parquet(root / "aapl_signals.parquet")
os.environ["ML4T_DATA_ROOT"] = str(root)

experiment = Experiment.from_dict(
    {
        "name": "aapl_logistic",
        "data": {
            "prices": "demo",
            "symbols": ["AAPL"],
            "signals": {"path": "aapl_signals.parquet"},
            "max_fill_bars": 0,
        },
        "strategy": {"type": "TopN", "signal": "p_up", "n": 1, "weight": 0.95},
        "risk_rules": [{"type": "PriceBasedStopLoss", "stop_pct": 0.05}],
        "execution": {
            "commission": {"type": "Percentage", "rate": 0.001},
            "initial_cash": 100_000,
        },
    }
)
result = experiment.run()
result
"""
    ),
    code(
        """
first, last = prices["close"][0], prices["close"][-1]
print(f"buy and hold AAPL: {last / first - 1:.0%} total return")
result.plot_equity()
"""
    ),
    code("result.plot_drawdown()"),
    code(
        """
result.trades.group_by("exit_reason").agg(
    pl.len().alias("trades"), pl.col("pnl_net").sum(), pl.col("bars_held").mean()
)
"""
    ),
    md(
        """
`result.report()` returns the full HTML report, with the attribution, the monthly returns and
the lineage. `result.fills`, `result.portfolio_states` and `result.rejections` are polars
frames.
"""
    ),
]

SP500_TOP25 = [
    md(
        """
# Top-25 S&P 500 stocks by model score, with the seeds' risk rules

A walk-forward ridge model scores every stock. The strategy holds the 25 best scores (4 % of
equity each, rebalanced weekly). The risk rules come from the original design documents:

- `VolatilityScaledStopLoss`: a stop 2 × ATR(14) below the entry;
- `DynamicTrailingStop`: a 5 % trailing stop that tightens by 0.1 % per bar;
- `TimeBasedExit`: out after 60 bars;
- `MaxDrawdownRule`: no new positions while the book is more than 15 % below its peak.

To keep this notebook fast it uses every fifth symbol of the S&P file (101 stocks, 2013–2018).
For all 505, use `configs/sp500_top25.yaml`. The notebook reads
`sp500_5yr_daily_ohlcv.parquet` from `ML4T_DATA_ROOT`.
"""
    ),
    code(
        """
import os
from pathlib import Path

import polars as pl

from ml4t_pipeline import Experiment
"""
        + SETUP_DATA_ROOT
        + """
symbols = sorted(pl.read_parquet(SP500, columns=["symbol"])["symbol"].unique())[::5]
len(symbols)
"""
    ),
    code(
        """
experiment = Experiment.from_dict(
    {
        "name": "sp500_top25_seed_rules",
        "data": {
            "prices": SP500.name,
            "symbols": symbols,
            "signals": {"model": "ridge", "horizon": 5, "min_train_periods": 252},
            "invalid_rows": "quarantine",  # the file has a few broken rows
        },
        "strategy": {"type": "TopN", "signal": "score", "n": 25, "rebalance_every": 5},
        "risk_rules": [
            {"type": "VolatilityScaledStopLoss", "atr_multiplier": 2.0, "priority": 100},
            {"type": "DynamicTrailingStop", "initial_trail_pct": 0.05, "tighten_per_bar": 0.001},
            {"type": "TimeBasedExit", "max_bars": 60, "priority": 90},
            {"type": "MaxDrawdownRule", "max_drawdown": 0.15},
        ],
        "execution": {
            "commission": {"type": "PerShare", "cost": 0.005, "minimum": 1.0},
            "initial_cash": 1_000_000,
        },
    }
)
result = experiment.run()
result
"""
    ),
    md(
        """
## Which rule closed the trades

Every exit carries the name of the rule that decided it, or `strategy` when the weekly
rebalance sold the stock. Two rules set a stop level here, and on each bar the tighter one
counts.
"""
    ),
    code(
        """
result.trades.group_by("exit_reason").agg(
    pl.len().alias("trades"),
    pl.col("pnl_net").sum().round(0),
    pl.col("return_pct").mean().round(4),
    pl.col("bars_held").mean().round(1),
).sort("trades", descending=True)
"""
    ),
    code(
        """
# Orders that the drawdown limit (or the cash check) refused, with the reason.
result.rejections.group_by("rule").agg(pl.len(), pl.col("timestamp").min().alias("first"))
"""
    ),
    md(
        """
`MaxDrawdownRule` with `action="halt"` refuses every order that adds exposure while equity is
more than 15 % below its peak. Sells still pass. Once the book is flat its equity no longer
moves, so it cannot recover to the limit: a halt that empties the book lasts until the end of
the run. The equity curve below shows it. This is the rule doing its job. Choose the limit (or
`action="flatten"`) knowing that.
"""
    ),
    code("result.plot_equity()"),
    code("result.plot_drawdown()"),
    code(
        """
# The invalid price rows that were set aside, with the rule each one breaks.
result.prices_quarantine.select("timestamp", "symbol", "open", "high", "low", "close", "reason")
"""
    ),
    code(
        """
metrics = result.metrics
{k: round(metrics[k], 4) for k in ("cagr", "sharpe", "sortino", "max_drawdown", "turnover")}
"""
    ),
]

VIX_REGIME = [
    md(
        """
# Trading with the VIX: a regime-dependent stop and exposure scaled by volatility

CBOE's VIX closes at 16:15 New York, after the 16:00 equity close. The pipeline stamps each
VIX value at 16:15 and joins it backward, so a day's VIX is first seen on the **next** daily
bar. This notebook shows two uses:

1. a `RegimeDependentRule`: a tight 3 % stop when the VIX is above 25, a wide 8 % stop
   otherwise (through the pipeline, with `Experiment`);
2. a strategy that scales its exposure with the VIX (the engine on `DataPreparer` data).

The universe is every tenth S&P 500 stock (51 names, 2013–2018), ranked by 20-day return. The
notebook reads the S&P and VIX files from `ML4T_DATA_ROOT`.
"""
    ),
    code(
        """
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

import engine
from ml4t_pipeline import DataPreparer, Experiment
"""
        + SETUP_DATA_ROOT
        + """VIX = DATA_ROOT / "vix_daily_cboe.parquet"

symbols = sorted(pl.read_parquet(SP500, columns=["symbol"])["symbol"].unique())[::10]
len(symbols)
"""
    ),
    md("## 1. A stop that depends on the regime"),
    code(
        """
experiment = Experiment.from_dict(
    {
        "name": "sp500_vix_regime_stop",
        "data": {
            "prices": SP500.name,
            "symbols": symbols,
            "invalid_rows": "quarantine",
            "context": {"source": "vix", "path": VIX.name},
        },
        "strategy": {"type": "TopN", "signal": "ret_20", "n": 10, "rebalance_every": 5},
        "risk_rules": [
            {
                "type": "RegimeDependentRule",
                "context_column": "vix",
                "threshold": 25.0,
                "above": {"type": "PriceBasedStopLoss", "stop_pct": 0.03},
                "below": {"type": "PriceBasedStopLoss", "stop_pct": 0.08},
            }
        ],
        "execution": {"commission": {"type": "Percentage", "rate": 0.001}},
    }
)
regime = experiment.run()
regime
"""
    ),
    code(
        """
# P&L by VIX tercile at entry (the pipeline's regime attribution).
pl.read_parquet(regime.output / "attribution_by_regime.parquet")
"""
    ),
    code(
        """
# The VIX each trade saw at its entry: the previous session's close.
regime.trades.select("symbol", "entry_timestamp", "entry_vix", "exit_reason").head()
"""
    ),
    md(
        """
## 2. Exposure scaled by the VIX

The same ranking, run directly on the engine. At each weekly rebalance the strategy holds the
top 10, and each position gets `10 % × min(1, 20 / VIX)` of equity. The book is fully invested
when the VIX is at or below 20 and shrinks as volatility rises. The VIX the strategy reads
from `context` is the one known at that bar's close.
"""
    ),
    code(
        """
data = (
    DataPreparer(SP500, symbols=symbols)
    .add_features()
    .add_context(VIX, vix=True)
    .validate(invalid_rows="quarantine")
    .to_market_data()
)


class VixScaledTopN(engine.Strategy):
    # Top-n by a signal; each position is 1/n of equity times min(1, vix_ref / vix).

    def __init__(self, signal="ret_20", n=10, rebalance_every=5, vix_ref=20.0):
        self.signal, self.n = signal, n
        self.rebalance_every, self.vix_ref = rebalance_every, vix_ref

    def on_start(self):
        self.bar = 0
        self.exposure = []

    def on_timestamp_batch(self, timestamp, batch, context):
        self.bar += 1
        if (self.bar - 1) % self.rebalance_every:
            return
        vix = context["vix"]
        scale = 1.0 if not np.isfinite(vix) else min(1.0, self.vix_ref / vix)
        self.exposure.append((timestamp, scale))
        score = batch[self.signal]
        ok = np.flatnonzero(np.isfinite(score))
        top = ok[np.argsort(-score[ok], kind="stable")][: self.n]
        wanted = set(batch.symbols[top].tolist())
        for symbol in batch.symbols.tolist():
            if symbol not in wanted and self.has_position(symbol):
                self.close_position(symbol)
        for symbol in wanted:
            self.order_target_percent(symbol, scale / self.n)


def run(strategy):
    config = engine.ExecutionConfig(commission=engine.PercentageCommission(0.001))
    return engine.BacktestEngine(data, strategy, config=config).run()


scaled, constant = VixScaledTopN(), VixScaledTopN(vix_ref=np.inf)
runs = {"VIX-scaled": run(scaled), "constant": run(constant)}
shown = ("cagr", "annual_volatility", "sharpe", "max_drawdown")
pl.DataFrame(
    [{"run": name} | {k: round(r.metrics()[k], 4) for k in shown} for name, r in runs.items()]
)
"""
    ),
    code(
        """
fig, (top, bottom) = plt.subplots(
    2, 1, figsize=(9, 5), sharex=True, height_ratios=[3, 1], layout="constrained"
)
for name, r in runs.items():
    states = r.portfolio_states
    top.plot(states["timestamp"].dt.replace_time_zone(None), states["equity"], label=name)
top.set_ylabel("equity")
top.legend()
when, scale = zip(*scaled.exposure, strict=True)
bottom.step([t.replace(tzinfo=None) for t in when], scale, where="post")
bottom.set_ylabel("exposure scale")
plt.show()
"""
    ),
    md(
        """
The table compares the two books on this universe and period, and the lower panel shows when
the VIX cut the exposure (August 2015, early 2016, February 2018). Two things work against the
scaled book: the VIX is seen one bar late, and every resize pays commission. Run the same
comparison on your own universe and period before you rely on it.
"""
    ),
]

NOTEBOOKS = {
    "01_single_asset_ml.ipynb": SINGLE_ASSET,
    "02_sp500_top25_risk.ipynb": SP500_TOP25,
    "03_vix_regime.ipynb": VIX_REGIME,
}


def build(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    """A notebook of ``cells`` without outputs, with a Python 3 kernel and stable cell ids."""
    notebook = new_notebook(
        cells=[nbformat.from_dict(dict(cell)) for cell in cells],
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
    )
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{i:02d}"
    return notebook


def render(cells: list[nbformat.NotebookNode]) -> str:
    """The notebook file's text, as written to disk."""
    return nbformat.writes(build(cells)) + "\n"


def main() -> int:
    """Write every notebook next to this script; print the paths."""
    for name, cells in NOTEBOOKS.items():
        path = HERE / name
        path.write_text(render(cells))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
