"""Forecast figures: the history, the forecast and (when known) the truth, one variable per panel.

The one plotting module: the forecast command's PNG and the TensorBoard figures of validation windows
during training draw their panels here, so both use one colour scheme: history dark grey, forecast
solid blue, truth dashed orange, the forecast origin a dotted vertical line, and prediction intervals a
blue fan (the widest level palest). Built on
``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend), so it works in training
processes, tests and headless servers alike.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from informer.forecast.io import TRUE_SUFFIX

if TYPE_CHECKING:
    from informer.forecast.api import ForecastResult

HISTORY = {"color": "0.35", "linewidth": 1.1}
FORECAST = {"color": "tab:blue", "linewidth": 1.5}
TRUTH = {"color": "tab:orange", "linewidth": 1.2, "linestyle": "--"}
ORIGIN = {"color": "0.6", "linewidth": 0.8, "linestyle": ":"}
MAX_PANELS = 8  # the forecast PNG: more variables than this become unreadable


@dataclass
class ForecastWindow:
    """One panel: the look-back, the forecast and optionally the true future, of one variable.

    ``*_time`` are x positions: timestamps (a DatetimeIndex or datetime-likes) or step numbers.
    """

    history_time: Sequence[Any] | np.ndarray
    history: np.ndarray  # [L]
    forecast_time: Sequence[Any] | np.ndarray
    prediction: np.ndarray  # [H]
    truth: np.ndarray | None = None  # [H], NaN where unknown
    title: str | None = None
    bands: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # level -> ([H], [H])


def plot_forecast_windows(windows: Sequence[ForecastWindow], *, ylabel: str = "value", ncols: int = 1,
                          panel_size: tuple[float, float] = (8.0, 2.6), sharex: bool = False,
                          title: str | None = None) -> Figure:
    """One panel per window in a grid of ``ncols`` columns; returns the (unshown) figure."""
    if not windows:
        raise ValueError("plot_forecast_windows needs at least one window")
    ncols = max(1, min(ncols, len(windows)))
    nrows = math.ceil(len(windows) / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)
    for ax, window in zip(axes.flat, windows, strict=False):
        _draw(ax, window, ylabel)
    for ax in list(axes.flat)[len(windows):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="upper left", ncol=3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _draw(ax: Axes, window: ForecastWindow, ylabel: str) -> None:
    history = np.asarray(window.history, dtype=float)
    # forecast and truth start at the last observed point so the lines have no gap at the origin
    joined = _joined(window.history_time, window.forecast_time)
    ax.plot(window.history_time, history, label="history", **HISTORY)
    # widest first, so the narrower (darker) bands are drawn over it
    for rank, level in enumerate(sorted(window.bands, reverse=True)):
        lo, hi = (np.asarray(b, dtype=float) for b in window.bands[level])
        ax.fill_between(list(window.forecast_time), lo, hi, color=FORECAST["color"], linewidth=0,
                        alpha=0.15 + 0.15 * rank, label=f"{level:.0%} interval")
    ax.plot(joined, np.concatenate([history[-1:], np.asarray(window.prediction, dtype=float)]),
            label="forecast", **FORECAST)
    if window.truth is not None:
        ax.plot(joined, np.concatenate([history[-1:], np.asarray(window.truth, dtype=float)]),
                label="truth", **TRUTH)
    ax.axvline(_last(window.history_time), **ORIGIN)
    if window.title:
        ax.set_title(window.title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if pd.api.types.is_datetime64_any_dtype(window.forecast_time):
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _last(times: Sequence[Any] | np.ndarray) -> Any:
    return times[-1] if not hasattr(times, "iloc") else times.iloc[-1]


def _joined(history_time: Sequence[Any] | np.ndarray, forecast_time: Sequence[Any] | np.ndarray) -> list[Any]:
    return [_last(history_time), *list(forecast_time)]


def render_forecast_png(result: ForecastResult, title: str, max_panels: int = MAX_PANELS
                        ) -> tuple[bytes, str | None]:
    """The forecast command's figure as PNG bytes, plus a note when variables were left out."""
    names = list(result.history.columns)
    shown = names
    note = None
    if len(names) > max_panels:
        # the target is always the last forecast variable and always worth a panel
        shown = [*names[: max_panels - 1], names[-1]]
        note = (f"plot shows {len(shown)} of {len(names)} forecast variables: the first {max_panels - 1} "
                f"and the target {names[-1]}")
        title = f"{title} ({len(shown)} of {len(names)} variables shown)"
    frame, history = result.frame, result.history
    windows = []
    for name in shown:
        truth = frame.get(f"{name}{TRUE_SUFFIX}")  # only a backtest has it
        bands = {}
        if result.bands is not None:
            j = names.index(name)
            bands = {level: (lo[0, :, j], hi[0, :, j]) for level, (lo, hi) in result.bands.intervals.items()}
        windows.append(ForecastWindow(
            history_time=history.index, history=history[name].to_numpy(), forecast_time=frame.index,
            prediction=frame[name].to_numpy(), truth=None if truth is None else truth.to_numpy(), title=name,
            bands=bands,
        ))
    fig = plot_forecast_windows(windows, ylabel="", panel_size=(10.0, 2.0), sharex=True, title=title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue(), note


def render_backtest_png(metrics: dict[str, Any], title: str) -> bytes:
    """A backtest's figure: MSE (scaled) of the model and both naive baselines against the forecast
    step, and, with intervals, each level's coverage against the step beside its nominal level (and
    seasonal naive's, dotted, when the calibration holds its margins)."""
    intervals = metrics["model"].get("intervals", {})
    fig = Figure(figsize=(8.0, 6.0 if intervals else 3.2), layout="constrained")
    axes = fig.subplots(2 if intervals else 1, 1, squeeze=False, sharex=True)[:, 0]
    steps = np.arange(1, len(metrics["model"]["per_step"]["mse"]) + 1)
    styles = {"model": FORECAST, "naive_last": {"color": "0.5", "linestyle": ":"},
              "naive_seasonal": {"color": "tab:green", "linestyle": "--"}}
    for name, style in styles.items():
        axes[0].plot(steps, metrics[name]["per_step"]["mse"], marker=".", label=name, **style)
    axes[0].set_ylabel("MSE (scaled)", fontsize=8)
    axes[0].legend(fontsize=7)
    for rank, (key, values) in enumerate(sorted(intervals.items())):
        color = f"C{rank}"
        axes[1].plot(steps, values["coverage_per_step"], marker=".", color=color,
                     label=f"{float(key):.0%} interval")
        axes[1].axhline(float(key), color=color, linewidth=0.8, linestyle="--")
        naive = metrics["naive_seasonal"].get("intervals", {}).get(key)
        if naive is not None:  # seasonal naive's own interval at this level, when the checkpoint has it
            axes[1].plot(steps, naive["coverage_per_step"], color=color, linestyle=":", linewidth=1.0,
                         label=f"{float(key):.0%} seasonal naive")
    if intervals:
        axes[1].set_ylabel("coverage", fontsize=8)
        axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("forecast step", fontsize=8)
    fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
