"""Loss terms as pure functions. Shapes: x and logits (B, ...) with the same shape; codes (B, D)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, kind: str, output: str = "sigmoid",
                        per_sample_sum: bool = False) -> torch.Tensor:
    """Reconstruction error of decoder output ``logits`` (before the output function) against ``x``.

    kind "mse": squared error of ``output(logits)``; "bce": binary cross-entropy computed from the
    logits (numerically stable, requires targets in [0, 1]). By default the mean over every value
    (per pixel); with ``per_sample_sum`` summed over each sample, then averaged over the batch
    (per image, as in the ELBO of Kingma & Welling 2014, appendix C.1).
    """
    if kind == "bce":
        err = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif kind == "mse":
        pred = torch.sigmoid(logits) if output == "sigmoid" else logits
        err = (pred - x).square()
    else:
        raise ValueError(f"unknown reconstruction loss {kind!r}; use 'mse' or 'bce'")
    if per_sample_sum:
        return err.flatten(1).sum(1).mean()
    return err.mean()
