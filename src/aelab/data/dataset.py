"""The :class:`Dataset` every loader returns, and user arrays turned into one.

Images are held as uint8 tensors of shape (N, C, H, W) (a quarter of the memory of float32) and
turned into floats in [0, 1] per batch by :func:`aelab.data.batches.as_float`. Labels are int64.
This module sits below both the named loaders (:mod:`aelab.data.datasets`) and the memory-mapped
files (:mod:`aelab.data.memmap`), which build on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import AelabError
from ..modality import FEATURES, IMAGE, Modality
from .batches import ModalityBatches, TensorBatches, as_inputs


@dataclass
class Dataset:
    """Train and test tensors of one dataset, with labels when it has them.

    ``x_*`` are uint8 images (N, C, H, W) or float features (N, D) / (N, C, H, W): one modality, named
    ``"image"`` or ``"features"``; or a mapping ``{modality: tensor}`` of row-aligned tensors, row i of every
    modality being one paired sample (the multimodal case). ``y_*`` int64 or None.
    """

    name: str
    x_train: torch.Tensor | dict
    x_test: torch.Tensor | dict
    y_train: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    classes: list[str] | None = None
    source: str = ""  # where the data came from, for the run folder and the report
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ modalities
    @property
    def modalities(self) -> list[str]:
        """The modality names of a sample: ``["image"]``, ``["features"]``, or the mapping's keys."""
        if isinstance(self.x_train, dict):
            return list(self.x_train)
        return [IMAGE if self.x_train.dim() == 4 else FEATURES]

    @property
    def is_multimodal(self) -> bool:
        return isinstance(self.x_train, dict)

    def specs(self) -> dict[str, Modality]:
        """``{modality: Modality}``: what a model is built for. A loader of paired data records them in
        ``meta["modalities"]``; one modality's spec says "bernoulli" when its values lie in [0, 1] (a sigmoid
        output fits them), else "gaussian"."""
        if "modalities" in self.meta:
            return {k: Modality.from_dict(d) for k, d in self.meta["modalities"].items()}
        name = self.modalities[0]
        return {name: Modality(name, self.input_shape, str(self.x_train.dtype).removeprefix("torch."),
                               "bernoulli" if self.bounded else "gaussian")}

    @property
    def record(self) -> dict | None:
        """What the run folder keeps of this dataset beside its config (``data.json``: e.g. a paired dataset's
        splits and statistics), or None when its name and config rebuild it alone."""
        return self.meta.get("record")

    def inputs(self, split: str = "test") -> dict:
        """The rows of ``split`` ("train" or "test") as a mapping ``{modality: tensor}``."""
        x = self.x_train if split == "train" else self.x_test
        return as_inputs(x, self.modalities[0])

    def batch_source(self, binarize: bool = False) -> ModalityBatches:
        """The training rows as the trainer's batch source: float batches ``{modality: tensor}``, dynamically
        binarized when asked for (see :class:`aelab.data.batches.ModalityBatches`)."""
        if self.is_multimodal:
            return ModalityBatches({k: TensorBatches(v) for k, v in self.x_train.items()}, binarize)
        return ModalityBatches({self.modalities[0]: self.train_batches()}, binarize)

    def _only_modality(self, what: str) -> torch.Tensor:
        if self.is_multimodal:
            raise AelabError(f"{self.name} holds several modalities ({', '.join(self.modalities)}), so it has no "
                             f"single {what}; use a multimodal model (--model multimodal)")
        return self.x_train

    # ------------------------------------------------------------------ one modality
    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self._only_modality("input shape").shape[1:])

    @property
    def is_images(self) -> bool:
        """True for images (N, C, H, W), False for flat features (N, D) and for several modalities."""
        return not self.is_multimodal and len(self.input_shape) == 3

    @property
    def bounded(self) -> bool:
        """True when every value lies in [0, 1] once converted (uint8 images always do)."""
        if self.is_multimodal:
            return False
        if self.x_train.dtype == torch.uint8:
            return True
        lo = min(self.x_train.min().item(), self.x_test.min().item())
        hi = max(self.x_train.max().item(), self.x_test.max().item())
        return lo >= 0.0 and hi <= 1.0

    def to(self, device: torch.device | str) -> "Dataset":
        """The same dataset with every tensor on ``device`` (data lives where training happens)."""
        def move(t):
            if isinstance(t, dict):
                return {k: v.to(device) for k, v in t.items()}
            return None if t is None else t.to(device)
        return Dataset(self.name, move(self.x_train), move(self.x_test), move(self.y_train), move(self.y_test),
                       self.classes, self.source, dict(self.meta))

    def split_validation(self, fraction: float, seed: int = 0) -> tuple["Dataset", dict]:
        """Carve a validation split out of the TRAINING rows (never the test set): ``fraction`` of them, seeded
        and stratified by label when there are labels. Returns the dataset without those rows and the
        validation rows as a mapping ``{modality: tensor}``."""
        n = len(next(iter(self.inputs("train").values())))
        labels = None if self.y_train is None else self.y_train.cpu().numpy()
        train, val = split_indices(n, fraction, seed, labels)
        if len(train) == 0 or len(val) == 0:
            raise AelabError(f"cannot hold out {fraction:g} of {n} training rows for validation; "
                             f"choose --val-fraction between 1/{n} and {(n - 1) / n:.3g}")

        def rows(x, idx):
            if x is None:
                return None
            if isinstance(x, dict):
                return {k: v[idx.to(v.device)] for k, v in x.items()}
            return x[idx.to(x.device)]
        kept = Dataset(self.name, rows(self.x_train, train), self.x_test, rows(self.y_train, train), self.y_test,
                       self.classes, self.source, {**self.meta, "validation_rows": len(val)})
        return kept, as_inputs(rows(self.x_train, val), self.modalities[0])

    def train_batches(self):
        """The training rows of a one-modality dataset as a tensor batch source (see
        :class:`aelab.data.batches.TensorBatches`; a memory-mapped dataset gives its own)."""
        return TensorBatches(self._only_modality("tensor of rows"))

    def __repr__(self) -> str:
        if self.is_multimodal:
            shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.x_train.items())
            return f"Dataset({self.name!r}, train: {shapes}, test={len(next(iter(self.x_test.values())))} rows)"
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
        tr, te = split_indices(len(x_train), test_fraction, seed, None if y_train is None else y_train.cpu().numpy())
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


__all__ = ["Dataset", "from_arrays", "split_indices"]
