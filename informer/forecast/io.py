"""The forecast's input: a CSV or DataFrame matched to the trained columns, and the rows a forecast reads.

Reading, timestamp parsing and the order, regularity and number checks are ``informer.data``'s, the
same ones training uses. What is particular to forecasting is where they apply: the whole input must be
in strictly increasing time order, but only the rows the model reads (the look-back window) must be
regular and complete, so an old gap or a missing value years before the window does not stop a
forecast. Every problem is a :class:`~informer.errors.DataError` naming the file, line and column.

A model with known-future covariates (:mod:`informer.data.roles`) also reads those columns for the
``pred_len`` rows after the origin, so its input holds the history plus future rows: timestamps
continuing at the trained frequency, the known-future columns filled, the target and past-covariate
columns empty. Without ``as_of`` the origin is the last row with every target and past-covariate value
(:func:`origin_before_future_rows`); a value in those columns after it makes the origin ambiguous and is
refused. :func:`known_future_inputs` checks and returns the covariate rows a forecast
reads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from informer.data.frequency import check_order, check_regular, row_label
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
    # the known-future covariate columns (checkpoint order, positional index); no columns without them
    known: pd.DataFrame = field(default_factory=pd.DataFrame)


def read_table(data: pd.DataFrame | str | os.PathLike[str], columns: Sequence[str],
               date_column: str, known_future: Sequence[str] = ()) -> SeriesTable:
    """A CSV path or a DataFrame as a :class:`SeriesTable` of the model's ``columns`` (and its
    ``known_future`` covariate columns)."""
    if isinstance(data, pd.DataFrame):
        return to_series_table(data, columns, date_column, "the DataFrame", in_file=False,
                               known_future=known_future)
    frame = read_csv_frame(data, what="input CSV", fix="pass input=<a CSV with the trained columns>")
    return to_series_table(frame, columns, date_column, str(data), in_file=True, known_future=known_future)


def to_series_table(data: pd.DataFrame, columns: Sequence[str], date_column: str, where: str,
                    in_file: bool, known_future: Sequence[str] = ()) -> SeriesTable:
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
    absent = [c for c in known_future if c not in values.columns]
    if absent:
        raise DataError(
            f"{where} lacks the known-future column(s) {', '.join(repr(c) for c in absent)} that the model "
            "reads for the history and for the forecast steps; add them with their values for every row, "
            "the future rows after the origin included"
        )
    notes = []
    used = set(columns) | set(known_future)
    extra = [str(c) for c in values.columns if c not in used]
    if extra:
        notes.append(f"ignoring column(s) the model does not use: {', '.join(extra)}")
    present = [c for c in values.columns if c in set(columns)]
    if present != list(columns):
        notes.append(f"columns reordered by name to the model's order: {', '.join(columns)}")
    frame = values.loc[:, list(columns)].reset_index(drop=True)
    known = values.loc[:, list(known_future)].reset_index(drop=True)
    # The whole input must be ordered: locate_origin searches it by timestamp.
    check_order(timestamps, where, in_file=in_file)
    return SeriesTable(timestamps=timestamps, frame=frame, where=where, in_file=in_file, notes=notes,
                       known=known)


def locate_origin(table: SeriesTable, as_of: str | pd.Timestamp | None, seq_len: int,
                  future_rows: bool = False) -> int:
    """Row position just past the forecast origin (the window is ``[end - seq_len, end)``).

    Without ``as_of`` the origin is the last row, or with ``future_rows`` (a model with known-future
    covariates) the last row before the future rows (:func:`origin_before_future_rows`)."""
    n = len(table.timestamps)
    if as_of is None:
        end = origin_before_future_rows(table) if future_rows else n
        at = f"the last row ({table.timestamps[end - 1]})" if end == n else (
            f"the last row with every target value ({table.timestamps[end - 1]})")
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


def origin_before_future_rows(table: SeriesTable) -> int:
    """Row position just past the last row whose target and past-covariate cells are all filled (the
    forecast origin): the rows after it are the future rows. A value in those columns after the origin
    (a target filled in a future row, or a last row left incomplete) makes the origin ambiguous: refused,
    naming the row."""
    present = table.frame.notna().to_numpy()  # [N, C]
    complete = np.flatnonzero(present.all(axis=1))
    columns = ", ".join(map(str, table.frame.columns))
    if not complete.size:
        raise DataError(f"{table.where} has no row with every target and past-covariate value ({columns}) "
                        "filled; give the history before the future rows")
    end = int(complete[-1]) + 1
    later = np.flatnonzero(present[end:].any(axis=1))
    if later.size:
        row = end + int(later[0])
        filled = ", ".join(str(c) for c, here in zip(table.frame.columns, present[row], strict=True) if here)
        raise DataError(
            f"{table.where}: {row_label(row, table.in_file)} has a value in {filled} after "
            f"{row_label(end - 1, table.in_file)} ({table.timestamps[end - 1]}), the last row with every "
            f"target and past-covariate value, which makes the forecast origin ambiguous; the future rows "
            f"after the origin hold the known-future columns only: leave {columns} empty there (or complete "
            "the earlier row, or pass as_of=<origin>)"
        )
    return end


def known_future_inputs(table: SeriesTable, start: int, end: int, pred_len: int, freq: str,
                        as_of: bool) -> np.ndarray:
    """The known-future columns for rows ``[start, end + pred_len)`` (the look-back window and the
    ``pred_len`` steps after the origin) as float64 ``[end - start + pred_len, K]``, after checking that
    the future rows exist, continue at ``freq`` and hold finite values."""
    names = ", ".join(map(str, table.known.columns))
    have = len(table.timestamps) - end
    where = f"{table.where} (the future rows: the {pred_len} steps after the origin)"
    check_regular(table.timestamps[end - 1:end + pred_len], freq, where, trained=True, first_row=end - 1,
                  in_file=table.in_file)
    if have < pred_len:
        origin = f"{table.timestamps[end - 1]} ({row_label(end - 1, table.in_file)})"
        fix = ("pick an earlier as_of" if as_of else
               f"append {pred_len - have} more row(s) with the following timestamps, the known-future "
               "columns filled and the target columns empty")
        raise DataError(
            f"{table.where}: the model reads its known-future column(s) {names} for the {pred_len} steps "
            f"after the origin {origin}, so it needs {pred_len} future rows after it; found {have}; {fix}"
        )
    where = f"{table.where} (known-future column(s) {names} over the look-back window and the horizon)"
    return numeric_values(table.known.iloc[start:end + pred_len], where, first_row=start,
                          in_file=table.in_file,
                          fix="the model reads every known-future value of the horizon: fill it")


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
