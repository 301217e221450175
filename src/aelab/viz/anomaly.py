"""Figures of anomaly detection: ROC curves of each score, the scores of normal and anomalous test items, and the
most and least anomalous test images. The plots take plain scores (numpy); :func:`write_anomaly_figures` scores
a run trained with ``normal_classes`` and draws all three into its folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from ..data.batches import as_float
from ..evaluation.anomaly import anomaly_test_scores, auroc_ap
from .figures import RUN_COLOURS, _save, as_images, plt

NORMAL_COLOUR, ANOMALY_COLOUR = "#2e6fba", "#c0392b"
ROC, HISTOGRAMS, EXTREMES = "anomaly_roc.png", "anomaly_histograms.png", "anomaly_extremes.png"


def plot_roc_curves(scores: dict[str, np.ndarray], truth: np.ndarray, path: str | Path, default: str | None = None,
                    title: str = "") -> Path:
    """One ROC curve per score (``scores``: {method: (N,) scores}, higher = more anomalous) against ``truth`` (N,)
    booleans (True = anomalous), the AUROC in the legend, the default method drawn thicker; the diagonal is a
    score that knows nothing."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.plot([0, 1], [0, 1], ":", color="#999", linewidth=1, label="chance (AUROC 0.5)")
    for i, (method, s) in enumerate(scores.items()):
        fpr, tpr, _ = roc_curve(truth, s)
        auroc = auroc_ap(s, truth)["auroc"]
        ax.plot(fpr, tpr, color=RUN_COLOURS[i % len(RUN_COLOURS)], linewidth=2.4 if method == default else 1.3,
                label=f"{method} (AUROC {auroc:.3f}){' default' if method == default else ''}")
    ax.set_xlabel("false positive rate (normal items flagged)")
    ax.set_ylabel("true positive rate (anomalies found)")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1.01)
    ax.set_title(title or "ROC curves of the anomaly scores", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_score_histograms(scores: dict[str, np.ndarray], truth: np.ndarray, path: str | Path) -> Path:
    """One panel per score: histograms (as densities) of the normal and the anomalous items' scores; the
    horizontal axis spans the 0.5th to 99.5th percentile of all scores, so a few outliers do not squash it."""
    n = len(scores)
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.0 * nrows), squeeze=False)
    for ax, (method, s) in zip(axes.flat, scores.items()):
        lo, hi = np.quantile(s, [0.005, 0.995])
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
        for mask, colour, name in ((~truth, NORMAL_COLOUR, "normal"), (truth, ANOMALY_COLOUR, "anomalous")):
            ax.hist(np.clip(s[mask], edges[0], edges[-1]), bins=edges, density=True, alpha=0.55, color=colour,
                    label=f"{name} ({int(mask.sum()):,})")
        ax.set_title(method, fontsize=10)
        ax.set_xlabel("score (higher = more anomalous)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def plot_extremes(x, scores: np.ndarray, path: str | Path, labels: list[str] | None = None, n: int = 10,
                  method: str = "") -> Path:
    """The ``n`` most anomalous images of ``x`` (N, C, H, W) in [0, 1] by ``scores`` (N,) (top row, highest first)
    and the ``n`` least anomalous (bottom row, lowest first), each titled with its label (when given) and score."""
    order = np.argsort(scores, kind="stable")
    n = min(n, len(order))
    rows = [("most anomalous", order[::-1][:n]), ("least anomalous", order[:n])]
    fig, axes = plt.subplots(2, n, figsize=(0.95 * n + 1.4, 2.6), squeeze=False)
    for r, (name, picks) in enumerate(rows):
        images = as_images(x[picks.tolist()])
        for j, ax in enumerate(axes[r]):
            ax.set_xticks([]), ax.set_yticks([])
            ax.imshow(images[j], cmap="gray", vmin=0, vmax=1)
            label = f"{labels[picks[j]]}\n" if labels else ""
            ax.set_title(f"{label}{scores[picks[j]]:.3g}", fontsize=7)
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"test images by their {method} score".replace("  ", " "), fontsize=9)
    fig.subplots_adjust(left=1.4 / (0.95 * n + 1.4), right=0.99, top=0.8, bottom=0.02, wspace=0.08, hspace=0.55)
    return _save(fig, path)


def write_anomaly_figures(run, data) -> dict[str, Path]:
    """Score the test set of ``data`` with a run trained on its ``normal_classes`` and draw the ROC curves, the
    histograms and (for images) the most and least anomalous test images into the run folder; returns
    ``{file name: path}`` (empty when the test set lacks normal or anomalous items)."""
    scores, truth, default = anomaly_test_scores(run.model, data, run.config.normal_classes, seed=run.config.seed)
    if not scores:
        return {}
    out = Path(run.path)
    written = {ROC: plot_roc_curves(scores, truth, out / ROC, default=default,
                                    title=f"{run.config.model}: normal classes {run.config.normal_classes}"),
               HISTOGRAMS: plot_score_histograms(scores, truth, out / HISTOGRAMS)}
    if data.is_images:
        y = data.y_test.cpu().tolist()
        labels = [data.classes[i] if data.classes else str(i) for i in y]
        written[EXTREMES] = plot_extremes(as_float(data.x_test), scores[default], out / EXTREMES, labels=labels,
                                          method=default)
    return written


__all__ = ["EXTREMES", "HISTOGRAMS", "ROC", "plot_extremes", "plot_roc_curves", "plot_score_histograms",
           "write_anomaly_figures"]
