"""aelab.predict: one Predictor for every model (uniform encode, decode, sample, interpolate), the latent
statistics and the cached 2-D map of a run folder.

``tiny_runs`` (also used by the web tests) trains three tiny models on mnist5k once per test session:
a dense one with a 2-D code (its map is the code itself), a conv one, and a VAE with 20 dimensions
(more than the page's 16 sliders).
"""
from __future__ import annotations

import os
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import aelab
from aelab.errors import AelabError
from aelab.predict import (LATENT_STATS, Predictor, ensure_latent_files, latent_stats, project_codes,
                           read_latent_stats, read_projection, write_latent_stats)

TINY_RUNS = {  # name: (model, settings)
    "dense2": ("dense", dict(latent_dim=2, hidden_dims=[32])),
    "conv": ("conv", dict(latent_dim=4, hidden_dims=[8, 16])),
    "vae": ("vae", dict(latent_dim=20, hidden_dims=[32])),
}
_TRAINED: dict[str, Path] = {}  # one folder of runs per test session, shared by the test modules that need it


def tiny_runs(tmp_path_factory) -> Path:
    """A folder holding the three runs of TINY_RUNS (one epoch each on mnist5k, no report: seconds)."""
    if "base" not in _TRAINED:
        base = tmp_path_factory.mktemp("tiny-runs")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny models: one thread is faster than two competing with other processes
        try:
            for name, (model, settings) in TINY_RUNS.items():
                aelab.train(model, "mnist5k", out=base / name, epochs=1, batch_size=64, lr=3e-3, report=False,
                            progress=False, log=None, **settings)  # small steps: digits one can recognise
        finally:
            torch.set_num_threads(threads)
        _TRAINED["base"] = base
    return _TRAINED["base"]


def copy_run(tmp_path_factory, tmp_path: Path, name: str) -> Path:
    """A private copy of one tiny run (for tests that write into the run folder)."""
    return Path(shutil.copytree(tiny_runs(tmp_path_factory) / name, tmp_path / name))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tiny_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def mnist():
    return aelab.load_dataset("mnist5k")


# ---------------------------------------------------------------------------------------------- Predictor
@pytest.mark.parametrize("name", list(TINY_RUNS))
def test_from_run_loads_the_model_ready_for_inference(runs, name):
    p = Predictor.from_run(runs / name, device="cpu")
    model, settings = TINY_RUNS[name]
    assert (p.name, p.latent_dim, p.input_shape) == (model, settings["latent_dim"], (1, 28, 28))
    assert p.device == torch.device("cpu") and not p.model.training
    assert p.can_sample == (model == "vae")
    assert p.run.path == runs / name
    assert f"latent_dim={settings['latent_dim']}" in repr(p)


@pytest.mark.parametrize("name", list(TINY_RUNS))
def test_encode_is_the_code_the_decoder_receives(runs, mnist, name, monkeypatch):
    p = Predictor.from_run(runs / name, device="cpu")
    x = mnist.x_test[:10]
    modes, encode = [], p.model.encode
    monkeypatch.setattr(p.model, "encode", lambda b: modes.append(torch.is_inference_mode_enabled()) or encode(b))
    z = p.encode(x)
    assert modes == [True]  # the model ran under torch.inference_mode()
    assert z.shape == (10, p.latent_dim) and z.dtype == torch.float32 and not z.requires_grad
    assert not z.is_inference()  # but the result is an ordinary tensor, usable anywhere
    monkeypatch.undo()
    with torch.no_grad():
        encoded = p.model.encode(x.float() / 255)
    expected = p.model.posterior(x.float() / 255).mean if name == "vae" else encoded  # a VAE's code: the posterior mean
    torch.testing.assert_close(encoded, expected)
    torch.testing.assert_close(z, expected)


def test_uint8_and_float_inputs_give_the_same_codes(runs, mnist):
    p = Predictor.from_run(runs / "conv", device="cpu")
    x = mnist.x_test[:16]
    torch.testing.assert_close(p.encode(x), p.encode(x.float() / 255))
    torch.testing.assert_close(p.encode(x), p.encode(x.numpy()))  # numpy arrays too


def test_one_sample_or_a_batch_in_any_batch_size(runs, mnist):
    x = mnist.x_test[:23]
    big = Predictor.from_run(runs / "dense2", device="cpu")
    small = Predictor.from_run(runs / "dense2", device="cpu", batch_size=5)  # 5 passes, the last short
    torch.testing.assert_close(big.encode(x), small.encode(x))
    torch.testing.assert_close(big.encode(x[3]), big.encode(x)[3:4])  # one sample (C, H, W) -> a batch of one
    assert small.decode(big.encode(x)).shape == (23, 1, 28, 28)


def test_decode_and_reconstruct(runs, mnist):
    p = Predictor.from_run(runs / "conv", device="cpu")
    x = mnist.x_test[:8]
    z = p.encode(x)
    out = p.decode(z)
    assert out.shape == (8, 1, 28, 28) and 0 <= out.min() and out.max() <= 1  # sigmoid output: in [0, 1]
    torch.testing.assert_close(p.reconstruct(x), out)
    torch.testing.assert_close(p.decode(z[2]), out[2:3])  # one code (D,) -> a batch of one
    torch.testing.assert_close(p.decode(z.numpy().tolist()), out)  # plain lists too


def test_sample_from_the_prior(runs):
    p = Predictor.from_run(runs / "vae", device="cpu")
    a, b = p.sample(6, seed=1), p.sample(6, seed=1)
    assert a.shape == (6, 1, 28, 28)
    torch.testing.assert_close(a, b)  # the same seed, the same images
    assert not torch.allclose(a, p.sample(6, seed=2))
    with pytest.raises(AelabError, match="at least 1"):
        p.sample(0)


def test_a_model_without_a_prior_does_not_sample(runs):
    p = Predictor.from_run(runs / "conv", device="cpu")
    with pytest.raises(AelabError, match="no prior to sample from; train a vae"):
        p.sample(4)


def test_interpolate_runs_from_a_to_b(runs, mnist):
    p = Predictor.from_run(runs / "vae", device="cpu")
    za, zb = p.encode(mnist.x_test[:2])
    line = p.interpolate(za, zb, steps=5)
    assert line.shape == (5, p.latent_dim)
    torch.testing.assert_close(line[0], za)
    torch.testing.assert_close(line[-1], zb)
    torch.testing.assert_close(line[2], (za + zb) / 2)  # evenly spaced
    with pytest.raises(AelabError, match="at least 2 steps"):
        p.interpolate(za, zb, steps=1)
    with pytest.raises(AelabError, match="one code at each end"):
        p.interpolate(p.encode(mnist.x_test[:2]), zb)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 1, 28, 27), r"inputs of shape \(1, 28, 28\) \(or a batch of them\) but got \(2, 1, 28, 27\)"),
    (torch.zeros(2, 784), r"but got \(2, 784\)"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.int64), "must be uint8 .* or floats, got torch.int64"),
    (torch.full((1, 1, 28, 28), float("nan")), "NaN or infinite"),
])
def test_bad_inputs_are_one_line_errors(runs, bad, message):
    p = Predictor.from_run(runs / "dense2", device="cpu")
    with pytest.raises(AelabError, match=message) as e:
        p.encode(bad)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(3), r"codes must have 2 values each .* got shape \(1, 3\)"),
    (torch.zeros(2, 2, 2), r"got shape \(2, 2, 2\)"),
    (torch.tensor([0.0, float("inf")]), "NaN or infinite"),
])
def test_bad_codes_are_one_line_errors(runs, bad, message):
    p = Predictor.from_run(runs / "dense2", device="cpu")
    with pytest.raises(AelabError, match=message):
        p.decode(bad)


class _RunsACommand:
    """Unpickling this calls os.system: a hostile model file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_weights_are_loaded_weights_only(tmp_path_factory, tmp_path):
    run = copy_run(tmp_path_factory, tmp_path, "dense2")
    payload = torch.load(run / "model.pt", weights_only=True)
    payload["note"] = _RunsACommand(tmp_path / "code-ran")
    torch.save(payload, run / "model.pt")
    with pytest.raises(AelabError, match="could run code"):
        Predictor.from_run(run)
    assert not (tmp_path / "code-ran").exists()


def test_a_missing_or_empty_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(AelabError, match="is not a folder"):
        Predictor.from_run(tmp_path / "nope")
    with pytest.raises(AelabError, match="is not a run folder"):
        Predictor.from_run(tmp_path)


# ---------------------------------------------------------------------------------------------- latent statistics
def test_latent_stats_known_answer():
    stats = latent_stats(torch.tensor([[0.0, 1.0], [2.0, 5.0]]), ["a", "b"], "toy")
    assert stats["mean"] == [1.0, 3.0]
    assert stats["std"] == [1.0, 2.0]  # population std: the spread of these codes, not an estimate
    assert (stats["min"], stats["max"]) == ([0.0, 1.0], [2.0, 5.0])
    assert (stats["count"], stats["latent_dim"], stats["classes"], stats["dataset"]) == (2, 2, ["a", "b"], "toy")
    with pytest.raises(AelabError, match="non-empty"):
        latent_stats(torch.zeros(0, 3))


def test_write_latent_stats_from_a_model_at_the_end_of_training(tmp_path_factory, tmp_path, mnist):
    run = copy_run(tmp_path_factory, tmp_path, "vae")
    model = aelab.open_run(run).model.train()
    path = write_latent_stats(run, model, mnist)  # what aelab.train calls with the model it trained
    assert path == run / LATENT_STATS and model.training  # the model is left in the mode it was in
    p = Predictor.from_run(run, device="cpu")
    stats = read_latent_stats(run)
    codes = p.encode(mnist.x_test).double()
    np.testing.assert_allclose(stats["mean"], codes.mean(0).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats["max"], codes.max(0).values.numpy(), rtol=1e-6)
    assert stats["classes"] == mnist.classes and stats["count"] == len(mnist.x_test) == 1000
    later = time.time() + 10
    os.utime(run / "model.pt", (later, later))  # weights newer than the statistics: stale
    assert read_latent_stats(run) is None


# ---------------------------------------------------------------------------------------------- the map
def test_2d_codes_are_their_own_map():
    codes = torch.randn(30, 2)
    proj = project_codes(codes, "tsne")
    assert proj.method == "direct" and proj.linear
    np.testing.assert_allclose(proj.points, codes.numpy())
    np.testing.assert_allclose(proj.origin + proj.points @ proj.axes, codes.numpy(), atol=1e-6)


def test_a_pca_map_can_be_decoded_back_to_codes():
    # codes that lie in a 2-D plane of a 6-D space: the PCA map's inverse gives each code back exactly
    rng = np.random.default_rng(0)
    plane, offset = rng.normal(size=(2, 6)), rng.normal(size=6)
    codes = rng.normal(size=(50, 2)) @ plane + offset
    proj = project_codes(torch.tensor(codes), "pca")
    assert proj.method == "pca" and proj.linear
    shares = [int(label.split("(")[1].split("%")[0]) for label in proj.axis_labels]  # "PC 1 (88% of variance)"
    assert proj.axis_labels[1].startswith("PC 2 (") and sum(shares) == 100  # the plane holds all the variance
    np.testing.assert_allclose(proj.origin + proj.points @ proj.axes, codes, atol=1e-4)


def test_a_tsne_map_and_a_subset_beyond_max_points():
    codes = torch.randn(60, 5)
    proj = project_codes(codes, "tsne", max_points=40)
    assert proj.method == "tsne" and not proj.linear and proj.points.shape == (40, 2)
    assert len(np.unique(proj.index)) == 40 and np.all(np.diff(proj.index) > 0) and proj.index.max() < 60
    with pytest.raises(AelabError, match="unknown map 'isomap'"):
        project_codes(codes, "isomap")


def test_the_map_and_statistics_are_computed_once_and_cached(tmp_path_factory, tmp_path, mnist, monkeypatch):
    run = copy_run(tmp_path_factory, tmp_path, "conv")
    p = Predictor.from_run(run, device="cpu")
    lines = []
    stats, proj = ensure_latent_files(p, mnist, "pca", log=lines.append)
    assert (run / LATENT_STATS).is_file() and (run / "projection-pca.npz").is_file()
    assert len(proj.index) == 1000 and stats["count"] == 1000 and lines == []  # a PCA map needs no message
    cached = read_projection(run, "pca")
    np.testing.assert_array_equal(cached.points, proj.points)

    def fail(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr("aelab.predict.project_codes", fail)
    monkeypatch.setattr("aelab.predict.encode_test_set", fail)
    again, proj2 = ensure_latent_files(p, mnist, "pca")
    assert again == stats
    np.testing.assert_array_equal(proj2.points, proj.points)


def test_a_cache_of_other_test_data_is_recomputed(tmp_path_factory, tmp_path, mnist):
    run = copy_run(tmp_path_factory, tmp_path, "conv")
    p = Predictor.from_run(run, device="cpu")
    ensure_latent_files(p, mnist, "pca")
    fewer = aelab.Dataset(mnist.name, mnist.x_train, mnist.x_test[:100], mnist.y_train, mnist.y_test[:100],
                          mnist.classes)
    stats, proj = ensure_latent_files(p, fewer, "pca")
    assert stats["count"] == 100 and len(proj.index) == 100
    assert read_latent_stats(run)["count"] == 100


def test_a_folder_that_cannot_be_written_still_serves(tmp_path_factory, tmp_path, mnist, monkeypatch, caplog):
    run = copy_run(tmp_path_factory, tmp_path, "dense2")
    (run / LATENT_STATS).unlink(missing_ok=True)  # training wrote one; this folder is to have none
    p = Predictor.from_run(run, device="cpu")

    def refuse(path, data, *a, **k):
        raise AelabError(f"could not write {path}: Read-only file system")

    monkeypatch.setattr("aelab.predict.atomic_write_bytes", refuse)
    monkeypatch.setattr("aelab.predict.atomic_write_text", refuse)
    stats, proj = ensure_latent_files(p, mnist, "tsne")
    assert stats["count"] == 1000 and proj.method == "direct"
    assert not (run / LATENT_STATS).exists()
    assert "not cached: could not write" in caplog.text
