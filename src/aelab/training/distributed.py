"""Multi-process training on ``torch.distributed``: one process per device, launched by ``torchrun``.

``torchrun --nproc-per-node N -m aelab train ...`` starts N copies of aelab with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` set; :func:`session` reads them and joins the
process group (gloo for CPU tensors, NCCL for CUDA tensors). The semantics every part relies on:

- ``batch_size`` is the *global* batch: each optimizer step sees ``batch_size`` samples in all, and
  each of the N ranks takes ``batch_size / N`` of them (:func:`shard`), so a run on N processes
  follows the same optimisation path as one process with the same batch size (up to the order of
  float sums).
- Every rank draws the same epoch permutation (a pure function of seed and epoch) and takes its
  strided shard; gradients are averaged by DistributedDataParallel; metric sums are all-reduced.
- Only rank 0 writes files. Every collective has a timeout (``$AELAB_DIST_TIMEOUT`` seconds,
  default 300): a rank that dies or hangs makes the others fail with a clear error, never hang.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..data.batches import epoch_seed
from ..device import available_cores
from ..errors import AelabError, first_line

TIMEOUT_ENV = "AELAB_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and on its node (``local_rank``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    owns_group: bool = False  # this module started the process group, so it also ends it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0


def env_context() -> DistContext:
    """The rank and world size that torchrun (or any launcher using its variables) gave this process."""
    def read(name: str, default: int) -> int:
        value = os.environ.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise AelabError(f"environment variable {name}={value!r} is not an integer; launch with torchrun "
                             f"or unset it") from None

    world = read("WORLD_SIZE", 1)
    rank = read("RANK", 0)
    local_rank = read("LOCAL_RANK", rank)
    local_world = read("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world:
        raise AelabError(f"RANK={rank} does not fit WORLD_SIZE={world}; launch with torchrun, which sets both")
    return DistContext(rank, world, local_rank, local_world)


def timeout_seconds() -> float:
    """The collective timeout: ``$AELAB_DIST_TIMEOUT`` seconds, else 300."""
    value = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise AelabError(f"{TIMEOUT_ENV}={value!r} must be a positive number of seconds, like 300")
    return seconds


def init(ctx: DistContext | None = None) -> DistContext:
    """Join the process group described by the environment; a no-op for a single process.

    gloo serves CPU tensors and NCCL (when CUDA is present) CUDA tensors, so one group fits
    ``--device cpu`` and GPU training alike. Each process on a node gets GPU ``LOCAL_RANK`` and
    ``available_cores() / LOCAL_WORLD_SIZE`` torch threads (the cores the affinity mask and cgroup quota
    allow; unless ``OMP_NUM_THREADS`` says otherwise), so N ranks on one machine do not fight over its cores.
    """
    ctx = ctx or env_context()
    if not ctx.enabled:
        return ctx
    if dist.is_initialized():  # the caller runs its own group (its own torchrun script): use it, leave it
        if dist.get_world_size() != ctx.world_size:
            raise AelabError(f"a process group of {dist.get_world_size()} ranks is running but WORLD_SIZE is "
                             f"{ctx.world_size}; start aelab from the launcher that set the group up")
        return ctx
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, available_cores() // max(1, ctx.local_world_size)))
    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    if cuda and ctx.local_rank < torch.cuda.device_count():
        torch.cuda.set_device(ctx.local_rank)
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var):
            raise AelabError(f"WORLD_SIZE={ctx.world_size} but {var} is not set; launch with "
                             f"torchrun --nproc-per-node N -m aelab train ...")
    try:
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo",
                                timeout=timedelta(seconds=timeout_seconds()))
    except dist.DistError as exc:
        raise AelabError(f"rank {ctx.rank} could not join the process group at {os.environ['MASTER_ADDR']}:"
                         f"{os.environ['MASTER_PORT']} ({first_line(exc, 200)}); check that every rank started and "
                         f"that the address is reachable") from None
    return replace(ctx, owns_group=True)


@contextmanager
def session():
    """Join the process group for the length of a run, and leave it; collective failures (a rank that
    died or stopped answering) become one clear :class:`AelabError`."""
    ctx = init()
    try:
        yield ctx
    except RuntimeError as exc:  # dist.DistError is a RuntimeError
        if not (ctx.enabled and is_collective_failure(exc)):
            raise
        raise AelabError(f"rank {ctx.rank} of {ctx.world_size} stopped: another rank died or stopped answering "
                         f"within {timeout_seconds():g} s ({first_line(exc, 200)}); see that rank's output, fix it, "
                         f"then continue with --resume") from None
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


# gloo reports a lost peer as a plain RuntimeError; these words tell it from a bug in the program
_COLLECTIVE_WORDS = ("gloo", "nccl", "c10d", "processgroup", "connection closed", "connection reset",
                     "timed out", "timeout")


def is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says a collective failed (a peer died, hung or became unreachable)."""
    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(word in text for word in _COLLECTIVE_WORDS)


# ------------------------------------------------------------------------------------------ placement
def rank_device(device: torch.device, world_size: int) -> torch.device:
    """With several processes, ``cuda`` (or ``cuda:K``) means this rank's own GPU, ``LOCAL_RANK``."""
    if world_size > 1 and device.type == "cuda":
        ctx, count = env_context(), torch.cuda.device_count()
        if ctx.local_rank >= count:
            raise AelabError(f"{ctx.local_world_size} processes on this node but {count} GPU(s); start one "
                             f"process per GPU (torchrun --nproc-per-node {count}) or train with --device cpu")
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap_model(model: torch.nn.Module, device: torch.device, compile: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (gradients averaged across ranks during backward);
    compiled outside the wrapper, as DDP's graph-break optimisation expects."""
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(ddp) if compile else ddp


def check_batch_size(batch_size: int, world_size: int) -> int:
    """The per-rank batch: the global ``batch_size`` split evenly over the ranks."""
    if batch_size % world_size:
        lower = max(world_size, batch_size - batch_size % world_size)
        raise AelabError(f"--batch-size {batch_size} is the global batch and does not split evenly over "
                         f"{world_size} processes; use a multiple of {world_size}, like {lower}")
    return batch_size // world_size


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's part of an epoch's ``order``: every ``world_size``-th sample from ``rank`` on.

    The order is first cut to a multiple of ``world_size`` (at most ``world_size - 1`` samples, the
    last of this epoch's shuffle, sit the epoch out), so every rank takes as many steps with as many
    samples as the others, and step ``i`` of rank ``r`` holds the samples ``r, r + N, ...`` of the
    single-process batch ``i``.
    """
    if world_size == 1:
        return order
    usable = len(order) - len(order) % world_size
    return order[rank:usable:world_size]


def seed_rank(seed: int, epoch: int, rank: int) -> None:
    """Give each rank its own random stream for an epoch (sampling noise, binarisation): the same
    stream on every rank would draw the same noise for different samples."""
    torch.manual_seed(epoch_seed(seed, epoch) * 7919 + int(rank) + 1)


# ------------------------------------------------------------------------------------------ collectives
def barrier(world_size: int) -> None:
    """Wait until every rank gets here (a file rank 0 wrote is then there for all); nothing with one process."""
    if world_size > 1:
        dist.barrier()


def all_sum(values: torch.Tensor, world_size: int) -> torch.Tensor:
    """``values`` summed over every rank (in place; returned for convenience)."""
    if world_size > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def first_bad_step(bad_step: torch.Tensor, world_size: int) -> torch.Tensor:
    """The earliest step at which any rank saw a non-finite loss (-1 when none did), so that every
    rank stops together instead of one stopping and the others waiting for it."""
    if world_size == 1:
        return bad_step
    big = torch.iinfo(torch.int64).max
    flag = torch.where(bad_step < 0, big, bad_step).to(torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return torch.where(flag == big, -1, flag)


def agree_stop(signum: int | None, device: torch.device) -> int | None:
    """The stop signal any rank received (None when none did): ranks stop together, at the same step,
    or a rank still inside a step would wait for the others' gradients until the timeout."""
    flag = torch.tensor(signum or 0, dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def from_rank0(ctx: DistContext, fn, *args, **kwargs):
    """Run ``fn`` on rank 0 alone and hand its result (or its AelabError) to every rank: the decisions
    about the run folder (its name, whether to resume, the saved config) are made once."""
    if not ctx.enabled:
        return fn(*args, **kwargs)
    outcome = [None]
    if ctx.is_main:
        try:
            outcome[0] = ("ok", fn(*args, **kwargs))
        except AelabError as exc:
            outcome[0] = ("error", str(exc))
    dist.broadcast_object_list(outcome, src=0, device=torch.device("cpu"))
    kind, value = outcome[0]
    if kind == "error":
        raise AelabError(value)
    return value


def check_same(ctx: DistContext, values: list[int], device: torch.device, what: str) -> None:
    """Raise on every rank unless all ranks hold the same ``values`` (e.g. the epoch they resume after)."""
    if not ctx.enabled:
        return
    lo = torch.tensor(values, dtype=torch.int64, device=device)
    hi = lo.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise AelabError(f"the ranks disagree on {what} (from {lo.tolist()} to {hi.tolist()}); put --out on a "
                         f"filesystem every node sees, so that every rank reads the same checkpoint")


__all__ = ["DEFAULT_TIMEOUT_S", "DistContext", "TIMEOUT_ENV", "agree_stop", "all_sum", "check_batch_size",
           "check_same", "env_context", "first_bad_step", "from_rank0", "init", "is_collective_failure",
           "rank_device", "seed_rank", "session", "shard", "timeout_seconds", "wrap_model"]
