"""Bad input to scripts/forecast.py: a clear message, exit code 2, no traceback, nothing clobbered."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_forecast import FORECAST, make_checkpoint, run_cli


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, etth1_csv: Path) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", etth1_csv)


@pytest.fixture(scope="module")
def ett(etth1_csv: Path) -> pd.DataFrame:
    return pd.read_csv(etth1_csv)


def refused(*args: str, cwd: Path | None = None) -> str:
    proc = run_cli(FORECAST, *args, cwd=cwd)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.startswith("error: ")
    return proc.stderr


def write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


# -- the checkpoint --------------------------------------------------------------------------------
def test_missing_checkpoint(tmp_path: Path) -> None:
    assert "does not exist" in refused(f"checkpoint={tmp_path / 'nope.pt'}", f"output={tmp_path / 'o.csv'}")


def test_unreadable_checkpoint(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all\n" * 10)
    assert "corrupt or truncated" in refused(f"checkpoint={garbage}", f"output={tmp_path / 'o.csv'}")
    empty = tmp_path / "empty.pt"
    empty.touch()
    assert "empty" in refused(f"checkpoint={empty}", f"output={tmp_path / 'o.csv'}")
    assert "directory" in refused(f"checkpoint={tmp_path}", f"output={tmp_path / 'o.csv'}")
    assert not (tmp_path / "o.csv").exists()


def test_bare_state_dict_is_not_a_checkpoint(tmp_path: Path) -> None:
    bare = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2, 2), "layer.bias": torch.zeros(2)}, bare)
    assert "bare state_dict" in refused(f"checkpoint={bare}", f"output={tmp_path / 'o.csv'}")


class _Payload:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.sentinel}",)


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_never_runs(writer: str, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    if writer == "torch":
        torch.save({"model_state": _Payload(sentinel)}, evil)
    else:
        evil.write_bytes(pickle.dumps(_Payload(sentinel)))
    message = refused(f"checkpoint={evil}", f"output={tmp_path / 'o.csv'}")
    assert "refused by the safe loader" in message or "corrupt" in message
    assert not sentinel.exists()


def test_newer_format_version(tmp_path: Path, ckpt: Path) -> None:
    payload = torch.load(ckpt, weights_only=True)
    payload["format_version"] = 99
    future = tmp_path / "future.pt"
    torch.save(payload, future)
    message = refused(f"checkpoint={future}", f"output={tmp_path / 'o.csv'}")
    assert "newer" in message and "99" in message


# -- the input CSV ---------------------------------------------------------------------------------
def test_missing_column_is_named(tmp_path: Path, ckpt: Path, ett: pd.DataFrame) -> None:
    csv = write(ett.drop(columns=["HULL"]), tmp_path / "in.csv")
    message = refused(f"checkpoint={ckpt}", f"input={csv}", f"output={tmp_path / 'o.csv'}")
    assert "'HULL'" in message and "lacks" in message


def test_extra_and_reordered_columns_are_accepted(tmp_path: Path, ckpt: Path, ett: pd.DataFrame,
                                                  etth1_csv: Path) -> None:
    reference = run_cli(FORECAST, f"checkpoint={ckpt}", f"input={etth1_csv}", f"output={tmp_path / 'a.csv'}",
                        "plot=none")
    assert reference.returncode == 0, reference.stderr
    shuffled = ett[["OT", "LULL", "date", "HUFL", "HULL", "MUFL", "MULL", "LUFL"]].assign(humidity=0.5)
    csv = write(shuffled, tmp_path / "in.csv")
    proc = run_cli(FORECAST, f"checkpoint={ckpt}", f"input={csv}", f"output={tmp_path / 'b.csv'}",
                   "plot=none")
    assert proc.returncode == 0, proc.stderr
    assert "ignoring column(s) the model does not use: humidity" in proc.stdout
    assert "reordered" in proc.stdout
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_too_few_rows(tmp_path: Path, ckpt: Path, ett: pd.DataFrame) -> None:
    csv = write(ett.tail(20), tmp_path / "short.csv")
    message = refused(f"checkpoint={ckpt}", f"input={csv}", f"output={tmp_path / 'o.csv'}")
    assert "only 20 row(s)" in message and "seq_len=48" in message


def test_gap_names_the_first_bad_line(tmp_path: Path, ckpt: Path, ett: pd.DataFrame) -> None:
    dropped = len(ett) - 10  # inside the last 48 rows
    csv = write(ett.drop(index=dropped), tmp_path / "gap.csv")
    message = refused(f"checkpoint={ckpt}", f"input={csv}", f"output={tmp_path / 'o.csv'}")
    # The row after the hole now sits at data position `dropped`, i.e. CSV line dropped + 2.
    assert f"line {dropped + 2}" in message and "does not continue" in message and "'h'" in message


def test_irregular_timestamps(tmp_path: Path, ckpt: Path, ett: pd.DataFrame) -> None:
    shifted = ett.copy()
    shifted.loc[len(ett) - 5, "date"] = "2018-06-26 14:30:00"
    csv = write(shifted, tmp_path / "odd.csv")
    message = refused(f"checkpoint={ckpt}", f"input={csv}", f"output={tmp_path / 'o.csv'}")
    assert f"line {len(ett) - 5 + 2}" in message

    repeated = ett.copy()
    repeated.loc[len(ett) - 3, "date"] = repeated.loc[len(ett) - 4, "date"]
    csv = write(repeated, tmp_path / "dup.csv")
    message = refused(f"checkpoint={ckpt}", f"input={csv}", f"output={tmp_path / 'o.csv'}")
    assert f"line {len(ett) - 3 + 2}" in message and "repeats" in message


def test_nan_in_last_window(tmp_path: Path, ckpt: Path, ett: pd.DataFrame) -> None:
    holed = ett.copy()
    holed.loc[len(ett) - 7, "MULL"] = float("nan")
    csv = write(holed, tmp_path / "nan.csv")
    message = refused(f"checkpoint={ckpt}", f"input={csv}", f"output={tmp_path / 'o.csv'}")
    assert "'MULL'" in message and f"line {len(ett) - 7 + 2}" in message and "missing" in message


def test_problems_before_the_window_do_not_stop_a_forecast(ckpt: Path, ett: pd.DataFrame) -> None:
    from informer.forecast import Forecaster

    fc = Forecaster.from_checkpoint(ckpt)
    reference = fc.predict(ett)
    old = ett.drop(index=100).assign(OT=ett["OT"].where(ett.index != 200))  # a gap and a NaN, long ago
    pd.testing.assert_frame_equal(fc.predict(old), reference)


def test_as_of_outside_the_data(tmp_path: Path, ckpt: Path, etth1_csv: Path) -> None:
    message = refused(f"checkpoint={ckpt}", f"input={etth1_csv}", "as_of=2030-01-01 00:00:00",
                      f"output={tmp_path / 'o.csv'}")
    assert "not a timestamp of" in message
    message = refused(f"checkpoint={ckpt}", f"input={etth1_csv}", "as_of=2016-07-01 05:00:00",
                      f"output={tmp_path / 'o.csv'}")
    assert "only 6 row(s)" in message


def test_unknown_option(tmp_path: Path, ckpt: Path) -> None:
    assert "unknown option 'ouput'" in refused(f"checkpoint={ckpt}", f"ouput={tmp_path / 'o.csv'}")


# -- never clobber -----------------------------------------------------------------------------------
def test_existing_csv_is_not_overwritten(tmp_path: Path, ckpt: Path, etth1_csv: Path) -> None:
    out = tmp_path / "fc.csv"
    out.write_text("keep me\n")
    message = refused(f"checkpoint={ckpt}", f"input={etth1_csv}", f"output={out}")
    assert "already exists" in message and "overwrite=true" in message
    assert out.read_text() == "keep me\n" and not out.with_suffix(".png").exists()

    proc = run_cli(FORECAST, f"checkpoint={ckpt}", f"input={etth1_csv}", f"output={out}", "overwrite=true")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("date,") and out.with_suffix(".png").is_file()


def test_existing_png_is_not_overwritten(tmp_path: Path, ckpt: Path, etth1_csv: Path) -> None:
    png = tmp_path / "forecast_2018-06-26T1900.png"  # the default name, known only after reading the data
    png.write_bytes(b"old")
    message = refused(f"checkpoint={ckpt}", f"input={etth1_csv}", cwd=tmp_path)
    assert str(png.name) in message and "already exists" in message
    assert png.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == [png.name]


def test_missing_training_csv_needs_input(tmp_path: Path, ett: pd.DataFrame) -> None:
    csv = write(ett, tmp_path / "moved.csv")
    ckpt = make_checkpoint(tmp_path / "c.pt", csv)
    csv.unlink()
    message = refused(f"checkpoint={ckpt}", f"output={tmp_path / 'o.csv'}")
    assert "moved.csv" in message and "input=" in message
