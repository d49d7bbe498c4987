"""Pandera (polars) schemas of the backtest's outputs: fills, trades and portfolio states.

The engine returns these tables as polars frames; the pipeline validates them once at the asset
boundary and publishes the column descriptions in the Dagster UI. Extra columns are allowed
(``entry_<signal>``, ``exit_<indicator>``, context columns): each experiment names its own.
Units: prices in currency per share, quantities in shares, P&L and costs in currency, returns and
drawdowns as fractions.
"""

from __future__ import annotations

from typing import Annotated

import pandera.polars as pa
import polars as pl

UtcTime = Annotated[pl.Datetime, "us", "UTC"]


class FillsSchema(pa.DataFrameModel):
    """One row per execution."""

    fill_id: int = pa.Field(unique=True, description="Fill number, unique within the run.")
    order_id: int = pa.Field(description="The order this fill executes.")
    timestamp: UtcTime = pa.Field(description="Close stamp (UTC) of the bar the fill happened in.")
    symbol: str = pa.Field(description="Instrument.")
    side: str = pa.Field(isin=["buy", "sell"], description="buy or sell.")
    quantity: float = pa.Field(ne=0, description="Signed shares: + buy, − sell.")
    price_before_slippage: float = pa.Field(
        gt=0, description="Fill price from the fill rule, currency per share."
    )
    price: float = pa.Field(gt=0, description="Fill price after slippage, currency per share.")
    commission: float = pa.Field(ge=0, description="Commission of this fill, currency.")
    slippage: float = pa.Field(ge=0, description="Slippage cost of this fill, currency.")
    order_type: str = pa.Field(description="market, limit, stop, stop_limit, trailing_stop.")
    reason: str = pa.Field(description="Why the order was placed: strategy or a risk rule.")

    class Config:
        strict = False


class TradesSchema(pa.DataFrameModel):
    """One row per round trip (or per partial exit, flagged ``partial``)."""

    trade_id: int = pa.Field(unique=True, description="Trade number, unique within the run.")
    symbol: str = pa.Field(description="Instrument.")
    side: str = pa.Field(isin=["long", "short"], description="long or short.")
    decision_timestamp: UtcTime = pa.Field(
        description="Close (UTC) of the bar whose data produced the entry order."
    )
    entry_timestamp: UtcTime = pa.Field(description="Bar (UTC close stamp) of the entry fill.")
    exit_timestamp: UtcTime = pa.Field(description="Bar (UTC close stamp) of the exit fill.")
    entry_price: float = pa.Field(gt=0, description="Entry fill price, currency per share.")
    exit_price: float = pa.Field(gt=0, description="Exit fill price, currency per share.")
    quantity: float = pa.Field(gt=0, description="Shares traded (positive).")
    commission: float = pa.Field(ge=0, description="Entry + exit commission, currency.")
    slippage: float = pa.Field(ge=0, description="Entry + exit slippage, currency.")
    exit_reason: str = pa.Field(description="The exit's rule name, or `strategy`.")
    pnl_gross: float = pa.Field(description="P&L before costs, currency.")
    pnl_net: float = pa.Field(description="P&L after commission and slippage, currency.")
    return_pct: float = pa.Field(description="pnl_net / (entry_price × quantity), fraction.")
    bars_held: int = pa.Field(ge=0, description="Bars from entry to exit (entry bar = 0).")
    mfe: float = pa.Field(ge=0, description="Maximum favourable excursion, currency.")
    mae: float = pa.Field(le=0, description="Maximum adverse excursion, currency.")

    class Config:
        strict = False

    @pa.dataframe_check
    def exit_not_before_entry(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A trade exits at or after it enters, which is after its decision bar."""
        return data.lazyframe.select(
            (pl.col("exit_timestamp") >= pl.col("entry_timestamp"))
            & (pl.col("entry_timestamp") >= pl.col("decision_timestamp"))
        )


class PortfolioStatesSchema(pa.DataFrameModel):
    """One row per bar."""

    timestamp: UtcTime = pa.Field(unique=True, description="Bar close (UTC).")
    equity: float = pa.Field(description="cash + positions_value, currency.")
    cash: float = pa.Field(description="Cash, currency.")
    positions_value: float = pa.Field(description="Σ quantity × close (signed), currency.")
    gross_leverage: float = pa.Field(ge=0, description="Σ |position value| / equity.")
    net_leverage: float = pa.Field(description="Σ position value / equity.")
    n_positions: int = pa.Field(ge=0, description="Open positions at the close.")
    drawdown: float = pa.Field(le=0, description="equity / running peak − 1, fraction ≤ 0.")

    class Config:
        strict = False

    @pa.dataframe_check
    def equity_is_cash_plus_positions(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """equity = cash + positions_value (to a cent)."""
        return data.lazyframe.select(
            (pl.col("equity") - pl.col("cash") - pl.col("positions_value")).abs() <= 0.01
        )


def validate_output(frame: pl.DataFrame, model: type[pa.DataFrameModel]) -> pl.DataFrame:
    """Validate an output table; return its failure cases (empty frame when valid).

    Uses ``lazy=True`` so every failing column and check is reported at once; the failure-case
    frame has ``column``, ``check``, ``failure_case`` and ``index`` (row) columns.
    """
    try:
        model.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases: pl.DataFrame = exc.failure_cases
        return cases
    return pl.DataFrame(schema={"failure_case": pl.String, "column": pl.String, "check": pl.String})
