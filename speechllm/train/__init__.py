"""Training: the one Trainer, checkpoints, lr schedules, DDP helpers, training-curve plots."""
from speechllm.train.trainer import DEFAULTS, OPTIMIZERS, NonFiniteLossError, Trainer

__all__ = ["DEFAULTS", "OPTIMIZERS", "NonFiniteLossError", "Trainer"]
