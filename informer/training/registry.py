"""The two lists a user extends: training losses, and the headline metrics a run reports.

Adding a loss is one entry in :data:`LOSSES` (``train.loss=<name>`` then accepts it); its ``metric`` names
the key of the evaluation's ``model.scaled`` summary that is the same function summed exactly over every
validation window, so early stopping follows the training loss. A ``quantile`` loss reads a quantile
model's output ``[B, pred_len, c_out, Q]`` and its levels (``pinball``, the loss of every model with
``model.quantiles``); the others read the point forecast. Adding a headline number is one entry in
:data:`HEADLINE` (TensorBoard's ``val/`` and ``test/`` scalars, the final log line) or :data:`RUN_SUMMARY`
(the hparams entry and the sweep summary's columns, per job and as mean ± std over seeds). The interval
levels are a setting (``forecast.intervals``), so their coverage and width are added per level found
(:func:`headline`, :func:`run_summary`: ``coverage_80``, ``width_80``, ...).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from informer.config import PINBALL_LOSS
from informer.metrics import HUBER_DELTA, pinball


def pinball_loss(output: torch.Tensor, truth: torch.Tensor, quantiles: Sequence[float]) -> torch.Tensor:
    """Mean over levels and points of the pinball loss; ``output [B, P, C, Q]``, ``truth [B, P, C]``."""
    levels = torch.as_tensor([float(q) for q in quantiles], dtype=output.dtype, device=output.device)  # [Q]
    return pinball(output, truth.unsqueeze(-1), levels).mean()  # levels broadcast over [B, P, C, Q]


@dataclass(frozen=True)
class Loss:
    fn: Callable[..., torch.Tensor]  # (prediction, truth) or, quantile losses, (output, truth, quantiles)
    metric: str  # key of the model's "scaled" metrics: the same loss, exact over all validation windows
    quantile: bool = False  # reads a quantile model's output and levels


LOSSES: dict[str, Loss] = {
    "mse": Loss(F.mse_loss, "mse"),
    "mae": Loss(F.l1_loss, "mae"),
    "huber": Loss(functools.partial(F.huber_loss, delta=HUBER_DELTA), "huber"),
    PINBALL_LOSS: Loss(pinball_loss, "pinball", quantile=True),
}


def loss_function(name: str, quantiles: Sequence[float] | None
                  ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(model output, truth) -> loss`` for ``train.loss=name`` (config.check_train_config pairs quantile
    losses with quantile models)."""
    loss = LOSSES[name]
    if loss.quantile:
        if quantiles is None:
            raise ValueError(f"the {name} loss needs a quantile model (model.quantiles)")
        return functools.partial(loss.fn, quantiles=tuple(quantiles))
    return loss.fn

# a split's headline numbers: name -> path into evaluate_split()'s result. MAPE/MSPE stay in metrics.json
# only: near-zero targets make them explode (informer.metrics); the scale-free metrics replace them here.
HEADLINE: dict[str, tuple[str, ...]] = {
    "mse": ("model", "scaled", "mse"),
    "mae": ("model", "scaled", "mae"),
    "rmse": ("model", "scaled", "rmse"),
    "skill": ("model", "scaled", "skill"),  # 1 - mse / naive_seasonal_mse, scaled data
    "mse_original": ("model", "original", "mse"),
    "mae_original": ("model", "original", "mae"),
    "mase": ("model", "original", "mase"),
    "wape": ("model", "original", "wape"),
    "smape": ("model", "original", "smape"),
    "naive_last_mse": ("naive_last", "scaled", "mse"),
    "naive_seasonal_mse": ("naive_seasonal", "scaled", "mse"),
    # quantile models, and any model with calibrated intervals (informer.metrics.ProbabilisticScore)
    "pinball": ("model", "scaled", "pinball"),
    "wql": ("model", "probabilistic", "wql"),
    "crps": ("model", "probabilistic", "crps"),
    "crps_skill": ("model", "probabilistic", "crps_skill"),  # 1 - crps / naive_seasonal's crps
    "naive_seasonal_wql": ("naive_seasonal", "probabilistic", "wql"),
    "windows": ("windows",),
}

# a run's summary: name -> path into metrics.json
RUN_SUMMARY: dict[str, tuple[str, ...]] = {
    "best_val_loss": ("training", "best_val_loss"),
    "test_mse": ("test", "model", "scaled", "mse"),
    "test_mae": ("test", "model", "scaled", "mae"),
    "test_skill": ("test", "model", "scaled", "skill"),
    "test_mase": ("test", "model", "original", "mase"),
    "test_wape": ("test", "model", "original", "wape"),
    "test_smape": ("test", "model", "original", "smape"),
    "test_mse_original": ("test", "model", "original", "mse"),
    "val_skill": ("val", "model", "scaled", "skill"),
    "test_wql": ("test", "model", "probabilistic", "wql"),
    "test_crps_skill": ("test", "model", "probabilistic", "crps_skill"),
}
# per interval level of a split's forecaster: name (with the level in percent) -> key of its block
INTERVAL_NUMBERS = {"coverage": "coverage", "width": "width"}


def dig(tree: Any, path: tuple[str, ...]) -> float | None:
    """The finite number at ``path`` in nested dicts, else None."""
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    try:
        number = float(tree)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def pick(tree: Mapping[str, Any], paths: Mapping[str, tuple[str, ...]]) -> dict[str, float]:
    """Every named number of ``paths`` that ``tree`` holds."""
    found = {name: dig(tree, path) for name, path in paths.items()}
    return {name: value for name, value in found.items() if value is not None}


def level_name(key: str) -> str:
    """An interval level's key in metrics.json as a name suffix: "0.8" -> "80", "0.995" -> "99.5"."""
    return f"{round(float(key) * 100, 6):g}"


def interval_numbers(split_metrics: Mapping[str, Any],
                     forecasters: Sequence[str] = ("model", "naive_seasonal")) -> dict[str, float]:
    """``{"coverage_80": ..., "width_80": ..., "naive_seasonal_coverage_80": ...}`` for every level
    a split's metrics hold (the model's names unprefixed)."""
    found = {}
    for forecaster in forecasters:
        prefix = "" if forecaster == "model" else f"{forecaster}_"
        blocks = dig_tree(split_metrics, (forecaster, "intervals")) or {}
        for key in blocks:
            for name, field in INTERVAL_NUMBERS.items():
                value = dig(blocks, (key, field))
                if value is not None:
                    found[f"{prefix}{name}_{level_name(key)}"] = value
    return found


def headline(split_metrics: Mapping[str, Any]) -> dict[str, float]:
    """A split's headline numbers: :data:`HEADLINE` and each interval level's coverage and width (before
    the window count, which closes the log line)."""
    numbers = pick(split_metrics, HEADLINE)
    windows = numbers.pop("windows", None)
    numbers.update(interval_numbers(split_metrics))
    return numbers if windows is None else {**numbers, "windows": windows}


def run_summary(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A run's summary numbers: :data:`RUN_SUMMARY` and the model's test coverage and width per level."""
    test = metrics.get("test") if isinstance(metrics.get("test"), Mapping) else {}
    return {**pick(metrics, RUN_SUMMARY),
            **{f"test_{name}": value for name, value in interval_numbers(test, ("model",)).items()}}


def dig_tree(tree: Any, path: tuple[str, ...]) -> Mapping[str, Any] | None:
    """The mapping at ``path`` in nested dicts, else None."""
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree if isinstance(tree, Mapping) else None


def validation_loss(split_metrics: Mapping[str, Any], loss: str) -> float:
    """The early-stopping criterion: the training loss, exact over the scaled validation windows."""
    value = split_metrics["model"]["scaled"][LOSSES[loss].metric]
    return float(value) if value is not None else math.nan
