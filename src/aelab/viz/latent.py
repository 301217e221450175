"""The latent space as a map: codes projected to 2-D (t-SNE, PCA or UMAP), coloured by label.

:func:`project` is the projection alone (seeded, so the same codes and seed give the same map);
:func:`plot_latent_map` draws it. 2-D codes are drawn as they are, with no projection.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import AelabError
from ..predict import PROJECTIONS, Projection, project_codes
from .figures import _save, plt

METHODS = PROJECTIONS
DEFAULT_POINTS = 2000  # t-SNE of 2,000 codes takes seconds; of 10,000, minutes on a laptop CPU


def project(codes, method: str = "tsne", n_points: int | None = DEFAULT_POINTS, seed: int = 0, log=None) -> Projection:
    """Project codes (N, D) to 2-D with ``method`` ("tsne", "pca" or "umap") on a seeded subset of ``n_points``
    codes (None: all): :func:`aelab.predict.project_codes`, the package's one projection, with the figures'
    default number of points."""
    if n_points is not None and n_points < 2:
        raise AelabError(f"the latent map needs at least 2 points, got n_points={n_points}")
    return project_codes(codes, method, max_points=n_points, seed=seed, log=log)


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
