"""Chronological splits, sliding windows and the DataBundle handed to training and evaluation.

The whole series is scaled once (statistics of the training rows only) into one float32 tensor
``[N, C]`` and its time marks into one tensor ``[N, M + K]``: the M time features, then the K
known-future covariates (:mod:`informer.data.roles`) scaled with their own training-split scaler. Every
window is a set of slices of those two tensors, so fetching a sample copies nothing and the DataLoader
is never the bottleneck, and the decoder's placeholder rows carry the future covariate values.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from sklearn.preprocessing import StandardScaler
from torch.utils.data import Dataset

from informer.config import (
    DATASET_NAMES,
    EMBED_KINDS,
    ETT_NAMES,
    FEATURE_MODES,
    DatasetConfig,
    ModelConfig,
    ModelSpec,
    derive_model_config,
    feature_sizes,
)
from informer.data.download import ensure_ett_file
from informer.data.frequency import seasonal_period
from informer.data.roles import Roles, check_role_lists, resolve_roles, role_columns
from informer.data.scaling import ArrayT, column_stats, fit_train_scaler, invert_scaling
from informer.data.timefeatures import time_features
from informer.data.validation import read_series_csv
from informer.errors import DataError, UserError
from informer.metrics import in_sample_seasonal_mae

SPLITS = ("train", "val", "test")
ETT_MONTH_HOURS = 30 * 24  # the paper's "month" is 30 days
ETT_MONTHS = {"train": 12, "val": 4, "test": 4}

Borders = dict[str, tuple[int, int]]


def ett_borders(name: str, seq_len: int) -> Borders:
    """The paper's split: 12 / 4 / 4 months; val and test start ``seq_len`` rows before their border.

    Hourly files: train [0, 8640), val [8640 - seq_len, 11520), test [11520 - seq_len, 14400); the
    15-minute files (ETTm*) use four times as many rows.
    """
    month = ETT_MONTH_HOURS * (4 if name.startswith("ETTm") else 1)
    train_end = ETT_MONTHS["train"] * month
    val_end = train_end + ETT_MONTHS["val"] * month
    test_end = val_end + ETT_MONTHS["test"] * month
    return {"train": (0, train_end), "val": (train_end - seq_len, val_end),
            "test": (val_end - seq_len, test_end)}


def custom_borders(n_rows: int, seq_len: int) -> Borders:
    """70/10/20 chronological split of a custom CSV with the same ``seq_len`` look-back as ETT.

    train = int(0.7 N) rows, test = int(0.2 N) rows, val = the rest (so rounding goes to val);
    val and test windows start ``seq_len`` rows before their first scored row.
    """
    n_train, n_test = int(0.7 * n_rows), int(0.2 * n_rows)
    n_val = n_rows - n_train - n_test
    return {"train": (0, n_train), "val": (max(n_train - seq_len, 0), n_train + n_val),
            "test": (max(n_rows - n_test - seq_len, 0), n_rows)}


def window_count(start: int, end: int, seq_len: int, pred_len: int) -> int:
    """Windows whose encoder input and forecast both lie in rows [start, end)."""
    return max(end - start - seq_len - pred_len + 1, 0)


class WindowDataset(Dataset):
    """Sliding windows over rows ``[start, end)`` of shared value and mark tensors.

    Item ``i`` is ``(x_enc [seq_len, C], x_mark_enc [seq_len, M], y [label_len + pred_len, C],
    y_mark [label_len + pred_len, M])``: slices (views, no copies) of the shared tensors. ``y`` is
    the decoder's start token (the last ``label_len`` rows of ``x_enc``) followed by the targets.
    """

    def __init__(self, values: torch.Tensor, marks: torch.Tensor, start: int, end: int, seq_len: int,
                 label_len: int, pred_len: int, split: str = "") -> None:
        if values.shape[0] != marks.shape[0]:
            raise ValueError(f"values have {values.shape[0]} rows but marks have {marks.shape[0]}")
        self.values, self.marks = values, marks  # [N, C], [N, M]
        self.start, self.end = start, end
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self.split = split
        self._length = window_count(start, end, seq_len, pred_len)

    def __len__(self) -> int:
        return self._length

    def _index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            where = self.split or "split"
            raise IndexError(f"window {i} out of range for the {where} ({self._length} windows)")
        return i

    def window_start(self, i: int) -> int:
        """Row (into the bundle's timestamps) of ``x_enc[0]`` for window ``i``."""
        return self.start + self._index(i)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.start + self._index(i)
        e = s + self.seq_len
        d = e - self.label_len
        f = e + self.pred_len
        return self.values[s:e], self.marks[s:e], self.values[d:f], self.marks[d:f]


@dataclass(eq=False)
class DataBundle:
    """One series, split, scaled and windowed: what training, evaluation and checkpoints need.

    ``train`` / ``val`` / ``test`` are :class:`WindowDataset` views of ``scaled``; ``borders`` gives
    each split's row range (val and test include their ``seq_len`` look-back). ``columns`` is the model
    order, the past covariates then the targets (``roles``), so forecasts are always the last ``c_out``
    columns. The known-future covariates are not among them: they are the last K columns of ``marks``.
    ``seasonal_period`` is the season length of the seasonal-naive baseline (see
    :func:`informer.data.frequency.seasonal_period`: dataset.seasonal_period, else one day of steps for
    sub-daily data, a week for daily, a year for weekly/monthly; capped to ``seq_len``).
    """

    name: str
    source: Path
    columns: list[str]  # model order: past covariates, then the targets (the target is last)
    target: str
    features: str  # M | S | MS
    roles: Roles
    freq: str
    date_column: str
    embed: str
    seq_len: int
    label_len: int
    pred_len: int
    borders: Borders
    seasonal_period: int
    timestamps: pd.DatetimeIndex = field(repr=False)
    values: np.ndarray = field(repr=False)  # [N, C] unscaled, float64
    scaler: StandardScaler = field(repr=False)  # fitted on the train rows only
    # the known-future columns' scaler (train rows only); None without known-future columns
    covariate_scaler: StandardScaler | None = field(repr=False)
    scaled: torch.Tensor = field(repr=False)  # [N, C] float32, what the windows slice
    # [N, M + K]: time features, then the K scaled known-future columns. float32, or without known-future
    # columns int64 for embed fixed/learned (the calendar integers are exact in float32 too)
    marks: torch.Tensor = field(repr=False)
    train: WindowDataset = field(repr=False)
    val: WindowDataset = field(repr=False)
    test: WindowDataset = field(repr=False)

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    @property
    def c_out(self) -> int:
        return feature_sizes(self.features, self.n_columns, len(self.roles.targets))[2]

    @property
    def known_future(self) -> list[str]:
        return list(self.roles.known_future)

    @functools.cached_property
    def mase_scale(self) -> np.ndarray:
        """MASE's denominator per model column ``[C]`` (original units): the in-sample seasonal-naive MAE
        of the training rows at ``seasonal_period`` (:func:`informer.metrics.in_sample_seasonal_mae`)."""
        start, end = self.borders["train"]
        return in_sample_seasonal_mae(self.values[start:end], self.seasonal_period)

    def split(self, name: str) -> WindowDataset:
        if name not in SPLITS:
            raise UserError(f"split must be one of {list(SPLITS)}, got {name!r}")
        return getattr(self, name)

    def model_config(self, spec: ModelSpec | Mapping[str, Any]) -> ModelConfig:
        """The model's full config: enc_in / dec_in / c_out and freq derived from this data."""
        return derive_model_config(spec, self.features, self.n_columns, self.freq, n_targets=self.c_out,
                                   n_known_future=len(self.roles.known_future))

    def inverse_transform(self, array: ArrayT, columns_slice: slice | None = None) -> ArrayT:
        """Map scaled values back to original units (numpy or torch; dtype and device kept).

        The last axis holds columns; by default they are the *last* ``array.shape[-1]`` model columns,
        so a forecast ``[..., c_out]`` and a full window ``[..., C]`` both work without a slice.
        """
        mean, scale = column_stats(self.scaler, columns_slice, array.shape[-1])
        return invert_scaling(array, mean, scale)

    def checkpoint_data(self) -> dict[str, Any]:
        """The checkpoint's ``data`` section: plain types only, enough to forecast without the CSV."""
        cov = self.covariate_scaler
        return {
            "columns": list(self.columns), "target": self.target, "features": self.features,
            "freq": self.freq, "date_column": self.date_column,
            "scaler_mean": [float(v) for v in self.scaler.mean_],
            "scaler_scale": [float(v) for v in self.scaler.scale_],
            "last_timestamp": self.timestamps[-1].isoformat(),
            "first_timestamp": self.timestamps[0].isoformat(),
            "source": str(self.source), "embed": self.embed, "seasonal_period": int(self.seasonal_period),
            "mase_scale": [float(v) for v in self.mase_scale],
            # covariate roles (older checkpoints lack them: no covariates, targets = the last c_out columns)
            "targets": list(self.roles.targets), "past_covariates": list(self.roles.past_covariates),
            "known_future": list(self.roles.known_future),
            "covariate_mean": [float(v) for v in cov.mean_] if cov is not None else [],
            "covariate_scale": [float(v) for v in cov.scale_] if cov is not None else [],
        }

    def describe(self) -> str:
        counts = ", ".join(f"{s} {len(self.split(s))}" for s in SPLITS)
        roles = (f" (targets {list(self.roles.targets)}, past covariates {list(self.roles.past_covariates)}, "
                 f"known-future {self.known_future})" if self.known_future or self.roles.past_covariates
                 else "")
        return (f"{self.name} ({self.source}): {len(self.timestamps)} rows x {self.n_columns} column(s) "
                f"{self.columns} at {self.freq!r}, features={self.features}{roles}; windows: {counts}")


def as_dataset_config(cfg: DatasetConfig | Mapping[str, Any] | Any) -> DatasetConfig:
    """Accept the dataclass, a (structured) DictConfig or a plain mapping."""
    if isinstance(cfg, DatasetConfig):
        return cfg
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    elif dataclasses.is_dataclass(cfg):
        cfg = dataclasses.asdict(cfg)
    values = dict(cfg)
    known = {f.name for f in dataclasses.fields(DatasetConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown dataset field(s) {unknown}; known fields: {sorted(known)}")
    for name in ("columns", "known_future", "past_covariates", "targets"):
        if values.get(name) is not None:
            values[name] = [str(c) for c in values[name]]
    return DatasetConfig(**values)


def resolve_data_path(cfg: DatasetConfig, data_dir: str | Path, *, download: bool = True,
                      progress: bool = True) -> Path:
    """dataset.path if set; else ``<data_dir>/<name>.csv`` for ETT, downloaded when missing."""
    if cfg.path:
        return Path(cfg.path).expanduser()
    if cfg.name not in ETT_NAMES:
        raise UserError("dataset.path is required for dataset=custom: set dataset.path=<your.csv> "
                        "(and dataset.target, dataset.date_column if they are not 'OT' and 'date')")
    path = Path(data_dir).expanduser() / f"{cfg.name}.csv"
    if download and not path.is_file():
        return ensure_ett_file(cfg.name, path.parent, progress=progress)
    return path


def model_columns(columns: list[str], target: str, features: str) -> list[str]:
    """Column order the model sees: M/MS all columns with the target moved last; S the target only."""
    if features == "S":
        return [target]
    return [c for c in columns if c != target] + [target]


def _check_options(cfg: DatasetConfig, seq_len: int, label_len: int, pred_len: int, embed: str) -> None:
    if cfg.name not in DATASET_NAMES:
        raise UserError(f"dataset.name must be one of {list(DATASET_NAMES)}, got {cfg.name!r}")
    if cfg.features not in FEATURE_MODES:
        raise UserError(f"dataset.features must be one of {list(FEATURE_MODES)}, got {cfg.features!r}")
    if embed not in EMBED_KINDS:
        raise UserError(f"model.embed must be one of {list(EMBED_KINDS)}, got {embed!r}")
    check_role_lists(cfg.features, cfg.target, cfg.targets, cfg.past_covariates, cfg.known_future)
    if seq_len <= 0 or pred_len <= 0 or not 0 <= label_len <= seq_len:
        raise UserError(f"need seq_len > 0, pred_len > 0 and 0 <= label_len <= seq_len; got "
                        f"model.seq_len={seq_len}, model.label_len={label_len}, model.pred_len={pred_len}")


def _check_borders(borders: Borders, n_rows: int, seq_len: int, pred_len: int, source: Path,
                   cfg: DatasetConfig) -> None:
    need = seq_len + pred_len
    if cfg.name in ETT_NAMES and n_rows < borders["test"][1]:
        raise DataError(f"{source} has {n_rows} rows but the paper's 12/4/4-month split of {cfg.name} needs "
                        f"{borders['test'][1]}; use the complete official file (delete it to re-download)")
    for split, (start, end) in borders.items():
        if end - start >= need:
            continue
        look_back = "" if split == "train" else " including its seq_len look-back"
        layout = ""
        if cfg.name == "custom":
            n_train, n_test = int(0.7 * n_rows), int(0.2 * n_rows)
            layout = (f" (the file has {n_rows} rows, split 70/10/20 into train {n_train}, "
                      f"val {n_rows - n_train - n_test}, test {n_test})")
        raise DataError(
            f"{source}: the {split} split has {end - start} rows{look_back}{layout}, too short for one "
            f"window of seq_len + pred_len = {seq_len} + {pred_len} = {need} rows; use a longer series or a "
            "smaller model.seq_len / model.pred_len"
        )


def load_data_bundle(dataset_cfg: DatasetConfig | Mapping[str, Any], data_dir: str | Path, seq_len: int,
                     label_len: int, pred_len: int, embed: str, *, download: bool = True,
                     progress: bool = True) -> DataBundle:
    """Read, validate, split, scale and window one data set (see :class:`DataBundle`)."""
    cfg = as_dataset_config(dataset_cfg)
    _check_options(cfg, seq_len, label_len, pred_len, embed)
    source = resolve_data_path(cfg, data_dir, download=download, progress=progress)
    # S reads (and so validates) only the target; M and MS use dataset.columns or every value column;
    # every column named in a role is read too
    named = role_columns(cfg.targets, cfg.past_covariates, cfg.known_future)
    target = cfg.target if cfg.targets is None else None
    wanted = ([target] if target else []) if cfg.features == "S" else cfg.columns
    frame, freq = read_series_csv(source, cfg.date_column, cfg.freq, wanted, target, named)
    found = list(frame.columns)
    pool = found if wanted is None else [c for c in found if c in set(wanted) | {cfg.target}]
    roles = resolve_roles(cfg.features, cfg.target, cfg.targets, cfg.past_covariates, cfg.known_future,
                          pool, found, str(source))
    columns = roles.columns
    values = frame[columns].to_numpy(dtype=np.float64)  # [N, C]
    n_rows = values.shape[0]

    borders = ett_borders(cfg.name, seq_len) if cfg.name in ETT_NAMES else custom_borders(n_rows, seq_len)
    _check_borders(borders, n_rows, seq_len, pred_len, source, cfg)

    scaler = fit_train_scaler(values, borders["train"])
    scaled = torch.from_numpy(np.ascontiguousarray(scaler.transform(values), dtype=np.float32))  # [N, C]
    marks = torch.from_numpy(np.ascontiguousarray(time_features(frame.index, freq, embed)))  # [N, M]
    covariate_scaler = None
    if roles.known_future:
        known = frame[list(roles.known_future)].to_numpy(dtype=np.float64)  # [N, K]
        covariate_scaler = fit_train_scaler(known, borders["train"])
        known_scaled = torch.from_numpy(covariate_scaler.transform(known).astype(np.float32))  # [N, K]
        marks = torch.cat([marks.float(), known_scaled], dim=1).contiguous()  # [N, M + K] float32
    splits = {name: WindowDataset(scaled, marks, start, end, seq_len, label_len, pred_len, name)
              for name, (start, end) in borders.items()}
    return DataBundle(
        name=cfg.name, source=source, columns=columns, target=roles.target, features=cfg.features,
        roles=roles, covariate_scaler=covariate_scaler, freq=freq,
        date_column=cfg.date_column, embed=embed, seq_len=seq_len, label_len=label_len, pred_len=pred_len,
        borders=borders, seasonal_period=seasonal_period(freq, seq_len, cfg.seasonal_period),
        timestamps=frame.index, values=values, scaler=scaler, scaled=scaled, marks=marks, **splits,
    )


def make_decoder_input(y: torch.Tensor, label_len: int, pred_len: int) -> torch.Tensor:
    """Decoder input: the first ``label_len`` steps of ``y`` (known values) then ``pred_len`` zeros.

    ``y`` is ``[B, >= label_len, C]`` (or unbatched ``[L, C]``); the result is
    ``[B, label_len + pred_len, C]`` with y's dtype and device. Future values in ``y`` are never read.
    """
    if y.shape[-2] < label_len:
        raise ValueError(f"y has {y.shape[-2]} steps, fewer than label_len={label_len}")
    known = y[..., :label_len, :]  # [B, label_len, C]
    zeros = y.new_zeros((*y.shape[:-2], pred_len, y.shape[-1]))  # [B, pred_len, C]
    return torch.cat([known, zeros], dim=-2)  # [B, label_len + pred_len, C]
