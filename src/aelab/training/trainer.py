"""A trainer that knows no model by name: it reads ``output.loss``, logs the named ``output.terms``, calls the
model's optional ``set_progress(epochs_done)`` hook (for schedules such as KL warm-up) and its callbacks' hooks.

Everything the loop does besides training is a callback on one list (:mod:`aelab.training.callbacks`):
checkpoints and ``metrics.jsonl``, the log line, early stopping, the learning-rate schedule and TensorBoard are
built in (as the run's config asks), and a caller's callbacks follow them.

Fast by design: the dataset lives on the training device, batches are gathers of a seeded
permutation, and losses are summed on the device and read once per epoch (no host sync per step;
the progress bar reads the loss at most twice a second).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import RunConfig
from ..device import INFERENCE_BATCH, cpu_threads, resolve_device, training_threads
from ..data.batches import batch_rows, binarize as binarize_batch, iterate_inputs, slice_inputs
from ..data.dataset import Dataset
from ..data.noise import corrupt_batch, noise_for
from ..errors import AelabError, first_line
from ..models.base import eval_mode
from ..io import atomic_torch_save, atomic_write_text, load_latest_checkpoint
from ..runfolder import BEST, CHECKPOINT, METRICS, TENSORBOARD
from . import distributed
from .callbacks import Callback, Checkpoints, EarlyStopping, EpochLog, LRSchedule, best_epoch, is_scheduled
from .callbacks import format_record, scheduled_lr, stops_early  # noqa: F401  (re-exported)
from .optim import make_adam  # noqa: F401  (re-exported: the optimizer lives in optim.py)
from .resume import check_resume, fixed_rng, restore_rng, rng_state
from .tensorboard import TensorBoardLogger

logger = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written. ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, path: Path):
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint saved in {path}: "
                         f"continue with --resume")


# ------------------------------------------------------------------------------------------- precision
def cuda_has_bf16(device: torch.device) -> bool:
    """Whether the GPU ``device`` computes in bf16 natively (compute capability 8.0 on: Ampere, Hopper, ...).
    Emulated bf16, slower than float32 on older GPUs, does not count; the GPU asked is ``device``'s."""
    if not torch.cuda.is_available():
        return False
    with torch.cuda.device(device) if device.index is not None else contextlib.nullcontext():
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch < 2.4: no such argument, and no emulation counted
            return bool(torch.cuda.is_bf16_supported())


def training_precision(device: torch.device, precision: str = "auto", warn=None) -> str:
    """What the forward pass runs in, "bf16" or "fp32": bf16 on a CUDA GPU that has it (precision "auto" or
    "bf16"), and on a CPU only when asked ("bf16"); float32 everywhere else. "bf16" asked of a GPU without bf16
    units: float32, with one line to ``warn``."""
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return "fp32"
    if device.type == "cpu":
        return "bf16" if precision == "bf16" else "fp32"
    if cuda_has_bf16(device):
        return "bf16"
    if precision == "bf16" and warn is not None:
        warn(f"warning: --precision bf16 asked, but {device} has no bf16 units (compute capability 8.0 or more "
             f"needed); training in float32")
    return "fp32"


def autocast_for(device: torch.device, precision: str):
    """A factory of the forward pass's context for a resolved ``precision`` ("bf16": autocast; "fp32": none)."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def autocast_context(device: torch.device, precision: str = "auto", warn=None):
    """The forward pass's precision (see :func:`training_precision`) as a context. Parameters, gradients and
    Adam's state stay float32, and the losses come out float32: autocast runs ``exp``, ``sum``, ``mse_loss``
    and BCE in float32, and the targets (float32 images) promote every difference taken against them. No loss
    scaling is needed: bf16 has float32's exponent range."""
    return autocast_for(device, training_precision(device, precision, warn))()


def wants_channels_last(model: torch.nn.Module, device: torch.device) -> bool:
    """Convolution weights in channels-last (NHWC) layout: what cuDNN's tensor-core kernels want on CUDA,
    and what oneDNN's run fastest on a CPU (the conv autoencoder's step: ~15% less time on 2 cores).
    Judged from the parameters (any 4-d weight), not from the model's name."""
    return device.type in ("cuda", "cpu") and any(p.dim() == 4 for p in model.parameters())


# ------------------------------------------------------------------------------------------- the loop
@dataclass
class _EpochState:
    """Running sums of one epoch, on the device (kept in mid-epoch checkpoints)."""

    step: int
    seen: int
    sums: dict  # term name -> device tensor, sum over samples
    bad_step: torch.Tensor  # first step whose loss was not finite, or -1
    seconds: float


class _LossSums:
    """One pass's losses, on the device: the loss and its terms summed over samples (float64), and each step's
    loss (to name the first non-finite one). Two small device ops a step, whatever the terms; no host read."""

    def __init__(self, steps: int, device: torch.device):
        self.steps, self.device = steps, device
        self.names: list[str] = []
        self.total: torch.Tensor | None = None
        self.per_step: torch.Tensor | None = None

    def add(self, i: int, out, n: int) -> torch.Tensor:
        """Add step ``i``'s output (of ``n`` samples); its loss, on the device."""
        values = torch.stack([out.loss.detach(), *[v.detach() for v in out.terms.values()]])
        if self.total is None:
            self.names = ["loss", *out.terms]
            self.total = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)
            self.per_step = torch.zeros(self.steps, device=self.device)
        self.total.add_(values, alpha=n)
        self.per_step[i] = values[0]
        return values[0]

    def fold_into(self, state: _EpochState, first: int) -> None:
        """Add the sums to ``state`` (what checkpoints keep) and note a non-finite step among ``first``.."""
        if self.total is None:
            return
        for j, name in enumerate(self.names):
            state.sums[name] = state.sums.get(name, 0) + self.total[j]
        state.bad_step = first_nonfinite(self.per_step[first:state.step], first, state.bad_step)


def _silent(*args, **kwargs) -> None:
    pass


def _hook(callback, name: str):
    """``callback``'s method ``name``, or None when it has none (or only :class:`Callback`'s empty one)."""
    method = getattr(callback, name, None)
    if method is None or getattr(type(callback), name, None) is getattr(Callback, name):
        return None
    return method


class Trainer:
    """Train ``model`` on ``data`` as ``cfg`` says, writing the run into ``out``.

    The loop (:meth:`fit`) trains epochs and calls its callbacks' hooks, all optional (see
    :mod:`aelab.training.callbacks`):

    - ``on_train_start(trainer)``: before training; True means the run is already finished.
    - ``on_step_start(epochs_done)``: before every step (the learning-rate schedule).
    - ``on_epoch_end(epoch, metrics)``: after every epoch, with the row just written to ``metrics.jsonl``;
      True stops training after this epoch (the run then ends as by early stopping).
    - ``on_train_end(trainer)``: when :meth:`fit` returns.

    The built-in callbacks come first (``metrics.jsonl`` and checkpoints, the log line, early stopping with
    ``cfg.patience``, the schedule, TensorBoard with ``cfg.tensorboard``), then ``callbacks``. After
    :meth:`fit`, ``stopped_early`` is True when a callback ended the run before its last epoch, and
    ``stop_reason`` says which.

    Args:
        model: any :class:`aelab.models.Autoencoder` (anything whose forward returns ``.loss``/``.terms``).
        data: a :class:`aelab.data.Dataset`.
        cfg: optimisation settings (epochs, batch_size, lr, weight_decay, seed, device, grad_clip, binarize).
        out: the run folder (checkpoint, metrics.jsonl).
        progress: show a progress bar per epoch.
        log: where one line per epoch goes (default: the ``aelab.training.trainer`` logger at INFO; None: silent).
        rank, world_size: this process's place in a distributed run (see :mod:`aelab.training.distributed`).
        callbacks: objects with any of the hooks above, called after the built-in ones.
    """

    def __init__(self, model, data: Dataset, cfg: RunConfig, out: str | Path, progress: bool = True, log=logger.info,
                 rank: int = 0, world_size: int = 1, callbacks=()):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.rank, self.world_size = rank, world_size
        self.log = (log if rank == 0 else None) or _silent
        self.device = distributed.rank_device(resolve_device(cfg.device), world_size)
        self.model = model.to(self.device)
        if wants_channels_last(self.model, self.device):  # before the optimizer sees the parameters
            self.model.to(memory_format=torch.channels_last)
        self.precision = training_precision(self.device, cfg.precision, warn=self.log)
        self.autocast = autocast_for(self.device, self.precision)  # training and evaluation alike
        self.data = data.to(self.device)
        self.val: dict | None = None  # validation rows {modality: tensor}, carved from the training set
        if cfg.validation_fraction > 0:
            self.data, self.val = self.data.split_validation(cfg.validation_fraction, cfg.seed)
        # {modality: rows} from memory or a memory-mapped file; the data side turns uint8 into floats and binarizes
        self.batches = self.data.batch_source(binarize=cfg.binarize)
        # --noise (a denoising autoencoder): every batch's input corrupted afresh on the device, from the training
        # stream, the loss scored against the clean batch; None keeps the plain step
        self.noise = noise_for(cfg.noise, data.bounded) if cfg.noise else None
        if self.noise is not None:
            check_takes_target(model)
        self.batch_size = distributed.check_batch_size(cfg.batch_size, world_size)  # this rank's share
        self.optimizer = make_adam(self.model.parameters(), cfg.lr, cfg.weight_decay)
        self.step_model = torch.compile(self.model) if cfg.compile else self.model
        self.eval_model = self.step_model  # evaluation bypasses DDP: each rank scores its own test shard
        if world_size > 1:  # gradients averaged across ranks inside backward
            self.step_model = distributed.wrap_model(self.model, self.device, compile=cfg.compile)
        self.history: list[dict] = []
        self.epoch = 0  # completed epochs
        self._partial: _EpochState | None = None
        self._stop_signal: int | None = None
        self._data_initialised = False
        self.stopped_early, self.stop_reason = False, None
        callbacks = list(callbacks)
        self.callbacks = [*self.builtin_callbacks(data, callbacks), *callbacks]
        self._step_hooks = [h for h in (_hook(c, "on_step_start") for c in self.callbacks) if h is not None]
        self._model_progress = getattr(self.model, "set_progress", None)  # the model's own schedule (KL warm-up)

    def builtin_callbacks(self, data: Dataset, callbacks=()) -> list:
        """What ``cfg`` asks for, as callbacks: checkpoints and the log line always; early stopping with
        ``patience``; the schedule when the learning rate moves; TensorBoard (rank 0) with ``tensorboard``,
        unless the caller's ``callbacks`` hold a :class:`TensorBoardLogger` already."""
        cfg = self.cfg
        built = [Checkpoints(), EpochLog(self.log, cfg.epochs)]
        if cfg.patience is not None:
            built.append(EarlyStopping(cfg.patience, self.log))
        if is_scheduled(cfg):
            built.append(LRSchedule(cfg))
        if cfg.tensorboard and self.rank == 0 and not any(isinstance(c, TensorBoardLogger) for c in callbacks):
            built.append(TensorBoardLogger(self.out / TENSORBOARD, data))
        return built

    def init_from_data(self, rows: int = 10_000) -> None:
        """Call the model's optional ``init_from_data(x)`` hook (an output bias set from the data's mean)
        with the first ``rows`` training inputs of a shuffled order (the order of epoch 0, which training never
        uses), read in pieces of 500: a memory-mapped source reads a block or two, not the whole file. Done
        once, before the first step of a fresh run; every rank sees the same rows, so the ranks stay identical."""
        self._data_initialised = True
        hook = getattr(self.model, "init_from_data", None)
        if hook is None or len(self.batches) == 0:
            return
        order = self.batches.epoch_order(self.cfg.seed, 0)[:rows]
        parts = [self.batches.take(part, transform=False) for part in order.split(500)]
        hook({k: torch.cat([p[k] for p in parts]) for k in parts[0]})

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def state_dict(self, partial: _EpochState | None = None) -> dict:
        state = {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **rng_state(self.device),  # the CPU's and the training GPU's, no other GPU's
            "history": self.history,
            "config": self.cfg.to_dict(),
            "spec": getattr(self.model, "spec", None),
        }
        if partial is not None:
            state["partial"] = {"step": partial.step, "seen": partial.seen, "seconds": partial.seconds,
                                "sums": {k: v.detach().cpu() for k, v in partial.sums.items()}}
        return state

    def save_checkpoint(self, partial: _EpochState | None = None) -> None:
        if self.rank == 0:
            atomic_torch_save(self.state_dict(partial), self.checkpoint_path, keep_previous=True)

    def load_checkpoint(self, path: Path | None = None) -> bool:
        """Restore from ``path`` (default: the run's last checkpoint, or the one before it when that is
        damaged); False when there is none. A resume whose settings would change the run (see
        :func:`aelab.training.resume.check_resume`) is an AelabError naming the flag."""
        found = load_latest_checkpoint(Path(path or self.checkpoint_path), map_location=self.device,
                                       warn=self.log if self.rank == 0 else None, repair=self.rank == 0)
        if found is None:
            return False
        state, path = found
        check_resume(state.get("config"), self.cfg)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            for group in self.optimizer.param_groups:  # `--resume --lr X` means X from now on
                group["lr"], group["weight_decay"] = self.cfg.lr, self.cfg.weight_decay
            restore_rng(state, self.device)
            self.epoch = int(state["epoch"])
            self.history = list(state["history"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise AelabError(f"{path} does not fit this model and config ({first_line(exc, 120)}); "
                             f"resume with the run's own config.json") from None
        # The checkpoint is the run's record: a kill between writing it and metrics.jsonl (Checkpoints.on_epoch_end)
        # leaves the file an epoch short, and a run resumed at its last epoch would never rewrite it.
        self.write_metrics()
        part = state.get("partial")
        if part:
            sums = {k: v.to(self.device) for k, v in part["sums"].items()}
            self._partial = _EpochState(int(part["step"]), int(part["seen"]), sums,
                                        torch.tensor(-1, device=self.device), float(part["seconds"]))
        return True

    def write_metrics(self) -> None:
        if self.rank == 0:
            text = "".join(json.dumps(rec) + "\n" for rec in self.history)
            atomic_write_text(self.out / METRICS, text)

    def save_best(self) -> None:
        """The weights of the best epoch so far, beside the last checkpoint (atomically)."""
        if self.rank == 0:
            state = {"epoch": self.epoch, "val_loss": self.history[-1]["val_loss"], "model": self.model.state_dict(),
                     "spec": getattr(self.model, "spec", None)}
            atomic_torch_save(state, self.out / BEST)

    def restore_best(self) -> None:
        """Early stopping's end: the model takes the best epoch's weights (every rank reads rank 0's file)."""
        best = best_epoch(self.history)
        if best is None or best == self.epoch:
            return
        distributed.barrier(self.world_size)
        try:
            state = torch.load(self.out / BEST, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
        except (OSError, RuntimeError, KeyError, EOFError) as exc:
            raise AelabError(f"cannot read the best epoch's weights from {self.out / BEST} ({first_line(exc, 120)}); "
                             f"the last epoch's weights are in {self.checkpoint_path}") from None

    # ------------------------------------------------------------------ training
    def fit(self, until: int | None = None) -> list[dict]:
        """Train from the current state to ``cfg.epochs`` (or to epoch ``until``, for a caller that wants
        the run in pieces: schedules still span ``cfg.epochs``); return the per-epoch history."""
        self.out.mkdir(parents=True, exist_ok=True)
        last = min(self.cfg.epochs, until or self.cfg.epochs)
        with self._signals_caught(), self._threads():
            self._start()
            while self.epoch < last and not self.stopped_early:
                metrics = self._run_epoch(self.epoch + 1)
                self.epoch += 1
                self.history.append(metrics)
                asked = self._call("on_epoch_end", self.epoch, dict(metrics))  # files, log, stopping, the caller's
                if self._stop_signal is not None:  # arrived after the epoch's own check: it is saved, stop
                    raise TrainingInterrupted(self._stop_signal, self.checkpoint_path)
                self._stop(asked)
        self._call("on_train_end", self)
        return self.history

    def _threads(self):
        """Intra-op threads while training on the CPU, alone (a distributed rank has its own share): at most the
        cores this process has, and at most what the family asks (its ``training_threads``; a model of small
        kernels wants one, since two spinning OpenMP threads beside another job wait on each other)."""
        if self.device.type != "cpu" or self.world_size > 1:
            return contextlib.nullcontext()
        return cpu_threads(training_threads(getattr(self.model, "training_threads", None)))

    def _start(self) -> None:
        """Before the first step: the data-init hook of a fresh run, then the callbacks' ``on_train_start``."""
        if self.epoch == 0 and self._partial is None and self.cfg.data_init and not self._data_initialised:
            self.init_from_data()
        self.stopped_early, self.stop_reason = False, None
        self._stop(self._call("on_train_start", self))

    def _call(self, hook: str, *args):
        """Call ``hook`` on every callback that has it, in order; the first callback that answered True (asking
        to stop), else None."""
        asked = None
        for callback in self.callbacks:
            method = _hook(callback, hook)
            if method is not None and method(*args) and asked is None:
                asked = callback
        return asked

    def _stop(self, callback) -> None:
        """Record that ``callback`` asked to stop the run (nothing when None)."""
        if callback is not None:
            self.stopped_early = True
            self.stop_reason = f"{type(callback).__name__} stopped the run after epoch {self.epoch}"

    @contextlib.contextmanager
    def _signals_caught(self):
        """SIGINT and SIGTERM only set a flag for the block (the loop saves and stops at the next safe point);
        the previous handlers come back after it."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for s in previous:
                signal.signal(s, self._on_signal)
        except ValueError:  # not the main thread: leave signals alone
            previous = {}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum

    def _run_epoch(self, epoch: int) -> dict:
        """One pass over the training rows (the rest of it after a mid-epoch resume); the epoch's metrics row."""
        order = self._epoch_order(epoch)
        steps = math.ceil(len(order) / self.batch_size)
        state = self._partial or _EpochState(0, 0, {}, torch.tensor(-1, device=self.device), 0.0)
        self._partial = None
        self._train_steps(epoch, order, steps, state)
        self._check_finite(epoch, state)
        self._stop_on_signal(state, steps)
        return self._metrics(epoch, state)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's rows of the epoch in order: its shard of the epoch's seeded permutation (each rank takes
        ``batch_size / world_size`` of every global batch) and, with several ranks, its own random stream."""
        order = distributed.shard(self.batches.epoch_order(self.cfg.seed, epoch), self.rank, self.world_size)
        if self.world_size > 1:
            distributed.seed_rank(self.cfg.seed, epoch, self.rank)
        return order

    def _train_steps(self, epoch: int, order: torch.Tensor, steps: int, state: _EpochState) -> None:
        """Steps ``state.step`` .. ``steps - 1`` of the epoch (fewer when a signal comes, with one process),
        summed on the device into ``state``."""
        bs, first, sums = self.batch_size, state.step, _LossSums(steps, self.device)
        bar = tqdm(total=steps, initial=state.step, desc=f"epoch {epoch}/{self.cfg.epochs}", leave=False,
                   disable=None if self.progress and self.rank == 0 else True, dynamic_ncols=True)
        self.model.train()
        last_show = t0 = time.perf_counter()
        for i in range(state.step, steps):
            xb = self.batches.take(order[i * bs:(i + 1) * bs])  # {modality: float tensor}, transformed by the data side
            n = batch_rows(xb)
            loss = sums.add(i, self._step(xb, epoch - 1 + i / steps), n)
            state.seen += n
            state.step = i + 1
            bar.update(1)
            if self.progress and time.perf_counter() - last_show > 0.5:  # a host read, twice a second at most
                bar.set_postfix(loss=f"{loss.item():.4g}")
                last_show = time.perf_counter()
            if self._stop_signal is not None and self.world_size == 1:  # several ranks stop together (below)
                break
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        state.seconds += time.perf_counter() - t0
        bar.close()
        sums.fold_into(state, first)

    def _step(self, xb: dict, epochs_done: float):
        """One optimizer step on the batch ``xb`` at position ``epochs_done`` of the run; the model's output."""
        for hook in self._step_hooks:  # the learning-rate schedule: Python floats, no device work
            hook(epochs_done)
        if self._model_progress is not None:
            self._model_progress(epochs_done)
        with self.autocast():
            if self.noise is None:
                out = self.step_model(xb)
            else:  # a denoising step: the model reads a corrupted copy and is scored against xb
                out = self.step_model(corrupt_batch(xb, self.noise), target=xb)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return out

    def _check_finite(self, epoch: int, state: _EpochState) -> None:
        """Stop (every rank) at a non-finite loss, naming its epoch and step: one host read an epoch."""
        bad = int(distributed.first_bad_step(state.bad_step, self.world_size).item())
        if bad >= 0:
            raise AelabError(
                f"the loss became NaN or infinite at epoch {epoch}, step {bad + 1}: the learning rate "
                f"({self.cfg.lr:g}) is likely too high or the data holds extreme values; lower --lr or pass "
                f"--grad-clip 1.0 (the last good checkpoint, epoch {self.epoch}, is kept in {self.checkpoint_path})")

    def _stop_on_signal(self, state: _EpochState, steps: int) -> None:
        """After a signal: with one process, mid-epoch, save where the epoch is (a partial checkpoint) and stop;
        in the epoch's last step the epoch is complete, so :meth:`fit` records and saves it and stops after.
        With several ranks, a signal on any rank stops them all after this epoch (saved as usual)."""
        if self.world_size > 1:
            self._stop_signal = distributed.agree_stop(self._stop_signal, self.device)
        elif self._stop_signal is not None and state.step < steps:
            self.save_checkpoint(partial=state)
            raise TrainingInterrupted(self._stop_signal, self.checkpoint_path)

    def _metrics(self, epoch: int, state: _EpochState) -> dict:
        """The epoch's row of ``metrics.jsonl``: training means (over every rank), test and validation means,
        the epoch's speed."""
        record = {"epoch": epoch, **_prefixed("train", self._reduce(state.sums, state.seen))}
        t_eval = time.perf_counter()
        record.update(_prefixed("test", self.evaluate(self.data.inputs("test"))))
        if self.val is not None:
            record.update(_prefixed("val", self.evaluate(self.val)))
        record["seconds"] = state.seconds
        record["samples_per_second"] = state.seen * self.world_size / max(state.seconds, 1e-9)
        record["eval_seconds"] = time.perf_counter() - t_eval
        return record

    def _reduce(self, sums: dict, seen: int) -> dict:
        """Per-sample means of the epoch's sums over every rank (one collective, one host read)."""
        names = list(sums)
        values = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=self.device) for k in names]
                             + [torch.tensor(float(seen), dtype=torch.float64, device=self.device)])
        *values, seen = distributed.all_sum(values, self.world_size).tolist()
        return {k: float(v) / max(seen, 1) for k, v in zip(names, values)}

    def evaluate(self, x: dict) -> dict:
        """Per-sample means of the loss and its terms over the rows ``x`` ({modality: tensor}): at the training
        precision, with the same noise and binarization every epoch (drawn under :func:`fixed_rng`, so early
        stopping compares models rather than draws, and the training stream is left untouched). With several
        ranks each scores every ``world_size``-th row and the sums are all-reduced: every rank gets the same
        numbers."""
        spread = self.world_size > 1 and batch_rows(x) >= self.world_size
        part = slice_inputs(x, slice(self.rank, None, self.world_size)) if spread else x
        with fixed_rng(self.device, self.cfg.seed):
            means = mean_losses(self.eval_model, part, binarize=self.cfg.binarize, autocast=self.autocast,
                                noise=self.noise)
        if not spread:
            return means
        rows = batch_rows(part)
        return self._reduce({k: v * rows for k, v in means.items()}, rows)


def _prefixed(split: str, means: dict) -> dict:
    """``{"loss": .., "recon": ..}`` as ``{"<split>_loss": .., "<split>_recon": ..}`` (the loss first)."""
    return {f"{split}_{k}": v for k, v in means.items()}


def check_takes_target(model) -> None:
    """A denoising run (``--noise``) calls ``model(noisy, target=clean)``: refuse, in one line, a model whose
    forward has no ``target`` argument (a user's model that has not opted in)."""
    if "target" not in inspect.signature(model.forward).parameters:
        raise AelabError(f"--noise needs a model whose forward takes target= (the clean batch the loss scores the "
                         f"reconstruction against); {type(model).__name__}.forward does not: add it, or drop --noise")


def first_nonfinite(losses: torch.Tensor, offset: int, previous: torch.Tensor) -> torch.Tensor:
    """``previous`` if it already names a step (>= 0), else the index (plus ``offset``) of the first
    non-finite value in ``losses``, else -1; on the device, no host read."""
    bad = ~torch.isfinite(losses)
    here = torch.where(bad.any(), bad.to(torch.uint8).argmax() + offset, -1)
    return torch.where(previous >= 0, previous, here)


def mean_losses(model, x, batch_size: int = INFERENCE_BATCH, binarize: bool = False,
                autocast=contextlib.nullcontext, noise=None) -> dict:
    """Per-sample means of ``loss`` and every named term over ``x`` (a tensor of one modality's rows, named
    as the model reads it, or a mapping ``{modality: rows}``), in large batches, no gradients, the forward
    pass inside ``autocast()`` (the trainer passes its training precision's). With ``noise`` (a
    :class:`~aelab.data.noise.Noise`) the model reads corrupted rows and is scored against the clean ones (the
    denoising loss it trains on)."""
    if not isinstance(x, dict):
        x = {getattr(model, "modality", "image"): x}
    sums: dict = {}
    with eval_mode(model), torch.inference_mode(), autocast():
        for xb in iterate_inputs(x, batch_size):
            if binarize:
                xb = binarize_batch(xb)
            out = model(xb) if noise is None else model(corrupt_batch(xb, noise), target=xb)
            n = batch_rows(xb)
            sums["loss"] = sums.get("loss", 0) + out.loss.double() * n
            for k, v in out.terms.items():
                sums[k] = sums.get(k, 0) + v.double() * n
    names = list(sums)
    values = torch.stack([sums[k] for k in names]).tolist()
    return {k: v / batch_rows(x) for k, v in zip(names, values)}
