"""The body of ``python scripts/train.py ...``: :func:`~informer.training.run.train` under Hydra, with the
command line's exit codes and messages.

Exit status: 0 when training finished; 2 for bad input (``error: ...``, no traceback; the run directory
Hydra made for the refused command is removed again while it is empty); 130 (SIGINT) or 143 (SIGTERM)
when a signal stopped the run after saving ``checkpoints/last.pt``, with the command that resumes it. In
a multirun (``-m``) a job whose training diverges (NaN or infinite loss) logs the error and scores +inf,
so one bad learning rate does not end a sweep or a search.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
import shutil
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from informer.errors import TrainingDiverged, UserError, report_user_errors
from informer.training.distributed import cleanup_distributed, is_main_process
from informer.training.run import train
from informer.training.signals import TrainingInterrupted

log = logging.getLogger(__name__)


@report_user_errors
def train_command(cfg: DictConfig) -> float:
    """Hydra's task function for configs/train.yaml; returns the best validation loss (for sweepers)."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return train(cfg)
    except TrainingDiverged:  # a UserError, handled first
        if not multirun:
            raise
        log.error("This job of the sweep scores +inf (the reason is in its train.log); the other jobs go on.")
        return math.inf
    except UserError:
        if not multirun and is_main_process():
            with contextlib.suppress(OSError):  # only an empty directory goes: nothing was written to it
                Path(hydra_cfg.runtime.output_dir).rmdir()
        raise
    except TrainingInterrupted as exc:
        if is_main_process():
            print(f"{exc}\nThe run is incomplete; continue it where it stopped with:\n"
                  f"  {resume_command(exc.run_dir, sys.argv[0], list(hydra_cfg.overrides.task))}",
                  file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    finally:
        cleanup_distributed()


def resume_command(run_dir: str, script: str, task_overrides: list[str]) -> str:
    """The command line that continues an interrupted run: the same overrides plus train.resume."""
    keep = [o for o in task_overrides if o.partition("=")[0].lstrip("+~") != "train.resume"]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = [f"torchrun --standalone --nproc_per_node={world}"] if world > 1 else [_python()]
    return " ".join([*launcher, shlex.quote(script), *map(shlex.quote, keep),
                     shlex.quote(f"train.resume={_override_value(run_dir)}")])


def _python() -> str:
    """``python`` when that is the interpreter on PATH, else the interpreter's full path."""
    on_path = shutil.which("python")
    if on_path and Path(on_path).resolve() == Path(sys.executable).resolve():
        return "python"
    return sys.executable


def _override_value(text: str) -> str:
    """A Hydra override value: bare when Hydra's grammar allows it, else single-quoted."""
    if text and all(c.isalnum() or c in "_/.:~+-" for c in text):
        return text
    return "'" + text.replace("'", "\\'") + "'"
