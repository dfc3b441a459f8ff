"""Scale-free metrics (MASE, WAPE, sMAPE) and the skill against seasonal naive: ErrorSums against numpy,
evaluate_split against a direct computation on real ETTh1 windows, and metrics.json's own consistency."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import TINY_MODEL, tiny_run

from informer.data import load_data_bundle
from informer.metrics import ErrorSums, in_sample_seasonal_mae, skill_score
from informer.model import build_model
from informer.training import evaluate_split
from informer.training.evaluate import forecast
from informer.training.registry import HEADLINE, RUN_SUMMARY


def _numpy_scale_free(p: np.ndarray, t: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    """The definitions, written out: p, t [W, H, V]; scale [V]."""
    err = np.abs(p - t)
    per_variable_mae = err.mean(axis=(0, 1))  # [V]
    denom = np.abs(t) + np.abs(p)
    keep = denom > 0
    return {"mase": float((per_variable_mae / scale).mean()),
            "wape": float(err.sum() / np.abs(t).sum()),
            "smape": float((2 * err[keep] / denom[keep]).mean()),
            "smape_points_excluded": int((~keep).sum())}


def test_scale_free_sums_match_numpy_over_uneven_batches() -> None:
    gen = torch.Generator().manual_seed(1)
    pred, truth = torch.randn(11, 5, 3, generator=gen) + 2, torch.randn(11, 5, 3, generator=gen) + 2
    pred[0, 0, 0] = truth[0, 0, 0] = 0.0  # both zero: left out of sMAPE only
    truth[1, 2, 1] = 0.0  # truth zero alone: counted (sMAPE is 2 there)
    scale = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    sums = ErrorSums(5, scale_free=True, mase_scale=scale)
    for chunk in range(0, 11, 4):
        sums.update(pred[chunk:chunk + 4], truth[chunk:chunk + 4])
    got = sums.summary()
    want = _numpy_scale_free(pred.double().numpy(), truth.double().numpy(), scale.numpy())
    for name in ("mase", "wape", "smape"):
        assert got[name] == pytest.approx(want[name], rel=1e-12), name
    assert got["smape_points_excluded"] == want["smape_points_excluded"] == 1
    assert "mase" not in ErrorSums(5).summary()  # scaled-unit sums do not report them


def test_mase_is_nan_when_a_scale_is_zero_and_wape_when_every_truth_is_zero() -> None:
    sums = ErrorSums(2, scale_free=True, mase_scale=torch.tensor([1.0, 0.0]))
    sums.update(torch.ones(3, 2, 2), torch.zeros(3, 2, 2))
    got = sums.summary()
    assert math.isnan(got["mase"]) and math.isnan(got["wape"]) and got["smape"] == 2.0
    with pytest.raises(ValueError, match="mase_scale"):
        ErrorSums(2, scale_free=True, mase_scale=torch.ones(3)).update(torch.ones(1, 2, 2),
                                                                       torch.ones(1, 2, 2))


def test_in_sample_seasonal_mae_and_skill_score() -> None:
    values = np.array([[0.0, 1.0], [1.0, 1.0], [3.0, 1.0], [6.0, 2.0]])
    assert in_sample_seasonal_mae(values, 1).tolist() == [2.0, 1 / 3]
    assert in_sample_seasonal_mae(values, 2).tolist() == [4.0, 0.5]
    assert np.isnan(in_sample_seasonal_mae(values, 4)).all()
    assert skill_score(0.5, 2.0) == 0.75 and math.isnan(skill_score(1.0, 0.0))


@pytest.fixture(scope="module")
def etth1_untrained(ett_dir: Path):
    """ETTh1, features M (7 variables), a tiny untrained model: evaluation needs forecasts, not good ones.
    Full attention, so that a window's forecast does not depend on the batch it is in."""
    bundle = load_data_bundle({"name": "ETTh1", "features": "M"}, ett_dir, TINY_MODEL["seq_len"],
                              TINY_MODEL["label_len"], TINY_MODEL["pred_len"], "timeF", download=False)
    torch.manual_seed(0)
    model = build_model(bundle.model_config({**TINY_MODEL, "attn": "full"})).eval()
    return model, bundle


def _no_autocast():
    return torch.autocast("cpu", enabled=False)


def test_scale_free_metrics_match_a_direct_computation_on_real_windows(etth1_untrained) -> None:
    model, bundle = etth1_untrained
    metrics = evaluate_split(model, bundle, "test", batch_size=64, device=torch.device("cpu"),
                             autocast=_no_autocast)
    seq, pred_len, period, c_out = bundle.seq_len, bundle.pred_len, bundle.seasonal_period, bundle.c_out
    assert c_out == 7 and period == 24
    # MASE's scale: the training rows in original units, straight from the CSV values
    train_start, train_end = bundle.borders["train"]
    train = bundle.values[train_start:train_end]  # [T, 7]
    scale = np.abs(train[period:] - train[:-period]).mean(axis=0)  # [7]
    assert metrics["mase_scale"] == pytest.approx(scale.tolist(), rel=1e-12)
    assert bundle.checkpoint_data()["mase_scale"] == pytest.approx(scale.tolist(), rel=1e-12)

    # every test window at once (one batch, not evaluate_split's 64), in scaled units
    start, _ = bundle.borders["test"]
    starts = start + np.arange(len(bundle.test))  # [W]
    rows = starts[:, None] + seq + np.arange(pred_len)[None, :]  # [W, H]
    values = bundle.scaled.double().numpy()  # [N, 7], what the windows are cut from
    truth = values[rows]  # [W, H, 7]
    items = [bundle.test[i] for i in range(len(bundle.test))]
    batch = tuple(torch.stack(parts) for parts in zip(*items, strict=True))
    with torch.no_grad():
        pred, _ = forecast(model, batch, bundle.label_len, pred_len, c_out, _no_autocast)
    forecasts = {  # name -> (scaled forecast [W, H, 7], tolerance)
        "model": (pred.double().numpy(), 1e-6),
        "naive_last": (np.repeat(values[starts + seq - 1][:, None, :], pred_len, axis=1), 1e-9),
        "naive_seasonal": (values[starts[:, None] + seq - period + np.arange(pred_len) % period], 1e-9),
    }
    to_original = lambda a: a * bundle.scaler.scale_ + bundle.scaler.mean_  # noqa: E731
    mse = {name: ((f - truth) ** 2).mean() for name, (f, _) in forecasts.items()}
    for name, (scaled_forecast, rel) in forecasts.items():
        want = _numpy_scale_free(to_original(scaled_forecast), to_original(truth), scale)
        got = metrics[name]["original"]
        for metric in ("mase", "wape", "smape"):
            assert got[metric] == pytest.approx(want[metric], rel=rel), (name, metric)
        assert got["smape_points_excluded"] == want["smape_points_excluded"]
        # skill on scaled data (each variable weighs the same), on the same windows
        want_skill = 1 - mse[name] / mse["naive_seasonal"]
        assert metrics[name]["scaled"]["skill"] == pytest.approx(want_skill, rel=rel, abs=1e-12), name
    assert metrics["naive_seasonal"]["scaled"]["skill"] == 0.0
    # scaled only: in original units the variables would weigh by their variance
    assert "skill" not in metrics["model"]["original"]


def test_validation_during_training_scores_only_seasonal_naive(etth1_untrained) -> None:
    model, bundle = etth1_untrained
    metrics = evaluate_split(model, bundle, "val", batch_size=256, device=torch.device("cpu"),
                             autocast=_no_autocast, max_windows=300, baselines=("naive_seasonal",))
    assert set(metrics) >= {"model", "naive_seasonal"} and "naive_last" not in metrics
    skill = 1 - metrics["model"]["scaled"]["mse"] / metrics["naive_seasonal"]["scaled"]["mse"]
    assert metrics["model"]["scaled"]["skill"] == pytest.approx(skill, rel=1e-12)
    bare = evaluate_split(model, bundle, "val", batch_size=256, device=torch.device("cpu"),
                          autocast=_no_autocast, max_windows=10, baselines=False)
    assert "skill" not in bare["model"]["scaled"] and "naive_seasonal" not in bare


@pytest.fixture(scope="module")
def run_metrics(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    run_dir, _ = tiny_run(ett_dir, tmp_path_factory.getbasetemp())
    return json.loads((run_dir / "metrics.json").read_text())


def test_skill_in_metrics_json_is_one_minus_mse_ratio(run_metrics: dict) -> None:
    for split in ("val", "test"):
        reference = run_metrics[split]["naive_seasonal"]["scaled"]["mse"]
        for name in ("model", "naive_last", "naive_seasonal"):
            scaled = run_metrics[split][name]["scaled"]
            assert scaled["skill"] == pytest.approx(1 - scaled["mse"] / reference, rel=1e-12, abs=1e-15)
            original = run_metrics[split][name]["original"]
            assert {"mase", "wape", "smape", "mape", "mspe"} <= set(original)  # MAPE kept in metrics.json
        assert run_metrics[split]["naive_seasonal"]["scaled"]["skill"] == 0.0
    assert "skill" in run_metrics["notes"] and "mase" in run_metrics["notes"]


def test_mape_is_demoted_from_the_headline_and_summary() -> None:
    for paths in (HEADLINE, RUN_SUMMARY):
        assert not any(path[-1] in ("mape", "mspe") for path in paths.values())
    assert {"skill", "mase", "wape", "smape"} <= set(HEADLINE)
    assert {"test_skill", "test_mase", "test_wape", "test_smape"} <= set(RUN_SUMMARY)
