import math

import pytest
import torch

import aelab
from aelab.models.vae import DiagonalGaussian, standard_normal_log_prob


def _vae(name="vae", **kw):
    torch.manual_seed(0)
    base = {"vae": dict(latent_dim=3, hidden_dims=[16]), "conv-vae": dict(latent_dim=3, hidden_dims=[4, 8])}[name]
    return aelab.build_model(name, (1, 28, 28), **{**base, **kw})


def test_posterior_log_prob_matches_torch_distributions():
    mean, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = DiagonalGaussian(mean, logvar)
    z = q.sample()
    ref = torch.distributions.Normal(mean, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    assert torch.allclose(q.log_prob(z), ref, atol=1e-5)
    assert torch.allclose(standard_normal_log_prob(z), torch.distributions.Normal(0, 1).log_prob(z).sum(-1), atol=1e-5)
    assert q.sample(7).shape == (7, 5, 3)
    assert torch.equal(q.mode(), mean)


def test_reparameterised_sample_carries_gradients():
    mean = torch.zeros(4, 2, requires_grad=True)
    logvar = torch.zeros(4, 2, requires_grad=True)
    DiagonalGaussian(mean, logvar).sample().sum().backward()
    assert mean.grad is not None and logvar.grad is not None and logvar.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["vae", "conv-vae"])
def test_loss_is_negative_elbo_per_image(name):
    model = _vae(name).eval()
    x = torch.rand(6, 1, 28, 28).round()
    torch.manual_seed(1)
    out = model(x)
    assert out.loss.item() == pytest.approx(out.terms["recon"].item() + out.terms["kl"].item(), rel=1e-5)
    assert out.terms["neg_elbo"].item() == pytest.approx(out.loss.item(), rel=1e-5)
    # Bernoulli decoder: the recon term is BCE summed over the 784 pixels, so of order 784 * log 2 untrained
    assert 784 * 0.3 < out.terms["recon"].item() < 784 * 1.5


def test_beta_and_warmup_weight_the_kl():
    model = _vae(beta=4.0, kl_warmup=2)
    model.train()
    model.set_progress(0.0)
    assert model.kl_weight == 0.0
    model.set_progress(1.0)
    assert model.kl_weight == pytest.approx(2.0)
    model.set_progress(5.0)
    assert model.kl_weight == pytest.approx(4.0)
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(0)
    out = model(x)
    assert out.loss.item() == pytest.approx(out.terms["recon"].item() + 4.0 * out.terms["kl"].item(), rel=1e-5)


def test_gaussian_decoder_option():
    model = _vae(loss="mse")
    x = torch.rand(4, 1, 28, 28)
    out = model(x)
    assert model.log_sigma2 is not None
    # with sigma^2 = 1 the per-image NLL is 0.5 * sum((x - mean)^2) + 784/2 log(2 pi)
    mean = torch.sigmoid(out.logits)
    expected = (0.5 * (x - mean).square().flatten(1).sum(1) + 392 * math.log(2 * math.pi)).mean()
    assert out.terms["recon"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["vae", "conv-vae"])
def test_sample_and_interpolate(name):
    model = _vae(name).eval()
    imgs = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (5, 1, 28, 28) and imgs.min() >= 0 and imgs.max() <= 1
    again = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(imgs, again)
    x1, x2 = torch.rand(1, 28, 28), torch.rand(1, 28, 28)
    with torch.no_grad():
        strip = model.decode(model.interpolate(model.encode(x1[None]), model.encode(x2[None]), steps=7))
        assert strip.shape == (7, 1, 28, 28)
        assert torch.allclose(strip[0], model.reconstruct(x1[None])[0], atol=1e-6)
        assert torch.allclose(strip[-1], model.reconstruct(x2[None])[0], atol=1e-6)


def test_vae_trains_on_real_digits(small_mnist, tmp_path):
    """The VAE ends well below the best model that ignores its input: the mean training image as Bernoulli
    probabilities (where the data-initialised decoder starts)."""
    run = aelab.train("vae", small_mnist, out=tmp_path / "v", epochs=8, latent_dim=8, hidden_dims=[128],
                      binarize=True, progress=False, log=None, report=False)
    p = (small_mnist.x_train.float() / 255).mean(0).clamp(1e-3, 1 - 1e-3)
    grey = small_mnist.x_test.float() / 255  # binarized test images have these as their pixel means
    mean_image_nll = -(grey * p.log() + (1 - grey) * (1 - p).log()).flatten(1).sum(1).mean().item()
    first, last = run.history[0]["test_loss"], run.history[-1]["test_loss"]
    assert abs(first - mean_image_nll) < 0.05 * mean_image_nll  # started from the mean image
    assert last < 0.9 * mean_image_nll
