"""Representation quality: how much of the labels a simple classifier reads off the codes, and off the pixels.

Both probes are scikit-learn estimators fitted on train codes and scored on test codes:

- the linear probe: ``StandardScaler`` then ``LogisticRegression`` (multinomial, L2, lbfgs, tol 1e-4, at most
  ``MAX_ITER`` iterations; ``linear_probe_converged`` and ``linear_probe_iterations`` say how it ended). Its
  L2 strength is one of ``PROBE_C``, the one that does best on a held-out tenth of the train codes
  (:func:`choose_c`; ``linear_probe_c``): a wide sparse code overfits at scikit-learn's default C = 1 (it
  classifies every train code right and the test codes worse), a narrow dense one does not;
- kNN: ``KNeighborsClassifier(n_neighbors=5)`` (Euclidean) on the raw codes.

Full scale. Every train code is used up to ``MAX_TRAIN`` rows (all of full MNIST) and ``MAX_VALUES`` values
(rows x dimensions: what lbfgs copies to float64); beyond that a seeded, stratified sample, and the result says
how many were used (``probe_train_samples`` of ``probe_train_total``). The probes run on one BLAS thread: lbfgs
makes many small calls, where a second thread costs more than it gains on a small machine. Codes with fewer than
``SPARSE_BELOW`` nonzero values go to scikit-learn as a sparse (CSR) matrix, scaled without centring: it is the
same logistic regression with the same optimum (the centring shift of each feature is absorbed by the intercept,
which is not penalised; the scale, and so the L2 penalty, is the same), reached several times faster, and the same
Euclidean distances for kNN. Pixels stay dense (uncentred, lbfgs needs about twice the iterations). Seconds per
part are recorded in ``probe_seconds``; measured times are in benchmarks/README.md.

The pixel probe (:func:`pixel_probe`) is the same linear probe on the flattened raw inputs of the same split: the
baseline a code has to beat. It depends only on the data and the seed, so it is cached (``cache_dir()/probes``,
keyed by a hash of the rows it uses and the probe's settings): fitted once per dataset, a file read after.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import warnings

import numpy as np
import scipy.sparse
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from ..data.batches import as_float
from ..data.cache import cache_dir
from ..errors import AelabError
from ..io import atomic_write_text

MAX_TRAIN = 60_000  # train rows the probes use at most: all of full MNIST
MAX_VALUES = 100_000_000  # train rows x dimensions at most (float64 in lbfgs: 800 MB); fewer rows beyond
KNN_NEIGHBOURS = 5
MAX_ITER = 1000  # lbfgs iterations at most (full MNIST codes and pixels converge in under 200)
SPARSE_BELOW = 0.1  # codes with fewer nonzero values than this share are fitted as a sparse matrix
# The probe's L2 penalty is chosen per fit: wide sparse codes overfit at C = 1 (every train code classified right,
# the test codes much less), narrow dense ones do not; the choice is made on held-out train rows (choose_c).
PROBE_C = (0.01, 0.1, 1.0)  # inverse L2 strengths tried, strongest penalty first
DEFAULT_C = 1.0  # scikit-learn's default, for train sets too small to hold rows out
VALIDATION_SHARE = 0.1  # share of the train rows held out to choose C
MIN_ROWS_TO_CHOOSE = 200  # fewer train rows: DEFAULT_C
PROBE_VERSION = 3  # part of the pixel probe's cache key: bump it when the probe's definition changes


def probe_accuracies(train_codes, train_labels, test_codes, test_labels, max_train: int = MAX_TRAIN,
                     seed: int = 0, num_classes: int | None = None, knn: bool = True) -> dict:
    """Linear-probe and kNN accuracy of codes (numpy arrays or tensors; codes (N, D), labels (N,)).

    Returns ``linear_probe_accuracy`` and ``knn_accuracy`` (fractions in [0, 1] of test codes classified
    right; ``knn=False`` skips kNN), ``linear_probe_converged``, ``linear_probe_iterations``,
    ``probe_train_samples`` (train codes used after the cap: ``max_train`` rows and ``MAX_VALUES`` values) and
    ``probe_train_total``. Labels must be integers in 0..num_classes-1 (``num_classes`` defaults to the largest
    label + 1); anything else is an :class:`AelabError`.
    """
    x_tr, x_te = _codes(train_codes, "train"), _codes(test_codes, "test")
    y_tr, y_te = _labels(train_labels, len(x_tr), "train"), _labels(test_labels, len(x_te), "test")
    if x_tr.shape[1] != x_te.shape[1]:
        raise AelabError(f"train codes have {x_tr.shape[1]} dimensions but test codes {x_te.shape[1]}; "
                         f"encode both with the same model")
    classes = num_classes if num_classes is not None else int(max(y_tr.max(), y_te.max())) + 1
    for y, what in ((y_tr, "train"), (y_te, "test")):
        bad = y[(y < 0) | (y >= classes)]
        if len(bad):
            raise AelabError(f"{what} label {int(bad[0])} lies outside 0..{classes - 1}; labels must be class "
                             f"indices 0..C-1 (map them with numpy.unique(labels, return_inverse=True))")
    total = len(x_tr)
    cap = train_cap(x_tr.shape[1], max_train)
    if total > cap:
        keep = stratified_subset(y_tr, cap, seed)
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if len(np.unique(y_tr)) < 2:
        raise AelabError("the probes need train codes of at least two classes; these have one")
    x_tr, x_te = probe_matrices(x_tr, x_te)
    # one BLAS thread: lbfgs makes many small calls, where a second thread costs more than it gains (see above)
    seconds = {}
    with threadpool_limits(limits=1):
        start = time.perf_counter()
        result = linear_probe(x_tr, y_tr, x_te, y_te, seed)
        seconds["linear_probe"] = round(time.perf_counter() - start, 2)
        if knn:
            start = time.perf_counter()
            model = KNeighborsClassifier(n_neighbors=min(KNN_NEIGHBOURS, len(y_tr)))
            result["knn_accuracy"] = float(model.fit(x_tr, y_tr).score(x_te, y_te))
            seconds["knn"] = round(time.perf_counter() - start, 2)
    return {**result, "probe_train_samples": int(len(y_tr)), "probe_train_total": int(total), "probe_seconds": seconds}


def linear_probe(x_tr, y_tr, x_te, y_te, seed: int = 0) -> dict:
    """Fit the linear probe on (x_tr, y_tr) and score it on (x_te, y_te): ``linear_probe_accuracy``,
    ``linear_probe_c`` (the regularisation chosen, :func:`choose_c`), ``linear_probe_converged`` (lbfgs met its
    tolerance within ``MAX_ITER``), ``linear_probe_iterations``. A sparse ``x_tr`` is scaled without centring
    (the same optimum: see the module docstring)."""
    c = choose_c(x_tr, y_tr, seed)
    probe, converged = _fit(x_tr, y_tr, c, seed)
    return {"linear_probe_accuracy": float(probe.score(x_te, y_te)), "linear_probe_c": c,
            "linear_probe_converged": bool(converged), "linear_probe_iterations": int(np.max(probe[-1].n_iter_))}


def choose_c(x_tr, y_tr, seed: int = 0) -> float:
    """The inverse L2 strength C of the probe, one of ``PROBE_C``: the one that classifies a seeded, stratified
    ``VALIDATION_SHARE`` of the train rows best when fitted on the rest (the first, the strongest penalty, on a
    tie). The test rows are never looked at. ``DEFAULT_C`` when the train rows are too few to hold some out."""
    if len(y_tr) < MIN_ROWS_TO_CHOOSE:
        return DEFAULT_C
    fit_rows, val_rows = _holdout(y_tr, seed)
    if len(np.unique(y_tr[fit_rows])) < 2:
        return DEFAULT_C
    scores = [_fit(x_tr[fit_rows], y_tr[fit_rows], c, seed)[0].score(x_tr[val_rows], y_tr[val_rows]) for c in PROBE_C]
    return PROBE_C[int(np.argmax(scores))]


def _holdout(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(y))
    try:
        return train_test_split(idx, test_size=VALIDATION_SHARE, stratify=y, random_state=seed)
    except ValueError:  # a class too small to split proportionally
        return train_test_split(idx, test_size=VALIDATION_SHARE, random_state=seed)


def _fit(x, y, c: float, seed: int):
    """The probe pipeline fitted on (x, y) with inverse L2 strength ``c``, and whether lbfgs converged."""
    probe = make_pipeline(StandardScaler(with_mean=not scipy.sparse.issparse(x)),
                          LogisticRegression(C=c, max_iter=MAX_ITER, tol=1e-4, random_state=seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe.fit(x, y)
    converged = int(np.max(probe[-1].n_iter_)) < MAX_ITER and not any("converge" in str(w.message).lower()
                                                                      for w in caught)
    return probe, converged


def probe_matrices(x_tr: np.ndarray, x_te: np.ndarray):
    """The train and test codes as scikit-learn gets them: sparse (CSR) matrices when fewer than ``SPARSE_BELOW``
    of the train values are nonzero (a TopK code: 2.5 %), the arrays unchanged otherwise."""
    if np.count_nonzero(x_tr) >= SPARSE_BELOW * x_tr.size:
        return x_tr, x_te
    return scipy.sparse.csr_matrix(x_tr), scipy.sparse.csr_matrix(x_te)


def train_cap(dims: int, max_train: int = MAX_TRAIN) -> int:
    """How many train rows of ``dims`` values the probes use at most: ``max_train``, and ``MAX_VALUES`` values."""
    return max(1, min(int(max_train), MAX_VALUES // max(int(dims), 1)))


# ------------------------------------------------------------------------------------------ pixels
def pixel_probe(x_train, y_train, x_test, y_test, *, seed: int = 0, num_classes: int | None = None,
                name: str = "data") -> dict:
    """The linear probe of :func:`probe_accuracies` on the flattened raw inputs (uint8 images as in [0, 1]) of a
    split, cached: ``pixel_probe_accuracy``, ``pixel_probe_converged``, ``pixel_probe_train_samples``,
    ``pixel_probe_seconds`` (of the fit, when it was made) and ``pixel_probe_cached`` (read from the cache now).

    The same train rows as the codes' probe (the same cap and seed). The cache file, in ``cache_dir()/probes``,
    is named by ``name`` and a hash of those rows, the labels, the test rows, the seed and the probe's settings,
    so other data (or another probe) never reads it; a cache that cannot be written is skipped silently."""
    y_np = _to_numpy(y_train).reshape(-1)
    dims = int(np.prod(x_train.shape[1:]))
    keep = stratified_subset(y_np, train_cap(dims), seed)
    rows = x_train[torch.as_tensor(keep)] if isinstance(x_train, torch.Tensor) else np.asarray(x_train)[keep]
    key = fingerprint(rows, y_np[keep], x_test, y_test, seed, num_classes)
    path = cache_dir() / "probes" / f"{_safe(name)}-{key}.json"
    cached = _read_json(path)
    if cached is not None and "pixel_probe_accuracy" in cached:
        return {**cached, "pixel_probe_cached": True}
    t0 = time.perf_counter()
    result = probe_accuracies(_flat(rows), y_np[keep], _flat(x_test), y_test, seed=seed, num_classes=num_classes,
                              knn=False)
    out = {"pixel_probe_accuracy": result["linear_probe_accuracy"],
           "pixel_probe_converged": result["linear_probe_converged"],
           "pixel_probe_train_samples": result["probe_train_samples"],
           "pixel_probe_seconds": round(time.perf_counter() - t0, 2)}
    try:
        atomic_write_text(path, json.dumps(out) + "\n")
    except (AelabError, OSError):
        pass  # a read-only cache costs the probe again next time, nothing more
    return {**out, "pixel_probe_cached": False}


def fingerprint(*parts) -> str:
    """A hex digest (20 characters) of arrays or tensors (shape, dtype and every byte) and plain values, with the
    probe's settings: the pixel probe's cache key."""
    h = hashlib.blake2b(digest_size=10)
    h.update(repr((PROBE_VERSION, MAX_TRAIN, MAX_VALUES, MAX_ITER, SPARSE_BELOW)).encode())
    for part in parts:
        if isinstance(part, (torch.Tensor, np.ndarray)):
            a = np.ascontiguousarray(_to_numpy(part))
            h.update(repr((a.shape, str(a.dtype))).encode())
            h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


def _read_json(path) -> dict | None:
    """The object in the JSON file ``path``, or None (no file, an unreadable one, not an object)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _flat(x) -> torch.Tensor:
    """Rows (N, ...) as float (N, values); uint8 images as in [0, 1]."""
    return as_float(torch.as_tensor(x)).flatten(1)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))[-40:] or "data"


# ------------------------------------------------------------------------------------------ helpers
def stratified_subset(labels, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded sample of ``n`` of ``labels`` (N,), keeping class proportions
    (a plain random sample when some class is too small to stratify). All indices when n >= N."""
    labels = _to_numpy(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    idx = np.arange(len(labels))
    try:
        keep, _ = train_test_split(idx, train_size=n, stratify=labels, random_state=seed)
    except ValueError:  # a class with a single member cannot be split proportionally
        keep = np.random.default_rng(seed).choice(idx, size=n, replace=False)
    return np.sort(keep)


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor, on any device
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _codes(codes, what: str) -> np.ndarray:
    x = _to_numpy(codes)
    if x.ndim < 2 or len(x) == 0:
        raise AelabError(f"{what} codes must be a non-empty array of shape (N, D), got shape {x.shape}")
    x = x.reshape(len(x), -1).astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise AelabError(f"{what} codes hold NaN or infinite values; the model diverged: retrain it with a "
                         f"lower --lr")
    return x


def _labels(labels, n: int, what: str) -> np.ndarray:
    if labels is None:
        raise AelabError(f"the probes need class labels but the {what} set has none; pass labels "
                         f"(aelab.from_arrays(x, y)) or skip the probes")
    y = _to_numpy(labels).reshape(-1)
    if len(y) != n:
        raise AelabError(f"{what} labels ({len(y)}) and {what} codes ({n}) differ in number; give one label "
                         f"per code")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        if not (np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all()):
            raise AelabError(f"{what} labels must be integer class indices 0..C-1, got dtype {y.dtype}; map "
                             f"them with numpy.unique(labels, return_inverse=True)")
    return y.astype(np.int64)
