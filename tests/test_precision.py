"""The device paths, checked without a GPU: bf16 only where the GPU has it (else one warning line and float32),
evaluation at the training precision, the training GPU's random state alone in checkpoints, and TensorBoard
giving a model its inputs on the model's device (and the writer CPU tensors back)."""
from __future__ import annotations

import contextlib
import types
import warnings

import pytest
import torch

import aelab
from aelab.config import RunConfig
from aelab.data import Dataset
from aelab.models.base import GENERATIVE
from aelab.training import tensorboard as tb
from aelab.training.resume import restore_rng
from aelab.training.trainer import Trainer, autocast_context, training_precision

CPU, CUDA, CUDA1 = torch.device("cpu"), torch.device("cuda"), torch.device("cuda", 1)


@pytest.fixture
def fake_gpu(monkeypatch):
    """CUDA "present", with a GPU that has bf16 units (``native``) or only emulates them (torch >= 2.4 counts
    emulation as support unless told not to). Records which GPU was current while bf16 was asked about."""
    gpu = types.SimpleNamespace(native=True, current=None, asked_on=[])

    def is_bf16_supported(including_emulation=True):
        gpu.asked_on.append(gpu.current)
        return gpu.native or including_emulation

    @contextlib.contextmanager
    def device(d):
        gpu.current, before = torch.device(d), gpu.current
        yield
        gpu.current = before

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", device)
    return gpu


def _quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():  # no real CUDA: torch may warn about the autocast context it builds
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_bf16_on_a_gpu_that_has_it(fake_gpu):
    for precision in ("auto", "bf16"):
        ctx = _quietly(autocast_context, CUDA, precision)
        assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
    assert training_precision(CUDA, "fp32") == "fp32"


def test_bf16_asked_of_a_gpu_without_it_is_one_warning_and_float32(fake_gpu):
    fake_gpu.native = False  # e.g. a V100 or a T4: bf16 only emulated, slower than float32
    said = []
    assert training_precision(CUDA, "bf16", warn=said.append) == "fp32"
    assert len(said) == 1 and "\n" not in said[0] and "--precision bf16" in said[0] and "float32" in said[0]
    with _quietly(autocast_context, CUDA, "bf16"):
        assert not torch.is_autocast_enabled("cuda")
    said.clear()
    assert training_precision(CUDA, "auto", warn=said.append) == "fp32" and said == []  # auto: quietly float32


def test_the_training_gpu_is_the_one_asked_about_bf16(fake_gpu):
    training_precision(CUDA1, "auto")
    assert fake_gpu.asked_on == [CUDA1]


def test_cpu_runs_bf16_only_when_asked():
    assert training_precision(CPU, "auto") == "fp32" and training_precision(CPU, "bf16") == "bf16"
    assert training_precision(torch.device("meta"), "bf16") == "fp32"


class _Spy(torch.nn.Module):
    """A dense model that records, for every forward pass, whether it trained and whether autocast was on."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inner = aelab.build_model("dense", latent_dim=2, hidden_dims=[8])
        self.seen = []

    def forward(self, batch):
        self.seen.append((self.training, torch.is_autocast_enabled("cpu")))
        return self.inner(batch)


@pytest.mark.parametrize("precision, autocast", [("bf16", True), ("fp32", False)])
def test_evaluation_runs_at_the_training_precision(small_mnist, tmp_path, precision, autocast):
    data = Dataset("tiny", small_mnist.x_train[:200], small_mnist.x_test[:50])
    cfg = RunConfig(epochs=1, batch_size=100, device="cpu", precision=precision, val_fraction=0.2).validate()
    spy = _Spy()
    Trainer(spy, data, cfg, tmp_path / "r", progress=False, log=None).fit()
    training = [a for t, a in spy.seen if t]
    evaluation = [a for t, a in spy.seen if not t]
    assert len(training) == 2 and len(evaluation) == 2  # 2 steps; the test and the validation rows
    assert set(training) == set(evaluation) == {autocast}


# ------------------------------------------------------------------------------------------- random state
def test_checkpoints_hold_the_training_gpus_random_state_alone(small_mnist, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    state = torch.zeros(8, dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": calls.append(("get", device)) or state)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: calls.append(("get_all",)) or [])
    trainer = Trainer(aelab.build_model("dense", latent_dim=2, hidden_dims=[8]), small_mnist,
                      RunConfig(epochs=1, device="cpu").validate(), tmp_path / "r", progress=False, log=None)
    assert trainer.state_dict()["rng_cuda"] is None and calls == []  # training on the CPU: no GPU touched
    trainer.device = CUDA1  # as a trainer on the second GPU (every rank of a run on several)
    assert trainer.state_dict()["rng_cuda"] is state and calls == [("get", CUDA1)]


def test_resume_sets_the_training_gpus_random_state_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device="cuda": calls.append((s[0].item(), device)))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append("all"))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    cpu_state = torch.get_rng_state()
    restore_rng({"rng_torch": cpu_state, "rng_cuda": torch.full((8,), 7, dtype=torch.uint8)}, CUDA1)
    assert calls == [(7, CUDA1)]
    older = [torch.full((8,), 5, dtype=torch.uint8), torch.full((8,), 6, dtype=torch.uint8)]  # one per GPU
    restore_rng({"rng_torch": cpu_state, "rng_cuda": older}, CUDA1)
    assert calls[-1] == (6, CUDA1)
    restore_rng({"rng_torch": cpu_state, "rng_cuda": older}, CPU)  # trained on the CPU: no GPU touched
    assert len(calls) == 2 and torch.equal(torch.get_rng_state(), cpu_state)


# ------------------------------------------------------------------------------------------- TensorBoard
class _OnMeta(torch.nn.Module):
    """A model whose parameters live on another device than the data (``meta`` standing in for a GPU): each
    verb asserts that its input is on the model's device, as a CUDA model's first layer would."""

    capabilities = frozenset({GENERATIVE})

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.empty(2, device="meta"))

    def _here(self, t):
        assert t.device == self.w.device, f"an input on {t.device} reached a model on {self.w.device}"

    def encode(self, batch):
        self._here(batch["image"])
        return torch.empty(len(batch["image"]), 2, device="meta")

    codes = encode  # the name older code used

    def decode(self, z, modality=None):
        self._here(z)
        return torch.empty(len(z), 1, 28, 28, device="meta")

    def sample(self, n, generator=None, modality=None):
        return torch.empty(n, 1, 28, 28, device="meta")


class _Writer:
    """Stands in for a SummaryWriter: keeps what it is given and checks it is on the CPU."""

    def __init__(self):
        self.images, self.embedded = [], None

    def add_scalar(self, tag, value, step):
        assert isinstance(value, float)

    def add_images(self, tag, images, step):
        assert images.device.type == "cpu", f"{tag} given on {images.device}"
        self.images.append(tag)

    def add_embedding(self, codes, metadata=None, label_img=None, global_step=None, tag=None):
        assert codes.device.type == "cpu" and label_img.device.type == "cpu"
        self.embedded = (codes.shape, metadata)

    def flush(self):
        pass

    def close(self):
        pass


def test_tensorboard_moves_inputs_to_the_models_device_and_results_back(small_mnist, tmp_path, monkeypatch):
    cpu = torch.Tensor.cpu  # a meta tensor holds no values: its copy to the CPU is zeros of its shape

    def to_cpu(self, *args, **kwargs):
        return torch.zeros(self.shape, dtype=self.dtype) if self.is_meta else cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", to_cpu)
    writer = _Writer()
    monkeypatch.setattr(tb, "summary_writer", lambda log_dir: writer)
    data = Dataset("small", small_mnist.x_train[:10], small_mnist.x_test[:20], small_mnist.y_train[:10],
                   small_mnist.y_test[:20], classes=small_mnist.classes)
    model = _OnMeta()
    logger = tb.TensorBoardLogger(tmp_path / "tb", data)
    logger.add_images(model, 1)
    assert len(writer.images) == 2  # reconstructions and samples
    optimizer = types.SimpleNamespace(param_groups=[{"lr": 1e-3}])
    trainer = types.SimpleNamespace(model=model, epoch=1, optimizer=optimizer)
    logger.on_train_start(trainer)
    logger.on_epoch_end(1, {"epoch": 1, "train_loss": 0.5, "test_loss": 0.6})
    logger.on_train_end(trainer)
    assert len(writer.images) == 4 and writer.embedded[0] == (20, 2) and len(writer.embedded[1]) == 20
