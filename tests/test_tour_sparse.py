"""The tour's sparse model shows sparsity (issue 13): few active units per image, a reconstruction close to
the tour's dense model; and that sparse codes pay off (issue 20): a linear probe reads the digit off its overcomplete
code clearly better than off the pixels or the dense model's code. Every number of the models comes from
``aelab.api.TOUR``; the bounds are the issue's or measured (below)."""
import pytest
import torch

import aelab
from aelab.api import TOUR, TOUR_SAMPLES
from aelab.data import as_float
from aelab.evaluation import ACTIVE_THRESHOLD, active_units, evaluate_run

MAX_MSE_RATIO = 1.5  # sparse test MSE over the tour's dense model's
# TopK keeps k units per image and its ReLU or the activity threshold can only lower the count, so the mean
# active units lie in [0, k]: "about k" is within this of it (a dead or zero kept value costs 1/N of a unit)
ACTIVE_SLACK = 0.5
# The spread of the trained code's firing rates: 25 of 1,000 units per image is 2.5% on average; before training one
# unit fires on most images. No unit on more than MAX_RATE of the images, and most units (MIN_FIRING) on at least
# one image in a thousand.
MAX_RATE = 0.3
MIN_FIRING = 0.85
# "Clearly beats": the sparse code's linear probe over the pixels' and over the dense code's by at least this much
# (on mnist5k's 1,000 test images one standard error of an accuracy near 0.9 is about 0.01)
PROBE_MARGIN = 0.03


def _step(name: str) -> dict:
    return next(step for step in TOUR if step["model"] == name)


def _tour_model(name: str, data):
    """The tour's model ``name`` built from the tour's settings under the run's default seed (untrained)."""
    torch.manual_seed(aelab.RunConfig.from_dict({"model": name}, source="the tour").seed)
    return aelab.build_model(name, data.input_shape, **_step(name)["settings"])


def test_topk_code_is_exactly_the_k_largest_preactivations_and_counts_k_active():
    """Known answer: where every pre-activation is positive, a TopK code has exactly k non-zeros per row,
    at the k largest pre-activations, with their values; the library's active-units metric then reads k."""
    k = 5
    torch.manual_seed(0)
    model = aelab.build_model("sparse", (1, 28, 28), latent_dim=64, penalty="topk", k=k)
    with torch.no_grad():
        model.encoder[-1].bias.fill_(10.0)  # all pre-activations positive: the ReLU drops none of the kept
        x = torch.rand(32, 1, 28, 28)
        pre = model.pre_activation(x)
        z = model.encode(x)
    assert (pre > ACTIVE_THRESHOLD).all()
    assert ((z != 0).sum(1) == k).all()
    top = pre.topk(k, dim=1).indices
    assert torch.equal((z != 0), torch.zeros_like(z, dtype=torch.bool).scatter(1, top, True))
    assert torch.equal(z.gather(1, top), pre.gather(1, top))
    assert torch.equal(active_units(z), torch.full((32,), float(k)))


def test_tour_sparse_model_counts_its_k_kept_units_as_active(mnist5k):
    """Built from the tour's settings, before any training: each real test image's code has exactly as many
    active units as the k kept pre-activations that lie above the activity threshold (the library's metric
    counts the code's own non-zeros), and for this model that is k = 25 on every image."""
    k = _step("sparse")["settings"]["k"]
    model = _tour_model("sparse", mnist5k).eval()
    with torch.inference_mode():
        x = as_float(mnist5k.x_test[:500])
        codes = model.encode(x).flatten(1)
        kept = model.pre_activation(x).topk(k, dim=1).values  # (500, k), what TopK keeps before its ReLU
    assert codes.shape[1] == _step("sparse")["settings"]["latent_dim"]
    active = active_units(codes)
    assert torch.equal(active, (kept > ACTIVE_THRESHOLD).sum(1).float())
    assert abs(active.mean().item() - k) < ACTIVE_SLACK, active.mean().item()


@pytest.mark.slow
def test_tour_sparse_is_sparse_and_reconstructs_near_dense(mnist5k, tmp_path, one_thread):
    """Train the tour's dense and sparse entries exactly as the tour does on mnist5k (its epochs and settings,
    one thread), and read the metrics the report shows from each run's evaluation."""
    assert len(mnist5k.x_train) == TOUR_SAMPLES  # so the tour trains each model for its own epochs
    results = {}
    for name in ("dense", "sparse"):
        step = _step(name)
        run = aelab.train(name, mnist5k, out=tmp_path / name, epochs=step["epochs"], report=False,
                          progress=False, log=None, **step["settings"])
        results[name] = evaluate_run(run.path, data=mnist5k, progress=False)
    sparse, dense = results["sparse"], results["dense"]
    settings = _step("sparse")["settings"]
    assert sparse["latent_dim"] == settings["latent_dim"] > 28 * 28  # overcomplete: more units than pixels
    k = settings["k"]
    assert abs(sparse["l0"] - k) < ACTIVE_SLACK, sparse["l0"]
    rates = torch.tensor(sparse["firing_rates"])  # (latent,) the fraction of test images each unit fires on
    assert rates.max() <= MAX_RATE, rates.max()  # no unit is on for most images ...
    assert (rates >= 0.001).float().mean() >= MIN_FIRING, rates.sort().values[:10]  # ... and the work is shared
    # the lesson: the sparse code is linearly readable, the pixels and the dense code much less
    assert sparse["pixel_probe_accuracy"] == dense["pixel_probe_accuracy"]  # the same baseline for both runs
    assert sparse["linear_probe_accuracy"] >= sparse["pixel_probe_accuracy"] + PROBE_MARGIN, sparse
    assert sparse["linear_probe_accuracy"] >= dense["linear_probe_accuracy"] + PROBE_MARGIN, (sparse, dense)
    ratio = sparse["test_mse"] / dense["test_mse"]
    assert ratio <= MAX_MSE_RATIO, (sparse["test_mse"], dense["test_mse"])
