"""Resume that cannot change the run: bit-identical after a kill (mid-epoch, and from an epoch's end) for the
models with random state of their own (the VAE's sampling, TopK's dead-unit counters, multimodal modality
dropout); settings that would reshape the run refused with one line; evaluation with fixed noise that leaves
the training stream alone."""
from __future__ import annotations

import dataclasses
import os
import signal

import pytest
import torch

import aelab
from aelab.cli import main
from aelab.config import RunConfig
from aelab.data import Dataset
from aelab.data import multimodal as mm
from aelab.errors import AelabError
from aelab.io import load_checkpoint
from aelab.training.trainer import Trainer, TrainingInterrupted

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny trainings: see conftest.one_thread

EPOCHS, BATCH = 3, 100  # small_mnist's 1,000 training rows: 10 steps an epoch


class _Killed(Exception):
    """Stands in for SIGKILL: the process ends inside a step; nothing more is written."""


class _Faults:
    """Counts this "process"'s backward passes and, at step ``at``, kills it or sends it SIGTERM."""

    def __init__(self, monkeypatch):
        self.monkeypatch, self.backward = monkeypatch, torch.Tensor.backward

    def arm(self, at: int | None, how: str = "kill") -> None:
        backward, count = self.backward, [0]

        def counted(tensor, *args, **kwargs):
            backward(tensor, *args, **kwargs)
            count[0] += 1
            if count[0] == at:
                if how == "kill":
                    raise _Killed
                os.kill(os.getpid(), signal.SIGTERM)

        self.monkeypatch.setattr(torch.Tensor, "backward", counted)


def _models():
    """name -> (data factory, model factory, config): tiny, seconds each."""
    def sparse():
        return aelab.build_model("sparse", latent_dim=128, penalty="topk", k=2, dead_after=3)

    def vae():
        return aelab.build_model("vae", latent_dim=4, hidden_dims=[16])

    def multimodal(data):
        return aelab.build_model("multimodal", modalities=mm.modalities_of(data), fusion="shared", dropout=0.5,
                                 latent_dim=4, image_channels=[2, 4], text_embed=4, text_hidden=8, text_decoder="mlp")
    return {"vae": (vae, dict(binarize=True)), "sparse-topk": (sparse, {}), "multimodal-shared": (multimodal, {})}


@pytest.fixture
def paired(small_mnist, monkeypatch):
    """small_mnist's digits paired with text (1,000 train rows)."""
    monkeypatch.setattr(mm, "load_dataset", lambda name, data_dir=None: small_mnist)
    return mm.load_multimodal("mnist5k", "image,text", seed=0)


def _train(build, data, cfg, out, seed, resume=False):
    torch.manual_seed(seed)  # a resumed run must not depend on the weights it was built with, nor the stream
    model = build(data) if build.__code__.co_argcount else build()
    trainer = Trainer(model, data, cfg, out, progress=False, log=None)
    torch.manual_seed(seed + 1)  # the stream of a fresh run (as aelab.train seeds it); a resumed one restores its own
    if resume:
        assert trainer.load_checkpoint()
    trainer.fit()
    return trainer


@pytest.mark.parametrize("name", list(_models()))
def test_killed_and_stopped_runs_resume_bit_identical(name, small_mnist, paired, tmp_path, monkeypatch):
    build, extra = _models()[name]
    data = paired if name.startswith("multimodal") else small_mnist
    cfg = RunConfig(epochs=EPOCHS, batch_size=BATCH, seed=4, **extra).validate()
    ref = _train(build, data, cfg, tmp_path / "ref", seed=0)

    faults, run = _Faults(monkeypatch), tmp_path / "run"
    faults.arm(15)  # killed in epoch 2, step 5: the checkpoint of epoch 1 is all there is
    with pytest.raises(_Killed):
        _train(build, data, cfg, run, seed=0)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    faults.arm(12, "sigterm")  # resumed from epoch 1, stopped by SIGTERM in epoch 3, step 2
    with pytest.raises(TrainingInterrupted):
        _train(build, data, cfg, run, seed=11, resume=True)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["partial"]["step"] == 2
    faults.arm(None)
    again = _train(build, data, cfg, run, seed=22, resume=True)

    a, b = ref.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    losses = [{k: v for k, v in r.items() if "second" not in k} for r in ref.history]
    assert [{k: v for k, v in r.items() if "second" not in k} for r in again.history] == losses
    if name == "sparse-topk":  # the counters mattered: dead units were found and joined the AuxK loss
        assert any(r["train_auxk"] > 0 for r in ref.history)
        assert int(a["steps_since_fired"].max()) > 0


# ------------------------------------------------------------------------------------------- refused resumes
def _tiny_data(small_mnist):
    return Dataset("tiny", small_mnist.x_train[:200], small_mnist.x_test[:50], small_mnist.y_train[:200],
                   small_mnist.y_test[:50])


def _first_epoch(data, tmp_path, **settings):
    cfg = RunConfig(epochs=2, batch_size=50, latent_dim=2, hidden_dims=[8], **settings).validate()
    Trainer(aelab.build_model("dense", latent_dim=2, hidden_dims=[8]), data, cfg, tmp_path / "r", progress=False,
            log=None).fit(until=1)
    return cfg


@pytest.mark.parametrize("started, changed, flag", [
    ({"lr_schedule": "cosine"}, {"epochs": 4}, "--epochs cannot change on resume under --lr-schedule cosine"),
    ({"lr_schedule": "onecycle"}, {"epochs": 4}, "--epochs cannot change on resume under --lr-schedule onecycle"),
    ({}, {"seed": 1}, "--seed cannot change on resume"),
    ({}, {"batch_size": 40}, "--batch-size cannot change on resume"),
    ({"warmup_epochs": 1.0}, {"warmup_epochs": 0.5}, "--warmup-epochs cannot change on resume"),
    ({}, {"lr_schedule": "cosine"}, "--lr-schedule cannot change on resume"),
    ({}, {"patience": 2}, "--val-fraction cannot change on resume"),  # --patience alone holds out 0.1
])
def test_a_resume_that_would_change_the_run_is_refused(small_mnist, tmp_path, started, changed, flag):
    data = _tiny_data(small_mnist)
    cfg = dataclasses.replace(_first_epoch(data, tmp_path, **started), **changed).validate()
    trainer = Trainer(aelab.build_model("dense", latent_dim=2, hidden_dims=[8]), data, cfg, tmp_path / "r",
                      progress=False, log=None)
    with pytest.raises(AelabError) as err:
        trainer.load_checkpoint()
    assert str(err.value).startswith(flag) and "\n" not in str(err.value)
    assert "the run was started with" in str(err.value)


@pytest.mark.parametrize("started", [{}, {"warmup_epochs": 1.0}])
def test_more_epochs_of_a_constant_schedule_are_allowed(small_mnist, tmp_path, started):
    data = _tiny_data(small_mnist)
    cfg = dataclasses.replace(_first_epoch(data, tmp_path, **started), epochs=3, lr=5e-3)  # --lr may change
    trainer = Trainer(aelab.build_model("dense", latent_dim=2, hidden_dims=[8]), data, cfg, tmp_path / "r",
                      progress=False, log=None)
    assert trainer.load_checkpoint()
    assert [r["epoch"] for r in trainer.fit()] == [1, 2, 3]


def test_the_command_line_refuses_a_reshaping_resume_with_exit_2(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "r"), "--hidden-dims", "8", "--latent-dim", "2", "--batch-size", "500",
            "--lr-schedule", "cosine", "--quiet", "--no-report"]
    assert main([*args, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--epochs cannot change on resume under --lr-schedule cosine" in err[0]
    assert "started with 1" in err[0] and "resume with --epochs 1" in err[0]
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--epochs", "1", "--quiet"]) == 0  # as told


# ------------------------------------------------------------------------------------------- evaluation noise
def _vae_trainer(data, out, **settings):
    torch.manual_seed(0)
    model = aelab.build_model("vae", latent_dim=4, hidden_dims=[16])
    cfg = RunConfig(epochs=2, batch_size=50, binarize=True, val_fraction=0.2, seed=1, **settings).validate()
    return Trainer(model, data, cfg, out, progress=False, log=None)


def test_the_validation_loss_of_a_model_is_one_number(small_mnist, tmp_path):
    """The VAE's loss draws a code per row and binarizes the images: evaluated twice, the same number (so early
    stopping compares models, not draws), and the caller's random stream is where it was."""
    trainer = _vae_trainer(_tiny_data(small_mnist), tmp_path / "r")
    stream = torch.get_rng_state()
    first, second = trainer.evaluate(trainer.val), trainer.evaluate(trainer.val)
    assert first == second and first["loss"] > 0
    assert torch.equal(torch.get_rng_state(), stream)


def test_evaluation_leaves_the_training_stream_alone(small_mnist, tmp_path):
    """The same training rows with test sets of different sizes: the evaluations between epochs draw different
    amounts of noise, and the training runs stay identical, as does the loss of the test rows they share."""
    rows = small_mnist.x_train[:200]
    short = _vae_trainer(Dataset("a", rows, small_mnist.x_test[:50]), tmp_path / "a")
    short.fit()
    long = _vae_trainer(Dataset("b", rows, small_mnist.x_test[:120]), tmp_path / "b")  # seeded as the first
    long.fit()
    a, b = short.model.state_dict(), long.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in short.history] == [r["train_loss"] for r in long.history]
    assert [r["val_loss"] for r in short.history] == [r["val_loss"] for r in long.history]
    assert short.history[-1]["test_loss"] != long.history[-1]["test_loss"]  # the test sets do differ
