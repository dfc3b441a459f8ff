"""The training loop: epochs of optimizer steps, validation, early stopping and checkpoints.

Everything that changes while training lives in the :class:`~informer.training.state.TrainingState`,
the model, the optimizer and the GradScaler, and ``last.pt`` holds all of them plus the RNG states: a
run resumed from it takes exactly the steps the uninterrupted run would have taken.

Order of the side effects at a step or epoch boundary (the resume contract): TensorBoard events for
global step T are written and flushed before the checkpoint of step T, so a resumed run purges only
events after T; ``best.pt`` is written before ``last.pt``, so a kill between the two re-creates the same
``best.pt`` on resume. Callbacks run after a boundary's checkpoints and before a pending stop request
is honoured.
"""

from __future__ import annotations

import itertools
import logging
import math
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from informer.checkpoint import model_payload, non_finite_entries, save_checkpoint
from informer.config import ModelConfig, TrainAppConfig, TrainConfig
from informer.data import DataBundle
from informer.errors import TrainingDiverged, UserError
from informer.training.distributed import (
    DistContext,
    all_reduce_sum,
    any_process,
    autocast_factory,
    broadcast_buffers,
    unwrap,
)
from informer.training.evaluate import Batch, evaluate_split, forecast, forecast_figure, plot_indices
from informer.training.registry import headline, loss_function, validation_loss
from informer.training.schedule import learning_rate, set_learning_rate
from informer.training.signals import StopRequest, TrainingInterrupted
from informer.training.state import TrainingState
from informer.training.tensorboard import RunWriter

log = logging.getLogger(__name__)


class Callback:
    """Hooks into the loop (for tests and extensions); each receives the Trainer, whose ``state`` says
    where training stands. The default methods do nothing."""

    def on_step_end(self, trainer: Trainer) -> None:
        """After an optimizer step and its periodic last.pt, if any."""

    def on_validation_batch_end(self, trainer: Trainer) -> None:
        """After each batch of the epoch's validation."""

    def on_epoch_end(self, trainer: Trainer) -> None:
        """After the epoch's best.pt / last.pt are written."""


@dataclass
class RunParts:
    """What train() assembled for the loop."""

    app: TrainAppConfig
    bundle: DataBundle
    model_cfg: ModelConfig
    model: nn.Module  # what the loop calls: possibly wrapped in DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    grad_scaler: torch.amp.GradScaler | None
    device: torch.device
    amp_dtype: torch.dtype | None
    dist: DistContext
    writer: RunWriter
    checkpoint_dir: Path
    config: dict[str, Any]  # the resolved run config stored in checkpoints


class ResumableSampler(DistributedSampler):
    """DistributedSampler (order fixed by seed + epoch) that can start part-way into an epoch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip = 0

    def set_position(self, epoch: int, skip_samples: int) -> None:
        self.set_epoch(epoch)
        self.skip = skip_samples

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)


def steps_per_epoch(tr: TrainConfig, n_windows: int, world_size: int) -> int:
    """Optimizer steps in one epoch (the same on every process: the last partial batch is dropped)."""
    per_process = -(-n_windows // world_size)  # DistributedSampler's share, padding included
    full = per_process // (tr.batch_size // world_size)
    if full == 0:
        raise UserError(f"train.batch_size={tr.batch_size} exceeds the {n_windows} training windows; use a "
                        "smaller batch size or a longer series")
    return min(full, tr.limit_train_batches or full)


class Trainer:
    """Runs epochs from ``state`` on (a fresh TrainingState, or one loaded from last.pt)."""

    def __init__(self, parts: RunParts, state: TrainingState, stop: StopRequest | None = None,
                 callbacks: Sequence[Callback] = ()) -> None:
        self.p = parts
        self.state = state
        self.stop = stop or StopRequest()
        self.callbacks = list(callbacks)
        tr = parts.app.train
        self.main = parts.dist.is_main
        self.autocast = autocast_factory(parts.device, parts.amp_dtype)
        self.loss_fn = loss_function(tr.loss, parts.model_cfg.quantiles)  # (output, truth) -> loss
        self.per_rank_batch = tr.batch_size // parts.dist.world_size
        self.sampler = ResumableSampler(parts.bundle.train, num_replicas=parts.dist.world_size,
                                        rank=parts.dist.rank, shuffle=True, seed=tr.seed, drop_last=False)
        self.loader = DataLoader(parts.bundle.train, batch_size=self.per_rank_batch, sampler=self.sampler,
                                 drop_last=True, num_workers=tr.num_workers,
                                 pin_memory=parts.device.type == "cuda", generator=state.loader_generator)
        self.steps_per_epoch = steps_per_epoch(tr, len(parts.bundle.train), parts.dist.world_size)
        self.plot_windows = plot_indices(len(parts.bundle.val), tr.plot_windows)
        # the rate of the last step taken (what an epoch records), or of the first step of a new epoch
        self.lr = self._lr(state.epoch, max(state.step_in_epoch - 1, 0))
        self.stop_agreed = False  # set by each step: some process was asked to stop

    def _lr(self, epoch: int, step: int) -> float:
        tr = self.p.app.train
        return learning_rate(tr.lradj, tr.learning_rate, epoch, step / self.steps_per_epoch, tr.epochs)

    def _callback(self, hook: str) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self)

    # ------------------------------------------------------------------ epochs
    def fit(self) -> TrainingState:
        tr, st = self.p.app.train, self.state
        while st.epoch < tr.epochs and not st.stopped_early:
            started = time.perf_counter()
            train_loss = self._train_epoch()
            broadcast_buffers(self.p.model)  # validation and checkpoints read rank 0's buffers everywhere
            val_loss, validation = self._validate()
            lr = self.lr
            improved = st.finish_epoch(train_loss, val_loss, lr, tr.patience, validation)
            st.stopped_early = any_process(st.stopped_early, self.p.device)
            if improved:
                self._check_finite("best.pt")
                if self.main:
                    save_checkpoint(self._payload(epoch=st.epoch - 1, val_loss=val_loss),
                                    self.p.checkpoint_dir / "best.pt")
            self._log_epoch(train_loss, val_loss, lr, time.perf_counter() - started, improved)
            self.save_last()
            self._callback("on_epoch_end")
            if any_process(self.stop.requested, self.p.device):
                self._interrupted(f"after epoch {st.epoch}")
        if st.stopped_early:
            log.info("early stopping: validation loss did not improve for %d epochs", tr.patience)
        return st

    def _train_epoch(self) -> float:
        st, tr = self.state, self.p.app.train
        self.sampler.set_position(st.epoch, st.step_in_epoch * self.per_rank_batch)
        st.start_epoch()
        self.p.model.train()
        remaining = self.steps_per_epoch - st.step_in_epoch
        bar = tqdm(total=self.steps_per_epoch, initial=st.step_in_epoch, leave=False, dynamic_ncols=True,
                   desc=f"epoch {st.epoch + 1}/{tr.epochs}", disable=not (self.main and sys.stderr.isatty()))
        for batch in itertools.islice(self.loader, max(remaining, 0)):
            self.lr = self._lr(st.epoch, st.step_in_epoch)
            set_learning_rate(self.p.optimizer, self.lr)
            loss = self._step(batch)
            st.record_step(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{st.epoch_train_loss():.4f}", refresh=False)
            self.p.writer.scalar("train/loss", loss, st.global_step)
            self.p.writer.scalar("lr", self.lr, st.global_step)
            if tr.checkpoint_every and st.global_step % tr.checkpoint_every == 0:
                self.save_last()
            self._callback("on_step_end")
            if self._stop_now():
                bar.close()
                if st.saved_step != st.global_step:
                    self.save_last()
                self._interrupted(f"at epoch {st.epoch + 1}, step {st.step_in_epoch} "
                                  f"(global step {st.global_step})")
        bar.close()
        return st.epoch_train_loss()

    def _step(self, batch: Batch) -> float:
        """One optimizer step; returns the loss averaged over all processes."""
        p, st = self.p, self.state
        batch = tuple(t.to(p.device, non_blocking=True) for t in batch)
        output, truth = forecast(p.model, batch, p.bundle.label_len, p.bundle.pred_len, p.bundle.c_out,
                                 self.autocast)
        loss = self.loss_fn(output, truth)
        p.optimizer.zero_grad(set_to_none=True)
        if p.grad_scaler is not None:
            p.grad_scaler.scale(loss).backward()
            p.grad_scaler.unscale_(p.optimizer)
        else:
            loss.backward()
        grads = [q.grad for q in p.model.parameters() if q.grad is not None]
        clip = p.app.train.grad_clip
        norm = (nn.utils.clip_grad_norm_(p.model.parameters(), clip) if clip
                else nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=p.device))
        # fp16 loss scaling overflows on purpose now and then: the scaler skips that step by itself
        grads_bad = ~torch.isfinite(norm) if p.grad_scaler is None else torch.zeros((), dtype=torch.bool,
                                                                                    device=p.device)
        # one collective per step: the summed loss, the number of processes that saw non-finite values
        # and the number asked to stop by a signal (so that all of them stop after the same step)
        stats = torch.stack([loss.detach().float(), ((~torch.isfinite(loss.detach())) | grads_bad).float(),
                             torch.tensor(float(self.stop.requested), device=p.device)])
        loss_sum, bad, stopping = all_reduce_sum(stats).tolist()
        if bad > 0:
            what = "loss" if not math.isfinite(loss_sum) else "gradients"
            raise TrainingDiverged(
                f"training diverged at epoch {st.epoch + 1}, step {st.step_in_epoch + 1} (global step "
                f"{st.global_step + 1}): the {what} became NaN or infinite. Likely causes: a learning rate "
                f"too high (train.learning_rate={p.app.train.learning_rate}, now {self.lr:.3g}), NaN or "
                "extreme values in the data, or fp16 overflow (try train.amp_dtype=bf16 or train.amp=false). "
                f"This step was not applied and no checkpoint was written for it; {self._last_good()}"
            )
        if p.grad_scaler is not None:
            p.grad_scaler.step(p.optimizer)
            p.grad_scaler.update()
        else:
            p.optimizer.step()
        self.stop_agreed = stopping > 0
        return loss_sum / p.dist.world_size

    def _validate(self) -> tuple[float, dict[str, float]]:
        """The epoch's validation loss (early stopping) and its {"mse", "seasonal_naive_mse", "skill"}.

        The seasonal-naive forecast is an indexing of the input windows, so scoring it every epoch costs
        next to nothing and gives the skill on exactly the windows the model was scored on."""
        p, tr = self.p, self.p.app.train
        limit = tr.limit_eval_batches * tr.eval_batch_size if tr.limit_eval_batches else None
        metrics = evaluate_split(p.model, p.bundle, "val", batch_size=tr.eval_batch_size, device=p.device,
                                 autocast=self.autocast, dist_ctx=p.dist, max_windows=limit,
                                 baselines=("naive_seasonal",), num_workers=tr.num_workers,
                                 on_batch=lambda: self._callback("on_validation_batch_end"))
        loss = validation_loss(metrics, tr.loss)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"the validation loss of epoch {self.state.epoch + 1} is {loss}: the model produces NaN or "
                "infinite forecasts; lower train.learning_rate or check the data for extreme values; "
                f"{self._last_good()}"
            )
        p.writer.scalars("val", headline(metrics), self.state.global_step)
        scaled = metrics["model"]["scaled"]
        validation = {"mse": float(scaled["mse"]),
                      "seasonal_naive_mse": float(metrics["naive_seasonal"]["scaled"]["mse"]),
                      "skill": float(scaled["skill"])}
        return loss, validation

    # ------------------------------------------------------------------ stopping
    def _stop_now(self) -> bool:
        """Stop at this step boundary? Across processes the step's collective decided it."""
        return self.stop_agreed if self.p.dist.enabled else self.stop.requested

    def _interrupted(self, position: str) -> None:
        raise TrainingInterrupted(self.stop.signum or signal.SIGTERM, str(self.p.checkpoint_dir.parent),
                                  str(self.p.checkpoint_dir / "last.pt"), position)

    def _last_good(self) -> str:
        if self.state.saved_step is None:
            return "no checkpoint of this run was written yet"
        return (f"checkpoints/last.pt keeps the last good state (global step {self.state.saved_step}); "
                "resume from it with a lower train.learning_rate")

    def _check_finite(self, name: str) -> None:
        """Refuse, on every process alike, to checkpoint weights or optimizer moments that overflowed."""
        bad = non_finite_entries({"model_state": unwrap(self.p.model).state_dict(),
                                  "optimizer": self.p.optimizer.state_dict()["state"]})
        if bad:
            st = self.state
            raise UserError(
                f"training diverged by epoch {st.epoch + 1}, global step {st.global_step}: NaN or infinite "
                f"values in {', '.join(bad[:3])}, so {name} was not written. Likely causes: a learning rate "
                f"too high (train.learning_rate={self.p.app.train.learning_rate}) or extreme values in the "
                f"data; {self._last_good()}"
            )

    # ------------------------------------------------------------------ outputs
    def _log_epoch(self, train_loss: float, val_loss: float, lr: float, seconds: float,
                   improved: bool) -> None:
        st, tr, w = self.state, self.p.app.train, self.p.writer
        # epoch-level values share the global-step axis with train/loss so that the curves overlay
        step = st.global_step
        w.scalar("train/epoch_loss", train_loss, step)
        w.scalar("val/loss", val_loss, step)
        w.scalar("epoch", st.epoch, step)
        w.scalar("time/epoch_seconds", seconds, step)
        if self.main and self.plot_windows:
            figure = forecast_figure(self.p.model, self.p.bundle, "val", self.plot_windows,
                                     device=self.p.device, autocast=self.autocast)
            if figure is not None:
                w.figure("val/forecast", figure, step)
        w.flush()
        skill = st.validation["skill"] if st.validation else math.nan
        log.info("epoch %d/%d  train_loss %.6f  val_loss %.6f  val_skill %.4f  lr %.3g  %.1fs%s", st.epoch,
                 tr.epochs, train_loss, val_loss, skill, lr, seconds, "  (best)" if improved else "")

    def _payload(self, **extra: Any) -> dict[str, Any]:
        """best.pt's and last.pt's common part; ``validation`` is the latest finished epoch's (for best.pt
        the epoch that produced its weights), absent before the first epoch ends."""
        p = self.p
        if self.state.validation is not None:
            extra["validation"] = dict(self.state.validation)
        return model_payload(unwrap(p.model), p.model_cfg, p.config, p.bundle.checkpoint_data(), **extra)

    def save_last(self) -> None:
        """Write last.pt with the full training state. Collective: every process must call it."""
        self._check_finite("last.pt")
        self.p.writer.flush()  # events up to this step reach the disk before the checkpoint naming it
        tr, st = self.p.app.train, self.state
        schedule = {"lradj": tr.lradj, "learning_rate": tr.learning_rate, "epochs": tr.epochs,
                    "steps_per_epoch": self.steps_per_epoch}
        data_order = {"seed": tr.seed, "epoch": st.epoch, "batch_size": tr.batch_size,
                      "samples_done": st.step_in_epoch * self.per_rank_batch}
        st.save(self.p.checkpoint_dir / "last.pt", model_payload=self._payload() if self.main else {},
                optimizer=self.p.optimizer, grad_scaler=self.p.grad_scaler, lr=self.lr, schedule=schedule,
                data_order=data_order)
