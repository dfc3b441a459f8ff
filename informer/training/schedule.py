"""Learning-rate schedules as pure functions of (epoch, progress within the epoch).

A schedule that depends only on the position in training needs no state of its own, so resuming from a
checkpoint restores the learning rate exactly from the loop state. ``train.lradj`` names one entry of
:data:`SCHEDULES`; adding a schedule is one entry there.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# The official code's "type2" table: absolute learning rates set after the given number of finished
# epochs (Informer2020 utils/tools.py adjust_learning_rate); it ignores train.learning_rate from epoch 2 on.
TYPE2_TABLE = {2: 5e-5, 4: 1e-5, 6: 5e-6, 8: 1e-6, 10: 5e-7, 15: 1e-7, 20: 5e-8}

# (base_lr, 0-based epoch, progress in [0, 1) within it, number of epochs) -> learning rate
Schedule = Callable[[float, int, float, int], float]


def _type1(base_lr: float, epoch: int, progress: float, epochs: int) -> float:
    # halved after every epoch (the paper's default); the official code's first halving comes only
    # after the second epoch, here every epoch halves it
    return base_lr * 0.5**epoch


def _type2(base_lr: float, epoch: int, progress: float, epochs: int) -> float:
    lr = base_lr
    for finished, value in sorted(TYPE2_TABLE.items()):
        if epoch >= finished:
            lr = value
    return lr


def _cosine(base_lr: float, epoch: int, progress: float, epochs: int) -> float:
    # decays to 0 over all epochs, updated every step
    position = min((epoch + progress) / max(epochs, 1), 1.0)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * position))


def _constant(base_lr: float, epoch: int, progress: float, epochs: int) -> float:
    return base_lr


SCHEDULES: dict[str, Schedule] = {"type1": _type1, "type2": _type2, "cosine": _cosine, "constant": _constant}


def learning_rate(kind: str, base_lr: float, epoch: int, progress: float = 0.0, epochs: int = 1) -> float:
    """Learning rate of schedule ``kind`` for 0-based ``epoch`` at fraction ``progress`` of that epoch."""
    return SCHEDULES[kind](base_lr, epoch, progress, epochs)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
