"""Figures: each function writes a PNG of a sensible size that is not blank, from a tiny trained model;
the helpers behind them (mosaic, projection, unit pictures, picks) against cases with known answers."""
import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torch import nn

import aelab
from aelab.data.batches import as_float
from aelab.errors import AelabError
from aelab.evaluation import encode_all, firing_rates
from aelab import viz
from aelab.viz.figures import mosaic, plt, _save
from aelab.viz.latent import project
from aelab.viz.run_figures import FIGURES, class_balanced_indices, write_run_figures
from aelab.viz.units import top_indices, typical_scale, unit_features
from aelab.viz import units as units_module

from .conftest import TINY_KWARGS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A blank picture (a white canvas, or one with only a title) has a grey-level variance far below this;
# every figure with content measured above 0.014 (tested below for the blank cases).
VARIANCE_FLOOR = 0.005


def grey(path) -> np.ndarray:
    """The PNG as grey levels in [0, 1], (H, W)."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, f"{path} is not a PNG"
    img = imread(path)
    return img[..., :3].mean(-1) if img.ndim == 3 else img


def assert_picture(path, min_size=(300, 150), max_size=(2500, 2500)) -> np.ndarray:
    img = grey(path)
    h, w = img.shape
    assert min_size[0] <= w <= max_size[0] and min_size[1] <= h <= max_size[1], f"{path.name} is {w}x{h} px"
    assert img.var() > VARIANCE_FLOOR, f"{path.name} looks blank (variance {img.var():.4f})"
    return img


@pytest.fixture(scope="module")
def runs(small_mnist, tmp_path_factory):
    """Tiny models trained two epochs on 1,000 real digits: dense, sparse (kl) and a 2-D VAE."""
    root = tmp_path_factory.mktemp("viz")
    out = {}
    for name, kwargs in (("dense", TINY_KWARGS["dense"]), ("sparse", TINY_KWARGS["sparse"]),
                         ("vae", dict(latent_dim=2, hidden_dims=[32]))):
        torch.manual_seed(0)
        model = aelab.build_model(name, **kwargs)
        out[name] = aelab.train(model, small_mnist, out=root / name, epochs=2, progress=False, log=None, report=False)
    return out


@pytest.fixture(scope="module")
def x10(small_mnist):
    return as_float(small_mnist.x_test[class_balanced_indices(small_mnist.y_test, 10)])


def test_the_blankness_floor_catches_blank_figures(tmp_path):
    fig = plt.figure(figsize=(6, 4))
    assert grey(_save(fig, tmp_path / "white.png")).var() < VARIANCE_FLOOR / 10
    fig = plt.figure(figsize=(6, 4))
    fig.suptitle("a title and nothing else")
    assert grey(_save(fig, tmp_path / "title.png")).var() < VARIANCE_FLOOR / 2


def test_loss_curves_have_a_panel_per_term(runs, tmp_path):
    one = assert_picture(viz.plot_loss_curves(runs["dense"].history, tmp_path / "d.png"))
    three = assert_picture(viz.plot_loss_curves(runs["sparse"].history, tmp_path / "s.png"))  # loss, recon, sparsity
    assert three.shape[1] == 3 * one.shape[1]  # dense: the loss alone (its only term, recon, is the loss)


def test_reconstructions_and_their_comparison(runs, x10, tmp_path):
    r10 = assert_picture(viz.plot_reconstructions(runs["dense"].model, x10, tmp_path / "r10.png"))
    r5 = grey(viz.plot_reconstructions(runs["dense"].model, x10, tmp_path / "r5.png", n=5))
    assert r10.shape[1] > r5.shape[1]  # one column per digit
    models = {n: r.model for n, r in runs.items()}
    cmp = assert_picture(viz.plot_reconstruction_comparison(models, x10, tmp_path / "c.png"))
    assert cmp.shape[0] > 1.5 * r10.shape[0]  # input + three rows against input + one


def test_metric_bars(tmp_path):
    metrics = {"dense": {"test_mse": 0.03, "knn_accuracy": 0.9}, "vae": {"test_mse": 0.04, "iwae_nll": 101.0}}
    assert_picture(viz.plot_metric_bars(metrics, tmp_path / "m.png", lower_is_better={"test_mse"}))


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_latent_map(runs, small_mnist, method, tmp_path):
    model = runs["dense"].model
    codes = encode_all(model, small_mnist.x_test)
    messages = []
    path = viz.plot_latent_map(codes, small_mnist.y_test, tmp_path / "m.png", method=method,
                               classes=small_mnist.classes, log=messages.append)
    assert_picture(path, min_size=(500, 400))
    assert bool(messages) == (method == "tsne")  # t-SNE says it is running


def test_projection_is_deterministic_for_a_seed_and_subsets(runs, small_mnist):
    codes = encode_all(runs["sparse"].model, small_mnist.x_test)  # (200, 8)
    a = project(codes, "tsne", n_points=150, seed=3)
    b = project(codes, "tsne", n_points=150, seed=3)
    c = project(codes, "tsne", n_points=150, seed=4)
    assert np.array_equal(a.index, b.index) and np.array_equal(a.points, b.points)
    assert a.points.shape == (150, 2) and len(np.unique(a.index)) == 150
    assert not np.array_equal(a.index, c.index)
    assert np.array_equal(project(codes, "pca", n_points=None).index, np.arange(len(codes)))


def test_projection_known_answers():
    rng = np.random.default_rng(0)
    flat = rng.normal(size=(100, 2)).astype(np.float32)
    direct = project(flat, "tsne")
    assert direct.method == "direct" and np.array_equal(direct.points, flat)  # 2-D codes drawn as they are
    # points on a line in 5-D: PCA's first axis holds all the variance, the second none
    t = rng.normal(size=(100, 1)).astype(np.float32)
    line = t * np.array([[1.0, 2.0, 0.0, -1.0, 3.0]], dtype=np.float32)
    pca = project(line, "pca")
    assert np.abs(pca.points[:, 1]).max() < 1e-4 * np.abs(pca.points[:, 0]).max()
    assert pca.axis_labels[0].startswith("PC 1 (100%")
    with pytest.raises(AelabError, match="unknown map 'isomap'"):
        project(line, "isomap")


def test_umap_without_the_package_is_a_clear_error():
    try:
        import umap  # noqa: F401
        pytest.skip("umap-learn is installed here")
    except ImportError:
        pass
    with pytest.raises(AelabError, match="pip install umap-learn"):
        project(np.random.rand(50, 4), "umap")


def test_vae_figures(runs, x10, tmp_path):
    model = runs["vae"].model
    assert viz.is_generative(model) and not viz.is_generative(runs["dense"].model)
    assert_picture(viz.plot_samples(model, tmp_path / "s.png", n=16))
    assert_picture(viz.plot_interpolations(model, x10[:3], x10[3:6], tmp_path / "i.png", steps=6))
    assert_picture(viz.plot_manifold(model, tmp_path / "m.png", n=8), min_size=(600, 600))
    with pytest.raises(AelabError, match="--latent-dim 2"):
        viz.plot_manifold(runs["dense"].model, tmp_path / "no.png")


def test_code_figures(runs, small_mnist, tmp_path):
    codes = encode_all(runs["sparse"].model, small_mnist.x_test)
    assert_picture(viz.plot_code_histogram(codes, tmp_path / "h.png"))
    assert_picture(viz.plot_code_heatmap(codes[:12], tmp_path / "m.png", labels=small_mnist.y_test[:12]))
    rates = firing_rates(codes)
    rates[:3] = 0  # three dead units are drawn in red
    img = imread(viz.plot_firing_rates(rates, tmp_path / "f.png"))
    assert grey(tmp_path / "f.png").var() > VARIANCE_FLOOR
    red = (img[..., 0] > 0.7) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
    assert red.sum() > 0, "dead units are marked in red"
    img = imread(viz.plot_firing_rates(firing_rates(codes).clamp_min(0.5), tmp_path / "g.png"))
    assert not ((img[..., 0] > 0.7) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)).any(), "no red without dead units"


def test_unit_pictures(runs, small_mnist, tmp_path):
    model = runs["sparse"].model
    codes = encode_all(model, small_mnist.x_test)
    features = unit_features(model, typical_scale(codes))
    assert features.shape == (8, 1, 28, 28)
    assert_picture(viz.plot_unit_features(features, tmp_path / "u.png"))
    assert_picture(viz.plot_top_activations(codes, as_float(small_mnist.x_test), tmp_path / "t.png", units=[0, 3],
                                            per_unit=5, features=features))


class _LinearDecoderModel(nn.Module):
    """decode(z) = W z + b: the unit pictures must be the columns of W, times the one-hot height."""

    latent_dim = 3
    input_shape = (1, 2, 2)

    def __init__(self):
        super().__init__()
        self.decoder = nn.Linear(3, 4)

    def decode(self, z):
        return self.decoder(z).view(-1, 1, 2, 2)


def test_unit_features_are_decoder_columns_for_a_linear_decoder():
    torch.manual_seed(0)
    model = _LinearDecoderModel()
    scale = torch.tensor([1.0, 2.0, 0.5])
    feats = unit_features(model, scale)
    expected = (model.decoder.weight * scale).T.reshape(3, 1, 2, 2)
    assert torch.allclose(feats, expected, atol=1e-6)
    assert viz.decoder_starts_linear(model)


def test_every_registered_decoder_starts_linear_and_a_conv_one_does_not():
    for name, kwargs in TINY_KWARGS.items():
        if not aelab.has(aelab.MODELS[name], "multimodal"):  # one decoder per modality: its own figures
            assert viz.decoder_starts_linear(aelab.build_model(name, **kwargs)), name
    model = _LinearDecoderModel()
    model.decoder = nn.Sequential(nn.ConvTranspose2d(3, 1, 2))
    assert not viz.decoder_starts_linear(model)


def test_known_answers_of_the_helpers():
    codes = np.array([[0.0, 5.0], [3.0, 1.0], [2.0, 4.0], [1.0, 0.0]])
    assert top_indices(codes, [0, 1], 2).tolist() == [[1, 2], [0, 2]]
    assert np.allclose(typical_scale(np.zeros((5, 2))), 1.0)  # a silent unit is drawn at height 1
    assert class_balanced_indices(torch.tensor([0, 0, 1, 1, 2]), 4).tolist() == [0, 2, 4, 1]
    assert class_balanced_indices(None, 3).tolist() == [0, 1, 2]
    tiles = np.stack([np.full((2, 2), v, np.float32) for v in (0.1, 0.2, 0.3)])
    m = mosaic(tiles, ncols=2, pad=1, fill=1.0)
    assert m.shape == (7, 7)
    assert m[1, 1] == np.float32(0.1) and m[1, 4] == np.float32(0.2) and m[4, 1] == np.float32(0.3)
    assert m[4, 4] == 1.0 and m[0, 0] == 1.0  # the empty cell and the gaps are fill


def test_write_run_figures_draws_every_figure_that_applies(runs, small_mnist):
    """A 2-D VAE on images: every catalogued figure applies but the feature bars of a table's rows (the dense
    model's lack of generative figures follows from is_generative, tested above)."""
    written = write_run_figures(runs["vae"], small_mnist, method="pca")
    not_here = {"feature_reconstructions.png",  # a table's rows
                "anomaly_roc.png", "anomaly_histograms.png", "anomaly_extremes.png",  # trained on normal classes
                "denoising.png",  # trained with --noise
                "decoder_atoms.png",  # a decoder that is one linear map (the VAE's has a hidden layer)
                "feature_density.png", "class_purity.png"}  # the sparse dashboard: models with the SPARSE capability
    assert set(written) == {f for f, _, _ in FIGURES} - not_here
    for name, path in written.items():
        assert path == runs["vae"].path / name
        assert_picture(path)


@pytest.mark.parametrize("units", [4, 32, 100])
def test_unit_pictures_title_fits_inside_the_figure(tmp_path, monkeypatch, units):
    """Issue 22: the dense and conv reports clipped the title of "What each unit draws" (a long one-line title
    over a narrow grid of few units). Every line of the title must lie inside the figure, whatever the unit count."""
    drawn = {}

    def keep(fig, path):
        fig.canvas.draw()
        drawn["fig"] = fig
        return path

    monkeypatch.setattr(units_module, "_save", keep)
    features = torch.randn(units, 1, 28, 28)
    units_module.plot_unit_features(features, tmp_path / "u.png", title="dense")
    fig = drawn["fig"]
    box = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
    width, height = fig.bbox.width, fig.bbox.height
    assert box.x0 >= 0 and box.x1 <= width and box.y0 >= 0 and box.y1 <= height, (box, width, height)
