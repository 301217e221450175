import pytest
import torch

import aelab
from aelab.errors import AelabError
from aelab.losses import kl_sparsity_penalty
from aelab.models.sparse import THRESHOLD_MOMENTUM


def _sparse(**kw):
    torch.manual_seed(0)
    return aelab.build_model("sparse", (1, 28, 28), **{"latent_dim": 16, "hidden_dims": [32], **kw})


def test_kl_penalty_zero_at_target_and_positive_elsewhere():
    rho = 0.05
    assert kl_sparsity_penalty(torch.full((10,), rho), rho).item() == pytest.approx(0.0, abs=1e-7)
    for other in (0.01, 0.2, 0.5, 0.9):
        assert kl_sparsity_penalty(torch.full((10,), other), rho).item() > 0
    # the closed form for one unit: rho log(rho/q) + (1-rho) log((1-rho)/(1-q))
    q = torch.tensor([0.3])
    expected = 0.05 * torch.log(torch.tensor(0.05 / 0.3)) + 0.95 * torch.log(torch.tensor(0.95 / 0.7))
    assert kl_sparsity_penalty(q, 0.05).item() == pytest.approx(expected.item(), rel=1e-6)


def test_kl_code_is_the_decoders_input():
    model = _sparse(penalty="kl")
    x = torch.rand(8, 1, 28, 28)
    out = model(x)
    assert torch.all((out.z > 0) & (out.z < 1)), "the kl code is a sigmoid code"
    assert torch.allclose(model.decode_logits(out.z), out.logits)


def test_kl_penalty_moves_the_decoders_input(small_mnist):
    """Training on the penalty alone drives the mean of the code the decoder receives towards rho, and so
    changes what the (untouched) decoder outputs: the penalty constrains the decoder's input."""
    model = _sparse(penalty="kl", target_sparsity=0.05, sparsity_weight=1.0)
    x = small_mnist.x_train[:256].float() / 255
    model.decoder.requires_grad_(False)  # the decoder stays as it is: only its input can change
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    with torch.no_grad():
        code_before, recon_before = model(x).z.mean().item(), model.reconstruct(x)
    opt = torch.optim.Adam(model.encoder.parameters(), 1e-2)
    for _ in range(60):
        out = model(x)
        opt.zero_grad()
        out.terms["sparsity"].backward()
        opt.step()
    with torch.no_grad():
        code_after, recon_after = model(x).z.mean().item(), model.reconstruct(x)
    assert abs(code_before - 0.05) > 0.2  # starts near sigmoid(0) = 0.5
    assert abs(code_after - 0.05) < 0.02, (code_before, code_after)
    assert all(torch.equal(decoder_before[k], v) for k, v in model.decoder.state_dict().items())
    assert (recon_after - recon_before).abs().mean() > 1e-3


def test_topk_leaves_exactly_k_nonzeros():
    model = _sparse(penalty="topk", k=3)
    z = model.encode(torch.rand(20, 1, 28, 28))
    # relu may zero a kept value, so at most k non-zeros, and exactly k kept positions
    assert ((z != 0).sum(1) <= 3).all()
    pre = model.pre_activation(torch.rand(20, 1, 28, 28))
    code = model.activate(pre.abs() + 0.1)  # all positive pre-activations: exactly k survive
    assert ((code != 0).sum(1) == 3).all()
    kept = (pre.abs() + 0.1).topk(3, dim=1).indices
    assert torch.equal(torch.sort(kept, 1).values, torch.sort((code != 0).nonzero()[:, 1].view(20, 3), 1).values)


def test_l1_code_is_relu_and_penalty_is_mean_l1():
    model = _sparse(penalty="l1")
    x = torch.rand(8, 1, 28, 28)
    out = model(x)
    assert (out.z >= 0).all()
    assert out.terms["sparsity"].item() == pytest.approx(out.z.abs().sum(1).mean().item(), rel=1e-6)


def _topk_with_dead_units(seed: int, x: torch.Tensor, sparsity_weight: float):
    """A TopK model (16 units, k=2, one linear map each way) whose units 0..7 were made dead by construction:
    their biases lowered by 1 keep them out of the top k, and 10 training-mode passes mark them dead."""
    torch.manual_seed(seed)
    model = aelab.build_model("sparse", (1, 28, 28), latent_dim=16, penalty="topk", k=2, dead_after=5,
                              sparsity_weight=sparsity_weight)
    with torch.no_grad():
        model.encoder[-1].bias[:8] -= 1.0
        model.train()
        for _ in range(10):
            model(x)
    return model


def _fires(model, x: torch.Tensor) -> torch.Tensor:
    """(16,) bool: whether each unit is in some image's code."""
    with torch.no_grad():
        return (model.encode(x) > 0).any(0)


@pytest.mark.parametrize("seed", [0, 1])
def test_topk_counts_dead_units_and_auxk_revives_them(small_mnist, seed):
    """100 Adam steps on the model's loss: with AuxK at least half of the 8 dead units are back in the code
    (measured 7 or 8 for seeds 0-4), and no longer counted dead; without it (weight 0) their encoder rows get no
    gradient, stay bit-identical, and none fires."""
    x = small_mnist.x_train[:128].float() / 255
    for weight in (1.0, 0.0):
        model = _topk_with_dead_units(seed, x, weight)
        assert model.dead_units[:8].all() and not _fires(model, x)[:8].any()
        rows_before = model.encoder[-1].weight[:8].clone()
        opt = torch.optim.Adam(model.parameters(), 3e-2)
        for _ in range(100):
            loss = model(x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        revived = _fires(model, x)[:8]
        if weight:
            assert revived.sum() >= 4, revived
            assert not model.dead_units[:8][revived].any()  # firing again resets their counters
        else:
            assert not revived.any() and model.dead_units[:8].all()
            assert torch.equal(model.encoder[-1].weight[:8], rows_before)


def test_auxk_is_zero_without_dead_units():
    model = _sparse(penalty="topk", k=4)
    model.train()
    out = model(torch.rand(16, 1, 28, 28))
    assert out.terms["auxk"].item() == 0.0


def test_bad_sparse_settings():
    with pytest.raises(AelabError, match="k \\(40\\) cannot exceed latent_dim \\(16\\)"):
        _sparse(penalty="topk", k=40)
    with pytest.raises(AelabError, match="target_sparsity"):
        _sparse(target_sparsity=1.5)
    with pytest.raises(AelabError, match="penalty must be"):
        _sparse(penalty="l2")
    with pytest.raises(AelabError, match="k \\(40\\) cannot exceed latent_dim \\(16\\)"):
        _sparse(penalty="batchtopk", k=40)
    with pytest.raises(AelabError, match="wta penalty has no weight"):
        _sparse(penalty="wta", sparsity_weight=0.1)


def _linear(penalty, **kw):
    """A one-linear-map sparse model (latent 32) of ``penalty``, in training mode."""
    torch.manual_seed(0)
    return aelab.build_model("sparse", (1, 28, 28), latent_dim=32, hidden_dims=[], penalty=penalty, **kw).train()


def test_batchtopk_keeps_exactly_k_times_batch_in_training():
    model = _linear("batchtopk", k=3)
    pre = torch.randn(10, 32).abs() + 0.1  # every value positive: exactly 3 x 10 survive
    code = model.activate(pre)
    assert int((code != 0).sum()) == 30
    assert torch.equal(code[code != 0].sort().values, pre.flatten().topk(30).values.sort().values)
    assert (code != 0).sum(1).float().std() > 0, "per-sample counts vary: the k is per batch, not per sample"


def test_batchtopk_threshold_reproduces_the_training_batch():
    """The first training batch sets the inference threshold to the smallest value it kept; in eval mode the
    threshold then keeps exactly the same activations of that batch (no batch needed at inference)."""
    model = _linear("batchtopk", k=4)
    pre = torch.randn(16, 32)
    train_code = model.activate(pre)
    assert model.threshold.item() == pytest.approx(train_code[train_code > 0].min().item())
    model.eval()
    assert torch.equal(model.activate(pre), train_code)
    assert torch.equal(model.activate(pre[:1]), train_code[:1]), "one sample alone gets the same code"


def test_batchtopk_threshold_is_a_running_mean():
    model = _linear("batchtopk", k=2)
    first, second = torch.randn(8, 32), torch.randn(8, 32) + 1.0
    c1, c2 = model.activate(first), model.activate(second)
    t1, t2 = c1[c1 > 0].min(), c2[c2 > 0].min()
    assert model.threshold.item() == pytest.approx((t1 + THRESHOLD_MOMENTUM * (t2 - t1)).item(), rel=1e-6)


def test_wta_keeps_each_units_share_of_the_batch():
    model = _linear("wta", target_sparsity=0.1)
    pre = torch.randn(40, 32).abs() + 0.1
    code = model.activate(pre)
    assert ((code != 0).sum(0) == 4).all(), "each unit keeps ceil(0.1 x 40) = 4 samples"
    assert torch.equal(code != 0, pre >= pre.topk(4, dim=0).values[-1])
    model.eval()  # per-unit thresholds: the smallest value each unit kept reproduces the training code
    assert torch.equal(model.activate(pre), code)


@pytest.mark.parametrize("penalty", ["batchtopk", "wta"])
def test_batch_level_penalties_learn_and_stay_sparse(small_mnist, penalty):
    """A few hundred steps on real digits: the reconstruction improves, and the inference code stays sparse
    (batchtopk: about k units per image; wta: far fewer than all)."""
    model = _linear(penalty, k=5) if penalty == "batchtopk" else _linear(penalty)
    x = small_mnist.x_train[:1024].float() / 255
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    with torch.no_grad():
        before = model.eval()(x).terms["recon"].item()
    model.train()
    for step in range(150):
        batch = x[(step * 128) % 1024:][:128]
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = model(x).terms["recon"].item()
        l0 = (model.encode(x) > 0).sum(1).float().mean().item()
    assert after < 0.8 * before, (before, after)
    if penalty == "batchtopk":
        assert 2.5 <= l0 <= 10, l0
    else:
        assert 0 < l0 < 0.5 * 32, l0
