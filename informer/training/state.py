"""Everything a run needs to continue exactly where it stopped: :class:`TrainingState`.

The state is the loop position, the early-stopping state, the loss history and the train loader's
generator. :meth:`TrainingState.save` writes it to ``last.pt`` together with the weights, the optimizer,
the GradScaler and every process's RNG states; :meth:`TrainingState.load` checks a ``last.pt`` against
the run and restores all of them, so the resumed run takes exactly the steps the uninterrupted one
would have taken. Everything is stored as tensors and plain values: ``last.pt`` loads under
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from informer.checkpoint import describe_state_dict_error, load_checkpoint, save_checkpoint
from informer.config import ModelConfig, TrainConfig
from informer.errors import CheckpointError, UserError
from informer.training.distributed import all_gather_objects, is_main_process

log = logging.getLogger(__name__)

# train settings whose change makes a resumed run differ from an uninterrupted one
RESUME_SENSITIVE = ("batch_size", "learning_rate", "lradj", "epochs", "seed", "loss", "weight_decay",
                    "limit_train_batches", "limit_eval_batches", "eval_batch_size", "grad_clip", "amp",
                    "amp_dtype", "patience")


@dataclass
class TrainingState:
    # the constructor's fields are last.pt's "loop" entry
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
    val_skill_history: list[float] = field(default_factory=list)  # skill vs seasonal naive per epoch
    # the latest finished epoch's {"mse", "seasonal_naive_mse", "skill"} on the validation split (scaled
    # data): the "validation" entry of the checkpoints written after it
    validation: dict[str, float] | None = None
    # The loader draws its workers' base seed from this generator each epoch, so it is part of the data
    # order: last.pt stores its state as of the start of the epoch in progress.
    loader_generator: torch.Generator = field(default_factory=torch.Generator, init=False, repr=False,
                                              compare=False)
    epoch_generator_state: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    saved_step: int | None = field(default=None, init=False)  # global step of the last last.pt written
    notes: list[str] = field(default_factory=list, init=False, repr=False)  # what load() has to report

    # ------------------------------------------------------------------ the loop's bookkeeping
    def start_epoch(self) -> None:
        """The epoch's batches begin (part-way into it when resuming)."""
        if self.step_in_epoch == 0:
            self.epoch_generator_state = self.loader_generator.get_state()

    def record_step(self, loss: float) -> None:
        self.step_in_epoch += 1
        self.global_step += 1
        self.epoch_loss_sum += loss

    def epoch_train_loss(self) -> float:
        return self.epoch_loss_sum / self.step_in_epoch if self.step_in_epoch else math.nan

    def finish_epoch(self, train_loss: float, val_loss: float, lr: float, patience: int,
                     validation: dict[str, float] | None = None) -> bool:
        """Record the epoch (``validation``: its {"mse", "seasonal_naive_mse", "skill"}); return True when
        validation improved (the caller saves best.pt)."""
        self.train_loss_history.append(train_loss)
        self.val_loss_history.append(val_loss)
        self.lr_history.append(lr)
        if validation is not None:
            self.validation = {k: float(v) for k, v in validation.items()}
            self.val_skill_history.append(self.validation["skill"])
        improved = val_loss < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_epoch, self.bad_epochs = val_loss, self.epoch, 0
        else:
            self.bad_epochs += 1
            self.stopped_early = self.bad_epochs >= patience
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss_sum = 0.0
        return improved

    def loop_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    # ------------------------------------------------------------------ last.pt
    def save(self, path: Path, *, model_payload: dict[str, Any], optimizer: torch.optim.Optimizer,
             grad_scaler: torch.amp.GradScaler | None, lr: float, schedule: dict[str, Any],
             data_order: dict[str, Any]) -> None:
        """Write last.pt. Collective: every process calls it (rank 0 writes, with everyone's RNG states).

        The learning rate is a pure function of the schedule's settings and the loop position, so
        ``schedule`` records the settings (and ``lr`` the current rate); the train order is a function
        of (seed, epoch, position), given in ``data_order``, plus the loader generator's state.
        """
        rng = all_gather_objects(capture_rng_state())  # one entry per process, in rank order
        if is_main_process():
            # between epochs the state the next epoch starts from, else the one this epoch started from
            generator = (self.epoch_generator_state if self.step_in_epoch
                         else self.loader_generator.get_state())
            training = {
                "optimizer": optimizer.state_dict(),
                "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else None,
                "loop": self.loop_dict(),
                "lr": float(lr),
                "schedule": schedule,
                "data_order": {**data_order, "loader_generator": generator},
                "rng": rng,
                "world_size": len(rng),
            }
            save_checkpoint({**model_payload, "training": training}, path)
        self.saved_step = self.global_step

    @classmethod
    def load(cls, path: Path, *, model_cfg: ModelConfig, data: dict[str, Any], model: nn.Module,
             optimizer: torch.optim.Optimizer, grad_scaler: torch.amp.GradScaler | None,
             train_cfg: TrainConfig, rank: int, world_size: int) -> TrainingState:
        """Check that ``path`` (a last.pt) belongs to a run with this model and data layout, and restore
        the weights, optimizer, GradScaler, RNG states and loop from it.

        Call it after seeding each process's random streams: it replaces them. Differences that make
        the continuation inexact (software, threads, training settings) land in ``notes``.
        """
        payload = load_checkpoint(path)
        training = payload.get("training")
        if not isinstance(training, dict):
            raise CheckpointError(
                f"{path} holds no training state (it is a best.pt or an exported model); resume from last.pt"
            )
        missing = [key for key in ("optimizer", "loop", "rng") if key not in training]
        if missing or not isinstance(training.get("loop"), dict):
            raise CheckpointError(f"{path} has an incomplete training section (missing "
                                  f"{', '.join(missing) or 'loop'}); it was not written by informer "
                                  "training; resume from another last.pt")
        _check_same_run(path, payload, model_cfg, data)
        try:
            model.load_state_dict(payload["model_state"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: the stored weights do not match the stored model arguments "
                                  f"({describe_state_dict_error(exc)})") from None
        try:
            optimizer.load_state_dict(training["optimizer"])
            if grad_scaler is not None and training.get("grad_scaler"):
                grad_scaler.load_state_dict(training["grad_scaler"])
            known = {f.name for f in dataclasses.fields(cls) if f.init}
            state = cls(**{k: v for k, v in training["loop"].items() if k in known})
            order = training.get("data_order")
            if isinstance(order, dict) and "loader_generator" in order:
                state.loader_generator.set_state(order["loader_generator"])
                state.epoch_generator_state = state.loader_generator.get_state()  # the epoch's start
            rng = training.get("rng") or []
            if len(rng) == world_size:
                restore_rng_state(rng[rank])
            else:
                state.notes.append(f"the checkpoint was written by {len(rng)} process(es), this run has "
                                   f"{world_size}: random streams restart from the seed, so the "
                                   "continuation is not bit-identical")
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise CheckpointError(f"{path}: its training state cannot be restored ({detail}); resume from "
                                  "another last.pt or start a new run") from None
        state.saved_step = state.global_step
        state.notes += _differences(payload, train_cfg, path)
        return state


def _check_same_run(path: Path, payload: dict[str, Any], model_cfg: ModelConfig,
                    data: dict[str, Any]) -> None:
    stored, wanted = dict(payload["model_config"]), model_cfg.to_dict()
    changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if changed:
        detail = ", ".join(f"model.{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in changed[:6])
        raise UserError(f"train.resume={path}: the model differs from the checkpoint's ({detail}); "
                        "resume with the same model settings or start a new run")
    for key in ("columns", "target", "features", "freq", "known_future"):
        stored_value = payload.get("data", {}).get(key)
        if key == "known_future":  # a last.pt written before covariate roles existed had none
            stored_value = stored_value or []
        if stored_value != data.get(key):
            raise UserError(f"train.resume={path}: the data's {key} differs from the checkpoint's "
                            f"({stored_value!r} vs {data.get(key)!r}); use the same dataset")


def _differences(payload: dict[str, Any], train_cfg: TrainConfig, path: Path) -> list[str]:
    """Resuming is exact only with the same software, thread count and training settings: say so."""
    notes = []
    stored = payload.get("versions") or {}
    now_torch, now_threads = str(torch.__version__), torch.get_num_threads()
    if stored.get("threads") is not None and stored["threads"] != now_threads:
        notes.append(f"resuming with {now_threads} CPU thread(s), the checkpoint was written with "
                     f"{stored['threads']}: results may differ slightly from an uninterrupted run (set "
                     f"train.threads={stored['threads']} to match)")
    if stored.get("torch") is not None and stored["torch"] != now_torch:
        notes.append(f"resuming with torch {now_torch}, the checkpoint was written by torch "
                     f"{stored['torch']}: results may differ slightly from an uninterrupted run")
    before = (payload.get("config") or {}).get("train") or {}
    after = dataclasses.asdict(train_cfg)
    changed = [f"train.{k}: {before[k]!r} -> {after[k]!r}" for k in RESUME_SENSITIVE
               if k in before and before[k] != after[k]]
    if changed:
        notes.append(f"resuming {path} with changed settings ({', '.join(changed)}): the continuation "
                     "differs from an uninterrupted run with the original settings")
    return notes


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
