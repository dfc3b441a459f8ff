"""read_series_csv and the frequency checks: each bad input gets a DataError naming file, place and fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from informer.data import check_order, check_regular, future_timestamps, numeric_values, read_series_csv
from informer.errors import DataError, UserError


def series_frame(n: int = 12, freq: str = "h", start: str = "2020-01-01") -> pd.DataFrame:
    index = pd.date_range(start, periods=n, freq=freq)
    rng = np.random.default_rng(0)
    return pd.DataFrame({"date": index.strftime("%Y-%m-%d %H:%M:%S"), "load": rng.normal(size=n).round(3),
                         "OT": rng.normal(size=n).round(3)})


def write_frame(tmp_path: Path, frame: pd.DataFrame, name: str = "series.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def write_text(tmp_path: Path, text: str, name: str = "series.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_series_csv(path, **kwargs)
    message = str(info.value)
    assert path.name in message, message  # every message names the file
    return message


def test_reads_values_in_file_order_with_timestamp_index(tmp_path: Path) -> None:
    frame = series_frame()
    path = write_frame(tmp_path, frame)
    data, freq = read_series_csv(path, "date", target="OT")
    assert freq == "h"
    assert list(data.columns) == ["load", "OT"]
    assert data.index.name == "date" and isinstance(data.index, pd.DatetimeIndex)
    np.testing.assert_allclose(data.to_numpy(), frame[["load", "OT"]].to_numpy())


def test_data_error_is_a_user_error() -> None:
    assert issubclass(DataError, UserError)


def test_missing_file(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nowhere.csv")
    assert "does not exist" in message and "dataset.path" in message


def test_empty_file(tmp_path: Path) -> None:
    assert "empty" in error_of(write_text(tmp_path, ""))


def test_header_only(tmp_path: Path) -> None:
    assert "no data rows" in error_of(write_text(tmp_path, "date,OT\n"))


def test_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 4)
    assert "binary" in error_of(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("date,température\n2020-01-01,1\n".encode("latin-1"))
    assert "UTF-8" in error_of(path)


def test_wrong_delimiter_finds_one_column(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    series_frame().to_csv(path, index=False, sep=";")
    message = error_of(path)
    assert "only one column" in message and "semicolon" in message


def test_ragged_line(tmp_path: Path) -> None:
    text = "date,OT\n2020-01-01 00:00:00,1\n2020-01-01 01:00:00,2,3\n"
    message = error_of(write_text(tmp_path, text))
    assert "line 3" in message and "fields" in message


def test_missing_date_column_lists_columns(tmp_path: Path) -> None:
    path = write_frame(tmp_path, series_frame().rename(columns={"date": "time"}))
    message = error_of(path, date_column="date")
    assert "no date column 'date'" in message and "['time', 'load', 'OT']" in message
    assert "dataset.date_column" in message


def test_missing_target_column_lists_columns(tmp_path: Path) -> None:
    message = error_of(write_frame(tmp_path, series_frame()), target="oil")
    assert "no target column 'oil'" in message and "['date', 'load', 'OT']" in message


def test_missing_requested_column(tmp_path: Path) -> None:
    message = error_of(write_frame(tmp_path, series_frame()), columns=["load", "wind"])
    assert "['wind']" in message and "dataset.columns" in message


def test_unparseable_date_names_line_and_value(tmp_path: Path) -> None:
    frame = series_frame()
    frame.loc[2, "date"] = "not-a-date"
    message = error_of(write_frame(tmp_path, frame))
    assert "line 4" in message and "'not-a-date'" in message


def test_empty_date_cell_and_blank_line(tmp_path: Path) -> None:
    text = "date,OT\n2020-01-01 00:00:00,1\n\n2020-01-01 02:00:00,3\n"
    message = error_of(write_text(tmp_path, text))
    assert "empty at line 3" in message


def test_trailing_blank_lines_are_ignored(tmp_path: Path) -> None:
    text = "date,OT\n2020-01-01 00:00:00,1\n2020-01-01 01:00:00,2\n2020-01-01 02:00:00,3\n\n\n"
    data, freq = read_series_csv(write_text(tmp_path, text))
    assert len(data) == 3 and freq == "h"


def test_duplicate_timestamp(tmp_path: Path) -> None:
    frame = series_frame()
    frame.loc[3, "date"] = frame.loc[2, "date"]
    message = error_of(write_frame(tmp_path, frame))
    assert "duplicate" in message and "lines 4 and 5" in message and "2020-01-01 02:00:00" in message


def test_out_of_order_timestamps(tmp_path: Path) -> None:
    frame = series_frame()
    frame.loc[[3, 4], "date"] = frame.loc[[4, 3], "date"].to_numpy()
    message = error_of(write_frame(tmp_path, frame))
    assert "out of order" in message and "line 6" in message and "sort" in message


@pytest.mark.parametrize("freq", [None, "h"])
def test_gap_reports_first_position_and_count(tmp_path: Path, freq: str | None) -> None:
    frame = series_frame(n=30).drop(index=[5, 6, 20]).reset_index(drop=True)
    message = error_of(write_frame(tmp_path, frame), freq=freq)
    assert "gap" in message and "line 7" in message
    assert "expected 2020-01-01 05:00:00" in message and "found 2020-01-01 07:00:00" in message
    assert "2 gap(s)" in message and "3 missing" in message


def test_off_grid_timestamp(tmp_path: Path) -> None:
    frame = series_frame()
    frame.loc[4, "date"] = "2020-01-01 03:30:00"
    message = error_of(write_frame(tmp_path, frame), freq="h")
    assert "off the 'h' grid" in message and "line 6" in message


def test_irregular_series_asks_for_freq(tmp_path: Path) -> None:
    dates = ["2020-01-01 00:00", "2020-01-01 01:00", "2020-01-01 02:00", "2020-01-01 03:30",
             "2020-01-01 04:00", "2020-01-01 05:00"]
    text = "date,OT\n" + "".join(f"{d},{i}\n" for i, d in enumerate(dates))
    message = error_of(write_text(tmp_path, text))
    assert "dataset.freq" in message and "line 5" in message


def test_unknown_freq_alias(tmp_path: Path) -> None:
    message = error_of(write_frame(tmp_path, series_frame()), freq="hourly")
    assert "'hourly'" in message and "frequency alias" in message


def test_nan_cell_names_column_and_line(tmp_path: Path) -> None:
    frame = series_frame()
    frame["OT"] = frame["OT"].astype(object)
    frame.loc[3, "OT"] = ""
    message = error_of(write_frame(tmp_path, frame))
    assert "'OT'" in message and "line 5" in message and "empty or NaN" in message


def test_non_numeric_value_names_column_line_and_value(tmp_path: Path) -> None:
    frame = series_frame()
    frame["load"] = frame["load"].astype(object)
    frame.loc[6, "load"] = "n/a?"
    message = error_of(write_frame(tmp_path, frame))
    assert "'load'" in message and "line 8" in message and "'n/a?'" in message


def test_text_column_is_dropped_unless_requested(tmp_path: Path) -> None:
    frame = series_frame()
    frame["station"] = "north"
    path = write_frame(tmp_path, frame)
    data, _ = read_series_csv(path, target="OT")
    assert list(data.columns) == ["load", "OT"]
    message = error_of(path, columns=["station"], target="OT")
    assert "'station'" in message and "non-numeric" in message


@pytest.mark.parametrize(("freq", "expected"), [("h", "h"), ("15min", "15min"), ("D", "D"), ("B", "B"),
                                                ("MS", "MS"), ("s", "s"), ("W", "W-SUN")])
def test_frequency_inference(tmp_path: Path, freq: str, expected: str) -> None:
    frame = series_frame(n=40, freq=freq, start="2021-01-04")
    _, inferred = read_series_csv(write_frame(tmp_path, frame))
    assert inferred == expected


def test_given_freq_is_normalised_and_checked(tmp_path: Path) -> None:
    path = write_frame(tmp_path, series_frame(freq="15min"))
    assert read_series_csv(path, freq="15min")[1] == "15min"
    assert "gap" in error_of(path, freq="5min")


def test_slash_date_format(tmp_path: Path) -> None:
    text = "date,OT\n" + "".join(f"1990/1/{d} 0:00,{d}\n" for d in range(1, 11))
    data, freq = read_series_csv(write_text(tmp_path, text))
    assert freq == "D"
    assert data.index[0] == pd.Timestamp("1990-01-01") and data.index[-1] == pd.Timestamp("1990-01-10")


def test_mixed_date_formats_fall_back_to_per_element_parsing(tmp_path: Path) -> None:
    text = "date,OT\n2020-01-01 00:00:00,1\n2020/01/01 01:00,2\n2020-01-01T02:00,3\n"
    data, freq = read_series_csv(write_text(tmp_path, text))
    assert freq == "h" and data.index[1] == pd.Timestamp("2020-01-01 01:00")


def test_gapped_series_with_large_step_freq_infers_most_common_step(tmp_path: Path) -> None:
    frame = series_frame(n=20, freq="D").drop(index=[8]).reset_index(drop=True)
    message = error_of(write_frame(tmp_path, frame))
    assert "gap" in message and "inferred" in message


def test_check_regular_helper_for_forecast_inputs() -> None:
    index = pd.date_range("2020-01-01", periods=10, freq="h")
    check_regular(index, "h", "input.csv")
    with pytest.raises(DataError, match="gap"):
        check_regular(index.delete(4), "h", "input.csv")
    with pytest.raises(DataError, match=r"input\.csv"):
        check_regular(index, "15min", "input.csv")
    future = future_timestamps(index[-1], "h", 3)
    assert list(future) == list(pd.date_range("2020-01-01 10:00", periods=3, freq="h"))


def test_forecast_window_checks_name_the_row_of_the_whole_input() -> None:
    """Forecasting checks a slice of its input: messages give the slice's rows in the whole input."""
    index = pd.date_range("2020-01-01", periods=10, freq="h")
    with pytest.raises(DataError, match=r"at line 16: .*'h' is the frequency the model was trained on"):
        check_regular(index.delete(4), "h", "input.csv", trained=True, first_row=10)
    with pytest.raises(DataError, match=r"rows 12 and 13 \(row 13 repeats it"):
        check_order(index.insert(3, index[2]), "the DataFrame", first_row=10, in_file=False)
    frame = pd.DataFrame({"OT": [1.0, float("nan"), 3.0], "load": ["1", "2", "x"]})
    with pytest.raises(DataError, match=r"'OT' has an empty or NaN cell at line 23"):
        numeric_values(frame, "input.csv", first_row=20)
    with pytest.raises(DataError, match=r"'load' has the non-numeric value 'x' at line 24"):
        numeric_values(frame, "input.csv", first_row=20, allow_missing=True)
