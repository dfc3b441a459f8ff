"""Train an Informer model: ``python scripts/train.py dataset=ETTh1 [group=option ...] [key=value ...]``.

Distributed: ``torchrun --standalone --nproc_per_node=N scripts/train.py ...`` (see configs/train.yaml).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from informer.config import register_configs
from informer.errors import report_user_errors
from informer.training import train
from informer.training.distributed import cleanup_distributed, hydra_overrides_for_rank

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    # Hydra prints a traceback for exceptions escaping this function, so user errors become
    # `error: ...` and exit code 2 here, inside it
    return report_user_errors(train)(cfg)


if __name__ == "__main__":
    register_configs()
    # torchrun: all processes agree on one run directory before Hydra creates it
    sys.argv += hydra_overrides_for_rank(sys.argv[1:], CONFIG_DIR / "train.yaml")
    try:
        main()
    finally:
        cleanup_distributed()
