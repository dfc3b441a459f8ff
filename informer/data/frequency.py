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
        f"line {odd + 3} is {steps[odd]}; set dataset.freq (e.g. {_FREQ_EXAMPLES}) to the series' "
        "sampling frequency"
    )


def check_order(index: pd.DatetimeIndex, source: str | Path, first_line: int = 2) -> None:
    """Timestamps must strictly increase: report the first duplicate or backwards step by line."""
    steps = (index[1:] - index[:-1]).to_numpy()
    bad = np.flatnonzero(steps <= np.timedelta64(0))
    if not bad.size:
        return
    row = int(bad[0])
    here, there = first_line + row, first_line + row + 1
    if steps[row] == np.timedelta64(0):
        count = int(index.duplicated().sum())
        raise DataError(f"{source}: duplicate timestamp {index[row]} at lines {here} and {there} "
                        f"({count} duplicated timestamp(s) in all); keep one row per timestamp")
    count = int((steps < np.timedelta64(0)).sum())
    raise DataError(f"{source}: timestamps are out of order: line {there} ({index[row + 1]}) comes after "
                    f"line {here} ({index[row]}) ({count} backward step(s) in all); "
                    "sort the rows by date")


def check_regular(index: pd.DatetimeIndex, freq: str, source: str | Path = "the series", *,
                  inferred: bool = False, first_line: int = 2) -> None:
    """Check that ``index`` is strictly increasing and continues one ``freq`` step at a time.

    Used for training CSVs and for forecast inputs (whose frequency must be the checkpoint's). The
    first problem is reported by file line (``first_line`` is the line of ``index[0]``) together with
    the expected and the found timestamp and the number of gaps.
    """
    offset = to_pandas_offset(freq, source)
    guess = (f" (the frequency {freq!r} was inferred from the most common step; set dataset.freq "
             "if that is wrong)") if inferred else ""
    if len(index) == 0:
        return
    if not isinstance(offset, Tick) and not offset.is_on_offset(index[0]):
        raise DataError(f"{source}: the first timestamp {index[0]} (line {first_line}) is not a "
                        f"{freq!r} timestamp{guess}; start the series on one or set dataset.freq")
    expected = index[:-1] + offset
    wrong = np.flatnonzero(index[1:] != expected)
    if not wrong.size:
        return
    row = int(wrong[0])
    before, found, want = index[row], index[row + 1], expected[row]
    line = first_line + row + 1
    if found <= before:
        check_order(index, source, first_line)
    if found < want:
        raise DataError(
            f"{source}: timestamp {found} at line {line} is off the {freq!r} grid: the step from line "
            f"{line - 1} ({before}) is {found - before}, expected {want}{guess}; resample the series "
            f"to one row per {freq!r} step ({wrong.size} irregular step(s) in all)"
        )
    missing = _count_missing(index, offset)
    raise DataError(
        f"{source}: gap in the series at line {line}: expected {want} after line {line - 1} ({before}), "
        f"found {found}{guess}; {wrong.size} gap(s) in all ({missing} missing timestamp(s)); fill the "
        "missing rows (e.g. reindex and interpolate) so the series is regular"
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
