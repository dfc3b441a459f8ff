"""Read a time-series CSV and check it, with one clear :class:`DataError` per problem.

Every message names the file, the place (``line N`` of the file, the header being line 1, or the
column) and the fix. :func:`read_series_csv` is the one reader used for training data and for the
input CSVs of forecasting, so both get the same checks:

1. the file exists, is not empty, is UTF-8 text and splits into more than one comma-separated column;
2. the date column (and target, and any requested columns) exist;
3. every timestamp parses, and timestamps strictly increase (no duplicates, sorted);
4. the frequency is the one given, or is inferred, and the series has no gaps at that frequency;
5. every value cell is a finite number.
"""

from __future__ import annotations

import codecs
import csv
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from informer.data.frequency import check_order, check_regular, resolve_frequency
from informer.errors import DataError

log = logging.getLogger(__name__)

_SNIFF_BYTES = 64 * 1024
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def line_of(row: int) -> int:
    """The file line of 0-based data row ``row`` (the header is line 1)."""
    return row + 2


def read_series_csv(path: str | Path, date_column: str = "date", freq: str | None = None,
                    columns: Sequence[str] | None = None,
                    target: str | None = None) -> tuple[pd.DataFrame, str]:
    """Read and validate a CSV of one regular multivariate time series.

    Returns ``(frame, freq)``: ``frame`` is indexed by the parsed timestamps (named ``date_column``)
    and holds only numeric value columns, float64, in file order: ``columns`` (plus ``target`` when it
    is not among them) if given, else every column but the date (columns whose cells are all text or
    all empty are then dropped with a warning). ``freq`` is the given pandas alias, normalised, or the
    one inferred from the timestamps. Any problem raises :class:`DataError`.
    """
    path = Path(path)
    _check_file(path)
    frame = _read_frame(path)
    wanted = _select_columns(frame, path, date_column, columns, target)
    index = parse_timestamps(frame[date_column], path, date_column)
    check_order(index, path)
    freq, inferred = resolve_frequency(index, freq, path)
    check_regular(index, freq, path, inferred=inferred)
    explicit = set(columns or ()) | ({target} if target else set())
    names, values = _numeric_values(frame, wanted, path, explicit)
    return pd.DataFrame(values, index=index, columns=names), freq


def _check_file(path: Path) -> None:
    fix = "check the path (dataset.path, or paths.data_dir / INFORMER_DATA_DIR for the ETT files)"
    if not path.exists():
        raise DataError(f"data file {path} does not exist; {fix}")
    if not path.is_file():
        raise DataError(f"data path {path} is not a file; {fix}")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty (0 bytes); it needs a header line and data rows")
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise DataError(f"{path} is not a CSV text file (it contains binary data); "
                        "export the data as comma-separated UTF-8 text")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded); "
                        "save the CSV with UTF-8 encoding") from exc


def _read_frame(path: Path) -> pd.DataFrame:
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
        raise DataError(f"data file {path} is empty; it needs a header line and data rows") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{path} is not a well-formed CSV ({str(exc).strip()}); every line must have "
                        "as many comma-separated fields as the header (line 1)") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text; save the CSV with UTF-8 encoding") from exc
    frame.columns = [str(name).strip() for name in frame.columns]
    # blank lines at the very end of a file are harmless; drop them
    filled = np.flatnonzero(frame.notna().any(axis=1).to_numpy())
    frame = frame.iloc[: filled[-1] + 1] if filled.size else frame.iloc[:0]
    if len(frame) == 0:
        raise DataError(f"{path} has a header line but no data rows; add the series' rows below it")
    return frame


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        first = handle.readline()
    row = next(csv.reader([first]), [])
    return [name.strip() for name in row]


def _select_columns(frame: pd.DataFrame, path: Path, date_column: str,
                    columns: Sequence[str] | None, target: str | None) -> list[str]:
    found = list(frame.columns)
    if date_column not in found:
        raise DataError(f"{path} has no date column {date_column!r}; columns found: {found}. "
                        "Set dataset.date_column to the name of the timestamp column")
    if target is not None and target not in found:
        raise DataError(f"{path} has no target column {target!r}; columns found: {found}. "
                        "Set dataset.target to one of the value columns")
    if columns is not None:
        missing = [name for name in columns if name not in found]
        if missing:
            raise DataError(f"{path} has no column(s) {missing} listed in dataset.columns; "
                            f"columns found: {found}")
        if date_column in columns:
            raise DataError(f"dataset.columns lists the date column {date_column!r}; "
                            f"list only value columns of {path}")
        wanted = set(columns) | ({target} if target else set())
    else:
        wanted = set(found) - {date_column}
    selected = [name for name in found if name in wanted and name != date_column]
    if not selected:
        raise DataError(f"{path} has no value columns besides the date column {date_column!r}; "
                        f"columns found: {found}")
    return selected


def parse_timestamps(raw: pd.Series, source: str | Path, date_column: str = "date") -> pd.DatetimeIndex:
    """Parse a column of date strings, naming the line and value of the first one that fails."""
    text = raw.astype("string").str.strip()
    empty = np.flatnonzero((text.isna() | (text == "")).to_numpy())
    if empty.size:
        line = line_of(int(empty[0]))
        raise DataError(f"{source}: the date column {date_column!r} is empty at line {line} "
                        f"({empty.size} empty date cell(s) in all); give every row a timestamp "
                        "(a blank line also counts as an empty row)")
    strings = text.astype(object)
    try:
        with warnings.catch_warnings():
            # pandas warns when it falls back to per-element parsing; failures are reported below
            warnings.simplefilter("ignore", UserWarning)
            parsed = pd.to_datetime(strings)
    except (ValueError, TypeError, OverflowError):
        parsed = pd.to_datetime(strings, format="mixed", errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{source}: cannot parse the timestamp {strings.iloc[row]!r} in column {date_column!r} "
                f"at line {line_of(row)} ({bad.size} unparseable timestamp(s) in all); write dates in "
                "a format pandas reads, e.g. '2016-07-01 00:00:00'"
            ) from None
    return pd.DatetimeIndex(parsed, name=date_column)


def _numeric_values(frame: pd.DataFrame, wanted: list[str], path: Path,
                    explicit: set[str]) -> tuple[list[str], np.ndarray]:
    names: list[str] = []
    blocks: list[np.ndarray] = []
    for name in wanted:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            numbers = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            text = column.astype("string").str.strip()
            numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            present = (text.notna() & (text != "")).to_numpy()
            bad = np.flatnonzero(present & np.isnan(numbers))
            if bad.size and name not in explicit and bad.size == present.sum():
                log.warning("%s: column %r holds no numbers; it is not used as a value column", path, name)
                continue
            if bad.size:
                row = int(bad[0])
                raise DataError(
                    f"{path}: column {name!r} has the non-numeric value {text.iloc[row]!r} at line "
                    f"{line_of(row)} ({bad.size} non-numeric cell(s) in that column); value columns "
                    "must hold numbers only (or leave the column out with dataset.columns)"
                )
        missing = np.flatnonzero(~np.isfinite(numbers))
        if missing.size and name not in explicit and missing.size == len(numbers):
            log.warning("%s: column %r is empty; it is not used as a value column", path, name)
            continue
        if missing.size:
            row = int(missing[0])
            what = "an empty or NaN cell" if np.isnan(numbers[row]) else f"the value {numbers[row]}"
            raise DataError(
                f"{path}: column {name!r} has {what} at line {line_of(row)} ({missing.size} missing or "
                "non-finite cell(s) in that column); fill them (e.g. interpolate) rather than deleting "
                "rows, which would leave gaps in the series"
            )
        names.append(name)
        blocks.append(numbers)
    if not names:
        raise DataError(f"{path} has no numeric value columns; columns found: {list(frame.columns)}")
    return names, np.stack(blocks, axis=1)
