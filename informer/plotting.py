"""Forecast figures: history, prediction and (when known) the truth of one variable per panel.

Built on ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend), so it works in
training processes, tests and headless servers alike. Used for TensorBoard images during training and by
the forecasting command for its plot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure


@dataclass
class ForecastWindow:
    """One panel: the look-back, the forecast and optionally the true future, of one variable.

    ``*_time`` are x positions: timestamps (a DatetimeIndex or datetime-likes) or step numbers.
    """

    history_time: Sequence[Any] | np.ndarray
    history: np.ndarray  # [L]
    forecast_time: Sequence[Any] | np.ndarray
    prediction: np.ndarray  # [H]
    truth: np.ndarray | None = None  # [H]
    title: str | None = None


def plot_forecast_windows(windows: Sequence[ForecastWindow], *, ylabel: str = "value",
                          ncols: int = 1, panel_size: tuple[float, float] = (8.0, 2.6)) -> Figure:
    """One panel per window in a grid of ``ncols`` columns; returns the (unshown) figure."""
    if not windows:
        raise ValueError("plot_forecast_windows needs at least one window")
    ncols = max(1, min(ncols, len(windows)))
    nrows = math.ceil(len(windows) / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, window in zip(axes.flat, windows, strict=False):
        history = np.asarray(window.history, dtype=float)
        prediction = np.asarray(window.prediction, dtype=float)
        ax.plot(window.history_time, history, color="0.35", linewidth=1.0, label="history")
        if window.truth is not None:
            # joined to the last observed point so the line has no gap at the forecast origin
            ax.plot(_joined(window.history_time, window.forecast_time),
                    np.concatenate([history[-1:], np.asarray(window.truth, dtype=float)]),
                    color="tab:blue", linewidth=1.2, label="truth")
        ax.plot(_joined(window.history_time, window.forecast_time),
                np.concatenate([history[-1:], prediction]),
                color="tab:orange", linewidth=1.4, linestyle="--", label="forecast")
        ax.axvline(_last(window.history_time), color="0.6", linewidth=0.8, linestyle=":")
        if window.title:
            ax.set_title(window.title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(windows):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    return fig


def _last(times: Sequence[Any] | np.ndarray) -> Any:
    return times[-1] if not hasattr(times, "iloc") else times.iloc[-1]


def _joined(history_time: Sequence[Any] | np.ndarray, forecast_time: Sequence[Any] | np.ndarray) -> list[Any]:
    return [_last(history_time), *list(forecast_time)]
