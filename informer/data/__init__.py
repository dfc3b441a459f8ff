"""Data layer: validated CSV reading, chronological splits, train-only scaling, time marks, windows.

``load_data_bundle`` is the entry point for training and evaluation. Forecasting reads its input with
the same reader and checks (``read_csv_frame``, ``parse_timestamps``, ``check_order``,
``check_regular``, ``numeric_values``), applied to the rows a forecast reads.
"""

from informer.data.datasets import (
    SPLITS,
    DataBundle,
    WindowDataset,
    as_dataset_config,
    custom_borders,
    ett_borders,
    load_data_bundle,
    make_decoder_input,
    model_columns,
    resolve_data_path,
    window_count,
)
from informer.data.download import ETT_SHA256, download_ett, ensure_ett_file, ett_url, sha256_file
from informer.data.frequency import (
    check_order,
    check_regular,
    future_timestamps,
    infer_frequency,
    normalize_freq,
    resolve_frequency,
    seasonal_period,
)
from informer.data.roles import Roles, resolve_roles
from informer.data.scaling import apply_scaling, fit_train_scaler, invert_scaling, scaler_from_stats
from informer.data.timefeatures import time_feature_dim, time_features
from informer.data.validation import numeric_values, parse_timestamps, read_csv_frame, read_series_csv

__all__ = [
    "ETT_SHA256",
    "SPLITS",
    "DataBundle",
    "Roles",
    "WindowDataset",
    "apply_scaling",
    "as_dataset_config",
    "check_order",
    "check_regular",
    "custom_borders",
    "download_ett",
    "ensure_ett_file",
    "ett_borders",
    "ett_url",
    "fit_train_scaler",
    "future_timestamps",
    "infer_frequency",
    "invert_scaling",
    "load_data_bundle",
    "make_decoder_input",
    "model_columns",
    "normalize_freq",
    "numeric_values",
    "parse_timestamps",
    "read_csv_frame",
    "read_series_csv",
    "resolve_data_path",
    "resolve_frequency",
    "resolve_roles",
    "scaler_from_stats",
    "seasonal_period",
    "sha256_file",
    "time_feature_dim",
    "time_features",
    "window_count",
]
