"""Forecasting with the model options (RevIN, de-stationary attention, channel independence) and the
validation-skill note, on checkpoints built directly (no training run).

The central invariant: with ``norm=revin`` a forecast is equivariant to a positive affine change of
each input column, ``forecast(a * x + c) = a * forecast(x) + c`` per column, end to end: through the
training-split scaler stored in the checkpoint (fitted on the original data and NOT refitted), the CSV,
``Forecaster.predict`` and the forecast command. It holds because the scaler is itself affine per
column and RevIN removes each window's own level and scale, then puts them back on the forecast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from informer.checkpoint import save_checkpoint
from informer.config import ModelSpec, derive_model_config
from informer.data.datasets import custom_borders
from informer.data.scaling import fit_train_scaler
from informer.data.timefeatures import time_features

REPO = Path(__file__).resolve().parents[1]
FORECAST = REPO / "scripts" / "forecast.py"
TINY = {"seq_len": 48, "label_len": 24, "pred_len": 12, "d_model": 16, "n_heads": 2, "e_layers": 1,
        "d_layers": 1, "d_ff": 32, "factor": 3, "dropout": 0.0}
COLUMNS = ["load", "temp", "OT"]  # features M: target last
ROWS = 360
SCALE = np.array([0.5, 7.0, 2.5])  # a_j > 0, a different one per column
SHIFT = np.array([120.0, -35.0, 4.0])  # c_j
EQUIVARIANCE_TOL = 1e-3  # relative to a_j * the column's training std; RevIN's eps makes it inexact

REVIN = {"norm": "revin"}
OPTION_SETS = {
    "revin": REVIN,
    "revin+destationary": {"norm": "revin", "destationary": True},
    "channel_independent": {"norm": "none", "channel_independent": True},
    "all_three": {"norm": "revin", "destationary": True, "channel_independent": True},
}


# -- helpers ----------------------------------------------------------------------------------------
def series(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """Hourly, three columns on different levels and scales: daily cycles, a trend, a random walk."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    day = 2 * np.pi * t / 24
    return pd.DataFrame({
        "date": pd.date_range("2021-03-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
        "load": 50 + 10 * np.sin(day) + 0.02 * t + rng.normal(0, 1.0, rows),
        "temp": 15 + 5 * np.sin(day + 1.0) + rng.normal(0, 0.3, rows).cumsum(),
        "OT": 30 + 3 * np.sin(2 * day) + rng.normal(0, 0.5, rows),
    })


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def moved(frame: pd.DataFrame) -> pd.DataFrame:
    """Column j replaced by ``SCALE[j] * x_j + SHIFT[j]``."""
    out = frame.copy()
    out[COLUMNS] = frame[COLUMNS].to_numpy() * SCALE + SHIFT
    return out


def build_payload(frame: pd.DataFrame, csv: Path, seed: int = 0, validation: dict[str, float] | None = None,
                  **spec: Any) -> tuple[dict[str, Any], torch.nn.Module]:
    """A tiny random-weight model and the checkpoint payload training would store for it (the scaler is
    fitted on the training split's rows of ``frame`` only); also the in-memory model."""
    from informer.model import build_model

    cfg = derive_model_config(ModelSpec(**{**TINY, **spec}), "M", len(COLUMNS), "h")
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    if model.revin is not None and model.revin.affine:
        with torch.no_grad():  # not the identity it starts as, so a lost affine map would show
            model.revin.weight.uniform_(0.5, 2.0)
            model.revin.bias.normal_(0.0, 0.5)
    values = frame[COLUMNS].to_numpy()
    scaler = fit_train_scaler(values, custom_borders(len(frame), cfg.seq_len)["train"])
    stamps = pd.to_datetime(frame["date"])
    train_end = custom_borders(len(frame), cfg.seq_len)["train"][1]
    payload: dict[str, Any] = {
        "model_config": cfg.to_dict(),
        "model_state": model.state_dict(),
        "config": {"dataset": {"name": "custom", "features": "M", "target": "OT", "freq": "h"},
                   "model": {**TINY, **spec}},
        "data": {"columns": list(COLUMNS), "target": "OT", "features": "M", "freq": "h",
                 "date_column": "date",
                 "scaler_mean": [float(v) for v in scaler.mean_],
                 "scaler_scale": [float(v) for v in scaler.scale_],
                 "last_timestamp": stamps.iloc[train_end - 1].isoformat(),
                 "first_timestamp": stamps.iloc[0].isoformat(), "source": str(csv), "embed": cfg.embed,
                 "seasonal_period": 24},
        "versions": {"torch": str(torch.__version__), "informer": "test", "threads": 1},
    }
    if validation is not None:
        payload["validation"] = validation
    return payload, model


def make_checkpoint(path: Path, frame: pd.DataFrame, csv: Path, **kwargs: Any) -> Path:
    payload, _ = build_payload(frame, csv, **kwargs)
    return save_checkpoint(payload, path)


def run_forecast_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # 2 shared cores
    return subprocess.run([sys.executable, str(FORECAST), *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)


def cli_forecast(checkpoint: Path, csv: Path, out: Path) -> pd.DataFrame:
    proc = run_forecast_cli(f"checkpoint={checkpoint}", f"input={csv}", f"output={out}", "plot=none")
    assert proc.returncode == 0, proc.stderr
    return pd.read_csv(out, parse_dates=["date"]).set_index("date")


def stored_train_std(checkpoint: Path) -> np.ndarray:
    from informer.checkpoint import load_checkpoint

    return np.asarray(load_checkpoint(checkpoint)["data"]["scaler_scale"])


def equivariance_error(base: pd.DataFrame, shifted: pd.DataFrame, train_std: np.ndarray) -> np.ndarray:
    """Per column: max |f(a x + c) - (a f(x) + c)| over the horizon, in units of a_j * training std."""
    assert list(base.columns) == list(shifted.columns) == COLUMNS
    assert list(base.index) == list(shifted.index)
    expected = base.to_numpy() * SCALE + SHIFT
    return np.abs(shifted.to_numpy() - expected).max(axis=0) / (SCALE * train_std)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("series")
    frame = series()
    return {"frame": frame, "csv": write_csv(frame, folder / "series.csv"),
            "moved_csv": write_csv(moved(frame), folder / "moved.csv")}


# -- 1. RevIN: forecast(a x + c) = a forecast(x) + c, end to end ---------------------------------------
@pytest.mark.parametrize("spec", [REVIN, {**REVIN, "channel_independent": True}],
                         ids=["revin", "revin+channel_independent"])
def test_revin_forecast_is_affine_equivariant_end_to_end(spec: dict[str, Any], data: dict[str, Any],
                                                        tmp_path: Path) -> None:
    from informer.forecast import Forecaster

    ckpt = make_checkpoint(tmp_path / "revin.pt", data["frame"], data["csv"], **spec)
    fc = Forecaster.from_checkpoint(ckpt)
    train_std = stored_train_std(ckpt)
    base, shifted = fc.predict(data["csv"]), fc.predict(data["moved_csv"])
    assert np.isfinite(base.to_numpy()).all()
    api_error = equivariance_error(base, shifted, train_std)
    assert (api_error < EQUIVARIANCE_TOL).all(), f"Forecaster.predict: {api_error}"

    cli_base = cli_forecast(ckpt, data["csv"], tmp_path / "base.csv")
    cli_shifted = cli_forecast(ckpt, data["moved_csv"], tmp_path / "moved.csv")
    cli_error = equivariance_error(cli_base, cli_shifted, train_std)
    assert (cli_error < EQUIVARIANCE_TOL).all(), f"forecast CLI: {cli_error}"
    np.testing.assert_allclose(cli_base.to_numpy(), base.to_numpy(), rtol=1e-8)  # CSV keeps 10 digits


def test_without_revin_the_forecast_is_not_equivariant(data: dict[str, Any], tmp_path: Path) -> None:
    """The same check on a norm=none model fails by a wide margin, so the test above can fail."""
    from informer.forecast import Forecaster

    ckpt = make_checkpoint(tmp_path / "plain.pt", data["frame"], data["csv"], norm="none")
    fc = Forecaster.from_checkpoint(ckpt)
    train_std = stored_train_std(ckpt)
    error = equivariance_error(fc.predict(data["csv"]), fc.predict(data["moved_csv"]), train_std)
    assert (error > 100 * EQUIVARIANCE_TOL).all(), error


# -- 2. a checkpoint of each option forecasts, the same as the model it was saved from -----------------
def manual_forecast(model: torch.nn.Module, payload: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """The forecast pipeline written out: training scaler, start token + zeros, marks, inverse scale."""
    meta = payload["data"]
    mean, scale = np.asarray(meta["scaler_mean"]), np.asarray(meta["scaler_scale"])
    window = frame.iloc[-TINY["seq_len"]:]
    stamps = pd.DatetimeIndex(pd.to_datetime(window["date"]))
    future = pd.date_range(stamps[-1], periods=TINY["pred_len"] + 1, freq="h")[1:]
    x = torch.tensor(((window[COLUMNS].to_numpy() - mean) / scale)[None], dtype=torch.float32)  # [1, L, C]
    x_dec = torch.cat([x[:, -TINY["label_len"]:], torch.zeros(1, TINY["pred_len"], len(COLUMNS))], dim=1)
    marks = torch.tensor(time_features(stamps, "h", "timeF"))[None]
    dec_marks = torch.tensor(time_features(stamps[-TINY["label_len"]:].append(future), "h", "timeF"))[None]
    with torch.no_grad():
        out = model(x, marks, x_dec, dec_marks)  # [1, pred_len, C]
    return out[0].double().numpy() * scale + mean


@pytest.mark.parametrize("spec", list(OPTION_SETS.values()), ids=list(OPTION_SETS))
def test_checkpoint_round_trip_and_forecast(spec: dict[str, Any], data: dict[str, Any],
                                            tmp_path: Path) -> None:
    from informer.forecast import Forecaster

    payload, model = build_payload(data["frame"], data["csv"], **spec)
    ckpt = save_checkpoint(payload, tmp_path / "opt.pt")
    fc = Forecaster.from_checkpoint(ckpt)
    for key, value in spec.items():
        assert fc.model_config[key] == value, key
    assert (fc.model.revin is not None) == (spec.get("norm") == "revin")

    got = fc.predict(data["csv"])
    last = pd.Timestamp(data["frame"]["date"].iloc[-1])
    assert list(got.index) == list(pd.date_range(last, periods=TINY["pred_len"] + 1, freq="h")[1:])
    assert got.index.name == "date" and list(got.columns) == COLUMNS
    assert np.isfinite(got.to_numpy()).all()
    # the loaded network is the saved one: same forecast as the in-memory model it was saved from
    np.testing.assert_allclose(got.to_numpy(), manual_forecast(model, payload, data["frame"]),
                               rtol=1e-5, atol=1e-5)
    # and the same forecast again, from the same Forecaster and from a second load
    pd.testing.assert_frame_equal(fc.predict(data["csv"]), got)
    pd.testing.assert_frame_equal(Forecaster.from_checkpoint(ckpt).predict(data["csv"]), got)


# -- 3. the note when the model did not beat seasonal naive on validation ----------------------------
LOW = {"mse": 0.61, "seasonal_naive_mse": 0.5, "skill": -0.22}
GOOD = {"mse": 0.35, "seasonal_naive_mse": 0.5, "skill": 0.3}
NOTE = ("on its validation split this model's MSE is not better than repeating the last season "
        "(skill -0.22 vs seasonal naive); check the baselines before relying on it")


@pytest.mark.parametrize(("section", "expected"), [
    (None, None), ("bad", None), ({}, None), (LOW, -0.22), (GOOD, 0.3),
    ({"mse": 0.6, "seasonal_naive_mse": 0.5}, -0.2),  # skill computed from the MSEs
    ({"skill": float("nan")}, None), ({"skill": True}, None), ({"mse": 1.0, "seasonal_naive_mse": 0.0}, None),
])
def test_validation_skill_is_read_from_the_payload(section: Any, expected: float | None) -> None:
    from informer.forecast.skill import low_skill_note, validation_skill

    payload = {} if section is None else {"validation": section}
    assert validation_skill(payload) == (None if expected is None else pytest.approx(expected))
    note = low_skill_note(payload)
    assert (note is not None) == (expected is not None and expected <= 0)


def test_zero_skill_counts_as_not_better() -> None:
    from informer.forecast.skill import low_skill_note

    note = low_skill_note({"validation": {"mse": 0.5, "seasonal_naive_mse": 0.5, "skill": 0.0}})
    assert note is not None and "(skill 0.00 vs seasonal naive)" in note


@pytest.fixture(scope="module")
def skill_checkpoints(tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any]) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("skill")
    return {name: make_checkpoint(folder / f"{name}.pt", data["frame"], data["csv"], validation=section)
            for name, section in (("low", LOW), ("good", GOOD), ("absent", None))}


def test_forecaster_warns_once_per_predict_on_low_skill(skill_checkpoints: dict[str, Path],
                                                        data: dict[str, Any]) -> None:
    from informer.forecast import Forecaster, LowSkillWarning

    fc = Forecaster.from_checkpoint(skill_checkpoints["low"])
    assert fc.validation_skill == pytest.approx(-0.22) and fc.low_skill_note == NOTE
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = fc.predict(data["csv"])
    assert [(w.category, str(w.message)) for w in caught] == [(LowSkillWarning, NOTE)]
    assert "\n" not in NOTE and len(frame) == TINY["pred_len"]  # a caution: the forecast is still made


@pytest.mark.parametrize("name", ["good", "absent"])
def test_forecaster_is_silent_without_low_skill(name: str, skill_checkpoints: dict[str, Path],
                                                data: dict[str, Any]) -> None:
    from informer.forecast import Forecaster

    fc = Forecaster.from_checkpoint(skill_checkpoints[name])
    assert fc.low_skill_note is None
    assert fc.validation_skill == (pytest.approx(0.3) if name == "good" else None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        fc.predict(data["csv"])


@pytest.mark.parametrize("name", ["low", "good", "absent"])
def test_cli_notes_low_skill_on_stderr_and_still_succeeds(name: str, skill_checkpoints: dict[str, Path],
                                                          data: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "fc.csv"
    proc = run_forecast_cli(f"checkpoint={skill_checkpoints[name]}", f"input={data['csv']}",
                            f"output={out}", "plot=none")
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and f"wrote {out}" in proc.stdout
    expected = [f"note: {NOTE}"] if name == "low" else []
    # these hand-built checkpoints have no calibration: that note is test_forecast_intervals.py's concern
    assert [line for line in proc.stderr.splitlines() if "calibrate=true" not in line] == expected
    assert "seasonal naive" not in proc.stdout  # the note goes to stderr only
