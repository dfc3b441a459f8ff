"""Learning-rate schedules as pure functions of (epoch, progress within the epoch).

A schedule that depends only on the position in training needs no state of its own, so resuming from a
checkpoint restores the learning rate exactly from the loop state.
"""

from __future__ import annotations

import math

import torch

# The official code's "type2" table: absolute learning rates set after the given number of finished
# epochs (Informer2020 utils/tools.py adjust_learning_rate); it ignores train.learning_rate from epoch 2 on.
TYPE2_TABLE = {2: 5e-5, 4: 1e-5, 6: 5e-6, 8: 1e-6, 10: 5e-7, 15: 1e-7, 20: 5e-8}


def learning_rate(kind: str, base_lr: float, epoch: int, progress: float = 0.0, epochs: int = 1) -> float:
    """Learning rate for 0-based ``epoch`` at fraction ``progress`` in [0, 1) of that epoch.

    type1     base_lr * 0.5 ** epoch: halved after every epoch (the paper's default). The official code
              applies its first halving only after the second epoch; here every epoch halves it.
    type2     the official fixed table (TYPE2_TABLE), base_lr until the first entry applies.
    cosine    cosine decay from base_lr to 0 over all ``epochs``, updated every step.
    constant  base_lr throughout.
    """
    if kind == "type1":
        return base_lr * 0.5**epoch
    if kind == "type2":
        lr = base_lr
        for finished, value in sorted(TYPE2_TABLE.items()):
            if epoch >= finished:
                lr = value
        return lr
    if kind == "cosine":
        position = min((epoch + progress) / max(epochs, 1), 1.0)
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * position))
    if kind == "constant":
        return base_lr
    raise ValueError(f"unknown learning-rate schedule {kind!r}")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
