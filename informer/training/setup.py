"""Checks and choices made once before training: config values the schema cannot catch, device, AMP."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from informer.config import (
    AMP_DTYPES,
    DATASET_NAMES,
    DEVICES,
    FEATURE_MODES,
    LR_SCHEDULES,
    ModelConfig,
    ModelSpec,
    TrainAppConfig,
    derive_model_config,
)
from informer.errors import UserError

log = logging.getLogger(__name__)

LOSSES = ("mse", "mae")


def to_app_config(cfg: DictConfig | TrainAppConfig | dict[str, Any]) -> TrainAppConfig:
    """A typed, fully resolved TrainAppConfig from a Hydra DictConfig, a plain dict or the dataclass."""
    if isinstance(cfg, TrainAppConfig):
        return cfg
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainAppConfig), cfg)
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except Exception as exc:  # omegaconf raises several unrelated types for bad values
        raise UserError(f"invalid configuration: {exc}") from None


def _choice(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"{field}={value!r} is not supported; choose one of {', '.join(allowed)}")


def _positive(field: str, value: float | None, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise UserError(f"{field} must be {bound}, got {value!r}")


def check_config(app: TrainAppConfig, world_size: int = 1) -> None:
    """Raise UserError naming the field for values the dataclass types cannot rule out."""
    ds, tr = app.dataset, app.train
    _choice("dataset.name", ds.name, DATASET_NAMES)
    _choice("dataset.features", ds.features, FEATURE_MODES)
    if ds.name == "custom" and not ds.path:
        raise UserError("dataset=custom needs dataset.path=<file.csv>: the CSV to train on")
    if ds.seasonal_period is not None and ds.seasonal_period <= 0:
        raise UserError(f"dataset.seasonal_period must be a positive number of steps, "
                        f"got {ds.seasonal_period}")
    _choice("train.lradj", tr.lradj, LR_SCHEDULES)
    _choice("train.device", tr.device, DEVICES)
    _choice("train.amp_dtype", tr.amp_dtype, AMP_DTYPES)
    _choice("train.loss", tr.loss, LOSSES)
    for name in ("epochs", "batch_size", "eval_batch_size", "patience", "learning_rate"):
        _positive(f"train.{name}", getattr(tr, name))
    for name in ("learning_rate", "weight_decay", "grad_clip"):  # the optimizer works in float32
        value = getattr(tr, name)
        if value is not None and not value <= torch.finfo(torch.float32).max:
            raise UserError(f"train.{name}={value!r} is not a usable number (it must be finite and within "
                            "float32 range); use a value like 1e-4")
    for name in ("limit_train_batches", "limit_eval_batches", "threads", "grad_clip"):
        _positive(f"train.{name}", getattr(tr, name), allow_none=True)
    for name in ("weight_decay", "num_workers", "checkpoint_every", "plot_windows"):
        _positive(f"train.{name}", getattr(tr, name), allow_zero=True)
    if tr.batch_size % world_size:
        raise UserError(
            f"train.batch_size={tr.batch_size} is the global batch size and must be divisible by the "
            f"number of processes ({world_size}); pick a multiple of {world_size}"
        )
    if tr.device == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
    # sizes from the data are not known yet: validate the user's part with placeholder sizes
    model_config(app.model, ds.features, n_columns=1, freq="h")


def model_config(spec: ModelSpec, features: str, n_columns: int, freq: str) -> ModelConfig:
    """derive_model_config with its ValueErrors turned into UserErrors (they name the field)."""
    try:
        return derive_model_config(spec, features, n_columns, freq)
    except ValueError as exc:
        raise UserError(f"invalid model configuration: {exc}") from None


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def amp_dtype(app: TrainAppConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision. Never autocast on the CPU."""
    if device.type != "cuda" or not app.train.amp:
        return None
    if app.train.amp_dtype == "bf16":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        log.warning("train.amp_dtype=bf16 is not supported by this GPU; using fp16 with loss scaling")
    return torch.float16


def autocast_factory(device: torch.device, dtype: torch.dtype | None) -> Callable[[], Any]:
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def resolve_path(path: str | Path) -> Path:
    """Relative paths are taken from the directory the command was started in, also under Hydra."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_original_cwd

        if HydraConfig.initialized():
            return (Path(get_original_cwd()) / path).resolve()
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return path.resolve()
