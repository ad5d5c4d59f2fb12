"""The training loop and what it needs around it (data, checkpoints, callbacks)."""
from plugformer.training.trainer import Trainer, run_training

__all__ = ["Trainer", "run_training"]
