"""What the machine can do: matrix-multiply throughput, and the bound a model's own step puts on an epoch.

``record_heavy_ops`` watches one training step below autograd and keeps every matrix multiply and
convolution it runs (forward and backward), with the exact shapes, strides and dtypes.
``replay`` runs just those calls back to back on fresh tensors: the time one step would take if
nothing but its matmuls and convolutions cost anything. That is the model's hardware bound here, and
"fraction of peak" is that bound over the measured epoch time (equivalently achieved model FLOP/s
over the replay's FLOP/s). The FLOPs are torch's own count (``torch.utils.flop_counter``).
"""
from __future__ import annotations

import math
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten
HEAVY = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
         aten.convolution.default, aten.convolution_backward.default}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int = 5, min_seconds: float = 0.2) -> float:
    """Median seconds of one call of ``fn`` (calls batched so each timing lasts ``min_seconds``)."""
    fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    once = max(time.perf_counter() - t0, 1e-6)
    inner = max(1, math.ceil(min_seconds / once))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def gemm_gflops(device: torch.device, n: int | None = None, dtype=torch.float32) -> dict:
    """Throughput of one square n x n x n matrix multiply (the machine's headline matmul rate)."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "gflops": 2 * n ** 3 / seconds / 1e9}


class _Spec:
    """A tensor argument, remembered by layout only."""

    def __init__(self, t: torch.Tensor):
        self.shape, self.stride, self.dtype, self.device = tuple(t.shape), t.stride(), t.dtype, t.device

    def make(self) -> torch.Tensor:
        # room for every element the strides reach (stride 0 for an expanded gradient is kept as it is)
        size = 1 + sum((s - 1) * st for s, st in zip(self.shape, self.stride) if s > 0)
        base = torch.randn(max(size, 1), device=self.device).to(self.dtype)
        return base.as_strided(self.shape, self.stride)


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HEAVY:
            spec = lambda a: _Spec(a) if isinstance(a, torch.Tensor) else a  # noqa: E731
            self.calls.append((func, [spec(a) for a in args], {k: spec(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def record_heavy_ops(step) -> list:
    """The matmul and convolution calls ``step()`` makes (one training step: forward and backward)."""
    rec = _Recorder()
    with rec:
        step()
    return rec.calls


def replay(calls: list, device: torch.device) -> dict:
    """Seconds and FLOPs of the recorded calls alone, run back to back; their GFLOP/s is the step's bound."""
    make = lambda a: a.make() if isinstance(a, _Spec) else a  # noqa: E731
    ready = [(f, [make(a) for a in args], {k: make(v) for k, v in kw.items()}) for f, args, kw in calls]

    def run():
        for f, args, kw in ready:
            f(*args, **kw)

    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            run()
        flops = counter.get_total_flops()
        seconds = timed(run, device)
    return {"calls": len(ready), "flops": flops, "seconds": seconds, "gflops": flops / seconds / 1e9}


def step_bound(model, x: torch.Tensor, device: torch.device, autocast=None) -> dict:
    """The heavy ops of one training step of an aelab ``model`` on batch ``x``, replayed: FLOPs per step
    and the seconds they take alone. ``autocast`` is a context factory matching the trainer's."""
    import contextlib

    autocast = autocast or contextlib.nullcontext

    def step():
        with autocast():
            out = model(x)
        out.loss.backward()

    calls = record_heavy_ops(step)
    model.zero_grad(set_to_none=True)
    return replay(calls, device)
