import ast
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import aelab
from aelab.data import download as dl
from aelab.data.datasets import IDX_FILES, from_arrays, split_indices
from aelab.data.idx import write_idx
from aelab.errors import AelabError

from .conftest import SHARED_DATA, requires_shared


@requires_shared("mnist")
def test_full_mnist_matches_published_facts():
    d = aelab.load_dataset("mnist", data_dir=SHARED_DATA / "mnist")
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_train.dtype == torch.uint8
    assert d.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(d.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert d.x_train.float().div(255).mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert d.x_test.float().div(255).mean().item() == pytest.approx(0.1325, abs=5e-5)
    assert d.y_train[:5].tolist() == [5, 0, 4, 1, 9]


@requires_shared("fashion-mnist")
def test_fashion_mnist_through_data_root(monkeypatch):
    monkeypatch.setenv("AELAB_DATA_DIR", str(SHARED_DATA))
    d = aelab.load_dataset("fashion-mnist")
    assert torch.bincount(d.y_train).tolist() == [6000] * 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
    assert d.x_train.float().div(255).mean().item() == pytest.approx(0.2860, abs=5e-5)
    assert d.classes[9] == "Ankle boot"


def test_mnist5k_is_stratified_and_deterministic(mnist5k):
    d = mnist5k
    assert d.x_train.shape == (4000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [400] * 10
    assert torch.bincount(d.y_test).tolist() == [100] * 10
    again = aelab.load_dataset("mnist5k")
    assert torch.equal(again.x_test, d.x_test) and torch.equal(again.y_train, d.y_train)
    # train and test are disjoint: no test image appears in train
    train_rows = {bytes(r) for r in d.x_train.flatten(1).numpy()}
    assert not any(bytes(r) in train_rows for r in d.x_test.flatten(1).numpy())


def test_split_indices_stratified():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    tr, te = split_indices(60, 0.5, seed=1, labels=labels)
    assert np.bincount(labels[te.numpy()]).tolist() == [5, 10, 15]
    assert sorted(tr.tolist() + te.tolist()) == list(range(60))


def test_from_arrays_any_feature_size():
    x = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)
    d = from_arrays(x, np.arange(50) % 2, test_fraction=0.2)
    assert d.input_shape == (7,) and len(d.x_test) == 10 and not d.bounded
    with pytest.raises(AelabError, match="NaN or infinite"):
        from_arrays(np.full((4, 3), np.nan))
    with pytest.raises(AelabError, match="one label per sample"):
        from_arrays(x, np.arange(3))


def test_unknown_dataset_suggests():
    with pytest.raises(AelabError, match=r"unknown dataset 'minst' \(did you mean 'mnist'\?\)"):
        aelab.load_dataset("minst")


def test_offline_without_files_names_the_four_files(tmp_path):
    with pytest.raises(AelabError) as e:
        aelab.load_dataset("mnist")
    msg = str(e.value)
    assert all(f in msg for f in IDX_FILES) and str(tmp_path / "cache" / "mnist") in msg
    assert "\n" not in msg


def test_explicit_data_dir_missing_files(tmp_path):
    with pytest.raises(AelabError, match="--data-dir .* lacks train-images"):
        aelab.load_dataset("mnist", data_dir=tmp_path)


def test_dataset_lives_below_the_loaders_and_keeps_its_old_addresses():
    """Dataset and from_arrays live in aelab.data.dataset, which memmap and datasets build on; the old
    import paths still give the same objects."""
    import aelab.data
    from aelab.data import dataset, datasets, memmap

    assert datasets.Dataset is dataset.Dataset is memmap.Dataset is aelab.data.Dataset is aelab.Dataset
    assert datasets.from_arrays is dataset.from_arrays is aelab.from_arrays
    assert datasets.split_indices is dataset.split_indices and issubclass(memmap.MemmapDataset, dataset.Dataset)
    data_dir = Path(dataset.__file__).parent
    for name, forbidden in [("dataset.py", {"datasets", "memmap"}), ("memmap.py", {"datasets"})]:
        tree = ast.parse((data_dir / name).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
        assert not imported & forbidden, (name, imported)
    for name in ("dataset.py", "datasets.py", "memmap.py", "idx.py"):
        for func in ast.walk(ast.parse((data_dir / name).read_text())):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for n in ast.walk(func) if isinstance(n, (ast.Import, ast.ImportFrom))]
                assert not inner, f"{name}: {func.name} imports inside the function"


# ------------------------------------------------------------------------------------ download
def _tiny_idx_set(folder: Path, n_train=30, n_test=10) -> dict:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), (np.arange(n_train) % 10).astype(np.uint8),
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), (np.arange(n_test) % 10).astype(np.uint8)]
    for name, arr in zip(IDX_FILES, arrays):
        write_idx(folder / name, arr)
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in IDX_FILES}


@pytest.fixture
def mirror(tmp_path):
    """An HTTP server on 127.0.0.1 serving a folder of IDX files."""
    root = tmp_path / "mirror"
    root.mkdir()
    sums = _tiny_idx_set(root)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", root, sums
    server.shutdown()
    server.server_close()


def test_download_lands_verified_files_in_cache(mirror, monkeypatch, tmp_path):
    url, root, sums = mirror
    monkeypatch.setitem(dl.MD5, "mnist", sums)
    monkeypatch.setenv("AELAB_MIRROR", url)
    monkeypatch.setenv("AELAB_OFFLINE", "0")
    d = aelab.load_dataset("mnist")
    cache = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(IDX_FILES)
    assert d.x_train.shape == (30, 1, 28, 28) and d.y_test.tolist() == list(range(10))
    # a second load uses the cache, even with the server gone
    monkeypatch.setenv("AELAB_MIRROR", "http://127.0.0.1:9/")
    assert torch.equal(aelab.load_dataset("mnist").x_train, d.x_train)


def test_download_with_wrong_md5_leaves_nothing(mirror, monkeypatch, tmp_path):
    url, root, sums = mirror
    bad = dict(sums, **{IDX_FILES[0]: "0" * 32})
    monkeypatch.setitem(dl.MD5, "mnist", bad)
    monkeypatch.setenv("AELAB_MIRROR", url)
    monkeypatch.setenv("AELAB_OFFLINE", "0")
    with pytest.raises(AelabError, match="does not match the published"):
        aelab.load_dataset("mnist")
    cache = tmp_path / "cache" / "mnist"
    assert not (cache / IDX_FILES[0]).exists()
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")]


def test_download_unreachable_mirror_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("AELAB_MIRROR", "http://127.0.0.1:9/")
    monkeypatch.setenv("AELAB_OFFLINE", "0")
    with pytest.raises(AelabError, match="download failed") as e:
        aelab.load_dataset("fashion-mnist")
    assert "\n" not in str(e.value)
