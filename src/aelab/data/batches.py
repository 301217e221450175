"""Batches as slices of tensors that already live on the training device.

No per-sample Python loader: an epoch is one seeded permutation, each batch one gather of it, and
uint8 images become floats in [0, 1] per batch (on the device, so the host never touches them).

A batch is a mapping ``{modality name: tensor}`` (:mod:`aelab.modality`): ``{"image": (B, 1, 28, 28)}`` for
an image dataset, ``{"image": .., "audio": .., "text": ..}`` for paired multimodal rows. The per-batch
transforms (uint8 -> float, dynamic binarization) happen here, on the data side, before a model sees a batch.
"""
from __future__ import annotations

from typing import Iterator, Mapping

import torch

from ..modality import FEATURES, IMAGE


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) to float32 in [0, 1]; float tensors are returned unchanged."""
    if x.dtype == torch.uint8:
        if torch.get_default_dtype() == torch.float32:  # one pass: the division promotes uint8 to float32
            return x.div(255.0)  # (bit for bit what .to(float32).div_(255) gives, in half the memory traffic)
        return x.to(torch.float32).div_(255.0)
    return x


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s random stream (fits 64 bits for any seed up to 2**32 - 1)."""
    return int(seed) * 1_000_003 + int(epoch)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of epoch ``epoch``: a function of (seed, epoch) alone (see epoch_permutation)."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The shuffle of epoch ``epoch``: a function of (seed, epoch) alone, so a resumed run and every
    rank of a distributed run draw the same order without sharing generator state."""
    return torch.randperm(n, generator=epoch_generator(seed, epoch)).to(device)


def iterate_batches(x: torch.Tensor, batch_size: int, order: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Yield float batches of ``x`` in ``order`` (all of it, the last batch may be short)."""
    n = len(order) if order is not None else len(x)
    for start in range(0, n, batch_size):
        if order is None:
            yield as_float(x[start:start + batch_size])
        else:
            yield as_float(x.index_select(0, order[start:start + batch_size]))


class TensorBatches:
    """The training rows of an in-memory tensor as a batch source (the fast path: one gather a batch).

    The trainer asks any batch source for ``epoch_order(seed, epoch)`` (the epoch's row order) and
    ``take(idx)`` (a float batch on the device); :class:`aelab.data.memmap.MemmapBatches` answers the
    same two questions for a file larger than memory.
    """

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        return epoch_permutation(len(self.x), seed, epoch, self.x.device)

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        return as_float(self.x.index_select(0, idx))


BINARIZABLE = (IMAGE, FEATURES)  # modalities whose values in [0, 1] may be drawn as Bernoulli pixels


def binarize(batch: dict, keys=BINARIZABLE) -> dict:
    """Dynamic binarization (a fresh Bernoulli draw per value, from the global torch stream) of the image or
    feature tensor of ``batch``; other modalities (sound, text) pass unchanged."""
    return {k: torch.bernoulli(v) if k in keys else v for k, v in batch.items()}


def batch_rows(batch: Mapping[str, torch.Tensor]) -> int:
    """The number of samples in a batch (every modality has the same first dimension)."""
    return next(iter(batch.values())).shape[0]


def as_inputs(x, key: str = IMAGE) -> dict:
    """A model's input as a batch mapping: a mapping as it is, a tensor as its one modality ``key``."""
    return dict(x) if isinstance(x, Mapping) else {key: x}


def iterate_inputs(inputs: Mapping[str, torch.Tensor], batch_size: int) -> Iterator[dict]:
    """Float batches ``{modality: tensor}`` of row-aligned ``inputs`` in order (the last may be short)."""
    n = len(next(iter(inputs.values())))
    for start in range(0, n, batch_size):
        yield {k: as_float(v[start:start + batch_size]) for k, v in inputs.items()}


def slice_inputs(inputs: Mapping[str, torch.Tensor], rows) -> dict:
    """The same rows (a slice or an index tensor) of every modality."""
    return {k: v[rows] for k, v in inputs.items()}


class ModalityBatches:
    """The trainer's batch source: one source of rows per modality (in-memory :class:`TensorBatches`, or a
    memory-mapped file's), all answering for the same row indices, and the data side's transforms.

    ``epoch_order(seed, epoch)`` is the first modality's order (a memory-mapped source walks its blocks);
    ``take(idx)`` is a float batch ``{modality: tensor}`` on the device, dynamically binarized when asked for;
    ``take(idx, transform=False)`` the same rows without binarization (the data-init hook's mean image).
    """

    def __init__(self, sources: dict, binarize: bool = False):
        self.sources = sources
        self.first = next(iter(sources.values()))
        self.binarize = binarize

    def __len__(self) -> int:
        return len(self.first)

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        return self.first.epoch_order(seed, epoch)

    def take(self, idx: torch.Tensor, transform: bool = True) -> dict:
        batch = {k: s.take(idx) for k, s in self.sources.items()}
        return binarize(batch) if transform and self.binarize else batch
