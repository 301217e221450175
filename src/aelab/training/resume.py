"""What a run needs to continue exactly where it stopped: the training device's random state, the settings a
resume cannot change, and evaluation that draws its noise from a stream of its own.

- The random state saved with a checkpoint is the CPU generator's and the training GPU's alone
  (``torch.cuda.get_rng_state(device)``): ``get_rng_state_all`` would open a CUDA context on every GPU of the
  machine, from every rank of a distributed run.
- A resume whose settings would change the run's shape is refused with one line naming the flag:
  ``--epochs`` under a cosine or one-cycle schedule (the curve spans the run's epochs), ``--lr-schedule``
  and ``--warmup-epochs`` (the curve itself), ``--seed`` (the shuffles, the validation rows, the pairing of
  multimodal rows), ``--batch-size`` (the step index a checkpoint counts in) and ``--val-fraction`` (which
  training rows are trained on). Extending a constant schedule with more epochs stays allowed.
- Validation and test losses are computed under :func:`fixed_rng`: the same sampling noise and binarization
  every epoch (early stopping compares models, not noise), and the training stream is left where it was.
"""
from __future__ import annotations

import contextlib
import dataclasses

import torch

from ..config import RunConfig
from ..errors import AelabError


# ------------------------------------------------------------------------------------------- random state
def rng_state(device: torch.device) -> dict:
    """The CPU generator's state and, on a CUDA device, that GPU's (no other GPU is touched)."""
    return {"rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng(state: dict, device: torch.device) -> None:
    """Set the generators from :func:`rng_state`'s entries of a checkpoint. A checkpoint of an older aelab
    holds a list with every GPU's state: the training device's entry is taken."""
    torch.set_rng_state(state["rng_torch"].cpu())
    cuda = state.get("rng_cuda")
    if device.type != "cuda" or cuda is None or (isinstance(cuda, (list, tuple)) and not cuda):
        return
    if isinstance(cuda, (list, tuple)):
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= len(cuda):
            return
        cuda = cuda[index]
    torch.cuda.set_rng_state(cuda.cpu(), device)


@contextlib.contextmanager
def fixed_rng(device: torch.device, seed: int):
    """Draw from a generator seeded with ``seed`` inside the block and restore the caller's state after it
    (the CPU's and, on a CUDA device, that GPU's only)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


# ------------------------------------------------------------------------------------------- settings
def check_resume(saved: dict | None, cfg: RunConfig) -> None:
    """Raise a one-line AelabError when resuming a run started with the config ``saved`` (the checkpoint's
    ``config``) under ``cfg`` would change it silently; nothing when ``saved`` is missing (an older file)."""
    if not saved:
        return
    old = _config_of(saved)
    for flag, name, why in _FIXED:
        before, now = getattr(old, name), getattr(cfg, name)
        if before != now:
            raise AelabError(f"{flag} cannot change on resume (the run was started with {_show(before)}, not "
                             f"{_show(now)}): {why}; resume with {flag} {_show(before)} or start a new run in "
                             f"another --out")
    if cfg.lr_schedule != "constant" and old.epochs != cfg.epochs:
        raise AelabError(f"--epochs cannot change on resume under --lr-schedule {cfg.lr_schedule} (the run was "
                         f"started with {old.epochs}, not {cfg.epochs}): the schedule spans the run's epochs, so "
                         f"its curve would bend at the resume; resume with --epochs {old.epochs} or start a new run "
                         f"in another --out")


_FIXED = [  # (flag, RunConfig field, what a change would do)
    ("--seed", "seed", "it sets every epoch's shuffle, the validation rows and the pairing of the data"),
    ("--batch-size", "batch_size", "a checkpoint counts its place in the epoch in batches of this size"),
    ("--lr-schedule", "lr_schedule", "the learning rate would jump to another curve at the resume"),
    ("--warmup-epochs", "warmup_epochs", "the warm-up ramp would change its slope at the resume"),
    ("--val-fraction", "validation_fraction", "it decides which training rows are trained on and which are "
                                              "held out (--patience alone holds out 0.1)"),
    ("--noise", "noise", "the training task (what the input is corrupted with) would change at the resume"),
    ("--normal-classes", "normal_classes", "the rows trained on would change at the resume"),
]


def _config_of(saved: dict) -> RunConfig:
    """A RunConfig of the saved values, unchecked (only the fields this aelab knows)."""
    names = {f.name for f in dataclasses.fields(RunConfig)}
    return RunConfig(**{k: v for k, v in saved.items() if k in names})


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


__all__ = ["check_resume", "fixed_rng", "restore_rng", "rng_state"]
