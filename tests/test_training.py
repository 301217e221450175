import json

import pytest
import torch

import aelab
from aelab.config import RunConfig
from aelab.models.base import AEOutput
from aelab.training import Trainer, mean_losses


def test_training_lowers_test_loss_well_below_untrained(small_mnist, tmp_path):
    torch.manual_seed(0)
    model = aelab.build_model("dense", latent_dim=16)
    before = mean_losses(model, small_mnist.x_test)["loss"]
    run = aelab.train(model, small_mnist, epochs=4, batch_size=64, out=tmp_path / "r", progress=False, log=None,
                      report=False)
    after = run.last["test_loss"]
    assert after < 0.5 * before, (before, after)
    assert len(run.history) == 4 and run.history[-1]["epoch"] == 4


def _weights(path):
    return aelab.load_model(path / "model.pt").state_dict()


def test_resume_from_epoch_2_matches_uninterrupted(small_mnist, tmp_path):
    common = dict(epochs=4, batch_size=100, progress=False, log=None, report=False, seed=7)
    full = aelab.train("dense", small_mnist, out=tmp_path / "full", hidden_dims=[32], latent_dim=8, **common)
    # the same run stopped after epoch 2 ...
    part = dict(common, epochs=2)
    aelab.train("dense", small_mnist, out=tmp_path / "part", hidden_dims=[32], latent_dim=8, **part)
    # ... and resumed to 4 from its checkpoint
    aelab.train("dense", small_mnist, out=tmp_path / "part", resume=True, epochs=4, progress=False, log=None,
                report=False)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3, 4]


def test_existing_run_folder_is_not_overwritten(small_mnist, tmp_path):
    aelab.train("dense", small_mnist, out=tmp_path / "r", epochs=1, progress=False, log=None, report=False,
                latent_dim=2, hidden_dims=[8])
    with pytest.raises(aelab.AelabError, match="already holds a run; pass --resume"):
        aelab.train("dense", small_mnist, out=tmp_path / "r", epochs=1, progress=False, log=None)


def test_nan_loss_stops_with_epoch_and_step(small_mnist, tmp_path):
    with pytest.raises(aelab.AelabError, match=r"NaN or infinite at epoch 1, step \d+.*--grad-clip"):
        aelab.train("dense", small_mnist, out=tmp_path / "r", epochs=2, lr=1e30, loss="mse", progress=False,
                    log=None, report=False, latent_dim=2, hidden_dims=[8])


class _Affine(torch.nn.Module):
    """A model the library has never heard of (no family, no registration): the trainer needs only ``.loss`` and
    the named ``.terms`` of its output."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(()))
        self.shift = torch.nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        x = batch["image"]
        logits = x * self.scale + self.shift
        recon = (logits - x).square().mean()
        size = self.scale.square()
        return AEOutput(loss=recon + 1e-3 * size, logits=logits, terms={"recon": recon, "size": size})


def test_trainer_knows_no_model_by_name(small_mnist, tmp_path):
    cfg = RunConfig(epochs=2, batch_size=100, lr=0.05).validate()
    before = mean_losses(_Affine(), small_mnist.x_test)["recon"]  # the zero map: the mean squared pixel
    trainer = Trainer(_Affine(), small_mnist, cfg, tmp_path / "r", progress=False, log=None)
    last = trainer.fit()[-1]
    assert {"train_recon", "train_size", "test_recon", "test_size"} <= set(last)  # its own terms, by name
    assert last["test_size"] == pytest.approx(trainer.model.scale.item() ** 2)
    assert last["test_recon"] < 0.05 * before  # it learned (nearly) the identity


def test_metrics_lines_have_contract_keys(small_mnist, tmp_path):
    aelab.train("conv", small_mnist, out=tmp_path / "c", epochs=1, progress=False, log=None, report=False,
                latent_dim=4, hidden_dims=[4, 8])
    rec = json.loads((tmp_path / "c" / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("epoch", "train_loss", "test_loss", "seconds", "samples_per_second"):
        assert key in rec
    assert rec["samples_per_second"] > 0 and rec["train_recon"] == pytest.approx(rec["train_loss"])


def test_resume_with_a_new_learning_rate_uses_it(small_mnist, tmp_path):
    common = dict(progress=False, log=None, report=False, latent_dim=2, hidden_dims=[8])
    aelab.train("dense", small_mnist, out=tmp_path / "r", epochs=1, lr=1e-3, **common)
    from aelab.config import RunConfig
    from aelab.training import Trainer

    cfg = RunConfig.load(tmp_path / "r" / "config.json")
    cfg.lr, cfg.epochs = 0.05, 2
    model = aelab.build_model("dense", latent_dim=2, hidden_dims=[8])
    trainer = Trainer(model, small_mnist, cfg, tmp_path / "r", progress=False, log=None)
    assert trainer.load_checkpoint()
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [0.05]


def test_signal_during_the_last_step_records_the_epoch(small_mnist, tmp_path):
    """A stop request that lands in an epoch's last step saves that epoch as complete; resuming then
    reaches the same weights as a run never stopped."""
    import math
    import signal

    from aelab.io import load_checkpoint
    from aelab.training import TrainingInterrupted

    cfg = RunConfig(epochs=3, batch_size=100, latent_dim=2, hidden_dims=[8], seed=1)
    steps = math.ceil(len(small_mnist.x_train) / cfg.batch_size)

    torch.manual_seed(0)
    ref = Trainer(aelab.build_model("dense", latent_dim=2, hidden_dims=[8]), small_mnist, cfg, tmp_path / "ref",
                  progress=False, log=None)
    ref.fit()

    torch.manual_seed(0)
    model = aelab.build_model("dense", latent_dim=2, hidden_dims=[8])
    trainer = Trainer(model, small_mnist, cfg, tmp_path / "r", progress=False, log=None)
    calls, forward = [0], model.forward

    def stop_in_last_step(x):
        calls[0] += 1
        if calls[0] == steps:
            trainer._stop_signal = signal.SIGTERM
        return forward(x)

    model.forward = stop_in_last_step
    with pytest.raises(TrainingInterrupted):
        trainer.fit()
    state = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and "partial" not in state and len(state["history"]) == 1

    model.forward = forward
    again = Trainer(model, small_mnist, cfg, tmp_path / "r", progress=False, log=None)
    assert again.load_checkpoint()
    again.fit()
    a, b = ref.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fresh_runs_start_the_decoder_at_the_mean_image(small_mnist, tmp_path):
    seen = []

    def spied(**kw):
        model = aelab.build_model("dense", latent_dim=4, hidden_dims=[8])
        hook = model.init_from_data
        model.init_from_data = lambda x: (seen.append(x["image"].clone()), hook(x))  # a batch mapping
        return model

    common = dict(epochs=1, progress=False, log=None, report=False)
    aelab.train(spied(), small_mnist, out=tmp_path / "a", **common)
    assert len(seen) == 1  # once, before the first step, with every training image (fewer than 10,000)
    x = small_mnist.x_train.float() / 255
    assert seen[0].shape == x.shape and torch.allclose(seen[0].mean(0), x.mean(0), atol=1e-6)
    aelab.train(spied(), small_mnist, out=tmp_path / "b", data_init=False, **common)
    assert len(seen) == 1  # data_init=False: not called
