"""Figures of generative (variational) models: samples from the prior, interpolations, the 2-D manifold.

They need a GENERATIVE model (``sample(n)``: images decoded from prior draws) or any model's ``decode(z)``
and ``interpolate(z1, z2, steps)`` (codes); :func:`is_generative` says whether a model can sample.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import AelabError
from ..models.base import GENERATIVE, eval_mode, has, model_device
from .figures import _save, as_images, image_grid, mosaic, plt


def is_generative(model) -> bool:
    """True for models that can draw from their prior (the GENERATIVE capability: VAEs)."""
    return has(model, GENERATIVE)


def plot_samples(model, path: str | Path, n: int = 64, seed: int = 0, title: str = "samples from the prior") -> Path:
    """A square grid of ``n`` images decoded from codes drawn from the prior N(0, I) (seeded)."""
    g = torch.Generator().manual_seed(seed)
    with eval_mode(model), torch.inference_mode():
        images = as_images(model.sample(n, generator=g))
    ncols = int(np.ceil(np.sqrt(n)))
    side = max(4.0, 0.6 * ncols)
    fig, ax = plt.subplots(figsize=(side, side + 0.4))
    ax.imshow(mosaic(images, ncols), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=11)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.35 / (side + 0.4))
    return _save(fig, path)


def plot_interpolations(model, starts: torch.Tensor, ends: torch.Tensor, path: str | Path, steps: int = 10,
                        labels: list[str] | None = None) -> Path:
    """One strip per pair: the decoded codes on the line between the codes of ``starts[i]`` and ``ends[i]``.

    ``starts``, ``ends``: (P, C, H, W) images in [0, 1]. Each strip is framed by the two real images
    (first and last column) so one sees where the path begins and ends.
    """
    device = model_device(model)
    rows = []
    with eval_mode(model), torch.inference_mode():
        for a, b in zip(starts.to(device), ends.to(device)):
            path_images = as_images(model.decode(model.interpolate(model.encode(a[None]), model.encode(b[None]), steps)))
            rows.append(np.concatenate([as_images(a[None]), path_images, as_images(b[None])]))
    fig = image_grid(rows, labels or [f"pair {i + 1}" for i in range(len(rows))], cell=0.75)
    w, h = fig.get_size_inches()
    fig.set_size_inches(w, h + 0.4)  # room for the title above the grid
    fig.subplots_adjust(top=1 - 0.4 / (h + 0.4), bottom=0.01 * h / (h + 0.4))
    fig.suptitle("interpolation in latent space (real images at both ends)", fontsize=10, y=1 - 0.08 / (h + 0.4),
                 va="top")
    return _save(fig, path)


def plot_manifold(model, path: str | Path, n: int = 20, quantile: float = 0.95) -> Path:
    """For a 2-D latent: an ``n`` x ``n`` grid of images decoded from codes on a grid of latent values.

    The grid spans the central ``quantile`` of the prior N(0, 1) on each axis (evenly spaced in
    probability, so each cell covers the same prior mass, as in Kingma & Welling 2014, figure 4).
    """
    if model.latent_dim != 2:
        raise AelabError(f"the manifold figure needs a 2-D latent space but this model has {model.latent_dim}; "
                         f"train with --latent-dim 2")
    lo = (1 - quantile) / 2
    values = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(lo, 1 - lo, n))
    z1, z2 = torch.meshgrid(values, values.flip(0), indexing="xy")  # z2 grows upwards in the picture
    z = torch.stack([z1.flatten(), z2.flatten()], dim=1).to(model_device(model))
    with eval_mode(model), torch.inference_mode():
        images = as_images(model.decode(z))
    fig, ax = plt.subplots(figsize=(7.2, 7.2))
    h = images.shape[1]
    ax.imshow(mosaic(images, n, pad=0), cmap="gray", vmin=0, vmax=1)
    # cells are evenly spaced in probability, not in z: label some cell centres with their z values
    ticks = np.linspace(0, n - 1, min(n, 5)).round().astype(int)
    ax.set_xticks(ticks * h + h / 2, [f"{float(values[i]):.2f}" for i in ticks])
    ax.set_yticks(ticks * h + h / 2, [f"{float(values.flip(0)[i]):.2f}" for i in ticks])
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(f"decoded latent grid: {n}x{n} codes over the central {quantile:.0%} of the prior", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
