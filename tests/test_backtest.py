"""Rolling-origin backtest: over a split's windows at stride 1 it equals the evaluation of that split; the
command writes its CSV, metrics and PNG; bad options get one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from training_helpers import REPO, run_script, tiny_run

from informer.checkpoint import load_checkpoint, save_checkpoint
from informer.data import load_data_bundle
from informer.errors import UserError
from informer.forecast import Forecaster
from informer.forecast.backtest import run_backtest
from informer.forecast.backtest_cli import parse_backtest_options, run_backtest_command
from informer.training import evaluate_checkpoint

BACKTEST_SCRIPT = REPO / "scripts" / "backtest.py"


@pytest.fixture(scope="module")
def best(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir, _ = tiny_run(ett_dir, tmp_path_factory.getbasetemp())
    return run_dir / "checkpoints" / "best.pt"


def _split_origins(best: Path, ett_dir: Path, split: str) -> tuple[pd.Timestamp, pd.Timestamp, int]:
    """Timestamps of the first and last origin of a split's windows, and their number."""
    payload = load_checkpoint(best)
    spec = payload["model_config"]
    bundle = load_data_bundle(payload["config"]["dataset"], ett_dir, spec["seq_len"], spec["label_len"],
                              spec["pred_len"], spec["embed"])
    dataset = bundle.split(split)
    origin = [bundle.timestamps[dataset.window_start(i) + spec["seq_len"] - 1] for i in (0, len(dataset) - 1)]
    return origin[0], origin[1], len(dataset)


def test_backtest_at_stride_1_equals_the_evaluation(best: Path, ett_dir: Path, etth1_csv: Path) -> None:
    start, end, n_windows = _split_origins(best, ett_dir, "test")
    expected = evaluate_checkpoint(best, split="test", device="cpu", batch_size=97)["test"]
    fc = Forecaster.from_checkpoint(best)
    got = run_backtest(fc, fc.table(etth1_csv), start, end, stride=1, batch_size=64).metrics

    assert got["origins"] == got["windows"] == expected["windows"] == n_windows
    for name in ("model", "naive_last", "naive_seasonal"):
        np.testing.assert_allclose(got[name]["mse_per_step"], expected[name]["mse_per_step"], rtol=1e-5)
        # the per-step scores add up to the same numbers
        np.testing.assert_allclose(got[name]["per_step"]["mse"], expected[name]["mse_per_step"], rtol=1e-5)
        for kind, metric in (("scaled", "mse"), ("scaled", "mae"), ("scaled", "skill"), ("original", "mae")):
            want = expected[name][kind][metric]
            assert got[name][kind][metric] == pytest.approx(want, rel=1e-5), (name, metric)
    assert set(got["model"]["intervals"]) == set(expected["model"]["intervals"]) == {"0.8", "0.95"}
    for key, values in expected["model"]["intervals"].items():
        np.testing.assert_allclose(got["model"]["intervals"][key]["coverage_per_step"],
                                   values["coverage_per_step"], atol=1e-3)
        assert got["model"]["intervals"][key]["width"] == pytest.approx(values["width"], rel=1e-5)
        # seasonal naive's interval: the margins stored with the calibration are the evaluation's own
        naive = expected["naive_seasonal"]["intervals"][key]
        np.testing.assert_allclose(got["naive_seasonal"]["intervals"][key]["coverage_per_step"],
                                   naive["coverage_per_step"], atol=1e-9)
        assert got["naive_seasonal"]["intervals"][key]["width"] == pytest.approx(naive["width"], rel=1e-6)


def test_naive_baseline_intervals_cover_their_own_calibration_split(best: Path, ett_dir: Path,
                                                                    etth1_csv: Path) -> None:
    """Both naive baselines' intervals come from their validation residuals (split conformal), so over
    the validation windows themselves every step covers at least the nominal fraction per variable."""
    start, end, _ = _split_origins(best, ett_dir, "val")
    fc = Forecaster.from_checkpoint(best)
    assert set(fc.calibration["baselines"]) == {"naive_seasonal", "naive_last"}
    got = run_backtest(fc, fc.table(etth1_csv), start, end, stride=1).metrics
    for name in ("naive_seasonal", "naive_last"):
        for key, values in got[name]["intervals"].items():
            assert min(values["coverage_per_step"]) >= float(key) - 1e-9, (name, key)
            assert min(values["coverage_per_variable"]) >= float(key) - 1e-9, (name, key)
    # the last value drifts further from the truth with every step, seasonal naive does not
    last = got["naive_last"]["intervals"]["0.8"]["width"]
    assert last > got["naive_seasonal"]["intervals"]["0.8"]["width"]


def test_cli_writes_long_csv_metrics_and_png(best: Path, etth1_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "bt"
    args = [f"checkpoint={best}", f"input={etth1_csv}", "start=2017-10-01 00:00:00",
            "end=2017-10-10 23:00:00", "stride=5", f"output={out}"]
    result = run_script(BACKTEST_SCRIPT, args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pd.read_csv(out / "backtest.csv", parse_dates=["origin", "timestamp"])
    assert list(frame.columns) == ["origin", "timestamp", "step", "variable", "forecast", "lo80", "hi80",
                                   "lo95", "hi95", "truth"]
    origins = pd.date_range("2017-10-01", "2017-10-10 23:00", freq="5h")
    pred_len, n_vars = 6, 7
    assert len(frame) == len(origins) * pred_len * n_vars
    assert list(frame["origin"].unique()) == list(origins)
    assert (frame["timestamp"] == frame["origin"] + pd.to_timedelta(frame["step"], unit="h")).all()
    assert ((frame["lo95"] <= frame["lo80"]) & (frame["lo80"] <= frame["forecast"])
            & (frame["forecast"] <= frame["hi80"]) & (frame["hi80"] <= frame["hi95"])).all()
    data = pd.read_csv(etth1_csv, parse_dates=["date"]).set_index("date")
    row = frame.iloc[-1]
    assert row["truth"] == pytest.approx(data.loc[row["timestamp"], row["variable"]])

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["origins"] == metrics["windows"] == len(origins)
    for name in ("model", "naive_last", "naive_seasonal"):
        assert len(metrics[name]["per_step"]["mse"]) == len(metrics[name]["per_step"]["mae"]) == pred_len
    assert len(metrics["model"]["intervals"]["0.8"]["coverage_per_step"]) == pred_len
    assert metrics["skill"] == metrics["model"]["scaled"]["skill"]
    assert (out / "backtest.png").stat().st_size > 1000
    assert f"wrote {out / 'backtest.csv'}" in result.stdout

    again = run_script(BACKTEST_SCRIPT, [f"checkpoint={best}", "start=2017-10-01", "end=2017-10-02",
                                         f"output={out}"], cwd=tmp_path)
    assert again.returncode == 2 and "overwrite=true" in again.stderr


def test_checkpoint_without_calibration_backtests_points(best: Path, etth1_csv: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old.pt"
    save_checkpoint({k: v for k, v in load_checkpoint(best).items() if k != "calibration"}, old)
    out = tmp_path / "bt"
    run_backtest_command(parse_backtest_options([f"checkpoint={old}", f"input={etth1_csv}",
                                                 "start=2017-10-01", "end=2017-10-02", f"output={out}"]))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "calibrate=true" in err
    frame = pd.read_csv(out / "backtest.csv")
    assert list(frame.columns) == ["origin", "timestamp", "step", "variable", "forecast", "truth"]
    assert "intervals" not in json.loads((out / "metrics.json").read_text())["model"]


@pytest.mark.parametrize(("args", "message"), [
    (["start=2016-07-01 10:00:00"], "seq_len=24"),
    (["start=2017-10-01", "stride=0"], "stride=0 must be >= 1"),
    (["start=2017-10-01", "stride=-3"], "stride=-3 must be >= 1"),
    (["start=2017-10-01", "stride=two"], "whole number"),
    (["start=2017-10-02", "end=2017-10-01"], "before start"),
    (["start=yesterday"], "not a timestamp"),
    (["start=2017-10-01", "intervals=0.8,1.5"], "strictly between 0 and 1"),
    (["start=2017-10-01", "intervals=0.5"], "calibrated at levels"),
    (["end=2017-10-01"], "missing start="),
])
def test_bad_options_are_user_errors(best: Path, etth1_csv: Path, tmp_path: Path, args: list[str],
                                     message: str) -> None:
    with pytest.raises(UserError, match=message):
        run_backtest_command(parse_backtest_options([f"checkpoint={best}", f"input={etth1_csv}",
                                                     f"output={tmp_path / 'bt'}", *args]))
    assert not (tmp_path / "bt").exists()


def test_missing_and_corrupt_checkpoints_exit_2(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    for path, message in ((tmp_path / "nope.pt", "does not exist"), (corrupt, str(corrupt))):
        result = run_script(BACKTEST_SCRIPT, [f"checkpoint={path}", "start=2017-10-01"], cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.startswith("error: ") and message in result.stderr
        assert "Traceback" not in result.stderr
