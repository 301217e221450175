"""Data larger than memory: train from a ``.npy`` file through a memory map, a block at a time.

``aelab train --dataset path/to/rows.npy`` (any dataset name ending in ``.npy``) opens the file with
``np.load(mmap_mode="r")``; nothing is read until a batch needs it. An epoch walks the training rows
in a shuffled list of contiguous *blocks* (``BLOCK_BYTES`` each, 32 MiB); within a block the rows
come in a fresh random order, so a batch is a random sample of one block (two at a block's edge).
Each block is read once per epoch with one sequential read, copied to the training device, and its
pages are then dropped from this process's mapping (``madvise(MADV_DONTNEED)``). Memory held for
the file is therefore at most a few blocks plus the epoch's row order (8 bytes per row), however
large the file. The order is a pure function of (seed, epoch), like the in-memory shuffle, so
resumed and multi-process runs see the same batches.

The file holds one sample per row, ``(N, features...)``: uint8 (images, scaled from 0..255 to [0, 1])
or floats (used as they are, as float32). The last ``test_rows`` rows (10%, at most 10,000) are the
test set and are loaded into memory; shuffle the rows of a file that is sorted (by class, by time)
before training on it.
"""
from __future__ import annotations

import math
import mmap
from pathlib import Path

import numpy as np
import torch

from ..errors import AelabError, first_line
from .batches import as_float, epoch_generator, epoch_permutation
from .dataset import Dataset

BLOCK_BYTES = 32 * 2**20  # rows read together; two blocks bound the memory training holds
CHUNK_BYTES = 4 * 2**20  # the most of the file mapped into the process at any moment
MAX_TEST_ROWS = 10_000


def is_npy_name(name: str) -> bool:
    """A dataset spelled as a path to a ``.npy`` file."""
    return str(name).lower().endswith(".npy")


def open_npy(path: str | Path) -> np.memmap:
    """Map ``path`` read-only as an (N, features...) array of uint8 or floats; a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise AelabError(f"no file {path}; give the path of a .npy file of shape (N, features...)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise AelabError(f"{path} is not a readable .npy array ({first_line(exc, 160)}); write it with "
                         f"numpy.save") from None
    if not isinstance(array, np.memmap):  # np.load maps every plain array; anything else is not one
        raise AelabError(f"{path} is not a plain .npy array; write it with numpy.save")
    if array.ndim < 2 or array.shape[0] < 2 or 0 in array.shape:
        raise AelabError(f"{path} has shape {array.shape}; expected (N, features...) with N >= 2 rows, "
                         f"one sample per row")
    if not (array.dtype == np.uint8 or array.dtype.kind == "f"):
        raise AelabError(f"{path} holds {array.dtype}; save uint8 images or float features "
                         f"(array.astype('float32'))")
    if not array.flags.c_contiguous:
        raise AelabError(f"{path} is stored in Fortran order, so a row is not contiguous on disk; save "
                         f"numpy.ascontiguousarray(array) instead")
    return array


def _release(array: np.memmap) -> None:
    """Drop the pages of the mapping from this process (they stay in the OS page cache): without this,
    every page ever touched counts towards the process's resident memory until the OS needs it back."""
    mm = getattr(array, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def _rows_in(nbytes: int, array: np.ndarray) -> int:
    """How many rows of ``array`` fit in ``nbytes`` (at least one)."""
    return max(1, int(nbytes) // max(1, array.dtype.itemsize * math.prod(array.shape[1:])))


def row_dtype(array: np.ndarray) -> np.dtype:
    """What rows are held as in memory: uint8 stays uint8 (a quarter of float32), any float is float32."""
    return np.dtype(np.uint8) if array.dtype == np.uint8 else np.dtype(np.float32)


def read_rows(array: np.memmap, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows ``start:stop`` as a private in-memory array (into ``out[:stop - start]`` when given), copied
    a few MiB at a time so that no more than that of the file is ever mapped in at once."""
    rows = np.empty((stop - start, *array.shape[1:]), row_dtype(array)) if out is None else out[:stop - start]
    step = _rows_in(CHUNK_BYTES, array)
    for lo in range(start, stop, step):
        hi = min(lo + step, stop)
        rows[lo - start:hi - start] = array[lo:hi]
        _release(array)
    return rows


class MemmapBatches:
    """The rows ``start:stop`` of a ``.npy`` file as a batch source, read block by block.

    ``epoch_order(seed, epoch)`` gives the epoch's row order (a CPU tensor); ``take(idx)`` returns the
    float batch of those rows on ``device``. Consecutive slices of the order must be taken in turn:
    only the blocks the current batch needs are kept.
    """

    def __init__(self, path: str | Path, start: int, stop: int, device: torch.device | str = "cpu",
                 block_bytes: int = BLOCK_BYTES):
        self.array = open_npy(path)
        self.start, self.rows = int(start), int(stop) - int(start)
        self.device = torch.device(device)
        self.block_rows = _rows_in(block_bytes, self.array)
        self.n_blocks = math.ceil(self.rows / self.block_rows)
        self._blocks: dict[int, torch.Tensor] = {}
        # block buffers are reused rather than reallocated: a fixed two or three for the whole run
        self._free: list[np.ndarray] = []
        self._held: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.rows

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """The blocks in a shuffled order, the rows of each block shuffled: a function of (seed, epoch)."""
        if self.n_blocks == 1:  # exactly the in-memory shuffle of the same seed and epoch
            return epoch_permutation(self.rows, seed, epoch)
        g = epoch_generator(seed, epoch)
        parts = []
        for b in torch.randperm(self.n_blocks, generator=g).tolist():
            lo = b * self.block_rows
            parts.append(lo + torch.randperm(min(self.block_rows, self.rows - lo), generator=g))
        return torch.cat(parts)

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """The float batch of rows ``idx`` (positions among the training rows) on the device."""
        idx = idx.cpu()
        block_of = idx // self.block_rows
        needed = block_of.unique().tolist()
        for b in [b for b in self._blocks if b not in needed]:  # free before reading: the bound holds
            del self._blocks[b]
            if b in self._held:
                self._free.append(self._held.pop(b))
        for b in needed:
            if b not in self._blocks:
                self._blocks[b] = self._load(b)
        if len(needed) == 1:
            b = needed[0]
            return as_float(self._blocks[b].index_select(0, (idx - b * self.block_rows).to(self.device)))
        first = self._blocks[needed[0]]
        out = torch.empty((len(idx), *first.shape[1:]), dtype=first.dtype, device=self.device)
        for b in needed:  # a batch across a block edge: gather from each, in the batch's order
            sel = (block_of == b).nonzero().squeeze(1)
            out[sel.to(self.device)] = self._blocks[b].index_select(0, (idx[sel] - b * self.block_rows).to(self.device))
        return as_float(out)

    def _load(self, b: int) -> torch.Tensor:
        """Block ``b`` on the device, read into a reused host buffer (kept with the block on the CPU;
        a staging buffer, free again at once, for a GPU)."""
        buf = self._free.pop() if self._free else np.empty((self.block_rows, *self.array.shape[1:]),
                                                           row_dtype(self.array))
        lo = self.start + b * self.block_rows
        rows = read_rows(self.array, lo, min(lo + self.block_rows, self.start + self.rows), out=buf)
        block = torch.from_numpy(rows)
        if self.device.type == "cpu":
            self._held[b] = buf
            return block
        self._free.append(buf)
        return block.to(self.device)


class MemmapDataset(Dataset):
    """A :class:`Dataset` whose training rows stay in a ``.npy`` file (see the module's docstring).

    ``x_train`` is a tensor view of the mapped file (zero-copy: touching all of it reads all of it);
    training goes through :meth:`train_batches`. ``x_test`` is an ordinary tensor in memory.
    """

    def __init__(self, path: str | Path, test_rows: int | None = None, block_bytes: int = BLOCK_BYTES,
                 device: torch.device | str = "cpu", *, x_test: torch.Tensor | None = None):
        """Map ``path``; the last ``test_rows`` rows are the test set, read into memory on ``device``
        (or taken from ``x_test`` when given: those rows already read, as :meth:`to` passes them)."""
        self.path = Path(path)
        array = open_npy(self.path)
        n = len(array)
        test_rows = min(MAX_TEST_ROWS, max(1, round(0.1 * n))) if test_rows is None else int(test_rows)
        if not 1 <= test_rows < n:
            raise AelabError(f"test_rows must lie in 1..{n - 1} for {self.path} ({n} rows), got {test_rows}")
        self.n_train, self.block_bytes, self.device = n - test_rows, int(block_bytes), torch.device(device)
        # a copy-on-write view: a tensor that is written to changes memory, never the file
        view = np.load(self.path, mmap_mode="c", allow_pickle=False)
        if x_test is None:
            x_test = torch.from_numpy(read_rows(array, self.n_train, n))
        elif tuple(x_test.shape) != (test_rows, *array.shape[1:]):
            raise AelabError(f"x_test has shape {tuple(x_test.shape)} but the last {test_rows} rows of "
                             f"{self.path} have shape {(test_rows, *array.shape[1:])}; pass rows of that file")
        super().__init__(self.path.stem, torch.from_numpy(view[:self.n_train]), x_test.to(self.device),
                         source=str(self.path), meta={"memmap": True, "rows": n, "test_rows": test_rows})
        self._bounded: bool | None = None

    def train_batches(self) -> MemmapBatches:
        """The training rows, block by block, as batches on this dataset's device."""
        return MemmapBatches(self.path, 0, self.n_train, self.device, self.block_bytes)

    def to(self, device: torch.device | str) -> "MemmapDataset":
        """Training rows stay in the file; the test rows move to ``device``; batches land there."""
        other = MemmapDataset(self.path, len(self.x_test), self.block_bytes, device, x_test=self.x_test)
        other.name, other.x_train, other.y_train, other.y_test = self.name, self.x_train, self.y_train, self.y_test
        other.classes, other.source, other.meta = self.classes, self.source, dict(self.meta)
        other._bounded = self._bounded  # a float file is scanned once, not once per move
        return other

    def split_validation(self, fraction: float, seed: int = 0):
        raise AelabError(f"a validation split needs the training rows in memory, but {self.path} is trained "
                         f"through a memory map; hold out validation rows in a separate file, or train without "
                         f"--val-fraction/--patience")

    @property
    def bounded(self) -> bool:
        """True when every value lies in [0, 1]; a float file is scanned once, a block at a time."""
        if self._bounded is None:
            self._bounded = self.x_train.dtype == torch.uint8 or self._scan_float()
        return self._bounded

    def _scan_float(self) -> bool:
        array = open_npy(self.path)
        step = _rows_in(self.block_bytes, array)
        lo, hi = math.inf, -math.inf
        buf = np.empty((min(step, len(array)), *array.shape[1:]), row_dtype(array))
        for start in range(0, len(array), step):
            rows = read_rows(array, start, min(start + step, len(array)), out=buf)
            if not np.isfinite(rows).all():
                bad = start + int(np.flatnonzero(~np.isfinite(rows).reshape(len(rows), -1).all(1))[0])
                raise AelabError(f"{self.path} holds NaN or infinite values (row {bad} is the first); "
                                 f"clean or impute them first")
            lo, hi = min(lo, float(rows.min())), max(hi, float(rows.max()))
        return lo >= 0.0 and hi <= 1.0

    def __repr__(self) -> str:
        return (f"MemmapDataset({str(self.path)!r}, train={tuple(self.x_train.shape)} in the file, "
                f"test={tuple(self.x_test.shape)}, dtype={self.x_train.dtype})")


def load_npy(path: str | Path, data_dir: str | Path | None = None, **kwargs) -> MemmapDataset:
    """The dataset spelled ``path/to/file.npy`` (relative paths are looked for in ``data_dir`` too)."""
    path = Path(path).expanduser()
    if not path.is_file() and data_dir is not None and not path.is_absolute():
        path = Path(data_dir) / path
    return MemmapDataset(path, **kwargs)


__all__ = ["BLOCK_BYTES", "MemmapBatches", "MemmapDataset", "is_npy_name", "load_npy", "open_npy", "read_rows"]
