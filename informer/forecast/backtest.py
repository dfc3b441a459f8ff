"""Rolling-origin backtest of a trained checkpoint: a forecast from every origin between two timestamps.

This is darts' ``historical_forecasts`` / neuralforecast's ``cross_validation`` for a saved model. An
origin is the last row a forecast reads (as ``as_of`` of :meth:`Forecaster.predict`): its window is the
``seq_len`` rows ending there and it forecasts the ``pred_len`` steps after it. Everything comes from
the checkpoint alone (model, training scaler, never refitted; calibration); the input only supplies
the values. Forecasts run in batches: the rows read are checked, scaled and given time marks once, and
each batch of windows is gathered from them by index. A model with known-future covariates reads their
actual values from the data for every window and its whole horizon (they travel with the time marks),
so every origin's horizon must be in the data.

Scoring reuses the evaluation code (:class:`~informer.metrics.ForecastScore`,
:class:`~informer.metrics.ProbabilisticScore`, the naive baselines of :mod:`informer.training.evaluate`)
on every origin whose whole horizon is in the data, so a backtest over a split's windows at stride 1
gives the same numbers as evaluating that split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from informer.data.frequency import check_regular, future_timestamps
from informer.data.validation import numeric_values
from informer.errors import UserError
from informer.forecast.api import Forecaster
from informer.forecast.bands import ForecastBands, interval_suffixes, quantile_suffix
from informer.forecast.io import SeriesTable, known_values
from informer.intervals import (
    baseline_intervals,
    forecast_quantiles,
    level_key,
    point_forecast,
    predict_intervals,
    scored_quantiles,
    window_scale,
)
from informer.metrics import ForecastScore, ProbabilisticScore, inverse_scaler, skill_score
from informer.training.evaluate import NAIVE_BASELINES, seasonal_naive

BACKTEST_NOTES = (
    "origin: the last row a forecast reads; step h forecasts the h-th row after it. Scored: the origins "
    "whose whole horizon is in the data. scaled: standardised with the checkpoint's training scaler; "
    "original: the data's units. per_step: mse/mae at each forecast step (scaled and original); skill = "
    "1 - mse / naive_seasonal's mse on the same windows (scaled). intervals: the checkpoint's conformal "
    "intervals (calibrated on its validation split); coverage = fraction of points with lo <= y <= hi. "
    "The naive baselines' intervals: their point forecast +- the split-conformal margin of their own "
    "validation residuals, stored with the calibration (checkpoints calibrated before that have none)."
)


@dataclass
class Backtest:
    """Every forecast of a backtest, as arrays over origins ``N``, steps ``P`` and variables ``C``."""

    origins: pd.DatetimeIndex  # [N]
    timestamps: np.ndarray  # [N, P] datetime64, the forecast steps' times
    bands: ForecastBands  # original units, [N, P, C]
    truth: np.ndarray  # [N, P, C] original units, NaN where the data has no value
    variables: list[str]  # [C]
    metrics: dict[str, Any]


def parse_stride(stride: object) -> int:
    """A positive whole number of steps, else UserError."""
    try:
        value = int(str(stride).strip())
    except ValueError:
        raise UserError(f"stride={stride!r} must be a whole number of steps >= 1") from None
    if value <= 0:
        raise UserError(f"stride={value} must be >= 1 (the steps between consecutive origins)")
    return value


def _timestamp(value: str | pd.Timestamp, name: str, table: SeriesTable) -> pd.Timestamp:
    problem = f"{name}={value!r} is not a timestamp; use e.g. {name}='2018-01-01 00:00:00'"
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise UserError(problem) from None
    if stamp is pd.NaT:
        raise UserError(problem)
    if table.timestamps.tz is not None and stamp.tz is None:
        stamp = stamp.tz_localize(table.timestamps.tz)
    return stamp


def origin_rows(table: SeriesTable, start: str | pd.Timestamp, end: str | pd.Timestamp | None,
                seq_len: int, pred_len: int) -> tuple[int, int]:
    """Row positions (inclusive) of the first origin (the first row at or after ``start``) and the last
    one (the last row at or before ``end``; by default the last row with ``pred_len`` rows after it)."""
    stamps, n = table.timestamps, len(table.timestamps)
    first_stamp = _timestamp(start, "start", table)
    first = int(stamps.searchsorted(first_stamp, side="left"))
    if first >= n:
        raise UserError(f"start={first_stamp} is after the last row of {table.where} ({stamps[-1]})")
    if first < seq_len - 1:
        earliest = stamps[seq_len - 1] if n >= seq_len else None
        raise UserError(
            f"start={first_stamp} has only {first + 1} row(s) of history up to it in {table.where}, but the "
            f"model reads seq_len={seq_len} rows ending at each origin; "
            + (f"pick start >= {earliest}" if earliest is not None else f"give at least {seq_len} rows")
        )
    if end is None:
        last = n - 1 - pred_len
        if last < first:
            raise UserError(f"no origin from start={first_stamp} has its {pred_len} forecast steps in "
                            f"{table.where} (it ends {stamps[-1]}); pick an earlier start or pass end=")
        return first, last
    end_stamp = _timestamp(end, "end", table)
    if end_stamp < first_stamp:
        raise UserError(f"end={end_stamp} is before start={first_stamp}; pass end >= start")
    last = int(stamps.searchsorted(end_stamp, side="right")) - 1
    if last < first:
        raise UserError(f"{table.where} has no row between start={first_stamp} and end={end_stamp}")
    return first, last


def check_levels(fc: Forecaster, levels: Sequence[float] | None) -> list[float]:
    """The interval levels to report: by default every level the checkpoint is calibrated at; a chosen
    subset must lie in (0, 1) and be calibrated."""
    stored = [float(lv) for lv in fc.calibration["levels"]] if fc.calibration is not None else []
    if levels is None:
        return stored
    bad = [lv for lv in levels if not 0.0 < float(lv) < 1.0]
    if bad:
        raise UserError(f"interval levels must lie strictly between 0 and 1, got {list(levels)}")
    if fc.calibration is None:
        raise UserError(f"intervals={list(levels)} asked for, but {fc.calibration_note}")
    missing = [lv for lv in levels if level_key(lv) not in {level_key(s) for s in stored}]
    if missing:
        raise UserError(f"{fc.path} is calibrated at levels {stored}, not {missing}; pick among them or "
                        f"recalibrate with `python scripts/evaluate.py checkpoint={fc.path} calibrate=true "
                        f"intervals=[...]`")
    return [float(lv) for lv in levels]


def _series(fc: Forecaster, table: SeriesTable, first: int, last: int
            ) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray | None]:
    """The timeline the backtest reads and scores, ``[T]``, its values ``[T, C]`` (raw; NaN where
    the data has no value after the last origin) and, for a model with known-future covariates, their
    raw values ``[T, K]`` (every one needed). Rows up to the last origin must be regular and complete:
    every forecast reads some of them."""
    start = first - fc.seq_len + 1
    span = table.timestamps[start:last + 1]
    where = f"{table.where} (the rows the backtest forecasts read)"
    check_regular(span, fc.freq, where, trained=True, first_row=start, in_file=table.in_file)
    observed = numeric_values(table.frame.iloc[start:last + 1], where, first_row=start,
                              in_file=table.in_file, fix="fill it (e.g. interpolate) or choose a later start")
    future = future_timestamps(span[-1], fc.freq, fc.pred_len)
    stop = min(len(table.timestamps), last + 1 + fc.pred_len)
    # matched by timestamp, so a gap after the last origin leaves NaN instead of shifting the truth
    after = pd.DataFrame(known_values(table, last + 1, stop), index=table.timestamps[last + 1:stop])
    after = after[~after.index.duplicated()].reindex(future)
    values = np.concatenate([observed, after.to_numpy(dtype=np.float64)])  # [T, C]
    return span.append(future), values, _known_series(fc, table, start, last, future)


def _known_series(fc: Forecaster, table: SeriesTable, start: int, last: int, future: pd.DatetimeIndex
                  ) -> np.ndarray | None:
    """The known-future columns over the timeline, ``[T, K]`` raw; every value must be in the data."""
    if not fc.known_future:
        return None
    names = ", ".join(fc.known_future)
    where = f"{table.where} (known-future column(s) {names} over the rows the backtest forecasts read)"
    observed = numeric_values(table.known.iloc[start:last + 1], where, first_row=start,  # [rows read, K]
                              in_file=table.in_file, fix="fill it (e.g. interpolate) or choose a later start")
    stop = min(len(table.timestamps), last + 1 + fc.pred_len)
    after = pd.DataFrame(numeric_values(table.known.iloc[last + 1:stop], table.where, first_row=last + 1,
                                        in_file=table.in_file, allow_missing=True),
                         index=table.timestamps[last + 1:stop])  # [<= pred_len, K]
    after = after[~after.index.duplicated()].reindex(future)
    gaps = np.flatnonzero(~np.isfinite(after.to_numpy()).all(axis=1))
    if gaps.size:
        raise UserError(
            f"{table.where} has no value of the known-future column(s) {names} at {future[int(gaps[0])]}, "
            f"step {int(gaps[0]) + 1} of the horizon of the last origin ({table.timestamps[last]}): the "
            "backtest reads the actual known-future values of every forecast step, so pick an end whose "
            f"{fc.pred_len} steps lie in the data (or fill the values)"
        )
    return np.concatenate([observed, after.to_numpy(dtype=np.float64)])  # [T, K]


def run_backtest(fc: Forecaster, table: SeriesTable, start: str | pd.Timestamp,
                 end: str | pd.Timestamp | None = None, stride: int = 1, batch_size: int = 256,
                 levels: Sequence[float] | None = None) -> Backtest:
    """Forecast from every ``stride``-th row between ``start`` and ``end`` and score the forecasts."""
    stride = parse_stride(stride)
    if batch_size <= 0:
        raise UserError(f"batch_size={batch_size} must be >= 1")
    levels = check_levels(fc, levels)
    calibration = None
    if fc.calibration is not None and levels:
        keys = [level_key(lv) for lv in levels]
        calibration = {**fc.calibration, "levels": levels,
                       "per_level": {k: fc.calibration["per_level"][k] for k in keys}}
    first, last = origin_rows(table, start, end, fc.seq_len, fc.pred_len)
    timeline, values, known = _series(fc, table, first, last)  # [T], [T, C], [T, K] or None
    seq_len, label_len, pred_len, c_out = fc.seq_len, fc.label_len, fc.pred_len, len(fc.output_columns)
    scaled = torch.as_tensor(fc.scale(values), dtype=torch.float64)  # [T, C]; NaN stays NaN
    inputs = scaled.float()
    # [T, M], or [T, M + K] with the scaled known-future values (the same marks as training's)
    marks = fc.time_marks(timeline, None if known is None else fc.scale_known(known))
    # position of each origin in the timeline (whose row 0 is first - seq_len + 1)
    positions = torch.arange(first, last + 1, stride) - (first - seq_len + 1)  # [N]

    mean, scale = (torch.as_tensor(a[-c_out:]) for a in fc.scaler_stats())
    scores = _Scores(fc, calibration, inverse_scaler(mean, scale), c_out)
    enc_steps = torch.arange(seq_len) - (seq_len - 1)  # [L] offsets up to the origin
    dec_steps = torch.arange(label_len + pred_len) - (label_len - 1)  # [S + P]
    out_steps = torch.arange(1, pred_len + 1)  # [P]
    parts: list[ForecastBands] = []
    truths = []
    for batch in positions.split(batch_size):
        x_enc = inputs[batch[:, None] + enc_steps]  # [B, L, C]
        output = fc.model_output(x_enc, marks[batch[:, None] + enc_steps], marks[batch[:, None] + dec_steps])
        truth = scaled[batch[:, None] + out_steps, -c_out:]  # [B, P, c_out] float64, NaN where unknown
        scores.update(output, truth, x_enc)
        parts.append(fc.bands(output, x_enc))
        truths.append(values[(batch[:, None] + out_steps).numpy(), -c_out:])  # [B, P, c_out] raw
    stamps = np.asarray(timeline.to_numpy())[positions.numpy()[:, None] + out_steps.numpy()]  # [N, P]
    metrics = scores.summary()
    origins = pd.DatetimeIndex(timeline[positions.numpy()])
    metrics.update({"origins": len(origins), "stride": stride, "first_origin": str(origins[0]),
                    "last_origin": str(origins[-1])})
    return Backtest(origins=origins, timestamps=stamps,
                    bands=_concat(parts), truth=np.concatenate(truths), variables=fc.output_columns,
                    metrics=metrics)


class _Scores:
    """The model's and the naive baselines' scores over the scored origins, overall and per step."""

    def __init__(self, fc: Forecaster, calibration: dict[str, Any] | None,
                 to_original: Callable[[torch.Tensor], torch.Tensor], c_out: int) -> None:
        self.pred_len, self.c_out = fc.pred_len, c_out
        self.calibration, self.quantiles = calibration, fc.quantiles
        self.period = fc.seasonal_period
        mase = fc.mase_scale
        mase_scale = None if mase is None else torch.as_tensor(mase[-c_out:], dtype=torch.float64)
        self.scores = {name: ForecastScore(self.pred_len, to_original, mase_scale=mase_scale)
                       for name in ("model", *NAIVE_BASELINES)}
        # a one-step score per step: per-step MAE (and MSE) from the same sums as the overall metrics
        self.per_step = {name: [ForecastScore(1, to_original) for _ in range(self.pred_len)]
                         for name in self.scores}
        levels = calibration["levels"] if calibration else []
        taus = scored_quantiles(self.quantiles, levels)
        self.probabilistic: ProbabilisticScore | None = None
        if taus is not None:
            source = "model" if self.quantiles is not None else "intervals"
            keys = [level_key(lv) for lv in levels]
            self.probabilistic = ProbabilisticScore(self.pred_len, c_out, taus, keys, to_original, "cpu",
                                                    source)
        # the naive baselines' intervals, when the calibration carries their margins
        self.levels = list(levels)
        baselines = (calibration or {}).get("baselines") or {}
        self.baseline_margins = {name: baselines[name] for name in NAIVE_BASELINES if name in baselines}
        self.baseline_intervals = {
            name: ProbabilisticScore(self.pred_len, c_out, [], [level_key(lv) for lv in levels], to_original,
                                     "cpu", "intervals")
            for name in self.baseline_margins}

    def update(self, output: torch.Tensor, truth: torch.Tensor, x_enc: torch.Tensor) -> None:
        scored = torch.isfinite(truth).all(dim=2).all(dim=1)  # [B] origins with their whole horizon known
        if not bool(scored.any()):
            return
        output, truth, x_enc = output[scored], truth[scored].float(), x_enc[scored]
        point = point_forecast(output, self.quantiles)  # [B, P, c_out]
        forecasts = {
            "model": point,
            "naive_last": x_enc[:, -1:, -self.c_out:].expand(-1, self.pred_len, -1),  # [B, P, c_out]
            "naive_seasonal": seasonal_naive(x_enc, self.period, self.pred_len, self.c_out),
        }
        for name, pred in forecasts.items():
            self.scores[name].update(pred, truth)
            for h, score in enumerate(self.per_step[name]):
                score.update(pred[:, h:h + 1], truth[:, h:h + 1])
            if name in self.baseline_intervals:
                intervals = baseline_intervals(pred, self.baseline_margins[name], self.levels)
                self.baseline_intervals[name].update(truth, None, intervals)
        if self.probabilistic is not None:
            spread = window_scale(x_enc, self.c_out)  # [B, 1, c_out]: normalized intervals scale by it
            found = forecast_quantiles(output, self.quantiles, self.calibration, spread)
            intervals = predict_intervals(output, self.calibration, spread) if self.calibration else {}
            self.probabilistic.update(truth, found[1] if found else None, intervals)

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        reference = self.scores["naive_seasonal"].summary()
        ref_steps = [s.summary()["scaled"]["mse"] for s in self.per_step["naive_seasonal"]]
        for name, score in self.scores.items():
            summary = score.summary()
            steps = [s.summary() for s in self.per_step[name]]
            summary["scaled"]["skill"] = skill_score(summary["scaled"]["mse"], reference["scaled"]["mse"])
            summary["per_step"] = {
                "mse": [s["scaled"]["mse"] for s in steps],
                "mae": [s["scaled"]["mae"] for s in steps],
                "mse_original": [s["original"]["mse"] for s in steps],
                "mae_original": [s["original"]["mae"] for s in steps],
                "skill": [skill_score(s["scaled"]["mse"], r) for s, r in zip(steps, ref_steps, strict=True)],
            }
            result[name] = summary
        if self.probabilistic is not None:
            prob = self.probabilistic.summary()
            result["model"]["probabilistic"] = prob["probabilistic"]
            if self.calibration is not None:
                result["model"]["intervals"] = {
                    key: {"method": self.calibration["per_level"][key]["method"], **values}
                    for key, values in prob["intervals"].items()}
        for name, score in self.baseline_intervals.items():
            result[name]["intervals"] = {key: {"method": "split", **values}
                                         for key, values in score.summary()["intervals"].items()}
        result["skill"] = result["model"]["scaled"]["skill"]
        result["windows"] = self.scores["model"].scaled.count // (self.pred_len * self.c_out)
        result["seasonal_period"] = self.period
        result["notes"] = BACKTEST_NOTES
        return result


def _concat(parts: list[ForecastBands]) -> ForecastBands:
    return ForecastBands(
        point=np.concatenate([p.point for p in parts]),
        intervals={lv: (np.concatenate([p.intervals[lv][0] for p in parts]),
                        np.concatenate([p.intervals[lv][1] for p in parts])) for lv in parts[0].intervals},
        quantiles={q: np.concatenate([p.quantiles[q] for p in parts]) for q in parts[0].quantiles},
    )


def long_frame(result: Backtest) -> pd.DataFrame:
    """One row per origin, step and variable: origin, timestamp, step, variable, forecast, the interval
    bounds (lo80, hi80, ...), the quantiles (q10, ...) and the truth (empty where unknown)."""
    n, p, c = result.bands.point.shape
    columns: dict[str, Any] = {
        "origin": np.repeat(result.origins.to_numpy(), p * c),
        "timestamp": np.repeat(result.timestamps.reshape(-1), c),
        "step": np.tile(np.repeat(np.arange(1, p + 1), c), n),
        "variable": np.tile(np.asarray(result.variables, dtype=object), n * p),
        "forecast": result.bands.point.reshape(-1),
    }
    for level, (lo, hi) in result.bands.intervals.items():
        lo_name, hi_name = (suffix.lstrip("_") for suffix in interval_suffixes(level))
        columns[lo_name], columns[hi_name] = lo.reshape(-1), hi.reshape(-1)
    for tau, values in result.bands.quantiles.items():
        columns[quantile_suffix(tau).lstrip("_")] = values.reshape(-1)
    columns["truth"] = result.truth.reshape(-1)
    return pd.DataFrame(columns)
