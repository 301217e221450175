"""The tour's sparse model shows sparsity (issue 13): few active units per image, a reconstruction close to
the tour's dense model. Every number of the models comes from ``aelab.api.TOUR``; the bounds are the issue's."""
import pytest
import torch

import aelab
from aelab.api import TOUR, TOUR_SAMPLES
from aelab.data import as_float
from aelab.evaluation import ACTIVE_THRESHOLD, active_units, evaluate_run
from aelab.registry import model_kwargs_from_config

MAX_ACTIVE = 30  # of the sparse model's units, on an average test image
MAX_MSE_RATIO = 1.5  # sparse test MSE over the tour's dense model's


def _step(name: str) -> dict:
    return next(step for step in TOUR if step["model"] == name)


def _tour_model(name: str, data):
    """The tour's model ``name`` as ``aelab.train`` builds it from the tour's settings (untrained)."""
    cfg = aelab.RunConfig.from_dict({"model": name, **_step(name)["settings"]}, source="the tour")
    torch.manual_seed(cfg.seed)
    return aelab.build_model(name, data.input_shape, **model_kwargs_from_config(cfg, data.bounded))


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


def test_tour_sparse_model_cannot_show_more_than_30_active_units(mnist5k):
    """Built from the tour's settings, before any training, the sparse model's code of real test images
    has at most 30 active units each (a KL model's sigmoid code has all of them active)."""
    model = _tour_model("sparse", mnist5k).eval()
    with torch.inference_mode():
        codes = model.codes(as_float(mnist5k.x_test[:500])).flatten(1)
    assert codes.shape[1] == 256
    assert active_units(codes).max() <= MAX_ACTIVE


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
    assert sparse["latent_dim"] == 256
    assert sparse["active_units_mean"] <= MAX_ACTIVE, sparse["active_units_mean"]
    assert sparse["dead_fraction"] < 0.1, sparse["dead_fraction"]
    ratio = sparse["test_mse"] / dense["test_mse"]
    assert ratio <= MAX_MSE_RATIO, (sparse["test_mse"], dense["test_mse"])
