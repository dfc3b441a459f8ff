"""Training application: the loop, evaluation, distributed plumbing and TensorBoard output.

``train(cfg) -> float`` is the entry point (scripts/train.py calls it under Hydra; tests call it directly
with an explicit ``output_dir``); ``evaluate_checkpoint`` scores a saved checkpoint on one split.
"""

from informer.training.checkpoint_eval import EvaluateConfig, evaluate_checkpoint, register_evaluate_config
from informer.training.distributed import is_main_process
from informer.training.evaluate import evaluate_split
from informer.training.interrupt import TrainingInterrupted
from informer.training.runner import train

__all__ = [
    "EvaluateConfig",
    "TrainingInterrupted",
    "evaluate_checkpoint",
    "evaluate_split",
    "is_main_process",
    "register_evaluate_config",
    "train",
]
