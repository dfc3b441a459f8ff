"""Conformal calibration on the validation split: the model's intervals (stored in the checkpoint) and
seasonal naive's (for its metrics only; recomputed from the data whenever a split is scored).

One pass over every validation window collects the model's conformity scores
(:func:`informer.intervals.conformity_scores`) and seasonal naive's signed residuals ``y - naive``; the
windows are sharded across processes as in :func:`~informer.training.evaluate.evaluate_split` and the
per-window scores gathered in window order, so every process fits the same calibration (a conformal
quantile is an order statistic, not a sum).

A point model's intervals are normalized conformal by default (``interval_method``): its scores are
divided by :func:`informer.intervals.window_scale` of each window; a quantile model's are CQR whatever the
method (split conformal for levels without a quantile pair).

The model's calibration also carries ``baselines``: split-conformal margins of both naive baselines
(seasonal naive and the last value) from their validation residuals, so that a backtest from the
checkpoint alone can score their intervals too.

Seasonal naive gets split-conformal intervals from its absolute residuals, and quantile forecasts from
the empirical quantiles of its signed residuals at the levels the model is scored at (the model's
quantiles, or its interval endpoints and 0.5), so that the CRPS and wQL of the two compare like with like.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from informer.data import DataBundle
from informer.intervals import (
    baseline_margins,
    conformity_scores,
    cqr_pair,
    empirical_quantiles,
    fit_calibration,
    scored_quantiles,
    window_scale,
)
from informer.training.distributed import DistContext, all_gather_rows, shard_range, unwrap
from informer.training.evaluate import forecast, model_quantiles, seasonal_naive, split_loader

CALIBRATION_SPLIT = "val"


@torch.inference_mode()
def calibrate(model: nn.Module | None, bundle: DataBundle, levels: Sequence[float], *, batch_size: int,
              device: torch.device, autocast: Callable[[], Any], dist_ctx: DistContext | None = None,
              num_workers: int = 0, quantiles: Sequence[float] | None = None,
              interval_method: str = "normalized") -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(model calibration, seasonal-naive calibration)`` from every validation window.

    The model's is None without ``levels`` (nothing to calibrate) or without ``model`` (then only seasonal
    naive's is fitted, scored at the levels of ``quantiles`` / ``levels`` as for a model with those
    quantiles). Seasonal naive's is None when there is nothing to score it at (a point model and no
    levels); it is a calibration (split conformal) plus ``residual_quantiles``: ``{"quantiles": [...],
    "values": [pred_len][c_out][K]}``, the empirical quantiles of ``y - naive`` added to its forecast.
    ``interval_method``: a point model's, "normalized" or "split" (seasonal naive's is always split).
    """
    dist_ctx = dist_ctx or DistContext()
    levels = [float(level) for level in levels]
    if model is not None:
        quantiles = model_quantiles(model)
    method = interval_method if quantiles is None else "split"  # quantile models: CQR, else split
    pairs = [cqr_pair(level, quantiles) for level in levels]
    taus = scored_quantiles(quantiles, levels)
    dataset = bundle.split(CALIBRATION_SPLIT)
    net = unwrap(model) if model is not None else None
    was_training = net.training if net is not None else False
    if net is not None:
        net.eval()
    c_out, pred_len = bundle.c_out, bundle.pred_len
    model_scores: dict[Any, list[torch.Tensor]] = {pair: [] for pair in dict.fromkeys(pairs)}
    residuals: list[torch.Tensor] = []  # seasonal naive's y - forecast
    last_residuals: list[torch.Tensor] = []  # the last value's
    shard = shard_range(len(dataset), dist_ctx.rank, dist_ctx.world_size)
    for batch in split_loader(dataset, shard, batch_size, num_workers):
        batch = tuple(t.to(device, non_blocking=True) for t in batch)
        truth = batch[2][:, -pred_len:, -c_out:]  # [B, pred_len, c_out]
        if net is not None and levels:
            output, truth = forecast(net, batch, bundle.label_len, pred_len, c_out, autocast)
            scale = window_scale(batch[0], c_out) if method == "normalized" else None  # [B, 1, c_out]
            for pair, scores in conformity_scores(output, truth, quantiles, model_scores, scale).items():
                model_scores[pair].append(scores)  # [B, pred_len, c_out]
        naive = seasonal_naive(batch[0], bundle.seasonal_period, pred_len, c_out)  # [B, pred_len, c_out]
        residuals.append(truth.double() - naive.double())
        last_residuals.append(truth.double() - batch[0][:, -1:, -c_out:].double())  # [B, pred_len, c_out]
    if net is not None:
        net.train(was_training)
    empty = torch.zeros(0, pred_len, c_out, dtype=torch.float64, device=device)
    gathered = {pair: all_gather_rows(torch.cat(parts) if parts else empty)
                for pair, parts in model_scores.items()}  # [n, pred_len, c_out] each
    signed = all_gather_rows(torch.cat(residuals) if residuals else empty)  # [n, pred_len, c_out]
    calibration = (fit_calibration(gathered, levels, quantiles, CALIBRATION_SPLIT, method)
                   if net is not None and levels else None)
    if calibration is not None:  # the naive baselines' own intervals, for backtests from the checkpoint
        last_signed = all_gather_rows(torch.cat(last_residuals) if last_residuals else empty)
        calibration["baselines"] = baseline_margins({"naive_seasonal": signed, "naive_last": last_signed},
                                                    levels)
    if taus is None:
        return calibration, None
    naive_calibration = fit_calibration({None: signed.abs()}, levels, None, CALIBRATION_SPLIT)
    naive_calibration["residual_quantiles"] = {"quantiles": taus,
                                               "values": empirical_quantiles(signed, taus).tolist()}
    return calibration, naive_calibration
