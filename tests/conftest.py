"""Shared fixtures: tiny model settings for the registry contract, small real data, the shared data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from aelab.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AELAB_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Tiny constructor arguments per registered model: the contract suite builds each model with these.
# A new model needs a line here (test_registry checks that every model has one).
TINY_KWARGS = {
    "dense": dict(latent_dim=4, hidden_dims=[16]),
    "conv": dict(latent_dim=4, hidden_dims=[4, 8]),
    "sparse": dict(latent_dim=8, hidden_dims=[16], penalty="kl"),
    "vae": dict(latent_dim=4, hidden_dims=[16]),
    "conv-vae": dict(latent_dim=4, hidden_dims=[4, 8]),
    "multimodal": dict(latent_dim=4, image_channels=[4, 8], audio_channels=[4, 8], text_embed=4, text_hidden=8),
}


def requires_shared(name: str):
    """Skip (with the reason) when ../shared/data/<name> is absent, as on a user's machine."""
    return pytest.mark.skipif(not (SHARED_DATA / name).is_dir(),
                              reason=f"full dataset not present at {SHARED_DATA / name} (present in CI)")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """No test touches the user's cache or the network: downloads go to a loopback server or nowhere."""
    monkeypatch.setenv("AELAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AELAB_OFFLINE", "1")
    monkeypatch.delenv("AELAB_DATA_DIR", raising=False)
    monkeypatch.delenv("AELAB_MIRROR", raising=False)
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One torch thread: for tests about files, signals and errors, whose tiny trainings stall badly when
    two threads per process compete with other processes for 2 cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def mnist5k():
    import aelab

    return aelab.load_dataset("mnist5k")


@pytest.fixture(scope="session")
def small_mnist(mnist5k):
    """1,000 train / 200 test real digits from mnist5k: enough to learn something in seconds."""
    import aelab

    d = mnist5k
    return aelab.Dataset("small", d.x_train[::4].clone(), d.x_test[::5].clone(), d.y_train[::4].clone(),
                         d.y_test[::5].clone(), classes=d.classes)


def run_cli(args, capsys) -> tuple[int, str, str]:
    """``aelab ARGS`` in-process: (exit code, stdout, stderr) of this call alone."""
    capsys.readouterr()
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err
