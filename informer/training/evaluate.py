"""Scoring a split exactly: every window, in order, sums in float64, sharded across processes without
padding; the two naive baselines on the same windows, and every forecaster's skill against the seasonal
one; with a calibration, the intervals' coverage and width and the quantile losses (of the model, and
of seasonal naive with its own residual-quantile intervals); forecast figures for TensorBoard. The
metrics are defined in :mod:`informer.metrics`; a saved checkpoint is scored by
:mod:`informer.training.checkpoint_eval`."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Subset

from informer.checkpoint import default_file_mode
from informer.data import DataBundle, WindowDataset, make_decoder_input
from informer.forecast.plot import ForecastWindow, plot_forecast_windows
from informer.intervals import (
    forecast_quantiles,
    level_key,
    point_forecast,
    predict_intervals,
    residual_quantile_forecast,
    scored_quantiles,
    window_scale,
)
from informer.metrics import ForecastScore, ProbabilisticScore, inverse_scaler, skill_score
from informer.training.distributed import (
    DistContext,
    all_reduce_sum,
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
    "0; on scaled data they are not meaningful; prefer mase / wape / smape. intervals: conformal, "
    "calibrated on the validation split (method per level: normalized = forecast +- margin x the look-back "
    "window's std per variable, split = forecast +- margin, cqr = the model's quantiles +- margin; "
    "coverage on val is in-sample); coverage = fraction of points "
    "with lo <= y <= hi, width in original units. probabilistic: wql = gluonts' mean_wQuantileLoss "
    "(original units), crps = mean over levels of 2 x mean pinball loss (scaled), crps_skill = 1 - crps "
    "/ naive_seasonal's crps at the same levels; a point model's quantiles are its interval endpoints "
    "plus the point forecast as the median (quantiles_from: intervals); seasonal naive's are its "
    "forecast plus the empirical quantiles of its validation residuals"
)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def forecast(model: nn.Module, batch: Batch, label_len: int, pred_len: int, c_out: int,
             autocast: Callable[[], Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model on one batch already on its device; returns float32 (output, truth) in scaled
    units: the output ``[B, pred_len, c_out]``, or ``[B, pred_len, c_out, Q]`` for a quantile model (its
    point forecast: :func:`informer.intervals.point_forecast`), the truth ``[B, pred_len, c_out]``."""
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


def model_quantiles(model: nn.Module) -> tuple[float, ...] | None:
    """The quantile levels the (possibly wrapped) model forecasts; None for a point model."""
    return getattr(unwrap(model), "quantiles", None)


def seasonal_naive(x_enc: torch.Tensor, period: int, pred_len: int, c_out: int) -> torch.Tensor:
    """Repeat the last ``period`` observed steps; ``[B, pred_len, c_out]``."""
    steps = torch.arange(pred_len, device=x_enc.device) % period  # [H]
    return x_enc[:, x_enc.shape[1] - period + steps, -c_out:]  # [B, H, c_out]


def split_loader(dataset: WindowDataset, indices: Sequence[int], batch_size: int,
                 num_workers: int) -> DataLoader:
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
                   mase_scale: Sequence[float] | None = None, calibration: Mapping[str, Any] | None = None,
                   naive_calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Metrics of ``model`` on a split: ``{model, naive_last, naive_seasonal, windows, ...}``.

    The windows are split into contiguous shares, one per process (no padding, no duplicates); each
    process sums its errors in float64 and the sums are added across processes, so the result does not
    depend on the batch size or the number of processes. ``baselines``: True for both naive forecasts,
    False for none, or the names of those to score (training's per-epoch validation scores only
    ``naive_seasonal``, for the skill). With ``naive_seasonal`` scored, every forecaster's ``scaled``
    metrics gain ``skill`` = 1 - its MSE / naive_seasonal's MSE. ``mase_scale``: MASE's denominator per
    model column (a checkpoint's ``data["mase_scale"]``), by default the bundle's. ``on_batch`` is
    called after each batch.

    Point metrics score the point forecast. A quantile model, or any model with a ``calibration``
    (:mod:`informer.intervals`), also gets ``probabilistic`` (wQL, CRPS; quantile models also
    ``scaled.pinball``, their training loss) and, with the calibration, ``intervals`` (coverage and width
    per level); ``naive_calibration`` (:func:`informer.training.calibration.calibrate`) does the same for
    seasonal naive, and the model's ``probabilistic.crps_skill`` = 1 - its CRPS / seasonal naive's.
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
    quantiles = model_quantiles(net)
    naive_calibration = naive_calibration if "naive_seasonal" in names else None
    probabilistic = _probabilistic_scores(quantiles, calibration, naive_calibration, pred_len, c_out,
                                          to_original, device)
    period = bundle.seasonal_period
    for batch in split_loader(dataset, shard_range(n_windows, dist_ctx.rank, dist_ctx.world_size),
                              batch_size, num_workers):
        batch = tuple(t.to(device, non_blocking=True) for t in batch)
        output, truth = forecast(net, batch, label_len, pred_len, c_out, autocast)
        scores["model"].update(point_forecast(output, quantiles), truth)
        x_enc = batch[0]  # [B, seq_len, C]
        if "model" in probabilistic:
            spread = window_scale(x_enc, c_out)  # [B, 1, c_out]: normalized intervals scale by it
            found = forecast_quantiles(output, quantiles, calibration, spread)
            intervals = predict_intervals(output, calibration, spread) if calibration else {}
            probabilistic["model"].update(truth, found[1] if found else None, intervals)
        if "naive_last" in scores:
            last = x_enc[:, -1:, -c_out:].expand(-1, pred_len, -1)  # [B, H, c_out]
            scores["naive_last"].update(last, truth)
        if "naive_seasonal" in scores:
            naive = seasonal_naive(x_enc, period, pred_len, c_out)  # [B, H, c_out]
            scores["naive_seasonal"].update(naive, truth)
            if "naive_seasonal" in probabilistic:
                _, naive_quantiles = residual_quantile_forecast(naive, naive_calibration)  # [B, H, c_out, K]
                probabilistic["naive_seasonal"].update(truth, naive_quantiles,
                                                       predict_intervals(naive, naive_calibration))
        if on_batch is not None:
            on_batch()
    parts = [*scores.values(), *probabilistic.values()]
    sizes = [part.as_tensor().numel() for part in parts]
    flat = all_reduce_sum(torch.cat([part.as_tensor() for part in parts]))
    for part, values in zip(parts, flat.split(sizes), strict=True):
        part.load_tensor(values)
    net.train(was_training)
    result: dict[str, Any] = {name: score.summary() for name, score in scores.items()}
    if "naive_seasonal" in result:
        reference = result["naive_seasonal"]["scaled"]["mse"]
        for name in scores:
            result[name]["scaled"]["skill"] = skill_score(result[name]["scaled"]["mse"], reference)
    _add_probabilistic(result, probabilistic, calibration, naive_calibration)
    result["windows"] = scores["model"].scaled.count // (pred_len * c_out)
    if "naive_seasonal" in result:
        result["seasonal_period"] = period
    result["mase_scale"] = target_scale.tolist()
    return result


def _probabilistic_scores(quantiles: Sequence[float] | None, calibration: Mapping[str, Any] | None,
                          naive_calibration: Mapping[str, Any] | None, pred_len: int, c_out: int,
                          to_original: Callable[[torch.Tensor], torch.Tensor],
                          device: torch.device) -> dict[str, ProbabilisticScore]:
    """The probabilistic scores evaluate_split keeps: the model's when it forecasts quantiles or has
    intervals, seasonal naive's when it has a calibration."""
    found: dict[str, ProbabilisticScore] = {}
    levels = calibration["levels"] if calibration else []
    taus = scored_quantiles(quantiles, levels)
    if taus is not None:
        source = "model" if quantiles is not None else "intervals"
        found["model"] = ProbabilisticScore(pred_len, c_out, taus, [level_key(lv) for lv in levels],
                                            to_original, device, source)
    if naive_calibration is not None:
        found["naive_seasonal"] = ProbabilisticScore(
            pred_len, c_out, naive_calibration["residual_quantiles"]["quantiles"],
            [level_key(lv) for lv in naive_calibration["levels"]], to_original, device, "residuals")
    return found


def _add_probabilistic(result: dict[str, Any], probabilistic: Mapping[str, ProbabilisticScore],
                       calibration: Mapping[str, Any] | None, naive_calibration: Mapping[str, Any] | None
                       ) -> None:
    for name, score in probabilistic.items():
        summary = score.summary()
        if score.quantiles_from == "model":  # the training loss of quantile models, exact on the split
            result[name]["scaled"]["pinball"] = summary["pinball"]
        result[name]["probabilistic"] = summary["probabilistic"]
        used = calibration if name == "model" else naive_calibration
        if summary["intervals"] and used is not None:
            result[name]["intervals"] = {key: {"method": used["per_level"][key]["method"], **values}
                                         for key, values in summary["intervals"].items()}
    if "model" in probabilistic and "naive_seasonal" in probabilistic:
        model, naive = result["model"]["probabilistic"], result["naive_seasonal"]["probabilistic"]
        # a CRPS ratio means something only at the same quantile levels
        if model["quantiles"] == naive["quantiles"]:
            model["crps_skill"] = skill_score(model["crps"], naive["crps"])


def plot_indices(n_windows: int, count: int) -> list[int]:
    """``count`` fixed windows spread evenly over the split (the same ones every epoch)."""
    if count <= 0 or n_windows <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, n_windows - 1, min(count, n_windows)).round()})


@torch.inference_mode()
def forecast_figure(model: nn.Module, bundle: DataBundle, split: str, indices: Sequence[int], *,
                    device: torch.device, autocast: Callable[[], Any],
                    calibration: Mapping[str, Any] | None = None) -> Figure | None:
    """History, truth and forecast of the target column (original units) for a few windows, with the
    calibrated intervals shaded when a ``calibration`` is given, else a quantile model's symmetric
    quantile pairs (during training the calibration exists only after the last epoch)."""
    if not indices:
        return None
    dataset = bundle.split(split)
    net = unwrap(model)
    was_training = net.training
    net.eval()
    items = [dataset[i] for i in indices]
    batch = tuple(torch.stack(parts).to(device) for parts in zip(*items, strict=True))
    output, truth = forecast(net, batch, bundle.label_len, bundle.pred_len, bundle.c_out, autocast)
    quantiles = model_quantiles(net)
    pred = point_forecast(output, quantiles)  # [B, pred_len, c_out]
    if calibration is not None:
        spread = window_scale(batch[0], bundle.c_out)  # [B, 1, c_out]
        bands = predict_intervals(output, calibration, spread)  # {level: ([B, P, c_out], [B, P, c_out])}
    else:
        bands = quantile_bands(output, quantiles)
    net.train(was_training)
    history = batch[0][..., -1:]  # [B, seq_len, 1]: the target is the last column

    def to_original(values: torch.Tensor) -> np.ndarray:  # [B, L, 1] scaled -> [B, L] original units
        return bundle.inverse_transform(values.double().cpu().numpy())[..., 0]

    hist, true, fut = to_original(history), to_original(truth[..., -1:]), to_original(pred[..., -1:])
    shaded = {level: (to_original(lo[..., -1:]), to_original(hi[..., -1:]))  # [B, P] each
              for level, (lo, hi) in bands.items()}
    windows = []
    for k, i in enumerate(indices):
        start = dataset.window_start(i)
        stamps = bundle.timestamps
        windows.append(ForecastWindow(
            history_time=stamps[start:start + bundle.seq_len], history=hist[k],
            forecast_time=stamps[start + bundle.seq_len:start + bundle.seq_len + bundle.pred_len],
            prediction=fut[k], truth=true[k], title=f"{split} window {i} ({bundle.target})",
            bands={level: (lo[k], hi[k]) for level, (lo, hi) in shaded.items()},
        ))
    return plot_forecast_windows(windows, ylabel=bundle.target)


def quantile_bands(output: torch.Tensor, quantiles: Sequence[float] | None
                   ) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """A quantile model's output ``[B, P, C, Q]`` -> ``{level: (lo, hi)}`` for each pair of levels
    ``(q, 1 - q)`` it has (level ``1 - 2q``); empty for a point model."""
    if quantiles is None:
        return {}
    levels = [float(q) for q in quantiles]
    bands = {}
    for i, q in enumerate(levels):
        upper = next((j for j, r in enumerate(levels) if q < 0.5 and math.isclose(r, 1.0 - q)), None)
        if upper is not None:
            bands[round(1.0 - 2.0 * q, 12)] = (output[..., i], output[..., upper])
    return bands


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
