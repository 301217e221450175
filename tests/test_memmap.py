"""Data larger than memory: a .npy file trained through a memory map, block by block.

The default tests use files of a few hundred kilobytes and tiny blocks; the bound on resident memory
for a file of several gigabytes is shown by ``benchmarks/memmap_rss.py`` (and the slow test below).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import aelab
from aelab.data import as_float, memmap
from aelab.data.memmap import MemmapBatches, MemmapDataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def digits_npy(tmp_path, small_mnist):
    """1,000 real digits, uint8 (1000, 1, 28, 28), as a .npy file."""
    path = tmp_path / "digits.npy"
    np.save(path, small_mnist.x_train.numpy())
    return path


def test_epoch_order_walks_shuffled_blocks_of_shuffled_rows(tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, np.arange(1030 * 4, dtype=np.float32).reshape(1030, 4))  # 16 bytes a row
    src = MemmapBatches(path, 0, 1030, block_bytes=16 * 100)  # 100 rows a block, the last one 30
    assert (src.block_rows, src.n_blocks) == (100, 11)
    order = src.epoch_order(seed=5, epoch=1)
    assert torch.equal(order.sort().values, torch.arange(1030))
    blocks = order // 100
    runs = torch.unique_consecutive(blocks)  # each block is one contiguous run of the order
    assert len(runs) == 11 and len(set(runs.tolist())) == 11
    assert not torch.equal(runs, runs.sort().values), "blocks come in a shuffled order"
    first = order[blocks == runs[0]]
    assert not torch.equal(first, first.sort().values), "rows within a block are shuffled"
    assert torch.equal(order, src.epoch_order(seed=5, epoch=1))  # a pure function of (seed, epoch) ...
    assert not torch.equal(order, src.epoch_order(seed=5, epoch=2))  # ... and a new one every epoch


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_take_returns_those_rows_as_float32_reading_only_their_blocks(tmp_path, monkeypatch, dtype):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (500, 3, 2), dtype=np.uint8).astype(dtype)
    np.save(tmp_path / "x.npy", data)
    expected = torch.from_numpy(data.astype(np.float32) / (255.0 if dtype == "uint8" else 1.0))
    src = MemmapBatches(tmp_path / "x.npy", 100, 500, block_bytes=data.itemsize * 6 * 64)  # 64 rows a block
    reads = []
    real_read = memmap.read_rows
    def counted(array, lo, hi, out=None):
        reads.append((lo, hi))
        return real_read(array, lo, hi, out)

    monkeypatch.setattr(memmap, "read_rows", counted)
    order = src.epoch_order(seed=0, epoch=1)
    for i in range(0, len(order), 50):  # batches across block edges too
        idx = order[i:i + 50]
        xb = src.take(idx)
        assert xb.dtype == torch.float32 and torch.equal(xb, expected[100 + idx])
        assert set(src._blocks) == set((idx // 64).tolist())  # only what this batch needs is held
    assert sorted(reads) == [(100 + lo, min(100 + lo + 64, 500)) for lo in range(0, 400, 64)]  # each block once


def untrained_test_loss(x_train: torch.Tensor, x_test: torch.Tensor, **settings) -> float:
    """The test loss of a dense model as a fresh run starts it (seed 0, decoder at the mean training image):
    what training has to beat. About 0.061 for the model and digits below, the mean image's own MSE."""
    torch.manual_seed(0)
    model = aelab.build_model("dense", tuple(x_train.shape[1:]), **settings)
    model.init_from_data(x_train)
    with torch.no_grad():
        return model(as_float(x_test)).loss.item()


def test_train_from_npy_file_on_the_command_line(digits_npy, tmp_path, capsys):
    from aelab.cli import main

    out = tmp_path / "run"
    code = main(["train", "--dataset", str(digits_npy), "--epochs", "5", "--lr", "3e-3", "--hidden-dims", "32",
                 "--latent-dim", "8", "--batch-size", "64", "--out", str(out), "--quiet", "--no-report"])
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = torch.from_numpy(np.load(digits_npy))
    untrained = untrained_test_loss(rows[:900], rows[900:], hidden_dims=[32], latent_dim=8)
    # it learns: measured 0.043 after 5 epochs against 0.061 untrained (the mean image alone scores 0.061)
    assert lines[-1]["test_loss"] < 0.8 * untrained, (lines[-1]["test_loss"], untrained)
    assert json.loads((out / "config.json").read_text())["dataset"] == str(digits_npy)
    data = aelab.load_dataset(str(digits_npy))
    assert isinstance(data, MemmapDataset) and data.bounded and data.input_shape == (1, 28, 28)
    assert len(data.x_test) == 100 and len(data.x_train) == 900  # the last 10% of the rows
    assert torch.equal(data.x_test, torch.from_numpy(np.load(digits_npy)[900:]))


def test_memmap_and_in_memory_training_agree_when_one_block_holds_everything(digits_npy, tmp_path):
    """With a block larger than the file the block order is one block, and its row shuffle is the same
    permutation the in-memory path draws: the two paths must then train identically."""
    mm = MemmapDataset(digits_npy, test_rows=100, block_bytes=2**30)
    mem = aelab.from_arrays(np.load(digits_npy)[:900], x_test=np.load(digits_npy)[900:])
    common = dict(epochs=2, batch_size=100, hidden_dims=[16], latent_dim=4, progress=False, log=None, report=False)
    a = aelab.train("dense", mm, out=tmp_path / "a", **common)
    b = aelab.train("dense", mem, out=tmp_path / "b", **common)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.last["test_loss"] == b.last["test_loss"]


def test_float_file_outside_0_1_trains_with_a_linear_output(tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "f.npy", rng.normal(size=(300, 6)).astype(np.float32))
    data = aelab.load_dataset(str(tmp_path / "f.npy"))
    assert not data.bounded
    run = aelab.train("dense", data, out=tmp_path / "r", epochs=1, hidden_dims=[8], latent_dim=2, progress=False,
                      log=None, report=False)
    assert run.model.output == "linear" and np.isfinite(run.last["test_loss"])


def test_to_builds_through_the_constructor_without_reading_the_test_rows_again(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "f.npy", rng.normal(size=(50, 3)).astype(np.float32))
    data = MemmapDataset(tmp_path / "f.npy", test_rows=7, block_bytes=12 * 8)
    assert not data.bounded  # scanned once, here
    data.name, data.meta["note"] = "renamed", 1
    monkeypatch.setattr(memmap, "read_rows", lambda *a, **k: pytest.fail("to() read the file again"))
    moved = data.to("cpu")
    assert type(moved) is MemmapDataset and moved is not data
    assert (moved.path, moved.n_train, moved.block_bytes, moved.device) == (data.path, 43, 96, torch.device("cpu"))
    assert moved.x_train is data.x_train and torch.equal(moved.x_test, data.x_test)
    assert moved.name == "renamed" and moved.meta == data.meta and moved.meta is not data.meta
    assert not moved.bounded  # the scan's answer travels with it (read_rows would fail the test)
    with pytest.raises(aelab.AelabError, match=r"x_test has shape \(6, 3\) but the last 7 rows"):
        MemmapDataset(tmp_path / "f.npy", test_rows=7, x_test=data.x_test[:6])


@pytest.mark.parametrize("make, message", [
    (lambda p: None, r"no file .*give the path of a \.npy file"),
    (lambda p: p.write_bytes(b"not numpy"), r"not a readable \.npy array"),
    (lambda p: np.save(p, np.zeros(10, np.float32)), r"expected \(N, features...\)"),
    (lambda p: np.save(p, np.zeros((10, 3), np.int32)), r"holds int32; save uint8 images or float features"),
    (lambda p: np.save(p, np.asfortranarray(np.zeros((10, 3), np.float32))), r"Fortran order.*ascontiguousarray"),
    (lambda p: np.save(p, np.array([[0.0, 1.0]] * 9 + [[np.nan, 0.0]], np.float32)), r"NaN or infinite values \(row 9"),
])
def test_bad_npy_files_get_one_clear_error(tmp_path, make, message):
    path = tmp_path / "bad.npy"
    make(path)
    with pytest.raises(aelab.AelabError, match=message):
        aelab.load_dataset(str(path)).bounded


@pytest.mark.slow
def test_resident_memory_stays_bounded_on_a_file_larger_than_the_bound(tmp_path):
    """A 1 GiB float32 file (half of the 2 GiB measurement in benchmarks/README.md, Results, to keep CI short)
    and a tiny model: one epoch must raise the peak resident memory by less than 300 MB (the test rows, two
    blocks, the row order, the evaluation's batches: measured the same for 0.5 GiB and 2 GiB), where reading
    the whole file would cost more than 1,000 MB."""
    if shutil.disk_usage(tmp_path).free < 3 * 2**30:
        pytest.skip("less than 3 GiB free in the temporary folder")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memmap_rss.py"), "--gb", "1", "--dir",
                             str(tmp_path), "--epochs", "1", "--hidden-dims", "32", "--latent-dim", "8"],
                            capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["file_mb"] >= 1024 and report["rss_growth_mb"] < 300, report
    assert not list(tmp_path.glob("*.npy"))  # the script removes its file
