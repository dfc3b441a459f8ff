"""Epoch time: train + validate (this package) against loops that also score the test split every epoch.

Components, all on ETTh1 at the default config with ProbSparse attention, measured in this run:

* ``train``: optimizer steps over the shuffled training split (batch 32, last partial batch dropped, as
  informer.training's loop); ``epoch_train_batches`` steps are timed and the epoch is extrapolated to
  its full step count when that is smaller than the epoch;
* ``val`` / ``test``: ``informer.training.evaluate_split`` (eval mode, inference_mode, batch 64, every
  window, float64 metric sums), i.e. what the training loop runs after each epoch;
* ``val_grad`` / ``test_grad``: the official code's evaluation habits, eval mode but autograd on, batch
  32 with the last partial batch dropped, a loss per batch.

Ratios: ``test_every_epoch`` = (train + val + test) / (train + val), the cost of scoring the test split
each epoch with the same evaluation code; ``official_style`` = (train + val_grad + test_grad) /
(train + val), the same training steps under the official evaluation habits; ``official_estimate``
= (steps x official step + val_grad + test_grad) / (train + val), with the official code's median
training step timed in this run (:mod:`benchmarks.official`) standing in for its training steps; not
measured when that step is not available.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from torch import nn

from benchmarks.common import Scale, load_bundle
from benchmarks.official import OfficialStep, available
from benchmarks.train_step import StepRunner
from informer.data import make_decoder_input


def _official_style_eval(model: nn.Module, dataset: Any, cfg: Any, max_windows: int | None) -> dict[str, Any]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=False, drop_last=True)
    total = len(loader)
    limit = total if max_windows is None else max(1, min(total, max_windows // 32))
    model.eval()
    criterion = nn.MSELoss()
    start = time.perf_counter()
    done = 0
    for x_enc, x_mark, y, y_mark in loader:
        if done == limit:
            break
        pred = model(x_enc, x_mark, make_decoder_input(y, cfg.label_len, cfg.pred_len), y_mark)
        criterion(pred, y[:, -cfg.pred_len:, -cfg.c_out:]).item()
        done += 1
    elapsed = time.perf_counter() - start
    model.train()
    return {"seconds": elapsed * total / done, "measured_batches": done, "batches": total}


def _our_eval(model: nn.Module, bundle: Any, split: str, max_windows: int | None) -> dict[str, Any]:
    # here, not at the top: a broken training package then fails this section alone, not the suite
    from informer.training import evaluate_split

    n_all = len(bundle.split(split))
    n = n_all if max_windows is None else min(n_all, max_windows)
    start = time.perf_counter()
    evaluate_split(model, bundle, split, batch_size=64, device=torch.device("cpu"),
                   autocast=contextlib.nullcontext, max_windows=n, baselines=False)
    elapsed = time.perf_counter() - start
    model.train()
    return {"seconds": elapsed * n_all / n, "measured_windows": n, "windows": n_all}


def run(scale: Scale, official: OfficialStep, log: Any = print) -> dict[str, Any]:
    cfg = scale.model_config("prob")
    bundle = load_bundle(cfg)
    if bundle is None:
        return {"skipped": "needs ETTh1.csv (set INFORMER_DATA_DIR)"}
    loader = torch.utils.data.DataLoader(bundle.train, batch_size=scale.batch, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    steps_per_epoch = len(loader)
    limit = steps_per_epoch if scale.epoch_train_batches is None else min(steps_per_epoch,
                                                                          scale.epoch_train_batches)
    runner = StepRunner(cfg, [])
    batches = iter(loader)
    runner.step(next(batches))  # warm-up, not counted
    start = time.perf_counter()
    for _ in range(limit):
        runner.step(next(batches))
    train_measured = time.perf_counter() - start
    train = {"seconds": train_measured * steps_per_epoch / limit, "measured_steps": limit,
             "steps_per_epoch": steps_per_epoch}
    log(f"  epoch: train {train['seconds']:.1f} s ({limit} of {steps_per_epoch} steps timed)")
    parts = {"train": train}
    for split in ("val", "test"):
        parts[split] = _our_eval(runner.model, bundle, split, scale.epoch_eval_windows)
        parts[f"{split}_grad"] = _official_style_eval(runner.model, bundle.split(split), cfg,
                                                      scale.epoch_eval_windows)
        log(f"  epoch: {split} {parts[split]['seconds']:.1f} s, official-style "
            f"{parts[f'{split}_grad']['seconds']:.1f} s")
    sec = {name: part["seconds"] for name, part in parts.items()}
    ours = sec["train"] + sec["val"]
    epoch_seconds = {"ours": ours, "test_every_epoch": ours + sec["test"],
                     "official_style": sec["train"] + sec["val_grad"] + sec["test_grad"]}
    official_step = official.measure(log)
    if available(official_step):
        # the official loop as a whole: its training steps timed in this run, its evaluation habits
        epoch_seconds["official_estimate"] = (steps_per_epoch * official_step["median_s"]
                                              + sec["val_grad"] + sec["test_grad"])
    return {
        "config": {"attn": "prob", "batch": scale.batch, "eval_batch": 64, "official_eval_batch": 32},
        "method": __doc__.split("\n\n", 1)[1].strip(),
        "parts": parts,
        "official_step": official_step,
        "epoch_seconds": epoch_seconds,
        "ratios": {name: seconds / ours for name, seconds in epoch_seconds.items() if name != "ours"},
    }
