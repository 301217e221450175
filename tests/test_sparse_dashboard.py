"""The sparse dashboard and the probes at full scale: known answers for l0, feature density, explained variance,
class purity, the training-window dead fraction, the pixel probe and its cache, and the dashboard's figures."""
import json
import math

import numpy as np
import pytest
import scipy.sparse
import torch
from torch import nn

import aelab
from aelab.data.cache import cache_dir
from aelab.evaluation import evaluate_model
from aelab.evaluation import probes
from aelab.evaluation.metrics import (DENSITY_EPS, ExplainedVariance, chance_purity, class_purity, explained_variance,
                                      l0, log10_feature_density, mean_class_purity, mean_log10_feature_density,
                                      sparsity_summary, unit_classes)
from aelab.evaluation.probes import (linear_probe, pixel_probe, probe_accuracies, probe_matrices, stratified_subset,
                                     train_cap)
from aelab.viz.run_figures import FIGURES, write_run_figures
from aelab.viz.units import decoder_atoms, plot_class_purity, plot_feature_density, spread_units, unit_labels

from .conftest import requires_shared
from .test_viz import assert_picture
from .test_evaluation import Identity  # a perfect 'autoencoder' whose code is its input


# ------------------------------------------------------------------------------------------ explained variance
def test_explained_variance_known_answers():
    torch.manual_seed(0)
    x = torch.rand(40, 1, 3, 3)
    assert explained_variance(x, x) == 1.0  # a perfect reconstruction explains everything
    mean = x.mean(0, keepdim=True).expand_as(x)
    assert explained_variance(mean, x) == pytest.approx(0.0, abs=1e-12)  # the mean image explains nothing
    assert explained_variance(2 * mean - x, x) == pytest.approx(-3.0)  # the residual is twice the deviation: 1 - 4
    half = 0.5 * (x + mean)  # half of each deviation left: 1 - 1/4
    assert explained_variance(half, x) == pytest.approx(0.75)
    ev = ExplainedVariance()  # batch by batch, the same number (the mean is over every batch, not each one)
    for i in range(0, 40, 7):
        ev.update(half[i:i + 7], x[i:i + 7])
    assert ev.value() == pytest.approx(0.75)
    assert math.isnan(explained_variance(torch.ones(5, 4), torch.ones(5, 4)))  # inputs that do not vary


# ------------------------------------------------------------------------------------------ l0 and feature density
def test_l0_counts_exactly_k_nonzeros_per_row():
    torch.manual_seed(0)
    pre = torch.randn(50, 30)
    k = 4
    values, idx = pre.topk(k, dim=1)
    code = torch.zeros_like(pre).scatter(1, idx, values.abs() + 0.5)  # exactly k nonzeros per row, all above 0.01
    assert l0(code) == k
    assert sparsity_summary(code)["l0"] == k == sparsity_summary(code)["active_units_mean"]
    sigmoid_like = torch.full((3, 5), 0.005)  # never zero, but below the one threshold: silent, as for every model
    sigmoid_like[:, 0] = 0.9
    assert l0(sigmoid_like) == 1


def test_log10_density_of_a_unit_firing_on_a_known_fraction():
    code = torch.zeros(8, 3)
    code[:2, 0] = 1.0  # a quarter of the samples
    code[:, 1] = 0.3  # every sample
    # unit 2 never fires: log10(0 + 1e-10) = -10
    torch.testing.assert_close(log10_feature_density(torch.tensor([0.25, 1.0, 0.0])),
                               torch.tensor([math.log10(0.25 + DENSITY_EPS), math.log10(1 + DENSITY_EPS), -10.0],
                                            dtype=torch.float64))
    expected = (math.log10(0.25) + 0.0 - 10.0) / 3
    assert sparsity_summary(code)["mean_log10_feature_density"] == pytest.approx(expected, abs=1e-9)
    assert mean_log10_feature_density([0.25, 1.0, 0.0]) == pytest.approx(expected, abs=1e-9)


# ------------------------------------------------------------------------------------------ class purity
def test_class_purity_known_answers():
    code = torch.zeros(30, 4)
    labels = torch.arange(30) % 3  # 0, 1, 2, 0, 1, 2, ...
    code[labels == 1, 0] = torch.linspace(1, 2, 10)  # unit 0: its top activations are all label 1
    code[[0, 1, 4], 1] = torch.tensor([3.0, 2.0, 1.0])  # unit 1: active on three samples, labels 0, 1, 1
    code[:, 2] = torch.arange(30.0) + 1  # unit 2: strongest on the last rows: 29, 28, ... -> labels 2, 1, 0, ...
    # unit 3 never fires
    purity, majority = unit_classes(code, labels, top=6)
    assert purity[0] == 1.0 and majority[0] == 1
    assert purity[1] == pytest.approx(2 / 3) and majority[1] == 1  # only the three active samples are read
    assert purity[2] == pytest.approx(2 / 6)  # six strongest: labels 2, 1, 0, 2, 1, 0 -> two of each
    assert majority[2] == 0  # a tie: the smallest label
    assert math.isnan(purity[3]) and majority[3] == -1
    torch.testing.assert_close(class_purity(code, labels, top=6), purity, equal_nan=True)
    assert mean_class_purity(purity) == pytest.approx((1 + 2 / 3 + 1 / 3) / 3)  # over the live units only
    assert math.isnan(mean_class_purity(torch.full((3,), math.nan, dtype=torch.float64)))


def test_chance_purity_is_that_of_a_unit_blind_to_the_labels():
    assert chance_purity(np.zeros(100, dtype=int)) == 1.0  # one class: every draw is pure
    ten = np.repeat(np.arange(10), 100)
    assert 0.2 < chance_purity(ten) < 0.25  # 20 of ten balanced classes: the largest class holds 4 to 5
    rng = np.random.default_rng(0)  # a unit that fires at random reads about the same
    code = torch.from_numpy(rng.random((1000, 200)) * (rng.random((1000, 200)) < 0.1))
    assert mean_class_purity(class_purity(code, torch.from_numpy(ten))) == pytest.approx(chance_purity(ten), abs=0.02)


# ------------------------------------------------------------------------------------------ the probes
def _sparse_codes(n, seed, d=60, density=0.05):
    """Codes with ~5 % nonzero values whose label is the unit with the largest value among the first three."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, d)) < density) * rng.random((n, d)) * 3
    x[np.arange(n), rng.integers(0, 3, n)] += 1.0 + rng.random(n)
    return x.astype(np.float32), x[:, :3].argmax(1)


def test_a_sparse_code_is_fitted_as_a_sparse_matrix_to_the_same_probe():
    x_tr, y_tr = _sparse_codes(600, 0)
    x_te, y_te = _sparse_codes(300, 1)
    a, b = probe_matrices(x_tr, x_te)
    assert scipy.sparse.issparse(a) and scipy.sparse.issparse(b)
    dense = np.ones((4, 3), np.float32)
    assert probe_matrices(dense, dense)[0] is dense  # a dense code stays as it is
    as_sparse, as_dense = linear_probe(a, y_tr, b, y_te), linear_probe(x_tr, y_tr, x_te, y_te)
    assert as_sparse["linear_probe_converged"] and as_dense["linear_probe_converged"]
    # the same regression (centring is absorbed by the unpenalised intercept): the same answers, up to the tolerance
    assert abs(as_sparse["linear_probe_accuracy"] - as_dense["linear_probe_accuracy"]) <= 1 / 300
    result = probe_accuracies(x_tr, y_tr, x_te, y_te)
    assert result["linear_probe_accuracy"] == as_sparse["linear_probe_accuracy"]
    assert result["linear_probe_iterations"] == as_sparse["linear_probe_iterations"] > 0


def test_probes_use_every_train_code_up_to_the_caps():
    assert probes.MAX_TRAIN >= 60_000  # full MNIST's train set, whole
    assert train_cap(1_000) == probes.MAX_TRAIN  # 60,000 x 1,000 codes fit the value budget
    assert train_cap(probes.MAX_VALUES // 100) == 100  # a very wide input: fewer rows
    x_tr, y_tr = _sparse_codes(500, 0)
    result = probe_accuracies(x_tr, y_tr, *_sparse_codes(50, 1))
    assert (result["probe_train_samples"], result["probe_train_total"]) == (500, 500)
    assert set(result["probe_seconds"]) == {"linear_probe", "knn"}


def _labelled(seed=0, n=400, m=120):
    g = torch.Generator().manual_seed(seed)
    x_tr = (torch.rand(n, 1, 6, 6, generator=g) * 255).to(torch.uint8)
    x_te = (torch.rand(m, 1, 6, 6, generator=g) * 255).to(torch.uint8)
    y = lambda x: (x.float().flatten(1)[:, :3].argmax(1))  # noqa: E731 (a label the pixels carry)
    return aelab.Dataset("toy", x_tr, x_te, y(x_tr), y(x_te), classes=["a", "b", "c"])


def test_the_pixel_probe_is_the_linear_probe_on_the_pixels():
    data = _labelled()
    flat = lambda x: x.float().flatten(1) / 255  # noqa: E731
    expected = probe_accuracies(flat(data.x_train), data.y_train, flat(data.x_test), data.y_test, seed=3,
                                num_classes=3)
    got = pixel_probe(data.x_train, data.y_train, data.x_test, data.y_test, seed=3, num_classes=3, name=data.name)
    assert got["pixel_probe_accuracy"] == expected["linear_probe_accuracy"] > 0.5
    assert got["pixel_probe_train_samples"] == 400 and got["pixel_probe_converged"]


def test_the_pixel_probe_cache_is_hit_the_second_time_and_missed_when_the_data_differ(monkeypatch):
    data = _labelled()
    fits = []
    real = probes.probe_accuracies
    monkeypatch.setattr(probes, "probe_accuracies", lambda *a, **k: fits.append(1) or real(*a, **k))
    args = (data.x_train, data.y_train, data.x_test, data.y_test)
    first = pixel_probe(*args, seed=0, name="toy")
    assert len(fits) == 1 and not first["pixel_probe_cached"]
    files = list((cache_dir() / "probes").glob("toy-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["pixel_probe_accuracy"] == first["pixel_probe_accuracy"]
    second = pixel_probe(*args, seed=0, name="toy")
    assert len(fits) == 1 and second["pixel_probe_cached"]  # read back, not fitted again
    assert {**second, "pixel_probe_cached": False} == first
    changed = data.x_test.clone()
    changed[0, 0, 0, 0] ^= 1  # one pixel of one test image
    pixel_probe(data.x_train, data.y_train, changed, data.y_test, seed=0, name="toy")
    pixel_probe(*args, seed=1, name="toy")  # another seed: another train sample in general, another key
    relabelled = data.y_train.clone()
    relabelled[0] = (relabelled[0] + 1) % 3
    pixel_probe(data.x_train, relabelled, data.x_test, data.y_test, seed=0, name="toy")
    assert len(fits) == 4  # each change missed the cache


def test_a_broken_cache_file_is_refitted(monkeypatch):
    data = _labelled()
    args = (data.x_train, data.y_train, data.x_test, data.y_test)
    first = pixel_probe(*args, name="toy")
    (path,) = (cache_dir() / "probes").glob("toy-*.json")
    path.write_text("not json")
    again = pixel_probe(*args, name="toy")  # refitted (and written again): the same answer
    assert not again["pixel_probe_cached"] and again["pixel_probe_accuracy"] == first["pixel_probe_accuracy"]
    assert pixel_probe(*args, name="toy")["pixel_probe_cached"]


# ------------------------------------------------------------------------------------------ evaluate_model
def test_a_perfect_model_explains_all_the_variance_and_its_probe_is_the_pixel_probe():
    data = _labelled()
    result = evaluate_model(Identity((1, 6, 6)), data, progress=False)
    assert result["explained_variance"] == 1.0
    assert result["pixel_probe_accuracy"] == result["linear_probe_accuracy"]
    assert "dead_fraction_training" not in result  # no SPARSE capability, no training window
    assert 0 < result["mean_class_purity"] <= 1 and result["l0"] <= 36


def test_dead_fraction_training_reads_the_models_own_window(small_mnist):
    model = aelab.build_model("sparse", small_mnist.input_shape, latent_dim=10, penalty="topk", k=3, dead_after=5)
    model.steps_since_fired.copy_(torch.tensor([0, 1, 5, 6, 7, 100, 0, 0, 0, 0]))  # 6, 7, 100: over 5 steps
    result = evaluate_model(model, small_mnist, progress=False)
    assert result["dead_fraction_training"] == pytest.approx(0.3) and result["dead_after"] == 5
    assert 0 < result["l0"] <= 3  # topk: at most k units (an untrained model's ReLU may zero some)
    for key in ("pixel_probe_accuracy", "explained_variance", "mean_log10_feature_density", "mean_class_purity"):
        assert np.isfinite(result[key]), key
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN anywhere


# ------------------------------------------------------------------------------------------ the figures
class OneLinearMap(nn.Module):
    """decode(z) = sigmoid(W z + b): the decoder atoms are W's columns, whatever the sigmoid does."""

    latent_dim = 3
    input_shape = (1, 2, 2)

    def __init__(self):
        super().__init__()
        self.decoder = nn.Sequential(nn.Linear(3, 4))


def test_decoder_atoms_are_the_decoder_weight_columns():
    torch.manual_seed(0)
    model = OneLinearMap()
    atoms = decoder_atoms(model)
    torch.testing.assert_close(atoms, model.decoder[0].weight.detach().T.reshape(3, 1, 2, 2))
    model.decoder = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4))  # a hidden layer: no atoms
    assert decoder_atoms(model) is None
    sparse = aelab.build_model("sparse", latent_dim=12, penalty="topk", k=3)  # the classic one-layer SAE
    assert decoder_atoms(sparse).shape == (12, 1, 28, 28)


def test_spread_units_picks_live_units_from_busiest_to_rarest():
    rates = np.array([0.5, 0.0, 0.1, 0.3, 0.0, 0.05, 0.2])
    assert spread_units(rates, n=3).tolist() == [0, 6, 5]  # live by rate: 0, 3, 6, 2, 5 -> ranks 0, 2, 4
    assert spread_units(rates, n=10).tolist() == [0, 3, 6, 2, 5]  # fewer live units than asked: all of them
    assert spread_units(np.zeros(4), n=2).tolist() == [0, 1]  # none live: the first units
    assert spread_units(rates, n=2, min_rate=0.2).tolist() == [0, 6]  # the rarer ones left out: 0, 3, 6 remain
    assert spread_units(rates, n=4, min_rate=0.2).tolist() == [0, 3, 2, 5]  # too few remain: every live unit


def test_unit_labels_carry_the_firing_rate_and_the_purity():
    code = torch.zeros(30, 2)
    labels = torch.arange(30) % 3
    code[labels == 1, 0] = 1.0
    names = unit_labels(code, [0, 1], labels, classes=["zero", "one", "two"])
    assert names == ["unit 0 · 33.3%\npurity 1.00 · one", "unit 1 · 0.0%\nnever active"]
    assert unit_labels(code, [0]) == ["unit 0 · 33.3%"]
    rare = torch.zeros(300, 1)
    rare[0, 0] = 1.0  # one sample of 300: a rate too small for one decimal of a percent
    assert unit_labels(rare, [0]) == ["unit 0 · 0.33%"]


def test_dashboard_pictures(tmp_path):
    rng = np.random.default_rng(0)
    rates = np.concatenate([10 ** rng.uniform(-3, -0.5, 90), np.zeros(10)])
    img = assert_picture(plot_feature_density(rates, tmp_path / "d.png", title="t"))
    assert img.shape[1] > 300
    purity = np.where(rates > 0, rng.uniform(0.2, 1, 100), np.nan)
    assert_picture(plot_class_purity(purity, rates, tmp_path / "p.png", chance=0.22))


def test_a_sparse_run_gets_the_dashboard_figures(small_mnist, tmp_path):
    torch.manual_seed(0)
    run = aelab.train(aelab.build_model("sparse", latent_dim=32, penalty="topk", k=4), small_mnist, out=tmp_path / "r",
                      epochs=1, progress=False, log=None, report=False)
    written = write_run_figures(run, small_mnist, method="pca")
    dashboard = {"decoder_atoms.png", "top_activations.png", "feature_density.png", "class_purity.png"}
    assert dashboard <= set(written) and "unit_features.png" not in written  # the atoms replace the pictures
    assert dashboard <= {f for f, _, _ in FIGURES}  # catalogued: the report shows them with title and caption
    for name in dashboard:
        assert_picture(written[name])


@pytest.mark.slow
@requires_shared("mnist")
def test_full_mnist_probes_use_all_60000_codes_and_the_pixel_probe_converges():
    from .conftest import SHARED_DATA

    data = aelab.load_dataset("mnist", data_dir=SHARED_DATA / "mnist")
    keep = stratified_subset(data.y_test.numpy(), 2000, 0)  # a smaller test set: the train side is what is tested
    pixels = pixel_probe(data.x_train, data.y_train, data.x_test[keep], data.y_test[keep], name="mnist")
    assert pixels["pixel_probe_train_samples"] == 60_000 and pixels["pixel_probe_converged"]
    assert 0.90 < pixels["pixel_probe_accuracy"] < 0.95  # logistic regression on MNIST pixels: about 92 %
    g = torch.Generator().manual_seed(0)  # a stand-in 1,000-unit 25-sparse code: a random ReLU-TopK projection
    w = torch.randn(784, 1000, generator=g) / 28

    def topk(x):
        pre = (x.flatten(1).float() / 255) @ w
        values, idx = pre.topk(25, dim=1)
        return torch.zeros_like(pre).scatter(1, idx, values.relu())

    result = probe_accuracies(topk(data.x_train), data.y_train, topk(data.x_test[keep]), data.y_test[keep])
    assert result["probe_train_samples"] == 60_000 and result["linear_probe_converged"]
    assert result["linear_probe_accuracy"] > 0.85 and result["knn_accuracy"] > 0.85
