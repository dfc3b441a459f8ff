"""Everything the training loop needs to continue where it stopped, in one place.

``LoopState`` holds the position (epoch, step within the epoch, global step), early-stopping state and
the loss history; RNG states are captured as plain tensors and lists so that ``last.pt`` loads under
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class LoopState:
    epoch: int = 0  # the epoch in progress (0-based); equals the number of finished epochs between epochs
    step_in_epoch: int = 0  # optimizer steps already taken in the epoch in progress
    global_step: int = 0  # optimizer steps taken since the start of training
    best_val_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0  # consecutive epochs without a validation improvement (early stopping)
    stopped_early: bool = False
    epoch_loss_sum: float = 0.0  # running sum of per-step losses in the epoch in progress
    train_loss_history: list[float] = field(default_factory=list)  # per finished epoch
    val_loss_history: list[float] = field(default_factory=list)
    lr_history: list[float] = field(default_factory=list)

    def begin_epoch(self) -> None:
        self.step_in_epoch = 0
        self.epoch_loss_sum = 0.0

    def record_step(self, loss: float) -> None:
        self.step_in_epoch += 1
        self.global_step += 1
        self.epoch_loss_sum += loss

    def epoch_train_loss(self) -> float:
        return self.epoch_loss_sum / self.step_in_epoch if self.step_in_epoch else math.nan

    def finish_epoch(self, train_loss: float, val_loss: float, lr: float, patience: int) -> bool:
        """Record the epoch; return True when validation improved (the caller saves best.pt)."""
        self.train_loss_history.append(train_loss)
        self.val_loss_history.append(val_loss)
        self.lr_history.append(lr)
        improved = val_loss < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
        else:
            self.bad_epochs += 1
            self.stopped_early = self.bad_epochs >= patience
        self.epoch += 1
        self.begin_epoch()
        return improved

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LoopState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states as tensors and plain lists (no NumPy arrays, which the safe loader refuses)."""
    version, internal, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_kind, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in internal), gauss))
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_kind, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
