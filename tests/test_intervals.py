"""Conformal intervals and probabilistic metrics: the finite-sample quantile, coverage of split conformal
and CQR on Gaussian noise, non-crossing intervals, the metric sums against numpy, and the checkpoint
side: best.pt carries its calibration, a synthetic series covered near nominal end to end, an older
checkpoint without calibration still evaluates and forecasts and says how to calibrate, and
``calibrate=true`` adds the calibration without touching the rest of the checkpoint."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from training_helpers import EVALUATE_SCRIPT, run_script, tiny_config, tiny_run

from informer.checkpoint import load_checkpoint, save_checkpoint
from informer.errors import CheckpointError, UserError
from informer.intervals import (
    check_calibration,
    conformal_margin,
    conformity_scores,
    cqr_pair,
    empirical_quantiles,
    fit_calibration,
    forecast_quantiles,
    predict_intervals,
)
from informer.metrics import ProbabilisticScore
from informer.training import evaluate_checkpoint, train

LEVELS = [0.5, 0.8, 0.9, 0.95]


def test_conformal_margin_is_the_corrected_order_statistic() -> None:
    scores = torch.arange(1.0, 100.0).reshape(99, 1, 1)  # n = 99 scores 1..99
    # k = ceil((n + 1) L): 80 for L = 0.8 (not 81, which naive floating point gives), 95 for 0.95
    assert conformal_margin(scores, 0.8).item() == 80.0
    assert conformal_margin(scores, 0.95).item() == 95.0
    assert conformal_margin(scores, 0.99).item() == 99.0
    assert conformal_margin(scores, 0.985).item() == 99.0
    assert math.isinf(conformal_margin(scores, 0.991).item())  # ceil(100 * 0.991) = 100 > n: unbounded


def _gaussian(n: int, seed: int, sigma: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 2, generator=g, dtype=torch.float64) * sigma  # [n, P, C]


def test_split_conformal_covers_gaussian_noise_at_every_level() -> None:
    sigma = torch.tensor([[0.5, 2.0]]).expand(4, 2)  # one noise scale per channel
    calibration_noise, test_noise = _gaussian(2000, 0, sigma), _gaussian(20000, 1, sigma)
    point_cal, point_test = torch.zeros_like(calibration_noise), torch.zeros_like(test_noise)
    calibration = fit_calibration(conformity_scores(point_cal, calibration_noise, None, [None]), LEVELS, None)
    intervals = predict_intervals(point_test, calibration)
    for level in LEVELS:
        lo, hi = intervals[level]
        covered = ((lo <= test_noise) & (test_noise <= hi)).double()
        assert covered.mean().item() == pytest.approx(level, abs=0.015), level
        for c in range(2):  # per channel too: the margins are per step and channel
            assert covered[..., c].mean().item() == pytest.approx(level, abs=0.02)
        # the margin is the Gaussian's two-sided quantile
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor((1 + level) / 2)).item()
        assert (hi - lo).mean(dim=(0, 1)).numpy() / 2 == pytest.approx((z * sigma[0]).numpy(), rel=0.06)


@pytest.mark.parametrize("spread", [0.3, 1.0, 3.0])  # learned intervals too narrow, right, too wide
def test_cqr_corrects_miscalibrated_quantiles(spread: float) -> None:
    quantiles = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(quantiles, dtype=torch.float64))
    sigma = torch.tensor([[1.0, 3.0]]).expand(4, 2)

    def outputs(n: int) -> torch.Tensor:  # the same (wrongly scaled) quantile forecast for every window
        return (spread * sigma[..., None] * z).expand(n, 4, 2, len(quantiles))  # [n, P, C, Q]

    calibration_noise, test_noise = _gaussian(2000, 2, sigma), _gaussian(20000, 3, sigma)
    pairs = [cqr_pair(level, quantiles) for level in LEVELS]
    assert pairs[0] == (0.25, 0.75) and pairs[1] == (0.1, 0.9) and pairs[2] == (0.05, 0.95)
    assert pairs[3] is None  # 0.025 / 0.975 are not levels of the model: split conformal
    calibration = fit_calibration(conformity_scores(outputs(2000), calibration_noise, quantiles, pairs),
                                  LEVELS, quantiles)
    assert [calibration["per_level"][k]["method"] for k in ("0.5", "0.8", "0.9", "0.95")] == \
        ["cqr", "cqr", "cqr", "split"]
    for level, (lo, hi) in predict_intervals(outputs(20000), calibration).items():
        assert (lo <= hi).all()
        covered = ((lo <= test_noise) & (test_noise <= hi)).double().mean().item()
        assert covered == pytest.approx(level, abs=0.015), (spread, level)


def test_cqr_never_returns_crossed_intervals() -> None:
    quantiles = [0.1, 0.5, 0.9]
    calibration = {"levels": [0.8], "quantiles": quantiles, "per_level": {"0.8": {
        "method": "cqr", "quantile_pair": [0.1, 0.9], "margin": [[-5.0, 0.2]]}}}
    output = torch.tensor([0.0, 1.0, 2.0]).expand(3, 1, 2, 3)  # [B=3, P=1, C=2, Q=3]
    lo, hi = predict_intervals(output, calibration)[0.8]
    assert torch.equal(lo[..., 0], hi[..., 0]) and (lo[..., 0] == 1.0).all()  # shrunk to the midpoint
    assert torch.allclose(lo[..., 1], torch.tensor(-0.2)) and torch.allclose(hi[..., 1], torch.tensor(2.2))


def test_point_model_quantiles_are_its_interval_endpoints() -> None:
    calibration = fit_calibration({None: torch.rand(50, 3, 2, dtype=torch.float64)}, [0.8, 0.95], None)
    output = torch.randn(4, 3, 2)
    taus, values = forecast_quantiles(output, None, calibration)
    assert taus == [0.025, 0.1, 0.5, 0.9, 0.975]
    assert torch.equal(values[..., 2], output)
    assert (values.diff(dim=-1) >= 0).all()  # nested intervals: the endpoints are ordered
    intervals = predict_intervals(output, calibration)
    assert torch.equal(values[..., 0], intervals[0.95][0]) and torch.equal(values[..., 3], intervals[0.8][1])
    assert forecast_quantiles(output, None, None) is None


def test_empirical_quantiles_match_numpy() -> None:
    values = torch.randn(101, 3, 2, dtype=torch.float64)
    taus = [0.025, 0.1, 0.5, 0.9, 0.975]
    expected = np.moveaxis(np.quantile(values.numpy(), taus, axis=0), 0, -1)  # [P, C, K]
    assert np.allclose(empirical_quantiles(values, taus).numpy(), expected, atol=1e-12)


def test_probabilistic_score_matches_numpy_and_ignores_batching() -> None:
    rng = np.random.default_rng(5)
    b, p, v = 30, 4, 3
    truth = rng.normal(size=(b, p, v))
    taus = [0.1, 0.5, 0.9]
    preds = np.sort(rng.normal(size=(b, p, v, 3)), axis=-1)
    lo, hi = preds[..., 0] - 0.3, preds[..., 2] + 0.3
    mean, scale = np.array([5.0, -1.0, 100.0]), np.array([2.0, 0.5, 10.0])

    def to_original(x: torch.Tensor) -> torch.Tensor:
        return x.double() * torch.from_numpy(scale) + torch.from_numpy(mean)

    def score(batches: list[slice]) -> dict:
        s = ProbabilisticScore(p, v, taus, ["0.8"], to_original)
        for sl in batches:
            s.update(torch.from_numpy(truth[sl]), torch.from_numpy(preds[sl]),
                     {0.8: (torch.from_numpy(lo[sl]), torch.from_numpy(hi[sl]))})
        return s.summary()

    whole, parts = score([slice(None)]), score([slice(0, 7), slice(7, 8), slice(8, None)])
    for key in ("wql", "crps", "crps_original"):
        assert whole["probabilistic"][key] == pytest.approx(parts["probabilistic"][key], rel=1e-12)
    for key, value in whole["intervals"]["0.8"].items():
        assert parts["intervals"]["0.8"][key] == pytest.approx(value, rel=1e-12), key
    y_orig, q_orig = truth * scale + mean, preds * scale[:, None] + mean[:, None]
    losses = [np.maximum(t * (y_orig - q_orig[..., k]), (t - 1) * (y_orig - q_orig[..., k]))
              for k, t in enumerate(taus)]
    wql = np.mean([2 * loss.sum() / np.abs(y_orig).sum() for loss in losses])
    scaled = [np.maximum(t * (truth - preds[..., k]), (t - 1) * (truth - preds[..., k]))
              for k, t in enumerate(taus)]
    prob = whole["probabilistic"]
    assert prob["wql"] == pytest.approx(wql, rel=1e-12)
    assert prob["crps"] == pytest.approx(np.mean([2 * s.mean() for s in scaled]), rel=1e-12)
    assert prob["crps_original"] == pytest.approx(np.mean([2 * loss.mean() for loss in losses]), rel=1e-12)
    assert whole["pinball"] == pytest.approx(np.mean(scaled), rel=1e-12)
    assert prob["quantile_coverage"]["0.1"] == pytest.approx(np.mean(truth <= preds[..., 0]))
    covered = (lo <= truth) & (truth <= hi)
    block = whole["intervals"]["0.8"]
    assert block["coverage"] == pytest.approx(covered.mean())
    assert block["coverage_per_step"] == pytest.approx(covered.mean(axis=(0, 2)).tolist())
    assert block["coverage_per_variable"] == pytest.approx(covered.mean(axis=(0, 1)).tolist())
    assert block["width"] == pytest.approx(((hi - lo) * scale).mean())
    assert block["width_per_variable"] == pytest.approx(((hi - lo) * scale).mean(axis=(0, 1)).tolist())
    assert block["width_scaled"] == pytest.approx((hi - lo).mean())


def test_check_calibration_refuses_a_mismatch() -> None:
    calibration = fit_calibration({None: torch.rand(20, 3, 2, dtype=torch.float64)}, [0.8], None)
    assert check_calibration(calibration, 3, 2, None) == calibration
    with pytest.raises(ValueError, match="margins are"):
        check_calibration(calibration, 4, 2, None)
    with pytest.raises(ValueError, match="fitted for quantiles None"):
        check_calibration(calibration, 3, 2, [0.1, 0.9])


# -- checkpoints -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(ett_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    return tiny_run(ett_dir, tmp_path_factory.getbasetemp())


def test_best_pt_carries_the_calibration_of_metrics_json(trained: tuple[Path, float]) -> None:
    run_dir, _ = trained
    metrics = json.loads((run_dir / "metrics.json").read_text())
    calibration = load_checkpoint(run_dir / "checkpoints" / "best.pt")["calibration"]
    assert calibration == metrics["calibration"]
    assert calibration["levels"] == [0.8, 0.95] and calibration["quantiles"] is None
    assert calibration["n"] == metrics["val"]["windows"]
    assert {v["method"] for v in calibration["per_level"].values()} == {"normalized"}  # the default
    assert np.asarray(calibration["per_level"]["0.8"]["margin"]).shape == (6, 7)
    test = metrics["test"]["model"]
    assert set(test["intervals"]) == {"0.8", "0.95"}
    assert test["probabilistic"]["quantiles_from"] == "intervals"
    assert test["intervals"]["0.8"]["width"] < test["intervals"]["0.95"]["width"]
    # validation coverage is in-sample: at least nominal for every step and variable by construction
    for key, level in (("0.8", 0.8), ("0.95", 0.95)):
        assert min(metrics["val"]["model"]["intervals"][key]["coverage_per_step"]) >= level - 1e-12


def _synthetic_csv(path: Path, rows: int = 10000, seed: int = 0) -> Path:
    """A daily sine plus Gaussian noise (sd 1), stationary, so validation and test residuals agree."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=rows, freq="h"),
                          "y": 10 + 3 * np.sin(2 * np.pi * t / 24) + rng.normal(size=rows)})
    frame.to_csv(path, index=False)
    return path


def test_conformal_coverage_end_to_end_on_a_noisy_synthetic_series(tmp_path: Path) -> None:
    csv = _synthetic_csv(tmp_path / "sine.csv")
    settings = {"dataset.name": "custom", "dataset.path": str(csv), "dataset.target": "y",
                "dataset.features": "S", "forecast.intervals": [0.5, 0.8, 0.95], "train.plot_windows": 0}
    train(tiny_config(tmp_path, **settings), output_dir=tmp_path / "run")
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    for key, level in (("0.5", 0.5), ("0.8", 0.8), ("0.95", 0.95)):
        for forecaster in ("model", "naive_seasonal"):
            assert test[forecaster]["intervals"][key]["coverage"] == pytest.approx(level, abs=0.05), \
                (forecaster, key)
    # the noise is N(0, 1): seasonal naive's residual is the difference of two, sd sqrt(2)
    naive_width = test["naive_seasonal"]["intervals"]["0.8"]["width"]
    assert naive_width == pytest.approx(2 * 1.2816 * 2 ** 0.5, rel=0.15)


@pytest.fixture
def old_checkpoint(trained: tuple[Path, float], tmp_path: Path) -> tuple[Path, dict]:
    """The tiny run's best.pt as a checkpoint written before intervals existed."""
    run_dir, _ = trained
    payload = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    original = payload.pop("calibration")
    path = tmp_path / "old.pt"
    save_checkpoint(payload, path)
    return path, original


def test_checkpoint_without_calibration_evaluates_and_says_how_to_calibrate(old_checkpoint: tuple[Path, dict],
                                                                            trained: tuple[Path, float],
                                                                            etth1_csv: Path) -> None:
    from informer.forecast import Forecaster
    from informer.forecast.skill import LowSkillWarning

    path, _ = old_checkpoint
    result = evaluate_checkpoint(path, split="test")
    assert result["calibration"] is None and "intervals" not in result["test"]["model"]
    assert "probabilistic" not in result["test"]["model"]
    assert f"python scripts/evaluate.py checkpoint={path} calibrate=true" in result["calibration_note"]
    metrics = json.loads((trained[0] / "metrics.json").read_text())
    point_metrics = {k: v for k, v in metrics["test"]["model"]["scaled"].items() if k != "pinball"}
    assert result["test"]["model"]["scaled"] == pytest.approx(point_metrics)  # the same point metrics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowSkillWarning)
        frame = Forecaster.from_checkpoint(path).predict(etth1_csv)
    assert frame.shape == (6, 7)
    script = run_script(EVALUATE_SCRIPT, [f"checkpoint={path}"], cwd=path.parent)
    assert script.returncode == 0, script.stderr[-2000:]
    assert "calibrate=true" in script.stderr and "no calibrated prediction intervals" in script.stderr


def test_calibrate_true_adds_the_calibration_and_keeps_the_rest(old_checkpoint: tuple[Path, dict]) -> None:
    path, original = old_checkpoint
    before = load_checkpoint(path)
    script = run_script(EVALUATE_SCRIPT, [f"checkpoint={path}", "calibrate=true"], cwd=path.parent)
    assert script.returncode == 0, script.stderr[-2000:]
    assert "calibrated" in script.stderr
    after = load_checkpoint(path)
    assert after["calibration"] == original  # what training had stored
    assert set(after) == set(before) | {"calibration"}
    for key in before:
        if key == "model_state":
            assert before[key].keys() == after[key].keys()
            assert all(torch.equal(before[key][k], after[key][k]) for k in before[key])
        else:
            assert before[key] == after[key], key
    printed = json.loads(script.stdout)
    assert set(printed["test"]["model"]["intervals"]) == {"0.8", "0.95"}
    assert not list(path.parent.glob(".tmp-*"))  # written atomically, nothing left behind
    # other levels on request
    evaluate_checkpoint(path, split="val", calibrate=True, intervals=[0.9])
    assert load_checkpoint(path)["calibration"]["levels"] == [0.9]


def test_a_split_calibration_still_forecasts_point_plus_minus_its_margin(old_checkpoint: tuple[Path, dict],
                                                                        etth1_csv: Path) -> None:
    """Every checkpoint calibrated before normalized intervals existed holds "split" entries: evaluating
    and forecasting it keeps them, forecast -+ the stored margin, whatever the default method."""
    from informer.forecast import Forecaster
    from informer.forecast.skill import LowSkillWarning

    path, _ = old_checkpoint
    evaluate_checkpoint(path, split="val", calibrate=True, interval_method="split")
    calibration = load_checkpoint(path)["calibration"]
    assert {v["method"] for v in calibration["per_level"].values()} == {"split"}
    result = evaluate_checkpoint(path, split="test")  # no recalibration: the stored split entries
    assert {v["method"] for v in result["test"]["model"]["intervals"].values()} == {"split"}
    assert result["calibration"] == calibration
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LowSkillWarning)
        fc = Forecaster.from_checkpoint(path)
        frame = fc.predict(etth1_csv)
    scale = fc.scaler_stats()[1][-len(fc.output_columns):]  # [c_out]
    for level, label in ((0.8, "80"), (0.95, "95")):
        margin = np.asarray(calibration["per_level"][str(level)]["margin"]) * scale  # [P, c_out] original
        for j, name in enumerate(fc.output_columns):
            assert np.allclose(frame[f"{name}_hi{label}"] - frame[name], margin[:, j], rtol=1e-5)
            assert np.allclose(frame[name] - frame[f"{name}_lo{label}"], margin[:, j], rtol=1e-5)


def test_bad_calibration_requests_are_refused(old_checkpoint: tuple[Path, dict]) -> None:
    path, _ = old_checkpoint
    with pytest.raises(UserError, match=r"intervals must hold numbers strictly between 0 and 1"):
        evaluate_checkpoint(path, calibrate=True, intervals=[0.8, 1.5])
    with pytest.raises(UserError, match="needs calibrate=true"):
        evaluate_checkpoint(path, intervals=[0.8])
    with pytest.raises(UserError, match="needs calibrate=true"):
        evaluate_checkpoint(path, interval_method="split")
    with pytest.raises(UserError, match="interval_method='cqr' is not supported; choose one of normalized"):
        evaluate_checkpoint(path, calibrate=True, interval_method="cqr")
    script = run_script(EVALUATE_SCRIPT, [f"checkpoint={path}", "calibrate=true", "intervals=[0.0]"],
                        cwd=path.parent)
    assert script.returncode == 2 and "Traceback" not in script.stderr
    assert "intervals must hold numbers strictly between 0 and 1" in script.stderr
    payload = load_checkpoint(path)
    payload["calibration"] = {"levels": [0.8], "quantiles": None,
                              "per_level": {"0.8": {"method": "split", "margin": [[1.0]]}}}
    save_checkpoint(payload, path)
    with pytest.raises(CheckpointError, match="margins are"):
        evaluate_checkpoint(path)
