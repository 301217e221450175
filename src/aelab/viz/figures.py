"""Figures of a run. Each function takes plain data (history, tensors, a model), writes one PNG and
returns its path. matplotlib runs headless (Agg).

Sizes are fixed by ``figsize`` at :data:`DPI` (no tight bounding box), so a figure's pixel size
depends only on what it shows (how many images, panels or runs), never on its labels.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..data.noise import Noise, corrupt  # noqa: E402
from ..models.base import eval_mode, model_device  # noqa: E402

DPI = 100
RUN_COLOURS = plt.get_cmap("tab10").colors  # one colour per run in comparison figures


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_loss_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Train and test loss per epoch, and every named term (reconstruction, KL, sparsity) beside it
    (a term equal to the loss itself gets no panel of its own). 4.2 x 3.4 inches per panel."""
    epochs = [r["epoch"] for r in history]
    terms = sorted({k[len("train_"):] for r in history for k in r
                    if k.startswith("train_") and k != "train_loss"})
    # a term that is the whole loss (the reconstruction of a plain autoencoder) would repeat the first panel
    def differs(r, t):
        return abs(r.get(f"train_{t}", 0.0) - r["train_loss"]) > 1e-9 * max(1.0, abs(r["train_loss"]))

    terms = [t for t in terms if any(differs(r, t) for r in history)]
    panels = 1 + len(terms)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    for ax, name in zip(axes[0], ["loss", *terms]):
        for split, style in (("train", "-o"), ("test", "--s")):
            key = f"{split}_{name}"
            pts = [(e, r[key]) for e, r in zip(epochs, history) if key in r]
            if pts:
                ax.plot(*zip(*pts), style, ms=3, label=split)
        ax.set_title(name if name != "loss" else (title or "loss"))
        ax.set_xlabel("epoch")
        if len(epochs) <= 12:  # whole epochs only: "0.5" of an epoch means nothing here
            ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def image_grid(rows: list[np.ndarray], labels: list[str] | None = None, cell: float = 0.9):
    """A figure of image rows: ``rows`` is a list of arrays (N, H, W) in [0, 1]."""
    n = max(len(r) for r in rows)
    margin = 1.3 if labels else 0.0  # inches for the row labels
    width = cell * n + margin
    fig, axes = plt.subplots(len(rows), n, figsize=(width, cell * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n):
            ax = axes[i][j]
            ax.set_xticks([]), ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(row):
                ax.imshow(row[j], cmap="gray", vmin=0, vmax=1)
        if labels:
            axes[i][0].set_ylabel(labels[i], rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=margin / width + 0.005, right=0.995, top=0.99, bottom=0.01)
    return fig


def mosaic(images: np.ndarray, ncols: int, pad: int = 2, fill: float = 1.0) -> np.ndarray:
    """Tile images (N, H, W) or (N, H, W, 3) into one array, ``ncols`` per row, ``pad`` pixels of
    ``fill`` between them. One ``imshow`` of a mosaic draws far faster than one axes per image."""
    n, h, w = images.shape[:3]
    nrows = -(-n // ncols)
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, *images.shape[3:]), fill, dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = images[i]
    return out


def as_images(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) tensors in [0, 1] to (N, H, W) arrays for imshow (first channel)."""
    x = x.detach().float().cpu()
    if x.ndim == 4:
        x = x[:, 0]
    return x.clamp(0, 1).numpy()


def _reconstruct(model, x: torch.Tensor) -> torch.Tensor:
    with eval_mode(model), torch.inference_mode():
        return model.reconstruct(x.to(model_device(model)))


def plot_reconstructions(model, x: torch.Tensor, path: str | Path, n: int = 10) -> Path:
    """A row of test images ``x`` (N, C, H, W) in [0, 1] above their reconstructions (the first ``n``)."""
    x = x[:n]
    fig = image_grid([as_images(x), as_images(_reconstruct(model, x))], ["input", "reconstruction"])
    return _save(fig, path)


def plot_denoising(model, x: torch.Tensor, noise: Noise, path: str | Path, seed: int = 0, n: int = 10) -> Path:
    """A denoising autoencoder at work on test images ``x`` (N, C, H, W) in [0, 1] (the first ``n``): a copy
    corrupted by ``noise`` (seeded), the model's reconstruction of it, and the clean images, one row each."""
    x = x[:n]
    noisy = corrupt(x, noise, torch.Generator().manual_seed(seed))
    fig = image_grid([as_images(noisy), as_images(_reconstruct(model, noisy)), as_images(x)],
                     [f"noisy\n{noise}", "denoised", "clean"])
    return _save(fig, path)


def plot_feature_reconstructions(model, x: torch.Tensor, path: str | Path, names: list[str] | None = None,
                                 n: int = 4, max_features: int = 40) -> Path:
    """For flat features (a table's rows): one panel per test row ``x`` (N, D), its features as bars and the
    model's reconstruction of each as a dot on the same axis (the first ``n`` rows, the first ``max_features``
    features; ``names`` label them)."""
    recon = _reconstruct(model, x[:n].float()).float().cpu().numpy()
    x = x[:n].float().cpu().numpy()
    d = min(x.shape[1], max_features)
    names = list(names or [f"x{j}" for j in range(x.shape[1])])[:d]
    fig, axes = plt.subplots(len(x), 1, figsize=(max(6.0, 0.22 * d + 1.5), 1.7 * len(x) + 0.6), squeeze=False,
                             sharex=True)
    for i, ax in enumerate(axes[:, 0]):
        ax.bar(range(d), x[i, :d], color="#9ab7d3", label="input")
        ax.plot(range(d), recon[i, :d], "o", color="#c0392b", markersize=3.5, label="reconstruction")
        ax.axhline(0, color="#888", linewidth=0.6)
        ax.set_ylabel(f"row {i + 1}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper right", ncol=2, frameon=False)
    axes[-1, 0].set_xticks(range(d), names, rotation=90, fontsize=6)
    shown = f" (the first {d} of {x.shape[1]} features)" if d < x.shape[1] else ""
    fig.suptitle(f"test rows: features (bars) and their reconstruction (dots){shown}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_reconstruction_comparison(models: dict, x: torch.Tensor, path: str | Path, n: int = 10) -> Path:
    """The same test images ``x`` (N, C, H, W) in [0, 1] reconstructed by each model: one row per model.

    ``models`` maps a row label (a run's name) to a model.
    """
    x = x[:n]
    rows = [as_images(x)] + [as_images(_reconstruct(m, x)) for m in models.values()]
    fig = image_grid(rows, ["input", *models])
    return _save(fig, path)


def plot_metric_bars(metrics: dict[str, dict], path: str | Path, keys: list[str] | None = None,
                     lower_is_better: set[str] = frozenset(), higher_is_better: set[str] = frozenset()) -> Path:
    """A bar chart per metric, one bar per run: ``metrics`` maps a run's name to its metrics.

    ``keys`` (default: every numeric key any run has) choose the panels; a run without a metric gets
    no bar and "n/a". Panel titles say which direction is better when the sets name the key.
    """
    runs = list(metrics)
    if keys is None:
        keys = sorted({k for m in metrics.values() for k, v in m.items() if _is_number(v)})
    keys = [k for k in keys if any(_is_number(m.get(k)) for m in metrics.values())] or ["(no metrics)"]
    ncols = min(3, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 0.5 + 2.6 * nrows), squeeze=False)
    colours = [RUN_COLOURS[i % len(RUN_COLOURS)] for i in range(len(runs))]
    for ax, key in zip(axes.flat, keys):
        values = [metrics[r].get(key) for r in runs]
        heights = [v if _is_number(v) else 0.0 for v in values]
        bars = ax.bar(range(len(runs)), heights, color=colours)
        for bar, v in zip(bars, values):
            label = f"{v:.4g}" if _is_number(v) else "n/a"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=8, xytext=(0, 2), textcoords="offset points")
        hint = (" (lower is better)" if key in lower_is_better
                else " (higher is better)" if key in higher_is_better else "")
        ax.set_title(key + hint, fontsize=10)
        crowded = len(runs) > 3
        ax.set_xticks(range(len(runs)), runs, rotation=20 if crowded else 0, ha="right" if crowded else "center",
                      fontsize=8)
        ax.margins(y=0.18)
        if not any(heights):  # all zero (no dead units, say): a 0..1 axis, not matplotlib's -0.06..0.06
            ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
