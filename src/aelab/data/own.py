"""The user's own data, by path: a folder of images, a table, or an ``.npz`` file.

:func:`load_path` returns a :class:`~aelab.data.dataset.Dataset` (what ``aelab.load_dataset(path)`` gives)
whose ``meta`` says how it was made:

- ``meta["transform"]``: how raw inputs become model inputs, JSON: ``{"kind": "images", "size": [H, W],
  "channels": C, "classes": ...}`` (:mod:`aelab.data.folders`), ``{"kind": "table", "inputs": ..., "columns":
  ..., "numeric": ..., "categorical": ..., ...}`` (:mod:`aelab.data.tables`) or ``{"kind": "arrays", "shape":
  [...], "dtype": ..., "classes": ...}``;
- ``meta["record"]``: what the run folder keeps as ``data.json``: ``transform``, ``source``, ``classes``,
  ``split`` ("folders", "stratified", "random" or "arrays"), ``test_fraction``, ``seed``, ``rows``;
- ``meta["ids"]``: ``{"train": [...], "test": [...]}``, the name of every row: an image's path relative to
  the folder, or a row's index in the table or array (``"x_train:5"`` for an ``.npz`` split in two), as text.

:func:`read_inputs` reads any input a run can read and applies exactly a saved transform to it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import AelabError, first_line
from .cache import cache_dir
from .dataset import Dataset, from_arrays, split_indices
from .folders import IMAGE_SUFFIXES, images_transform
from .image_cache import load_folder, read_images
from .tables import apply_table, feature_columns, fit_table, is_table_name, read_table, table_labels

ARRAY_SUFFIXES = (".npz", ".npy")
ID_NAMES = {"images": "file", "table": "row", "arrays": "row"}  # what a row's id is, by transform kind
KINDS = "a folder of images, a table (.csv, .tsv, .parquet) or an .npz file"


def is_path_name(name) -> bool:
    """A dataset spelled as a path: something that exists, or that has a folder or a known file ending."""
    text = str(name)
    return (Path(text).expanduser().exists() or "/" in text or "\\" in text
            or text.lower().endswith((*ARRAY_SUFFIXES, ".csv", ".tsv", ".parquet", *IMAGE_SUFFIXES)))


def load_path(path, cache: Path | None = None, *, data_dir=None, test_fraction: float = 0.2, seed: int = 0,
              image_size=None, channels=None, label_column=None, drop_columns=None, impute=None,
              skip_bad: bool = False, progress: bool = True) -> Dataset:
    """The dataset at ``path`` (a folder of images, a table or an ``.npz``; relative paths are looked for in
    ``data_dir`` too), split ``test_fraction`` / rest by ``seed`` unless the data brings its own split."""
    path = resolve(path, data_dir)
    if isinstance(drop_columns, str):
        drop_columns = [c.strip() for c in drop_columns.split(",") if c.strip()]
    table_opts = {"label_column": label_column, "drop_columns": drop_columns, "impute": impute}
    image_opts = {"image_size": image_size, "channels": channels}
    if path.is_dir():
        _only_for(path, "a folder of images", table_opts)
        data, info = load_folder(path, cache or cache_dir(), test_fraction=test_fraction, seed=seed,
                                 skip_bad=skip_bad, progress=progress, **image_opts)
    elif is_table_name(path):
        _only_for(path, "a table", image_opts)
        data, info = load_table(path, test_fraction=test_fraction, seed=seed, **table_opts)
    elif path.suffix.lower() == ".npz":
        _only_for(path, "an .npz file", {**image_opts, **table_opts})
        data, info = load_npz(path, test_fraction=test_fraction, seed=seed)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        raise AelabError(f"{path} is one image; a dataset is many: give the folder that holds the images")
    else:
        raise AelabError(f"{path} is not {KINDS} (nor a .npy array); give one of those")
    own = info["split"] in ("stratified", "random")
    data.meta.update(transform=info["transform"], ids=info["ids"], record={
        "transform": info["transform"], "source": str(path.resolve()), "classes": data.classes, "split": info["split"],
        "test_fraction": test_fraction if own else None, "seed": seed,
        "rows": {"train": len(info["ids"]["train"]), "test": len(info["ids"]["test"])}})
    data.source = str(path)
    return data


def resolve(path, data_dir=None) -> Path:
    """``path`` as it exists (a relative one looked for in ``data_dir`` too), or a one-line error."""
    path = Path(path).expanduser()
    if not path.exists() and data_dir is not None and not path.is_absolute() and (Path(data_dir) / path).exists():
        path = Path(data_dir) / path
    if not path.exists():
        raise AelabError(f"no file or folder {path}; give the path of {KINDS}")
    return path


def _only_for(path: Path, what: str, options: dict) -> None:
    given = [k for k, v in options.items() if v]
    if given:
        raise AelabError(f"{given[0]} does not apply to {what} ({path}); leave it out")


def transform_of(data: Dataset) -> dict:
    """How ``data``'s raw inputs become model inputs: ``meta["transform"]``, or, for a dataset without one
    (mnist, a .npy file, arrays), the images or arrays its training rows are."""
    if "transform" in data.meta:
        return data.meta["transform"]
    x = data.x_train
    if x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] in (1, 3):
        return images_transform(x.shape[2:], x.shape[1], data.classes)
    return {"kind": "arrays", "shape": list(x.shape[1:]), "dtype": "uint8" if x.dtype == torch.uint8 else "float32",
            "classes": data.classes}


# ---------------------------------------------------------------------------------------------- tables
def load_table(path: Path, *, test_fraction: float = 0.2, seed: int = 0, label_column=None, drop_columns=None,
               impute=None) -> tuple[Dataset, dict]:
    """A table's rows as float32 features, standardised and one-hot encoded by its training rows."""
    table = read_table(path)
    feature_columns(table, path, label_column, drop_columns)  # every named column exists, every column is usable
    y, classes = table_labels(table, label_column, path) if label_column is not None else (None, None)
    tr, te = (t.cpu().numpy() for t in split_indices(table.num_rows, test_fraction, seed, y))
    transform = fit_table(table, tr, path, label_column=label_column, drop_columns=drop_columns, impute=impute,
                          classes=classes)
    x, _ = apply_table(table, transform, path)
    y_t = None if y is None else torch.from_numpy(y)
    data = Dataset(path.stem, torch.from_numpy(x[tr]), torch.from_numpy(x[te]), None if y is None else y_t[tr],
                   None if y is None else y_t[te], classes=classes)
    return data, {"transform": transform, "split": "random" if y is None else "stratified",
                  "ids": {"train": [str(i) for i in tr], "test": [str(i) for i in te]}}


# ---------------------------------------------------------------------------------------------- arrays
def load_npz(path: Path, *, test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, dict]:
    """An ``.npz`` with ``x`` (and ``y``), split here, or with ``x_train``, ``x_test`` (and ``y_train``,
    ``y_test``). uint8 arrays are images ((N, H, W) gains a channel; (N, H, W, C) becomes (N, C, H, W)),
    floats are features used as they are."""
    arrays = _open_npz(path)
    if "x" in arrays:
        x, y = _samples(arrays, "x", path), _labels_of(arrays, "y", "x", path)
        classes, ids = _classes(y, path)
        tr, te = (t.cpu().numpy() for t in split_indices(len(x), test_fraction, seed, ids))
        parts = (x[tr], None if ids is None else ids[tr], x[te], None if ids is None else ids[te])
        names, split = ([str(i) for i in tr], [str(i) for i in te]), "stratified" if ids is not None else "random"
    elif "x_train" in arrays and "x_test" in arrays:
        x_tr, x_te = _samples(arrays, "x_train", path), _samples(arrays, "x_test", path)
        y_tr, y_te = _labels_of(arrays, "y_train", "x_train", path), _labels_of(arrays, "y_test", "x_test", path)
        if (y_tr is None) != (y_te is None):
            raise AelabError(f"{path} has labels for one of x_train and x_test only; save both y_train and y_test "
                             f"or neither")
        classes, ids = _classes(None if y_tr is None else np.concatenate([y_tr, y_te]), path)
        parts = (x_tr, None if ids is None else ids[:len(x_tr)], x_te, None if ids is None else ids[len(x_tr):])
        names = ([f"x_train:{i}" for i in range(len(x_tr))], [f"x_test:{i}" for i in range(len(x_te))])
        split = "arrays"
    else:
        raise AelabError(f"{path} has no array named 'x' (it holds {', '.join(arrays) or 'nothing'}); save it with "
                         f"numpy.savez(path, x=..., y=...) or with x_train=, x_test= (y_train=, y_test=)")
    data = from_arrays(*parts, name=path.stem, classes=classes)
    transform = _array_transform(data.x_train, classes)
    return data, {"transform": transform, "split": split, "ids": {"train": names[0], "test": names[1]}}


def _open_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:  # not a zip, a damaged one, or object arrays (need pickle)
        raise AelabError(f"{path} is not a readable .npz of plain arrays ({first_line(exc, 120)}); write it with "
                         f"numpy.savez") from None


def _samples(arrays: dict, key: str, path: Path) -> np.ndarray:
    """``arrays[key]`` as (N, features...): numbers, finite, uint8 images laid out (N, C, H, W)."""
    x = arrays[key]
    if x.dtype.kind not in "biuf" or x.ndim < 2 or len(x) == 0:
        raise AelabError(f"'{key}' of {path} has shape {x.shape} and dtype {x.dtype}; save uint8 images (N, H, W) "
                         f"or (N, C, H, W), or float features (N, D)")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise AelabError(f"'{key}' of {path} has {int((~np.isfinite(x)).sum())} NaN or infinite values; clean them")
    return as_images(x)


def as_images(x: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) as (N, 1, H, W) and (N, H, W, C) with C of 1, 3 or 4 as (N, C, H, W); others unchanged."""
    if x.dtype == np.uint8 and x.ndim == 3:
        return x[:, None]
    if x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def _labels_of(arrays: dict, key: str, of: str, path: Path) -> np.ndarray | None:
    if key not in arrays:
        return None
    y = arrays[key].reshape(-1)
    if len(y) != len(arrays[of]):
        raise AelabError(f"'{key}' of {path} has {len(y)} labels for {len(arrays[of])} rows of '{of}'; give one "
                         f"label per row")
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise AelabError(f"'{key}' of {path} holds fractional numbers; labels are classes: save class names or "
                         f"whole numbers")
    return y


def _classes(y: np.ndarray | None, path: Path) -> tuple[list[str] | None, np.ndarray | None]:
    """The class names (the distinct labels, sorted, as text) and every row's class index."""
    if y is None:
        return None, None
    distinct, ids = np.unique(y, return_inverse=True)
    if len(distinct) < 2:
        raise AelabError(f"the labels of {path} hold one class ({_text(distinct[0])}); labels need two classes "
                         f"or more: save the file without them to learn without labels")
    return [_text(v) for v in distinct], ids.astype(np.int64).reshape(-1)


def _text(value) -> str:
    return str(int(value)) if isinstance(value, (np.integer, np.floating)) else str(value)


def _array_transform(x: torch.Tensor, classes) -> dict:
    if x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] in (1, 3):
        return images_transform(x.shape[2:], x.shape[1], classes)
    return {"kind": "arrays", "shape": list(x.shape[1:]), "dtype": "uint8" if x.dtype == torch.uint8 else "float32",
            "classes": classes}


# ---------------------------------------------------------------------------------------------- new inputs
def read_inputs(path, transform: dict, *, skip_bad: bool = False, progress: bool = True,
                cache: Path | None = None) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """Any input a run can read, with exactly the run's ``transform`` applied: ``(x, ids, y)``, x the model
    inputs (uint8 images (N, C, H, W) or float32 features), ids the name of each row (see the module's
    docstring; ``ID_NAMES`` says what they are), y the class indices when the input has the run's labels.

    A run on images reads a folder of images (labelled or flat, decoded once into the cache), one image file,
    or an ``.npz``/``.npy`` of images of its shape; a run on a table reads a table with its columns; a run on
    arrays an ``.npz``/``.npy`` of its shape. Anything else is one AelabError naming what differs."""
    path = resolve(path)
    kind, suffix = transform.get("kind"), path.suffix.lower()
    what = _what(path)
    if kind == "table":
        if not is_table_name(path):
            raise AelabError(f"the run was trained on a table (columns {', '.join(transform['inputs'][:8])}), but "
                             f"{path} is {what}; give a .csv, .tsv or .parquet with those columns")
        x, y = apply_table(read_table(path), transform, path)
        return torch.from_numpy(x), [str(i) for i in range(len(x))], None if y is None else torch.from_numpy(y)
    if kind == "images" and (path.is_dir() or suffix in IMAGE_SUFFIXES):
        return read_images(path, transform, cache or cache_dir(), skip_bad=skip_bad, progress=progress)
    if kind in ("images", "arrays") and suffix in ARRAY_SUFFIXES:
        return _read_arrays(path, transform)
    if kind == "images":
        raise AelabError(f"the run was trained on images ({_shape(transform)}), but {path} is {what}; give a folder "
                         f"of images, an image file, or an .npz/.npy of uint8 images")
    if kind == "arrays":
        raise AelabError(f"the run was trained on arrays of shape {tuple(transform['shape'])}, but {path} is "
                         f"{what}; give an .npz or .npy of that shape")
    raise AelabError(f"unknown transform kind {kind!r}; the run folder's data.json is damaged or from a newer aelab")


def _what(path: Path) -> str:
    if path.is_dir():
        return "a folder"
    if is_table_name(path):
        return "a table"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "an image"
    return f"a {path.suffix} file" if path.suffix else "a file without an ending"


def _shape(transform: dict) -> str:
    if transform["kind"] == "images":
        return f"{transform['channels']} x {transform['size'][0]} x {transform['size'][1]}"
    return " x ".join(str(s) for s in transform["shape"])


def _read_arrays(path: Path, transform: dict) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """An ``.npz`` (``x`` and ``y``, or ``x_train``/``x_test`` one after the other) or a ``.npy``, checked
    against the run's sample shape and dtype."""
    if path.suffix.lower() == ".npy":
        try:
            x = np.load(path, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise AelabError(f"{path} is not a readable .npy array ({first_line(exc, 120)}); write it with "
                             f"numpy.save") from None
        xs, ys, names = {"x": x}, {}, [str(i) for i in range(len(x))] if x.ndim else []
    else:
        arrays = _open_npz(path)
        keys = ["x"] if "x" in arrays else [k for k in ("x_train", "x_test") if k in arrays]
        if not keys:
            raise AelabError(f"{path} has no array named 'x' (it holds {', '.join(arrays) or 'nothing'}); save the "
                             f"inputs as x=")
        xs = {k: arrays[k] for k in keys}
        ys = {k: arrays[y] for k, y in (("x", "y"), ("x_train", "y_train"), ("x_test", "y_test"))
              if k in xs and y in arrays}
        names = [str(i) if k == "x" else f"{k}:{i}" for k in keys for i in range(len(arrays[k]))]
    parts = [_fitting(_samples(xs, k, path), transform, k, path) for k in xs]
    x = torch.from_numpy(parts[0] if len(parts) == 1 else np.concatenate(parts))
    y = None
    if ys and len(ys) == len(xs) and transform.get("classes"):
        y = torch.from_numpy(_ids_among(np.concatenate([ys[k].reshape(-1) for k in xs]), transform["classes"], path))
    return x, names, y


def _fitting(x: np.ndarray, transform: dict, key: str, path: Path) -> np.ndarray:
    """``x`` when its samples have the run's shape and kind (uint8 images or float features), as the model
    takes them (floats as float32); else one line naming the difference."""
    if transform["kind"] == "images":
        want, dtype = (transform["channels"], *transform["size"]), "uint8"
    else:
        want, dtype = tuple(transform["shape"]), transform["dtype"]
    if tuple(x.shape[1:]) != tuple(want):
        raise AelabError(f"'{key}' of {path} holds samples of shape {tuple(x.shape[1:])}, but the run was trained on "
                         f"{tuple(want)}; give inputs of that shape")
    if (x.dtype == np.uint8) != (dtype == "uint8"):
        raise AelabError(f"'{key}' of {path} holds {x.dtype}, but the run was trained on {dtype} "
                         f"({'images 0..255' if dtype == 'uint8' else 'features used as they are'}); convert them")
    return x if x.dtype == np.uint8 else x.astype(np.float32, copy=False)


def _ids_among(y: np.ndarray, classes: list[str], path: Path) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    texts = [_text(v) for v in np.unique(y)]
    unknown = [t for t in texts if t not in index]
    if unknown:
        raise AelabError(f"the label '{unknown[0]}' of {path} is not one of the run's classes "
                         f"({', '.join(classes[:10])}); give rows of those classes, or save the file without labels")
    distinct, inverse = np.unique(y, return_inverse=True)
    return np.array([index[_text(v)] for v in distinct], np.int64)[inverse.reshape(-1)]


__all__ = ["ARRAY_SUFFIXES", "ID_NAMES", "as_images", "is_path_name", "load_npz", "load_path", "load_table",
           "read_inputs", "resolve", "transform_of"]
