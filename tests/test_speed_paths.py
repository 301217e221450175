"""The fast paths, checked on a CPU: the GPU-only pieces (bf16 autocast, channels-last) are no-ops here
and correct by construction there; the step loop reads nothing back from the device per step."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import aelab
from aelab.data import multimodal as mm
from aelab.config import RunConfig
from aelab.models.base import AEOutput
from aelab.training import Trainer
from aelab.training import trainer as trainer_mod
from aelab.training.optim import LeanAdam
from aelab.training.trainer import (autocast_context, first_nonfinite, make_adam, scheduled_lr,
                                    wants_channels_last)

from .conftest import TINY_KWARGS

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_autocast_is_off_on_cpu_and_with_fp32():
    for device, precision in [(CPU, "auto"), (CPU, "fp32"), (CUDA, "fp32")]:
        with autocast_context(device, precision):
            assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")


def test_autocast_is_bf16_on_a_cuda_device_that_supports_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with warnings.catch_warnings():  # the real CUDA is absent: torch may warn about the context it builds
        warnings.simplefilter("ignore")
        ctx = autocast_context(CUDA, "auto")
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100: float32
    with autocast_context(CUDA, "auto"):
        assert not torch.is_autocast_enabled("cuda")


@pytest.mark.parametrize("name", list(TINY_KWARGS))
def test_every_loss_term_is_float32_under_bf16_autocast(name):
    """What makes bf16 safe: the loss and every logged term are reduced in float32 whatever the forward ran in."""
    variants = {"sparse": [dict(penalty="kl"), dict(penalty="l1"), dict(penalty="topk", k=2)],
                "multimodal": [dict(fusion="poe"), dict(fusion="moe"), dict(fusion="shared")]}.get(name, [{}])
    specs = mm.modality_specs(("image", "audio", "text")) if name == "multimodal" else None
    batch = {"image": torch.rand(8, 1, 28, 28)}
    if specs:
        batch.update(audio=torch.randn(8, mm.AUDIO_FRAMES, 13),
                     text=mm.encode_text([mm.text_form("the digit {w}", d % 10) for d in range(8)]))
    for extra in variants:
        model = aelab.build_model(name, modalities=specs, **{**TINY_KWARGS[name], **extra})
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(batch)
        ran = out.logits if out.logits is not None else out.recon  # the multimodal model gives no logits
        assert ran.dtype == torch.bfloat16, "the forward pass did not run in bf16: the test checks nothing"
        assert out.loss.dtype == torch.float32
        assert all(v.dtype == torch.float32 for v in out.terms.values()), {k: v.dtype for k, v in out.terms.items()}


def test_channels_last_only_for_convolutions():
    conv = aelab.build_model("conv", **TINY_KWARGS["conv"])
    dense = aelab.build_model("dense", **TINY_KWARGS["dense"])
    assert wants_channels_last(conv, CUDA) and wants_channels_last(conv, CPU)
    assert not wants_channels_last(dense, CUDA) and not wants_channels_last(dense, CPU)
    assert not wants_channels_last(conv, torch.device("meta"))


def test_channels_last_training_matches_and_saves_plain_weights(small_mnist, tmp_path, monkeypatch):
    """The trainer's channels-last path learns the same model as the plain layout and writes weights
    that load into a freshly built (plain) one."""
    data = _tiny(small_mnist, 400, 100)
    common = dict(epochs=1, batch_size=50, progress=False, log=None, report=False, latent_dim=4,
                  hidden_dims=[4, 8], device="cpu")
    nhwc = aelab.train("conv", data, out=tmp_path / "nhwc", **common)
    monkeypatch.setattr(trainer_mod, "wants_channels_last", lambda model, device: False)
    plain = aelab.train("conv", data, out=tmp_path / "plain", **common)
    w_plain, w_nhwc = plain.model.encoder.body[2].weight, nhwc.model.encoder.body[2].weight  # 4 -> 8 channels
    assert w_plain.is_contiguous() and not w_plain.is_contiguous(memory_format=torch.channels_last)
    assert w_nhwc.is_contiguous(memory_format=torch.channels_last) and not w_nhwc.is_contiguous()
    assert nhwc.last["test_loss"] == pytest.approx(plain.last["test_loss"], rel=1e-4)
    reloaded = aelab.load_model(tmp_path / "nhwc" / "model.pt")
    x = data.x_test[:16].float() / 255
    torch.testing.assert_close(reloaded.reconstruct(x), nhwc.model.eval().reconstruct(x))


def test_fused_adam_on_cpu():
    opt = make_adam(torch.nn.Linear(3, 2).parameters(), 1e-3)
    assert isinstance(opt, LeanAdam) and opt.defaults.get("fused") is True


def test_lean_adam_updates_bit_for_bit_like_torch_adam():
    """Same weights and state after steps with a changing learning rate, a state-dict round trip, and a
    step where one parameter has no gradient (the fallback path)."""
    torch.manual_seed(0)
    a, b = aelab.build_model("vae", **TINY_KWARGS["vae"]), aelab.build_model("vae", **TINY_KWARGS["vae"])
    b.load_state_dict(a.state_dict())
    ref = torch.optim.Adam(a.parameters(), lr=1e-3, weight_decay=1e-4, fused=True)
    lean = LeanAdam(b.parameters(), lr=1e-3, weight_decay=1e-4)
    x = torch.rand(16, 1, 28, 28)
    for i in range(6):
        for model, opt in ((a, ref), (b, lean)):
            torch.manual_seed(i)
            opt.zero_grad(set_to_none=True)
            model(x).loss.backward()
            if i == 4:
                next(model.parameters()).grad = None
            for group in opt.param_groups:
                group["lr"] = 1e-3 * (i + 1)
            opt.step()
        if i == 2:
            lean.load_state_dict(lean.state_dict())
    assert lean._lists is not None  # the fast path did run
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    sa, sb = ref.state_dict()["state"], lean.state_dict()["state"]
    assert all(torch.equal(sa[k][n], sb[k][n]) for k in sa for n in sa[k])


def test_cosine_schedule_and_resume_bit_identical(small_mnist, tmp_path):
    cfg = RunConfig(lr=2.0, lr_schedule="cosine", epochs=4)
    assert [scheduled_lr(cfg, e) for e in (0, 2, 4)] == pytest.approx([2.0, 1.0, 0.0])
    assert scheduled_lr(RunConfig(lr=2.0), 3) == 2.0
    data = _tiny(small_mnist, 300, 50)
    common = dict(batch_size=50, progress=False, log=None, report=False, latent_dim=4, hidden_dims=[8],
                  lr_schedule="cosine", lr=3e-3)
    full = aelab.train("dense", data, out=tmp_path / "full", epochs=3, **common)

    def crash(line):  # the process dies after epoch 1 (its checkpoint is written): a 3-epoch curve, cut short
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        aelab.train("dense", data, out=tmp_path / "part", epochs=3, **dict(common, log=crash))
    part = aelab.train("dense", data, out=tmp_path / "part", resume=True, epochs=3, progress=False, log=None,
                       report=False)
    assert all(torch.equal(p, q) for p, q in zip(full.model.state_dict().values(), part.model.state_dict().values()))


class _CountHostReads(TorchFunctionMode):
    """Counts the calls that copy a device value to the host (a GPU sync): item, tolist, bool, float, int."""

    READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
             torch.Tensor.__int__, torch.Tensor.__index__}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _tiny(data, n_train=200, n_test=50):
    return aelab.Dataset("tiny", data.x_train[:n_train], data.x_test[:n_test])


def _host_reads(data, batch_size, tmp_path):
    model = aelab.build_model("dense", latent_dim=4, hidden_dims=[16])
    cfg = RunConfig(epochs=1, batch_size=batch_size, device="cpu")
    trainer = Trainer(model, data, cfg, tmp_path / f"b{batch_size}", progress=False, log=None)
    trainer.out.mkdir(parents=True)
    with _CountHostReads() as mode:
        trainer._run_epoch(1)
    return mode.count


def test_step_loop_reads_nothing_back_per_step(small_mnist, tmp_path):
    """Host reads per epoch do not grow with the number of steps (4 steps vs 40)."""
    few, many = _host_reads(_tiny(small_mnist), 50, tmp_path), _host_reads(_tiny(small_mnist), 5, tmp_path)
    assert many == few, (few, many)
    assert few < 20


class _NaNAt(torch.nn.Module):
    """A stand-in model whose loss is NaN from its ``bad``-th call on (the trainer needs only .loss/.terms)."""

    def __init__(self, bad: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.calls, self.bad = 0, bad

    def forward(self, batch):
        x = batch["image"]  # a batch is a mapping {modality: tensor}
        self.calls += 1
        loss = (self.w * x).mean() * (float("nan") if self.calls >= self.bad else 1.0)
        return AEOutput(loss=loss, recons={"image": x}, z=x.flatten(1), terms={"recon": loss})


@pytest.mark.parametrize("bad", [1, 7])
def test_nan_reports_its_first_step(small_mnist, tmp_path, bad):
    trainer = Trainer(_NaNAt(bad), _tiny(small_mnist, 1000), RunConfig(epochs=1, batch_size=100, device="cpu"), tmp_path,
                      progress=False, log=None)
    with pytest.raises(aelab.AelabError, match=rf"at epoch 1, step {bad}:"):
        trainer.fit()


def test_first_nonfinite_keeps_an_earlier_step_and_offsets():
    losses = torch.tensor([0.5, 0.4, float("inf"), float("nan")])
    assert first_nonfinite(losses, 10, torch.tensor(-1)).item() == 12
    assert first_nonfinite(losses, 10, torch.tensor(3)).item() == 3
    assert first_nonfinite(losses[:2], 0, torch.tensor(-1)).item() == -1


def test_precision_setting_is_checked():
    assert RunConfig(precision="bf16").validate().precision == "bf16"
    with pytest.raises(aelab.AelabError, match="precision must be"):
        RunConfig(precision="fp16").validate()


def test_benchmark_flop_count_of_the_dense_step():
    """benchmarks/hardware.py counts every matmul of a training step: forward, and backward except the
    input gradient of the first layer (the images need none)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import hardware

    model = aelab.build_model("dense", latent_dim=32)
    calls = hardware.record_heavy_ops(lambda: model(torch.rand(128, 1, 28, 28)).loss.backward())
    sizes = [(784, 256), (256, 128), (128, 32), (32, 128), (128, 256), (256, 784)]
    expected = 128 * sum(6 * i * o for i, o in sizes) - 2 * 128 * 784 * 256
    assert len(calls) == 6 + 11
    from torch.utils.flop_counter import FlopCounterMode

    make = lambda a: a.make() if isinstance(a, hardware._Spec) else a  # noqa: E731
    with FlopCounterMode(display=False) as counter:
        for f, args, kw in calls:
            f(*[make(a) for a in args], **{k: make(v) for k, v in kw.items()})
    assert counter.get_total_flops() == expected


def test_benchmark_bare_vae_computes_the_examples_loss():
    """The speed benchmark's bare loop (its ceiling) computes the same per-image loss as pytorch/examples'
    VAE, only in a cheaper form: same weights and the same noise give the same number."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import baselines

    torch.manual_seed(0)
    bare = baselines.BareVAE()
    reference = bare.as_examples()
    x = torch.rand(16, 1, 28, 28)
    torch.manual_seed(1)
    fast = bare(x)
    torch.manual_seed(1)
    recon, mu, logvar = reference(x)
    slow = baselines.vae_loss(recon, x, mu, logvar) / len(x)
    assert fast.item() > 400  # an untrained model: ~543 nats for uniform pixels, so the check has teeth
    assert torch.allclose(fast, slow, rtol=1e-5)
