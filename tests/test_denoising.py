"""Denoising autoencoders (--noise): the corruptions' known answers, the model reading the corrupted input while
the loss scores the clean one (every one-modality family), the trainer drawing fresh noise per batch from the
training stream (resume stays bit-identical), the plain path untouched, the metrics and the figure."""
from __future__ import annotations

import math
import os
import signal

import pytest
import torch

import aelab
from aelab.cli import main
from aelab.config import RunConfig
from aelab.data import Dataset
from aelab.data.noise import Noise, corrupt, noise_for, parse_noise
from aelab.errors import AelabError
from aelab.evaluation.evaluate import denoising_errors, evaluate_run
from aelab.io import load_checkpoint
from aelab.models.base import VARIATIONAL, has
from aelab.models.dense import DenseAE
from aelab.training.trainer import Trainer, TrainingInterrupted
from aelab.viz.run_figures import write_run_figures

from .conftest import TINY_KWARGS

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny trainings: see conftest.one_thread

ONE_MODALITY = [name for name in TINY_KWARGS if name != "multimodal"]


def _phi(z: float) -> float:
    return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def _Phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


# ------------------------------------------------------------------------------------------- the corruptions
def test_specs_parse_and_bad_ones_are_one_line():
    assert parse_noise("gaussian:0.5") == Noise("gaussian", 0.5)
    assert parse_noise(" Masking:0.25 ") == Noise("masking", 0.25)
    assert str(parse_noise("salt-pepper:0.1")) == "salt-pepper:0.1"
    for bad, needle in [("gauss:0.5", "KIND one of"), ("gaussian", "KIND:LEVEL"), ("gaussian:abc", "a number"),
                        ("gaussian:0", "above 0"), ("gaussian:nan", "above 0"), ("masking:1", "strictly between"),
                        ("salt-pepper:-0.1", "strictly between")]:
        with pytest.raises(AelabError, match=needle) as err:
            parse_noise(bad)
        assert "\n" not in str(err.value)
    assert noise_for(None, True) is None
    assert noise_for("gaussian:0.5", False).clip is False  # unbounded features are not clipped
    with pytest.raises(AelabError, match="needs data in \\[0, 1\\]"):
        noise_for("salt-pepper:0.2", False)


def test_corruptions_known_answers():
    g = torch.Generator().manual_seed(0)
    ones, zeros = torch.ones(200_000), torch.zeros(200_000)
    masked = corrupt(ones, Noise("masking", 0.3), g)
    assert set(masked.unique().tolist()) == {0.0, 1.0} and (masked == 0).float().mean() == pytest.approx(0.3, abs=0.005)
    half = torch.full((200_000,), 0.5)
    sp = corrupt(half, Noise("salt-pepper", 0.2), g)
    assert (sp == 0).float().mean() == pytest.approx(0.1, abs=0.004)
    assert (sp == 1).float().mean() == pytest.approx(0.1, abs=0.004)
    assert (sp == 0.5).float().mean() == pytest.approx(0.8, abs=0.005)
    raw = corrupt(zeros, Noise("gaussian", 0.5, clip=False), g)
    assert raw.std().item() == pytest.approx(0.5, rel=0.01) and raw.min() < 0
    clipped = corrupt(zeros, Noise("gaussian", 0.5), g)
    # E[clip(0.5 z, 0, 1)^2] for z ~ N(0, 1): 0.25 * (Phi(2) - 1/2 - 2 phi(2)) + (1 - Phi(2)) = 0.1151
    expected = 0.25 * (_Phi(2) - 0.5 - 2 * _phi(2)) + (1 - _Phi(2))
    assert clipped.min() == 0 and clipped.max() == 1
    assert clipped.square().mean().item() == pytest.approx(expected, rel=0.02)
    assert torch.equal(ones, torch.ones(200_000))  # the input is left alone


def test_a_seeded_generator_gives_one_copy_and_the_default_stream_a_fresh_one():
    x = torch.rand(8, 1, 28, 28)
    noise = parse_noise("gaussian:0.3")
    a = corrupt(x, noise, torch.Generator().manual_seed(3))
    b = corrupt(x, noise, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    torch.manual_seed(5)
    c = corrupt(x, noise)
    torch.manual_seed(5)
    assert torch.equal(corrupt(x, noise), c) and not torch.equal(corrupt(x, noise), c)


# ------------------------------------------------------------------------------------------- the models
@pytest.mark.parametrize("name", ONE_MODALITY)
def test_the_model_reads_the_noisy_input_and_is_scored_against_the_clean_target(name):
    model = aelab.build_model(name, **TINY_KWARGS[name]).train()
    clean = torch.rand(6, 1, 28, 28).round()
    noisy = corrupt(clean, parse_noise("masking:0.5"))
    torch.manual_seed(1)
    denoising = model({"image": noisy}, target={"image": clean})
    torch.manual_seed(1)
    plain = model({"image": noisy})
    torch.manual_seed(1)
    same = model({"image": noisy}, target={"image": noisy})
    assert torch.equal(denoising.z, plain.z) and torch.equal(denoising.logits, plain.logits)  # coded from noisy
    if has(model, VARIATIONAL):
        expected = -model.log_likelihood(denoising.logits, clean).mean()
    else:
        expected = model.recon_term(denoising.logits, clean)
    torch.testing.assert_close(denoising.terms["recon"], expected)
    assert not torch.equal(denoising.terms["recon"], plain.terms["recon"])
    assert torch.equal(same.loss, plain.loss)  # target=None is the input itself
    with pytest.raises(AelabError, match="built for inputs of shape"):
        model({"image": noisy}, target={"image": clean[:, :, :14]})


# ------------------------------------------------------------------------------------------- the trainer
class _Spy(DenseAE):
    """A dense model that records what every forward call received: (training?, input, target)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def forward(self, x, target=None):
        self.seen.append((self.training, x["image"].clone(), None if target is None else target["image"].clone()))
        return super().forward(x, target)


def _ink(n: int) -> Dataset:
    """n train and n test images full of ink: the clean target is 1 everywhere."""
    full = torch.full((n, 1, 28, 28), 255, dtype=torch.uint8)
    return Dataset("ink", full, full[: n // 2].clone())


def test_the_trainer_corrupts_each_batch_afresh_and_keeps_the_target_clean(tmp_path):
    model = _Spy(latent_dim=2, hidden_dims=[8])
    cfg = RunConfig(epochs=2, batch_size=50, noise="masking:0.5", device="cpu").validate()
    Trainer(model, _ink(100), cfg, tmp_path, progress=False, log=None).fit()
    steps = [(x, t) for training, x, t in model.seen if training]
    evals = [(x, t) for training, x, t in model.seen if not training]
    assert len(steps) == 4 and len(evals) == 2
    for x, target in steps + evals:
        assert torch.equal(target, torch.ones_like(target))
        assert set(x.unique().tolist()) == {0.0, 1.0} and (x == 0).float().mean() == pytest.approx(0.5, abs=0.03)
    assert not torch.equal(steps[0][0], steps[2][0])  # the same rows, fresh noise each epoch
    assert torch.equal(evals[0][0], evals[1][0])  # the test loss: one fixed corrupted copy every epoch


def test_without_noise_the_step_is_the_plain_one(tmp_path):
    model = _Spy(latent_dim=2, hidden_dims=[8])
    Trainer(model, _ink(100), RunConfig(epochs=1, batch_size=50, device="cpu"), tmp_path, progress=False,
            log=None).fit()
    assert model.seen and all(t is None for _, _, t in model.seen)  # model(batch): no target, no copy
    assert all(torch.equal(x, torch.ones_like(x)) for _, x, _ in model.seen)


def test_a_model_without_target_is_refused_in_one_line(tmp_path):
    class Plain(DenseAE):
        def forward(self, x):
            return super().forward(x)

    with pytest.raises(AelabError, match="forward takes target=") as err:
        Trainer(Plain(latent_dim=2, hidden_dims=[8]), _ink(10), RunConfig(noise="gaussian:0.1"), tmp_path, log=None)
    assert "\n" not in str(err.value)


def _dense(seed=0):
    torch.manual_seed(seed)
    return aelab.build_model("dense", latent_dim=4, hidden_dims=[16])


def _fit(data, out, stream: int, **settings):
    cfg = RunConfig(epochs=2, batch_size=100, seed=3, device="cpu", **settings).validate()
    trainer = Trainer(_dense(), data, cfg, out, progress=False, log=None)
    torch.manual_seed(stream)  # the training stream
    trainer.fit()
    return trainer.model.state_dict()


def test_the_noise_comes_from_the_training_stream(small_mnist, tmp_path):
    """A dense model without noise draws nothing from the stream (its shuffles are seeded per epoch); with noise
    its weights depend on the stream the noise is drawn from."""
    data = Dataset("d", small_mnist.x_train[:300], small_mnist.x_test[:50])
    a, b = _fit(data, tmp_path / "a", 1), _fit(data, tmp_path / "b", 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c, d = (_fit(data, tmp_path / n, s, noise="gaussian:0.5") for n, s in (("c", 1), ("d", 2)))
    assert not all(torch.equal(c[k], d[k]) for k in c)


@pytest.mark.parametrize("name, noise", [("dense", "gaussian:0.5"), ("vae", "masking:0.3")])
def test_killed_and_stopped_denoising_runs_resume_bit_identical(name, noise, small_mnist, tmp_path, monkeypatch):
    data = Dataset("d", small_mnist.x_train[:500], small_mnist.x_test[:50])
    cfg = RunConfig(epochs=3, batch_size=100, seed=4, noise=noise, device="cpu").validate()

    def run(out, stream, resume=False):
        torch.manual_seed(stream)
        trainer = Trainer(aelab.build_model(name, **TINY_KWARGS[name]), data, cfg, out, progress=False, log=None)
        torch.manual_seed(stream + 1)
        if resume:
            assert trainer.load_checkpoint()
        trainer.fit()
        return trainer

    ref = run(tmp_path / "ref", 0)
    backward, count = torch.Tensor.backward, [0]

    def faulty(at, how):
        count[0] = 0

        def counted(tensor, *args, **kwargs):
            backward(tensor, *args, **kwargs)
            count[0] += 1
            if count[0] == at:
                if how == "kill":
                    raise KeyboardInterrupt  # the process dies inside a step
                os.kill(os.getpid(), signal.SIGTERM)
        monkeypatch.setattr(torch.Tensor, "backward", counted)

    faulty(8, "kill")  # epoch 2, step 3: only epoch 1's checkpoint is there
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", 0)
    faulty(7, "sigterm")  # resumed after epoch 1, stopped in epoch 3, step 2 (a mid-epoch checkpoint)
    with pytest.raises(TrainingInterrupted):
        run(tmp_path / "run", 11, resume=True)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["partial"]["step"] == 2
    monkeypatch.setattr(torch.Tensor, "backward", backward)
    again = run(tmp_path / "run", 22, resume=True)
    a, b = ref.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in ref.history] == [r["train_loss"] for r in again.history]


@pytest.mark.parametrize("name", ONE_MODALITY)
def test_every_one_modality_family_trains_as_a_denoiser(name, small_mnist, tmp_path):
    data = Dataset("d", small_mnist.x_train[:200], small_mnist.x_test[:50])
    run = aelab.train(name, data, out=tmp_path / name, epochs=1, batch_size=50, noise="salt-pepper:0.2",
                      progress=False, log=None, report=False, **TINY_KWARGS[name])
    assert math.isfinite(run.last["train_loss"]) and math.isfinite(run.last["test_loss"])
    assert aelab.RunConfig.load(tmp_path / name / "config.json").noise == "salt-pepper:0.2"


def test_multimodal_and_bad_specs_are_refused_on_the_command_line(tmp_path, capsys):
    for args, needle in [(["--noise", "gauss:0.5"], "KIND one of gaussian"),
                         (["--noise", "masking:2"], "strictly between 0 and 1"),
                         (["--model", "multimodal", "--noise", "gaussian:0.5"], "--noise does not apply to --model "
                                                                                  "multimodal")]:
        capsys.readouterr()
        code = main(["train", "--out", str(tmp_path / "r"), "--quiet", *args])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


# ------------------------------------------------------------------------------------------- metrics, figure
class _Fixed(torch.nn.Module):
    """A stand-in model whose reconstruction is its input (``identity``) or all zeros."""

    def __init__(self, identity: bool):
        super().__init__()
        self.identity = identity

    def reconstruct(self, x):
        return x if self.identity else torch.zeros_like(x)


def test_denoising_errors_known_answers():
    zeros = torch.zeros(300, 1, 28, 28, dtype=torch.uint8)
    noise = parse_noise("gaussian:0.5")
    same = denoising_errors(_Fixed(True), zeros, noise, seed=1)
    expected = 0.25 * (_Phi(2) - 0.5 - 2 * _phi(2)) + (1 - _Phi(2))  # 0.1151, see above
    assert same["noisy_input_mse"] == pytest.approx(expected, rel=0.02)
    assert same["denoising_mse"] == same["noisy_input_mse"] and same["noise"] == "gaussian:0.5"
    assert denoising_errors(_Fixed(False), zeros, noise, seed=1)["denoising_mse"] == 0  # a perfect denoiser here
    assert denoising_errors(_Fixed(True), zeros, noise, seed=1) == same  # one seeded copy
    ink = torch.full((300, 1, 28, 28), 255, dtype=torch.uint8)
    masked = denoising_errors(_Fixed(True), ink, parse_noise("masking:0.3"))
    assert masked["noisy_input_mse"] == pytest.approx(0.3, abs=0.005)  # a zeroed pixel of ink costs 1


def test_a_denoising_run_is_evaluated_and_drawn(small_mnist, tmp_path):
    common = dict(epochs=1, batch_size=50, progress=False, log=None, report=False, latent_dim=4, hidden_dims=[16])
    noisy = aelab.train("dense", small_mnist, out=tmp_path / "noisy", noise="gaussian:0.5", **common)
    plain = aelab.train("dense", small_mnist, out=tmp_path / "plain", **common)
    result = evaluate_run(noisy.path, data=small_mnist, progress=False)
    assert 0 < result["denoising_mse"] < result["noisy_input_mse"] and result["noise"] == "gaussian:0.5"
    assert "denoising_mse" not in evaluate_run(plain.path, data=small_mnist, progress=False)
    assert "denoising.png" in write_run_figures(noisy, small_mnist, method="pca")
    assert "denoising.png" not in write_run_figures(plain, small_mnist, method="pca")


@pytest.mark.slow
def test_a_denoiser_removes_most_of_the_noise(mnist5k, tmp_path):
    """Gaussian sigma 0.5 on mnist5k, 5 epochs of the dense model: under half the noisy input's error (the
    full-MNIST target, a third, is measured by benchmarks/denoising.py)."""
    run = aelab.train("dense", mnist5k, out=tmp_path / "r", epochs=5, noise="gaussian:0.5", progress=False, log=None,
                      report=False)
    result = evaluate_run(run.path, data=mnist5k, progress=False)
    assert result["denoising_mse"] < result["noisy_input_mse"] / 2, result
