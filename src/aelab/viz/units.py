"""What the code units do: activation histogram, code heatmap, firing rates, and each unit's picture.

Every function here works for any model's codes (B, D) (``model.codes(x)``): sparse models are
where the pictures are most telling, but a dense code read the same way shows how spread out it is.
A unit *fires* on a sample when ``|z| > threshold`` (0.01: the one definition of
:mod:`aelab.evaluation.metrics`, so the figures agree with ``evaluation.json``).

The sparse dashboard of the field draws from here too: the decoder atoms (:func:`decoder_atoms`, each unit's
decoder weight column as an image), the histogram of log10 feature density (:func:`plot_feature_density`), each
unit's class purity (:func:`plot_class_purity`) and the top-activating test images of a spread of live units
(:func:`spread_units`, :func:`plot_top_activations` with the purity in its labels).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..evaluation.metrics import (ACTIVE_THRESHOLD, DENSITY_EPS, PURITY_TOP, log10_feature_density, top_rows,
                                  unit_classes)
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


def decoder_atoms(model) -> torch.Tensor | None:
    """Each unit's decoder atom: the column of the decoder's weight that the unit scales, as an input-shaped
    image (D, *input_shape), when the decoder is one linear map from the code to the output (the classic sparse
    autoencoder's); None for any other decoder. Unlike :func:`unit_features` it is not bent by the output's
    sigmoid: it is the direction the unit adds to the logits."""
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, nn.Module):
        return None
    layers = [m for m in decoder.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    shape = tuple(getattr(model, "input_shape", ()))
    if len(layers) != 1 or not isinstance(layers[0], nn.Linear) or not shape:
        return None
    weight = layers[0].weight  # (out, latent)
    if weight.shape != (int(np.prod(shape)), getattr(model, "latent_dim", -1)):
        return None
    return weight.detach().float().cpu().T.reshape(-1, *shape)


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


UNIT_PICTURES = "what each unit draws: decode(one-hot) - decode(0)"
ATOMS = "decoder atoms: each unit's decoder weight column"


def plot_unit_features(features: torch.Tensor, path: str | Path, units=None, dead=None, title: str = "",
                       what: str = UNIT_PICTURES) -> Path:
    """A grid of unit pictures ``features`` (D, C, H, W) (see :func:`unit_features`, or :func:`decoder_atoms`
    with ``what=ATOMS``), each scaled to its own largest magnitude: red adds ink, blue removes it. ``units``
    picks and orders them (default: all, at most 100); dead units (``dead`` mask (D,)) are named in the title."""
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
    # the description on a line of its own, so a long title is not clipped on a narrow (few-unit) figure
    ax.set_title(f"{title + ': ' if title else ''}{what.replace(': ', chr(10))}\n"
                 f"{len(tiles)} units, busiest first{extra}", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.75 / (side + 0.5))
    return _save(fig, path)


def top_indices(codes, units, per_unit: int) -> np.ndarray:
    """For each unit in ``units``, the rows of ``codes`` (N, D) with its ``per_unit`` largest values, largest
    first (ties: the earlier row). Returns (len(units), per_unit) row indices."""
    return top_rows(_np(codes)[:, np.asarray(units)], per_unit).T


def plot_top_activations(codes, images: torch.Tensor, path: str | Path, units=None, per_unit: int = 8,
                         features: torch.Tensor | None = None, title: str = "", labels=None,
                         classes: list[str] | None = None) -> Path:
    """For each unit in ``units`` (default: the first 10), the ``per_unit`` images of ``images`` (N, C, H, W)
    whose codes (N, D) activate it most, strongest first, after the unit's own picture (``features``
    (D, C, H, W), optional, drawn red/blue as in :func:`plot_unit_features`); images on which the unit is not
    active (it fires on fewer than ``per_unit``) are drawn faded. Each row is labelled with the
    unit's firing rate and, given ``labels`` (N,), its class purity and most common class (see
    :func:`unit_label`)."""
    z = _np(codes)
    units = np.arange(min(10, z.shape[1])) if units is None else np.asarray(units)
    top = top_indices(z, units, per_unit)  # (U, per_unit)
    imgs = as_images(images)
    tiles = np.stack([imgs[top]] * 3, axis=-1)  # (U, per_unit, H, W, 3): grey images as RGB
    silent = np.abs(np.take_along_axis(z[:, units], top.T, axis=0).T) <= ACTIVE_THRESHOLD  # (U, per_unit)
    tiles[silent] = 0.25 + 0.5 * tiles[silent]  # a unit active on fewer images: the rest drawn faded
    cols = per_unit
    if features is not None:  # the unit's picture first, in the diverging colours, as RGB
        f_rgb = plt.get_cmap("RdBu_r")((_unit_tiles(features, units) + 1) / 2)[..., :3]  # (U, H, W, 3)
        tiles = np.concatenate([f_rgb[:, None], tiles], axis=1)
        cols += 1
    h = imgs.shape[1]
    grid = mosaic(tiles.reshape(-1, *tiles.shape[2:]), cols, pad=2, fill=1.0)
    width = 1.6 + 0.55 * cols  # the labels' margin, then the grid; the height follows the grid's aspect
    height = 0.55 + (width - 1.6) * grid.shape[0] / grid.shape[1]
    fig, ax = plt.subplots(figsize=(width, height))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    names = unit_labels(z, units, labels, classes)
    ax.set_yticks([2 + i * (h + 2) + h / 2 for i in range(len(units))], names, fontsize=7)
    for s in ax.spines.values():
        s.set_visible(False)
    head = f"{title}: " if title else ""
    what = "each unit's picture, then the" if features is not None else "the"
    ax.set_title(f"{head}{what} test images that activate it most", fontsize=9)
    fig.subplots_adjust(left=1.5 / width, right=1 - 0.1 / width, bottom=0.1 / height, top=1 - 0.45 / height)
    return _save(fig, path)


def unit_labels(codes, units, labels=None, classes: list[str] | None = None) -> list[str]:
    """One label per unit of ``units`` for :func:`plot_top_activations`: "unit 12 · 3.1%" (its firing rate over
    ``codes`` (N, D)) and, given ``labels`` (N,), a second line "purity 0.95 · 7": the share of its
    ``PURITY_TOP`` strongest activations that carry its most common class, and that class."""
    z = torch.as_tensor(_np(codes))[:, np.asarray(units)]
    rates = (z.abs() > ACTIVE_THRESHOLD).float().mean(0).tolist()
    names = [f"unit {u} · {r:.1%}" if r >= 0.01 or r == 0 else f"unit {u} · {r:.2%}"
             for u, r in zip(np.asarray(units).tolist(), rates)]
    if labels is None:
        return names
    purity, majority = unit_classes(z, torch.as_tensor(_np(labels)).long())
    return [f"{name}\npurity {p:.2f} · {_class_name(c, classes)}" if c >= 0 else f"{name}\nnever active"
            for name, p, c in zip(names, purity.tolist(), majority.tolist())]


def _class_name(c: int, classes: list[str] | None) -> str:
    return classes[c] if classes and 0 <= c < len(classes) else str(c)


def spread_units(rates, n: int = 10, min_rate: float = 0.0) -> np.ndarray:
    """``n`` live units (firing rate > 0 in ``rates`` (D,)) spread over the firing rates, from the busiest to the
    rarest (evenly spaced ranks), so the figure shows common and rare features alike. Units firing on less than
    ``min_rate`` are left out while at least ``n`` others are live (a unit that fired on one image shows one
    image); all live units when fewer than ``n``; the busiest units when none is live."""
    r = _np(rates)
    order = unit_order(r)
    live = order[r[order] > 0]
    if len(live) == 0:
        return order[:n]
    common = live[r[live] >= min_rate]
    live = common if len(common) >= n else live
    if len(live) <= n:
        return live
    return live[np.unique(np.linspace(0, len(live) - 1, n).round().astype(int))]


# ------------------------------------------------------------------------------------------- the sparse dashboard
def plot_feature_density(rates, path: str | Path, eps: float = DENSITY_EPS, title: str = "") -> Path:
    """Histogram of log10(firing rate + eps) over units (``rates`` (D,): each unit's fraction of test samples),
    the field's feature-density histogram; units that never fire (at log10(eps)) are a separate red bar and the
    mean (``mean_log10_feature_density``) a dashed line."""
    r = _np(rates).astype(np.float64)
    logs = log10_feature_density(r, eps).cpu().numpy()
    dead = r == 0
    floor = float(np.log10(eps))
    live = logs[~dead]
    low = min(floor + 1.0, float(live.min()) - 0.25) if len(live) else floor + 1.0
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if len(live):
        ax.hist(live, bins=np.linspace(low, 0.0, 41), color="tab:blue", alpha=0.85, label=f"live ({len(live)})")
    if dead.any():
        ax.bar([low - 0.6], [int(dead.sum())], width=0.5, color="tab:red", label=f"dead ({int(dead.sum())}, {floor:g})")
    ax.axvline(float(logs.mean()), color="k", ls="--", lw=1, label=f"mean {logs.mean():.2f}")
    ax.set_xlabel(f"log10 feature density (fraction of test samples with |z| > {ACTIVE_THRESHOLD:g})")
    ax.set_ylabel("units")
    ax.set_title(f"{title + ': ' if title else ''}feature density of {len(r)} units", fontsize=11)
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_class_purity(purity, rates, path: str | Path, chance: float | None = None, title: str = "") -> Path:
    """Each live unit's class purity (``purity`` (D,), NaN for dead units: see
    :func:`aelab.evaluation.metrics.class_purity`): a histogram with the mean, and purity against log10 feature
    density (``rates`` (D,)). ``chance``: the purity of a unit blind to the labels (the largest class's share),
    drawn as a grey line."""
    p, r = _np(purity).astype(np.float64), _np(rates).astype(np.float64)
    live = ~np.isnan(p)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    left.hist(p[live], bins=np.linspace(0, 1, 21), color="tab:blue", alpha=0.85)
    if live.any():
        left.axvline(float(p[live].mean()), color="k", ls="--", lw=1, label=f"mean {p[live].mean():.2f}")
    right.scatter(log10_feature_density(r[live]).cpu().numpy(), p[live], s=8, alpha=0.6, color="tab:blue")
    if chance is not None:
        left.axvline(chance, color="0.5", lw=1, label=f"blind to labels {chance:.2f}")
        right.axhline(chance, color="0.5", lw=1)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.set_xlabel(f"class purity (of a unit's {PURITY_TOP} strongest test activations)")
    left.set_ylabel("live units")
    left.legend(loc="upper left", frameon=False, fontsize=8)
    right.set_xlabel("log10 feature density")
    right.set_ylabel("class purity")
    right.set_ylim(0, 1.05)
    fig.suptitle(f"{title + ': ' if title else ''}class purity of {int(live.sum())} live units", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
