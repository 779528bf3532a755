"""Sales forecast: the next 6 months of revenue and quantity with an 80% prediction interval.

Method: Holt-Winters exponential smoothing (additive trend, additive yearly seasonality) on complete
calendar months of `marts.monthly_sales`; the interval comes from 2,000 simulated future paths with
the model's own residual errors (seeded, so a rerun writes the same numbers). With fewer than two
full years of complete months the seasonal part cannot be estimated and Holt's linear trend is used.

Backtest: rolling origin over the last 12 complete months — for each month, fit on everything before
it and forecast it one step ahead — against the seasonal-naive baseline (the same month a year
earlier). Both errors are written, whichever wins: the point is to know, not to look good.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg

log = logging.getLogger("pacbook.forecast")

MODEL_VERSION = "holt-winters-additive/1"
HORIZON_MONTHS = 6
BACKTEST_MONTHS = 12
INTERVAL = 0.80
MEASURES = {"gross_revenue": "gross_revenue", "quantity": "books_sold"}

_DDL = """
create table if not exists marts.sales_forecast (
    run_date date not null,
    measure text not null,
    month date not null,
    forecast numeric(14, 2) not null,
    lower_80 numeric(14, 2) not null,
    upper_80 numeric(14, 2) not null,
    model text not null,
    model_version text not null,
    trained_through date not null,
    primary key (run_date, measure, month)
);
create table if not exists marts.sales_forecast_backtest (
    run_date date not null,
    measure text not null,
    method text not null,
    origins integer not null,
    first_origin date not null,
    last_origin date not null,
    mape numeric(8, 4),
    mae numeric(14, 2) not null,
    model_version text not null,
    primary key (run_date, measure, method)
);
"""


@dataclass(frozen=True)
class ForecastResult:
    forecast: pd.DataFrame
    backtest: pd.DataFrame


def complete_monthly_series(conn: psycopg.Connection) -> pd.DataFrame:
    """Monthly totals for complete calendar months only; months without orders count as zero."""
    first, last = conn.execute("select min(order_date), max(order_date) from dwh.fct_sales").fetchone()
    if first is None:
        return pd.DataFrame(columns=list(MEASURES))
    rows = conn.execute("select month, gross_revenue, books_sold from marts.monthly_sales order by month").fetchall()
    frame = pd.DataFrame(rows, columns=["month", "gross_revenue", "books_sold"])
    frame["month"] = pd.to_datetime(frame["month"])
    frame = frame.set_index("month").astype(float)
    start = pd.Timestamp(first.date()).to_period("M").to_timestamp()
    end = pd.Timestamp(last.date()).to_period("M").to_timestamp()
    if first.date().day != 1 or first.time() != dt.time(0):
        start += pd.offsets.MonthBegin(1)  # the first month is partial
    if (pd.Timestamp(last.date()) + pd.Timedelta(days=1)).day != 1:
        end -= pd.offsets.MonthBegin(1)  # the last month is partial
    months = pd.date_range(start, end, freq="MS")
    frame = frame.reindex(months, fill_value=0.0)
    return frame.rename(columns={v: k for k, v in MEASURES.items()})[list(MEASURES)]


def _fit(series: pd.Series):
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    seasonal = len(series) >= 24
    model = ExponentialSmoothing(
        series.to_numpy(),
        trend="add",
        seasonal="add" if seasonal else None,
        seasonal_periods=12 if seasonal else None,
        initialization_method="estimated",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the backtest judges the fit
        return model.fit(optimized=True), ("holt-winters" if seasonal else "holt-linear")


def forecast_measure(series: pd.Series, horizon: int = HORIZON_MONTHS, seed: int = 20240326) -> pd.DataFrame:
    fitted, model_name = _fit(series)
    point = fitted.forecast(horizon)
    paths = fitted.simulate(horizon, repetitions=2000, error="add", anchor="end", rng=np.random.default_rng(seed))
    lower = np.quantile(paths, (1 - INTERVAL) / 2, axis=1)
    upper = np.quantile(paths, 1 - (1 - INTERVAL) / 2, axis=1)
    months = pd.date_range(series.index[-1] + pd.offsets.MonthBegin(1), periods=horizon, freq="MS")
    floor = 0.0  # neither revenue nor quantity can be negative
    return pd.DataFrame(
        {
            "month": months.date,
            "forecast": np.maximum(point, floor),
            "lower_80": np.maximum(lower, floor),
            "upper_80": np.maximum(upper, floor),
            "model": model_name,
        }
    )


def backtest_measure(series: pd.Series, origins: int = BACKTEST_MONTHS) -> pd.DataFrame:
    """One-step-ahead errors of the model and of the seasonal-naive baseline, over the last months."""
    rows = []
    for position in range(len(series) - origins, len(series)):
        if position < 13:
            continue  # the baseline needs the month a year earlier, the model a year of history
        history, actual = series.iloc[:position], float(series.iloc[position])
        fitted, _ = _fit(history)
        predicted = max(float(fitted.forecast(1)[0]), 0.0)
        naive = float(series.iloc[position - 12])
        for method, value in (("model", predicted), ("seasonal_naive", naive)):
            rows.append(
                {"origin": series.index[position].date(), "method": method, "actual": actual, "predicted": value}
            )
    detail = pd.DataFrame(rows)
    if detail.empty:
        return detail
    detail["abs_error"] = (detail["actual"] - detail["predicted"]).abs()
    detail["ape"] = np.where(
        detail["actual"] > 0, detail["abs_error"] / detail["actual"].where(detail["actual"] > 0), np.nan
    )
    return (
        detail.groupby("method")
        .agg(
            origins=("origin", "count"),
            first_origin=("origin", "min"),
            last_origin=("origin", "max"),
            mape=("ape", "mean"),
            mae=("abs_error", "mean"),
        )
        .reset_index()
    )


def build_forecast(series_frame: pd.DataFrame) -> ForecastResult:
    forecasts, backtests = [], []
    for measure in MEASURES:
        series = series_frame[measure]
        if len(series) < 13:
            raise ValueError(f"sales_forecast: only {len(series)} complete months of sales; 13 are needed")
        forecasts.append(forecast_measure(series).assign(measure=measure))
        backtests.append(backtest_measure(series).assign(measure=measure))
    return ForecastResult(pd.concat(forecasts, ignore_index=True), pd.concat(backtests, ignore_index=True))


def write_sales_forecast(warehouse_uri: str, run_date: dt.date) -> ForecastResult:
    """Fits, backtests and writes the forecast for `run_date`; rerunning the same date replaces it."""
    with psycopg.connect(warehouse_uri) as conn:
        series_frame = complete_monthly_series(conn)
        result = build_forecast(series_frame)
        trained_through = series_frame.index[-1].date()
        with conn.transaction():
            conn.execute(_DDL)
            conn.execute("delete from marts.sales_forecast where run_date = %s", (run_date,))
            conn.execute("delete from marts.sales_forecast_backtest where run_date = %s", (run_date,))
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into marts.sales_forecast values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (
                            run_date,
                            r.measure,
                            r.month,
                            round(r.forecast, 2),
                            round(r.lower_80, 2),
                            round(r.upper_80, 2),
                            r.model,
                            MODEL_VERSION,
                            trained_through,
                        )
                        for r in result.forecast.itertuples()
                    ],
                )
                cur.executemany(
                    "insert into marts.sales_forecast_backtest values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (
                            run_date,
                            r.measure,
                            r.method,
                            int(r.origins),
                            r.first_origin,
                            r.last_origin,
                            None if pd.isna(r.mape) else round(float(r.mape), 4),
                            round(float(r.mae), 2),
                            MODEL_VERSION,
                        )
                        for r in result.backtest.itertuples()
                    ],
                )
    for r in result.backtest.itertuples():
        log.info(
            "forecast backtest measure=%s method=%s mape=%.4f mae=%.2f origins=%d",
            r.measure,
            r.method,
            r.mape,
            r.mae,
            r.origins,
        )
    return result
