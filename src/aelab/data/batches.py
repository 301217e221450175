"""Batches as slices of tensors that already live on the training device.

No per-sample Python loader: an epoch is one seeded permutation, each batch one gather of it, and
uint8 images become floats in [0, 1] per batch (on the device, so the host never touches them).
"""
from __future__ import annotations

from typing import Iterator

import torch


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
