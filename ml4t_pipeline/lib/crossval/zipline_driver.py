"""Zipline-reloaded driver of the parity scenarios, run as a script in its own virtual env.

Zipline-reloaded 3.2.1 needs ``pandas < 3`` and vectorbt 1.2 needs ``pandas >= 3``, so Zipline
cannot share the project's environment. This file imports only the standard library, pandas,
numpy and zipline (never the project), and runs as
``ZIPLINE_PYTHON ml4t_pipeline/lib/crossval/zipline_driver.py WORKDIR``; it is driven by
:func:`ml4t_pipeline.lib.crossval.parity_zipline.run_zipline_scenario`, which writes into
``WORKDIR``:

- ``bars.parquet``: ``date`` (naive trading date), ``symbol``, open, high, low, close, volume;
- ``signals.parquet``: ``entry_long``, ``exit_long``, ``entry_short``, ``exit_short``
  (bool, one row per date, columns ``<signal>__<symbol>``);
- ``spec.json``: ``symbols``, ``quantity`` (shares per symbol), ``direction``, ``commission``
  and ``slippage`` (``[kind, value]`` or null), ``initial_cash``.

It writes ``fills.parquet`` (``date``, ``symbol``, ``quantity``, ``price``) and
``result.json`` (``final_equity``, ``seconds``).

How the scenario is written in Zipline: a custom bundle (``daily_bar_writer``; Zipline stores
prices as integer thousandths, so the caller rounds every price to 0.001 for all frameworks),
calendar ``XNYS``; ``handle_data`` of bar ``t`` orders with ``order(asset, amount)`` from the
signals of bar ``t`` and Zipline fills the order at bar ``t + 1``'s close (its daily-mode
rule); ``set_slippage(FixedSlippage(spread=0))`` (no volume limit, no price impact);
``set_commission(PerDollar(rate))`` or ``PerShare(cost, min_trade_cost=0)``; slippage
``FixedSlippage(spread=2 × amount)`` (a fixed amount per share) or
``FixedBasisPointsSlippage(bps, volume_limit=1)`` (a fraction of the price).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main(workdir: Path) -> None:
    import numpy as np
    import pandas as pd
    from zipline import run_algorithm
    from zipline.api import (
        get_open_orders,
        order,
        set_commission,
        set_slippage,
        symbol,
    )
    from zipline.data.bundles import ingest, register
    from zipline.finance.commission import PerDollar, PerShare
    from zipline.finance.slippage import FixedBasisPointsSlippage, FixedSlippage

    spec = json.loads((workdir / "spec.json").read_text())
    bars = pd.read_parquet(workdir / "bars.parquet")
    signals = pd.read_parquet(workdir / "signals.parquet")
    symbols: list[str] = spec["symbols"]
    dates = pd.DatetimeIndex(sorted(bars["date"].unique()))
    start, end = dates[0], dates[-1]

    def ingest_fn(
        environ, asset_db_writer, minute_bar_writer, daily_bar_writer, adjustment_writer,
        calendar, start_session, end_session, cache, show_progress, output_dir,
    ):  # fmt: skip
        meta = pd.DataFrame(
            {
                "symbol": symbols,
                "asset_name": symbols,
                "start_date": start,
                "end_date": end,
                "first_traded": start,
                "auto_close_date": end + pd.Timedelta(days=1),
                "exchange": "NYSE",
            }
        )
        exchanges = pd.DataFrame(
            {"exchange": ["NYSE"], "canonical_name": ["NYSE"], "country_code": ["US"]}
        )
        asset_db_writer.write(equities=meta, exchanges=exchanges)

        def frames():
            for sid, sym in enumerate(symbols):
                df = bars[bars["symbol"] == sym].set_index("date").sort_index()
                yield sid, df[["open", "high", "low", "close", "volume"]]

        daily_bar_writer.write(frames(), show_progress=False)
        adjustment_writer.write()

    register("ml4t_parity", ingest_fn, calendar_name="XNYS", start_session=start,
             end_session=end)  # fmt: skip
    ingest("ml4t_parity", environ=os.environ, show_progress=False)

    def sig(name: str) -> np.ndarray:
        return signals[[f"{name}__{s}" for s in symbols]].to_numpy(dtype=bool)

    entry_long, exit_long = sig("entry_long"), sig("exit_long")
    entry_short, exit_short = sig("entry_short"), sig("exit_short")
    qty = np.asarray(spec["quantity"], dtype=float)
    direction = spec["direction"]

    def initialize(context):
        slippage = spec.get("slippage")
        if slippage is None:
            set_slippage(us_equities=FixedSlippage(spread=0.0))
        elif slippage[0] == "fixed":  # half the spread each way: price +/- amount
            set_slippage(us_equities=FixedSlippage(spread=2.0 * slippage[1]))
        else:  # a fraction of the price; volume_limit=1: the whole bar's volume
            set_slippage(
                us_equities=FixedBasisPointsSlippage(
                    basis_points=slippage[1] * 10_000.0, volume_limit=1.0
                )
            )
        commission = spec["commission"]
        if commission is None:
            set_commission(us_equities=PerShare(cost=0.0, min_trade_cost=0.0))
        elif commission[0] == "percent":
            set_commission(us_equities=PerDollar(cost=commission[1]))
        else:
            set_commission(us_equities=PerShare(cost=commission[1], min_trade_cost=0.0))
        context.assets = [symbol(s) for s in symbols]
        context.i = 0

    def handle_data(context, data):
        i = context.i
        context.i += 1
        for j, asset in enumerate(context.assets):
            pos = context.portfolio.positions[asset].amount
            flat = pos == 0
            if (pos > 0 and exit_long[i, j]) or (pos < 0 and exit_short[i, j]):
                order(asset, -pos)
                flat = True
            if not flat or (pos == 0 and get_open_orders(asset)):
                continue
            if direction != "short" and entry_long[i, j]:
                order(asset, int(qty[j]))
            elif direction != "long" and entry_short[i, j]:
                order(asset, -int(qty[j]))

    t0 = time.perf_counter()
    perf = run_algorithm(
        start=start,
        end=end,
        initialize=initialize,
        handle_data=handle_data,
        capital_base=float(spec["initial_cash"]),
        data_frequency="daily",
        bundle="ml4t_parity",
        benchmark_returns=pd.Series(0.0, index=dates.tz_localize("UTC")),
    )
    seconds = time.perf_counter() - t0
    rows = []
    for day in perf["transactions"]:
        for tx in day:
            rows.append(
                {
                    "date": pd.Timestamp(tx["dt"]).tz_localize(None).normalize(),
                    "symbol": tx["sid"].symbol,
                    "quantity": float(tx["amount"]),
                    "price": float(tx["price"]),
                }
            )
    pd.DataFrame(rows, columns=["date", "symbol", "quantity", "price"]).to_parquet(
        workdir / "fills.parquet"
    )
    (workdir / "result.json").write_text(
        json.dumps({"final_equity": float(perf["portfolio_value"].iloc[-1]), "seconds": seconds})
    )


if __name__ == "__main__":
    work = Path(sys.argv[1])
    os.environ.setdefault("ZIPLINE_ROOT", tempfile.mkdtemp(prefix="zipline-root-"))
    main(work)
