"""Reconstruction and sparsity metrics as pure functions: the same definitions for every model.

Shapes: ``x`` and ``recon`` are (B, ...) with the same shape; ``codes`` are (B, D), the code the
decoder receives (``model.encode(x)``: the sparse code itself, the posterior mean of a VAE).

Sparsity is defined once, for every model, with one absolute threshold: a unit is *active* on a
sample when ``|z| > ACTIVE_THRESHOLD``. Comparing a dense model by ``|z| < 0.1`` against a sparse
one by ``|sigmoid(z) - 0.5| > 0.4`` compares nothing; these functions are the only definition.
For codes with exact zeros (topk, the ReLU of l1) active means nonzero, except a kept value at or below
0.01, which is counted silent; a sigmoid code (the kl penalty) is never exactly zero, and the threshold is
what gives its L0, dead units and feature densities a meaning at all, the same as for every other code.

The sparse dashboard of the field (SAELens, "Towards Monosemanticity") with that one definition: ``l0``
(active units per input), feature densities (each unit's firing rate) and the mean of their log10 (with
SAELens's epsilon, ``DENSITY_EPS``), ``explained_variance`` (1 - residual sum of squares over the inputs'
sum of squared deviations from their mean) and each unit's class purity.
"""
from __future__ import annotations

import math

import numpy as np
import torch

ACTIVE_THRESHOLD = 0.01  # a unit is active on a sample when |z| > this (absolute, in code units)
DENSITY_EPS = 1e-10  # log10(density + eps), as SAELens: a dead unit reads -10
PURITY_TOP = 20  # the top activations of a unit that its class purity reads
BCE_EPS = 1e-7  # probabilities are clamped to [eps, 1 - eps] so a confident wrong pixel costs ~16 nats, not inf


def mse_per_pixel(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the values of each sample. recon, x: (B, ...) -> (B,).

    The mean over samples of this is ``test_mse`` (per pixel for images).
    """
    return (recon - x).square().flatten(1).mean(1)


def bce_per_image(recon: torch.Tensor, x: torch.Tensor, eps: float = BCE_EPS) -> torch.Tensor:
    """Binary cross-entropy summed over the values of each sample, in nats. recon, x: (B, ...) -> (B,).

    ``recon`` are probabilities (the model's reconstruction in [0, 1]), clamped to [eps, 1 - eps];
    ``x`` are targets in [0, 1] (grey levels allowed: then a perfect reconstruction still pays the
    entropy of each pixel, e.g. log 2 for x = 0.5). The mean over samples is ``test_bce``.
    """
    p = recon.clamp(eps, 1 - eps)
    return -(x * p.log() + (1 - x) * (-p).log1p()).flatten(1).sum(1)


def active_mask(codes: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> torch.Tensor:
    """Boolean (B, D): unit d is active on sample b when |codes[b, d]| > threshold."""
    return codes.abs() > threshold


def active_units(codes: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> torch.Tensor:
    """Number of active units of each sample (L0 with a threshold). codes: (B, D) -> (B,) float."""
    return active_mask(codes, threshold).sum(1).to(torch.float32)


def firing_rates(codes: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> torch.Tensor:
    """Fraction of samples on which each unit is active. codes: (B, D) -> (D,) in [0, 1]."""
    return active_mask(codes, threshold).to(torch.float32).mean(0)


def dead_fraction(codes: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> float:
    """Fraction of units never active on any sample of ``codes`` (B, D): dead on this evaluation set."""
    return float((~active_mask(codes, threshold).any(0)).to(torch.float32).mean())


def hoyer_sparsity(codes: torch.Tensor) -> torch.Tensor:
    """Hoyer's sparsity of each code, (sqrt(n) - L1/L2) / (sqrt(n) - 1). codes: (B, D) -> (B,) in [0, 1].

    1 for a code with a single non-zero unit, 0 for a code whose units all have the same magnitude
    (Hoyer 2004, "Non-negative matrix factorization with sparseness constraints", eq. 1). It needs
    no threshold. An all-zero code, and any code when D == 1, is counted as 1 (as sparse as a
    vector can be), where the formula itself is 0/0.
    """
    n = codes.shape[1]
    if n == 1:
        return codes.new_ones(codes.shape[0])
    l1 = codes.abs().sum(1)
    l2 = codes.square().sum(1).sqrt()
    ratio = torch.where(l2 > 0, l1 / l2.clamp_min(torch.finfo(codes.dtype).tiny), torch.ones_like(l1))
    return ((math.sqrt(n) - ratio) / (math.sqrt(n) - 1)).clamp(0.0, 1.0)


def l0(codes: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> float:
    """Mean number of active units per sample of ``codes`` (B, D): the field's L0 (with the threshold)."""
    return float(active_units(codes, threshold).mean())


def log10_feature_density(rates, eps: float = DENSITY_EPS) -> torch.Tensor:
    """log10(rate + eps) of each unit's firing rate ``rates`` (D,) (:func:`firing_rates`): (D,). A dead unit
    reads log10(eps) = -10, a unit firing on every sample 0 (SAELens's log feature sparsity)."""
    return torch.log10(torch.as_tensor(rates, dtype=torch.float64) + eps)


def mean_log10_feature_density(rates, eps: float = DENSITY_EPS) -> float:
    """The mean over units of :func:`log10_feature_density` (SAELens's ``mean_log10_feature_sparsity``)."""
    return float(log10_feature_density(rates, eps).mean())


class ExplainedVariance:
    """1 - (sum of squared residuals) / (sum of squared deviations of the inputs from their mean), accumulated
    over batches (``update(recon, x)``, each (B, ...)) in float64 on the inputs' device (no host read until
    ``value()``); the mean is the inputs' own, per value (the mean image), over every batch seen. 1 for a perfect reconstruction, 0 for one that returns the mean input,
    below 0 for worse. ``value()`` is NaN when the inputs do not vary (nothing to explain)."""

    def __init__(self):
        self.n, self.residual, self.square, self.sum = 0, 0.0, 0.0, 0.0

    def update(self, recon: torch.Tensor, x: torch.Tensor) -> None:
        x, recon = x.flatten(1).double(), recon.flatten(1).double()
        self.n += len(x)
        self.residual = self.residual + (recon - x).square().sum()
        self.square = self.square + x.square().sum()
        self.sum = self.sum + x.sum(0)

    def value(self) -> float:
        if not self.n:
            return math.nan
        residual, square = float(self.residual), float(self.square)
        total = square - float(torch.as_tensor(self.sum).square().sum()) / self.n  # sum of (x - mean)^2
        return 1.0 - residual / total if total > 1e-12 * max(square, 1.0) else math.nan


def explained_variance(recon: torch.Tensor, x: torch.Tensor) -> float:
    """:class:`ExplainedVariance` of reconstructions ``recon`` of inputs ``x`` (both (B, ...)) in one batch."""
    ev = ExplainedVariance()
    ev.update(recon, x)
    return ev.value()


def top_rows(codes, n: int) -> np.ndarray:
    """For each unit (column of ``codes`` (N, D)), the rows with its ``n`` largest values, largest first (ties:
    the earlier row). Returns (min(n, N), D) row indices."""
    z = codes.detach().float().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    return np.argsort(-z, axis=0, kind="stable")[:n]


def class_purity(codes: torch.Tensor, labels, top: int = PURITY_TOP, threshold: float = ACTIVE_THRESHOLD
                 ) -> torch.Tensor:
    """Each unit's class purity: of its ``top`` largest activations over ``codes`` (N, D) (only where it is active:
    a unit active on 3 samples reads those 3), the share that carry their most common label (``labels`` (N,)
    ints >= 0). Returns (D,) float64 in (0, 1]: 1 when the unit's top samples are all one class, about
    :func:`chance_purity` (0.22 for 20 of ten balanced classes) for a unit blind to the labels; NaN for a unit
    never active."""
    return unit_classes(codes, labels, top, threshold)[0]


def unit_classes(codes: torch.Tensor, labels, top: int = PURITY_TOP, threshold: float = ACTIVE_THRESHOLD
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(purity, majority): :func:`class_purity` (D,) and the most common label of each unit's top activations
    (D,) int64 (the smallest on a tie; -1 for a unit never active)."""
    codes = codes.flatten(1).float().cpu()
    y = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)).long()
    rows = torch.from_numpy(top_rows(codes, top))  # (T, D)
    kept = torch.arange(len(rows))[:, None] < active_mask(codes, threshold).sum(0)[None]  # (T, D): active rows
    counts = torch.zeros(codes.shape[1], int(y.max()) + 1, dtype=torch.float64)  # (D, C)
    counts.scatter_add_(1, y[rows].T, kept.T.double())  # the labels of each unit's kept top rows
    n = kept.sum(0).double()
    best, majority = counts.max(1)
    live = n > 0
    purity = torch.where(live, best / n.clamp_min(1), torch.full_like(n, math.nan))
    return purity, torch.where(live, majority, torch.full_like(majority, -1))


def chance_purity(labels, top: int = PURITY_TOP, draws: int = 2000, seed: int = 0) -> float:
    """The class purity of a unit blind to the labels: the mean, over ``draws`` seeded random sets of ``top`` of
    ``labels`` (N,) (without replacement), of the share of a set that carries its most common label."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    n = min(top, len(y))
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.choice(len(y), size=n, replace=False) for _ in range(draws)])  # (draws, n)
    counts = np.apply_along_axis(np.bincount, 1, y[picks], minlength=int(y.max()) + 1)  # (draws, C)
    return float(counts.max(1).mean() / n)


def mean_class_purity(purity: torch.Tensor) -> float:
    """The mean of :func:`class_purity` over the units that are ever active (NaN when none is)."""
    live = purity[~torch.isnan(purity)]
    return float(live.mean()) if len(live) else math.nan


def sparsity_summary(codes: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> dict:
    """The sparsity keys of ``evaluation.json`` for codes (B, D): l0 (and its older name active_units_mean),
    dead_fraction, mean_log10_feature_density, hoyer, firing_rates (a list of D floats) and active_threshold."""
    codes = codes.flatten(1).float()
    rates = firing_rates(codes, threshold)
    mean_active = l0(codes, threshold)
    return {
        "l0": mean_active,
        "active_units_mean": mean_active,
        "dead_fraction": dead_fraction(codes, threshold),
        "mean_log10_feature_density": mean_log10_feature_density(rates),
        "hoyer": float(hoyer_sparsity(codes).mean()),
        "active_threshold": threshold,
        "firing_rates": [round(r, 6) for r in rates.tolist()],
    }
