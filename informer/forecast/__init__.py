"""Forecast from a saved checkpoint: ``api`` (Forecaster), ``io`` (input checks), ``bands`` (intervals and
quantiles in original units), ``cli``, ``plot``, ``skill`` (the note for a model that did not beat seasonal
naive on validation), ``backtest`` and ``backtest_cli`` (rolling-origin backtests).

    from informer.forecast import Forecaster
    future = Forecaster.from_checkpoint("runs/x/checkpoints/best.pt").predict("ETTh1.csv")

The names below are loaded on first use, so that importing ``informer.forecast.cli`` (the command's
``--help`` and its path checks) or ``informer.forecast.plot`` does not load the model and checkpoint code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from informer.forecast.api import Forecaster, ForecastResult
    from informer.forecast.backtest import Backtest, long_frame, run_backtest
    from informer.forecast.bands import ForecastBands
    from informer.forecast.io import TRUE_SUFFIX, SeriesTable
    from informer.forecast.latency import forecast_latency
    from informer.forecast.plot import ForecastWindow, plot_forecast_windows, render_forecast_png
    from informer.forecast.skill import LowSkillWarning

_WHERE = {
    "Forecaster": "api", "ForecastResult": "api", "forecast_latency": "latency",
    "Backtest": "backtest", "long_frame": "backtest", "run_backtest": "backtest", "ForecastBands": "bands",
    "TRUE_SUFFIX": "io", "SeriesTable": "io",
    "ForecastWindow": "plot", "plot_forecast_windows": "plot", "render_forecast_png": "plot",
    "LowSkillWarning": "skill",
}
__all__ = ["TRUE_SUFFIX", "Backtest", "ForecastBands", "ForecastResult", "ForecastWindow", "Forecaster",
           "LowSkillWarning", "SeriesTable", "forecast_latency", "long_frame", "plot_forecast_windows",
           "render_forecast_png", "run_backtest"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
