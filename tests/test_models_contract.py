"""One contract, every registered model (the multimodal one included): the protocol's verbs and shapes,
gradients, save/load, determinism, clear shape errors, and the capabilities each family declares."""
import pytest
import torch

import aelab
from aelab.data import multimodal as mm
from aelab.errors import AelabError
from aelab.modality import IMAGE, Modality
from aelab.models.base import CAPABILITIES, GENERATIVE, MULTIMODAL, SPARSE, VARIATIONAL, AEOutput, has

from aelab.models.sparse import PENALTIES

from .conftest import TINY_KWARGS

NAMES = sorted(aelab.MODELS)
# every registered model, the sparse family once per penalty and the VAE once per likelihood option (each its
# own code path): "family:variant" -> the settings it adds to the family's tiny ones
VARIANT_SETTINGS = {
    **{f"sparse:{penalty}": {"penalty": penalty, "k": 2}
       for penalty in PENALTIES if penalty != TINY_KWARGS["sparse"]["penalty"]},
    "vae:iwae": {"iwae_k": 3, "iwae_gradient": "reparam"},
    "vae:dreg": {"iwae_k": 3, "iwae_gradient": "dreg"},
    "vae:mog": {"prior": "mog", "prior_components": 3},
    "vae:vamp": {"prior": "vamp", "prior_components": 3, "iwae_k": 2},
    "vae:gated": {"hidden_block": "gated", "hidden_dims": [16, 16]},
    "vae:residual": {"hidden_block": "residual", "hidden_dims": [16, 16]},
    "conv-vae:vamp": {"prior": "vamp", "prior_components": 3},
}
VARIANTS = NAMES + list(VARIANT_SETTINGS)
IMAGE_SPECS = {IMAGE: Modality(IMAGE, (1, 28, 28), "uint8", "bernoulli")}
PAIRED_SPECS = mm.modality_specs(("image", "audio", "text"))  # image (1, 28, 28), audio (32, 13), text (16,) ids
EXPECTED = {"dense": set(), "conv": set(), "sparse": {SPARSE}, "vae": {GENERATIVE, VARIATIONAL},
            "conv-vae": {GENERATIVE, VARIATIONAL}, "multimodal": {MULTIMODAL, GENERATIVE, VARIATIONAL}}


def specs_of(name):
    return PAIRED_SPECS if has(aelab.MODELS[name.split(":")[0]], MULTIMODAL) else IMAGE_SPECS


def test_every_model_has_tiny_settings_and_declared_capabilities():
    assert set(TINY_KWARGS) == set(NAMES), "add tiny constructor settings for new models in conftest.py"
    for name in NAMES:
        assert set(aelab.MODELS[name].capabilities) == EXPECTED[name], name


def _build(name, seed=0, **extra):
    """``name`` is a registry name, or ``family:variant`` (VARIANT_SETTINGS)."""
    torch.manual_seed(seed)
    family = name.partition(":")[0]
    settings = {**TINY_KWARGS[family], **VARIANT_SETTINGS.get(name, {}), **extra}
    return aelab.build_model(family, modalities=specs_of(name), **settings)


def _batch(name, n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, m in specs_of(name).items():
        if m.likelihood == "categorical":
            out[key] = mm.encode_text([mm.text_form("the digit {w}", d % 10) for d in range(n)])
        elif m.likelihood == "bernoulli":
            out[key] = torch.rand(n, *m.shape, generator=g)
        else:
            out[key] = torch.randn(n, *m.shape, generator=g)
    return out


@pytest.mark.parametrize("name", VARIANTS)
def test_output_and_verbs(name):
    model = _build(name)
    batch = _batch(name)
    out = model(batch)
    assert isinstance(out, AEOutput)
    assert set(out.recons) == set(batch)
    assert all(out.recons[k].shape[:2] == batch[k].shape[:2] for k in batch)
    main = model.main_modality
    assert main == IMAGE and out.recon.shape == batch[main].shape
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.terms and all(v.ndim == 0 for v in out.terms.values())
    with torch.no_grad():
        z = model.encode(batch)
        assert isinstance(z, torch.Tensor) and z.shape == (6, model.latent_dim)
        assert torch.equal(model.encode(batch[main]), z) or has(model, MULTIMODAL)  # a tensor is the main modality
        assert model.decode(z).shape == batch[main].shape
        assert set(model.decode_all(z)) == set(batch)
        assert model.reconstruct(batch).shape == batch[main].shape
        path = model.interpolate(z[0], z[1], steps=5)
        assert path.shape == (5, model.latent_dim)
        assert torch.allclose(path[0], z[0]) and torch.allclose(path[-1], z[1], atol=1e-6)


@pytest.mark.parametrize("name", VARIANTS)
def test_capabilities_are_what_the_model_can_do(name):
    model = _build(name).eval()
    batch = _batch(name)
    assert set(model.capabilities) <= set(CAPABILITIES)
    with torch.no_grad():
        if has(model, GENERATIVE):
            drawn = model.sample(3, generator=torch.Generator().manual_seed(0))
            assert drawn.shape == (3, *specs_of(name)[model.main_modality].shape)
        else:
            with pytest.raises(AelabError, match="no prior to sample from"):
                model.sample(3)
        if has(model, VARIATIONAL):
            q = model.posterior(batch)
            assert torch.allclose(q.mode(), model.encode(batch), atol=1e-6)
            assert q.kl().shape == (6,) and q.log_prob(q.sample()).shape == (6,)
        if has(model, SPARSE):
            assert model.dead_units.shape == (model.latent_dim,)


def test_shared_fusion_narrows_the_capabilities():
    model = _build("multimodal", fusion="shared")
    assert has(model, MULTIMODAL) and not has(model, GENERATIVE) and not has(model, VARIATIONAL)
    assert has(aelab.MODELS["multimodal"], GENERATIVE)  # the family can; this instance cannot
    with pytest.raises(AelabError, match="no prior"):
        model.sample(2)


@pytest.mark.parametrize("name", VARIANTS)
def test_gradients_reach_every_parameter(name):
    model = _build(name)
    model(_batch(name, 32)).loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{pname} has a zero gradient"


@pytest.mark.parametrize("name", VARIANTS)
def test_save_load_round_trip(name, tmp_path):
    model = _build(name).eval()
    aelab.save_model(model, tmp_path / "m.pt")
    back = aelab.load_model(tmp_path / "m.pt")
    batch = _batch(name)
    assert type(back) is type(model) and back.capabilities == model.capabilities
    with torch.no_grad():
        assert torch.equal(model.encode(batch), back.encode(batch))
        assert torch.equal(model.reconstruct(batch), back.reconstruct(batch))


def _same(a, b) -> bool:
    """Equal tensors, NaN matching NaN (a sparse unit that kept nothing yet has a NaN threshold)."""
    if a.is_floating_point():
        return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
    return torch.equal(a, b)


@pytest.mark.parametrize("name", VARIANTS)
def test_same_seed_same_weights_after_a_step(name):
    states = []
    for _ in range(2):
        model = _build(name, seed=3)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        torch.manual_seed(5)
        model(_batch(name)).loss.backward()
        opt.step()
        states.append(model.state_dict())
    assert all(_same(states[0][k], states[1][k]) for k in states[0])
    other = _build(name, seed=4).state_dict()
    assert not all(torch.equal(states[0][k], other[k]) for k in other)


@pytest.mark.parametrize("name", VARIANTS)
def test_wrong_input_shape_is_a_clear_error(name):
    model = _build(name)
    batch = _batch(name, 2)
    batch[IMAGE] = torch.rand(2, 1, 8, 8)
    with pytest.raises(AelabError, match=r"built for .*shape \(1, 28, 28\) but got \(1, 8, 8\)"):
        model(batch)


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


def test_empty_hidden_dims_means_no_hidden_layer_everywhere():
    """hidden_dims=[] is one linear map each way, as the settings say, for every family with hidden layers
    (it used to build 256,128 for dense and 400 for the VAE); the convolutional ones refuse it clearly."""
    for name in ("dense", "sparse", "vae"):
        m = aelab.build_model(name, hidden_dims=[], latent_dim=8)
        linears = [l for l in m.modules() if isinstance(l, torch.nn.Linear)]
        widths = {(l.in_features, l.out_features) for l in linears}
        code = 16 if name == "vae" else 8  # the VAE's one layer gives the mean and the log-variance
        assert widths == {(784, code), (8, 784)}, (name, widths)
        assert m.settings.hidden_dims == []
    for name in ("conv", "conv-vae"):
        with pytest.raises(AelabError, match="two channel counts"):
            aelab.build_model(name, hidden_dims=[])


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


def test_model_built_from_a_datasets_specs_gets_its_output_from_the_values():
    """One modality's spec says whether its values lie in [0, 1]: a sigmoid output for them, linear otherwise."""
    bounded = aelab.from_arrays(torch.rand(40, 7).numpy())
    unbounded = aelab.from_arrays((torch.randn(40, 7) * 3).numpy())
    assert aelab.build_model("dense", modalities=bounded.specs()).output == "sigmoid"
    assert aelab.build_model("dense", modalities=unbounded.specs()).output == "linear"
    with pytest.raises(AelabError, match="bce loss needs data in"):
        aelab.build_model("dense", modalities=unbounded.specs(), loss="bce")
    with pytest.raises(AelabError, match="reads one modality"):
        aelab.build_model("dense", modalities=PAIRED_SPECS)


ONE_MODALITY = [n for n in NAMES if not has(aelab.MODELS[n], MULTIMODAL)]


@pytest.mark.parametrize("name", ONE_MODALITY)
def test_data_init_starts_the_decoder_at_the_mean_image(name):
    """init_from_data sets the output bias to the logit of the mean input: per pixel for a linear last
    layer, per channel for a convolutional one."""
    model = _build(name)
    x = _batch(name, 50)[IMAGE] * 0.5 + 0.25  # means well inside (0, 1)
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


@pytest.mark.parametrize("name", ONE_MODALITY)
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


def test_multimodal_honours_weight_init():
    """The multimodal model's encoders start from He weights unless weight_init is "torch" (it used to ignore
    --weight-init); its decoders are the same under both."""
    he, default = _build("multimodal", weight_init="he"), _build("multimodal", weight_init="torch")
    conv_he, conv_torch = he.encoders["image"].body[0], default.encoders["image"].body[0]
    fan = 1 * 4 * 4
    assert conv_he.weight.std().item() == pytest.approx((2 / fan) ** 0.5, rel=0.35)
    assert conv_torch.weight.std().item() < 0.8 * (2 / fan) ** 0.5  # PyTorch's default: U(+-1/sqrt(fan_in))
    assert not conv_he.bias.any() and conv_torch.bias.any()
    assert all(torch.equal(a, b) for a, b in zip(he.decoders.parameters(), default.decoders.parameters()))
    with pytest.raises(AelabError, match="weight_init must be"):
        _build("multimodal", weight_init="xavier")


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
