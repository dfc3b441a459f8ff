"""The two lists a user extends: training losses, and the headline metrics a run reports.

Adding a loss is one entry in :data:`LOSSES` (``train.loss=<name>`` then accepts it); its ``metric`` names
the :class:`~informer.metrics.ErrorSums` summary key that is the same function summed exactly over every
validation window, so early stopping follows the training loss. Adding a headline number is one entry
in :data:`HEADLINE` (TensorBoard's ``val/`` and ``test/`` scalars, the final log line) or
:data:`RUN_SUMMARY` (the hparams entry and the sweep summary's columns, per job and as mean ± std over
seeds).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from informer.metrics import HUBER_DELTA


@dataclass(frozen=True)
class Loss:
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (prediction, truth) -> mean over the batch
    metric: str  # ErrorSums.summary() key: the same loss, exact over all validation windows


LOSSES: dict[str, Loss] = {
    "mse": Loss(F.mse_loss, "mse"),
    "mae": Loss(F.l1_loss, "mae"),
    "huber": Loss(functools.partial(F.huber_loss, delta=HUBER_DELTA), "huber"),
}

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
}


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


def validation_loss(split_metrics: Mapping[str, Any], loss: str) -> float:
    """The early-stopping criterion: the training loss, exact over the scaled validation windows."""
    value = split_metrics["model"]["scaled"][LOSSES[loss].metric]
    return float(value) if value is not None else math.nan
