"""Evaluation completeness: every window scored once, batch-size invariance, exact sharding, naive
baselines checked against a direct computation, and the standalone script reproducing metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import EVALUATE_SCRIPT, run_script, tiny_run

from informer.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from informer.data import load_data_bundle
from informer.errors import CheckpointError
from informer.metrics import ErrorSums
from informer.training import evaluate_checkpoint, evaluate_split
from informer.training.distributed import DistContext, shard_range


@pytest.fixture(scope="module")
def trained(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    return tiny_run(ett_dir, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def model_and_bundle(trained: tuple[Path, float], ett_dir: Path):
    run_dir, _ = trained
    payload = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    spec = payload["model_config"]
    bundle = load_data_bundle(payload["config"]["dataset"], ett_dir, spec["seq_len"], spec["label_len"],
                              spec["pred_len"], spec["embed"])
    return build_model_from_checkpoint(payload), bundle


def _score(model, bundle, split: str = "test", batch_size: int = 32, **kwargs):
    return evaluate_split(model, bundle, split, batch_size=batch_size, device=torch.device("cpu"),
                          autocast=lambda: torch.autocast("cpu", enabled=False), **kwargs)


def test_every_window_is_scored(trained: tuple[Path, float], model_and_bundle) -> None:
    run_dir, _ = trained
    _, bundle = model_and_bundle
    metrics = json.loads((run_dir / "metrics.json").read_text())
    seq_len, pred_len = bundle.seq_len, bundle.pred_len
    for split in ("val", "test"):
        start, end = bundle.borders[split]
        expected = end - start - seq_len - pred_len + 1  # every window, the last partial batch included
        assert metrics[split]["windows"] == len(bundle.split(split)) == expected
        assert metrics[split]["model"]["scaled"]["points"] == expected * pred_len * bundle.c_out
        assert len(metrics[split]["model"]["mse_per_step"]) == pred_len
    assert set(metrics["test"]) >= {"model", "naive_last", "naive_seasonal", "windows"}
    # probabilistic and intervals: the run's conformal calibration (tests/test_intervals.py)
    assert set(metrics["test"]["model"]) == {"scaled", "original", "mse_per_step", "probabilistic",
                                             "intervals"}
    assert set(metrics["test"]["model"]["original"]) >= {"mse", "mae", "rmse", "mape", "mspe"}


def test_batch_size_does_not_change_the_metrics(model_and_bundle) -> None:
    model, bundle = model_and_bundle
    one, many = _score(model, bundle, batch_size=1), _score(model, bundle, batch_size=32)
    assert one["windows"] == many["windows"] == len(bundle.test)
    for kind in ("scaled", "original"):
        for name in ("mse", "mae", "rmse"):
            assert one["model"][kind][name] == pytest.approx(many["model"][kind][name], rel=1e-6, abs=1e-6)
    assert np.allclose(one["model"]["mse_per_step"], many["model"]["mse_per_step"], rtol=1e-6, atol=1e-6)
    for name in ("mase", "wape", "smape"):
        assert one["model"]["original"][name] == pytest.approx(many["model"]["original"][name], rel=1e-6)
    assert one["model"]["scaled"]["skill"] == pytest.approx(many["model"]["scaled"]["skill"], rel=1e-5)


def test_sharded_evaluation_equals_single_process(model_and_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two 'processes' (shards scored separately, sums added as all_reduce would) give the full result."""
    model, bundle = model_and_bundle
    n = len(bundle.val)
    assert sorted(i for r in range(3) for i in shard_range(n, r, 3)) == list(range(n))  # a partition
    parts = []
    monkeypatch.setattr("informer.training.evaluate.all_reduce_sum", lambda t: parts.append(t.clone()) or t)
    for rank in range(2):
        _score(model, bundle, "val", dist_ctx=DistContext(rank=rank, world_size=2))
    summed = parts[0] + parts[1]
    monkeypatch.setattr("informer.training.evaluate.all_reduce_sum", lambda t: summed)
    combined = _score(model, bundle, "val", dist_ctx=DistContext(rank=0, world_size=2))
    monkeypatch.undo()
    single = _score(model, bundle, "val")
    assert combined["windows"] == single["windows"] == n
    assert combined["model"]["scaled"]["mse"] == pytest.approx(single["model"]["scaled"]["mse"], abs=1e-6)


def test_naive_baselines_match_a_direct_computation(model_and_bundle) -> None:
    model, bundle = model_and_bundle
    metrics = _score(model, bundle, "test")
    values = bundle.scaled.double().numpy()  # [N, C]
    start, _ = bundle.borders["test"]
    seq, pred, period = bundle.seq_len, bundle.pred_len, bundle.seasonal_period
    starts = start + np.arange(len(bundle.test))
    rows = starts[:, None] + seq + np.arange(pred)[None, :]  # [W, H]
    truth = values[rows]  # [W, H, C]
    last = values[starts + seq - 1][:, None, :]  # [W, 1, C]
    seasonal = values[starts[:, None] + seq - period + np.arange(pred)[None, :] % period]
    assert metrics["naive_last"]["scaled"]["mse"] == pytest.approx(((last - truth) ** 2).mean(), rel=1e-9)
    seasonal_mae = np.abs(seasonal - truth).mean()
    assert metrics["naive_seasonal"]["scaled"]["mae"] == pytest.approx(seasonal_mae, rel=1e-9)
    original = truth * bundle.scaler.scale_ + bundle.scaler.mean_
    orig_last = last * bundle.scaler.scale_ + bundle.scaler.mean_
    assert metrics["naive_last"]["original"]["mse"] == pytest.approx(((orig_last - original) ** 2).mean(),
                                                                     rel=1e-6)


def test_error_sums_match_numpy_and_mask_zero_targets() -> None:
    gen = torch.Generator().manual_seed(0)
    pred, truth = torch.randn(10, 4, 3, generator=gen), torch.randn(10, 4, 3, generator=gen)
    truth[0, 0, 0] = 0.0
    sums = ErrorSums(4)
    for chunk in range(0, 10, 3):  # uneven batches
        sums.update(pred[chunk:chunk + 3], truth[chunk:chunk + 3])
    got = sums.summary()
    p, t = pred.double().numpy(), truth.double().numpy()
    mask = t != 0
    assert got["mse"] == pytest.approx(((p - t) ** 2).mean(), rel=1e-12)
    assert got["rmse"] == pytest.approx(math.sqrt(((p - t) ** 2).mean()), rel=1e-12)
    assert got["mape"] == pytest.approx(np.abs((p - t)[mask] / t[mask]).mean(), rel=1e-12)
    assert got["mspe"] == pytest.approx((((p - t)[mask] / t[mask]) ** 2).mean(), rel=1e-12)
    assert got["zero_targets_excluded"] == 1 and math.isfinite(got["mape"])
    assert sums.mse_per_step() == pytest.approx(((p - t) ** 2).mean(axis=(0, 2)).tolist(), rel=1e-12)
    big_pred, big_truth = pred * 3, truth * 3  # errors beyond Huber's delta too
    huber = torch.nn.functional.huber_loss(big_pred.double(), big_truth.double())
    scaled = ErrorSums(4)
    scaled.update(big_pred, big_truth)
    assert scaled.summary()["huber"] == pytest.approx(huber.item(), rel=1e-12)


def test_standalone_evaluate_matches_metrics_json(trained: tuple[Path, float], tmp_path: Path) -> None:
    run_dir, _ = trained
    expected = json.loads((run_dir / "metrics.json").read_text())
    out = tmp_path / "eval.json"
    result = run_script(EVALUATE_SCRIPT, [f"checkpoint={run_dir / 'checkpoints' / 'best.pt'}", "split=test",
                                          f"output={out}", "batch_size=7"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(out.read_text())["test"]
    assert got["windows"] == expected["test"]["windows"]
    for forecaster in ("model", "naive_last", "naive_seasonal"):
        for kind, names in (("scaled", ("mse", "mae", "skill")), ("original", ("mse", "mae", "mase", "wape",
                                                                              "smape"))):
            for name in names:
                assert got[forecaster][kind][name] == pytest.approx(expected["test"][forecaster][kind][name],
                                                                    rel=1e-6, abs=1e-12), (forecaster, name)
    # MASE's scale comes from the checkpoint, as training computed it
    data = load_checkpoint(run_dir / "checkpoints" / "best.pt")["data"]
    assert got["mase_scale"] == expected["test"]["mase_scale"] == data["mase_scale"][-len(got["mase_scale"]):]
    assert json.loads(result.stdout)["test"]["windows"] == got["windows"]
    assert not list(tmp_path.glob("outputs"))  # evaluation leaves no run directory behind


def test_evaluate_checkpoint_in_process_on_val(trained: tuple[Path, float]) -> None:
    run_dir, _ = trained
    expected = json.loads((run_dir / "metrics.json").read_text())["val"]
    got = evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", split="val", batch_size=100)["val"]
    assert got["model"]["scaled"]["mse"] == pytest.approx(expected["model"]["scaled"]["mse"], rel=1e-6)
    assert got["model"]["original"]["mase"] == pytest.approx(expected["model"]["original"]["mase"], rel=1e-6)


def test_evaluate_checkpoint_uses_the_stored_mase_scale(trained: tuple[Path, float], tmp_path: Path) -> None:
    """The checkpoint's scale is used as stored (doubling it halves MASE); an older checkpoint without
    one gets the same scale from the training rows."""
    run_dir, _ = trained
    payload = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    stored = payload["data"]["mase_scale"]
    reference = evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", split="val")["val"]
    payload["data"] = {**payload["data"], "mase_scale": [2 * v for v in stored]}
    save_checkpoint(_strip(payload), tmp_path / "doubled.pt")
    doubled = evaluate_checkpoint(tmp_path / "doubled.pt", split="val")["val"]
    assert doubled["model"]["original"]["mase"] == pytest.approx(reference["model"]["original"]["mase"] / 2,
                                                                 rel=1e-12)
    payload["data"] = {k: v for k, v in payload["data"].items() if k != "mase_scale"}
    save_checkpoint(_strip(payload), tmp_path / "older.pt")
    older = evaluate_checkpoint(tmp_path / "older.pt", split="val")["val"]
    assert older["model"]["original"]["mase"] == pytest.approx(reference["model"]["original"]["mase"],
                                                               rel=1e-12)
    payload["data"]["mase_scale"] = [1.0]
    save_checkpoint(_strip(payload), tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="mase_scale"):
        evaluate_checkpoint(tmp_path / "broken.pt", split="val")


def _strip(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k not in ("format", "format_version")}


def test_standalone_evaluate_reports_user_errors(tmp_path: Path) -> None:
    result = run_script(EVALUATE_SCRIPT, [f"checkpoint={tmp_path / 'missing.pt'}"], cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
