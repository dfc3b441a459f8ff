"""Train an Informer model: ``python scripts/train.py dataset=ETTh1 [group=option ...] [key=value ...]``.

Distributed: ``torchrun --standalone --nproc_per_node=N scripts/train.py ...``. Continue a stopped run:
``python scripts/train.py <same overrides> train.resume=<run dir>``. Sweeps: ``-m``. Exit codes and
messages: informer/training/command.py.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from informer.config import register_configs
from informer.training.command import train_command

register_configs()  # the schemas and the run-directory resolver configs/train.yaml uses


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    return train_command(cfg)


if __name__ == "__main__":
    main()
