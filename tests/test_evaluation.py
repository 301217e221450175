"""Metrics with known answers: KL, the IWAE bound, reconstruction errors, probes and sparsity."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import aelab
from aelab.errors import AelabError
from aelab.evaluation.specs import NOISE_KEYS, SPARSE_KEYS
from aelab.evaluation import (METRIC_KEYS, active_units, bce_per_image, dead_fraction, evaluate_model,
                              firing_rates, hoyer_sparsity, is_variational, iwae_from_log_weights, iwae_nll,
                              mse_per_pixel, neg_elbo, probe_accuracies, sparsity_summary, stratified_subset)
from aelab.losses import gaussian_kl_standard
from aelab.models import DiagonalGaussian

LOG_2PI = math.log(2 * math.pi)


# ------------------------------------------------------------------------------------------ KL
def test_kl_of_standard_normal_is_zero():
    mean, logvar = torch.zeros(3, 5), torch.zeros(3, 5)
    assert torch.equal(gaussian_kl_standard(mean, logvar), torch.zeros(3))
    assert torch.equal(DiagonalGaussian(mean, logvar).kl(), torch.zeros(3))


def test_kl_hand_computed_case():
    # mean (1, 0), variance (1, 2): 1/2 [(1 + 1 - 1 - 0) + (0 + 2 - 1 - log 2)] = 1 - log(2) / 2
    q = DiagonalGaussian(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]]))
    assert q.kl().item() == pytest.approx(1 - math.log(2) / 2, rel=1e-6)


def test_kl_matches_torch_distributions():
    torch.manual_seed(1)
    mean, logvar = torch.randn(4, 6), torch.randn(4, 6)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl_standard(mean, logvar), ref)


# ------------------------------------------------------------------------------------------ IWAE
def test_iwae_from_log_weights_known_answers():
    c = torch.full((7, 3), -4.2, dtype=torch.float64)
    torch.testing.assert_close(iwae_from_log_weights(c), torch.full((3,), 4.2, dtype=torch.float64))
    w = torch.tensor([[1.0], [3.0]], dtype=torch.float64)  # -log((1 + 3) / 2)
    assert iwae_from_log_weights(w.log()).item() == pytest.approx(-math.log(2.0))
    tiny = torch.tensor([[-1000.0], [-1000.0]], dtype=torch.float64)  # e^-1000 underflows; log-sum-exp does not
    assert iwae_from_log_weights(tiny).item() == pytest.approx(1000.0)


class LinearGaussian(nn.Module):
    """z ~ N(0, I), x | z ~ N(z, I): so x ~ N(0, 2 I) and the posterior is N(x / 2, I / 2), in closed form.

    The encoder returns N(a x, s2 I); with a = 1/2, s2 = 1/2 it is the exact posterior, every importance
    weight equals p(x), and every bound is exact. It declares the VARIATIONAL capability, as the protocol asks."""

    capabilities = frozenset({"variational"})

    def __init__(self, d=3, a=0.5, s2=0.5):
        super().__init__()
        self.input_shape, self.a, self.s2 = (d,), a, s2
        self.dummy = nn.Parameter(torch.zeros(()))

    def posterior(self, x):
        return DiagonalGaussian(self.a * x, torch.full_like(x, math.log(self.s2)))

    def decode_logits(self, z):
        return z

    def log_likelihood(self, logits, x):
        return (-0.5 * ((x - logits).square() + LOG_2PI)).sum(-1)


def true_nll(x):
    return 0.5 * (x.square() / 2 + math.log(2 * math.pi * 2)).sum(-1).double()


def test_bounds_are_exact_with_the_exact_posterior():
    torch.manual_seed(2)
    model, x = LinearGaussian(), torch.randn(50, 3) * 1.5
    assert is_variational(model) and not is_variational(nn.Linear(2, 2))
    truth = true_nll(x)
    for value in (neg_elbo(model, x, mc_kl=True), iwae_nll(model, x, 1),
                  iwae_nll(model, x, 37, max_elements=20)):  # tiny chunks: 6 samples x 1 image at a time
        torch.testing.assert_close(value, truth, rtol=1e-5, atol=1e-4)
    # with the KL in closed form only the expectation is exact: E_q[-log p(x|z)] = 1/2 sum((x/2)^2 + 1/2 + log 2 pi)
    expected = 0.5 * ((x / 2).square() + 0.5 + LOG_2PI).sum(-1).double() + DiagonalGaussian(
        x / 2, torch.full_like(x, math.log(0.5))).kl().double()
    torch.testing.assert_close(expected, truth, rtol=1e-5, atol=1e-4)  # the closed forms agree
    diff = neg_elbo(model, x) - truth
    assert abs(diff.mean()) < 5 * diff.std() / math.sqrt(len(diff))


def test_iwae_tightens_towards_the_true_likelihood():
    torch.manual_seed(3)
    model, x = LinearGaussian(a=0.0, s2=1.0), torch.randn(400, 3) * 1.5  # q = the prior: a poor posterior
    truth = true_nll(x).mean().item()
    elbo = neg_elbo(model, x).mean().item()
    k10 = iwae_nll(model, x, 10).mean().item()
    k1000 = iwae_nll(model, x, 1000, max_elements=30_000).mean().item()
    assert elbo > k10 > k1000 > truth - 0.05
    assert k1000 - truth < 0.2 * (elbo - truth)


def test_iwae_k1_is_the_elbo_on_the_same_sample():
    torch.manual_seed(4)
    model, x = LinearGaussian(a=0.3, s2=0.8), torch.randn(300, 3)
    torch.testing.assert_close(iwae_nll(model, x, 1, seed=5), neg_elbo(model, x, seed=5, mc_kl=True))
    assert not torch.equal(iwae_nll(model, x, 1, seed=5), iwae_nll(model, x, 1, seed=6))
    # the closed-form KL and its one-sample estimate agree on average
    diff = iwae_nll(model, x, 1, seed=5) - neg_elbo(model, x, seed=5)
    assert abs(diff.mean()) < 5 * diff.std() / math.sqrt(len(diff))


def test_evaluation_leaves_the_callers_random_state_alone():
    model, x = LinearGaussian(), torch.randn(20, 3)
    state = torch.get_rng_state()
    iwae_nll(model, x, 5)
    neg_elbo(model, x)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.fixture(scope="module")
def tiny_vae(small_mnist, tmp_path_factory):
    torch.manual_seed(0)
    model = aelab.build_model("vae", latent_dim=8, hidden_dims=[64])
    aelab.train(model, small_mnist, epochs=3, batch_size=100, out=tmp_path_factory.mktemp("vae"), progress=False,
                log=None, report=False)
    return model.eval()


def test_iwae_on_a_trained_vae(tiny_vae, small_mnist):
    x = torch.cat([small_mnist.x_test, small_mnist.x_train])  # 1,200 images: noise cannot flip the order
    k1 = iwae_nll(tiny_vae, x, 1, seed=0)
    torch.testing.assert_close(k1, neg_elbo(tiny_vae, x, seed=0, mc_kl=True))
    k50 = iwae_nll(tiny_vae, x, 50, seed=1)
    gap = k1 - k50
    assert gap.mean() > 4 * gap.std() / math.sqrt(len(gap)), "more samples must not give a larger bound"
    assert k50.mean() < neg_elbo(tiny_vae, x, seed=2).mean()


# ------------------------------------------------------------------------------------------ reconstruction
def test_reconstruction_errors_known_answers():
    x = torch.rand(4, 1, 5, 5)
    assert torch.equal(mse_per_pixel(x, x), torch.zeros(4))
    torch.testing.assert_close(mse_per_pixel(x + 0.1, x), torch.full((4,), 0.01))
    half = torch.full((2, 1, 4, 4), 0.5)  # a perfect grey reconstruction still pays the entropy: log 2 per pixel
    torch.testing.assert_close(bce_per_image(half, half), torch.full((2,), 16 * math.log(2)))
    binary = (torch.rand(3, 1, 4, 4) > 0.5).float()
    assert bce_per_image(binary, binary).max() < 16 * 1e-6
    wrong = bce_per_image(1 - binary, binary)  # confidently wrong: clamped, about -log(1e-7) per pixel
    assert torch.isfinite(wrong).all() and wrong.min() > 16 * 15


class Identity(nn.Module):
    """A perfect 'autoencoder' whose code is the input itself."""

    def __init__(self, shape):
        super().__init__()
        self.input_shape = shape
        self.dummy = nn.Parameter(torch.zeros(()))

    def check_input(self, x):
        assert tuple(x.shape[1:]) == self.input_shape

    def codes(self, x):
        return x.flatten(1)

    def reconstruct(self, x):
        return x


def _separable(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return (np.eye(4)[y] * 10 + rng.normal(0, 0.5, (n, 4))).astype(np.float32), y


def test_evaluate_model_on_a_perfect_model():
    x_tr, y_tr = _separable(300, 0)
    x_te, y_te = _separable(100, 1)
    data = aelab.from_arrays(x_tr, y_tr, x_te, y_te)
    result = evaluate_model(Identity((4,)), data, progress=False)
    assert result["test_mse"] == 0.0
    assert "test_bce" not in result  # the data is not in [0, 1]
    assert "neg_elbo" not in result and "iwae_nll" not in result
    assert result["linear_probe_accuracy"] == 1.0 and result["knn_accuracy"] == 1.0
    assert result["latent_dim"] == 4 and len(result["firing_rates"]) == 4
    assert result["explained_variance"] == 1.0  # a perfect reconstruction explains all the variance
    assert result["pixel_probe_accuracy"] == result["linear_probe_accuracy"]  # the code is the input


def test_evaluate_model_without_labels_skips_probes(small_mnist):
    data = aelab.Dataset("nolabels", small_mnist.x_train[:100], small_mnist.x_test[:50])
    result = evaluate_model(Identity((1, 28, 28)), data, progress=False)
    assert result["test_mse"] == 0.0 and result["test_bce"] >= 0
    assert "linear_probe_accuracy" not in result and any("no labels" in n for n in result["notes"])


def test_evaluate_model_keys_for_vae_and_dense(tiny_vae, small_mnist):
    result = evaluate_model(tiny_vae, small_mnist, iwae_samples=5, progress=False, binarize=True)
    assert set(METRIC_KEYS) - {*NOISE_KEYS, *SPARSE_KEYS} <= set(result)
    assert result["iwae_samples"] == 5 and result["binarized"]
    assert not {*NOISE_KEYS, *SPARSE_KEYS} & set(result)  # without --noise, not sparse: no such metrics
    timing = ("seconds", "seconds_by_part", "pixel_probe_cached")  # (the pixel probe is cached the second time)
    again = evaluate_model(tiny_vae, small_mnist, iwae_samples=5, progress=False, binarize=True)
    assert not result["pixel_probe_cached"] and again["pixel_probe_cached"]
    assert result == {**again, **{k: result[k] for k in timing}}  # seeded: the same numbers again
    assert "iwae_nll" not in evaluate_model(tiny_vae, small_mnist, iwae_samples=0, progress=False)
    dense = aelab.build_model("dense", latent_dim=4, hidden_dims=[16])
    result = evaluate_model(dense, small_mnist, progress=False)
    assert not {"neg_elbo", "iwae_nll", "iwae_samples"} & set(result)
    assert set(METRIC_KEYS) - {"neg_elbo", "iwae_nll", "iwae_samples", *NOISE_KEYS, *SPARSE_KEYS} <= set(result)
    with pytest.raises(AelabError, match="iwae_samples"):
        evaluate_model(tiny_vae, small_mnist, iwae_samples=-1)


# ------------------------------------------------------------------------------------------ probes
def test_probe_on_linearly_separable_codes_scores_one():
    x_tr, y_tr = _separable(500, 0)
    x_te, y_te = _separable(200, 1)
    result = probe_accuracies(torch.from_numpy(x_tr), torch.from_numpy(y_tr), x_te, y_te)
    assert result["linear_probe_accuracy"] == 1.0 and result["knn_accuracy"] == 1.0


def test_probe_on_random_labels_is_near_chance():
    x_tr, _ = _separable(600, 0)
    x_te, _ = _separable(300, 1)
    rng = np.random.default_rng(2)
    result = probe_accuracies(x_tr, rng.integers(0, 3, 600), x_te, rng.integers(0, 3, 300))
    assert result["linear_probe_accuracy"] < 0.5 and result["knn_accuracy"] < 0.5


def test_probe_caps_train_codes_with_a_stratified_sample():
    y = np.repeat([0, 1, 2], [600, 300, 100])
    keep = stratified_subset(y, 100, seed=0)
    assert len(keep) == 100 and np.bincount(y[keep]).tolist() == [60, 30, 10]
    x_tr, y_tr = _separable(1000, 0)
    result = probe_accuracies(x_tr, y_tr, *_separable(50, 1), max_train=200)
    assert (result["probe_train_samples"], result["probe_train_total"]) == (200, 1000)


@pytest.mark.parametrize("change, message", [
    (lambda a: {**a, "train_labels": None}, "need class labels"),
    (lambda a: {**a, "train_labels": a["train_labels"] - 1}, "label -1 lies outside"),
    (lambda a: {**a, "num_classes": 2}, "label 2 lies outside 0..1"),
    (lambda a: {**a, "test_labels": a["test_labels"][:-1]}, "differ in number"),
    (lambda a: {**a, "train_labels": a["train_labels"] + 0.5}, "integer class indices"),
    (lambda a: {**a, "train_codes": np.full_like(a["train_codes"], np.nan)}, "NaN"),
    (lambda a: {**a, "test_codes": a["test_codes"][:, :2]}, "dimensions"),
])
def test_probe_bad_input_is_a_clear_error(change, message):
    x_tr, y_tr = _separable(60, 0)
    x_te, y_te = _separable(20, 1)
    args = dict(train_codes=x_tr, train_labels=y_tr, test_codes=x_te, test_labels=y_te)
    with pytest.raises(AelabError, match=message):
        probe_accuracies(**change(args))


# ------------------------------------------------------------------------------------------ sparsity
CODES = torch.tensor([[0.0, 0.5, 0.0, 0.005],
                      [0.0, -2.0, 1.0, 0.0],
                      [0.0, 0.0, 0.0, 0.02]])


def test_active_and_dead_units_on_a_hand_made_code_matrix():
    # threshold 0.01: 0.005 is silent, 0.02 and -2 are active; unit 0 never fires
    assert active_units(CODES).tolist() == [1, 2, 1]
    torch.testing.assert_close(firing_rates(CODES), torch.tensor([0.0, 2 / 3, 1 / 3, 1 / 3]))
    assert dead_fraction(CODES) == 0.25
    assert dead_fraction(CODES, threshold=0.6) == 0.5  # only units 1 and 2 reach 0.6
    summary = sparsity_summary(CODES)
    assert summary["active_units_mean"] == pytest.approx(4 / 3) and summary["active_threshold"] == 0.01


def test_hoyer_known_answers():
    codes = torch.tensor([[0.0, 3.0, 0.0, 0.0],  # one unit: 1
                          [1.0, -1.0, 1.0, -1.0],  # equal magnitudes: 0
                          [0.0, 0.0, 0.0, 0.0],  # all zero: counted as 1
                          [0.0, -2.0, 1.0, 0.0]])  # (sqrt(4) - 3 / sqrt(5)) / (sqrt(4) - 1)
    torch.testing.assert_close(hoyer_sparsity(codes), torch.tensor([1.0, 0.0, 1.0, 2 - 3 / math.sqrt(5)]))
