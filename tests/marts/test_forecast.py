"""The forecast method on series whose shape is known: it must find trend and seasonality."""

from __future__ import annotations

import numpy as np
import pandas as pd

from include.pacbook.forecast import HORIZON_MONTHS, backtest_measure, build_forecast, forecast_measure


def seasonal_series(months: int = 36, seed: int = 1) -> pd.Series:
    rng = np.random.default_rng(seed)
    t = np.arange(months)
    values = 2000 + 40 * t + 400 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 30, months)
    return pd.Series(values, index=pd.date_range("2021-04-01", periods=months, freq="MS"))


def test_forecast_continues_the_months_with_an_interval_around_the_point():
    series = seasonal_series()
    forecast = forecast_measure(series)
    assert len(forecast) == HORIZON_MONTHS
    assert str(forecast["month"].iloc[0]) == "2024-04-01"
    assert (forecast["lower_80"] <= forecast["forecast"]).all()
    assert (forecast["forecast"] <= forecast["upper_80"]).all()
    assert (forecast["model"] == "holt-winters").all()
    # The trend goes on: each forecast month is above the same month a year earlier.
    year_earlier = series.iloc[-12 : -12 + HORIZON_MONTHS].to_numpy()
    assert (forecast["forecast"].to_numpy() > year_earlier).all()


def test_backtest_beats_the_seasonal_naive_baseline_when_there_is_a_trend():
    backtest = backtest_measure(seasonal_series()).set_index("method")
    assert backtest.loc["model", "origins"] == 12
    assert backtest.loc["model", "mape"] < backtest.loc["seasonal_naive", "mape"]


def test_short_history_falls_back_to_a_trend_model_and_is_deterministic():
    series = seasonal_series(months=18)
    first, second = forecast_measure(series), forecast_measure(series)
    assert (first["model"] == "holt-linear").all()
    pd.testing.assert_frame_equal(first, second)


def test_both_measures_are_forecast_and_backtested():
    frame = pd.DataFrame({"gross_revenue": seasonal_series(seed=2), "quantity": seasonal_series(seed=3) / 7})
    result = build_forecast(frame)
    assert set(result.forecast["measure"]) == {"gross_revenue", "quantity"}
    assert set(zip(result.backtest["measure"], result.backtest["method"], strict=True)) == {
        (m, k) for m in ("gross_revenue", "quantity") for k in ("model", "seasonal_naive")
    }
