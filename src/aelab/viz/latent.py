"""The latent space as a map: codes projected to 2-D (t-SNE, PCA or UMAP), coloured by label.

:func:`project` is the projection alone (seeded, so the same codes and seed give the same map);
:func:`plot_latent_map` draws it. 2-D codes are drawn as they are, with no projection.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from ..errors import AelabError
from .figures import _save, plt

METHODS = ("tsne", "pca", "umap")
DEFAULT_POINTS = 2000  # t-SNE of 2,000 codes takes seconds; of 10,000, minutes on a laptop CPU
TSNE_STEPS = 500  # gradient steps of t-SNE (sklearn's n_iter, renamed max_iter in 1.5)
TSNE_PCA_DIMS = 50  # codes wider than this are first reduced by PCA (standard practice; t-SNE is O(N D) per step)


@dataclass
class Projection:
    """2-D points of a subset of the codes: ``points[i]`` is the map of ``codes[index[i]]``."""

    points: np.ndarray  # (M, 2)
    index: np.ndarray  # (M,) rows of the codes that were projected, ascending
    method: str  # "tsne", "pca", "umap", or "direct" for 2-D codes
    axis_labels: tuple[str, str]
    seconds: float


def _as_numpy(codes) -> np.ndarray:
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().float().cpu().numpy()
    codes = np.asarray(codes, dtype=np.float32)
    if codes.ndim != 2 or len(codes) == 0:
        raise AelabError(f"codes must be a non-empty (N, D) array, got shape {codes.shape}")
    return codes.reshape(len(codes), -1)


def subset(n: int, n_points: int | None, seed: int = 0) -> np.ndarray:
    """``n_points`` of ``range(n)`` chosen at random with ``seed`` (all of them when n is no larger), sorted."""
    if n_points is None or n <= n_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=n_points, replace=False))


def project(codes, method: str = "tsne", n_points: int | None = DEFAULT_POINTS, seed: int = 0, log=None) -> Projection:
    """Project codes (N, D) to 2-D with ``method`` ("tsne", "pca" or "umap"), on a seeded subset of
    ``n_points`` codes (None: all). 2-D codes are returned as they are ("direct"); 1-D codes are
    spread over a second axis of seeded jitter. ``log`` (e.g. ``print``) gets a progress message."""
    if method not in METHODS:
        raise AelabError(f"unknown projection '{method}'; choose one of: {', '.join(METHODS)}")
    if n_points is not None and n_points < 2:
        raise AelabError(f"the latent map needs at least 2 points, got n_points={n_points}")
    codes = _as_numpy(codes)
    index = subset(len(codes), n_points, seed)
    z = codes[index]
    t0 = time.perf_counter()
    d = z.shape[1]
    if d == 2:
        return Projection(z.copy(), index, "direct", ("$z_1$", "$z_2$"), 0.0)
    if d == 1:
        jitter = np.random.default_rng(seed).uniform(-1, 1, size=len(z)).astype(np.float32)
        return Projection(np.stack([z[:, 0], jitter], 1), index, "direct", ("$z_1$", "jitter"), 0.0)
    if method == "pca" or len(z) < 5:  # t-SNE and UMAP need a handful of neighbours
        pca = PCA(2, random_state=seed).fit(z)
        ratio = pca.explained_variance_ratio_
        return Projection(pca.transform(z).astype(np.float32), index, "pca",
                          (f"PC 1 ({ratio[0]:.0%} of variance)", f"PC 2 ({ratio[1]:.0%} of variance)"),
                          time.perf_counter() - t0)
    if method == "umap":
        try:
            import umap  # optional: pip install umap-learn
        except ImportError:
            raise AelabError("the UMAP projection needs the umap-learn package; pip install umap-learn, "
                             "or use the t-SNE or PCA projection") from None
        if log:
            log(f"UMAP of {len(z):,} codes ({d}-D) ...")
        points = umap.UMAP(n_components=2, random_state=seed).fit_transform(z)
        return Projection(np.asarray(points, np.float32), index, "umap", ("UMAP 1", "UMAP 2"),
                          time.perf_counter() - t0)
    if log:
        log(f"t-SNE of {len(z):,} codes ({d}-D) ...")
    if d > TSNE_PCA_DIMS:
        z = PCA(TSNE_PCA_DIMS, random_state=seed).fit_transform(z)
    perplexity = min(30.0, (len(z) - 1) / 3)
    # 500 iterations, not sklearn's 1,000: half the time, and a map as good by the 5-NN accuracy of its
    # 2-D points (0.873 against 0.880 on 2,000 dense-autoencoder codes of mnist5k)
    steps = {"max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter": TSNE_STEPS}
    tsne = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed, **steps)
    # One OpenMP thread: the map is then bit-for-bit the same on every machine (a multi-threaded sum
    # changes the order of additions), and on a busy CPU two spinning threads ran 4-5x *slower* than
    # one (measured: 2,000 codes, 81 s with two threads against 22 s with one, load average 9 on 2 cores).
    with threadpool_limits(1, user_api="openmp"):
        points = tsne.fit_transform(z)
    seconds = time.perf_counter() - t0
    if log:
        log(f"t-SNE done in {seconds:.1f} s")
    return Projection(np.asarray(points, np.float32), index, "tsne", ("t-SNE 1", "t-SNE 2"), seconds)


TITLES = {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP", "direct": "the 2-D codes themselves"}


def plot_latent_map(codes, labels, path: str | Path, method: str = "tsne", n_points: int | None = DEFAULT_POINTS,
                    seed: int = 0, classes: list[str] | None = None, title: str = "", log=None) -> Path:
    """Codes (N, D) projected to 2-D (see :func:`project`) and drawn as points coloured by ``labels``
    (N,) with a legend naming ``classes``; without labels, one colour."""
    proj = project(codes, method, n_points, seed, log)
    return plot_projection(proj, None if labels is None else np.asarray(_labels(labels))[proj.index], path,
                           classes=classes, title=title)


def _labels(labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    return np.asarray(labels)


def plot_projection(proj: Projection, labels, path: str | Path, classes: list[str] | None = None,
                    title: str = "") -> Path:
    """Draw a :class:`Projection`; ``labels`` (M,) are the labels of the projected points."""
    fig, ax = plt.subplots(figsize=(7.0, 5.6))
    pts = proj.points
    size = 8 if len(pts) > 1000 else 14
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=size, c="tab:blue", alpha=0.7, linewidths=0)
    else:
        values = np.unique(labels)
        cmap = plt.get_cmap("tab10" if len(values) <= 10 else "tab20")
        for i, v in enumerate(values):
            sel = labels == v
            name = classes[int(v)] if classes is not None and 0 <= int(v) < len(classes) else str(v)
            ax.scatter(pts[sel, 0], pts[sel, 1], s=size, color=cmap(i % cmap.N), alpha=0.75, linewidths=0,
                       label=name)
        legend = ax.legend(title="label", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
                           markerscale=2.5, fontsize=9)
        for handle in getattr(legend, "legend_handles", None) or legend.legendHandles:  # renamed in 3.7
            handle.set_alpha(1)
    ax.set_xlabel(proj.axis_labels[0])
    ax.set_ylabel(proj.axis_labels[1])
    if proj.method in ("tsne", "umap"):  # the axes of a non-linear embedding carry no units
        ax.set_xticks([]), ax.set_yticks([])
    head = title or "latent space"
    ax.set_title(f"{head}: {len(pts):,} test codes, {TITLES[proj.method]}", fontsize=11)
    fig.subplots_adjust(left=0.08, right=0.80 if labels is not None else 0.97, bottom=0.1, top=0.93)
    return _save(fig, path)
