"""The trainer's hooks, and the built-in callbacks that use them: checkpoints, the epoch's log line, early
stopping and the learning-rate schedule (TensorBoard's is in :mod:`aelab.training.tensorboard`).

A callback is any object with some of these methods (all optional; :class:`Callback` documents them):

- ``on_train_start(trainer)``: before the first step of :meth:`Trainer.fit`; returning True means the run is
  already finished (a resumed run that had stopped early) and no epoch runs.
- ``on_step_start(epochs_done)``: before every training step, ``epochs_done`` the fractional position in the
  run (called only on callbacks that define it; keep it free of device work: it runs every step).
- ``on_epoch_end(epoch, metrics)``: after every epoch, with the row just written to ``metrics.jsonl`` (a dict);
  returning True stops training after this epoch, and the run is finished as by early stopping.
- ``on_train_end(trainer)``: when :meth:`Trainer.fit` returns (not when a signal or an error ends it).

The trainer calls the callbacks in list order: its built-in ones first (checkpoints, the log line, early
stopping, the schedule, TensorBoard, as ``cfg`` asks), then the caller's. Under ``torchrun`` every rank calls
them with the same metrics; a callback that stops the run must decide the same on every rank.
"""
from __future__ import annotations

import math

from ..config import RunConfig


class Callback:
    """The hooks a callback may have; subclassing is optional (the trainer looks each method up by name)."""

    def on_train_start(self, trainer) -> bool | None:
        """Before the first step; return True when the run is already finished."""

    def on_step_start(self, epochs_done: float) -> None:
        """Before every training step, at position ``epochs_done`` (fractional epochs) in the run."""

    def on_epoch_end(self, epoch: int, metrics: dict) -> bool | None:
        """After every epoch with its row of ``metrics.jsonl``; return True to stop after this epoch."""

    def on_train_end(self, trainer) -> None:
        """When training ends (the last epoch, or a stop)."""


# ------------------------------------------------------------------------------------------- schedules
ONECYCLE_WARMUP, ONECYCLE_START, ONECYCLE_END = 0.3, 25.0, 1e4  # torch's OneCycleLR defaults


def _cosine(start: float, end: float, progress: float) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def scheduled_lr(cfg: RunConfig, epochs_done: float) -> float:
    """The learning rate after ``epochs_done`` (fractional) epochs: ``cfg.lr`` throughout ("constant");
    half a cosine from ``cfg.lr`` to 0 over ``cfg.epochs`` ("cosine"; Loshchilov & Hutter 2017, without
    restarts); or one cycle ("onecycle"; Smith & Topin 2019, as torch's OneCycleLR: a cosine up from lr/25
    to lr over the first 30% of the run, then down to lr/25/1e4). ``cfg.warmup_epochs`` ramps the constant and
    cosine schedules up linearly from 0. A function of the position alone, so a resumed run follows the same
    curve."""
    progress = epochs_done / cfg.epochs
    if cfg.lr_schedule == "onecycle":
        low = cfg.lr / ONECYCLE_START
        if progress < ONECYCLE_WARMUP:
            return _cosine(low, cfg.lr, progress / ONECYCLE_WARMUP)
        return _cosine(cfg.lr, low / ONECYCLE_END, (progress - ONECYCLE_WARMUP) / (1 - ONECYCLE_WARMUP))
    lr = _cosine(cfg.lr, 0.0, progress) if cfg.lr_schedule == "cosine" else cfg.lr
    if cfg.warmup_epochs and epochs_done < cfg.warmup_epochs:
        lr *= epochs_done / cfg.warmup_epochs
    return lr


def is_scheduled(cfg: RunConfig) -> bool:
    """Whether the learning rate moves during the run (a schedule other than constant, or a warm-up)."""
    return cfg.lr_schedule != "constant" or cfg.warmup_epochs > 0


class LRSchedule(Callback):
    """Sets every parameter group's learning rate to :func:`scheduled_lr` before each step (a Python float:
    no device work)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.optimizer = None

    def on_train_start(self, trainer) -> None:
        self.optimizer = trainer.optimizer

    def on_step_start(self, epochs_done: float) -> None:
        lr = scheduled_lr(self.cfg, epochs_done)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


# ------------------------------------------------------------------------------------------- early stopping
def best_epoch(history: list[dict]) -> int | None:
    """The epoch with the lowest validation loss (the first of equals), None without a validation split."""
    scored = [r for r in history if "val_loss" in r]
    return min(scored, key=lambda r: r["val_loss"])["epoch"] if scored else None


def stops_early(history: list[dict], patience: int | None) -> bool:
    """True once ``patience`` epochs have passed without a lower validation loss than the best one's."""
    best = best_epoch(history)
    return patience is not None and best is not None and history[-1]["epoch"] - best >= patience


class EarlyStopping(Callback):
    """Stops once ``patience`` epochs pass without a lower validation loss; at the end of a run that stopped
    or went all its epochs, the model takes the best epoch's weights (from ``best.pt``)."""

    def __init__(self, patience: int, log=None):
        self.patience = patience
        self.log = log or (lambda *a, **k: None)
        self.trainer = None

    def on_train_start(self, trainer) -> bool:
        self.trainer = trainer
        return bool(trainer.history) and stops_early(trainer.history, self.patience)  # a stopped run stays so

    def on_epoch_end(self, epoch: int, metrics: dict) -> bool:
        if not stops_early(self.trainer.history, self.patience):
            return False
        self.log(f"early stopping after epoch {epoch}: the validation loss has not improved for {self.patience} "
                 f"epochs; model.pt keeps epoch {best_epoch(self.trainer.history)}'s weights")
        return True

    def on_train_end(self, trainer) -> None:
        if trainer.stopped_early or trainer.epoch >= trainer.cfg.epochs:
            trainer.restore_best()


# ------------------------------------------------------------------------------------------- files and log
class Checkpoints(Callback):
    """After every epoch: ``best.pt`` when the epoch has the lowest validation loss so far (written before
    ``last.pt``, so a resumed run never lacks it), ``last.pt`` (the trainer's whole state) and
    ``metrics.jsonl``. Only rank 0 writes (the trainer's save methods check)."""

    def __init__(self):
        self.trainer = None

    def on_train_start(self, trainer) -> None:
        self.trainer = trainer

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        trainer = self.trainer
        if best_epoch(trainer.history) == epoch:
            trainer.save_best()
        trainer.save_checkpoint()
        trainer.write_metrics()


def format_record(rec: dict, epochs: int) -> str:
    """An epoch's row as one log line."""
    val = f"  val {rec['val_loss']:.5g}" if "val_loss" in rec else ""
    return (f"epoch {rec['epoch']:>3}/{epochs}  train {rec['train_loss']:.5g}{val}  test {rec['test_loss']:.5g}  "
            f"{rec['seconds']:.2f} s  {rec['samples_per_second']:,.0f} samples/s")


class EpochLog(Callback):
    """One line per epoch to ``log`` (after the epoch's files are written)."""

    def __init__(self, log, epochs: int):
        self.log, self.epochs = log, epochs

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        self.log(format_record(metrics, self.epochs))


__all__ = ["Callback", "Checkpoints", "EarlyStopping", "EpochLog", "LRSchedule", "best_epoch", "format_record",
           "is_scheduled", "scheduled_lr", "stops_early"]
