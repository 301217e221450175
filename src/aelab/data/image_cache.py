"""A folder of images decoded once into a cached uint8 array, which training reads through a memory map.

Every image is brought to one size and channel count (:func:`aelab.data.folders.load_image`) and written, as
uint8 (N, C, H, W), into a ``.npy`` file under ``cache_dir()/images``. Its rows are the training rows in a
seeded random order (so that a block of the memory map is a random sample of the training set, not one
class), then the test rows; a JSON record beside it says which file each row is.

The file is named by a digest of every image's relative path, size and modification time, the image size,
the channel count and the split: a changed, added or removed file decodes the folder again; a second run on
the same folder opens no image. Another split (seed, test fraction) rearranges the rows of a cached file
into a new one without decoding (each split is a file of its own; the cache folder may be deleted at any
time). Nothing is held per image beyond the list of names and the row order.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import AelabError
from ..modality import IMAGE
from .batches import as_inputs
from .dataset import split_indices
from .folders import (SKIP_HINT, ImageFiles, bad_image, check_format, images_transform, load_image, reason,
                      scan_folder, survey)
from .memmap import BLOCK_BYTES, MemmapDataset, open_npy, read_rows

logger = logging.getLogger(__name__)

COPY_BYTES = 4 * 2**20  # rows copied together when a cached file is rearranged for another split


# ---------------------------------------------------------------------------------------------- the cache
def arrange(files: ImageFiles, good: np.ndarray, split: tuple) -> tuple[np.ndarray, int]:
    """(file index of every row, number of training rows) of a cached file. ``split`` is ``("all",)``: every
    readable image in the folder's order, all of them "training" rows (for reading inputs); or ``("split",
    seed, test_fraction)``: the train/ and test/ folders, or else a seeded split stratified by label, the
    training rows shuffled with ``seed``, then the test rows in the folder's order."""
    idx = np.flatnonzero(good)
    if split[0] == "all":
        return idx, len(idx)
    _, seed, test_fraction = split
    if files.parts is not None:
        train, test = idx[files.parts[idx] == 0], idx[files.parts[idx] == 1]
        if len(train) == 0 or len(test) == 0:
            raise AelabError(f"no readable image is left in {files.root}/{'train' if len(train) == 0 else 'test'}")
    else:
        tr, te = split_indices(len(idx), test_fraction, seed, None if files.labels is None else files.labels[idx])
        train, test = idx[tr.cpu().numpy()], idx[te.cpu().numpy()]
    return np.concatenate([np.random.default_rng(seed).permutation(train), test]), len(train)


def split_key(files: ImageFiles, split: tuple) -> str:
    if split[0] == "all":
        return "all"
    return f"folders-s{split[1]}" if files.parts is not None else f"s{split[1]}-f{split[2]:g}"


def cached_images(files: ImageFiles, cache: Path, size, channels, split: tuple, *, skip_bad: bool = False,
                  progress: bool = True) -> tuple[Path, dict]:
    """The cached ``.npy`` of ``files`` at (size, channels) arranged by ``split`` (see :func:`arrange`), decoded
    or rearranged when missing, and its record: ``order``, ``n_train``, ``size``, ``channels``, ``bad``."""
    folder = cache / "images"
    folder.mkdir(parents=True, exist_ok=True)
    size, channels = _resolve(files, folder, size, channels, skip_bad, progress)
    key = hashlib.sha256(f"{files.digest}|{size[0]}x{size[1]}|{channels}".encode()).hexdigest()[:24]
    target = folder / f"{key}-{split_key(files, split)}.npy"
    record = _read_record(target, files, size, channels)
    if record is None:
        source = next((r for r in (_read_record(p.with_suffix(".npy"), files, size, channels)
                                   for p in sorted(folder.glob(f"{key}-*.json"))) if r is not None), None)
        if source is None:
            record = _decode_arranged(files, target, size, channels, split, skip_bad, progress)
        else:
            logger.info(f"{files.root}: rearranging the cached images for this split (no decoding)")
            good = np.ones(len(files.files), bool)
            if source["bad"]:
                position = {name: i for i, name in enumerate(files.files)}
                good[[position[name] for name in source["bad"]]] = False
            record = _rearrange(files, Path(source["path"]), np.asarray(source["order"]), target, split, good,
                                source["bad"], source["reason"], size, channels)
    if record["bad"]:
        if not skip_bad:
            raise AelabError(f"cannot read the image {record['bad'][0]} in {files.root} ({record['reason']}); fix "
                             f"or remove it, or {SKIP_HINT}")
        logger.warning(f"left out {len(record['bad'])} unreadable image(s) of {files.root} (the first: "
                       f"{record['bad'][0]}: {record['reason']})")
    return target, record


def _resolve(files, folder: Path, size, channels, skip_bad, progress) -> tuple[tuple[int, int], int]:
    """The size and channel count asked for, the unset ones chosen by :func:`survey`, whose answer is kept
    beside the cache so that a second run reads no image header either."""
    if size is not None and channels is not None:
        return tuple(size), channels
    note = folder / ("auto-" + hashlib.sha256(f"{files.digest}|{size}|{channels}".encode()).hexdigest()[:24]
                     + ".json")
    try:
        chosen = json.loads(note.read_text())
        return tuple(chosen["size"]), int(chosen["channels"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found_size, found_channels = survey(files, skip_bad, progress)
    size, channels = size or found_size, channels or found_channels
    _write_text(note, json.dumps({"size": list(size), "channels": channels}))
    return tuple(size), channels


def _read_record(target: Path, files: ImageFiles, size, channels) -> dict | None:
    """The record of a complete cached file made from exactly these files, or None."""
    try:
        record = json.loads(target.with_suffix(".json").read_text())
        fits = (record["digest"] == files.digest and tuple(record["size"]) == tuple(size)
                and record["channels"] == channels
                and open_npy(target).shape == (len(record["order"]), channels, *size))
    except (OSError, ValueError, KeyError, TypeError, AelabError):  # absent, half written, or not ours
        return None
    return {**record, "path": str(target)} if fits else None


def _decode_arranged(files, target, size, channels, split, skip_bad, progress) -> dict:
    """Decode every image straight into its row of ``target``; with unreadable images skipped, the split is
    drawn again among the readable ones and the rows rearranged (rare: a copy, no decoding)."""
    good = np.ones(len(files.files), bool)
    order, n_train = arrange(files, good, split)
    tmp = _tmp(target)
    try:
        bad, why = _decode(files, order, tmp, size, channels, skip_bad, progress)
        if not bad:
            return _commit(tmp, target, files, order, n_train, [], "", size, channels)
        good[bad] = False
        return _rearrange(files, tmp, order, target, split, good, [files.files[i] for i in bad], why, size,
                          channels)
    finally:
        tmp.unlink(missing_ok=True)


def _decode(files, order, out: Path, size, channels, skip_bad, progress) -> tuple[list[int], str]:
    """Write image ``order[r]`` into row r of a new ``.npy`` at ``out``, reading the files in the folder's
    order; returns the indices of the unreadable files (zero rows) and the first one's reason."""
    rows = np.full(len(files.files), -1, np.int64)
    rows[order] = np.arange(len(order))
    header = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(len(order), channels, *size))
    offset, row_bytes = header.offset, channels * size[0] * size[1]
    del header  # rows are written with pwrite, not through a mapping: written pages never count as ours
    bad, why = [], ""
    fd = os.open(out, os.O_WRONLY)
    try:
        for i, rel in enumerate(tqdm(files.files, desc=f"decoding {files.root.name}", unit="img",
                                     disable=not progress, leave=False, dynamic_ncols=True)):
            if rows[i] < 0:
                continue
            try:
                pixels = load_image(files.root / rel, size, channels)
            except Exception as exc:  # malformed files make Pillow's plugins raise all kinds of errors
                if not skip_bad:
                    raise bad_image(files.root, rel, exc) from None
                why = why or reason(files.root, rel, exc)
                bad.append(i)
                continue
            _pwrite_all(fd, pixels.tobytes(), offset + int(rows[i]) * row_bytes)
    finally:
        os.close(fd)
    return bad, why


def _rearrange(files, source: Path, source_order, target, split, good, bad, why, size, channels) -> dict:
    """Copy the rows of ``source`` (file ``source_order[r]`` in row r) into ``target`` arranged by ``split``
    among the ``good`` files, a few MiB at a time."""
    order, n_train = arrange(files, good, split)
    src_row = np.full(len(files.files), -1, np.int64)
    src_row[source_order] = np.arange(len(source_order))
    src_rows = src_row[order]
    array = open_npy(source)
    row_bytes = channels * size[0] * size[1]
    tmp = _tmp(target)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(order), channels, *size))
        offset = out.offset
        del out
        step = max(1, COPY_BYTES // row_bytes)
        with open(source, "rb") as src, open(tmp, "r+b") as dst:
            for lo in range(0, len(order), step):
                chunk = b"".join(os.pread(src.fileno(), row_bytes, array.offset + int(r) * row_bytes)
                                 for r in src_rows[lo:lo + step])
                _pwrite_all(dst.fileno(), chunk, offset + lo * row_bytes)
        return _commit(tmp, target, files, order, n_train, bad, why, size, channels)
    finally:
        tmp.unlink(missing_ok=True)


def _commit(tmp: Path, target: Path, files, order, n_train, bad, why, size, channels) -> dict:
    """Move a finished file into place, then its record: a file without its record is never used."""
    record = {"format": 1, "folder": str(files.root), "digest": files.digest, "size": list(size),
              "channels": channels, "n_train": int(n_train), "order": [int(i) for i in order], "bad": list(bad),
              "reason": why}
    os.replace(tmp, target)
    _write_text(target.with_suffix(".json"), json.dumps(record))
    return {**record, "path": str(target)}


def _tmp(target: Path) -> Path:
    return target.with_name(f".{target.stem}.{os.getpid()}.tmp")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


# ---------------------------------------------------------------------------------------------- the dataset
class CachedImages(MemmapDataset):
    """A folder's images as a memory-mapped dataset: the training rows are rows ``0:n_train`` of the cached
    file (read block by block), the test rows its last ``test_rows`` (in memory). A validation split takes
    the last training rows, which the cache already holds in a seeded random order."""

    def __init__(self, path: str | Path, n_train: int, test_rows: int, block_bytes: int = BLOCK_BYTES,
                 device: torch.device | str = "cpu", *, x_test: torch.Tensor | None = None):
        super().__init__(path, test_rows, block_bytes, device, x_test=x_test)
        self.n_train = int(n_train)  # rows between n_train and the test rows are held out for validation
        self.x_train = self.x_train[:self.n_train]

    def to(self, device: torch.device | str) -> "CachedImages":
        other = CachedImages(self.path, self.n_train, len(self.x_test), self.block_bytes, device, x_test=self.x_test)
        other.name, other.y_train, other.y_test = self.name, self.y_train, self.y_test
        other.classes, other.source, other.meta = self.classes, self.source, dict(self.meta)
        other._bounded = self._bounded
        return other

    def split_validation(self, fraction: float, seed: int = 0) -> tuple["CachedImages", dict]:
        """The last ``fraction`` of the training rows as validation rows (a random sample: the rows were
        shuffled with the dataset's seed when cached; ``seed`` is not used again)."""
        n_val = int(round(self.n_train * fraction))
        if not 0 < n_val < self.n_train:
            raise AelabError(f"cannot hold out {fraction:g} of {self.n_train} training rows for validation; "
                             f"choose --val-fraction between 1/{self.n_train} and "
                             f"{(self.n_train - 1) / self.n_train:.3g}")
        keep = self.n_train - n_val
        val = torch.from_numpy(read_rows(open_npy(self.path), keep, self.n_train)).to(self.device)
        kept = self.to(self.device)
        kept.n_train, kept.x_train = keep, self.x_train[:keep]
        kept.y_train = None if self.y_train is None else self.y_train[:keep]
        kept.meta = {**self.meta, "validation_rows": n_val}
        if "ids" in self.meta:
            kept.meta["ids"] = {**self.meta["ids"], "train": self.meta["ids"]["train"][:keep]}
        return kept, as_inputs(val, IMAGE)

    def __repr__(self) -> str:
        return (f"CachedImages({self.source!r}, train={tuple(self.x_train.shape)} in {self.path.name}, "
                f"test={tuple(self.x_test.shape)}, labels={self.y_train is not None})")


def load_folder(root: str | Path, cache: Path, *, test_fraction: float = 0.2, seed: int = 0, image_size=None,
                channels=None, skip_bad: bool = False, progress: bool = True) -> tuple[CachedImages, dict]:
    """The dataset of a folder of images (see the module's docstring), and how it was made: ``transform``,
    ``split`` ("folders", "stratified" or "random"), ``ids`` ({"train": [...], "test": [...]}: relative paths)."""
    image_size, channels = check_format(image_size, channels)
    files = scan_folder(root)
    if files.classes is not None and len(files.classes) == 1:
        logger.warning(f"{files.root} has one class folder ('{files.classes[0]}'): its images are read without "
                       f"labels (a classifier needs two classes or more, so probes are skipped)")
        files = dataclasses.replace(files, labels=None, classes=None)  # the same split: one class is no strata
    path, record = cached_images(files, cache, image_size, channels, ("split", seed, test_fraction),
                                 skip_bad=skip_bad, progress=progress)
    order, n_train = np.asarray(record["order"]), record["n_train"]
    data = CachedImages(path, n_train, len(order) - n_train)
    if files.labels is not None:
        labels = torch.from_numpy(files.labels[order])
        data.y_train, data.y_test = labels[:n_train], labels[n_train:]
    data.name, data.classes, data.source = files.root.name, files.classes, str(files.root)
    split = "folders" if files.parts is not None else "random" if files.labels is None else "stratified"
    names = [files.files[i] for i in order]
    return data, {"transform": images_transform(record["size"], record["channels"], files.classes),
                  "split": split, "ids": {"train": names[:n_train], "test": names[n_train:]}}


def read_images(path: str | Path, transform: dict, cache: Path, *, skip_bad: bool = False,
                progress: bool = True) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """A folder of images (through the cache) or one image file at the run's size and channels, with the
    names of the images and, for class folders that are among the run's classes, their labels."""
    path, size, channels = Path(path), tuple(transform["size"]), int(transform["channels"])
    if path.is_file():
        try:
            pixels = load_image(path, size, channels)
        except Exception as exc:  # malformed files make Pillow's plugins raise all kinds of errors
            raise AelabError(f"cannot read the image {path} ({reason(path.parent, path.name, exc)}); fix it or give "
                             f"another") from None
        return torch.from_numpy(pixels[None]), [path.name], None
    files = scan_folder(path)
    cached, record = cached_images(files, cache, size, channels, ("all",), skip_bad=skip_bad, progress=progress)
    order = np.asarray(record["order"])
    x = torch.from_numpy(np.load(cached, mmap_mode="c", allow_pickle=False))  # a private view: nothing is read yet
    return x, [files.files[i] for i in order], _labels_among(files, order, transform.get("classes"))


def _labels_among(files: ImageFiles, order: np.ndarray, classes) -> torch.Tensor | None:
    if files.labels is None or not classes:
        return None
    unknown = [c for c in files.classes if c not in classes]
    if unknown:
        logger.warning(f"class folders {', '.join(unknown[:5])} of {files.root} are not among the run's classes "
                       f"({', '.join(classes[:10])}); its images are read without labels")
        return None
    to_run = np.array([classes.index(c) for c in files.classes], np.int64)
    return torch.from_numpy(to_run[files.labels[order]])


__all__ = ["CachedImages", "arrange", "cached_images", "load_folder", "read_images"]
