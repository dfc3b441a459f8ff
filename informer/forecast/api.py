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

A model trained with known-future covariates (``dataset.known_future``) reads them beside the time
marks for the look-back window and the ``pred_len`` steps after the origin: its input holds the history
plus those future rows (known-future columns filled, target columns empty; :mod:`informer.forecast.io`).
With ``as_of`` the horizon's known-future values are read from the data.

A checkpoint whose recorded validation MSE is not better than seasonal naive's (skill <= 0, see
:mod:`informer.forecast.skill`) makes :meth:`Forecaster.predict` issue a one-line
:class:`~informer.forecast.skill.LowSkillWarning` through :func:`warnings.warn`.
"""

from __future__ import annotations

import logging
import os
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
from informer.forecast.io import (
    TRUE_SUFFIX,
    SeriesTable,
    known_future_inputs,
    known_values,
    locate_origin,
    look_back,
    read_table,
)
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
        # covariate roles; older checkpoints have none
        self._known_future: list[str] = [str(c) for c in data.get("known_future") or []]
        self._cov_mean = np.asarray(data.get("covariate_mean") or [], dtype=np.float64)  # [K]
        self._cov_scale = np.asarray(data.get("covariate_scale") or [], dtype=np.float64)  # [K]
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
    def known_future(self) -> list[str]:
        """The known-future covariate columns: read for the history and the ``pred_len`` future rows."""
        return list(self._known_future)

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
        known = f", known_future={self.known_future}" if self._known_future else ""
        return (f"Forecaster({self.path}, features={self.features}, target={self.target!r}, "
                f"freq={self.freq!r}, seq_len={self.seq_len}, pred_len={self.pred_len}, "
                f"columns={self.columns}{known})")

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
        return read_table(data, self._columns, self._date_column, self._known_future)

    def locate(self, table: SeriesTable, as_of: str | pd.Timestamp | None = None) -> int:
        """Row position just past the forecast origin: ``as_of``'s row, else the last row (with known-future
        covariates: the last row before the future rows)."""
        return locate_origin(table, as_of, self.seq_len, future_rows=bool(self._known_future))

    def known_inputs(self, table: SeriesTable, end: int, as_of: bool) -> np.ndarray | None:
        """Raw known-future values ``[seq_len + pred_len, K]`` for the window ending at row ``end`` and the
        steps after it; None for a model without known-future covariates."""
        if not self._known_future:
            return None
        return known_future_inputs(table, end - self.seq_len, end, self.pred_len, self._freq, as_of)

    # -- forecasting -----------------------------------------------------------------------------
    def predict(self, data: pd.DataFrame | str | os.PathLike[str], as_of: str | pd.Timestamp | None = None
                ) -> pd.DataFrame:
        """Forecast the ``pred_len`` steps after the data ends (or after ``as_of``, inclusive).

        With known-future covariates the input also holds the ``pred_len`` future rows (module docstring).
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
        end = self.locate(table, as_of)
        start = end - self.seq_len
        window = look_back(table, start, end, self._freq)  # [seq_len, C]
        window_ts = table.timestamps[start:end]
        origin = window_ts[-1]
        future = future_timestamps(origin, self._freq, self.pred_len)
        known = self.known_inputs(table, end, as_of is not None)  # [seq_len + pred_len, K] or None
        bands = self.forecast_bands(window, window_ts, future, known)  # arrays [1, pred_len, c_out]

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
                        future: pd.DatetimeIndex, known: np.ndarray | None = None) -> np.ndarray:
        """Raw-unit window ``[seq_len, C]`` -> raw-unit point forecast ``[pred_len, c_out]``."""
        return self.forecast_bands(window, window_ts, future, known).point[0]

    def forecast_bands(self, window: np.ndarray, window_ts: pd.DatetimeIndex,
                       future: pd.DatetimeIndex, known: np.ndarray | None = None) -> ForecastBands:
        """Raw-unit window ``[seq_len, C]`` -> one forecast's bands, arrays ``[1, pred_len, c_out]``.

        ``known``: the raw known-future values ``[seq_len + pred_len, K]`` of the window's rows and the
        forecast steps (needed, and only read, when the model has known-future covariates)."""
        dec_ts = window_ts[len(window_ts) - self.label_len:].append(future)
        x_enc = torch.as_tensor(self.scale(window), dtype=torch.float32).unsqueeze(0)  # [1, L, C]
        enc_known = dec_known = None
        if self._known_future:
            want = (self.seq_len + self.pred_len, len(self._known_future))
            if known is None or known.shape != want:
                raise ValueError(f"known must be {list(want)} raw values of {self._known_future} (seq_len + "
                                 f"pred_len rows), got {None if known is None else known.shape}")
            scaled_known = self.scale_known(known)  # [seq_len + pred_len, K]
            enc_known = scaled_known[:self.seq_len]  # [seq_len, K]
            dec_known = scaled_known[self.seq_len - self.label_len:]  # [label_len + pred_len, K]
        output = self.model_output(x_enc, self._marks(window_ts, enc_known), self._marks(dec_ts, dec_known))
        return self.bands(output, x_enc)

    def scale(self, values: np.ndarray) -> np.ndarray:
        """Raw ``[..., C]`` model columns -> scaled with the training scaler (never refitted)."""
        return (values - self._mean) / self._scale

    def scale_known(self, values: np.ndarray) -> np.ndarray:
        """Raw ``[..., K]`` known-future columns -> scaled with their training scaler (never refitted)."""
        return (values - self._cov_mean) / self._cov_scale

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

    def bands(self, output: torch.Tensor, x_enc: torch.Tensor | None = None) -> ForecastBands:
        """Scaled model output -> point, intervals (with a calibration) and quantiles in original units.
        ``x_enc``: the scaled windows ``[B, seq_len, C]`` the output came from, needed by normalized
        intervals (their width follows each window's spread)."""
        return forecast_bands(output, self.quantiles, self.calibration, self._mean[-self._c_out:],
                              self._scale[-self._c_out:], x_enc)

    def time_marks(self, index: pd.DatetimeIndex, known_scaled: np.ndarray | None = None) -> torch.Tensor:
        """``[L, M]`` time features of ``index`` (float32 for timeF, int64 for fixed/learned), then with
        known-future covariates their scaled values ``[L, K]``: ``[L, M + K]`` float32, as in training."""
        marks = torch.as_tensor(time_features(index, self._freq, self._embed))  # [L, M]
        if not self._known_future:
            return marks
        if known_scaled is None:
            raise ValueError(f"the model reads the known-future columns {self._known_future}: "
                             "pass their values")
        known = torch.as_tensor(known_scaled, dtype=torch.float32)  # [L, K]
        return torch.cat([marks.float(), known], dim=-1)  # [L, M + K]

    def _marks(self, index: pd.DatetimeIndex, known_scaled: np.ndarray | None = None) -> torch.Tensor:
        return self.time_marks(index, known_scaled).to(self.device).unsqueeze(0)  # [1, L, M (+ K)]


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
    known = data.get("known_future") or []
    n_known = int(cfg.get("n_known_future", 0))
    if not (len(known) == n_known == len(data.get("covariate_mean") or [])
            == len(data.get("covariate_scale") or [])):
        listed = ", ".join(map(str, known))
        raise CheckpointError(f"{path} is inconsistent: the model reads {n_known} known-future covariate(s) "
                              f"but the data section lists {len(known)} ({listed}) with "
                              f"{len(data.get('covariate_mean') or [])} scaler values")
    return data
