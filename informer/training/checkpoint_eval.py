"""A saved checkpoint scored on its own (``scripts/evaluate.py``), and calibrated in place.

:func:`evaluate_checkpoint` needs only the checkpoint and the data file it was trained on, and
reproduces the numbers of the run's metrics.json: the same windows, the same scaler, the checkpoint's
stored calibration for the intervals and seasonal naive's recomputed from the same validation windows.
A checkpoint written before intervals existed still evaluates (point metrics only) and the result
says how to add them: ``calibrate=True`` fits the conformal calibration on the validation split and
writes it into the checkpoint (atomically; every other entry is written back unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from informer.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from informer.config import (
    DEVICES,
    INTERVAL_METHODS,
    check_choice,
    check_probability_list,
    resolve_path,
    to_app_config,
)
from informer.data import SPLITS, DataBundle, load_data_bundle
from informer.errors import CheckpointError, DataError, UserError
from informer.intervals import check_calibration, missing_calibration_note
from informer.training.calibration import calibrate as calibrate_on_validation
from informer.training.distributed import amp_dtype, autocast_factory, resolve_device
from informer.training.evaluate import METRIC_NOTES, evaluate_split, model_quantiles


@dataclass
class LoadedCheckpoint:
    path: Path
    payload: dict[str, Any]
    source: Path  # the data file
    bundle: DataBundle
    model: nn.Module
    device: torch.device
    autocast: Any
    mase_scale: list[float] | None
    intervals: list[float]  # the run's forecast.intervals (the default for older checkpoints)
    interval_method: str  # the run's forecast.interval_method (the default, normalized, for older ones)


def _data_file(payload: dict[str, Any], dataset: dict[str, Any], data_dir: str | None, ckpt: Path) -> Path:
    recorded = payload["data"].get("source")
    if data_dir is not None:
        name = Path(recorded).name if recorded else f"{dataset['name']}.csv"
        path = resolve_path(data_dir) / name
    elif recorded:
        path = Path(recorded)
    else:
        raise CheckpointError(f"{ckpt} does not record its data file; pass data_dir=<folder holding the CSV>")
    if not path.is_file():
        raise DataError(f"the data file {path} used to train {ckpt} is missing; pass "
                        f"data_dir=<folder holding {path.name}> (the file the model was trained on)")
    return path


def load_for_evaluation(checkpoint: str | Path, data_dir: str | None = None,
                        device: str = "auto") -> LoadedCheckpoint:
    """The checkpoint, its model and the data it was trained on, checked against each other."""
    check_choice("device", device, DEVICES)
    ckpt = resolve_path(checkpoint)
    payload = load_checkpoint(ckpt)
    config, data = payload.get("config"), payload.get("data")
    if not isinstance(config, dict) or not isinstance(data, dict) or "dataset" not in config:
        raise CheckpointError(f"{ckpt} lacks the run config or data section written by informer training")
    app = to_app_config({k: v for k, v in config.items()
                         if k in ("dataset", "model", "train", "forecast", "paths")})
    source = _data_file(payload, config["dataset"], data_dir, ckpt)
    spec = payload["model_config"]
    bundle = load_data_bundle({**config["dataset"], "path": str(source)}, source.parent, spec["seq_len"],
                              spec["label_len"], spec["pred_len"], spec["embed"], download=False)
    if bundle.columns != list(data["columns"]):
        raise DataError(f"{source} yields columns {bundle.columns}, the checkpoint was trained on "
                        f"{list(data['columns'])}; use the training data file")
    if not (np.allclose(bundle.scaler.mean_, data["scaler_mean"], rtol=1e-9, atol=1e-12)
            and np.allclose(bundle.scaler.scale_, data["scaler_scale"], rtol=1e-9, atol=1e-12)):
        raise DataError(f"the training rows of {source} differ from those the checkpoint was trained on "
                        "(its scaler statistics do not match); evaluate on the original data file")
    if bundle.known_future != list(data.get("known_future") or []):
        raise DataError(f"{source} yields the known-future columns {bundle.known_future}, the checkpoint was "
                        f"trained with {list(data.get('known_future') or [])}; use the run's dataset config")
    torch_device = resolve_device(device, field="device")
    model = build_model_from_checkpoint(payload, ckpt, torch_device)
    # the same precision as training's final evaluation
    autocast = autocast_factory(torch_device, amp_dtype(app.train.amp, app.train.amp_dtype, torch_device))
    # MASE's scale as training computed it (older checkpoints lack it: then from the same training rows)
    mase_scale = data.get("mase_scale")
    if mase_scale is not None and (not isinstance(mase_scale, list | tuple)
                                   or len(mase_scale) != len(bundle.columns)):
        raise CheckpointError(f"{ckpt} is inconsistent: its data section's mase_scale does not hold one "
                              f"number per column ({len(bundle.columns)})")
    return LoadedCheckpoint(ckpt, payload, source, bundle, model, torch_device, autocast, mase_scale,
                            list(app.forecast.intervals), app.forecast.interval_method)


def stored_calibration(loaded: LoadedCheckpoint) -> dict[str, Any] | None:
    """The checkpoint's calibration, checked against its model; None when it has none."""
    calibration = loaded.payload.get("calibration")
    if calibration is None:
        return None
    spec = loaded.payload["model_config"]
    try:
        return check_calibration(calibration, spec["pred_len"], spec["c_out"], spec.get("quantiles"))
    except ValueError as exc:
        raise CheckpointError(f"{loaded.path} is inconsistent: {exc}; recalibrate it with `python "
                              f"scripts/evaluate.py checkpoint={loaded.path} calibrate=true`") from None


def calibrate_checkpoint(loaded: LoadedCheckpoint, levels: list[float] | None = None,
                         batch_size: int = 64, interval_method: str | None = None
                         ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Fit the calibration on the validation split and write it into the checkpoint file in place;
    returns (calibration, seasonal naive's calibration). ``interval_method``: a point model's, by
    default the run's ``forecast.interval_method``."""
    method = loaded.interval_method if interval_method is None else interval_method
    check_choice("interval_method", method, INTERVAL_METHODS)
    try:
        levels = check_probability_list("intervals", loaded.intervals if levels is None else levels)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not levels:
        raise UserError("calibrate=true needs at least one interval level: pass intervals=[0.8,0.95]")
    calibration, naive = calibrate_on_validation(loaded.model, loaded.bundle, levels, batch_size=batch_size,
                                                 device=loaded.device, autocast=loaded.autocast,
                                                 interval_method=method)
    if calibration is None:  # unreachable with levels given; keeps the return type honest
        raise UserError("calibrate=true produced no calibration")
    # the loaded payload is written back as it was read, with the calibration added or replaced
    save_checkpoint({**loaded.payload, "calibration": calibration}, loaded.path)
    loaded.payload["calibration"] = calibration
    return calibration, naive


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", data_dir: str | None = None,
                        batch_size: int = 64, device: str = "auto", calibrate: bool = False,
                        intervals: list[float] | None = None, interval_method: str | None = None
                        ) -> dict[str, Any]:
    """Score a checkpoint on every window of one split: ``{split: metrics, "checkpoint": ...,
    "calibration": ..., ...}``; with ``calibrate`` first calibrate it in place at ``intervals``
    (default: the run's ``forecast.intervals``) with ``interval_method`` (default: the run's
    ``forecast.interval_method``). Without a calibration, ``calibration_note`` says how to add one."""
    check_choice("split", split, SPLITS)
    if batch_size <= 0:
        raise UserError(f"batch_size must be a positive integer, got {batch_size}")
    if intervals is not None and not calibrate:
        raise UserError("intervals=... chooses the levels to calibrate: it needs calibrate=true")
    if interval_method is not None and not calibrate:
        raise UserError("interval_method=... chooses how to calibrate: it needs calibrate=true")
    loaded = load_for_evaluation(checkpoint, data_dir, device)
    if calibrate:
        calibration, naive = calibrate_checkpoint(loaded, intervals, batch_size, interval_method)
    else:
        calibration = stored_calibration(loaded)
        levels = calibration["levels"] if calibration is not None else []
        _, naive = calibrate_on_validation(None, loaded.bundle, levels, batch_size=batch_size,
                                           device=loaded.device, autocast=loaded.autocast,
                                           quantiles=model_quantiles(loaded.model))
    metrics = evaluate_split(loaded.model, loaded.bundle, split, batch_size=batch_size, device=loaded.device,
                             autocast=loaded.autocast, mase_scale=loaded.mase_scale, calibration=calibration,
                             naive_calibration=naive)
    result: dict[str, Any] = {split: metrics, "checkpoint": str(loaded.path), "data": str(loaded.source),
                              "calibration": calibration, "notes": METRIC_NOTES}
    if calibration is None:
        result["calibration_note"] = missing_calibration_note(loaded.path)
    return result
