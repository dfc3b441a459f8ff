"""Time features for any pandas frequency.

Two encodings of a timestamp index:

* ``timeF`` (continuous): calendar fields scaled to [-0.5, 0.5], the fields chosen by the frequency
  (finer frequencies add finer fields), as in the Informer paper's code.
* ``fixed`` / ``learned`` (calendar integers): always the five columns of ``CALENDAR_COLUMNS``
  (month 1-12, day 1-31, weekday 0-6, hour 0-23, minute 0-59); the model's embedding tables decide
  which of them to use (minute only for sub-hourly data).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

CALENDAR_COLUMNS = ("month", "day", "weekday", "hour", "minute")
CALENDAR_SIZES = {"month": 13, "day": 32, "weekday": 7, "hour": 24, "minute": 60}


def _minute_of_hour(idx: pd.DatetimeIndex) -> np.ndarray:
    return idx.minute.to_numpy() / 59.0 - 0.5


def _second_of_minute(idx: pd.DatetimeIndex) -> np.ndarray:
    return idx.second.to_numpy() / 59.0 - 0.5


def _hour_of_day(idx: pd.DatetimeIndex) -> np.ndarray:
    return idx.hour.to_numpy() / 23.0 - 0.5


def _day_of_week(idx: pd.DatetimeIndex) -> np.ndarray:
    return idx.day_of_week.to_numpy() / 6.0 - 0.5


def _day_of_month(idx: pd.DatetimeIndex) -> np.ndarray:
    return (idx.day.to_numpy() - 1) / 30.0 - 0.5


def _day_of_year(idx: pd.DatetimeIndex) -> np.ndarray:
    return (idx.day_of_year.to_numpy() - 1) / 365.0 - 0.5


def _week_of_year(idx: pd.DatetimeIndex) -> np.ndarray:
    return (idx.isocalendar().week.to_numpy(dtype=np.float64) - 1) / 52.0 - 0.5


def _month_of_year(idx: pd.DatetimeIndex) -> np.ndarray:
    return (idx.month.to_numpy() - 1) / 11.0 - 0.5


_BY_RESOLUTION = {
    # resolution of the frequency -> the continuous fields it gets, coarse to fine order kept stable
    "second": (_second_of_minute, _minute_of_hour, _hour_of_day, _day_of_week, _day_of_month, _day_of_year),
    "minute": (_minute_of_hour, _hour_of_day, _day_of_week, _day_of_month, _day_of_year),
    "hour": (_hour_of_day, _day_of_week, _day_of_month, _day_of_year),
    "day": (_day_of_week, _day_of_month, _day_of_year),
    "week": (_day_of_month, _week_of_year),
    "month": (_month_of_year,),
    "year": (),
}


def frequency_resolution(freq: str) -> str:
    """The calendar resolution of a pandas frequency alias: second, minute, hour, day, week, month, year."""
    try:
        offset = to_offset(freq)
    except ValueError as exc:
        raise ValueError(
            f"unknown frequency {freq!r}: use a pandas alias such as 'h', '15min', 's', 'D', 'B', 'W', 'MS'"
        ) from exc
    name = type(offset).__name__
    if name in {"Second", "Milli", "Micro", "Nano"}:
        return "second"
    if name == "Minute":
        return "minute"
    if name == "Hour":
        return "hour"
    if name in {"Day", "BusinessDay", "CustomBusinessDay"}:
        return "day"
    if name == "Week":
        return "week"
    if "Month" in name or "Quarter" in name:
        return "month"
    if "Year" in name:
        return "year"
    raise ValueError(f"frequency {freq!r} ({name}) is not supported for time features")


def is_sub_hourly(freq: str) -> bool:
    return frequency_resolution(freq) in {"minute", "second"}


def time_feature_dim(freq: str) -> int:
    """Number of continuous (timeF) features for a frequency, e.g. 4 for 'h', 5 for '15min'."""
    return len(_BY_RESOLUTION[frequency_resolution(freq)])


def continuous_time_features(index: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """[len(index), time_feature_dim(freq)] float32 features in [-0.5, 0.5]."""
    index = pd.DatetimeIndex(index)
    fields = _BY_RESOLUTION[frequency_resolution(freq)]
    if not fields:
        return np.zeros((len(index), 0), dtype=np.float32)
    return np.stack([f(index) for f in fields], axis=1).astype(np.float32)


def calendar_time_features(index: pd.DatetimeIndex) -> np.ndarray:
    """[len(index), 5] int64 columns month, day, weekday, hour, minute (see CALENDAR_COLUMNS)."""
    index = pd.DatetimeIndex(index)
    return np.stack(
        [index.month.to_numpy(), index.day.to_numpy(), index.day_of_week.to_numpy(),
         index.hour.to_numpy(), index.minute.to_numpy()],
        axis=1,
    ).astype(np.int64)


def time_features(index: pd.DatetimeIndex, freq: str, embed: str) -> np.ndarray:
    """Time marks for the model: continuous for ``embed='timeF'``, calendar integers otherwise."""
    if embed == "timeF":
        return continuous_time_features(index, freq)
    return calendar_time_features(index)
