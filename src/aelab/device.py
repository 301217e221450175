"""Which device to compute on: ``"auto"`` (CUDA when present, else the CPU), ``"cpu"``, ``"cuda:1"``, ...;
and how many samples a forward pass without gradients takes (:data:`INFERENCE_BATCH`)."""
from __future__ import annotations

import contextlib

import torch
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from .errors import AelabError

# Samples per forward pass wherever aelab runs a model without gradients (evaluation, codes for figures and
# maps, inference): no activations are kept for a backward pass, so a large batch costs little memory (a
# 784-wide float32 batch of 2048 is 6 MiB) and amortises the per-call overhead.
INFERENCE_BATCH = 2048


@contextlib.contextmanager
def cpu_threads(n: int):
    """For the ``with`` block: ``n`` threads per operation in torch and in every BLAS/OpenMP pool; the caller's
    torch setting afterwards (also after an error). Small models on a shared 2-core machine run fastest on one."""
    if n < 1:
        raise AelabError(f"--threads must be at least 1, got {n}")
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(previous)


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
