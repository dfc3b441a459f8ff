"""Shared tiny-run settings for the training, evaluation, TensorBoard and distributed tests.

One tiny model is trained once per test session (``tiny_run``) and reused by every test that only reads
its outputs, which keeps the suite fast on a 2-core machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from informer.config import TrainAppConfig
from informer.training import Callback

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "scripts" / "train.py"
EVALUATE_SCRIPT = REPO / "scripts" / "evaluate.py"
# scripts/train.py with a KillAt callback: python KILL_AT_SCRIPT <point>:<n>[:<SIGNAL>] <train.py arguments>
KILL_AT_SCRIPT = REPO / "tests" / "kill_at.py"

# a model small enough to train a few batches in about a second on one CPU thread
TINY_MODEL = {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 1, "d_layers": 1, "seq_len": 24,
              "label_len": 12, "pred_len": 6}
TINY_TRAIN = {"epochs": 2, "batch_size": 8, "eval_batch_size": 256, "limit_train_batches": 3,
              "limit_eval_batches": 2, "threads": 1, "plot_windows": 2, "checkpoint_every": 2}


def tiny_overrides(data_dir: Path, **extra: Any) -> list[str]:
    """Hydra command-line overrides for the tiny run (extra: ``{"train.epochs": 1}``-style)."""
    values: dict[str, Any] = {"paths.data_dir": str(data_dir)}
    values.update({f"model.{k}": v for k, v in TINY_MODEL.items()})
    values.update({f"train.{k}": v for k, v in TINY_TRAIN.items()})
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def tiny_config(data_dir: Path, **extra: Any) -> DictConfig:
    """The tiny run as a config object for in-process ``train(cfg, output_dir=...)`` calls."""
    cfg = OmegaConf.structured(TrainAppConfig)
    cfg.paths.data_dir = str(data_dir)
    cfg.model.update(TINY_MODEL)
    cfg.train.update(TINY_TRAIN)
    for key, value in extra.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def run_script(script: Path, args: list[str], cwd: Path, timeout: float = 240,
               launcher: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    command = [*(launcher or [sys.executable]), str(script), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


class KillAt(Callback):
    """Send this process a signal at one point of the loop, to interrupt a run at a deterministic place.

    ``spec`` is ``<point>:<n>[:<SIGNAL>]`` (default signal KILL):

        step:<n>         just after global optimizer step n (1-based) and its periodic checkpoint, if any
        validation:<n>   during epoch n's validation, after its first batch
        epoch_end:<n>    after epoch n's checkpoints are written
    """

    def __init__(self, spec: str) -> None:
        point, n, *name = spec.split(":")
        self.point, self.n = point, int(n)
        self.signal = signal.Signals[f"SIG{(name or ['KILL'])[0].upper()}"]
        assert point in ("step", "validation", "epoch_end"), spec

    def _fire(self, point: str, n: int) -> None:
        if (point, n) == (self.point, self.n):
            self.point = ""  # once
            os.kill(os.getpid(), self.signal)

    def on_step_end(self, trainer: Any) -> None:
        self._fire("step", trainer.state.global_step)

    def on_validation_batch_end(self, trainer: Any) -> None:
        self._fire("validation", trainer.state.epoch + 1)

    def on_epoch_end(self, trainer: Any) -> None:
        self._fire("epoch_end", trainer.state.epoch)


_TINY_RUN: dict[str, Any] = {}


def tiny_run(data_dir: Path, root: Path) -> tuple[Path, float]:
    """Train the tiny model once (in-process) and return (run directory, best validation loss)."""
    if "dir" not in _TINY_RUN:
        from informer.training import train

        out = root / "tiny_run"
        _TINY_RUN["loss"] = train(tiny_config(data_dir), output_dir=out)
        _TINY_RUN["dir"] = out
    return _TINY_RUN["dir"], _TINY_RUN["loss"]
