"""Folders of images: which files, which labels and split, and one image brought to a run's size and channels.

The layout is torchvision's ImageFolder convention: ``FOLDER/<class>/.../<image>`` gives labelled images
(class names sorted); images directly in ``FOLDER`` with no class folders are unlabelled; ``FOLDER/train/``
and ``FOLDER/test/`` (each laid out either way) give the split. :func:`scan_folder` lists the images (and
nothing more per image than its relative path) with a digest of every file's path, size and modification
time; :func:`load_image` decodes one, the same way for training and for new inputs. Decoding a whole folder
once into a cached array is :mod:`aelab.data.image_cache`'s work.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from ..errors import AelabError, first_line

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
GRAY_MODES = {"1", "L", "LA", "I", "F", "La"}  # plus the 16-bit "I;16..." modes: one channel
SKIP_HINT = "pass --skip-bad (skip_bad=True) to leave unreadable images out"


@dataclass
class ImageFiles:
    """The images of a folder, in a fixed order: the train part (class by class) first, then the test part."""

    root: Path
    files: list[str]  # relative POSIX paths
    labels: np.ndarray | None  # class index of each file (int64), None when unlabelled
    classes: list[str] | None
    parts: np.ndarray | None  # 0 (train/) or 1 (test/) per file when the folder has both; None otherwise
    digest: str  # of every file's relative path, size and modification time

    @property
    def layout(self) -> str:
        return "train/ and test/ folders" if self.parts is not None else "one folder"


# ---------------------------------------------------------------------------------------------- scanning
def scan_folder(root: str | Path) -> ImageFiles:
    """The image files under ``root`` with their labels and split, as the module's docstring describes."""
    root = Path(root)
    digest = hashlib.sha256()
    subdirs = _subdirs(root)
    if "train" in subdirs or "test" in subdirs:
        if not ("train" in subdirs and "test" in subdirs):
            have, lack = ("train", "test") if "train" in subdirs else ("test", "train")
            raise AelabError(f"{root} has a {have}/ folder but no {lack}/ folder; add {lack}/ (laid out like "
                             f"{have}/), or rename {have}/ if it is a class")
        tr_files, tr_runs = _scan_part(root / "train", "train/", digest)
        te_files, te_runs = _scan_part(root / "test", "test/", digest)
        for files, part in ((tr_files, "train"), (te_files, "test")):
            if not files:
                raise AelabError(f"{root / part} holds no image files ({', '.join(IMAGE_SUFFIXES)}); put the "
                                 f"{part} images there")
        if (tr_runs is None) != (te_runs is None):
            raise AelabError(f"one of {root}/train and {root}/test has class folders and the other has none; lay "
                             f"both out the same way")
        files, runs = tr_files + te_files, None if tr_runs is None else tr_runs + te_runs
        parts = np.repeat(np.array([0, 1], np.int8), [len(tr_files), len(te_files)])
    else:
        files, runs = _scan_part(root, "", digest)
        parts = None
    if not files:
        raise AelabError(f"{root} holds no image files ({', '.join(IMAGE_SUFFIXES)}); put images in it, in one "
                         f"sub-folder per class to give them labels")
    labels, classes = _labels(runs)
    return ImageFiles(root, files, labels, classes, parts, digest.hexdigest())


def _subdirs(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _scan_part(folder: Path, prefix: str, digest) -> tuple[list[str], list[tuple[str, int]] | None]:
    """The images of ``folder``: those in its class folders, with (class, count) runs, or, when it has
    none, the images at its top, unlabelled (runs None)."""
    files, runs = [], []
    for name in _subdirs(folder):
        before = len(files)
        _images_under(folder / name, f"{prefix}{name}/", files, digest)
        if len(files) > before:
            runs.append((name, len(files) - before))
    top = [e for e in _image_entries(folder)]
    if runs:
        if top:
            logger.warning(f"{len(top)} images lie in {folder} beside its class folders and are left out (the "
                           f"first: {top[0].name}); move them into a class folder")
        return files, runs
    for entry in top:
        files.append(_hashed(entry, prefix, digest))
    return files, None


def _image_entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".") and e.is_file()
                       and e.name.lower().endswith(IMAGE_SUFFIXES)), key=lambda e: e.name)


def _images_under(folder: Path, prefix: str, out: list[str], digest) -> None:
    """Append the images under ``folder`` (recursively, sorted) to ``out`` as relative paths."""
    for entry in _image_entries(folder):
        out.append(_hashed(entry, prefix, digest))
    for name in _subdirs(folder):
        _images_under(folder / name, f"{prefix}{name}/", out, digest)


def _hashed(entry: os.DirEntry, prefix: str, digest) -> str:
    st = entry.stat()
    rel = prefix + entry.name
    digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return rel


def _labels(runs) -> tuple[np.ndarray | None, list[str] | None]:
    if runs is None:
        return None, None
    classes = sorted({name for name, _ in runs})
    index = {c: i for i, c in enumerate(classes)}
    return np.repeat(np.array([index[n] for n, _ in runs], np.int64), [k for _, k in runs]), classes


# ---------------------------------------------------------------------------------------------- one image
def channels_of(img: Image.Image) -> int:
    """1 for a grayscale image (a palette of grays included), 3 for colour."""
    if img.mode in GRAY_MODES or img.mode.startswith("I;16"):
        return 1
    if img.mode == "P":
        pal = np.array(img.getpalette() or [0, 0, 0]).reshape(-1, 3)
        return 1 if (pal == pal[:, :1]).all() else 3
    return 3


def load_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """The image at ``path`` as uint8 (C, H, W): turned upright (EXIF), to gray ("L") or RGB (alpha dropped;
    16-bit images keep their top 8 bits), then resized to ``size`` = (H, W) bilinearly (aspect not kept)."""
    h, w = size
    mode = "L" if channels == 1 else "RGB"
    with Image.open(path) as img:
        img.draft(mode, (max(h, w), max(h, w)))  # JPEG: decode at a reduced scale, still at least the size
        if img.getexif().get(0x0112, 1) != 1:  # an orientation tag (photos from phones)
            img = ImageOps.exif_transpose(img)
        if img.mode.startswith("I") or img.mode == "F":
            img = _to_8bit(img)
        if img.mode != mode:
            img = img.convert(mode)
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        pixels = np.array(img, dtype=np.uint8)  # a writable copy of its own
    return pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16- or 32-bit integer image by its top 8 of 16 bits; a float image clipped to 0..255."""
    values = np.asarray(img)
    if img.mode == "F":
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    return Image.fromarray(np.clip(values.astype(np.int64) >> 8, 0, 255).astype(np.uint8))


def bad_image(root: Path, rel: str, exc: BaseException) -> AelabError:
    """The one-line error for an image that cannot be read: its name, Pillow's reason, the way out."""
    return AelabError(f"cannot read the image {rel} in {root} ({reason(root, rel, exc)}); fix or remove it, or "
                      f"{SKIP_HINT}")


def reason(root: Path, rel: str, exc: BaseException) -> str:
    """Pillow's message, without the full path it often repeats."""
    return first_line(exc, 160).replace(str(root / rel), rel)


def check_format(image_size, channels) -> tuple[tuple[int, int] | None, int | None]:
    """``image_size`` as (H, W) of positive ints and ``channels`` 1 or 3 (either may be None: chosen later)."""
    if image_size is not None:
        try:
            h, w = (int(v) for v in image_size)
        except (TypeError, ValueError):
            h = w = 0
        if h < 1 or w < 1:
            raise AelabError(f"image_size must be two positive numbers (height, width), got {image_size!r}; "
                             f"e.g. --image-size 28,28")
        image_size = (h, w)
    if channels is not None and channels not in (1, 3):
        raise AelabError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    return image_size, channels


def survey(files: ImageFiles, skip_bad: bool, progress: bool) -> tuple[tuple[int, int], int]:
    """The most common size (H, W) and channel count among the images (only their headers are read)."""
    sizes, kinds = Counter(), Counter()
    for rel in tqdm(files.files, desc="reading image sizes", unit="img", disable=not progress, leave=False,
                    dynamic_ncols=True):
        try:
            with Image.open(files.root / rel) as img:
                sizes[img.size[::-1]] += 1
                kinds[channels_of(img)] += 1
        except Exception as exc:  # malformed files make Pillow's plugins raise all kinds of errors
            if not skip_bad:
                raise bad_image(files.root, rel, exc) from None
    if not sizes:
        raise AelabError(f"none of the {len(files.files)} images in {files.root} can be read; fix them")
    (size, n_size), (channels, _) = sizes.most_common(1)[0], kinds.most_common(1)[0]
    mixed = f"; {sum(sizes.values()) - n_size} images of other sizes are resized" if len(sizes) > 1 else ""
    conv = "" if size[0] % 4 == 0 and size[1] % 4 == 0 else " (a conv model needs sides that are multiples of 4)"
    logger.info(f"{files.root}: images brought to {size[0]}x{size[1]}, {channels} channel(s): the most common size "
                f"({n_size} images) and mode{mixed}; choose with --image-size H,W{conv} and --channels 1|3")
    return size, channels


def images_transform(size, channels: int, classes=None) -> dict:
    """How raw images become a run's inputs (JSON): what :func:`aelab.data.image_cache.read_images` applies to
    new ones."""
    return {"kind": "images", "size": [int(size[0]), int(size[1])], "channels": int(channels),
            "classes": None if classes is None else list(classes)}


__all__ = ["IMAGE_SUFFIXES", "ImageFiles", "bad_image", "channels_of", "reason", "check_format", "images_transform",
           "load_image", "scan_folder", "survey"]
