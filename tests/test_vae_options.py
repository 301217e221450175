"""Known answers for the VAE's likelihood options: the IWAE loss and its gradient estimators, the mog and
VampPrior priors (and evaluation using them), gated and residual hidden blocks."""
import math

import pytest
import torch

import aelab
from aelab.data.batches import as_float
from aelab.errors import AelabError
from aelab.evaluation.likelihood import iwae_from_log_weights, iwae_nll, log_importance_weights, neg_elbo, seeded
from aelab.models.vae import (GatedDense, ResidualDense, hidden_stack, iwae_bound, mixture_log_prob,
                              standard_normal_log_prob)


def _vae(name="vae", seed=0, **kw):
    torch.manual_seed(seed)
    base = {"vae": dict(latent_dim=3, hidden_dims=[16]), "conv-vae": dict(latent_dim=3, hidden_dims=[4, 8])}[name]
    return aelab.build_model(name, (1, 28, 28), **{**base, **kw})


def _x(n=5, seed=1):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)).round()


def _grads(model, prefix):
    return {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None}


# ------------------------------------------------------------------ the IWAE bound
def test_iwae_bound_known_answers():
    log_w = torch.randn(7, 4, dtype=torch.float64) * 5 - 100
    assert torch.allclose(iwae_bound(log_w[:1]), -log_w[0])  # K = 1: -log w
    equal = log_w[:1].expand(7, 4)
    assert torch.allclose(iwae_bound(equal), -log_w[0])  # equal weights: -log w whatever K
    assert (iwae_bound(log_w) <= (-log_w).mean(0)).all()  # Jensen, for every draw
    manual = -torch.log(torch.exp(log_w + 100).mean(0)) + 100
    assert torch.allclose(iwae_bound(log_w), manual)
    assert torch.equal(iwae_from_log_weights(log_w), iwae_bound(log_w))


@pytest.mark.parametrize("prior", ["normal", "mog"])
def test_iwae_loss_is_the_bound_on_the_models_log_weights(prior):
    """With K = 5 the training loss is -(logsumexp log w - log 5) on the same draws that evaluation's
    log_importance_weights gives (weight 1); recon + kl = neg_elbo = mean of -log w >= the bound."""
    model = _vae(iwae_k=5, prior=prior).eval()
    x = _x()
    torch.manual_seed(3)
    out = model(x)
    torch.manual_seed(3)
    with torch.no_grad():
        q = model.posterior(x)
        log_w = log_importance_weights(model, x, q, q.sample(5))  # (5, B)
    assert out.loss.item() == pytest.approx(iwae_bound(log_w).mean().item(), rel=1e-5)
    assert out.terms["iwae"].item() == pytest.approx(out.loss.item(), rel=1e-6)
    assert out.terms["neg_elbo"].item() == pytest.approx((-log_w).mean().item(), rel=1e-5)
    assert out.terms["recon"].item() + out.terms["kl"].item() == pytest.approx(out.terms["neg_elbo"].item(), rel=1e-6)
    assert out.terms["iwae"] <= out.terms["neg_elbo"]


def test_iwae_with_one_sample_is_minus_log_w_of_that_sample():
    model = _vae(prior="mog", prior_components=2).eval()  # a non-normal prior: the K = 1 loss is -log w
    x = _x()
    torch.manual_seed(4)
    out = model(x)
    torch.manual_seed(4)
    with torch.no_grad():
        q = model.posterior(x)
        z = q.sample(1)
        log_w = model.log_likelihood(model.decode_logits(z), x) + model.prior_log_prob(z) - q.log_prob(z)
    assert out.loss.item() == pytest.approx(-log_w.mean().item(), rel=1e-6)
    assert "iwae" not in out.terms


def test_k1_normal_prior_keeps_the_closed_form_kl():
    model = _vae().eval()
    x = _x()
    out = model(x)
    with torch.no_grad():
        assert out.terms["kl"].item() == pytest.approx(model.posterior(x).kl().mean().item(), rel=1e-6)


def test_kl_warmup_weights_the_prior_ratio_inside_each_log_weight():
    """At KL weight 0 the K = 4 loss is the bound on log p(x|z) alone; at weight 1 (after warm-up) the full bound."""
    model = _vae(iwae_k=4, kl_warmup=2).train()
    x = _x()
    model.set_progress(0.0)
    torch.manual_seed(5)
    out = model(x)
    torch.manual_seed(5)
    q = model.posterior(x)
    z = q.sample(4)
    log_px = model.log_likelihood(model.decode_logits(z), x)
    assert out.loss.item() == pytest.approx(iwae_bound(log_px).mean().item(), rel=1e-6)
    full = iwae_bound(log_px + standard_normal_log_prob(z) - q.log_prob(z)).mean()
    assert out.terms["iwae"].item() == pytest.approx(full.item(), rel=1e-6)  # the reported bound keeps the ratio
    assert abs(full.item() - out.loss.item()) > 1e-3


# ------------------------------------------------------------------ gradient estimators
def _iwae_grads(model, x, k, gradient, seed=6):
    model.zero_grad()
    torch.manual_seed(seed)
    model.importance_weighted(model.posterior(x), x, k, 1.0, gradient).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_dreg_gives_the_decoder_and_prior_the_iwae_gradient_and_changes_the_encoders():
    model = _vae(iwae_k=4, prior="mog", prior_components=2).double()
    x = _x().double()
    dreg, reparam = _iwae_grads(model, x, 4, "dreg"), _iwae_grads(model, x, 4, "reparam")
    for name in dreg:
        if name.startswith(("decoder", "prior_")):
            assert torch.allclose(dreg[name], reparam[name], rtol=1e-8, atol=1e-10), name
    encoder = [n for n in dreg if n.startswith(("encoder", "to_moments"))]
    assert encoder and not all(torch.allclose(dreg[n], reparam[n], rtol=1e-3) for n in encoder)


def _encoder_params(model):
    return [p for n, p in model.named_parameters() if n.startswith(("encoder", "to_moments"))]


def test_dreg_encoder_gradient_is_sum_of_squared_weights_times_the_path_derivative():
    """Tucker et al. 2019, eq. 7, by hand: sum_k w~_k^2 d log w_k / dz_k dz_k / dphi (log q with stopped
    parameters), averaged over the batch, against the model's K = 3 dreg gradient."""
    model = _vae(iwae_k=3).double()  # float64: the two sums agree to rounding
    x = _x().double()
    got = _iwae_grads(model, x, 3, "dreg")
    torch.manual_seed(6)
    q = model.posterior(x)
    z = q.sample(3)
    zl = z.detach().requires_grad_(True)
    stopped = torch.distributions.Normal(q.mean.detach(), q.std.detach())
    log_w = model.log_likelihood(model.decode_logits(zl), x) + standard_normal_log_prob(zl) \
        - stopped.log_prob(zl).sum(-1)  # (3, B)
    (dlogw_dz,) = torch.autograd.grad(log_w.sum(), zl)  # each log w_k depends on its own z_k
    w = torch.softmax(log_w.detach(), 0).unsqueeze(-1)
    manual = torch.autograd.grad(z, _encoder_params(model), grad_outputs=-(w ** 2) * dlogw_dz / len(x))
    names = [n for n, _ in model.named_parameters() if n.startswith(("encoder", "to_moments"))]
    for name, g in zip(names, manual):
        assert torch.allclose(got[name], g, rtol=1e-8, atol=1e-10), name


def test_dreg_with_one_sample_is_sticking_the_landing():
    """K = 1: the full reparameterised gradient of -log w minus the score term d log q_phi(z)/dphi at fixed z
    (Roeder et al. 2017) equals the model's dreg gradient."""
    model = _vae().double()
    x = _x().double()
    got = _iwae_grads(model, x, 1, "dreg")
    params = _encoder_params(model)
    torch.manual_seed(6)
    q = model.posterior(x)
    z = q.sample(1)
    log_w = model.log_likelihood(model.decode_logits(z), x) + standard_normal_log_prob(z) - q.log_prob(z)
    full = torch.autograd.grad(-log_w.mean(), params, retain_graph=True)
    score = torch.autograd.grad(q.log_prob(z.detach()).mean(), params)
    names = [n for n, _ in model.named_parameters() if n.startswith(("encoder", "to_moments"))]
    for name, f, s in zip(names, full, score):
        assert torch.allclose(got[name], f - s, rtol=1e-8, atol=1e-10), name


# ------------------------------------------------------------------ priors
def test_mog_with_one_standard_component_is_the_standard_normal():
    z = torch.randn(4, 6, 3)
    means, logvars = torch.zeros(1, 3), torch.zeros(1, 3)
    assert torch.allclose(mixture_log_prob(z, means, logvars), standard_normal_log_prob(z), atol=1e-5)
    model = _vae(prior="mog", prior_components=1)
    with torch.no_grad():
        model.prior_means.zero_()
    assert torch.allclose(model.prior_log_prob(z), standard_normal_log_prob(z), atol=1e-5)


def test_mixture_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    means, logvars = torch.randn(5, 3) * 2, torch.randn(5, 3) - 3  # narrow components: the expansion's hard case
    z = means[torch.arange(40) % 5] + 0.1 * torch.randn(40, 3)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(5)),
        torch.distributions.Independent(torch.distributions.Normal(means, (0.5 * logvars).exp()), 1))
    assert torch.allclose(mixture_log_prob(z, means, logvars), mix.log_prob(z), atol=1e-4)


def test_vamp_with_one_pseudo_input_is_its_posterior():
    model = _vae(prior="vamp", prior_components=1).eval()
    z = torch.randn(2, 6, 3)
    with torch.no_grad():
        q = model.posterior(model.pseudo_input_values())  # (1, D)
        assert torch.allclose(model.prior_log_prob(z), q.log_prob(z.unsqueeze(-2)).squeeze(-1), atol=1e-5)


def _grid_mass(log_prob, dim, half_width=10.0, points=801):
    axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    cell = (axis[1] - axis[0]).item() ** dim
    grid = torch.stack(torch.meshgrid(*[axis] * dim, indexing="ij"), -1).reshape(-1, dim)
    return log_prob(grid).exp().sum().item() * cell


def test_mog_prior_integrates_to_one_in_1d():
    model = _vae(prior="mog", prior_components=3, latent_dim=1).double()
    with torch.no_grad():
        model.prior_means.copy_(torch.tensor([[-2.0], [0.5], [3.0]]))
        model.prior_logvars.copy_(torch.tensor([[-1.0], [0.0], [0.7]]))
        assert _grid_mass(model.prior_log_prob, 1, points=4001) == pytest.approx(1.0, abs=1e-4)


def test_vamp_prior_integrates_to_one_in_2d():
    model = _vae(prior="vamp", prior_components=4, latent_dim=2).double().eval()
    with torch.no_grad():
        means, logvars = model.prior_mixture()
        assert logvars.min() > math.log(0.3 ** 2) and means.abs().max() < 4  # the grid resolves every component
        assert _grid_mass(model.prior_log_prob, 2, points=401) == pytest.approx(1.0, abs=1e-3)


def test_sampling_draws_from_the_chosen_prior():
    model = _vae(prior="mog", prior_components=1).eval()
    with torch.no_grad():
        model.prior_means.fill_(2.0)
        model.prior_logvars.fill_(-30.0)  # a point mass at (2, 2, 2)
        drawn = model.sample(3, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(drawn, model.decode(torch.full((3, 3), 2.0)), atol=1e-5)
    vamp = _vae(prior="vamp", prior_components=4).eval()
    a = vamp.sample(6, generator=torch.Generator().manual_seed(1))
    assert a.shape == (6, 1, 28, 28) and torch.equal(a, vamp.sample(6, generator=torch.Generator().manual_seed(1)))


def test_vamp_pseudo_inputs_start_from_data():
    model = _vae(prior="vamp", prior_components=3)
    x = _x(2)  # fewer rows than components: reused in turn
    model.init_from_data(x)
    assert torch.equal(model.pseudo_inputs[0], x[0].clamp(0.01, 0.99))
    assert torch.equal(model.pseudo_inputs[2], x[0].clamp(0.01, 0.99))
    assert torch.equal(model.pseudo_input_values(), model.pseudo_inputs.detach().clamp(0, 1))


def test_evaluation_uses_the_models_prior():
    """A mog prior shifted to mean 3: iwae_nll (K = 1) is -log w with that prior, neither the N(0, I) formula
    nor the closed-form KL; neg_elbo estimates the KL on the same draw."""
    model = _vae(prior="mog", prior_components=1).eval()
    with torch.no_grad():
        model.prior_means.fill_(3.0)
    x = _x(4)
    nll = iwae_nll(model, x, 1, seed=2)
    with seeded(2, x.device), torch.no_grad():
        q = model.posterior(x)
        z = q.sample(1)
        log_px = model.log_likelihood(model.decode_logits(z), x)[0]
        ours = -(log_px + mixture_log_prob(z, torch.full((1, 3), 3.0), torch.zeros(1, 3))[0] - q.log_prob(z)[0])
        standard = -(log_px + standard_normal_log_prob(z)[0] - q.log_prob(z)[0])
    assert torch.allclose(nll.float(), ours, rtol=1e-5)
    assert (nll.float() - standard).abs().min() > 5  # 3 dims shifted by 3: ~13.5 nats apart
    assert torch.allclose(neg_elbo(model, x, seed=2), nll)


# ------------------------------------------------------------------ hidden blocks
def test_gated_block_known_answer():
    block = GatedDense(2, 3)
    with torch.no_grad():
        block.linear.weight.copy_(torch.arange(12.0).reshape(6, 2) / 10 - 0.5)
        block.linear.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0, 0.5, -1.0]))
    x = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
    w, b = block.linear.weight, block.linear.bias
    a_out = x @ w[:3].T + b[:3]
    gate = x @ w[3:].T + b[3:]
    assert torch.allclose(block(x), a_out * torch.sigmoid(gate))


def test_residual_block_and_stacks():
    block = ResidualDense(2)
    with torch.no_grad():
        block.body[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        block.body[0].bias.zero_()
    assert torch.equal(block(torch.tensor([[2.0, 3.0]])), torch.tensor([[4.0, 3.0]]))  # x + relu(Wx)
    stack = hidden_stack([784, 16, 16, 8], "residual")
    assert isinstance(stack[0], torch.nn.Sequential) and isinstance(stack[1], ResidualDense)
    assert isinstance(stack[2], torch.nn.Linear)  # the output layer stays linear
    gated = aelab.build_model("vae", latent_dim=4, hidden_dims=[16, 8], hidden_block="gated")
    assert [type(m).__name__ for m in gated.encoder] == ["GatedDense", "GatedDense"]
    assert [type(m).__name__ for m in gated.decoder] == ["GatedDense", "GatedDense", "Linear"]
    plain = aelab.build_model("vae", latent_dim=4, hidden_dims=[16])
    assert list(plain.state_dict()) == ["encoder.0.weight", "encoder.0.bias", "to_moments.weight", "to_moments.bias",
                                        "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias"]


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize("settings, message", [
    (dict(iwae_k=0), "iwae_k must be an integer >= 1"),
    (dict(iwae_k=5, iwae_gradient="score"), "iwae_gradient must be 'dreg' or 'reparam'"),
    (dict(iwae_gradient="dreg"), "iwae_gradient applies to the IWAE loss"),
    (dict(prior="flow"), "prior must be one of normal, mog, vamp"),
    (dict(prior_components=5), "prior_components applies to the mog and vamp priors"),
    (dict(prior="vamp", prior_components=0), "prior_components must be at least 1"),
    (dict(hidden_block="dense"), "hidden_block must be one of plain, gated, residual"),
    (dict(hidden_block="residual", hidden_dims=[512, 256]), "hidden_block residual skips over layers of equal width"),
    (dict(hidden_block="residual"), "hidden_dims default has none: pass --hidden-dims 512,512"),
])
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(AelabError, match=message):
        aelab.RunConfig(model="vae", **settings).validate()
    with pytest.raises(AelabError, match=message):
        aelab.build_model("vae", **settings)


def test_defaults_are_recorded_and_conv_vae_has_no_hidden_block():
    assert aelab.build_model("vae", prior="vamp", latent_dim=4).settings.prior_components == 500
    assert aelab.build_model("vae", prior="mog", latent_dim=4).settings.prior_components == 10
    assert aelab.build_model("vae", iwae_k=2, latent_dim=4).settings.iwae_gradient == "dreg"
    with pytest.raises(AelabError, match="--hidden-block does not apply to --model conv-vae; it is a setting of vae"):
        aelab.RunConfig(model="conv-vae", hidden_block="gated").validate()
    aelab.RunConfig(model="conv-vae", prior="vamp", iwae_k=3, iwae_gradient="reparam").validate()


# ------------------------------------------------------------------ training
OPTIONS = {
    "elbo": {}, "iwae-reparam": dict(iwae_k=4, iwae_gradient="reparam"), "iwae-dreg": dict(iwae_k=4),
    "mog": dict(prior="mog"), "vamp": dict(prior="vamp", prior_components=50), "gated": dict(hidden_block="gated"),
    "residual": dict(hidden_block="residual", hidden_dims=[64, 64]),
}


@pytest.mark.parametrize("option", OPTIONS)
def test_one_epoch_on_real_digits_lowers_the_loss(option, mnist5k, one_thread):
    """One epoch of batch 32 on 512 digits of mnist5k lowers each option's own loss on a held-out batch. The
    decoder starts at the mean image (~204 nats), where the first steps are slow: 16 steps took off 1.7 to 8
    nats per option when this was written."""
    model = aelab.build_model("vae", latent_dim=8, **{"hidden_dims": [64], **OPTIONS[option]})
    train = as_float(mnist5k.x_train[:512])
    held = as_float(mnist5k.x_test[:128])
    model.init_from_data(train)

    def held_loss():
        with seeded(0, held.device), torch.no_grad():
            return model.eval()(held).loss.item()

    before = held_loss()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for batch in train.split(32):
        opt.zero_grad()
        model(batch).loss.backward()
        opt.step()
    assert held_loss() < before - 1


def test_iwae_dreg_with_a_vampprior_trains_under_bf16_autocast():
    """The GPU's precision "auto" runs the forward pass in bf16: the densities are taken in float32 and the
    dreg hook hands back a gradient of z's own dtype (autograd refuses any other)."""
    model = _vae(iwae_k=3, prior="vamp", prior_components=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(_x())
    assert out.loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in out.terms.values())
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
