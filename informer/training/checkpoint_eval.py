"""Standalone evaluation of a saved checkpoint (``scripts/evaluate.py``): needs only the checkpoint and
the data file it was trained on, and reproduces the numbers of the run's metrics.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import MISSING

from informer.checkpoint import build_model_from_checkpoint, load_checkpoint
from informer.config import DEVICES
from informer.data import SPLITS, load_data_bundle
from informer.errors import CheckpointError, DataError, UserError
from informer.training.evaluate import MAPE_NOTE, evaluate_split
from informer.training.setup import amp_dtype, autocast_factory, resolve_device, resolve_path, to_app_config


@dataclass
class EvaluateConfig:
    checkpoint: str = MISSING  # a best.pt or last.pt written by training
    split: str = "test"  # train | val | test
    data_dir: str | None = None  # folder holding the CSV; null: the file recorded in the checkpoint
    batch_size: int = 64  # any value gives the same metrics
    device: str = "auto"  # auto | cpu | cuda
    output: str | None = None  # also write the metrics to this JSON file


def register_evaluate_config() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


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


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", data_dir: str | None = None,
                        batch_size: int = 64, device: str = "auto") -> dict[str, Any]:
    """Score a checkpoint on every window of one split; ``{split: metrics, "windows": ..., ...}``."""
    if split not in SPLITS:
        raise UserError(f"split={split!r} is not one of {', '.join(SPLITS)}")
    if batch_size <= 0:
        raise UserError(f"batch_size must be a positive integer, got {batch_size}")
    ckpt = resolve_path(checkpoint)
    payload = load_checkpoint(ckpt)
    config, data = payload.get("config"), payload.get("data")
    if not isinstance(config, dict) or not isinstance(data, dict) or "dataset" not in config:
        raise CheckpointError(f"{ckpt} lacks the run config or data section written by informer training")
    app = to_app_config({k: v for k, v in config.items() if k in ("dataset", "model", "train", "paths")})
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
    if device not in DEVICES:
        raise UserError(f"device={device!r} is not one of {', '.join(DEVICES)}")
    torch_device = resolve_device(device)
    model = build_model_from_checkpoint(payload, ckpt, torch_device)
    autocast = autocast_factory(torch_device, amp_dtype(app, torch_device))  # as in training's final eval
    metrics = evaluate_split(model, bundle, split, batch_size=batch_size, device=torch_device,
                             autocast=autocast)
    return {split: metrics, "checkpoint": str(ckpt), "data": str(source), "notes": MAPE_NOTE}
