"""Sampling frequency of a series: normalise or infer it, check the series is regular, look ahead.

Frequencies are pandas aliases ('h', '15min', 's', 'D', 'B', 'W-SUN', 'MS', ...). A *regular*
series has strictly increasing timestamps where each one is the previous plus one step of the
frequency: no gaps and no off-grid timestamps.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import BaseOffset, Tick

from informer.data.timefeatures import frequency_resolution
from informer.errors import DataError

_FREQ_EXAMPLES = "'h', '15min', 's', 'D', 'B', 'W', 'MS'"
CSV_FIRST_DATA_LINE = 2  # line 1 of a CSV is its header


def to_pandas_offset(freq: str, source: str | Path = "dataset.freq") -> BaseOffset:
    """The offset for an alias, or a DataError that names the bad alias and valid examples."""
    try:
        return to_offset(freq)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{source}: {freq!r} is not a pandas frequency alias; use one such as "
                        f"{_FREQ_EXAMPLES} (pandas 3 spells hours 'h' and minutes 'min')") from exc


def normalize_freq(freq: str, source: str | Path = "dataset.freq") -> str:
    """Canonical spelling of an alias ('W' -> 'W-SUN', '60min' -> 'h'), so saved configs compare equal."""
    return to_pandas_offset(freq, source).freqstr


def infer_frequency(index: pd.DatetimeIndex) -> str | None:
    """pd.infer_freq as a string, or None when the timestamps fit no single frequency."""
    if len(index) < 3:
        return None
    # pandas 3.1 announces an offset return type; opt in where the option exists, read .freqstr either way
    option = contextlib.nullcontext()
    with contextlib.suppress(pd.errors.OptionError, KeyError):
        pd.get_option("future.infer_freq_returns_offset")
        option = pd.option_context("future.infer_freq_returns_offset", True)
    with option:
        try:
            found = pd.infer_freq(index)
        except (ValueError, TypeError):
            return None
    if found is None:
        return None
    return found if isinstance(found, str) else found.freqstr


def _timedelta_alias(step: pd.Timedelta) -> str:
    for unit, alias in (("1D", "D"), ("1h", "h"), ("1min", "min"), ("1s", "s")):
        count, rest = divmod(step, pd.Timedelta(unit))
        if rest == pd.Timedelta(0):
            return alias if count == 1 else f"{count}{alias}"
    return to_offset(step).freqstr


def resolve_frequency(index: pd.DatetimeIndex, freq: str | None,
                      source: str | Path) -> tuple[str, bool]:
    """``(freq, inferred)``: the given alias normalised, or one inferred from the timestamps.

    Inference uses pd.infer_freq; when that fails (gaps, for example) the most common step is used if
    every step is a whole multiple of it, so that the gaps are reported by :func:`check_regular`.
    Otherwise the series is too irregular to guess and dataset.freq must be set.
    """
    if freq:
        return normalize_freq(freq, f"{source}: dataset.freq"), False
    found = infer_frequency(index)
    if found is not None:
        return found, True
    if len(index) < 2:
        raise DataError(f"{source}: cannot infer the frequency from {len(index)} timestamp(s); "
                        f"set dataset.freq (e.g. {_FREQ_EXAMPLES})")
    steps = index[1:] - index[:-1]
    common = steps.value_counts().idxmax()
    uneven = np.flatnonzero(np.asarray((steps % common) != pd.Timedelta(0)))
    if not uneven.size:
        return _timedelta_alias(common), True
    odd = int(uneven[0])
    raise DataError(
        f"{source}: cannot infer the frequency: the most common step is {common}, but the step before "
        f"{row_label(odd + 1)} is {steps[odd]}; set dataset.freq (e.g. {_FREQ_EXAMPLES}) to the series' "
        "sampling frequency"
    )


def row_label(row: int, in_file: bool = True) -> str:
    """Where 0-based data row ``row`` is: ``line N`` of a CSV (the header is line 1), else ``row N``."""
    return f"line {row + CSV_FIRST_DATA_LINE}" if in_file else f"row {row}"


def _row_pair(row: int, in_file: bool) -> str:
    """``lines N and N+1`` (or ``rows ...``): data rows ``row`` and ``row + 1``."""
    first = row + CSV_FIRST_DATA_LINE if in_file else row
    return f"{'lines' if in_file else 'rows'} {first} and {first + 1}"


def check_order(index: pd.DatetimeIndex, source: str | Path, *, first_row: int = 0,
                in_file: bool = True) -> None:
    """Timestamps must strictly increase: report the first duplicate or backwards step by its row.

    ``first_row`` is the data row of ``index[0]``; rows are named as file lines when ``in_file``.
    """
    steps = (index[1:] - index[:-1]).to_numpy()
    bad = np.flatnonzero(steps <= np.timedelta64(0))
    if not bad.size:
        return
    row = first_row + int(bad[0])
    here, there = row_label(row, in_file), row_label(row + 1, in_file)
    if steps[bad[0]] == np.timedelta64(0):
        count = int(index.duplicated().sum())
        raise DataError(f"{source}: duplicate timestamp {index[bad[0]]} at {_row_pair(row, in_file)} "
                        f"({there} repeats it; {count} duplicated timestamp(s) in all); "
                        "keep one row per timestamp")
    count = int((steps < np.timedelta64(0)).sum())
    raise DataError(f"{source}: timestamps are out of order: {there} ({index[bad[0] + 1]}) comes after "
                    f"{here} ({index[bad[0]]}) ({count} backward step(s) in all); sort the rows by date")


def check_regular(index: pd.DatetimeIndex, freq: str, source: str | Path = "the series", *,
                  inferred: bool = False, trained: bool = False, first_row: int = 0,
                  in_file: bool = True) -> None:
    """Check that ``index`` is strictly increasing and continues one ``freq`` step at a time.

    Used for training CSVs (the whole series) and for forecast inputs (the rows a forecast reads,
    ``trained=True``: the frequency is the checkpoint's, so the fix is to resample, not to change
    dataset.freq). The first problem is reported by its row (``first_row`` is the data row of
    ``index[0]``) with the expected and the found timestamp and the number of problems.
    """
    offset = to_pandas_offset(freq, source)
    if inferred:
        guess = (f" (the frequency {freq!r} was inferred from the most common step; set dataset.freq "
                 "if that is wrong)")
    else:
        guess = f" ({freq!r} is the frequency the model was trained on)" if trained else ""
    if len(index) == 0:
        return
    if not isinstance(offset, Tick) and not offset.is_on_offset(index[0]):
        fix = f"resample the data to {freq!r}" if trained else "start the series on one or set dataset.freq"
        raise DataError(f"{source}: the first timestamp {index[0]} ({row_label(first_row, in_file)}) is "
                        f"not a {freq!r} timestamp{guess}; {fix}")
    expected = index[:-1] + offset
    wrong = np.flatnonzero(index[1:] != expected)
    if not wrong.size:
        return
    k = int(wrong[0])
    before, found, want = index[k], index[k + 1], expected[k]
    prev, here = row_label(first_row + k, in_file), row_label(first_row + k + 1, in_file)
    if found <= before:
        check_order(index, source, first_row=first_row, in_file=in_file)
    if found < want:
        raise DataError(
            f"{source}: timestamp {found} at {here} is off the {freq!r} grid: the step from {prev} "
            f"({before}) is {found - before}, expected {want}{guess}; resample the series to one row per "
            f"{freq!r} step ({wrong.size} irregular step(s) in all)"
        )
    missing = _count_missing(index, offset)
    raise DataError(
        f"{source}: gap in the series at {here}: expected {want} after {prev} ({before}), found {found}, "
        f"so the series does not continue at {freq!r}{guess}; {wrong.size} gap(s) in all ({missing} "
        "missing timestamp(s)); fill the missing rows (e.g. reindex and interpolate) so the series is regular"
    )


def _count_missing(index: pd.DatetimeIndex, offset: BaseOffset) -> str:
    if isinstance(offset, Tick):
        total = (index[-1] - index[0]) // pd.Timedelta(offset) + 1
    else:
        total = len(pd.date_range(index[0], index[-1], freq=offset))
    return str(max(int(total) - len(index), 0))


def future_timestamps(last: pd.Timestamp | str, freq: str, periods: int) -> pd.DatetimeIndex:
    """The ``periods`` timestamps that follow ``last`` at ``freq`` (the forecast horizon's index)."""
    offset = to_pandas_offset(freq)
    start = pd.Timestamp(last) + offset
    return pd.date_range(start, periods=periods, freq=offset)


def seasonal_period(freq: str, seq_len: int, override: int | None = None) -> int:
    """Steps in one season, for the seasonal-naive baseline (repeat the value one season ago).

    ``override`` (dataset.seasonal_period) wins; otherwise one day for sub-daily data (24 for 'h',
    96 for '15min'), a week for daily data (7 for 'D', 5 for 'B'), a year for weekly (52) and
    monthly (12) data. The result is capped to ``seq_len`` because the baseline can only look back
    as far as the encoder input reaches, and is at least 1.
    """
    if override is not None:
        period = int(override)
    else:
        offset = to_pandas_offset(freq)
        resolution = frequency_resolution(freq)
        if isinstance(offset, Tick) and resolution in {"second", "minute", "hour"}:
            period = round(pd.Timedelta("1D") / pd.Timedelta(offset))
        elif type(offset).__name__ in {"BusinessDay", "CustomBusinessDay"}:
            period = max(1, round(5 / offset.n))
        elif resolution == "day":
            period = max(1, round(7 / offset.n))
        elif resolution == "week":
            period = max(1, round(52 / offset.n))
        elif resolution == "month":
            period = 4 if "Quarter" in type(offset).__name__ else 12
            period = max(1, round(period / offset.n))
        else:
            period = 1
    return max(1, min(period, seq_len))
