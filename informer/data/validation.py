"""Read a time-series CSV and check it, with one clear :class:`DataError` per problem.

Every message names the file, the place (``line N`` of the file, the header being line 1, or the
column) and the fix. Training reads a whole series with :func:`read_series_csv`:

1. the file exists, is not empty, is UTF-8 text and splits into more than one comma-separated column;
2. the date column (and target, and any requested columns) exist;
3. every timestamp parses, and timestamps strictly increase (no duplicates, sorted);
4. the frequency is the one given, or is inferred, and the series has no gaps at that frequency;
5. every value cell is a finite number.

Forecasting (``informer.forecast.io``) uses the same pieces, :func:`read_csv_frame`,
:func:`parse_timestamps`, :func:`numeric_values` and the checks of ``informer.data.frequency``, but
applies steps 4 and 5 only to the rows a forecast reads.
"""

from __future__ import annotations

import codecs
import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from informer.data.frequency import check_order, check_regular, resolve_frequency, row_label
from informer.errors import DataError

log = logging.getLogger(__name__)

_SNIFF_BYTES = 64 * 1024
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}
_PATH_FIX = "check the path (dataset.path, or paths.data_dir / INFORMER_DATA_DIR for the ETT files)"
FILL_FIX = "fill them (e.g. interpolate) rather than deleting rows, which would leave gaps in the series"
TEXT_FIX = "value columns must hold numbers only"


def read_series_csv(path: str | Path, date_column: str = "date", freq: str | None = None,
                    columns: Sequence[str] | None = None, target: str | None = None,
                    roles: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, str]:
    """Read and validate a CSV of one regular multivariate time series.

    Returns ``(frame, freq)``: ``frame`` is indexed by the parsed timestamps (named ``date_column``)
    and holds only numeric value columns, float64, in file order: ``columns`` (plus ``target`` when it
    is not among them) if given, else every column but the date (columns whose cells are all text or
    all empty are then dropped with a warning), plus the columns ``roles`` names (column -> the config
    field that lists it, e.g. ``dataset.known_future``; each must exist). ``freq`` is the given pandas
    alias, normalised, or the one inferred from the timestamps. Any problem raises :class:`DataError`.
    """
    path = Path(path)
    frame = read_csv_frame(path)
    wanted = _select_columns(frame, path, date_column, columns, target, roles or {})
    index = parse_timestamps(frame[date_column], path, date_column)
    check_order(index, path)
    freq, inferred = resolve_frequency(index, freq, path)
    check_regular(index, freq, path, inferred=inferred)
    explicit = set(columns or ()) | ({target} if target else set()) | set(roles or ())
    names = _value_columns(frame, wanted, path, explicit)
    values = numeric_values(frame[names], path,
                            text_fix=f"{TEXT_FIX} (or leave the column out with dataset.columns)")
    return pd.DataFrame(values, index=index, columns=names), freq


def read_csv_frame(path: str | Path, what: str = "data file", fix: str = _PATH_FIX) -> pd.DataFrame:
    """The CSV's cells as pandas reads them, one row per line after the header, blank lines included.

    Checks only that the file can be used as a CSV (exists, text, comma-separated, unique column
    names, at least one data row); ``what`` and ``fix`` name the file's role in the messages about a
    missing path. Column names are stripped of surrounding spaces.
    """
    path = Path(path)
    _check_file(path, what, fix)
    header = _header(path)
    if len(header) < 2:
        found = header[0] if header else ""
        used = [name for char, name in _OTHER_DELIMITERS.items() if char in found]
        hint = f" (it looks {used[0]}-separated)" if used else ""
        raise DataError(
            f"only one column found in the header of {path} ({found[:80]!r}): the file is not "
            f"comma-separated{hint}; save it with commas between columns, a date column first"
        )
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DataError(f"{path}: the header (line 1) repeats column name(s) {duplicated}; "
                        "give every column a unique name")
    try:
        # blank lines are kept as empty rows so that row numbers map to file lines
        frame = pd.read_csv(path, skip_blank_lines=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{what} {path} is empty; it needs a header line and data rows") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{path} is not a well-formed CSV ({str(exc).strip()}); every line must have "
                        "as many comma-separated fields as the header (line 1)") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text; save the CSV with UTF-8 encoding") from exc
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path} cannot be parsed as a CSV ({first})") from exc
    frame.columns = [str(name).strip() for name in frame.columns]
    # blank lines at the very end of a file are harmless; drop them
    filled = np.flatnonzero(frame.notna().any(axis=1).to_numpy())
    frame = frame.iloc[: filled[-1] + 1] if filled.size else frame.iloc[:0]
    if len(frame) == 0:
        raise DataError(f"{path} has a header line but no data rows; add the series' rows below it")
    return frame


def _check_file(path: Path, what: str, fix: str) -> None:
    if not path.exists():
        raise DataError(f"{what} {path} does not exist; {fix}")
    if not path.is_file():
        raise DataError(f"{what} {path} is not a file; {fix}")
    if path.stat().st_size == 0:
        raise DataError(f"{what} {path} is empty (0 bytes); it needs a header line and data rows")
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except PermissionError:
        raise DataError(f"{what} {path} cannot be read (permission denied)") from None
    if b"\x00" in head:
        raise DataError(f"{path} is not a CSV text file (it contains binary data); "
                        "export the data as comma-separated UTF-8 text")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded); "
                        "save the CSV with UTF-8 encoding") from exc


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        first = handle.readline()
    row = next(csv.reader([first]), [])
    return [name.strip() for name in row]


def _select_columns(frame: pd.DataFrame, path: Path, date_column: str,
                    columns: Sequence[str] | None, target: str | None, roles: Mapping[str, str]
                    ) -> list[str]:
    found = list(frame.columns)
    if date_column not in found:
        raise DataError(f"{path} has no date column {date_column!r}; columns found: {found}. "
                        "Set dataset.date_column to the name of the timestamp column")
    if target is not None and target not in found:
        raise DataError(f"{path} has no target column {target!r}; columns found: {found}. "
                        "Set dataset.target to one of the value columns")
    absent = [(name, fieldname) for name, fieldname in roles.items() if name not in found]
    if absent:
        detail = ", ".join(f"{name!r} (listed in {fieldname})" for name, fieldname in absent)
        raise DataError(f"{path} has no column {detail}; columns found: {found}. "
                        "List only columns of the file")
    if date_column in roles:
        raise DataError(f"{roles[date_column]} lists the date column {date_column!r}; "
                        "list only value columns")
    if columns is not None:
        missing = [name for name in columns if name not in found]
        if missing:
            raise DataError(f"{path} has no column(s) {missing} listed in dataset.columns; "
                            f"columns found: {found}")
        if date_column in columns:
            raise DataError(f"dataset.columns lists the date column {date_column!r}; "
                            f"list only value columns of {path}")
        wanted = set(columns) | ({target} if target else set()) | set(roles)
    else:
        wanted = set(found) - {date_column}
    selected = [name for name in found if name in wanted and name != date_column]
    if not selected:
        raise DataError(f"{path} has no value columns besides the date column {date_column!r}; "
                        f"columns found: {found}")
    return selected


def parse_timestamps(raw: pd.Series | pd.Index, source: str | Path, date_column: str = "date", *,
                     in_file: bool = True) -> pd.DatetimeIndex:
    """Parse a column of timestamps, naming the row and value of the first one that fails.

    Values that already are datetimes (a DataFrame's datetime column or DatetimeIndex) are kept as
    they are, time zone included; rows are named as file lines when ``in_file``.
    """
    values = pd.Series(raw.array) if isinstance(raw, pd.Index) else raw.reset_index(drop=True)
    if pd.api.types.is_datetime64_any_dtype(values):
        _refuse_empty(values.isna().to_numpy(), source, date_column, in_file)
        return pd.DatetimeIndex(values, name=date_column)
    text = values.astype("string").str.strip()
    _refuse_empty((text.isna() | (text == "")).to_numpy(), source, date_column, in_file)
    strings = text.astype(object)
    try:
        # the format pandas would infer from the first row, given explicitly: parsed strictly, and no
        # per-element fallback (with its warning) when the first row fits no format
        first = strings.dropna().iloc[0] if strings.notna().any() else None
        guessed = guess_datetime_format(first) if isinstance(first, str) else None
        if guessed is None:
            raise ValueError("no single timestamp format")
        parsed = pd.to_datetime(strings, format=guessed)
    except (ValueError, TypeError, OverflowError):
        try:
            parsed = pd.to_datetime(strings, format="mixed", errors="coerce")
        except (ValueError, TypeError) as exc:  # e.g. mixed time zones cannot share one index
            raise DataError(f"{source}: column {date_column!r} cannot be read as timestamps "
                            f"({exc})") from None
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{source}: cannot parse the timestamp {strings.iloc[row]!r} in column {date_column!r} "
                f"at {row_label(row, in_file)} ({bad.size} unparseable timestamp(s) in all); write dates "
                "in a format pandas reads, e.g. '2016-07-01 00:00:00'"
            ) from None
    return pd.DatetimeIndex(parsed, name=date_column)


def _refuse_empty(empty: np.ndarray, source: str | Path, date_column: str, in_file: bool) -> None:
    rows = np.flatnonzero(empty)
    if rows.size:
        blank = " (a blank line also counts as an empty row)" if in_file else ""
        raise DataError(f"{source}: the date column {date_column!r} is empty at "
                        f"{row_label(int(rows[0]), in_file)} ({rows.size} empty date cell(s) in all); "
                        f"give every row a timestamp{blank}")


def numeric_values(frame: pd.DataFrame, source: str | Path, *, first_row: int = 0, in_file: bool = True,
                   allow_missing: bool = False, fix: str = FILL_FIX, text_fix: str = TEXT_FIX
                   ) -> np.ndarray:
    """``frame``'s cells as float64 ``[rows, columns]``: text is refused, NaN/inf too unless allowed.

    ``first_row`` is the data row of ``frame``'s first row, for the messages; ``fix`` says how to
    mend a missing value, ``text_fix`` a non-numeric one.
    """
    out = np.empty(frame.shape, dtype=np.float64)
    for j, name in enumerate(frame.columns):
        numbers, text = _numbers(frame[name])
        if text is not None:
            bad = np.flatnonzero((text.notna() & (text != "")).to_numpy() & np.isnan(numbers))
            if bad.size:
                row = int(bad[0])
                raise DataError(
                    f"{source}: column {name!r} has the non-numeric value {text.iloc[row]!r} at "
                    f"{row_label(first_row + row, in_file)} ({bad.size} non-numeric cell(s) in that "
                    f"column); {text_fix}"
                )
        missing = np.flatnonzero(~np.isfinite(numbers))
        if missing.size and not allow_missing:
            row = int(missing[0])
            what = "an empty or NaN cell" if np.isnan(numbers[row]) else f"the value {numbers[row]}"
            raise DataError(
                f"{source}: column {name!r} has {what} at {row_label(first_row + row, in_file)} "
                f"({missing.size} missing or non-finite cell(s) in that column); {fix}"
            )
        out[:, j] = numbers
    return out


def _numbers(column: pd.Series) -> tuple[np.ndarray, pd.Series | None]:
    """float64 values (NaN where empty or not a number), and the stripped text of a non-numeric column."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), None
    text = column.astype("string").str.strip()
    return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan), text


def _value_columns(frame: pd.DataFrame, wanted: list[str], path: Path, explicit: set[str]) -> list[str]:
    """``wanted`` less the columns not asked for by name that hold no number at all (with a warning)."""
    kept = []
    for name in wanted:
        if name not in explicit and not np.isfinite(_numbers(frame[name])[0]).any():
            kind = "holds no numbers" if frame[name].notna().any() else "is empty"
            log.warning("%s: column %r %s; it is not used as a value column", path, name, kind)
            continue
        kept.append(name)
    if not kept:
        raise DataError(f"{path} has no numeric value columns; columns found: {list(frame.columns)}")
    return kept
