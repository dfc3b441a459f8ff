"""Normalized (locally adaptive) split conformal: the window scale is the look-back window's population
std, a constant scale reduces it to split conformal, on heteroscedastic noise it covers every
volatility regime where split conformal's fixed margins do not, the original-unit bands follow it, and
misuse (no scale, an unknown method) fails with one clear line. Pure tensors, no training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from informer.config import INTERVAL_METHODS, TrainAppConfig, check_train_config
from informer.errors import UserError
from informer.forecast.bands import forecast_bands
from informer.intervals import (
    SCALE_FLOOR,
    check_calibration,
    conformity_scores,
    fit_calibration,
    forecast_quantiles,
    predict_intervals,
    window_scale,
)

LEVELS = [0.8, 0.95]


def test_window_scale_is_the_population_std_of_the_forecast_variables() -> None:
    x_enc = torch.randn(5, 48, 4, generator=torch.Generator().manual_seed(0))  # [B, L, C]
    scale = window_scale(x_enc, 2)
    assert scale.shape == (5, 1, 2)
    expected = np.std(x_enc[..., -2:].numpy(), axis=1, keepdims=True)  # ddof=0: the population std
    assert np.allclose(scale.numpy(), expected, rtol=1e-5)
    flat = torch.full((1, 48, 1), 3.0)  # a constant window: floored, so its scores stay finite
    assert window_scale(flat, 1).item() == pytest.approx(SCALE_FLOOR)


def test_a_constant_scale_reduces_to_split_conformal() -> None:
    g = torch.Generator().manual_seed(1)
    n, p, c = 200, 3, 2
    output, truth = torch.randn(n, p, c, generator=g), torch.randn(n, p, c, generator=g)
    per_channel = torch.tensor([0.5, 2.5], dtype=torch.float64)
    scale = per_channel.expand(n, 1, c)  # [n, 1, C]: the same in every window
    split = fit_calibration(conformity_scores(output, truth, None, [None]), LEVELS, None)
    normalized = fit_calibration(conformity_scores(output, truth, None, [None], scale), LEVELS, None,
                                 method="normalized")
    assert {e["method"] for e in normalized["per_level"].values()} == {"normalized"}
    for key in ("0.8", "0.95"):  # margin x s is split conformal's margin
        assert np.allclose(np.asarray(normalized["per_level"][key]["margin"]) * per_channel.numpy(),
                           split["per_level"][key]["margin"], rtol=1e-12)
    test = torch.randn(7, p, c, generator=g, dtype=torch.float64)
    test_scale = per_channel.expand(7, 1, c)
    expected, got = predict_intervals(test, split), predict_intervals(test, normalized, test_scale)
    for level in LEVELS:
        for a, b in zip(expected[level], got[level], strict=True):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    _, q_split = forecast_quantiles(test, None, split)
    _, q_norm = forecast_quantiles(test, None, normalized, test_scale)
    assert torch.allclose(q_split, q_norm, rtol=1e-12, atol=1e-12)


def _heteroscedastic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows in three volatility regimes (noise std 0.3, 1, 3, a third each): the look-back window
    ``[n, 48, 2]`` and the truth ``[n, 4, 2]`` share the window's std; the forecast is 0."""
    g = torch.Generator().manual_seed(seed)
    sigma = torch.tensor([0.3, 1.0, 3.0], dtype=torch.float64)[torch.arange(n) % 3]  # [n]
    x_enc = torch.randn(n, 48, 2, generator=g, dtype=torch.float64) * sigma[:, None, None]
    truth = torch.randn(n, 4, 2, generator=g, dtype=torch.float64) * sigma[:, None, None]
    return x_enc, truth, sigma


def test_normalized_covers_every_volatility_regime_where_split_does_not() -> None:
    x_cal, y_cal, _ = _heteroscedastic(3000, 2)
    x_test, y_test, sigma = _heteroscedastic(30000, 3)
    point_cal, point_test = torch.zeros_like(y_cal), torch.zeros_like(y_test)
    split = fit_calibration(conformity_scores(point_cal, y_cal, None, [None]), LEVELS, None)
    normalized = fit_calibration(conformity_scores(point_cal, y_cal, None, [None], window_scale(x_cal, 2)),
                                 LEVELS, None, method="normalized")
    for method, calibration, scale in (("split", split, None),
                                       ("normalized", normalized, window_scale(x_test, 2))):
        for level, (lo, hi) in predict_intervals(point_test, calibration, scale).items():
            covered = ((lo <= y_test) & (y_test <= hi)).double().mean(dim=(1, 2))  # [n]
            # both are calibrated marginally, over all windows
            assert covered.mean().item() == pytest.approx(level, abs=0.015), (method, level)
            calm, volatile = covered[sigma == 0.3].mean().item(), covered[sigma == 3.0].mean().item()
            if method == "normalized":  # ... and per regime: the score does not depend on the volatility
                for value in (calm, covered[sigma == 1.0].mean().item(), volatile):
                    assert value == pytest.approx(level, abs=0.02), (level, value)
            else:  # fixed margins: calm windows over-covered, volatile ones under-covered
                assert calm > level + 0.4 * (1 - level) and volatile < level - 0.05, (level, calm, volatile)


def test_bands_scale_normalized_margins_by_each_window() -> None:
    margin = [[1.5], [2.0]]  # [P=2][C=1]
    calibration = {"levels": [0.8], "quantiles": None,
                   "per_level": {"0.8": {"method": "normalized", "quantile_pair": None, "margin": margin}}}
    assert check_calibration(calibration, 2, 1, None) == calibration
    x_enc = torch.stack([torch.tensor([0.0, 2.0] * 4), torch.tensor([0.0, 0.2] * 4)])[..., None]  # [2, 8, 1]
    output = torch.tensor([[[1.0], [1.0]], [[-1.0], [-1.0]]])  # [B=2, P=2, C=1]
    mean, scale = np.array([10.0]), np.array([4.0])
    bands = forecast_bands(output, None, calibration, mean, scale, x_enc)
    lo, hi = bands.intervals[0.8]
    spread = np.array([1.0, 0.1])[:, None, None]  # the two windows' population std
    width = np.asarray(margin)[None] * spread  # [B, P, C] in scaled units
    assert np.allclose(lo, (output.numpy() - width) * scale + mean)
    assert np.allclose(hi, (output.numpy() + width) * scale + mean)
    with pytest.raises(ValueError, match=r"normalized conformal.*scale=window_scale\(x_enc, c_out\)"):
        forecast_bands(output, None, calibration, mean, scale)  # no look-back window given


def test_normalized_calibration_without_scale_is_a_clear_error() -> None:
    scores = {None: torch.rand(50, 3, 2, dtype=torch.float64)}
    calibration = fit_calibration(scores, LEVELS, None, method="normalized")
    with pytest.raises(ValueError, match=r"level-0\.8 intervals are normalized conformal"):
        predict_intervals(torch.zeros(4, 3, 2), calibration)
    with pytest.raises(ValueError, match="is not one of normalized, split"):
        fit_calibration(scores, LEVELS, None, method="adaptive")


def test_a_bad_interval_method_is_a_one_line_user_error() -> None:
    app = TrainAppConfig()
    for method in INTERVAL_METHODS:
        app.forecast.interval_method = method
        check_train_config(app)
    app.forecast.interval_method = "adaptive"
    with pytest.raises(UserError) as caught:
        check_train_config(app)
    message = str(caught.value)
    assert "\n" not in message
    assert message == "forecast.interval_method='adaptive' is not supported; choose one of normalized, split"
