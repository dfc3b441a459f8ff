"""Scoring a split exactly: every window, in order, sums in float64, sharded across processes without
padding; the two naive baselines on the same windows, and every forecaster's skill against the seasonal
one; forecast figures for TensorBoard; and the standalone evaluation of a saved checkpoint
(``scripts/evaluate.py``), which needs only the checkpoint and the data file it was trained on and
reproduces the numbers of the run's metrics.json. The metrics are defined in :mod:`informer.metrics`."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Subset

from informer.checkpoint import build_model_from_checkpoint, default_file_mode, load_checkpoint
from informer.config import DEVICES, check_choice, resolve_path, to_app_config
from informer.data import SPLITS, DataBundle, WindowDataset, load_data_bundle, make_decoder_input
from informer.errors import CheckpointError, DataError, UserError
from informer.forecast.plot import ForecastWindow, plot_forecast_windows
from informer.metrics import ForecastScore, inverse_scaler, skill_score
from informer.training.distributed import (
    DistContext,
    all_reduce_sum,
    amp_dtype,
    autocast_factory,
    resolve_device,
    shard_range,
    unwrap,
)

NAIVE_BASELINES = ("naive_last", "naive_seasonal")
METRIC_NOTES = (
    "scaled: standardised with the training split's statistics (the paper's units); skill = 1 - mse / "
    "naive_seasonal's mse on the same windows, on scaled data (each variable weighs the same). original: "
    "the data's own units; mase = mean over variables of MAE / the training split's in-sample "
    "seasonal-naive MAE (mase_scale, at seasonal_period); wape = sum|e| / sum|y|; smape = mean of "
    "2|e| / (|y| + |y_hat|) without the points where both are 0 (a fraction in [0, 2]). MAPE and MSPE "
    "leave out points whose true value is exactly 0 (counted in zero_targets_excluded) and blow up near "
    "0; on scaled data they are not meaningful; prefer mase / wape / smape"
)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def forecast(model: nn.Module, batch: Batch, label_len: int, pred_len: int, c_out: int,
             autocast: Callable[[], Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model on one batch already on its device; returns float32 (prediction, truth),
    both ``[B, pred_len, c_out]`` in scaled units."""
    x_enc, x_mark_enc, y, y_mark = batch
    x_dec = make_decoder_input(y, label_len, pred_len)  # [B, label_len + pred_len, C]
    with autocast():
        out = model(x_enc, x_mark_enc, x_dec, y_mark)
    if isinstance(out, tuple):  # output_attention=True also returns the attention maps
        out = out[0]
    truth = y[:, -pred_len:, -c_out:]  # [B, pred_len, c_out]
    return out.float(), truth


def target_stats(bundle: DataBundle) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaler mean and scale of the forecast variables (the last c_out model columns)."""
    c_out = bundle.c_out
    mean = torch.as_tensor(bundle.scaler.mean_[-c_out:], dtype=torch.float64)
    scale = torch.as_tensor(bundle.scaler.scale_[-c_out:], dtype=torch.float64)
    return mean, scale


def _seasonal_naive(x_enc: torch.Tensor, period: int, pred_len: int, c_out: int) -> torch.Tensor:
    """Repeat the last ``period`` observed steps; ``[B, pred_len, c_out]``."""
    steps = torch.arange(pred_len, device=x_enc.device) % period  # [H]
    return x_enc[:, x_enc.shape[1] - period + steps, -c_out:]  # [B, H, c_out]


def _loader(dataset: WindowDataset, indices: Sequence[int], batch_size: int, num_workers: int) -> DataLoader:
    # unshuffled and nothing dropped: every window in ``indices`` is scored exactly once; a private
    # generator keeps DataLoader start-up from drawing on the global RNG (exact resume)
    return DataLoader(Subset(dataset, list(indices)), batch_size=batch_size, shuffle=False, drop_last=False,
                      num_workers=num_workers, generator=torch.Generator())


def _baseline_names(baselines: bool | Sequence[str]) -> tuple[str, ...]:
    if isinstance(baselines, bool):
        return NAIVE_BASELINES if baselines else ()
    unknown = sorted(set(baselines) - set(NAIVE_BASELINES))
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; known: {list(NAIVE_BASELINES)}")
    return tuple(name for name in NAIVE_BASELINES if name in baselines)


@torch.inference_mode()
def evaluate_split(model: nn.Module, bundle: DataBundle, split: str, *, batch_size: int,
                   device: torch.device, autocast: Callable[[], Any], dist_ctx: DistContext | None = None,
                   max_windows: int | None = None, baselines: bool | Sequence[str] = True,
                   num_workers: int = 0, on_batch: Callable[[], None] | None = None,
                   mase_scale: Sequence[float] | None = None) -> dict[str, Any]:
    """Metrics of ``model`` on a split: ``{model, naive_last, naive_seasonal, windows, ...}``.

    The windows are split into contiguous shares, one per process (no padding, no duplicates); each
    process sums its errors in float64 and the sums are added across processes, so the result does not
    depend on the batch size or the number of processes. ``baselines``: True for both naive forecasts,
    False for none, or the names of those to score (training's per-epoch validation scores only
    ``naive_seasonal``, for the skill). With ``naive_seasonal`` scored, every forecaster's ``scaled``
    metrics gain ``skill`` = 1 - its MSE / naive_seasonal's MSE. ``mase_scale``: MASE's denominator per
    model column (a checkpoint's ``data["mase_scale"]``), by default the bundle's. ``on_batch`` is
    called after each batch.
    """
    dist_ctx = dist_ctx or DistContext()
    dataset = bundle.split(split)
    net = unwrap(model)
    was_training = net.training
    net.eval()
    n_windows = len(dataset) if max_windows is None else min(len(dataset), max_windows)
    mean, scale = target_stats(bundle)
    to_original = inverse_scaler(mean.to(device), scale.to(device))
    c_out, label_len, pred_len = bundle.c_out, bundle.label_len, bundle.pred_len
    columns_scale = bundle.mase_scale if mase_scale is None else mase_scale
    target_scale = torch.as_tensor(np.asarray(columns_scale, dtype=np.float64)[-c_out:])  # [c_out]
    names = _baseline_names(baselines)
    scores = {name: ForecastScore(pred_len, to_original, device, mase_scale=target_scale)
              for name in ("model", *names)}
    period = bundle.seasonal_period
    for batch in _loader(dataset, shard_range(n_windows, dist_ctx.rank, dist_ctx.world_size),
                         batch_size, num_workers):
        batch = tuple(t.to(device, non_blocking=True) for t in batch)
        pred, truth = forecast(net, batch, label_len, pred_len, c_out, autocast)
        scores["model"].update(pred, truth)
        x_enc = batch[0]  # [B, seq_len, C]
        if "naive_last" in scores:
            last = x_enc[:, -1:, -c_out:].expand(-1, pred_len, -1)  # [B, H, c_out]
            scores["naive_last"].update(last, truth)
        if "naive_seasonal" in scores:
            scores["naive_seasonal"].update(_seasonal_naive(x_enc, period, pred_len, c_out), truth)
        if on_batch is not None:
            on_batch()
    flat = all_reduce_sum(torch.cat([s.as_tensor() for s in scores.values()]))
    for score, part in zip(scores.values(), flat.chunk(len(scores)), strict=True):
        score.load_tensor(part)
    net.train(was_training)
    result: dict[str, Any] = {name: score.summary() for name, score in scores.items()}
    if "naive_seasonal" in result:
        reference = result["naive_seasonal"]["scaled"]["mse"]
        for name in scores:
            result[name]["scaled"]["skill"] = skill_score(result[name]["scaled"]["mse"], reference)
    result["windows"] = scores["model"].scaled.count // (pred_len * c_out)
    if "naive_seasonal" in result:
        result["seasonal_period"] = period
    result["mase_scale"] = target_scale.tolist()
    return result


def plot_indices(n_windows: int, count: int) -> list[int]:
    """``count`` fixed windows spread evenly over the split (the same ones every epoch)."""
    if count <= 0 or n_windows <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, n_windows - 1, min(count, n_windows)).round()})


@torch.inference_mode()
def forecast_figure(model: nn.Module, bundle: DataBundle, split: str, indices: Sequence[int], *,
                    device: torch.device, autocast: Callable[[], Any]) -> Figure | None:
    """History, truth and forecast of the target column (original units) for a few windows."""
    if not indices:
        return None
    dataset = bundle.split(split)
    net = unwrap(model)
    was_training = net.training
    net.eval()
    items = [dataset[i] for i in indices]
    batch = tuple(torch.stack(parts).to(device) for parts in zip(*items, strict=True))
    pred, truth = forecast(net, batch, bundle.label_len, bundle.pred_len, bundle.c_out, autocast)
    net.train(was_training)
    history = batch[0][..., -1:]  # [B, seq_len, 1]: the target is the last column

    def to_original(values: torch.Tensor) -> np.ndarray:  # [B, L, 1] scaled -> [B, L] original units
        return bundle.inverse_transform(values.double().cpu().numpy())[..., 0]

    hist, true, fut = to_original(history), to_original(truth[..., -1:]), to_original(pred[..., -1:])
    windows = []
    for k, i in enumerate(indices):
        start = dataset.window_start(i)
        stamps = bundle.timestamps
        windows.append(ForecastWindow(
            history_time=stamps[start:start + bundle.seq_len], history=hist[k],
            forecast_time=stamps[start + bundle.seq_len:start + bundle.seq_len + bundle.pred_len],
            prediction=fut[k], truth=true[k], title=f"{split} window {i} ({bundle.target})",
        ))
    return plot_forecast_windows(windows, ylabel=bundle.target)


# ------------------------------------------------------------------------------------------ checkpoints
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
    """Score a checkpoint on every window of one split; ``{split: metrics, "checkpoint": ..., ...}``."""
    check_choice("split", split, SPLITS)
    check_choice("device", device, DEVICES)
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
    metrics = evaluate_split(model, bundle, split, batch_size=batch_size, device=torch_device,
                             autocast=autocast, mase_scale=mase_scale)
    return {split: metrics, "checkpoint": str(ckpt), "data": str(source), "notes": METRIC_NOTES}


def json_safe(obj: Any) -> Any:
    """NaN and infinities (not valid JSON) become None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> Path:
    """Atomic JSON write (metrics.json, scripts/evaluate.py's output); NaN/inf become null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "w") as handle:
            json.dump(json_safe(obj), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
