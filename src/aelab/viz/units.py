"""What the code units do: activation histogram, code heatmap, firing rates, and each unit's picture.

Every function here works for any model's codes (B, D) (``model.codes(x)``): sparse models are
where the pictures are most telling, but a dense code read the same way shows how spread out it is.
A unit *fires* on a sample when ``|z| > threshold`` (0.01: the one definition of
:mod:`aelab.evaluation.metrics`, so the figures agree with ``evaluation.json``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..evaluation.metrics import ACTIVE_THRESHOLD
from ..models.base import eval_mode, model_device
from .figures import _save, as_images, mosaic, plt


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float32)


def plot_code_histogram(codes, path: str | Path, threshold: float = ACTIVE_THRESHOLD, title: str = "") -> Path:
    """Histogram of every activation in ``codes`` (B, D); log counts when most of them are (near) zero."""
    z = _np(codes).ravel()
    quiet = float(np.mean(np.abs(z) <= threshold))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.hist(z, bins=80, color="tab:blue", alpha=0.85)
    if quiet > 0.5:  # a spike at zero would flatten everything else
        ax.set_yscale("log")
    ax.set_xlabel("activation z")
    ax.set_ylabel("count" + (" (log scale)" if quiet > 0.5 else ""))
    ax.set_title(f"{title + ': ' if title else ''}code activations, {quiet:.0%} with |z| <= {threshold:g}",
                 fontsize=11)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_code_heatmap(codes, path: str | Path, labels=None, n: int = 20, classes: list[str] | None = None,
                      title: str = "") -> Path:
    """The codes of the first ``n`` samples (rows, sorted by label when given) across every unit (columns)."""
    z = _np(codes)[:n]
    rows = np.arange(len(z))
    names = None
    if labels is not None:
        lab = _np(labels).astype(int)[:n]
        rows = np.argsort(lab, kind="stable")
        names = [classes[v] if classes and 0 <= v < len(classes) else str(v) for v in lab[rows]]
    z = z[rows]
    signed = bool((z < 0).any())
    vmax = float(np.abs(z).max()) or 1.0
    fig, ax = plt.subplots(figsize=(9.0, 1.2 + 0.25 * len(z)))
    im = ax.imshow(z, aspect="auto", interpolation="nearest", cmap="RdBu_r" if signed else "magma",
                   vmin=-vmax if signed else 0.0, vmax=vmax)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="z")
    ax.set_xlabel(f"unit (of {z.shape[1]})")
    if names is not None:
        ax.set_yticks(range(len(z)), names, fontsize=7)
        ax.set_ylabel("sample (by label)")
    else:
        ax.set_ylabel("sample")
    ax.set_title(f"{title + ': ' if title else ''}codes of {len(z)} test samples", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_firing_rates(rates, path: str | Path, threshold: float = ACTIVE_THRESHOLD, title: str = "") -> Path:
    """Per-unit firing rates (D,) sorted from the busiest unit down; dead units (those that never fire)
    are drawn in red and counted in the legend."""
    r = _np(rates)
    dead_mask = r == 0
    order = np.argsort(-r, kind="stable")
    r, dead_mask = r[order], dead_mask[order]
    x = np.arange(len(r))
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    ax.bar(x[~dead_mask], r[~dead_mask], width=1.0, color="tab:blue", label=f"alive ({int((~dead_mask).sum())})")
    if dead_mask.any():
        # dead units have (near) zero height: a red tick under the axis marks each one
        ax.bar(x[dead_mask], np.maximum(r[dead_mask], 0.004), width=1.0, color="tab:red",
               label=f"dead ({int(dead_mask.sum())})")
    ax.set_xlim(-0.5, len(r) - 0.5)
    ax.set_ylim(0, 1.2)  # rates lie in [0, 1]; the band above 1 keeps the legend off the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("unit, sorted by firing rate")
    ax.set_ylabel(f"fraction of samples with |z| > {threshold:g}")
    ax.set_title(f"{title + ': ' if title else ''}firing rates of {len(r)} units (mean {r.mean():.2f})", fontsize=11)
    ax.legend(loc="upper right", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------- units as images
def first_decoder_layer(model) -> nn.Module | None:
    """The first layer with weights in ``model.decoder`` (registration order), or None."""
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, nn.Module):
        return None
    return next((m for m in decoder.modules() if not list(m.children()) and list(m.parameters(recurse=False))), None)


def decoder_starts_linear(model) -> bool:
    """True when the decoder begins with a linear map from the code: then a one-hot code picks one
    column of its weights, and the decoded one-hot code is that unit's picture."""
    layer = first_decoder_layer(model)
    return isinstance(layer, nn.Linear) and layer.in_features == getattr(model, "latent_dim", -1)


def unit_features(model, scale=None) -> torch.Tensor:
    """Each unit's decoded image: decode(scale_d * e_d) - decode(0), for every unit d. Returns (D, *input_shape).

    ``scale`` (D,) sets each one-hot code's height (default 1): a typical large activation of the
    unit shows what the unit adds when it fires strongly.
    """
    d = model.latent_dim
    device = model_device(model)
    heights = torch.ones(d) if scale is None else torch.as_tensor(scale, dtype=torch.float32).cpu()
    with eval_mode(model), torch.inference_mode():
        base = model.decode(torch.zeros(1, d, device=device))
        return model.decode(torch.diag(heights).to(device)) - base


def typical_scale(codes) -> np.ndarray:
    """Per-unit height for :func:`unit_features`: the 99th percentile of |z| over ``codes`` (B, D), 1 where 0."""
    s = np.quantile(np.abs(_np(codes)), 0.99, axis=0)
    return np.where(s > 0, s, 1.0).astype(np.float32)


def unit_order(rates) -> np.ndarray:
    """Units from the busiest to the quietest (by firing rate), for choosing which to show."""
    return np.argsort(-_np(rates), kind="stable")


def _unit_tiles(features: torch.Tensor, units) -> np.ndarray:
    """The pictures of ``units`` from ``features`` (D, C, H, W) or (D, H, W), first channel: (U, H, W) arrays,
    each divided by its own largest magnitude (at least 1e-8), so in [-1, 1]."""
    f = features.detach().float().cpu()
    f = (f[:, 0] if f.ndim == 4 else f)[units].numpy()
    return f / np.maximum(np.abs(f).reshape(len(f), -1).max(1), 1e-8)[:, None, None]


def plot_unit_features(features: torch.Tensor, path: str | Path, units=None, dead=None, title: str = "") -> Path:
    """A grid of unit pictures ``features`` (D, C, H, W) (see :func:`unit_features`), each scaled to its
    own largest magnitude: red adds ink, blue removes it. ``units`` picks and orders them (default:
    all, at most 100); dead units (``dead`` mask (D,)) are named in the title."""
    idx = np.arange(len(features))[:100] if units is None else np.asarray(units)
    tiles = _unit_tiles(features, idx)
    ncols = int(np.ceil(np.sqrt(len(tiles))))
    grid = mosaic(tiles, ncols, pad=2, fill=np.nan)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.75")  # grey gaps: white (no change) stays readable
    side = min(9.0, max(4.0, 0.62 * ncols))
    fig, ax = plt.subplots(figsize=(side, side + 0.5))
    ax.imshow(grid, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    n_dead = int(_np(dead).astype(bool)[idx].sum()) if dead is not None else 0
    extra = f", {n_dead} of them dead" if n_dead else ""
    ax.set_title(f"{title + ': ' if title else ''}what each unit draws: decode(one-hot) - decode(0)\n"
                 f"{len(tiles)} units, busiest first{extra}", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.55 / (side + 0.5))
    return _save(fig, path)


def top_indices(codes, units, per_unit: int) -> np.ndarray:
    """For each unit in ``units``, the rows of ``codes`` (N, D) with its ``per_unit`` largest values, largest
    first (ties: the earlier row). Returns (len(units), per_unit) row indices."""
    z = _np(codes)[:, np.asarray(units)]
    return np.argsort(-z, axis=0, kind="stable")[:per_unit].T


def plot_top_activations(codes, images: torch.Tensor, path: str | Path, units=None, per_unit: int = 8,
                         features: torch.Tensor | None = None, title: str = "") -> Path:
    """For each unit in ``units`` (default: the first 10), the ``per_unit`` images of ``images`` (N, C, H, W)
    whose codes (N, D) activate it most, strongest first, after the unit's own picture (``features``
    (D, C, H, W), optional, drawn red/blue as in :func:`plot_unit_features`)."""
    z = _np(codes)
    units = np.arange(min(10, z.shape[1])) if units is None else np.asarray(units)
    top = top_indices(z, units, per_unit)  # (U, per_unit)
    imgs = as_images(images)
    tiles = np.stack([imgs[top]] * 3, axis=-1)  # (U, per_unit, H, W, 3): grey images as RGB
    cols = per_unit
    if features is not None:  # the unit's picture first, in the diverging colours, as RGB
        f_rgb = plt.get_cmap("RdBu_r")((_unit_tiles(features, units) + 1) / 2)[..., :3]  # (U, H, W, 3)
        tiles = np.concatenate([f_rgb[:, None], tiles], axis=1)
        cols += 1
    h = imgs.shape[1]
    grid = mosaic(tiles.reshape(-1, *tiles.shape[2:]), cols, pad=2, fill=1.0)
    width, height = 1.1 + 0.55 * cols, 0.7 + 0.55 * len(units)
    fig, ax = plt.subplots(figsize=(width, height))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([2 + i * (h + 2) + h / 2 for i in range(len(units))], [f"unit {u}" for u in units], fontsize=8)
    for s in ax.spines.values():
        s.set_visible(False)
    head = f"{title}: " if title else ""
    what = "each unit's picture, then the" if features is not None else "the"
    ax.set_title(f"{head}{what} test images that activate it most", fontsize=9)
    fig.subplots_adjust(left=1.0 / width, right=1 - 0.1 / width, bottom=0.1 / height, top=1 - 0.45 / height)
    return _save(fig, path)
