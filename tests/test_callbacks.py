"""The callback contract: a callback is any object with some of the trainer's hooks. ``on_epoch_end(epoch,
metrics)`` sees every epoch's row as metrics.jsonl holds it (already written), and returning True from it
stops training after that epoch, the run then written as finished; the trainer's own habits (checkpoints, the
log line, early stopping, the schedule, TensorBoard) are callbacks on the same list."""
from __future__ import annotations

import json
import math

import pytest
import torch

import aelab
from aelab.config import RunConfig
from aelab.io import load_checkpoint
from aelab.training.callbacks import Callback
from aelab.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny trainings: see conftest.one_thread


def tiny():
    torch.manual_seed(0)
    return aelab.build_model("dense", latent_dim=2, hidden_dims=[8])


def rows_of(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


class Recorder:
    """Records every hook call; reads metrics.jsonl when an epoch ends; asks to stop after epoch ``stop_at``."""

    def __init__(self, run_dir, stop_at=None):
        self.run_dir, self.stop_at = run_dir, stop_at
        self.calls, self.rows, self.on_disk, self.trainer = [], [], [], None

    def on_train_start(self, trainer):
        self.calls.append("start")
        self.trainer = trainer

    def on_epoch_end(self, epoch, metrics):
        self.calls.append(epoch)
        self.rows.append(metrics)
        self.on_disk.append(rows_of(self.run_dir)[-1])  # the row is written before the callbacks see it
        return epoch == self.stop_at

    def on_train_end(self, trainer):
        self.calls.append("end")


def test_on_epoch_end_sees_every_row_of_metrics_jsonl(small_mnist, tmp_path):
    rec = Recorder(tmp_path / "r")
    run = aelab.train(tiny(), small_mnist, out=tmp_path / "r", epochs=3, batch_size=100, callbacks=[rec],
                      progress=False, log=None, report=False)
    assert rec.calls == ["start", 1, 2, 3, "end"]
    assert rec.rows == rows_of(run.path) == rec.on_disk == run.history
    assert [r["epoch"] for r in rec.rows] == [1, 2, 3] and "test_loss" in rec.rows[0]


def test_returning_true_stops_after_that_epoch_and_the_run_is_finished(small_mnist, tmp_path):
    rec = Recorder(tmp_path / "r", stop_at=2)
    run = aelab.train(tiny(), small_mnist, out=tmp_path / "r", epochs=5, batch_size=100, callbacks=[rec],
                      progress=False, log=None, report=False)
    assert rec.calls == ["start", 1, 2, "end"]
    assert [r["epoch"] for r in rows_of(run.path)] == [1, 2] and len(run.history) == 2
    trainer = rec.trainer
    assert trainer.stopped_early and "Recorder" in trainer.stop_reason and "epoch 2" in trainer.stop_reason
    # written as finished: model.pt holds the weights of the last epoch run (epoch 2's, as last.pt)
    saved = aelab.load_model(run.path / "model.pt").state_dict()
    last = load_checkpoint(run.path / "checkpoints" / "last.pt")
    assert last["epoch"] == 2
    assert all(torch.equal(saved[k], last["model"][k].cpu()) for k in saved)


def test_every_callback_hears_the_epoch_even_after_one_asked_to_stop(small_mnist, tmp_path):
    cfg = RunConfig(epochs=4, batch_size=100).validate()
    first, second = Recorder(tmp_path / "r", stop_at=1), Recorder(tmp_path / "r")
    trainer = Trainer(tiny(), small_mnist, cfg, tmp_path / "r", progress=False, log=None, callbacks=[first, second])
    trainer.fit()
    assert first.calls == second.calls == ["start", 1, "end"]
    assert trainer.stop_reason.startswith("Recorder") and trainer.epoch == 1


def test_a_run_that_says_it_is_finished_at_the_start_trains_no_epoch(small_mnist, tmp_path):
    class Done:
        def on_train_start(self, trainer):
            return True

    cfg = RunConfig(epochs=3, batch_size=100).validate()
    trainer = Trainer(tiny(), small_mnist, cfg, tmp_path / "r", progress=False, log=None, callbacks=[Done()])
    assert trainer.fit() == [] and trainer.stopped_early and trainer.epoch == 0


def test_on_step_start_sees_the_position_of_every_step(small_mnist, tmp_path):
    class Positions(Callback):  # subclassing Callback is optional; its other hooks do nothing
        def __init__(self):
            self.seen = []

        def on_step_start(self, epochs_done):
            self.seen.append(epochs_done)

    cfg = RunConfig(epochs=2, batch_size=250).validate()
    steps = math.ceil(len(small_mnist.x_train) / 250)
    pos = Positions()
    Trainer(tiny(), small_mnist, cfg, tmp_path / "r", progress=False, log=None, callbacks=[pos]).fit()
    assert pos.seen == [e + i / steps for e in range(2) for i in range(steps)]


def test_the_trainers_habits_are_callbacks_on_the_same_list(small_mnist, tmp_path):
    user = Recorder(tmp_path / "r")
    plain = Trainer(tiny(), small_mnist, RunConfig(epochs=1).validate(), tmp_path / "a", progress=False, log=None,
                    callbacks=[user])
    assert [type(c).__name__ for c in plain.callbacks] == ["Checkpoints", "EpochLog", "Recorder"]
    cfg = RunConfig(epochs=2, patience=1, lr_schedule="cosine").validate()
    full = Trainer(tiny(), small_mnist, cfg, tmp_path / "b", progress=False, log=None, callbacks=[user])
    assert [type(c).__name__ for c in full.callbacks] == ["Checkpoints", "EpochLog", "EarlyStopping", "LRSchedule",
                                                           "Recorder"]


def test_tensorboard_comes_from_the_config_once(small_mnist, tmp_path):
    pytest.importorskip("torch.utils.tensorboard", reason="the tensorboard extra is not installed")
    from aelab.training.tensorboard import TensorBoardLogger

    cfg = RunConfig(epochs=1, tensorboard=True).validate()
    built = Trainer(tiny(), small_mnist, cfg, tmp_path / "a", progress=False, log=None)
    assert sum(isinstance(c, TensorBoardLogger) for c in built.callbacks) == 1
    own = TensorBoardLogger(tmp_path / "b" / "tensorboard", small_mnist)  # a caller who builds their own
    given = Trainer(tiny(), small_mnist, cfg, tmp_path / "b", progress=False, log=None, callbacks=[own])
    assert [c for c in given.callbacks if isinstance(c, TensorBoardLogger)] == [own]
    for logger in (built.callbacks[-1], own):
        logger.writer.close()
