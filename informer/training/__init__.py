"""Training application: the loop, evaluation, distributed plumbing and TensorBoard output.

``train(cfg) -> float`` is the entry point (scripts/train.py calls it under Hydra through
``command.train_command``; tests call it directly with an explicit ``output_dir``);
``evaluate_checkpoint`` scores a saved checkpoint on one split (and calibrates its intervals).
"""

from informer.training.checkpoint_eval import evaluate_checkpoint
from informer.training.distributed import is_main_process
from informer.training.evaluate import evaluate_split
from informer.training.loop import Callback
from informer.training.run import train
from informer.training.signals import TrainingInterrupted

__all__ = [
    "Callback",
    "TrainingInterrupted",
    "evaluate_checkpoint",
    "evaluate_split",
    "is_main_process",
    "train",
]
