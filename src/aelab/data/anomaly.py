"""Normal classes for anomaly detection: train and validate on some labels only; the test set keeps every class.

    ids = parse_classes("0-4", data.classes, 10)        # [0, 1, 2, 3, 4]
    train_on = normal_only(data, ids)                   # training rows of those classes; every test row

A spec names classes by index or by name, as a list or ranges of indices: ``"3"``, ``"0-4"``, ``"2,5,8"``,
``"Sneaker,Bag"``. A run's config keeps the spec (``normal_classes``); the dataset's ``meta`` (and the record
a run folder keeps as ``data.json``, when the data has one) the class indices it resolved to.
"""
from __future__ import annotations

import re

import torch

from ..errors import AelabError
from .dataset import Dataset

RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_classes(spec: str, classes: list[str] | None, n_classes: int) -> list[int]:
    """The sorted class indices a spec names: indices, class names (``classes``), ranges of indices ("0-4",
    both ends included), comma-separated. A class the data does not have, or every class (nothing would be
    left to be anomalous), is an AelabError."""
    names = list(classes or [])
    ids: set[int] = set()
    for token in (t.strip() for t in str(spec).split(",")):
        if not token:
            raise AelabError(f"normal classes '{spec}' hold an empty name; write them like 3, 0-4 or 2,5,8")
        ids.update(_one(token, names, n_classes))
    if len(ids) >= n_classes:
        raise AelabError(f"normal classes '{spec}' name every class of the data, so nothing is left to be "
                         f"anomalous; name fewer classes")
    return sorted(ids)


def _one(token: str, names: list[str], n_classes: int) -> list[int]:
    """The indices of one token of a spec: a class name, an index or a range."""
    if token in names:
        return [names.index(token)]
    folded = [n.casefold() for n in names]
    if token.casefold() in folded:
        return [folded.index(token.casefold())]
    match = RANGE.match(token)
    if match:
        lo, hi = int(match.group(1)), int(match.group(2))
        if lo > hi:
            raise AelabError(f"the class range '{token}' runs backwards; write it low to high, like {hi}-{lo}")
        ids = list(range(lo, hi + 1))
    elif token.isdigit():
        ids = [int(token)]
    else:
        shown = f"{', '.join(names[:12])}{', ...' if len(names) > 12 else ''}" if names else f"0..{n_classes - 1}"
        raise AelabError(f"the data has no class '{token}'; its classes are {shown} "
                         f"(by name or index 0..{n_classes - 1})")
    bad = [i for i in ids if i >= n_classes]
    if bad:
        raise AelabError(f"the data has no class {bad[0]}: its classes are 0..{n_classes - 1}; name classes "
                         f"that exist")
    return ids


def class_count(data: Dataset) -> int:
    """The number of classes of labelled ``data``: its class names, else the largest label + 1."""
    if data.y_train is None:
        raise AelabError(f"{data.name} has no labels, so no class can be normal; anomaly detection by normal "
                         f"classes needs labelled data (class folders, a label column, y_train in an .npz)")
    if data.classes:
        return len(data.classes)
    labels = [int(y.max()) for y in (data.y_train, data.y_test) if y is not None and len(y)]
    return max(labels) + 1 if labels else 0


def normal_ids_of(data: Dataset, normal_classes) -> list[int]:
    """The class indices of ``normal_classes``: a spec string (parsed against ``data``), or indices."""
    if isinstance(normal_classes, str):
        return parse_classes(normal_classes, data.classes, class_count(data))
    ids = sorted({int(i) for i in normal_classes})
    return parse_classes(",".join(map(str, ids)), None, class_count(data)) if ids else ids


def normal_only(data: Dataset, ids) -> Dataset:
    """``data`` with the training rows of the classes ``ids`` alone (validation is carved from them later);
    the test set keeps every class. ``meta["normal_classes"]`` (and the record, when there is one) says which."""
    ids = normal_ids_of(data, list(ids))
    if not ids:
        raise AelabError("no normal class given; name at least one, like --normal-classes 3")
    y = data.y_train
    keep = torch.isin(y, torch.as_tensor(ids, dtype=y.dtype, device=y.device))
    if not bool(keep.any()):
        names = [data.classes[i] if data.classes else str(i) for i in ids]
        raise AelabError(f"the training set has no rows of the normal class{'es' * (len(ids) > 1)} "
                         f"{', '.join(names)}; name classes it has")

    def rows(x):
        if isinstance(x, dict):
            return {k: v[keep.to(v.device)] for k, v in x.items()}
        return x[keep.to(x.device)]

    meta = {**data.meta, "normal_classes": ids}
    if isinstance(meta.get("ids"), dict) and meta["ids"].get("train") is not None:  # own data: each row's name
        kept = keep.cpu().tolist()
        meta["ids"] = {**meta["ids"], "train": [n for n, k in zip(meta["ids"]["train"], kept) if k]}
    if isinstance(meta.get("record"), dict):
        meta["record"] = {**meta["record"], "normal_classes": ids}
    return Dataset(data.name, rows(data.x_train), data.x_test, y[keep], data.y_test, data.classes, data.source, meta)


def apply_normal_classes(data: Dataset, normal_classes: str | None) -> Dataset:
    """``data`` unchanged without a spec, else :func:`normal_only` of the classes it names (a run's
    ``normal_classes``)."""
    if not normal_classes:
        return data
    return normal_only(data, parse_classes(normal_classes, data.classes, class_count(data)))


__all__ = ["apply_normal_classes", "class_count", "normal_ids_of", "normal_only", "parse_classes"]
