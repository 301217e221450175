"""One contract, every registered model: shapes, gradients, save/load, determinism, clear shape errors."""
import pytest
import torch

import aelab
from aelab.errors import AelabError
from aelab.models.base import AEOutput
from aelab.registry import is_multimodal

from .conftest import TINY_KWARGS

NAMES = sorted(n for n in aelab.MODELS if not is_multimodal(n))  # one input shape (multimodal: its own tests)


def test_every_model_has_tiny_settings():
    assert set(TINY_KWARGS) == set(NAMES), "add tiny constructor settings for new models in conftest.py"


def _build(name, seed=0):
    torch.manual_seed(seed)
    return aelab.build_model(name, (1, 28, 28), **TINY_KWARGS[name])


def _x(n=6):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name):
    model = _build(name)
    x = _x()
    out = model(x)
    assert isinstance(out, AEOutput)
    assert out.recon.shape == x.shape
    assert out.z.shape == (6, model.latent_dim)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.terms and all(v.ndim == 0 for v in out.terms.values())
    assert model.codes(x).shape == (6, model.latent_dim)
    assert model.decode(model.codes(x)).shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    model = _build(name)
    model(_x(32)).loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{pname} has a zero gradient"


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, tmp_path):
    model = _build(name).eval()
    aelab.save_model(model, tmp_path / "m.pt")
    back = aelab.load_model(tmp_path / "m.pt")
    x = _x()
    with torch.no_grad():
        assert torch.equal(model.codes(x), back.codes(x))
        assert torch.equal(model.reconstruct(x), back.reconstruct(x))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_weights_after_a_step(name):
    states = []
    for _ in range(2):
        model = _build(name, seed=3)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        torch.manual_seed(5)
        model(_x()).loss.backward()
        opt.step()
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    other = _build(name, seed=4).state_dict()
    assert not all(torch.equal(states[0][k], other[k]) for k in other)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_input_shape_is_a_clear_error(name):
    model = _build(name)
    with pytest.raises(AelabError, match=r"built for inputs of shape \(1, 28, 28\) but got \(1, 8, 8\)"):
        model(torch.rand(2, 1, 8, 8))


def test_unknown_model_and_setting():
    with pytest.raises(AelabError, match=r"unknown model 'dens' \(did you mean 'dense'\?\)"):
        aelab.build_model("dens")
    with pytest.raises(AelabError, match="takes no setting 'latent'"):
        aelab.build_model("dense", latent=3)


def test_dense_default_sizes():
    m = aelab.build_model("dense")
    sizes = [l.out_features for l in m.encoder if isinstance(l, torch.nn.Linear)]
    assert sizes == [256, 128, 32]
    assert [l.out_features for l in m.decoder if isinstance(l, torch.nn.Linear)] == [128, 256, 784]


def test_conv_halves_twice():
    m = aelab.build_model("conv")
    x = torch.rand(2, 1, 28, 28)
    assert m.encoder.body(x).shape == (2, 64 * 7 * 7)
    with pytest.raises(AelabError, match="multiples of 4"):
        aelab.build_model("conv", (1, 30, 30))
    with pytest.raises(AelabError, match="multiples of 4"):
        aelab.build_model("conv", (784,))


def test_flat_features_model():
    m = aelab.build_model("dense", (7,), latent_dim=2, hidden_dims=[5], output="linear")
    out = m(torch.randn(4, 7))
    assert out.recon.shape == (4, 7)


@pytest.mark.parametrize("name", NAMES)
def test_data_init_starts_the_decoder_at_the_mean_image(name):
    """init_from_data sets the output bias to the logit of the mean input: per pixel for a linear last
    layer, per channel for a convolutional one."""
    model = _build(name)
    x = _x(50) * 0.5 + 0.25  # means well inside (0, 1)
    model.init_from_data(x)
    bias = model.output_bias()
    mean = x.mean(0).flatten() if bias.numel() == x[0].numel() else x.mean((0, 2, 3))
    assert torch.allclose(torch.sigmoid(bias), mean, atol=1e-5)
    if bias.numel() == x[0].numel():  # a linear last layer: a zero input to it decodes to the mean image
        last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
        assert torch.allclose(torch.sigmoid(last(torch.zeros(1, last.in_features))).flatten(), mean, atol=1e-5)


def test_data_init_of_unbounded_features_is_the_mean():
    m = aelab.build_model("dense", (7,), latent_dim=2, hidden_dims=[5], output="linear")
    x = torch.randn(40, 7) * 3 + 5
    m.init_from_data(x)
    assert torch.allclose(m.output_bias(), x.mean(0), atol=1e-5)


def _encoder_out_mean_square(model, x):
    convolutional = any(isinstance(m, torch.nn.Conv2d) for m in model.encoder.modules())
    with torch.no_grad():
        return model.encoder(x if convolutional else x.flatten(1)).square().mean().item()


@pytest.mark.parametrize("name", NAMES)
def test_he_init_keeps_the_inputs_scale_through_the_encoder(name):
    """With the default weight_init "he", unit-variance inputs leave the encoder (default sizes: two or three
    ReLU layers) with a mean square near 1; with PyTorch's default init it shrinks several-fold per layer
    (the sparse model's tied one-layer encoder has unit-norm rows under both, so it keeps the scale too)."""
    x = torch.randn(2048, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    he = aelab.build_model(name, weight_init="he")
    assert he.weight_init == "he" and he.spec["kwargs"] == {"weight_init": "he"}
    assert 0.4 < _encoder_out_mean_square(he, x) < 2.5
    torch.manual_seed(0)
    default = aelab.build_model(name, weight_init="torch")
    if name != "sparse":
        assert _encoder_out_mean_square(default, x) < 0.2
    with torch.no_grad():  # the decoder is left at PyTorch's default under both
        assert all(torch.equal(a, b) for a, b in zip(he.decoder.parameters(), default.decoder.parameters()))


def test_he_init_weights_and_fan_in():
    """Known answers: std sqrt(2 / fan_in) before a ReLU, sqrt(1 / fan_in) elsewhere, zero biases; a transposed
    convolution's fan-in counts only the taps that reach one output value."""
    from torch import nn

    from aelab.models.base import fan_in, he_init

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1000, 500), nn.ReLU(), nn.Linear(500, 400))
    he_init(net)
    assert net[0].weight.std().item() == pytest.approx((2 / 1000) ** 0.5, rel=0.02)
    assert net[2].weight.std().item() == pytest.approx((1 / 500) ** 0.5, rel=0.02)
    assert not net[0].bias.any() and not net[2].bias.any()
    assert fan_in(nn.Conv2d(32, 64, 4, stride=2)) == 32 * 16
    assert fan_in(nn.ConvTranspose2d(64, 32, 4, stride=2)) == 64 * 16 / 4
    with pytest.raises(AelabError, match="weight_init must be .he. or .torch."):
        aelab.build_model("dense", weight_init="xavier")
