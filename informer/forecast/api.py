"""Forecast the steps after a series ends, from a saved checkpoint alone.

    from informer.forecast import Forecaster
    fc = Forecaster.from_checkpoint("runs/x/checkpoints/best.pt")
    frame = fc.predict("ETTh1.csv")                      # next pred_len steps after the last row
    backtest = fc.predict(df, as_of="2018-01-01 00:00")  # from inside the data, with <name>_true columns

The frame has one column per forecast variable, then, when the checkpoint holds a calibration
(:mod:`informer.intervals`), ``<name>_lo80`` / ``<name>_hi80`` ... per interval level, and for a
quantile model ``<name>_q10`` ... per quantile level (:mod:`informer.forecast.bands`), all in original
units. A checkpoint without a calibration still forecasts points; :attr:`Forecaster.calibration_note`
says how to add intervals.

The look-back window is scaled with the training scaler stored in the checkpoint (never refitted on
the input), the decoder gets the last ``label_len`` known steps then ``pred_len`` zeros, and its time
marks come from the real future timestamps, so the forecast continues the calendar.

A checkpoint whose recorded validation MSE is not better than seasonal naive's (skill <= 0, see
:mod:`informer.forecast.skill`) makes :meth:`Forecaster.predict` issue a one-line
:class:`~informer.forecast.skill.LowSkillWarning` through :func:`warnings.warn`.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from informer.checkpoint import build_model_from_checkpoint, load_checkpoint
from informer.data.frequency import future_timestamps, seasonal_period
from informer.data.timefeatures import time_features
from informer.errors import CheckpointError, DataError
from informer.forecast.bands import ForecastBands, forecast_bands, interval_suffixes, quantile_suffix
from informer.forecast.io import TRUE_SUFFIX, SeriesTable, known_values, locate_origin, look_back, read_table
from informer.forecast.skill import LowSkillWarning, low_skill_note, validation_skill
from informer.intervals import check_calibration, missing_calibration_note

logger = logging.getLogger(__name__)
_DATA_KEYS = ("columns", "target", "features", "freq", "date_column", "scaler_mean", "scaler_scale")


@dataclass
class ForecastResult:
    """One forecast plus what a report or plot needs around it."""

    frame: pd.DataFrame  # [pred_len rows] forecast, interval and quantile columns, then <name>_true ones
    history: pd.DataFrame  # the last rows up to the origin, forecast variables only (for plots)
    origin: pd.Timestamp  # timestamp of the last row the model read
    notes: list[str] = field(default_factory=list)
    bands: ForecastBands | None = None  # the same forecast as arrays [1, pred_len, c_out] (plots)


class Forecaster:
    """A trained model plus the data schema and scaler it was trained with.

    Honesty about skill: when the checkpoint records a validation skill vs seasonal naive <= 0
    (``payload["validation"]["skill"]``), :meth:`predict` calls ``warnings.warn(note, LowSkillWarning)``
    with the one-line :attr:`low_skill_note` (Python shows a given warning once per call site by
    default; filter ``LowSkillWarning`` to silence it). :meth:`run` never warns: callers that use it
    (the forecast command) report :attr:`low_skill_note` themselves. Checkpoints without the field
    (written before it existed) and those with skill > 0 give no warning.
    """

    def __init__(self, payload: dict[str, Any], path: str | os.PathLike[str] = "<checkpoint>",
                 device: str | torch.device = "cpu") -> None:
        self.path = Path(path)
        data = _checked_data_section(payload, self.path)
        self.model = build_model_from_checkpoint(payload, self.path, device)
        self.device = torch.device(device)
        cfg = self.model_config = dict(payload["model_config"])
        self._columns: list[str] = [str(c) for c in data["columns"]]
        self._target = str(data["target"])
        self._features = str(data["features"])
        self._freq = str(data["freq"])
        self._date_column = str(data["date_column"])
        self._embed = str(cfg["embed"])
        self._source = data.get("source")
        self._mean = np.asarray(data["scaler_mean"], dtype=np.float64)  # [C]
        self._scale = np.asarray(data["scaler_scale"], dtype=np.float64)  # [C]
        self._c_out = int(cfg["c_out"])
        self._seasonal_period = data.get("seasonal_period")  # older checkpoints lack these two
        self._mase_scale = data.get("mase_scale")
        self.validation_skill: float | None = validation_skill(payload)  # None: not recorded
        self.low_skill_note: str | None = low_skill_note(payload)  # set when validation_skill <= 0
        quantiles = cfg.get("quantiles")
        self.quantiles: list[float] | None = None if quantiles is None else [float(q) for q in quantiles]
        self.calibration: dict[str, Any] | None = None
        if payload.get("calibration") is not None:
            try:
                self.calibration = check_calibration(payload["calibration"], self.pred_len, self._c_out,
                                                     self.quantiles)
            except ValueError as exc:
                raise CheckpointError(f"{self.path} is inconsistent: {exc}; recalibrate it with `python "
                                      f"scripts/evaluate.py checkpoint={self.path} calibrate=true`") from None
        # one line for users of a checkpoint without intervals (written before they existed)
        self.calibration_note: str | None = (missing_calibration_note(self.path) if self.calibration is None
                                             else None)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Forecaster:
        """Load a best.pt / last.pt safely (``weights_only=True``) and rebuild the model in eval mode."""
        payload = load_checkpoint(path, map_location="cpu")
        return cls(payload, path, device)

    # -- what the model expects ------------------------------------------------------------------
    @property
    def seq_len(self) -> int:
        return int(self.model_config["seq_len"])

    @property
    def label_len(self) -> int:
        return int(self.model_config["label_len"])

    @property
    def pred_len(self) -> int:
        return int(self.model_config["pred_len"])

    @property
    def columns(self) -> list[str]:
        """Input value columns in the model's order (target last)."""
        return list(self._columns)

    @property
    def output_columns(self) -> list[str]:
        """The forecast variables: the target for S/MS, every column for M."""
        return self._columns[-self._c_out:]

    @property
    def target(self) -> str:
        return self._target

    @property
    def features(self) -> str:
        return self._features

    @property
    def freq(self) -> str:
        return self._freq

    @property
    def embed(self) -> str:
        return self._embed

    @property
    def date_column(self) -> str:
        return self._date_column

    @property
    def source(self) -> str | None:
        """The CSV the model was trained on, as recorded at training time."""
        return None if self._source is None else str(self._source)

    @property
    def seasonal_period(self) -> int:
        """Seasonal naive's period, as training recorded it (else the frequency's default)."""
        if self._seasonal_period is not None:
            return int(self._seasonal_period)
        return seasonal_period(self._freq, self.seq_len)

    @property
    def mase_scale(self) -> list[float] | None:
        """MASE's denominator per model column, as training recorded it; None if not recorded."""
        return None if self._mase_scale is None else [float(v) for v in self._mase_scale]

    def scaler_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """The training scaler's mean and scale per model column ``[C]``."""
        return self._mean.copy(), self._scale.copy()

    def __repr__(self) -> str:
        return (f"Forecaster({self.path}, features={self.features}, target={self.target!r}, "
                f"freq={self.freq!r}, seq_len={self.seq_len}, pred_len={self.pred_len}, "
                f"columns={self.columns})")

    # -- input -----------------------------------------------------------------------------------
    def default_input(self) -> Path:
        """The training CSV recorded in the checkpoint; a DataError if it is no longer there."""
        if not self.source:
            raise DataError(f"{self.path} records no training data file; pass input=<csv>")
        source = Path(self.source)
        if not source.is_file():
            raise DataError(
                f"the data the model was trained on ({source}, recorded in {self.path}) is not found; "
                "pass input=<csv> with the same columns"
            )
        return source

    def table(self, data: pd.DataFrame | str | os.PathLike[str]) -> SeriesTable:
        """Validate an input (a DataFrame, or a CSV path) against the trained schema."""
        return read_table(data, self._columns, self._date_column)

    # -- forecasting -----------------------------------------------------------------------------
    def predict(self, data: pd.DataFrame | str | os.PathLike[str], as_of: str | pd.Timestamp | None = None
                ) -> pd.DataFrame:
        """Forecast the ``pred_len`` steps after the data ends (or after ``as_of``, inclusive).

        Returns a DataFrame indexed by the future timestamps (index name: the date column), one column
        per forecast variable in original units, then the interval and quantile columns (module
        docstring); with ``as_of``, also ``<name>_true`` columns holding
        the data's values at those timestamps (NaN where the data has none). Warns with a
        :class:`LowSkillWarning` when the model did not beat seasonal naive on validation.
        """
        result = self.run(self.table(data), as_of)
        for note in result.notes:
            logger.info(note)
        if self.calibration_note is not None:
            logger.info(self.calibration_note)
        if self.low_skill_note is not None:
            warnings.warn(self.low_skill_note, LowSkillWarning, stacklevel=2)
        return result.frame

    def run(self, table: SeriesTable, as_of: str | pd.Timestamp | None = None,
            history_steps: int | None = None) -> ForecastResult:
        end = locate_origin(table, as_of, self.seq_len)
        start = end - self.seq_len
        window = look_back(table, start, end, self._freq)  # [seq_len, C]
        window_ts = table.timestamps[start:end]
        origin = window_ts[-1]
        future = future_timestamps(origin, self._freq, self.pred_len)
        bands = self.forecast_bands(window, window_ts, future)  # arrays [1, pred_len, c_out]

        names = self.output_columns
        index = pd.DatetimeIndex(future, name=self._date_column)
        frame = pd.DataFrame(self.band_columns(bands, 0), index=index)
        if as_of is not None:
            truth = self._truth(table, end, future, names)
            if truth.notna().to_numpy().any():  # as_of at the very end: nothing to compare with
                frame = frame.join(truth, how="left")

        steps = history_steps if history_steps is not None else 3 * self.pred_len
        h_start = max(0, end - steps)
        h_values = known_values(table, h_start, end)[:, -self._c_out:]
        history = pd.DataFrame(h_values, index=pd.DatetimeIndex(table.timestamps[h_start:end],
                                                                 name=self._date_column), columns=names)
        return ForecastResult(frame=frame, history=history, origin=origin, notes=list(table.notes),
                              bands=bands)

    def band_columns(self, bands: ForecastBands, row: int) -> dict[str, np.ndarray]:
        """Forecast ``row`` of ``bands`` as named ``[pred_len]`` columns: the variables, then per level
        ``<name>_lo80``, ``<name>_hi80``, then per quantile ``<name>_q10``."""
        names = self.output_columns
        columns = {name: bands.point[row, :, j] for j, name in enumerate(names)}
        for level, (lo, hi) in bands.intervals.items():
            lo_suffix, hi_suffix = interval_suffixes(level)
            for j, name in enumerate(names):
                columns[f"{name}{lo_suffix}"] = lo[row, :, j]
                columns[f"{name}{hi_suffix}"] = hi[row, :, j]
        for tau, values in bands.quantiles.items():
            for j, name in enumerate(names):
                columns[f"{name}{quantile_suffix(tau)}"] = values[row, :, j]
        return columns

    def _truth(self, table: SeriesTable, end: int, future: pd.DatetimeIndex, names: Sequence[str]
               ) -> pd.DataFrame:
        # Match by timestamp, so a gap after as_of leaves NaN instead of shifting the truth.
        stop = min(len(table.timestamps), end + self.pred_len)
        values = known_values(table, end, stop)[:, -self._c_out:]
        truth_names = [f"{n}{TRUE_SUFFIX}" for n in names]
        known = pd.DataFrame(values, index=table.timestamps[end:stop], columns=truth_names)
        known = known[~known.index.duplicated()]
        return known.reindex(pd.DatetimeIndex(future, name=self._date_column))

    def forecast_window(self, window: np.ndarray, window_ts: pd.DatetimeIndex,
                        future: pd.DatetimeIndex) -> np.ndarray:
        """Raw-unit window ``[seq_len, C]`` -> raw-unit point forecast ``[pred_len, c_out]``."""
        return self.forecast_bands(window, window_ts, future).point[0]

    def forecast_bands(self, window: np.ndarray, window_ts: pd.DatetimeIndex,
                       future: pd.DatetimeIndex) -> ForecastBands:
        """Raw-unit window ``[seq_len, C]`` -> one forecast's bands, arrays ``[1, pred_len, c_out]``."""
        dec_ts = window_ts[len(window_ts) - self.label_len:].append(future)
        x_enc = torch.as_tensor(self.scale(window), dtype=torch.float32).unsqueeze(0)  # [1, L, C]
        output = self.model_output(x_enc, self._marks(window_ts), self._marks(dec_ts))
        return self.bands(output)

    def scale(self, values: np.ndarray) -> np.ndarray:
        """Raw ``[..., C]`` model columns -> scaled with the training scaler (never refitted)."""
        return (values - self._mean) / self._scale

    @torch.inference_mode()
    def model_output(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor, x_mark_dec: torch.Tensor
                     ) -> torch.Tensor:
        """Scaled windows ``[B, seq_len, C]`` plus their time marks -> the model's scaled output
        ``[B, pred_len, c_out]`` (``[..., Q]`` for a quantile model), float32 on the CPU."""
        x_enc = x_enc.to(self.device)
        placeholder = x_enc.new_zeros(x_enc.shape[0], self.pred_len, x_enc.shape[-1])  # [B, pred_len, C]
        x_dec = torch.cat([x_enc[:, x_enc.shape[1] - self.label_len:], placeholder], dim=1)  # [B, S+P, C]
        out = self.model(x_enc, x_mark_enc.to(self.device), x_dec, x_mark_dec.to(self.device))
        if isinstance(out, tuple):  # output_attention=True also returns the attention maps
            out = out[0]
        return out[:, -self.pred_len:].float().cpu()

    def bands(self, output: torch.Tensor) -> ForecastBands:
        """Scaled model output -> point, intervals (with a calibration) and quantiles in original units."""
        return forecast_bands(output, self.quantiles, self.calibration, self._mean[-self._c_out:],
                              self._scale[-self._c_out:])

    def _marks(self, index: pd.DatetimeIndex) -> torch.Tensor:
        marks = time_features(index, self._freq, self._embed)  # [L, M] float32 (timeF) or int64
        return torch.as_tensor(marks, device=self.device).unsqueeze(0)


def _checked_data_section(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    data = payload.get("data")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is incomplete: it has no 'data' section (columns, scaler, frequency)")
    missing = [k for k in _DATA_KEYS if data.get(k) is None]
    if missing:
        raise CheckpointError(f"{path} is incomplete: its data section lacks {', '.join(missing)}")
    n = len(data["columns"])
    if len(data["scaler_mean"]) != n or len(data["scaler_scale"]) != n:
        raise CheckpointError(
            f"{path} is inconsistent: {n} columns but a scaler for {len(data['scaler_mean'])} values"
        )
    cfg = payload["model_config"]
    if cfg.get("enc_in") != n or not 1 <= int(cfg.get("c_out", 0)) <= n:
        raise CheckpointError(
            f"{path} is inconsistent: the model reads {cfg.get('enc_in')} columns but the data section "
            f"lists {n} ({', '.join(map(str, data['columns']))})"
        )
    if str(data["columns"][-1]) != str(data["target"]):
        raise CheckpointError(f"{path} is inconsistent: the target {data['target']!r} is not the last column")
    return data


def forecast_latency(checkpoint: str | os.PathLike[str], input_csv: str | os.PathLike[str],
                     repeats: int = 20, device: str = "cpu") -> dict[str, Any]:
    """In-process timings: load once, read once, then ``repeats`` forecasts of the same input.

    ``predict_ms_*`` is a full ``Forecaster.run`` on an already-read table (window checks, scaling,
    time marks, model, frame); ``model_ms_*`` is the network's forward pass alone.
    """
    t0 = time.perf_counter()
    fc = Forecaster.from_checkpoint(checkpoint, device=device)
    t1 = time.perf_counter()
    table = fc.table(input_csv)
    t2 = time.perf_counter()
    fc.run(table)  # warm-up: the first calls allocate and pick kernels
    predict_ms, model_ms = [], []
    end = len(table.timestamps)
    window = look_back(table, end - fc.seq_len, end, fc.freq)
    window_ts = table.timestamps[end - fc.seq_len:end]
    future = future_timestamps(window_ts[-1], fc.freq, fc.pred_len)
    for _ in range(max(1, repeats)):
        a = time.perf_counter()
        fc.run(table)
        b = time.perf_counter()
        fc.forecast_window(window, window_ts, future)
        if fc.device.type == "cuda":
            torch.cuda.synchronize()
        c = time.perf_counter()
        predict_ms.append((b - a) * 1e3)
        model_ms.append((c - b) * 1e3)
    return {
        "load_s": t1 - t0,
        "read_s": t2 - t1,
        "predict_ms_median": float(np.median(predict_ms)),
        "predict_ms_min": float(np.min(predict_ms)),
        "model_ms_median": float(np.median(model_ms)),
        "model_ms_min": float(np.min(model_ms)),
        "repeats": max(1, repeats),
        "device": str(fc.device),
        "threads": torch.get_num_threads(),
    }
