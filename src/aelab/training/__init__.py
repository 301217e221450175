"""The trainer (model-agnostic) and safe, atomic checkpoints."""
from .checkpoint import atomic_torch_save, atomic_write_bytes, atomic_write_text, load_checkpoint
from .trainer import CHECKPOINT, Trainer, TrainingInterrupted, mean_losses, resolve_device

__all__ = ["CHECKPOINT", "Trainer", "TrainingInterrupted", "atomic_torch_save", "atomic_write_bytes",
           "atomic_write_text", "load_checkpoint", "mean_losses", "resolve_device"]
