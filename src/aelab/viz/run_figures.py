"""Every figure that applies to a run, written into its folder: the catalogue the report reads.

Which figures apply is decided by what the model can do and what the data is, never by the
model's name: images get reconstructions and unit pictures (the decoder atoms when the decoder is one
linear map), a model with ``sample``/``interpolate`` gets samples and interpolations (and the manifold for a
2-D latent), every model gets the latent map and the code figures, and a model with the SPARSE capability the
rest of the sparse dashboard (feature density, class purity).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.batches import as_float
from ..data.noise import noise_for
from ..evaluation import encode_all, firing_rates
from ..evaluation.metrics import PURITY_TOP, chance_purity, class_purity
from ..models.base import SPARSE, has, model_device
from .figures import plot_denoising, plot_feature_reconstructions, plot_loss_curves, plot_reconstructions
from .anomaly import write_anomaly_figures
from .generative import is_generative, plot_interpolations, plot_manifold, plot_samples
from .latent import DEFAULT_POINTS, plot_latent_map
from .units import (ATOMS, decoder_atoms, decoder_starts_linear, plot_class_purity, plot_code_heatmap,
                    plot_code_histogram, plot_feature_density, plot_firing_rates, plot_top_activations,
                    plot_unit_features, spread_units, typical_scale, unit_features, unit_order)

# (file, title, caption) in the order the report shows them
FIGURES = [
    ("loss.png", "Loss curves",
     "Train and test loss per epoch, and each named term of the loss. Test below or close to train: the "
     "model generalises; test rising while train falls: it is overfitting."),
    ("reconstructions.png", "Reconstructions",
     "Test images (top) and what the model makes of them after squeezing each through its code (bottom)."),
    ("denoising.png", "Denoising",
     "A denoising autoencoder (trained with --noise) at work: test images corrupted by the run's noise (top), what "
     "the model makes of them (middle), and the clean images it never saw (bottom)."),
    ("feature_reconstructions.png", "Reconstructions",
     "Test rows: each feature (bar) and what the model makes of it after squeezing the row through its code "
     "(dot). Dots on the bars' tops: the code keeps what the row says."),
    ("anomaly_roc.png", "Is this sample unusual? ROC curves",
     "The run was trained on its normal classes alone; every test item is scored, the other classes being the "
     "anomalies. One curve per anomaly score: the share of anomalies found (up) against the share of normal items "
     "flagged (right) as the threshold falls. AUROC 1: every anomaly scores above every normal item; 0.5: chance."),
    ("anomaly_histograms.png", "Anomaly scores of normal and anomalous test items",
     "Per score, how the normal test items (blue) and the anomalous ones (red) score. Little overlap: the score "
     "tells them apart; the threshold of aelab score cuts the axis at one value."),
    ("anomaly_extremes.png", "The most and the least anomalous test images",
     "By the run's default score: the test images that score highest (top, with their class and score) and "
     "lowest (bottom). The top row should hold the classes the model never saw."),
    ("latent.png", "The latent space as a map",
     "Test codes projected to two dimensions, coloured by the label the model never saw. Clusters by "
     "digit mean the code separates the classes without labels."),
    ("samples.png", "Samples from the prior",
     "Images decoded from random codes drawn from the prior N(0, I): what the model generates."),
    ("interpolations.png", "Interpolations",
     "The codes on the straight line between two test images, decoded: a smooth morph means a smooth latent space."),
    ("manifold.png", "The decoded manifold",
     "A grid of 2-D codes, each decoded: the whole map of what this 2-D latent space holds."),
    ("unit_features.png", "What each unit draws",
     "decode(one-hot code) - decode(zero code) for each unit, at a typical strong activation: red adds ink, "
     "blue removes it. The sparser the code, the more its units draw parts of digits (strokes) rather "
     "than whole-image patterns."),
    ("decoder_atoms.png", "Decoder atoms",
     "The decoder is one linear map, so each unit adds one fixed image to the output's logits, scaled by its "
     "activation: its column of the decoder's weight, drawn as a 28x28 picture (each scaled to its own largest "
     "value; red adds ink, blue removes it), busiest units first. Pen strokes and digit parts: the code's "
     "dictionary."),
    ("top_activations.png", "Images that drive each unit",
     "Ten live units spread from the busiest to the rarest: each unit's picture, then the test images with its "
     "largest activations (faded: the unit is not active on them). On the left, how often it fires and its class "
     f"purity: the share of its {PURITY_TOP} strongest test activations that carry its most common class, and that "
     "class."),
    ("feature_density.png", "Feature density",
     "How often each unit fires on the test set, as log10 of the fraction of test images (the sparse-autoencoder "
     "field's feature-density histogram). Dead units (never active) are the red bar at -10; a healthy sparse code "
     "has one bump well below 0 and no dead bar; units near 0 fire on almost everything."),
    ("class_purity.png", "Class purity of each unit",
     f"For each live unit, the share of its {PURITY_TOP} strongest test activations that carry its most common "
     "label (left: histogram with the mean, mean_class_purity; right: against how often the unit fires). The grey "
     "line is a unit blind to the labels (its top images a random draw). Units near 1 detect one class."),
    ("code_histogram.png", "Code activations",
     "Every activation of every unit on the test set. A sparse code piles up at zero."),
    ("code_heatmap.png", "Codes of a few samples",
     "Rows are test samples, columns units. A sparse code is mostly zero (dark; white on the red-blue scale of a "
     "signed code) with a few strong units per row."),
    ("firing_rates.png", "Firing rates",
     "How often each unit is active (|z| > 0.01) on the test set, busiest first; dead units never fire."),
]
# the latent map at the end of `aelab train`: 500 codes, about 2 s (`aelab report` draws 2,000)
TRAIN_END = dict(method="tsne", n_points=500)


MIN_MAP_POINTS = 3  # fewer test codes than this make no map (PCA and t-SNE need more points than dimensions)


def class_balanced_indices(y: torch.Tensor | None, n: int) -> torch.Tensor:
    """``n`` indices taking the first sample of each class in turn (0, 1, ..., 9, 0, 1, ...); the first ``n``
    without labels."""
    if y is None:
        return torch.arange(n)
    y = y.cpu()
    by_class = [(y == c).nonzero().flatten() for c in torch.unique(y).tolist()]
    picks = [int(idx[rank]) for rank in range(n) for idx in by_class if rank < len(idx)]
    return torch.tensor(picks[:n], dtype=torch.long)


def write_latent_map(run, data, codes=None, *, method: str = "tsne", n_points: int | None = DEFAULT_POINTS,
                     log=None) -> Path:
    """Draw ``RUN/latent.png``: the map of ``codes`` (default: the run model's codes of ``data``'s test set),
    coloured by the test labels, seeded by the run's seed; return its path."""
    if codes is None:
        codes = encode_all(run.model, data.x_test.to(model_device(run.model)))
    return plot_latent_map(codes, data.y_test, Path(run.path) / "latent.png", method=method, n_points=n_points,
                           seed=run.config.seed, classes=data.classes, title=run.config.model, log=log)


def write_run_figures(run, data, *, method: str = "tsne", n_points: int | None = DEFAULT_POINTS, log=None
                      ) -> dict[str, Path]:
    """Write every figure that applies to ``run`` (a :class:`aelab.Run` with its model) on ``data``'s test
    set into the run folder; return ``{file name: path}``. ``method``/``n_points`` set the latent map."""
    model, out, name = run.model, Path(run.path), run.config.model
    model.eval()
    device = model_device(model)
    images = data.is_images
    y = data.y_test
    classes = data.classes
    x = data.x_test
    written: dict[str, Path] = {}

    def add(fname, fn, *args, **kwargs):
        written[fname] = fn(*args, out / fname, **kwargs)

    if run.history:
        add("loss.png", plot_loss_curves, run.history, title=f"{name} loss")
    codes = encode_all(model, x.to(device)).cpu()  # (N, D)
    rates = firing_rates(codes)
    pick = class_balanced_indices(y, min(20, len(x)))
    if images:
        add("reconstructions.png", plot_reconstructions, model, as_float(x[pick[:10]]))
        if run.config.noise:  # a denoising run: noisy / denoised / clean
            noise = noise_for(run.config.noise, data.bounded)
            add("denoising.png", plot_denoising, model, as_float(x[pick[:10]]), noise, seed=run.config.seed)
    elif x.dim() == 2:  # flat features (a table): bars of a few rows and their reconstructions
        names = (data.meta.get("transform") or {}).get("columns")
        add("feature_reconstructions.png", plot_feature_reconstructions, model, as_float(x[pick[:4]]), names=names)
    if len(codes) >= MIN_MAP_POINTS:
        written["latent.png"] = write_latent_map(run, data, codes, method=method, n_points=n_points, log=log)
    elif log:
        log(f"latent map skipped: {len(codes)} test code(s); a 2-D map needs at least {MIN_MAP_POINTS}")
    if images and is_generative(model):
        add("samples.png", plot_samples, model, seed=run.config.seed, title=f"{name}: samples from the prior")
        # five pairs of different classes when there are labels: 0 -> 1, 2 -> 3, ...
        starts, ends = as_float(x[pick[0:10:2]]), as_float(x[pick[1:10:2]])
        labels = None
        if y is not None:
            names = [classes[int(v)] if classes else str(int(v)) for v in y[pick[:10]].tolist()]
            labels = [f"{a} to {b}" for a, b in zip(names[0::2], names[1::2])]
        add("interpolations.png", plot_interpolations, model, starts, ends, labels=labels)
        if model.latent_dim == 2:
            add("manifold.png", plot_manifold, model)
    dead = rates == 0
    order = unit_order(rates)
    features = decoder_atoms(model) if images else None
    if features is not None:  # one linear map: the decoder's columns are the units' pictures
        add("decoder_atoms.png", plot_unit_features, features, units=order[:100], dead=dead.cpu().numpy(),
            title=name, what=ATOMS)
    elif images and decoder_starts_linear(model):
        features = unit_features(model, typical_scale(codes))
        add("unit_features.png", plot_unit_features, features, units=order[:100], dead=dead.cpu().numpy(), title=name)
    if images:
        per_unit = 8  # images per unit; the units shown fire on at least that many test images when enough do
        add("top_activations.png", plot_top_activations, codes, as_float(x),
            units=spread_units(rates, min_rate=per_unit / len(x)), per_unit=per_unit, features=features, title=name,
            labels=y, classes=classes)
    if has(model, SPARSE):  # the rest of the sparse dashboard
        add("feature_density.png", plot_feature_density, rates, title=name)
        if y is not None:
            add("class_purity.png", plot_class_purity, class_purity(codes, y), rates, chance=chance_purity(y),
                title=name)
    add("code_histogram.png", plot_code_histogram, codes, title=name)
    add("code_heatmap.png", plot_code_heatmap, codes[pick], labels=None if y is None else y[pick], classes=classes,
        title=name)
    add("firing_rates.png", plot_firing_rates, rates, title=name)
    if run.config.normal_classes:  # trained on normal classes alone: how well it tells the others apart
        written.update(write_anomaly_figures(run, data))
    return written


def figure_paths(run_dir) -> list[tuple[Path, str, str]]:
    """The catalogued figures present in ``run_dir``, in report order: (path, title, caption)."""
    return [(Path(run_dir) / f, t, c) for f, t, c in FIGURES if (Path(run_dir) / f).is_file()]


__all__ = ["FIGURES", "TRAIN_END", "class_balanced_indices", "figure_paths", "write_latent_map", "write_run_figures"]
