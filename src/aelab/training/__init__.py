"""The trainer: model-agnostic, data on the device, checkpoints every epoch, hooks for callbacks."""
from .callbacks import Callback
from .trainer import Trainer, TrainingInterrupted, mean_losses

__all__ = ["Callback", "Trainer", "TrainingInterrupted", "mean_losses"]
