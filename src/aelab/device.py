"""Which device to compute on: ``"auto"`` (CUDA when present, else the CPU), ``"cpu"``, ``"cuda:1"``, ...;
and how many samples a forward pass without gradients takes (:data:`INFERENCE_BATCH`)."""
from __future__ import annotations

import torch

from .errors import AelabError

# Samples per forward pass wherever aelab runs a model without gradients (evaluation, codes for figures and
# maps, inference): no activations are kept for a backward pass, so a large batch costs little memory (a
# 784-wide float32 batch of 2048 is 6 MiB) and amortises the per-call overhead.
INFERENCE_BATCH = 2048


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a ``--device`` value; an unknown or unavailable one is an AelabError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AelabError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AelabError(f"device '{name}' asked for but CUDA is not available here; use --device cpu")
    return device
