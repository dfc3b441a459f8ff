"""Standardisation fitted on the training rows only, and its inverse for numpy arrays or tensors.

The statistics travel in checkpoints as plain lists (``scaler_mean``, ``scaler_scale``), so the
helpers here work from those lists as well as from a fitted StandardScaler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def fit_train_scaler(values: np.ndarray, train_rows: tuple[int, int]) -> StandardScaler:
    """A StandardScaler fitted on ``values[start:end]`` only, so no statistic leaks from val/test."""
    start, end = train_rows
    return StandardScaler().fit(values[start:end])


def scaler_from_stats(mean: Sequence[float], scale: Sequence[float]) -> StandardScaler:
    """Rebuild a fitted StandardScaler from saved statistics (e.g. a checkpoint's data section)."""
    mean_arr = np.asarray(mean, dtype=np.float64)
    scale_arr = np.asarray(scale, dtype=np.float64)
    if mean_arr.shape != scale_arr.shape or mean_arr.ndim != 1:
        raise ValueError(f"scaler mean {mean_arr.shape} and scale {scale_arr.shape} must be equal 1-D shapes")
    scaler = StandardScaler()
    scaler.mean_ = mean_arr
    scaler.scale_ = scale_arr
    scaler.var_ = scale_arr**2
    scaler.n_features_in_ = mean_arr.shape[0]
    scaler.n_samples_seen_ = 0
    return scaler


def _stats_like(stats: np.ndarray, like: ArrayT) -> ArrayT:
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(stats, dtype=like.dtype, device=like.device)
    return stats.astype(like.dtype if np.issubdtype(like.dtype, np.floating) else np.float64)


def apply_scaling(array: ArrayT, mean: np.ndarray, scale: np.ndarray) -> ArrayT:
    """(array - mean) / scale over the last axis; keeps numpy/torch, dtype and device."""
    return (array - _stats_like(mean, array)) / _stats_like(scale, array)


def invert_scaling(array: ArrayT, mean: np.ndarray, scale: np.ndarray) -> ArrayT:
    """array * scale + mean over the last axis; keeps numpy/torch, dtype and device."""
    return array * _stats_like(scale, array) + _stats_like(mean, array)


def column_stats(scaler: StandardScaler, columns: slice | None, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale for a slice of the scaler's columns; by default the last ``width`` columns.

    The model's forecast variables are always the last ``c_out`` columns (target last), so an array
    of width ``c_out`` maps to the last ``c_out`` statistics.
    """
    n = scaler.mean_.shape[0]
    if columns is None:
        if width > n:
            raise ValueError(f"array has {width} columns but the scaler was fitted on {n}")
        columns = slice(n - width, n)
    mean, scale = scaler.mean_[columns], scaler.scale_[columns]
    if mean.shape[0] != width:
        raise ValueError(f"column slice {columns} selects {mean.shape[0]} columns, the array has {width}")
    return mean, scale
