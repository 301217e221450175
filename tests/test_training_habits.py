"""The field's training habits: early stopping on a validation split, one-cycle and warm-up schedules,
TensorBoard logs."""
import json
import math
import subprocess
import sys

import pytest
import torch

import aelab
from aelab.config import RunConfig
from aelab.errors import AelabError
from aelab.training.trainer import Trainer, best_epoch, scheduled_lr, stops_early


def tiny():
    torch.manual_seed(0)
    return aelab.build_model("dense", latent_dim=2, hidden_dims=[8])


# ------------------------------------------------------------------------------------------- schedules
def test_onecycle_follows_torchs_onecycle_lr():
    """Our function of the position follows torch's OneCycleLR (its default shape: cosine up over 30%, then down)
    step by step, within 1% of the peak: torch counts its phases in whole steps ending one step early, so the
    two cannot agree exactly; the start, the peak and the end are exact."""
    epochs, steps = 4, 250
    cfg = RunConfig(epochs=epochs, lr=0.01, lr_schedule="onecycle").validate()
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=epochs * steps + 1)
    for i in range(epochs * steps):
        assert scheduled_lr(cfg, i / steps) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-4), i
        opt.step()
        ref.step()
    assert scheduled_lr(cfg, 0) == pytest.approx(0.01 / 25)
    assert scheduled_lr(cfg, 0.3 * epochs) == pytest.approx(0.01)
    assert scheduled_lr(cfg, epochs) == pytest.approx(0.01 / 25 / 1e4)


def test_warmup_ramps_linearly_then_follows_the_schedule():
    cfg = RunConfig(epochs=10, lr=0.02, warmup_epochs=2).validate()
    assert scheduled_lr(cfg, 0) == 0 and scheduled_lr(cfg, 1) == pytest.approx(0.01)
    assert scheduled_lr(cfg, 2) == scheduled_lr(cfg, 7) == 0.02
    cos = RunConfig(epochs=10, lr=0.02, warmup_epochs=2, lr_schedule="cosine").validate()
    assert scheduled_lr(cos, 1) == pytest.approx(0.5 * 0.02 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert scheduled_lr(cos, 5) == pytest.approx(0.01)


def test_a_warmed_up_run_applies_its_schedule_to_the_optimizer(small_mnist, tmp_path):
    cfg = RunConfig(epochs=2, batch_size=64, lr=0.01, lr_schedule="onecycle").validate()
    trainer = Trainer(tiny(), small_mnist, cfg, tmp_path / "r", progress=False, log=None)
    trainer.fit()
    steps = math.ceil(len(small_mnist.x_train) / 64)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(scheduled_lr(cfg, 1 + (steps - 1) / steps))


@pytest.mark.parametrize("settings, words", [
    ({"patience": 3, "val_fraction": 0.0}, "--val-fraction"),
    ({"patience": 0}, "patience must be at least 1"),
    ({"val_fraction": 1.0}, "val_fraction must lie in [0, 1)"),
    ({"lr_schedule": "onecycle", "warmup_epochs": 1}, "onecycle warms up by itself"),
    ({"lr_schedule": "step"}, "constant, cosine, onecycle"),
    ({"warmup_epochs": -1}, "warmup_epochs must be >= 0"),
])
def test_bad_habit_settings_get_one_line_errors(settings, words):
    with pytest.raises(AelabError, match=None) as err:
        RunConfig(**settings).validate()
    assert words in str(err.value) and "\n" not in str(err.value)


def test_cli_rejects_patience_without_validation_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "aelab", "train", "--patience", "2", "--val-fraction", "0",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--val-fraction" in proc.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------- validation
def test_validation_rows_come_from_the_training_set_only(small_mnist):
    kept, val = small_mnist.split_validation(0.25, seed=3)
    n = len(small_mnist.x_train)
    assert len(kept.x_train) + len(val["image"]) == n and len(val["image"]) == round(0.25 * n)
    assert kept.x_test is small_mnist.x_test  # the test set is untouched
    rows = {bytes(r.numpy()) for r in small_mnist.x_train}
    kept_rows = {bytes(r.numpy()) for r in kept.x_train}
    val_rows = [bytes(r.numpy()) for r in val["image"]]
    assert all(r in rows for r in val_rows) and not kept_rows & set(val_rows)
    again = small_mnist.split_validation(0.25, seed=3)[1]["image"]
    assert torch.equal(again, val["image"])  # seeded


def test_best_epoch_and_stopping_rule():
    hist = [{"epoch": e, "val_loss": v} for e, v in enumerate([5.0, 3.0, 4.0, 3.0, 3.5], start=1)]
    assert best_epoch(hist) == 2  # the first of equals
    assert not stops_early(hist[:4], patience=3) and stops_early(hist, patience=3)
    assert not stops_early(hist, patience=None) and best_epoch([{"epoch": 1}]) is None


class _SpoilAfter:
    """A callback that ruins the weights after epoch ``k`` (keeping a copy of the good ones), so the
    validation loss of every later epoch is worse than epoch k's."""

    def __init__(self, k: int):
        self.k, self.good, self.model = k, None, None

    def on_train_start(self, trainer):
        self.model = trainer.model

    def on_epoch_end(self, epoch, metrics):
        if epoch == self.k:
            self.good = {n: t.clone() for n, t in self.model.state_dict().items()}
            with torch.no_grad():
                for p in self.model.parameters():
                    p.add_(torch.randn_like(p) * 3)


def test_early_stopping_stops_and_keeps_the_best_epochs_weights(small_mnist, tmp_path):
    cfg = RunConfig(epochs=20, batch_size=64, lr=1e-6, patience=2, val_fraction=0.2).validate()
    spoil = _SpoilAfter(2)
    trainer = Trainer(tiny(), small_mnist, cfg, tmp_path / "r", progress=False, log=None, callbacks=[spoil])
    history = trainer.fit()
    assert trainer.stopped_early and [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert all("val_loss" in r for r in history) and best_epoch(history) == 2
    final = trainer.model.state_dict()
    assert all(torch.equal(final[n], spoil.good[n]) for n in final)  # the model holds epoch 2's weights
    best = torch.load(tmp_path / "r" / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == 2 and last["epoch"] == 4
    assert not all(torch.equal(final[n], last["model"][n]) for n in final)  # not the last epoch's weights
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_loss"] for r in lines] == [r["val_loss"] for r in history]


def test_train_api_saves_the_best_epoch_as_model_pt(small_mnist, tmp_path):
    """model.pt is the best epoch's model when early stopping is on, and a resumed finished run stays stopped.
    The best epoch is not the last: the weights are spoiled after epoch 2, so epochs 3 and 4 validate worse."""
    common = dict(out=tmp_path / "r", epochs=6, patience=2, lr=1e-6, batch_size=64, progress=False, log=None,
                  report=False)
    spoil = _SpoilAfter(2)
    run = aelab.train(tiny(), small_mnist, callbacks=[spoil], **common)
    assert best_epoch(run.history) == 2 and [r["epoch"] for r in run.history] == [1, 2, 3, 4]
    saved = aelab.load_model(tmp_path / "r" / "model.pt").state_dict()
    kept = torch.load(tmp_path / "r" / "checkpoints" / "best.pt", weights_only=True)["model"]
    last = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(saved[n], kept[n]) and torch.equal(saved[n], spoil.good[n]) for n in kept)
    assert not all(torch.equal(saved[n], last[n]) for n in kept)  # the last epoch's weights are not model.pt
    again = aelab.train(tiny(), small_mnist, resume=True, **common)
    assert [r["epoch"] for r in again.history] == [1, 2, 3, 4]
    resaved = aelab.load_model(tmp_path / "r" / "model.pt").state_dict()
    assert all(torch.equal(resaved[n], kept[n]) for n in kept)


def test_resume_with_validation_is_bit_identical(small_mnist, tmp_path):
    cfg = RunConfig(epochs=4, batch_size=64, val_fraction=0.2, patience=3, binarize=True).validate()
    torch.manual_seed(1)
    ref = Trainer(tiny(), small_mnist, cfg, tmp_path / "ref", progress=False, log=None)
    ref.fit()
    torch.manual_seed(1)
    first = Trainer(tiny(), small_mnist, cfg, tmp_path / "r", progress=False, log=None)
    first.fit(until=2)
    again = Trainer(tiny(), small_mnist, cfg, tmp_path / "r", progress=False, log=None)
    assert again.load_checkpoint()
    again.fit()
    assert [r["val_loss"] for r in again.history] == [r["val_loss"] for r in ref.history]
    a, b = ref.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------- TensorBoard
def test_tensorboard_logs_scalars_images_and_the_projector(small_mnist, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                            reason="the tensorboard extra is not installed")
    aelab.train("vae", small_mnist, out=tmp_path / "r", epochs=2, latent_dim=2, tensorboard=True,
                progress=False, log=None, report=False)
    logdir = tmp_path / "r" / "tensorboard"
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert [e.step for e in acc.Scalars("loss/train")] == [1, 2]
    assert {"loss/test", "kl/train", "optim/lr"} <= set(tags["scalars"])
    images = [t for t in tags["images"] if t.startswith("reconstructions")]
    assert images and any(t.startswith("samples") for t in tags["images"])
    assert len(acc.Images(images[0])) == 2
    projector = (logdir / "projector_config.pbtxt").read_text()
    assert "metadata.tsv" in projector and "sprite.png" in projector
    tsv = next(logdir.rglob("tensors.tsv")).read_text().splitlines()
    assert len(tsv) == len(small_mnist.x_test) and len(tsv[0].split("\t")) == 2  # one row per test code
    labels = next(logdir.rglob("metadata.tsv")).read_text().split()
    assert labels == [small_mnist.classes[i] for i in small_mnist.y_test.tolist()]


def test_missing_tensorboard_is_one_clear_line(small_mnist, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(AelabError, match=r'pip install "aelab\[tensorboard\]"'):
        aelab.train("dense", small_mnist, out=tmp_path / "r", epochs=1, tensorboard=True, progress=False, log=None,
                    report=False)


# ------------------------------------------------------------------------------------------- help
def test_every_subcommand_help_shows_its_defaults_and_an_example():
    import argparse

    from aelab.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"train", "evaluate", "compare", "report", "tour", "datasets"} <= set(sub.choices)
    for name, command in sub.choices.items():
        text = command.format_help()
        assert f"examples:\n  aelab {name}" in text, name
        for action in command._actions:
            if not action.option_strings or action.help in (None, argparse.SUPPRESS) or action.dest == "help":
                continue
            takes_value = action.nargs != 0
            if takes_value:  # a flag that takes a value says what it is when not given
                assert "default" in action.help or "(on by default)" in action.help, (name, action.dest)
