"""The trainer: model-agnostic, data on the device, checkpoints every epoch."""
from .trainer import Trainer, TrainingInterrupted, mean_losses

__all__ = ["Trainer", "TrainingInterrupted", "mean_losses"]
