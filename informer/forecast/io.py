"""The forecast's input: a CSV or DataFrame matched to the trained columns, and the rows a forecast reads.

Reading, timestamp parsing and the order, regularity and number checks are ``informer.data``'s, the
same ones training uses. What is particular to forecasting is where they apply: the whole input must be
in strictly increasing time order, but only the rows the model reads (the look-back window) must be
regular and complete, so an old gap or a missing value years before the window does not stop a
forecast. Every problem is a :class:`~informer.errors.DataError` naming the file, line and column.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from informer.data.frequency import check_order, check_regular
from informer.data.validation import numeric_values, parse_timestamps, read_csv_frame
from informer.errors import DataError

TRUE_SUFFIX = "_true"  # backtest columns holding the data's own values: OT -> OT_true


@dataclass
class SeriesTable:
    """An input series: timestamps, the value columns in the model's order, and how to name rows."""

    timestamps: pd.DatetimeIndex
    frame: pd.DataFrame  # value columns only, model order, positional index
    where: str  # "data.csv" or "the DataFrame": used in messages
    in_file: bool  # rows are named as CSV lines (else as 0-based DataFrame rows)
    notes: list[str] = field(default_factory=list)


def read_table(data: pd.DataFrame | str | os.PathLike[str], columns: Sequence[str],
               date_column: str) -> SeriesTable:
    """A CSV path or a DataFrame as a :class:`SeriesTable` of the model's ``columns``."""
    if isinstance(data, pd.DataFrame):
        return to_series_table(data, columns, date_column, "the DataFrame", in_file=False)
    frame = read_csv_frame(data, what="input CSV", fix="pass input=<a CSV with the trained columns>")
    return to_series_table(frame, columns, date_column, str(data), in_file=True)


def to_series_table(data: pd.DataFrame, columns: Sequence[str], date_column: str, where: str,
                    in_file: bool) -> SeriesTable:
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
    timestamps = parse_timestamps(raw_ts, where, date_column, in_file=in_file)
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
    # The whole input must be ordered: locate_origin searches it by timestamp.
    check_order(timestamps, where, in_file=in_file)
    return SeriesTable(timestamps=timestamps, frame=frame, where=where, in_file=in_file, notes=notes)


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


def look_back(table: SeriesTable, start: int, end: int, freq: str) -> np.ndarray:
    """Rows ``[start, end)`` as float64 ``[end - start, C]``, after checking that they step exactly at
    the trained ``freq`` and hold finite numbers only."""
    where = f"{table.where} (look-back window: the {end - start} rows the forecast reads)"
    check_regular(table.timestamps[start:end], freq, where, trained=True, first_row=start,
                  in_file=table.in_file)
    return numeric_values(table.frame.iloc[start:end], where, first_row=start, in_file=table.in_file,
                          fix="fill it (e.g. interpolate) or choose an earlier as_of")


def known_values(table: SeriesTable, start: int, end: int) -> np.ndarray:
    """Rows ``[start, end)`` as float64 ``[end - start, C]``; NaN where empty, text refused."""
    return numeric_values(table.frame.iloc[start:end], table.where, first_row=start, in_file=table.in_file,
                          allow_missing=True)
