"""Reconstruction and sparsity metrics as pure functions: the same definitions for every model.

Shapes: ``x`` and ``recon`` are (B, ...) with the same shape; ``codes`` are (B, D), the code the
decoder receives (``model.encode(x)``: the sparse code itself, the posterior mean of a VAE).

Sparsity is defined once, for every model, with one absolute threshold: a unit is *active* on a
sample when ``|z| > ACTIVE_THRESHOLD``. Comparing a dense model by ``|z| < 0.1`` against a sparse
one by ``|sigmoid(z) - 0.5| > 0.4`` compares nothing; these functions are the only definition.
"""
from __future__ import annotations

import math

import torch

ACTIVE_THRESHOLD = 0.01  # a unit is active on a sample when |z| > this (absolute, in code units)
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


def sparsity_summary(codes: torch.Tensor, threshold: float = ACTIVE_THRESHOLD) -> dict:
    """The sparsity keys of ``evaluation.json`` for codes (B, D): active_units_mean, dead_fraction, hoyer,
    firing_rates (a list of D floats) and active_threshold."""
    codes = codes.flatten(1).float()
    return {
        "active_units_mean": float(active_units(codes, threshold).mean()),
        "dead_fraction": dead_fraction(codes, threshold),
        "hoyer": float(hoyer_sparsity(codes).mean()),
        "active_threshold": threshold,
        "firing_rates": [round(r, 6) for r in firing_rates(codes, threshold).tolist()],
    }
