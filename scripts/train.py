"""Train an Informer model: ``python scripts/train.py dataset=ETTh1 [group=option ...] [key=value ...]``.

Distributed: ``torchrun --standalone --nproc_per_node=N scripts/train.py ...`` (see configs/train.yaml).
Continue a stopped run: ``python scripts/train.py <same overrides> train.resume=<run dir>``.

Exit status: 0 when training finished; 2 for bad input (``error: ...``, no traceback); 130 (SIGINT) or
143 (SIGTERM) when a signal stopped the run after saving ``checkpoints/last.pt`` (the message prints the
command that resumes it). In a multirun (``-m``) a job whose training diverges (NaN or infinite loss)
logs the error and scores +inf, so one bad learning rate does not end a sweep or a search.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from informer.config import register_configs
from informer.errors import TrainingDiverged, UserError, report_user_errors
from informer.training import train
from informer.training.cli import (
    discard_run_dir,
    extra_overrides,
    fresh_run_dir,
    hydra_record_writer,
    interrupted_message,
)
from informer.training.distributed import cleanup_distributed, hydra_overrides_for_rank, is_main_process
from informer.training.interrupt import TrainingInterrupted

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
RECORD_DEFERRED = False  # set below: the run writes .hydra/ itself once its inputs are accepted
log = logging.getLogger("informer.train")


@report_user_errors
def run(cfg: DictConfig) -> float:
    fresh = fresh_run_dir()
    try:
        return train(cfg, before_training=hydra_record_writer(cfg, RECORD_DEFERRED))
    except TrainingDiverged as exc:  # a UserError, handled first
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # the sweep goes on: the job's log keeps the reason, the sweeper sees the worst possible score
        log.error("error: %s\nThis job of the sweep scores +inf; the other jobs go on.", exc)
        return math.inf
    except UserError:
        if fresh is not None:
            discard_run_dir(fresh)  # a refused command leaves no empty run folder behind
        raise
    except TrainingInterrupted as exc:
        if is_main_process():
            print(interrupted_message(exc, sys.argv[0]), file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    # Hydra prints a traceback for exceptions escaping this function, so user errors become
    # `error: ...` and exit code 2 here, inside it
    return run(cfg)


if __name__ == "__main__":
    register_configs()
    user_args = sys.argv[1:]
    extra, RECORD_DEFERRED = extra_overrides(user_args)
    # torchrun: all processes agree on one run directory before Hydra creates it
    extra += hydra_overrides_for_rank(user_args + extra, CONFIG_DIR / "train.yaml")
    # argparse wants the overrides in one run: put ours just before the user's first override so that
    # flags on either side (`-m ...`, `... --cfg job`) still parse
    first = next((i for i, arg in enumerate(user_args) if "=" in arg and not arg.startswith("-")),
                 len(user_args))
    sys.argv = [sys.argv[0], *user_args[:first], *extra, *user_args[first:]]
    try:
        main()
    finally:
        cleanup_distributed()
