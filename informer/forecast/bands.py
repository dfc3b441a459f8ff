"""A forecast's point values, calibrated intervals and quantiles, in original units, and their names.

A model's raw output is in scaled units (``[B, pred_len, c_out]``, or ``[B, pred_len, c_out, Q]`` for a
quantile model); :func:`forecast_bands` maps it through :mod:`informer.intervals` and the training
scaler. The scaler's scale is positive, so an interval ``lo <= point <= hi`` keeps its order in original
units. Column suffixes: level 0.8 -> ``_lo80`` / ``_hi80``, quantile 0.1 -> ``_q10`` (0.975 -> ``_hi97.5``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from informer.intervals import point_forecast, predict_intervals, window_scale


@dataclass
class ForecastBands:
    """Original-unit arrays, each ``[B, pred_len, c_out]``."""

    point: np.ndarray
    intervals: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # level -> (lo, hi)
    quantiles: dict[float, np.ndarray] = field(default_factory=dict)  # a quantile model's own levels


def percent_label(value: float) -> str:
    """0.8 -> "80", 0.975 -> "97.5", 0.1 -> "10"."""
    return format(round(float(value) * 100, 6), "g")


def interval_suffixes(level: float) -> tuple[str, str]:
    label = percent_label(level)
    return f"_lo{label}", f"_hi{label}"


def quantile_suffix(tau: float) -> str:
    return f"_q{percent_label(tau)}"


def forecast_bands(output: torch.Tensor, quantiles: Sequence[float] | None,
                   calibration: Mapping[str, Any] | None, mean: np.ndarray, scale: np.ndarray,
                   x_enc: torch.Tensor | None = None) -> ForecastBands:
    """Scaled model output -> :class:`ForecastBands`; ``mean``/``scale`` are the forecast variables'
    scaler statistics ``[c_out]``. Intervals only with a calibration; quantiles only for quantile models.
    ``x_enc``: the scaled look-back windows ``[B, seq_len, C]`` the output forecasts from, which
    normalized intervals scale by (:func:`informer.intervals.window_scale`)."""

    def original(values: torch.Tensor) -> np.ndarray:  # [B, P, C] scaled -> original, float64
        return values.double().cpu().numpy() * scale + mean

    bands = ForecastBands(point=original(point_forecast(output, quantiles)))
    if calibration is not None:
        spread = None if x_enc is None else window_scale(x_enc, output.shape[2])  # [B, 1, c_out]
        for level, (lo, hi) in predict_intervals(output, calibration, spread).items():
            bands.intervals[float(level)] = (original(lo), original(hi))
    if quantiles is not None:
        for k, tau in enumerate(quantiles):
            bands.quantiles[float(tau)] = original(output[..., k])
    return bands
