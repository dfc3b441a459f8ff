"""Forecasting with known-future covariates (issue 18): inputs with future rows, ``as_of`` backtests, the
rolling backtest, no leakage, the CLI round trip, every input error, and checkpoints without covariates.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_covariates import TINY, covariate_checkpoint, write_series

from informer.checkpoint import load_checkpoint, save_checkpoint
from informer.errors import report_user_errors
from informer.forecast import Forecaster, run_backtest
from informer.forecast.backtest_cli import parse_backtest_options, run_backtest_command
from informer.forecast.cli import parse_options, run_forecast
from informer.training import evaluate_checkpoint

REPO = Path(__file__).resolve().parents[1]
PRED = TINY["pred_len"]
ORIGIN = 400  # row of the forecast origin used throughout (test split, with rows after it)
OBSERVED = ["past", "z", "y"]  # the value columns: past covariates and targets


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_series(tmp_path_factory.mktemp("covf") / "series.csv")


@pytest.fixture(scope="module", params=["MS", "M"])
def ckpt(request: pytest.FixtureRequest, csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # MS: one multivariate network (ProbSparse); M: channel-independent with RevIN (the defaults)
    return covariate_checkpoint(tmp_path_factory.mktemp("ckpt") / f"{request.param}.pt", csv, request.param)


@pytest.fixture(scope="module")
def data(csv: Path) -> pd.DataFrame:
    return pd.read_csv(csv)


def with_future_rows(data: pd.DataFrame, origin: int = ORIGIN, rows: int = PRED) -> pd.DataFrame:
    """The history up to ``origin`` then ``rows`` future rows: plan filled, the observed columns empty."""
    frame = data.iloc[: origin + 1 + rows].copy()
    frame.loc[frame.index[origin + 1:], OBSERVED] = np.nan
    return frame


def stamp(data: pd.DataFrame, row: int = ORIGIN) -> str:
    return str(data["date"].iloc[row])


def points(frame: pd.DataFrame, fc: Forecaster) -> np.ndarray:
    return frame[fc.output_columns].to_numpy()


# -- forecasts ---------------------------------------------------------------------------------------
def test_future_rows_forecast_equals_the_as_of_forecast(ckpt: Path, data: pd.DataFrame) -> None:
    fc = Forecaster.from_checkpoint(ckpt)
    assert fc.known_future == ["plan"]
    ahead = fc.predict(with_future_rows(data))
    backtest = fc.predict(data, as_of=stamp(data))
    assert list(ahead.index) == list(pd.to_datetime(data["date"].iloc[ORIGIN + 1:ORIGIN + 1 + PRED]))
    np.testing.assert_array_equal(points(ahead, fc), points(backtest, fc))
    assert f"{fc.output_columns[-1]}_true" in backtest.columns
    # more rows after the future rows are ignored
    longer = fc.predict(with_future_rows(data, rows=PRED + 30))
    np.testing.assert_array_equal(points(longer, fc), points(ahead, fc))


def test_no_leakage_after_the_origin(ckpt: Path, data: pd.DataFrame) -> None:
    """Targets and past covariates after the origin, and known-future values after origin + pred_len,
    never change the forecast; known-future values inside the horizon do."""
    fc = Forecaster.from_checkpoint(ckpt)
    before = points(fc.predict(data, as_of=stamp(data)), fc)
    perturbed = data.copy()
    perturbed.loc[ORIGIN + 1:, OBSERVED] += 100.0
    perturbed.loc[ORIGIN + 1 + PRED:, "plan"] -= 50.0
    np.testing.assert_array_equal(points(fc.predict(perturbed, as_of=stamp(data)), fc), before)
    future = with_future_rows(perturbed, rows=PRED + 10)
    np.testing.assert_array_equal(points(fc.predict(future), fc), before)
    inside = data.copy()
    inside.loc[ORIGIN + PRED, "plan"] += 3.0  # the last forecast step's covariate
    assert not np.allclose(points(fc.predict(inside, as_of=stamp(data)), fc), before)


def test_backtest_reads_the_actual_future_covariates(ckpt: Path, data: pd.DataFrame, csv: Path) -> None:
    fc = Forecaster.from_checkpoint(ckpt)
    table = fc.table(csv)
    result = run_backtest(fc, table, stamp(data, ORIGIN - 2), stamp(data, ORIGIN), stride=1)
    single = fc.predict(data, as_of=stamp(data))
    np.testing.assert_allclose(result.bands.point[-1], points(single, fc), rtol=1e-5, atol=1e-6)
    # over the test split's windows the backtest equals evaluating the split
    start = len(data) - int(0.2 * len(data)) - 1
    full = run_backtest(fc, table, stamp(data, start), None)
    evaluated = evaluate_checkpoint(ckpt, "test", batch_size=64, device="cpu")["test"]
    assert full.metrics["windows"] == evaluated["windows"]
    mse = evaluated["model"]["scaled"]["mse"]
    assert full.metrics["model"]["scaled"]["mse"] == pytest.approx(mse, rel=1e-5)


# -- the command line --------------------------------------------------------------------------------
def test_cli_round_trip_with_future_rows(ckpt: Path, data: pd.DataFrame, tmp_path: Path) -> None:
    source = tmp_path / "with_plan.csv"
    with_future_rows(data).to_csv(source, index=False)
    out = tmp_path / "forecast.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "forecast.py"), f"checkpoint={ckpt}",
                           f"input={source}", f"output={out}", "plot=none"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    written = pd.read_csv(out, index_col=0, parse_dates=True)
    fc = Forecaster.from_checkpoint(ckpt)
    expected = fc.predict(with_future_rows(data))
    assert list(written.index) == list(expected.index)
    np.testing.assert_allclose(points(written, fc), points(expected, fc), rtol=1e-8)
    assert f"after {stamp(data)}" in proc.stdout


@report_user_errors
def forecast_main(argv: list[str]) -> None:
    run_forecast(parse_options(argv))


def refused(capsys: pytest.CaptureFixture[str], ckpt: Path, frame: pd.DataFrame, tmp_path: Path,
            *extra: str) -> str:
    source = tmp_path / "input.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "out.csv"
    with pytest.raises(SystemExit) as caught:
        forecast_main([f"checkpoint={ckpt}", f"input={source}", f"output={out}", *extra])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists() and not out.with_suffix(".png").exists()
    return err


def test_error_known_future_column_missing(ckpt: Path, data: pd.DataFrame, tmp_path: Path, capsys) -> None:
    err = refused(capsys, ckpt, with_future_rows(data).drop(columns=["plan"]), tmp_path)
    assert "lacks the known-future column(s) 'plan'" in err


@pytest.mark.parametrize("rows", [0, 3])
def test_error_too_few_future_rows(ckpt: Path, data: pd.DataFrame, tmp_path: Path, capsys, rows: int) -> None:
    err = refused(capsys, ckpt, with_future_rows(data, rows=rows), tmp_path)
    assert f"needs {PRED} future rows after it; found {rows}" in err
    assert f"append {PRED - rows} more row(s)" in err


def test_error_as_of_too_close_to_the_end(ckpt: Path, data: pd.DataFrame, tmp_path: Path, capsys) -> None:
    err = refused(capsys, ckpt, data, tmp_path, f"as_of={stamp(data, len(data) - 3)}")
    assert f"needs {PRED} future rows after it; found 2; pick an earlier as_of" in err


def test_error_nan_known_future_value_in_the_horizon(ckpt: Path, data: pd.DataFrame, tmp_path: Path,
                                                     capsys) -> None:
    frame = with_future_rows(data)
    frame.loc[ORIGIN + 3, "plan"] = np.nan
    err = refused(capsys, ckpt, frame, tmp_path)
    assert "column 'plan' has an empty or NaN cell at line" in err and "fill it" in err


def test_error_target_filled_in_a_future_row(ckpt: Path, data: pd.DataFrame, tmp_path: Path, capsys) -> None:
    frame = with_future_rows(data)
    frame.loc[ORIGIN + PRED, "y"] = 1.0  # the last future row
    err = refused(capsys, ckpt, frame, tmp_path)
    line = ORIGIN + PRED + 2  # the header is line 1
    assert f"line {line} has a value in y after line {ORIGIN + 2}" in err and "origin ambiguous" in err


def test_error_past_covariate_filled_in_a_future_row(ckpt: Path, data: pd.DataFrame, tmp_path: Path,
                                                     capsys) -> None:
    frame = with_future_rows(data)
    frame.loc[ORIGIN + 1, "past"] = 0.5  # the first future row: a past-only input is not known ahead
    err = refused(capsys, ckpt, frame, tmp_path)
    assert f"line {ORIGIN + 3} has a value in past after line {ORIGIN + 2}" in err


def test_error_future_timestamps_off_the_grid(ckpt: Path, data: pd.DataFrame, tmp_path: Path, capsys) -> None:
    frame = with_future_rows(data)
    frame = frame.drop(index=ORIGIN + 2)  # a missing future hour
    err = refused(capsys, ckpt, frame, tmp_path)
    assert "the future rows" in err and "gap in the series" in err


def test_error_column_both_target_and_covariate(csv: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "dataset=custom",
                           f"dataset.path={csv}", "dataset.target=y", "dataset.features=MS",
                           "dataset.known_future=[plan,y]", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "column 'y' is both a target" in proc.stderr and "dataset.known_future" in proc.stderr
    assert not run_dir.exists()


def test_backtest_command_with_covariates(ckpt: Path, data: pd.DataFrame, csv: Path, tmp_path: Path,
                                          capsys) -> None:
    folder = run_backtest_command(parse_backtest_options(
        [f"checkpoint={ckpt}", f"start={stamp(data, ORIGIN - 5)}", f"end={stamp(data)}",
         f"output={tmp_path}"]))
    frame = pd.read_csv(folder / "backtest.csv")
    assert frame["origin"].nunique() == 6 and frame["truth"].notna().all()
    # an end whose horizon runs past the data: the known-future values are missing, refused
    with pytest.raises(SystemExit) as caught:
        report_user_errors(run_backtest_command)(parse_backtest_options(
            [f"checkpoint={ckpt}", f"start={stamp(data, len(data) - 4)}", f"end={stamp(data, len(data) - 1)}",
             f"output={tmp_path / 'late'}"]))
    err = capsys.readouterr().err
    assert caught.value.code == 2 and "no value of the known-future column(s) plan" in err
    assert not (tmp_path / "late").exists()


# -- checkpoints without covariates ------------------------------------------------------------------
def test_a_checkpoint_written_before_covariates_still_forecasts(csv: Path, data: pd.DataFrame,
                                                                tmp_path: Path) -> None:
    payload = load_checkpoint(covariate_checkpoint(tmp_path / "plain.pt", csv, "MS", known_future=()))
    # as an older version wrote it: no role keys in the data section, no n_known_future in the model
    payload["model_config"].pop("n_known_future")
    for key in ("targets", "past_covariates", "known_future", "covariate_mean", "covariate_scale"):
        payload["data"].pop(key)
    save_checkpoint({k: v for k, v in payload.items() if not k.startswith("format")}, tmp_path / "old.pt")
    fc = Forecaster.from_checkpoint(tmp_path / "old.pt")
    assert fc.known_future == [] and not any("covariate" in k for k in fc.model.state_dict())
    frame = fc.predict(data.iloc[: ORIGIN + 1])  # no future rows needed
    assert frame.shape[0] == PRED and np.isfinite(frame["y"].to_numpy()).all()
    assert fc.columns == ["plan", "past", "z", "y"]


def test_the_fixture_checkpoints_predate_covariates() -> None:
    fixture = REPO / "tests" / "fixtures" / "checkpoints_before_simplification.pt"
    cases = torch.load(fixture, weights_only=True)
    assert all("n_known_future" not in case["model_config"] for case in cases.values())
