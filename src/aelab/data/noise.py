"""Corruption for denoising autoencoders (Vincent et al. 2008, 2010): the model reads a corrupted input and is
scored against the clean one, so it must learn what the data looks like rather than copy its input.

``--noise KIND:LEVEL`` (``RunConfig.noise``):

- ``gaussian:SIGMA``: additive isotropic Gaussian noise, ``x + SIGMA * N(0, 1)`` per value. For data in
  [0, 1] (images, what a sigmoid output reconstructs) the result is clipped back to [0, 1], as the corrupted
  image would be stored (the Keras and PyTorch denoising tutorials do the same); unbounded features are not
  clipped. Clipping brings the corrupted copy closer to the clean one, so the target a denoiser must beat,
  ``noisy_input_mse``, is the lower, honest one: at sigma 0.5 on black or white pixels (most of MNIST) it is
  about 0.12 per pixel clipped, against sigma squared, 0.25, unclipped.
- ``masking:P``: masking noise, each value set to 0 with probability P (Vincent et al. 2010, section 4.2).
- ``salt-pepper:P``: each value set to 0 or to 1 (one half each) with probability P (ibid.); data in [0, 1] only.

Training draws fresh noise for every batch on the training device from the training stream (the default
generator of the batch's device), so a resumed run draws what the uninterrupted one drew; evaluation passes a
seeded generator for a fixed corrupted copy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import AelabError

KINDS = ("gaussian", "masking", "salt-pepper")
EXAMPLE = "gaussian:0.5, masking:0.3 or salt-pepper:0.2"


@dataclass(frozen=True)
class Noise:
    """A corruption: ``kind`` (one of KINDS) at ``level`` (sigma for gaussian, a probability otherwise).
    ``clip``: gaussian results clipped to [0, 1] (data in [0, 1]); set from the data by the trainer."""

    kind: str
    level: float
    clip: bool = True

    def __str__(self) -> str:
        return f"{self.kind}:{self.level:g}"


def parse_noise(spec: str) -> Noise:
    """``"gaussian:0.5"`` -> Noise("gaussian", 0.5); a malformed spec is a one-line AelabError."""
    kind, sep, level = str(spec).strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS or not sep:
        raise AelabError(f"noise must be KIND:LEVEL with KIND one of {', '.join(KINDS)}, got {spec!r}; e.g. {EXAMPLE}")
    try:
        value = float(level)
    except ValueError:
        raise AelabError(f"the noise level in {spec!r} must be a number; e.g. {EXAMPLE}") from None
    if kind == "gaussian":
        if not (math.isfinite(value) and value > 0):
            raise AelabError(f"gaussian noise needs a standard deviation above 0, got {level.strip()!r}; "
                             f"e.g. gaussian:0.5")
    elif not 0 < value < 1:
        raise AelabError(f"{kind} noise needs a probability strictly between 0 and 1, got {level.strip()!r}; "
                         f"e.g. {kind}:0.3")
    return Noise(kind, value)


def _draw(fn, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``fn(shape)`` (torch.rand or torch.randn) like ``x``: from ``generator`` on its own device (then moved to
    ``x``'s), or from the default stream of ``x``'s device."""
    if generator is None:
        return fn(x.shape, device=x.device, dtype=x.dtype)
    return fn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def corrupt(x: torch.Tensor, noise: Noise, generator: torch.Generator | None = None) -> torch.Tensor:
    """A corrupted copy of float values ``x`` (any shape; ``x`` is left alone). One draw per value, from
    ``generator`` when given (on its device: a CPU generator gives the same copy on every device), else from
    the default stream of ``x``'s device."""
    if noise.kind == "gaussian":
        noisy = x + noise.level * _draw(torch.randn, x, generator)
        return noisy.clamp_(0.0, 1.0) if noise.clip else noisy
    u = _draw(torch.rand, x, generator)
    if noise.kind == "masking":
        return x.masked_fill(u < noise.level, 0.0)
    half = noise.level / 2  # salt-pepper: u < p/2 -> 0 (pepper), p/2 <= u < p -> 1 (salt)
    return torch.where(u < half, torch.zeros_like(x), torch.where(u < noise.level, torch.ones_like(x), x))


def corrupt_batch(batch: dict, noise: Noise, generator: torch.Generator | None = None) -> dict:
    """A batch ``{modality: tensor}`` with every tensor corrupted (a one-modality batch: its one input)."""
    return {k: corrupt(v, noise, generator) for k, v in batch.items()}


def noise_for(spec: str | None, bounded: bool) -> Noise | None:
    """The run's noise for data that is (``bounded``) or is not in [0, 1], or None without ``spec``; salt-pepper
    on unbounded data is a one-line AelabError (0 and 1 mean nothing there)."""
    if not spec:
        return None
    noise = parse_noise(spec)
    if noise.kind == "salt-pepper" and not bounded:
        raise AelabError("salt-pepper noise sets values to 0 or 1 and needs data in [0, 1]; use --noise gaussian:SIGMA "
                         "or masking:P for unbounded features")
    return Noise(noise.kind, noise.level, clip=bounded)


__all__ = ["KINDS", "Noise", "corrupt", "corrupt_batch", "noise_for", "parse_noise"]
