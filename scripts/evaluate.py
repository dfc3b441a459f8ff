"""Evaluate a checkpoint on every window of a split, with the naive baselines:
``python scripts/evaluate.py checkpoint=outputs/ETTh1/<run>/checkpoints/best.pt [split=test] [data_dir=...]``.

Prints the metrics as JSON (and writes them to ``output=<file.json>`` when given).
"""

from __future__ import annotations

import json
from typing import Any

import hydra
from omegaconf import DictConfig

from informer.config import register_configs, resolve_path
from informer.errors import report_user_errors
from informer.training.evaluate import evaluate_checkpoint, json_safe, write_json

register_configs()


@report_user_errors
def run(cfg: DictConfig) -> dict[str, Any]:
    metrics = evaluate_checkpoint(cfg.checkpoint, split=cfg.split, data_dir=cfg.data_dir,
                                  batch_size=cfg.batch_size, device=cfg.device)
    if cfg.output:
        write_json(resolve_path(cfg.output), metrics)
    print(json.dumps(json_safe(metrics), indent=2))
    return metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    # Hydra prints a traceback for exceptions escaping this function, so `run` turns user errors
    # into `error: ...` and exit code 2 inside it
    run(cfg)


if __name__ == "__main__":
    main()
