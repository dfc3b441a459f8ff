"""The forecast's input: read a CSV or DataFrame and check the rows a forecast will read.

Only the rows the model actually uses (the look-back window, and for a backtest the rows after it)
must be clean: an old gap or a missing value years before the window does not stop a forecast.
Every problem is a :class:`~informer.errors.DataError` naming the file, line and column.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from informer.errors import DataError

CSV_FIRST_DATA_LINE = 2  # line 1 of a CSV is its header


@dataclass
class SeriesTable:
    """An input series: timestamps, the value columns in the model's order, and how to name rows."""

    timestamps: pd.DatetimeIndex
    frame: pd.DataFrame  # value columns only, model order, positional index
    where: str  # "data.csv" or "the DataFrame": used in messages
    is_csv: bool
    notes: list[str] = field(default_factory=list)

    def line(self, position: int) -> str:
        """Human name of the row at ``position``: the CSV line, or the DataFrame's 0-based row."""
        if self.is_csv:
            return f"line {position + CSV_FIRST_DATA_LINE}"
        return f"row {position}"


def read_csv_frame(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV with user-facing errors for the usual ways a file cannot be used."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"input CSV {path} does not exist; pass input=<a CSV with the trained columns>")
    if path.is_dir():
        raise DataError(f"input {path} is a directory; pass input=<path of a CSV file>")
    try:
        return pd.read_csv(path)
    except PermissionError:
        raise DataError(f"input CSV {path} cannot be read (permission denied)") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"input CSV {path} is empty; it needs a header line and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(f"input {path} cannot be parsed as a CSV ({first})") from None


def _parse_timestamps(raw: pd.Series | pd.Index, date_column: str, where: str,
                      is_csv: bool) -> pd.DatetimeIndex:
    def line(pos: int) -> str:
        return f"line {pos + CSV_FIRST_DATA_LINE}" if is_csv else f"row {pos}"

    if isinstance(raw, pd.DatetimeIndex):
        parsed = pd.Series(raw)  # keeps its time zone
    else:
        try:
            parsed = pd.to_datetime(pd.Series(np.asarray(raw)), errors="coerce")
        except (ValueError, TypeError) as exc:  # e.g. mixed time zones cannot share one index
            raise DataError(f"{where}: column '{date_column}' cannot be read as timestamps ({exc})") from None
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        pos = int(bad[0])
        raise DataError(
            f"{where}, {line(pos)}: '{np.asarray(raw)[pos]}' in column '{date_column}' is not a timestamp; "
            f"every row needs a date such as 2018-06-26 19:00:00"
        )
    return pd.DatetimeIndex(parsed, name=date_column)


def to_series_table(data: pd.DataFrame, columns: Sequence[str], date_column: str, where: str,
                    is_csv: bool) -> SeriesTable:
    """Find the timestamps and the model's columns (reordered by name); note the columns ignored."""
    if date_column in data.columns:
        raw_ts: pd.Series | pd.Index = data[date_column]
        values = data.drop(columns=[date_column])
    elif isinstance(data.index, pd.DatetimeIndex) or data.index.name == date_column:
        raw_ts = data.index
        values = data
    else:
        raise DataError(
            f"{where} has no '{date_column}' column (the timestamp column the model was trained with); "
            f"found columns: {', '.join(map(str, data.columns))}. Rename the timestamp column to "
            f"'{date_column}' or, for a DataFrame, use a DatetimeIndex"
        )
    if len(data) == 0:
        raise DataError(f"{where} has no data rows")
    timestamps = _parse_timestamps(raw_ts, date_column, where, is_csv)
    missing = [c for c in columns if c not in values.columns]
    if missing:
        raise DataError(
            f"{where} lacks column(s) {', '.join(repr(c) for c in missing)} that the model was trained on; "
            f"it needs the columns {', '.join(repr(c) for c in columns)} (any order) plus '{date_column}'"
        )
    notes = []
    extra = [str(c) for c in values.columns if c not in set(columns)]
    if extra:
        notes.append(f"ignoring column(s) the model does not use: {', '.join(extra)}")
    present = [c for c in values.columns if c in set(columns)]
    if present != list(columns):
        notes.append(f"columns reordered by name to the model's order: {', '.join(columns)}")
    frame = values.loc[:, list(columns)].reset_index(drop=True)
    table = SeriesTable(timestamps=timestamps, frame=frame, where=where, is_csv=is_csv, notes=notes)
    _check_increasing(table)
    return table


def _check_increasing(table: SeriesTable) -> None:
    ts = table.timestamps.asi8
    if ts.size < 2:
        return
    bad = np.flatnonzero(ts[1:] <= ts[:-1])
    if bad.size:
        pos = int(bad[0]) + 1
        kind = "repeats" if ts[pos] == ts[pos - 1] else "goes back in time after"
        raise DataError(
            f"{table.where}, {table.line(pos)}: timestamp {table.timestamps[pos]} {kind} "
            f"{table.timestamps[pos - 1]}; rows must be in strictly increasing time order"
        )


def locate_origin(table: SeriesTable, as_of: str | pd.Timestamp | None, seq_len: int) -> int:
    """Row position just past the forecast origin (the window is ``[end - seq_len, end)``)."""
    n = len(table.timestamps)
    if as_of is None:
        end = n
        at = f"the last row ({table.timestamps[-1]})"
    else:
        try:
            stamp = pd.Timestamp(as_of)
        except (ValueError, TypeError):
            raise DataError(
                f"as_of={as_of!r} is not a timestamp; use e.g. as_of='2018-06-01 12:00:00'"
            ) from None
        if table.timestamps.tz is not None and stamp.tz is None:
            stamp = stamp.tz_localize(table.timestamps.tz)
        pos = int(table.timestamps.searchsorted(stamp))
        if pos >= n or table.timestamps[pos] != stamp:
            raise DataError(
                f"as_of={stamp} is not a timestamp of {table.where} (it covers {table.timestamps[0]} to "
                f"{table.timestamps[-1]}); pick a timestamp that is one of its rows"
            )
        end = pos + 1
        at = f"as_of={stamp}"
    if end < seq_len:
        raise DataError(
            f"{table.where} has only {end} row(s) up to {at}, but the model needs seq_len={seq_len} rows "
            f"(its look-back window) ending there; give at least {seq_len} rows"
            + ("" if as_of is None else " before as_of or pick a later as_of")
        )
    return end


def check_regular(table: SeriesTable, start: int, end: int, freq: str) -> None:
    """Rows ``[start, end)`` must step exactly at ``freq``; name the first row that does not."""
    ts = table.timestamps[start:end]
    expected = pd.date_range(start=ts[0], periods=len(ts), freq=freq)
    bad = np.flatnonzero(expected.asi8 != ts.asi8)
    if bad.size == 0:
        return
    k = int(bad[0])
    if k == 0:
        raise DataError(
            f"{table.where}, {table.line(start)}: timestamp {ts[0]} is not on the trained frequency "
            f"'{freq}' (the next step at that frequency is {expected[0]}); the look-back window must use "
            f"the frequency the model was trained on"
        )
    raise DataError(
        f"{table.where}, {table.line(start + k)}: timestamp {ts[k]} does not continue the series at the "
        f"trained frequency '{freq}' (expected {expected[k]} after {ts[k - 1]}); the last "
        f"{end - start} rows the forecast reads must be consecutive — fill the gap (e.g. interpolate) "
        f"or resample to '{freq}'"
    )


def numeric_block(table: SeriesTable, start: int, end: int, allow_nan: bool, purpose: str) -> np.ndarray:
    """Rows ``[start, end)`` as float64 ``[end - start, C]``; refuse text, and NaN unless allowed."""
    block = table.frame.iloc[start:end]
    out = np.empty(block.shape, dtype=np.float64)
    for j, name in enumerate(block.columns):
        col = block[name]
        converted = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        text = np.flatnonzero(np.isnan(converted) & col.notna().to_numpy())
        if text.size:
            pos = start + int(text[0])
            raise DataError(
                f"{table.where}, {table.line(pos)}: column '{name}' holds {col.iloc[int(text[0])]!r}, "
                "which is not a number"
            )
        if not allow_nan:
            bad = np.flatnonzero(~np.isfinite(converted))
            if bad.size:
                pos = start + int(bad[0])
                raise DataError(
                    f"{table.where}, {table.line(pos)}: column '{name}' is missing (NaN/inf) inside the "
                    f"{purpose}; fill it (e.g. interpolate) or choose an earlier as_of"
                )
        out[:, j] = converted
    return out
