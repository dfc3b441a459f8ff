"""Evaluate a checkpoint on every window of a split, with the naive baselines:
``python scripts/evaluate.py checkpoint=outputs/ETTh1/<run>/checkpoints/best.pt [split=test] [data_dir=...]``.

Prints the metrics as JSON (and writes them to ``output=<file.json>`` when given). ``calibrate=true``
first fits the conformal prediction intervals on the validation split and stores them in the checkpoint
(in place; ``intervals=[0.8,0.95]`` picks the levels, default the run's ``forecast.intervals``;
``interval_method=normalized|split`` a point model's method, default the run's
``forecast.interval_method``): the way to add intervals to a checkpoint written before they existed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from informer.config import register_configs, resolve_path
from informer.errors import report_user_errors
from informer.training.checkpoint_eval import evaluate_checkpoint
from informer.training.evaluate import json_safe, write_json

register_configs()


@report_user_errors
def run(cfg: DictConfig) -> dict[str, Any]:
    intervals = None if cfg.intervals is None else list(OmegaConf.to_container(cfg.intervals))
    metrics = evaluate_checkpoint(cfg.checkpoint, split=cfg.split, data_dir=cfg.data_dir,
                                  batch_size=cfg.batch_size, device=cfg.device, calibrate=cfg.calibrate,
                                  intervals=intervals, interval_method=cfg.interval_method)
    if cfg.output:
        write_json(resolve_path(cfg.output), metrics)
    print(json.dumps(json_safe(metrics), indent=2))
    if cfg.calibrate:
        print(f"calibrated {metrics['checkpoint']}: intervals at levels {metrics['calibration']['levels']} "
              "stored in the checkpoint", file=sys.stderr)
    elif "calibration_note" in metrics:
        print(f"note: {metrics['calibration_note']}", file=sys.stderr)
    return metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    # Hydra prints a traceback for exceptions escaping this function, so `run` turns user errors
    # into `error: ...` and exit code 2 inside it
    run(cfg)


if __name__ == "__main__":
    main()
