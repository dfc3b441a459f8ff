"""End-to-end training: CLI and in-process runs, run-directory contents, early stopping, the non-finite
gate and exact resume from last.pt."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import TRAIN_SCRIPT, run_script, tiny_config, tiny_overrides, tiny_run

from informer.checkpoint import build_model_from_checkpoint, load_checkpoint
from informer.data import load_data_bundle
from informer.errors import UserError
from informer.training import Callback, train
from informer.training.schedule import SCHEDULES
from informer.training.state import TrainingState

DATA_KEYS = {"columns", "target", "features", "freq", "date_column", "scaler_mean", "scaler_scale",
             "last_timestamp", "first_timestamp", "source", "embed", "seasonal_period", "mase_scale"}


@pytest.fixture(scope="module")
def trained(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    return tiny_run(ett_dir, tmp_path_factory.getbasetemp())


def test_cli_run_writes_every_artifact(tmp_path: Path, ett_dir: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_script(TRAIN_SCRIPT, ["dataset=ETTh1", *tiny_overrides(ett_dir, **{"train.epochs": 1}),
                                       f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (".hydra/config.yaml", "train.log", "checkpoints/best.pt", "checkpoints/last.pt",
                 "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    log = (run_dir / "train.log").read_text()
    assert "epoch 1/1" in log and "train_loss" in log and "val_loss" in log and "lr" in log
    assert "val_skill" in log
    final = next(line for line in log.splitlines() if "test (best checkpoint)" in line)
    assert " skill " in final and " mase " in final and " wape " in final and " smape " in final
    assert "mape_" not in final and " mape " not in final  # MAPE is in metrics.json only
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"model", "naive_last", "naive_seasonal", "windows"}


def test_train_in_process_returns_best_val_loss(trained: tuple[Path, float]) -> None:
    run_dir, best = trained
    assert isinstance(best, float) and math.isfinite(best)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training"]["best_val_loss"] == pytest.approx(best, rel=0, abs=0)
    assert min(metrics["training"]["val_loss"]) == best


def test_checkpoints_hold_the_contract_payload(trained: tuple[Path, float]) -> None:
    run_dir, _ = trained
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert set(best["data"]) >= DATA_KEYS
    assert best["data"]["columns"][-1] == best["data"]["target"] == "OT"
    assert best["config"]["model"]["d_model"] == 16
    assert Path(best["config"]["paths"]["data_dir"]).is_absolute()
    assert {"torch", "informer", "threads"} <= set(best["versions"])
    assert "training" not in best
    model = build_model_from_checkpoint(best, run_dir / "checkpoints" / "best.pt")
    assert sum(p.numel() for p in model.parameters()) > 0

    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    training = last["training"]
    assert {"optimizer", "grad_scaler", "loop", "lr", "rng", "world_size"} <= set(training)
    loop = training["loop"]
    assert (loop["epoch"], loop["step_in_epoch"], loop["global_step"]) == (2, 0, 6)
    assert len(loop["val_loss_history"]) == 2
    assert {"python", "numpy", "torch"} <= set(training["rng"][0])


def test_checkpoints_record_their_validation_skill(trained: tuple[Path, float], ett_dir: Path) -> None:
    """best.pt: the validation of the epoch that produced its weights; last.pt: the latest epoch's. The
    tiny run scores 2 validation batches of 256 windows per epoch (limit_eval_batches)."""
    run_dir, _ = trained
    metrics = json.loads((run_dir / "metrics.json").read_text())
    training = metrics["training"]
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")["validation"]
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")["validation"]
    for record in (best, last):
        assert set(record) == {"mse", "seasonal_naive_mse", "skill"}
        assert all(type(v) is float for v in record.values())  # plain Python floats
        assert record["skill"] == pytest.approx(1 - record["mse"] / record["seasonal_naive_mse"], rel=1e-12)
    assert best["mse"] == training["best_val_loss"]  # train.loss=mse: the early-stopping number itself
    assert best["skill"] == training["val_skill"][training["best_epoch"] - 1]
    assert training["best_validation"] == best
    assert last["mse"] == training["val_loss"][-1] and last["skill"] == training["val_skill"][-1]
    assert len(training["val_skill"]) == training["epochs_run"]

    # the seasonal-naive MSE on those windows, directly
    bundle = load_data_bundle({"name": "ETTh1"}, ett_dir, 24, 12, 6, "timeF", download=False)
    n = 2 * 256
    start, _ = bundle.borders["val"]
    starts = start + np.arange(n)
    values = bundle.scaled.double().numpy()
    truth = values[starts[:, None] + 24 + np.arange(6)]  # [W, H, C]
    seasonal = values[starts[:, None] + 24 - 24 + np.arange(6)]  # period 24 = seq_len
    assert best["seasonal_naive_mse"] == pytest.approx(((seasonal - truth) ** 2).mean(), rel=1e-9)


def test_last_pt_has_no_validation_before_the_first_epoch_ends(tmp_path: Path, ett_dir: Path) -> None:
    cfg = tiny_config(ett_dir, **{"train.checkpoint_every": 1, "train.plot_windows": 0})
    with pytest.raises(_Killed):
        train(cfg, output_dir=tmp_path, callbacks=[_DieAfterStep(1)])
    assert "validation" not in load_checkpoint(tmp_path / "checkpoints" / "last.pt")


def test_training_state_early_stopping() -> None:
    state = TrainingState()
    results = [state.finish_epoch(1.0, v, 1e-4, patience=2) for v in (0.5, 0.4, 0.45, 0.41)]
    assert results == [True, True, False, False]
    assert state.stopped_early and state.best_epoch == 1 and state.best_val_loss == 0.4


def test_early_stopping_stops_the_run(tmp_path: Path, ett_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a frozen learning rate keeps the validation loss from improving after the first epoch
    monkeypatch.setitem(SCHEDULES, "constant", lambda *args: 0.0)
    best = train(tiny_config(ett_dir, **{"train.epochs": 5, "train.patience": 2, "train.plot_windows": 0,
                                         "train.lradj": "constant"}), output_dir=tmp_path)
    history = json.loads((tmp_path / "metrics.json").read_text())["training"]
    assert history["stopped_early"] and history["epochs_run"] == 3 and history["best_epoch"] == 1
    assert best == history["val_loss"][0]


def test_non_finite_loss_stops_within_the_step(tmp_path: Path, ett_dir: Path) -> None:
    cfg = tiny_config(ett_dir, **{"train.learning_rate": 1e30, "train.checkpoint_every": 1,
                                  "train.limit_train_batches": 20, "train.epochs": 1})
    with pytest.raises(UserError, match=r"diverged at epoch 1, step \d+ .*learning rate"):
        train(cfg, output_dir=tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    if last.exists():  # whatever was written before the failure holds only finite weights
        payload = load_checkpoint(last)
        assert all(torch.isfinite(t).all() for t in payload["model_state"].values() if t.is_floating_point())
    assert not (tmp_path / "checkpoints" / "best.pt").exists()


class _Killed(Exception):
    pass


class _DieAfterStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.state.global_step == self.step:
            raise _Killed


def test_resume_mid_epoch_is_exact(tmp_path: Path, ett_dir: Path) -> None:
    """Killed part-way into an epoch, resumed, killed again after the resumed run's own mid-epoch last.pt,
    resumed again: the same end as a run never interrupted."""
    overrides = {"train.epochs": 2, "train.limit_train_batches": 4, "train.checkpoint_every": 1,
                 "train.plot_windows": 0}
    full = train(tiny_config(ett_dir, **overrides), output_dir=tmp_path / "full")

    run = tmp_path / "killed"
    with pytest.raises(_Killed):
        train(tiny_config(ett_dir, **overrides), output_dir=run, callbacks=[_DieAfterStep(5)])
    loop = load_checkpoint(run / "checkpoints/last.pt")["training"]["loop"]
    assert (loop["epoch"], loop["step_in_epoch"], loop["global_step"]) == (1, 1, 5)
    again = tiny_config(ett_dir, **overrides, **{"train.resume": str(run)})
    with pytest.raises(_Killed):
        train(again, output_dir=run, callbacks=[_DieAfterStep(6)])
    loop = load_checkpoint(run / "checkpoints/last.pt")["training"]["loop"]
    assert (loop["epoch"], loop["step_in_epoch"], loop["global_step"]) == (1, 2, 6)

    resumed = train(again, output_dir=tmp_path / "resumed")
    assert resumed == full
    a = load_checkpoint(tmp_path / "full/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")
    assert a["training"]["loop"] == b["training"]["loop"]
    assert torch.equal(a["training"]["data_order"]["loader_generator"],
                       b["training"]["data_order"]["loader_generator"])
    for name, tensor in a["model_state"].items():
        assert torch.equal(tensor, b["model_state"][name]), name


def test_resume_refuses_a_different_model(tmp_path: Path, ett_dir: Path, trained: tuple[Path, float]) -> None:
    run_dir, _ = trained
    cfg = tiny_config(ett_dir, **{"model.d_model": 32, "train.resume": str(run_dir)})
    with pytest.raises(UserError, match=r"model\.d_model"):
        train(cfg, output_dir=tmp_path)


def test_multirun_gives_each_job_its_own_directory(tmp_path: Path, ett_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_script(TRAIN_SCRIPT, ["-m", "dataset=ETTh1", *tiny_overrides(ett_dir, **{"train.epochs": 1}),
                                       "train.seed=1,2", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for job in jobs:
        assert (job / "checkpoints" / "best.pt").is_file() and (job / "metrics.json").is_file()
        assert "epoch 1/1" in (job / "train.log").read_text()
    seeds = [load_checkpoint(job / "checkpoints" / "best.pt")["config"]["train"]["seed"] for job in jobs]
    assert seeds == [1, 2]


def test_custom_csv_with_ms_features(tmp_path: Path, etth1_csv: Path) -> None:
    import pandas as pd

    frame = pd.read_csv(etth1_csv).iloc[:1000].rename(columns={"date": "when", "OT": "oil"})
    frame.to_csv(tmp_path / "small.csv", index=False)
    cfg = tiny_config(etth1_csv.parent, **{
        "dataset.name": "custom", "dataset.path": str(tmp_path / "small.csv"), "dataset.date_column": "when",
        "dataset.target": "oil", "dataset.features": "MS", "train.epochs": 1,
    })
    assert math.isfinite(train(cfg, output_dir=tmp_path / "run"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # 70/10/20 split of 1000 rows: test = the last 200 rows (+ seq_len look-back) -> 200 - pred_len + 1
    assert metrics["test"]["windows"] == 200 - 6 + 1
    assert metrics["test"]["model"]["scaled"]["points"] == metrics["test"]["windows"] * 6  # c_out = 1
    data = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["data"]
    assert data["columns"][-1] == data["target"] == "oil" and data["features"] == "MS"


def test_no_autocast_on_cpu() -> None:
    from informer.config import TrainAppConfig
    from informer.training.distributed import amp_dtype, autocast_factory

    tr = TrainAppConfig().train
    assert tr.amp and tr.amp_dtype == "bf16"  # the defaults ask for bf16 AMP ...
    cpu = torch.device("cpu")
    assert amp_dtype(tr.amp, tr.amp_dtype, cpu) is None  # ... which applies on CUDA only
    with autocast_factory(cpu, None)():
        assert not torch.is_autocast_enabled("cpu")


def test_huber_loss_early_stops_on_the_exact_validation_huber(tmp_path: Path, ett_dir: Path) -> None:
    cfg = tiny_config(ett_dir, **{"train.loss": "huber", "train.epochs": 1, "train.limit_eval_batches": None,
                                  "train.plot_windows": 0})
    best = train(cfg, output_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["training"]["loss"] == "huber"
    # the loop's criterion and the final evaluation of best.pt: the same windows, the same weights
    assert best == pytest.approx(metrics["val"]["model"]["scaled"]["huber"], rel=1e-9)
    # every validation window: best.pt's record equals the final evaluation's numbers
    record = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["validation"]
    val = metrics["val"]
    assert record["mse"] == pytest.approx(val["model"]["scaled"]["mse"], rel=1e-9)
    assert record["seasonal_naive_mse"] == pytest.approx(val["naive_seasonal"]["scaled"]["mse"], rel=1e-12)
    assert record["skill"] == pytest.approx(val["model"]["scaled"]["skill"], rel=1e-9, abs=1e-12)
    assert metrics["val"]["model"]["scaled"]["huber"] < metrics["val"]["model"]["scaled"]["mse"] / 2 + 1e-12
