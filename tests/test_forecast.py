"""Forecasting from a checkpoint: round trips through real training, the API, timestamps, determinism."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from informer.checkpoint import save_checkpoint
from informer.config import ModelSpec, derive_model_config
from informer.data.timefeatures import time_features

REPO = Path(__file__).resolve().parents[1]
FORECAST = REPO / "scripts" / "forecast.py"
TRAIN = REPO / "scripts" / "train.py"
TINY = {"seq_len": 48, "label_len": 24, "pred_len": 12, "d_model": 16, "n_heads": 2, "e_layers": 1,
        "d_layers": 1, "d_ff": 32, "factor": 3, "dropout": 0.0}
ETT_TRAIN_ROWS = 8640  # the paper's ETTh1 train split


def run_cli(script: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # 2 shared cores
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=600)


def make_checkpoint(path: Path, csv: Path, features: str = "M", target: str = "OT", freq: str = "h",
                    embed: str = "timeF", attn: str = "prob", train_rows: int = ETT_TRAIN_ROWS,
                    seed: int = 0, **spec: object) -> Path:
    """An untrained tiny model plus the schema and train-split scaler training would store."""
    from sklearn.preprocessing import StandardScaler

    from informer.model import build_model

    df = pd.read_csv(csv)
    values = [c for c in df.columns if c != "date"]
    columns = [target] if features == "S" else [c for c in values if c != target] + [target]
    cfg = derive_model_config(ModelSpec(**{**TINY, "attn": attn, "embed": embed, **spec}), features,
                              len(columns), freq)
    torch.manual_seed(seed)
    model = build_model(cfg)
    scaler = StandardScaler().fit(df[columns].iloc[:train_rows].to_numpy())
    stamps = pd.to_datetime(df["date"])
    payload = {
        "model_config": cfg.to_dict(),
        "model_state": model.state_dict(),
        "config": {"dataset": {"features": features, "target": target, "freq": freq}, "model": dict(TINY)},
        "data": {"columns": columns, "target": target, "features": features, "freq": freq,
                 "date_column": "date", "scaler_mean": [float(v) for v in scaler.mean_],
                 "scaler_scale": [float(v) for v in scaler.scale_],
                 "last_timestamp": stamps.iloc[train_rows - 1].isoformat(),
                 "first_timestamp": stamps.iloc[0].isoformat(), "source": str(csv), "embed": embed,
                 "seasonal_period": 24},
        "versions": {"torch": str(torch.__version__), "informer": "test", "threads": 1},
    }
    return save_checkpoint(payload, path)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory, etth1_csv: Path) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", etth1_csv)


# -- round trip through real training -------------------------------------------------------------
def _train(run_dir: Path, ett_dir: Path, features: str) -> Path:
    model = [f"model.{k}={v}" for k, v in TINY.items()]
    proc = run_cli(TRAIN, "dataset=ETTh1", f"dataset.features={features}", *model, "model.attn=prob",
                   "train.epochs=1",
                   "train.limit_train_batches=3", "train.limit_eval_batches=2", "train.device=cpu",
                   "train.batch_size=8", "train.threads=1", f"paths.data_dir={ett_dir}",
                   f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = run_dir / "checkpoints" / "best.pt"
    assert best.is_file(), f"training wrote no {best}"
    return best


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, ett_dir: Path) -> Callable[[str], Path]:
    """features mode -> best.pt of a tiny real training run (trained once per mode, on first use)."""
    cache: dict[str, Path] = {}

    def get(features: str) -> Path:
        if features not in cache:
            cache[features] = _train(tmp_path_factory.mktemp(f"run_{features}"), ett_dir, features)
        return cache[features]

    return get


@pytest.mark.parametrize("features", ["M", "S", "MS"])
def test_roundtrip_train_then_forecast(features: str, trained: Callable[[str], Path], etth1_csv: Path,
                                       tmp_path: Path) -> None:
    best = trained(features)
    data = pd.read_csv(etth1_csv, parse_dates=["date"])
    out = tmp_path / "fc.csv"
    # M reads the input given; S and MS fall back to the CSV recorded in the checkpoint.
    args = [f"input={etth1_csv}"] if features == "M" else []
    proc = run_cli(FORECAST, f"checkpoint={best}", *args, f"output={out}")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and f"wrote {out.with_suffix('.png')}" in proc.stdout
    assert out.with_suffix(".png").stat().st_size > 1000

    fc = pd.read_csv(out, parse_dates=["date"])
    others = [c for c in data.columns if c not in ("date", "OT")]
    expected_cols = [*others, "OT"] if features == "M" else ["OT"]
    # the run calibrated its intervals at the default levels (forecast.intervals)
    bands = [f"{n}_{side}{level}" for level in ("80", "95") for n in expected_cols for side in ("lo", "hi")]
    assert list(fc.columns) == ["date", *expected_cols, *bands]
    last = data["date"].iloc[-1]
    assert fc["date"].iloc[0] == last + pd.Timedelta(hours=1)
    assert (fc["date"].diff().iloc[1:] == pd.Timedelta(hours=1)).all()
    assert len(fc) == TINY["pred_len"]

    train, recent = data.iloc[:ETT_TRAIN_ROWS], data.iloc[-TINY["seq_len"]:]
    for col in expected_cols:  # original units: near the look-back window's level, not scaled space
        std = train[col].std()
        assert abs(fc[col].mean() - recent[col].mean()) < 2 * std, col
        assert fc[col].std() < 3 * std, col
    assert fc["OT"].mean() > 3.5  # OT lives around 17 +- 9; scaled space would sit near 0


def test_cli_forecast_is_byte_identical_across_processes(trained: Callable[[str], Path], etth1_csv: Path,
                                                          tmp_path: Path) -> None:
    best = trained("M")  # ProbSparse attention: its key sampling must not make eval outputs vary
    outputs = []
    for name in ("a.csv", "b.csv"):
        proc = run_cli(FORECAST, f"checkpoint={best}", f"input={etth1_csv}", f"output={tmp_path / name}",
                       "plot=none")
        assert proc.returncode == 0, proc.stderr
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("features", ["M", "MS"])
def test_as_of_backtest_includes_truth(features: str, trained: Callable[[str], Path], etth1_csv: Path,
                                       tmp_path: Path) -> None:
    best = trained(features)
    data = pd.read_csv(etth1_csv, parse_dates=["date"]).set_index("date")
    as_of = data.index[-40]
    out = tmp_path / "bt.csv"
    proc = run_cli(FORECAST, f"checkpoint={best}", f"input={etth1_csv}", f"output={out}", f"as_of={as_of}")
    assert proc.returncode == 0, proc.stderr
    fc = pd.read_csv(out, parse_dates=["date"]).set_index("date")
    assert fc.index[0] == as_of + pd.Timedelta(hours=1)
    # one truth column per forecast variable (the leading columns; interval columns follow them)
    names = [c.removesuffix("_true") for c in fc.columns if c.endswith("_true")]
    assert names == list(fc.columns[:len(names)])
    for n in names:
        np.testing.assert_allclose(fc[f"{n}_true"].to_numpy(), data.loc[fc.index, n].to_numpy(), rtol=1e-8)
    assert (tmp_path / "bt.png").is_file()


# -- the Python API on a directly built checkpoint -------------------------------------------------
def test_api_equals_manual_pipeline(tiny_ckpt: Path, etth1_csv: Path) -> None:
    """Training scaler, decoder start token + zeros, marks from the future timestamps, inverse scale."""
    from informer.checkpoint import build_model_from_checkpoint, load_checkpoint
    from informer.forecast import Forecaster

    fc = Forecaster.from_checkpoint(tiny_ckpt)
    got = fc.predict(etth1_csv)

    payload = load_checkpoint(tiny_ckpt)
    model = build_model_from_checkpoint(payload, tiny_ckpt)
    df = pd.read_csv(etth1_csv, parse_dates=["date"])
    meta = payload["data"]
    cols, mean, scale = meta["columns"], meta["scaler_mean"], meta["scaler_scale"]
    window = df.iloc[-48:]
    x = torch.tensor(((window[cols].to_numpy() - mean) / scale)[None], dtype=torch.float32)
    future = pd.date_range(window["date"].iloc[-1], periods=13, freq="h")[1:]
    dec_ts = pd.DatetimeIndex(window["date"].iloc[-24:]).append(future)
    x_dec = torch.cat([x[:, -24:], torch.zeros(1, 12, len(cols))], dim=1)
    with torch.no_grad():
        out = model(x, torch.tensor(time_features(pd.DatetimeIndex(window["date"]), "h", "timeF"))[None],
                    x_dec, torch.tensor(time_features(dec_ts, "h", "timeF"))[None])
    expected = out[0].double().numpy() * np.asarray(scale) + np.asarray(mean)
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-5, atol=1e-5)
    assert got.index.name == "date" and list(got.index) == list(future)


def test_api_properties_and_inputs(tiny_ckpt: Path, etth1_csv: Path) -> None:
    from informer.forecast import Forecaster

    fc = Forecaster.from_checkpoint(tiny_ckpt, device="cpu")
    assert (fc.seq_len, fc.label_len, fc.pred_len) == (48, 24, 12)
    assert fc.columns == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert fc.output_columns == fc.columns and fc.target == "OT" and fc.freq == "h" and fc.features == "M"
    assert not fc.model.training
    from_path = fc.predict(str(etth1_csv))
    df = pd.read_csv(etth1_csv, parse_dates=["date"])
    shuffled = df[["OT", "date", "LULL", "HUFL", "HULL", "MUFL", "MULL", "LUFL"]].assign(extra=1.0)
    pd.testing.assert_frame_equal(fc.predict(shuffled), from_path)
    pd.testing.assert_frame_equal(fc.predict(df.set_index("date")), from_path)


def test_scaler_is_never_refit_on_the_input(tiny_ckpt: Path, etth1_csv: Path) -> None:
    """Appended newer rows move the forecast; rewriting rows before the window must not."""
    from informer.forecast import Forecaster

    fc = Forecaster.from_checkpoint(tiny_ckpt)
    df = pd.read_csv(etth1_csv, parse_dates=["date"])
    base = fc.predict(df)
    early = df.copy()
    early.loc[: len(df) - 100, "OT"] = 1e4  # would dominate any scaler fitted on this input
    pd.testing.assert_frame_equal(fc.predict(early), base)

    later = df["date"].iloc[-1] + pd.to_timedelta(range(1, 25), "h")
    newer = pd.concat([df, df.iloc[-24:].assign(date=later)])
    ahead = fc.predict(newer)
    assert ahead.index[0] == df["date"].iloc[-1] + pd.Timedelta(hours=25)


@pytest.mark.parametrize(("freq", "embed"), [("B", "timeF"), ("15min", "fixed"), ("MS", "timeF")])
def test_future_timestamps_follow_the_frequency(freq: str, embed: str, tmp_path: Path) -> None:
    from informer.forecast import Forecaster

    n = 200
    stamps = pd.date_range("2019-01-01", periods=n, freq=freq)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"date": stamps, "load": 10 + rng.normal(size=n).cumsum(),
                       "OT": 50 + rng.normal(size=n)})
    csv = tmp_path / "series.csv"
    df.to_csv(csv, index=False)
    ckpt = make_checkpoint(tmp_path / "c.pt", csv, features="MS", freq=freq, embed=embed, train_rows=140)
    fc = Forecaster.from_checkpoint(ckpt)
    got = fc.predict(csv)
    expected = pd.date_range(stamps[-1], periods=fc.pred_len + 1, freq=freq)[1:]
    assert list(got.index) == list(expected) and list(got.columns) == ["OT"]
    if freq == "B":
        assert (got.index.day_of_week < 5).all()
    if freq == "MS":
        assert (got.index.day == 1).all() and got.index[0] == stamps[-1] + pd.offsets.MonthBegin(1)
    assert np.isfinite(got.to_numpy()).all()


def test_forecast_latency_reports_timings(tiny_ckpt: Path, etth1_csv: Path) -> None:
    from informer.forecast import forecast_latency

    stats = forecast_latency(tiny_ckpt, etth1_csv, repeats=2)
    assert stats["repeats"] == 2 and stats["predict_ms_median"] > 0 and stats["model_ms_median"] > 0


def test_help_lists_every_option() -> None:
    proc = run_cli(FORECAST, "--help")
    assert proc.returncode == 0
    for option in ("checkpoint=", "input=", "output=", "plot=", "as_of=", "overwrite=", "device="):
        assert option in proc.stdout


def test_default_output_names_follow_the_origin(tiny_ckpt: Path, tmp_path: Path) -> None:
    proc = run_cli(FORECAST, f"checkpoint={tiny_ckpt}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecast_2018-06-26T1900.csv",
                                                          "forecast_2018-06-26T1900.png"]


def test_wide_plot_keeps_the_target_and_says_so(tmp_path: Path) -> None:
    from informer.forecast import Forecaster
    from informer.forecast.plot import render_forecast_png

    n, rng = 120, np.random.default_rng(1)
    df = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=n, freq="D"),
                       **{f"v{i}": rng.normal(size=n) for i in range(9)}, "OT": rng.normal(size=n)})
    csv = tmp_path / "wide.csv"
    df.to_csv(csv, index=False)
    fc = Forecaster.from_checkpoint(make_checkpoint(tmp_path / "w.pt", csv, freq="D", train_rows=80))
    result = fc.run(fc.table(csv), as_of=str(df["date"].iloc[-1]))
    assert list(result.frame.columns) == fc.output_columns  # as_of at the last row: no truth to add
    png, note = render_forecast_png(result, "wide")
    assert png.startswith(b"\x89PNG") and note is not None and "8 of 10" in note and "OT" in note
