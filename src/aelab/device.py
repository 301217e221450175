"""Which device to compute on: ``"auto"`` (CUDA when present, else the CPU), ``"cpu"``, ``"cuda:1"``, ...;
how many samples a forward pass without gradients takes (:data:`INFERENCE_BATCH`); and how many CPU cores the
process really has (:func:`available_cores`: affinity and cgroup quota, not the machine's count)."""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from .errors import AelabError

# Samples per forward pass wherever aelab runs a model without gradients (evaluation, codes for figures and
# maps, inference): no activations are kept for a backward pass, so a large batch costs little memory (a
# 784-wide float32 batch of 2048 is 6 MiB) and amortises the per-call overhead.
INFERENCE_BATCH = 2048

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs a cgroup quota allows this process (quota / period, e.g. 1.5), or None when no quota is set or
    none can be read: cgroup v2's ``cpu.max`` ("max 100000" = no quota), else v1's ``cpu/cpu.cfs_quota_us``
    over ``cpu/cpu.cfs_period_us`` (-1 = no quota). Read under ``root``, where containers mount their own."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" or not period else _ratio(quota, period)
    quota, period = _read(root / "cpu" / "cpu.cfs_quota_us"), _read(root / "cpu" / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def available_cores(root: Path = CGROUP_ROOT) -> int:
    """Cores this process may run on at once: the least of ``os.cpu_count()``, the CPU affinity mask
    (``taskset``, ``docker --cpuset-cpus``) and the cgroup quota (``docker --cpus``, Kubernetes limits)
    rounded down, at least 1. torch's default thread count reads the machine and oversubscribes a limited
    container: its spinning threads then wait for each other."""
    counts = [os.cpu_count() or 1]
    if hasattr(os, "sched_getaffinity"):  # Linux; macOS and Windows have no affinity mask to read
        counts.append(len(os.sched_getaffinity(0)))
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        counts.append(math.floor(limit))
    return max(1, min(counts))


def training_threads(preferred: int | None = None, root: Path = CGROUP_ROOT) -> int:
    """Intra-op threads for a training run on the CPU: torch's current count, lowered to :func:`available_cores`
    (torch's default counts the machine's cores, not the container's) and to the family's ``preferred`` count (a
    model of small kernels may want fewer threads than cores); never raised, so a caller's lower
    ``torch.set_num_threads`` or ``aelab tour --threads 1`` stands. A user's ``OMP_NUM_THREADS`` wins over both."""
    current = torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS"):
        return current
    if preferred is not None and int(preferred) < 1:
        raise AelabError(f"a family's training_threads must be at least 1 (or None = every core), got {preferred}")
    return max(1, min(current, available_cores(root), int(preferred) if preferred is not None else current))


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
