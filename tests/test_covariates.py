"""Covariates (issue 18): roles per features mode, the data and model shapes, no leakage in training
windows, the checkpoint's roles, and a synthetic series where a known-future driver clearly helps.

The forecasting side (future rows, errors, CLI, backtest) is in test_covariates_forecast.py.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from informer.checkpoint import model_payload, save_checkpoint
from informer.config import ModelSpec, TrainAppConfig
from informer.data import load_data_bundle
from informer.data.roles import Roles, resolve_roles
from informer.errors import DataError, UserError
from informer.model import build_model
from informer.training import train
from informer.training.evaluate import forecast

TINY = {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 1, "d_layers": 1, "seq_len": 24, "label_len": 12,
        "pred_len": 6, "factor": 3, "dropout": 0.0}
ROWS = 480  # hourly: 20 days; custom split 70/10/20


def write_series(path: Path, rows: int = ROWS, seed: int = 0) -> Path:
    """An hourly series: ``plan`` (known ahead), ``past`` (a driver seen only up to the origin), and
    targets ``z`` and ``y`` (y depends on the current plan and yesterday's past value)."""
    rng = np.random.default_rng(seed)
    hours = np.arange(rows)
    plan = rng.normal(size=rows) + np.sin(2 * np.pi * hours / 24)
    past = rng.normal(size=rows)
    y = 2.0 * plan + 0.5 * np.roll(past, 24) + 0.1 * rng.normal(size=rows)
    z = np.cos(2 * np.pi * hours / 24) + 0.1 * rng.normal(size=rows)
    frame = pd.DataFrame({"date": pd.date_range("2021-03-01", periods=rows, freq="h"), "plan": plan,
                          "past": past, "z": z, "y": y})
    frame.to_csv(path, index=False)
    return path


def dataset(path: Path, features: str = "MS", **roles: object) -> dict[str, object]:
    return {"name": "custom", "path": str(path), "target": "y", "features": features,
            "known_future": ["plan"], **roles}


def bundle_of(path: Path, features: str = "MS", embed: str = "timeF", **roles: object):
    return load_data_bundle(dataset(path, features, **roles), path.parent, TINY["seq_len"], TINY["label_len"],
                            TINY["pred_len"], embed)


def covariate_checkpoint(path: Path, csv: Path, features: str = "MS", seed: int = 0,
                         known_future: tuple[str, ...] = ("plan",), **spec: object) -> Path:
    """An untrained tiny model with the checkpoint training would write for ``csv`` (plan known ahead)."""
    bundle = bundle_of(csv, features, known_future=list(known_future))
    cfg = bundle.model_config(ModelSpec(**{**TINY, **spec}))
    torch.manual_seed(seed)
    model = build_model(cfg)
    config = {"dataset": dataset(csv, features, known_future=list(known_future)), "model": {**TINY, **spec}}
    return save_checkpoint(model_payload(model, cfg, config, bundle.checkpoint_data()), path)


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_series(tmp_path_factory.mktemp("cov") / "series.csv")


# -- roles -----------------------------------------------------------------------------------------
VALUES = ["plan", "past", "z", "y"]


@pytest.mark.parametrize(("features", "roles", "expected"), [
    ("MS", {}, Roles(("y",), ("past", "z"), ("plan",))),
    ("M", {}, Roles(("past", "z", "y"), (), ("plan",))),
    ("S", {}, Roles(("y",), (), ("plan",))),
    ("MS", {"past_covariates": ["past"]}, Roles(("y",), ("past",), ("plan",))),
    ("M", {"targets": ["z", "y"], "past_covariates": ["past"]}, Roles(("z", "y"), ("past",), ("plan",))),
    ("MS", {"targets": ["z", "y"]}, Roles(("z", "y"), ("past",), ("plan",))),
])
def test_roles_per_features_mode(features: str, roles: dict, expected: Roles) -> None:
    found = resolve_roles(features, "y", roles.get("targets"), roles.get("past_covariates"), ["plan"], VALUES)
    assert found == expected
    assert found.columns[-len(found.targets):] == list(found.targets)  # targets last


def test_without_roles_the_columns_are_as_before() -> None:
    assert resolve_roles("M", "y", None, None, [], VALUES).columns == ["plan", "past", "z", "y"]
    assert resolve_roles("MS", "z", None, None, [], VALUES).columns == ["plan", "past", "y", "z"]
    assert resolve_roles("S", "y", None, None, [], VALUES).columns == ["y"]


@pytest.mark.parametrize(("features", "roles", "problem"), [
    ("MS", {"known_future": ["y"]}, "both a target"),
    ("MS", {"targets": ["y"], "past_covariates": ["y"]}, "both a target"),
    ("M", {"past_covariates": ["plan"]}, "both in dataset.past_covariates and dataset.known_future"),
    ("MS", {"known_future": ["plan", "plan"]}, "more than once"),
    ("S", {"past_covariates": ["past"]}, "features=MS"),
    ("S", {"targets": ["z", "y"]}, "forecasts one series"),
    ("MS", {"known_future": ["wind"]}, "'wind' (dataset.known_future)"),
    ("M", {"known_future": ["plan", "past", "z"], "target": "plan"}, "both a target"),
    ("MS", {"targets": []}, "dataset.targets is empty"),
])
def test_role_errors_name_the_problem(features: str, roles: dict, problem: str) -> None:
    with pytest.raises(UserError) as caught:
        resolve_roles(features, roles.get("target", "y"), roles.get("targets"), roles.get("past_covariates"),
                      roles.get("known_future", ["plan"]), VALUES)
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_a_listed_column_missing_from_the_csv_is_a_data_error(csv: Path) -> None:
    with pytest.raises(DataError, match=r"no column 'wind' \(listed in dataset.known_future\)"):
        load_data_bundle({**dataset(csv), "known_future": ["wind"]}, csv.parent, 24, 12, 6, "timeF")


# -- data and model shapes -------------------------------------------------------------------------
@pytest.mark.parametrize(("features", "columns", "c_out", "channel_independent"), [
    ("MS", ["past", "z", "y"], 1, False), ("M", ["past", "z", "y"], 3, True), ("S", ["y"], 1, True)])
@pytest.mark.parametrize("embed", ["timeF", "fixed"])
def test_shapes_per_features_mode(csv: Path, features: str, columns: list[str], c_out: int,
                                  channel_independent: bool, embed: str) -> None:
    bundle = bundle_of(csv, features, embed)
    assert bundle.columns == columns and bundle.c_out == c_out and bundle.known_future == ["plan"]
    n_time = 4 if embed == "timeF" else 5  # hourly timeF features / the five calendar integers
    assert bundle.marks.shape == (ROWS, n_time + 1) and bundle.marks.dtype == torch.float32
    train_rows = bundle.values[: bundle.borders["train"][1]]
    assert train_rows.shape[1] == len(columns)  # the known-future column is not a value column
    # the covariate is scaled with its own training-split statistics
    plan = pd.read_csv(csv)["plan"].to_numpy()
    n_train = bundle.borders["train"][1]
    expected = (plan - plan[:n_train].mean()) / plan[:n_train].std()
    np.testing.assert_allclose(bundle.marks[:, -1].numpy(), expected, rtol=1e-5, atol=1e-5)

    cfg = bundle.model_config(ModelSpec(**TINY, embed=embed))
    assert (cfg.enc_in, cfg.dec_in, cfg.c_out, cfg.n_known_future) == (len(columns), len(columns), c_out, 1)
    assert cfg.channel_independent is channel_independent
    model = build_model(cfg).eval()
    assert {"enc_embedding.covariate_embedding.weight", "dec_embedding.covariate_embedding.weight"} <= set(
        model.state_dict())
    x_enc, x_mark, y, y_mark = (t.unsqueeze(0) for t in bundle.val[0])
    out, truth = forecast(model, (x_enc, x_mark, y, y_mark), TINY["label_len"], TINY["pred_len"], c_out,
                          contextlib.nullcontext)
    assert out.shape == truth.shape == (1, TINY["pred_len"], c_out)
    torch.testing.assert_close(truth[0], bundle.val[0][2][-TINY["pred_len"]:, -c_out:])  # targets only


def test_without_covariates_nothing_changes(csv: Path) -> None:
    bundle = load_data_bundle({**dataset(csv), "known_future": []}, csv.parent, 24, 12, 6, "fixed")
    assert bundle.marks.dtype == torch.int64 and bundle.marks.shape == (ROWS, 5)
    cfg = bundle.model_config(ModelSpec(**TINY))
    assert cfg.n_known_future == 0 and bundle.columns == ["plan", "past", "z", "y"]
    assert not any("covariate" in key for key in build_model(cfg).state_dict())
    data = bundle.checkpoint_data()
    assert (data["known_future"], data["covariate_mean"], data["targets"]) == ([], [], ["y"])


def test_checkpoint_stores_roles_and_covariate_scaler(csv: Path) -> None:
    bundle = bundle_of(csv, "MS", past_covariates=["past"])
    data = bundle.checkpoint_data()
    assert (data["targets"], data["past_covariates"], data["known_future"]) == (["y"], ["past"], ["plan"])
    plan = pd.read_csv(csv)["plan"].to_numpy()[: bundle.borders["train"][1]]
    stats = [data["covariate_mean"][0], data["covariate_scale"][0]]
    np.testing.assert_allclose(stats, [plan.mean(), plan.std()])
    assert data["columns"] == ["past", "y"] and data["target"] == "y"


# -- no leakage through the training windows -------------------------------------------------------
@pytest.mark.parametrize("features", ["MS", "M"])
def test_a_window_reads_nothing_after_its_origin_but_the_horizon_covariates(csv: Path, features: str) -> None:
    """Perturbing values (targets, past covariates) after the origin and known-future values after
    origin + pred_len leaves the model's output unchanged; the horizon's known-future values do not."""
    bundle = bundle_of(csv, features)
    model = build_model(bundle.model_config(ModelSpec(**TINY))).eval()
    seq_len, pred_len, label_len = TINY["seq_len"], TINY["pred_len"], TINY["label_len"]
    i = 5
    s = bundle.val.window_start(i)
    origin_end, horizon_end = s + seq_len, s + seq_len + pred_len

    def output() -> torch.Tensor:
        batch = tuple(t.unsqueeze(0) for t in bundle.val[i])
        return forecast(model, batch, label_len, pred_len, bundle.c_out, contextlib.nullcontext)[0]

    with torch.no_grad():
        before = output()
        bundle.scaled[origin_end:] += 100.0  # targets and past covariates after the origin
        bundle.marks[horizon_end:, -1] -= 50.0  # known-future values after the horizon
        after = output()
        bundle.marks[origin_end:horizon_end, -1] += 3.0  # inside the horizon: they are read
        changed = output()
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert not torch.allclose(changed, before)


# -- the known-future driver helps -----------------------------------------------------------------
def _train_synthetic(tmp_path: Path, known_future: list[str]) -> float:
    rng = np.random.default_rng(0)
    rows = 800
    plan = rng.normal(size=rows)  # unpredictable from the past: only its known future value helps
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=rows, freq="h"), "plan": plan,
                          "y": 2.0 * plan + 0.3 * rng.normal(size=rows)})
    path = tmp_path / "driver.csv"
    frame.to_csv(path, index=False)
    cfg = OmegaConf.structured(TrainAppConfig)
    cfg.dataset.update({"name": "custom", "path": str(path), "target": "y", "features": "S",
                        "known_future": known_future})
    cfg.model.update(TINY)
    cfg.train.update({"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "limit_train_batches": 20,
                      "threads": 1, "plot_windows": 0, "device": "cpu"})
    cfg.forecast.intervals = []
    out = tmp_path / ("with" if known_future else "without")
    train(cfg, output_dir=out)
    return json.loads((out / "metrics.json").read_text())["test"]["model"]["scaled"]["mse"]


def test_a_known_future_driver_beats_the_same_model_without_it(tmp_path: Path) -> None:
    without = _train_synthetic(tmp_path, [])
    with_driver = _train_synthetic(tmp_path, ["plan"])
    assert with_driver < 0.5 * without, (with_driver, without)
