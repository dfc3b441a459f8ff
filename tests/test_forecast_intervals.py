"""Forecasts with intervals: the CSV, Forecaster.predict, the PNG and TensorBoard's figures carry the
calibrated intervals (and a quantile model's quantiles) in original units; a checkpoint without a
calibration still forecasts points and says in one line how to add intervals."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from training_helpers import REPO, run_script, tiny_config, tiny_run

from informer.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from informer.data import load_data_bundle
from informer.forecast import Forecaster, LowSkillWarning
from informer.forecast.backtest import long_frame, run_backtest
from informer.forecast.bands import forecast_bands, interval_suffixes, quantile_suffix
from informer.forecast.plot import ForecastWindow, plot_forecast_windows
from informer.training import train
from informer.training.evaluate import forecast_figure, quantile_bands

FORECAST_SCRIPT = REPO / "scripts" / "forecast.py"


@pytest.fixture(scope="module")
def best(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir, _ = tiny_run(ett_dir, tmp_path_factory.getbasetemp())
    return run_dir / "checkpoints" / "best.pt"


def _ordered(frame: pd.DataFrame, names: list[str]) -> None:
    for n in names:
        assert (frame[f"{n}_lo95"] <= frame[f"{n}_lo80"]).all()
        assert (frame[f"{n}_lo80"] <= frame[n]).all() and (frame[n] <= frame[f"{n}_hi80"]).all()
        assert (frame[f"{n}_hi80"] <= frame[f"{n}_hi95"]).all()


def test_cli_round_trip_writes_interval_columns_and_png(best: Path, etth1_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "fc.csv"
    result = run_script(FORECAST_SCRIPT, [f"checkpoint={best}", f"input={etth1_csv}", f"output={out}"],
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "calibrate=true" not in result.stderr
    frame = pd.read_csv(out, parse_dates=["date"]).set_index("date")
    names = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    bands = [f"{n}_{side}{level}" for level in ("80", "95") for n in names for side in ("lo", "hi")]
    assert list(frame.columns) == [*names, *bands]
    _ordered(frame, names)
    assert (frame["OT_hi95"] - frame["OT_lo95"]).gt(0).all()
    assert out.with_suffix(".png").stat().st_size > 1000


def test_predict_returns_intervals_in_original_units(best: Path, etth1_csv: Path) -> None:
    fc = Forecaster.from_checkpoint(best)
    assert fc.calibration is not None and fc.calibration_note is None
    with pytest.warns(LowSkillWarning):  # the tiny model is worse than seasonal naive
        frame = fc.predict(etth1_csv, as_of="2018-01-01 00:00:00")
    _ordered(frame, fc.output_columns)
    # the 80 % interval is the point forecast -+ the stored margin times the look-back window's std
    # (normalized conformal, the default), mapped through the training scaler
    assert fc.calibration["per_level"]["0.8"]["method"] == "normalized"
    margin = np.asarray(fc.calibration["per_level"]["0.8"]["margin"])  # [P, C] scaled
    mean, scale = fc.scaler_stats()
    data = pd.read_csv(etth1_csv, parse_dates=["date"]).set_index("date")
    window = data.loc[:frame.index[0] - pd.Timedelta(hours=1), "OT"].tail(fc.seq_len)  # what the model read
    spread = np.std((window.to_numpy() - mean[-1]) / scale[-1])  # population std, scaled units
    np.testing.assert_allclose(frame["OT_hi80"] - frame["OT"], margin[:, -1] * spread * scale[-1], rtol=1e-5)
    assert frame["OT_true"].notna().all()


def test_checkpoint_without_calibration_forecasts_points_with_one_note(best: Path, etth1_csv: Path,
                                                                        tmp_path: Path) -> None:
    old = tmp_path / "old.pt"
    save_checkpoint({k: v for k, v in load_checkpoint(best).items() if k != "calibration"}, old)
    out = tmp_path / "fc.csv"
    result = run_script(FORECAST_SCRIPT, [f"checkpoint={old}", f"input={etth1_csv}", f"output={out}"],
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    notes = [line for line in result.stderr.splitlines() if "calibrate=true" in line]
    assert len(notes) == 1 and f"scripts/evaluate.py checkpoint={old} calibrate=true" in notes[0]
    frame = pd.read_csv(out, index_col="date")
    assert list(frame.columns) == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert out.with_suffix(".png").is_file()


def test_quantile_output_gives_quantile_columns_in_order() -> None:
    quantiles = [0.1, 0.5, 0.9]
    base = torch.randn(2, 4, 3, 1)
    output = torch.cat([base - 1.0, base, base + 0.5], dim=-1)  # [B, P, C, Q], increasing
    mean, scale = np.array([1.0, -2.0, 10.0]), np.array([2.0, 0.5, 3.0])
    bands = forecast_bands(output, quantiles, None, mean, scale)
    np.testing.assert_allclose(bands.point, base[..., 0].double().numpy() * scale + mean)
    assert list(bands.quantiles) == quantiles and not bands.intervals
    assert (bands.quantiles[0.1] < bands.point).all() and (bands.point < bands.quantiles[0.9]).all()
    assert [quantile_suffix(q) for q in (0.1, 0.5, 0.975)] == ["_q10", "_q50", "_q97.5"]
    assert interval_suffixes(0.8) == ("_lo80", "_hi80")


def test_plot_shades_interval_bands() -> None:
    steps = np.arange(10)
    window = ForecastWindow(history_time=steps[:6], history=np.zeros(6), forecast_time=steps[6:],
                            prediction=np.ones(4), bands={0.8: (np.zeros(4), np.full(4, 2.0)),
                                                          0.95: (np.full(4, -1.0), np.full(4, 3.0))})
    fig = plot_forecast_windows([window])
    ax = fig.axes[0]
    assert len(ax.collections) == 2  # one shaded band per level
    labels = ax.get_legend_handles_labels()[1]
    assert "80% interval" in labels and "95% interval" in labels


def test_tensorboard_figure_shades_calibrated_intervals(best: Path, ett_dir: Path) -> None:
    payload = load_checkpoint(best)
    spec = payload["model_config"]
    bundle = load_data_bundle(payload["config"]["dataset"], ett_dir, spec["seq_len"], spec["label_len"],
                              spec["pred_len"], spec["embed"])
    model = build_model_from_checkpoint(payload)
    kwargs = {"device": torch.device("cpu"), "autocast": lambda: torch.autocast("cpu", enabled=False)}
    plain = forecast_figure(model, bundle, "val", [0, 5], **kwargs)  # a point model during training
    assert plain is not None and not plain.axes[0].collections
    shaded = forecast_figure(model, bundle, "val", [0, 5], calibration=payload["calibration"], **kwargs)
    assert shaded is not None and len(shaded.axes[0].collections) == 2


def test_quantile_bands_pair_symmetric_levels() -> None:
    output = torch.arange(2 * 3 * 1 * 5, dtype=torch.float32).reshape(2, 3, 1, 5)
    bands = quantile_bands(output, [0.05, 0.1, 0.5, 0.9, 0.95])
    assert sorted(bands) == [0.8, 0.9]
    assert torch.equal(bands[0.8][0], output[..., 1]) and torch.equal(bands[0.8][1], output[..., 3])
    assert quantile_bands(output[..., 0], None) == {}


def test_quantile_model_forecast_and_backtest_carry_quantiles(ett_dir: Path, etth1_csv: Path,
                                                              tmp_path: Path) -> None:
    settings = {"model.quantiles": [0.1, 0.5, 0.9], "train.loss": "pinball", "train.epochs": 1,
                "train.plot_windows": 1}
    train(tiny_config(ett_dir, **settings), output_dir=tmp_path / "run")
    fc = Forecaster.from_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowSkillWarning)  # a one-epoch model
        frame = fc.predict(etth1_csv)
    assert {"OT_q10", "OT_q50", "OT_q90", "OT_lo80", "OT_hi80"} <= set(frame.columns)
    assert (frame["OT_q10"] <= frame["OT_q50"]).all() and (frame["OT_q50"] <= frame["OT_q90"]).all()
    np.testing.assert_allclose(frame["OT"], frame["OT_q50"])  # the median is the point forecast
    # 0.8 is CQR on (q10, q90), 0.95 split conformal around the median: not nested in general
    for n in fc.output_columns:
        assert (frame[f"{n}_lo80"] <= frame[f"{n}_hi80"]).all() and (frame[f"{n}_lo95"] <= frame[n]).all()
    result = run_backtest(fc, fc.table(etth1_csv), "2017-10-01", "2017-10-03", stride=7)
    table = long_frame(result)
    assert list(table.columns) == ["origin", "timestamp", "step", "variable", "forecast", "lo80", "hi80",
                                   "lo95", "hi95", "q10", "q50", "q90", "truth"]
    assert result.metrics["model"]["probabilistic"]["quantiles_from"] == "model"
