"""Figures of a run. Each function takes plain data (history, tensors, a model), writes one PNG and
returns its path. matplotlib runs headless (Agg)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

DPI = 100


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_loss_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Train and test loss per epoch, and every named term (reconstruction, KL, sparsity) beside it."""
    epochs = [r["epoch"] for r in history]
    terms = sorted({k[len("train_"):] for r in history for k in r
                    if k.startswith("train_") and k != "train_loss"})
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
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def image_grid(rows: list[np.ndarray], labels: list[str] | None = None, cell: float = 0.9):
    """A figure of image rows: ``rows`` is a list of arrays (N, H, W) in [0, 1]."""
    n = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(cell * n + (1.2 if labels else 0), cell * len(rows)),
                             squeeze=False)
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
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.12 if labels else 0.01, right=0.99, top=0.99, bottom=0.01)
    return fig


def as_images(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) tensors in [0, 1] to (N, H, W) arrays for imshow (first channel)."""
    x = x.detach().float().cpu()
    if x.ndim == 4:
        x = x[:, 0]
    return x.clamp(0, 1).numpy()


def plot_reconstructions(model, x: torch.Tensor, path: str | Path, n: int = 10) -> Path:
    """A row of test images above their reconstructions."""
    x = x[:n]
    was = model.training
    model.eval()
    with torch.inference_mode():
        rec = model.reconstruct(x)
    model.train(was)
    fig = image_grid([as_images(x), as_images(rec)], ["input", "reconstruction"])
    return _save(fig, path)
