"""A trainer that knows no model by name: it reads ``output.loss``, logs the named ``output.terms``,
and calls the model's optional ``set_progress(epochs_done)`` hook (for schedules such as KL warm-up).

Fast by design: the dataset lives on the training device, batches are gathers of a seeded
permutation, and losses are summed on the device and read once per epoch (no host sync per step;
the progress bar reads the loss at most twice a second).
"""
from __future__ import annotations

import contextlib
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
from ..device import resolve_device
from ..data.batches import batch_rows, binarize as binarize_batch, iterate_inputs, slice_inputs
from ..data.dataset import Dataset
from ..errors import AelabError, first_line
from ..models.base import eval_mode
from ..io import atomic_torch_save, atomic_write_text, load_latest_checkpoint
from ..runfolder import BEST, CHECKPOINT, METRICS
from . import distributed
from .optim import make_adam  # noqa: F401  (re-exported: the optimizer lives in optim.py)
logger = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written. ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, path: Path):
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint saved in {path}: "
                         f"continue with --resume")


def autocast_context(device: torch.device, precision: str = "auto"):
    """The forward pass's precision: bf16 autocast on a CUDA GPU that supports it (precision "auto" or
    "bf16"), float32 everywhere else. Parameters, gradients and Adam's state stay float32, and the
    losses come out float32: autocast runs ``exp``, ``sum``, ``mse_loss`` and BCE in float32, and the
    targets (float32 images) promote every difference taken against them. No loss scaling is needed:
    bf16 has float32's exponent range. On a CPU (no bf16 units on most) it is a no-op unless asked for."""
    if precision == "fp32" or device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def wants_channels_last(model: torch.nn.Module, device: torch.device) -> bool:
    """Convolution weights in channels-last (NHWC) layout: what cuDNN's tensor-core kernels want on CUDA,
    and what oneDNN's run fastest on a CPU (the conv autoencoder's step: ~15% less time on 2 cores).
    Judged from the parameters (any 4-d weight), not from the model's name."""
    return device.type in ("cuda", "cpu") and any(p.dim() == 4 for p in model.parameters())


ONECYCLE_WARMUP, ONECYCLE_START, ONECYCLE_END = 0.3, 25.0, 1e4  # torch's OneCycleLR defaults


def _cosine(start: float, end: float, progress: float) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def scheduled_lr(cfg: RunConfig, epochs_done: float) -> float:
    """The learning rate after ``epochs_done`` (fractional) epochs: ``cfg.lr`` throughout ("constant");
    half a cosine from ``cfg.lr`` to 0 over ``cfg.epochs`` ("cosine"; Loshchilov & Hutter 2017, without
    restarts); or one cycle ("onecycle"; Smith & Topin 2019, as torch's OneCycleLR: a cosine up from lr/25
    to lr over the first 30% of the run, then down to lr/25/1e4). ``cfg.warmup_epochs`` ramps the constant and
    cosine schedules up linearly from 0. A function of the position alone, so a resumed run follows the same
    curve."""
    progress = epochs_done / cfg.epochs
    if cfg.lr_schedule == "onecycle":
        low = cfg.lr / ONECYCLE_START
        if progress < ONECYCLE_WARMUP:
            return _cosine(low, cfg.lr, progress / ONECYCLE_WARMUP)
        return _cosine(cfg.lr, low / ONECYCLE_END, (progress - ONECYCLE_WARMUP) / (1 - ONECYCLE_WARMUP))
    lr = _cosine(cfg.lr, 0.0, progress) if cfg.lr_schedule == "cosine" else cfg.lr
    if cfg.warmup_epochs and epochs_done < cfg.warmup_epochs:
        lr *= epochs_done / cfg.warmup_epochs
    return lr


def best_epoch(history: list[dict]) -> int | None:
    """The epoch with the lowest validation loss (the first of equals), None without a validation split."""
    scored = [r for r in history if "val_loss" in r]
    return min(scored, key=lambda r: r["val_loss"])["epoch"] if scored else None


def stops_early(history: list[dict], patience: int | None) -> bool:
    """True once ``patience`` epochs have passed without a lower validation loss than the best one's."""
    best = best_epoch(history)
    return patience is not None and best is not None and history[-1]["epoch"] - best >= patience


@dataclass
class _EpochState:
    """Running sums of one epoch, on the device (kept in mid-epoch checkpoints)."""

    step: int
    seen: int
    sums: dict  # term name -> device tensor, sum over samples
    bad_step: torch.Tensor  # first step whose loss was not finite, or -1
    seconds: float


class Trainer:
    """Train ``model`` on ``data`` as ``cfg`` says, writing the run into ``out``.

    Args:
        model: any :class:`aelab.models.Autoencoder` (anything whose forward returns ``.loss``/``.terms``).
        data: a :class:`aelab.data.Dataset`.
        cfg: optimisation settings (epochs, batch_size, lr, weight_decay, seed, device, grad_clip, binarize).
        out: the run folder (checkpoint, metrics.jsonl).
        progress: show a progress bar per epoch.
        log: where one line per epoch goes (default: the ``aelab.training.trainer`` logger at INFO; None: silent).
    """

    def __init__(self, model, data: Dataset, cfg: RunConfig, out: str | Path, progress: bool = True, log=logger.info,
                 rank: int = 0, world_size: int = 1, callbacks=()):
        self.cfg = cfg
        self.out = Path(out)
        self.device = distributed.rank_device(resolve_device(cfg.device), world_size)
        self.model = model.to(self.device)
        if wants_channels_last(self.model, self.device):  # before the optimizer sees the parameters
            self.model.to(memory_format=torch.channels_last)
        self.autocast = lambda: autocast_context(self.device, cfg.precision)
        self.data = data.to(self.device)
        self.val: dict | None = None  # validation rows {modality: tensor}, carved from the training set
        if cfg.validation_fraction > 0:
            self.data, self.val = self.data.split_validation(cfg.validation_fraction, cfg.seed)
        # {modality: rows} from memory or a memory-mapped file; the data side turns uint8 into floats and binarizes
        self.batches = self.data.batch_source(binarize=cfg.binarize)
        self.progress = progress
        self.log = (log if rank == 0 else None) or (lambda *a, **k: None)
        self.rank, self.world_size = rank, world_size
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
        self.callbacks = list(callbacks)  # objects with on_epoch(trainer, record) and/or on_end(trainer)
        self.stopped_early = False

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
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
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
        damaged); False when there is none."""
        found = load_latest_checkpoint(Path(path or self.checkpoint_path), map_location=self.device,
                                       warn=self.log if self.rank == 0 else None, repair=self.rank == 0)
        if found is None:
            return False
        state, path = found
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            for group in self.optimizer.param_groups:  # `--resume --lr X` means X from now on
                group["lr"], group["weight_decay"] = self.cfg.lr, self.cfg.weight_decay
            torch.set_rng_state(state["rng_torch"].cpu())
            if state["rng_cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
            self.epoch = int(state["epoch"])
            self.history = list(state["history"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise AelabError(f"{path} does not fit this model and config ({first_line(exc, 120)}); "
                             f"resume with the run's own config.json") from None
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

    # ------------------------------------------------------------------ training
    def fit(self, until: int | None = None) -> list[dict]:
        """Train from the current state to ``cfg.epochs`` (or to epoch ``until``, for a caller that wants
        the run in pieces: schedules still span ``cfg.epochs``); return the per-epoch history."""
        self.out.mkdir(parents=True, exist_ok=True)
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for s in previous:
                signal.signal(s, self._on_signal)
        except ValueError:  # not the main thread: leave signals alone
            previous = {}
        if self.epoch == 0 and self._partial is None and self.cfg.data_init and not self._data_initialised:
            self.init_from_data()
        try:
            self.stopped_early = bool(self.history) and stops_early(self.history, self.cfg.patience)
            while self.epoch < min(self.cfg.epochs, until or self.cfg.epochs) and not self.stopped_early:
                record = self._run_epoch(self.epoch + 1)
                self.epoch += 1
                self.history.append(record)
                if best_epoch(self.history) == self.epoch:  # before last.pt: a resumed run never lacks it
                    self.save_best()
                self.save_checkpoint()
                self.write_metrics()
                self.log(format_record(record, self.cfg.epochs))
                for callback in self.callbacks:
                    if hasattr(callback, "on_epoch"):
                        callback.on_epoch(self, record)
                if self._stop_signal is not None:  # arrived after the epoch's own check: it is saved, stop
                    raise TrainingInterrupted(self._stop_signal, self.checkpoint_path)
                self.stopped_early = stops_early(self.history, self.cfg.patience)
                if self.stopped_early:
                    self.log(f"early stopping after epoch {self.epoch}: the validation loss has not improved for "
                             f"{self.cfg.patience} epochs; model.pt keeps epoch {best_epoch(self.history)}'s weights")
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        if self.cfg.patience is not None and (self.stopped_early or self.epoch >= self.cfg.epochs):
            self.restore_best()
        for callback in self.callbacks:
            if hasattr(callback, "on_end"):
                callback.on_end(self)
        return self.history

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

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum

    def _run_epoch(self, epoch: int) -> dict:
        cfg, model, source, bs = self.cfg, self.model, self.batches, self.batch_size
        # each rank takes its own shard of the same permutation; bs is its share of the global batch
        order = distributed.shard(source.epoch_order(cfg.seed, epoch), self.rank, self.world_size)
        if self.world_size > 1:
            distributed.seed_rank(cfg.seed, epoch, self.rank)
        steps = math.ceil(len(order) / bs)
        state = self._partial or _EpochState(0, 0, {}, torch.tensor(-1, device=self.device), 0.0)
        self._partial = None
        model.train()
        has_progress = hasattr(model, "set_progress")
        bar = tqdm(total=steps, initial=state.step, desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                   disable=None if self.progress and self.rank == 0 else True, dynamic_ncols=True)
        first, acc, names, step_loss = state.step, None, [], None
        scheduled = cfg.lr_schedule != "constant" or cfg.warmup_epochs > 0
        last_show, t0 = time.perf_counter(), time.perf_counter()
        for i in range(state.step, steps):
            xb = source.take(order[i * bs:(i + 1) * bs])  # {modality: float tensor}, transformed by the data side
            if has_progress:
                model.set_progress(epoch - 1 + i / steps)
            with self.autocast():
                out = self.step_model(xb)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self._after_backward()
            if scheduled:
                for group in self.optimizer.param_groups:  # a Python float: no device work
                    group["lr"] = scheduled_lr(cfg, epoch - 1 + i / steps)
            self.optimizer.step()
            n = batch_rows(xb)
            # the loss and its terms as one vector: two small device ops a step, whatever the terms
            values = torch.stack([out.loss.detach(), *[v.detach() for v in out.terms.values()]])
            if acc is None:
                names = ["loss", *out.terms]
                acc = torch.zeros(len(names), dtype=torch.float64, device=self.device)
                step_loss = torch.zeros(steps, device=self.device)
            acc.add_(values, alpha=n)
            step_loss[i] = values[0]
            loss = values[0]
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
        if acc is not None:  # fold the epoch's vector into the named sums (what checkpoints keep)
            for j, name in enumerate(names):
                state.sums[name] = state.sums.get(name, 0) + acc[j]
            state.bad_step = first_nonfinite(step_loss[first:state.step], first, state.bad_step)
        bad = int(distributed.first_bad_step(state.bad_step, self.world_size).item())
        if bad >= 0:
            raise AelabError(
                f"the loss became NaN or infinite at epoch {epoch}, step {bad + 1}: the learning rate ({cfg.lr:g}) is "
                f"likely too high or the data holds extreme values; lower --lr or pass --grad-clip 1.0 "
                f"(the last good checkpoint, epoch {self.epoch}, is kept in {self.checkpoint_path})")
        if self.world_size > 1:  # a signal on any rank stops them all after this epoch, saved as usual (fit)
            self._stop_signal = distributed.agree_stop(self._stop_signal, self.device)
        elif self._stop_signal is not None and state.step < steps:  # mid-epoch: save where we are and stop
            self.save_checkpoint(partial=state)
            raise TrainingInterrupted(self._stop_signal, self.checkpoint_path)
        # (a signal during the epoch's last step: the epoch is complete, so it is recorded and saved as usual
        # and fit() stops right after)
        sums = self._reduce(state.sums, state.seen)
        record = {"epoch": epoch, "train_loss": sums.pop("loss")}
        record.update({f"train_{k}": v for k, v in sums.items()})
        t_eval = time.perf_counter()
        test = self._test_losses()
        record["test_loss"] = test.pop("loss")
        record.update({f"test_{k}": v for k, v in test.items()})
        if self.val is not None:
            val = self._losses_on(self.val)
            record["val_loss"] = val.pop("loss")
            record.update({f"val_{k}": v for k, v in val.items()})
        record["seconds"] = state.seconds
        record["samples_per_second"] = state.seen * self.world_size / max(state.seconds, 1e-9)
        record["eval_seconds"] = time.perf_counter() - t_eval
        return record

    def _after_backward(self) -> None:
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)

    def _reduce(self, sums: dict, seen: int) -> dict:
        """Per-sample means of the epoch's sums over every rank (one collective, one host read)."""
        names = list(sums)
        values = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=self.device) for k in names]
                             + [torch.tensor(float(seen), dtype=torch.float64, device=self.device)])
        *values, seen = distributed.all_sum(values, self.world_size).tolist()
        return {k: float(v) / max(seen, 1) for k, v in zip(names, values)}

    def _test_losses(self) -> dict:
        """Test means; with several ranks each scores every ``world_size``-th test sample and the sums are
        all-reduced, so every rank records the same numbers."""
        return self._losses_on(self.data.inputs("test"))

    def _losses_on(self, x: dict) -> dict:
        n = batch_rows(x)
        if self.world_size == 1 or n < self.world_size:
            return mean_losses(self.eval_model, x, binarize=self.cfg.binarize)
        part = slice_inputs(x, slice(self.rank, None, self.world_size))
        means = mean_losses(self.eval_model, part, binarize=self.cfg.binarize)
        rows = batch_rows(part)
        return self._reduce({k: v * rows for k, v in means.items()}, rows)


def first_nonfinite(losses: torch.Tensor, offset: int, previous: torch.Tensor) -> torch.Tensor:
    """``previous`` if it already names a step (>= 0), else the index (plus ``offset``) of the first
    non-finite value in ``losses``, else -1; on the device, no host read."""
    bad = ~torch.isfinite(losses)
    here = torch.where(bad.any(), bad.to(torch.uint8).argmax() + offset, -1)
    return torch.where(previous >= 0, previous, here)


def mean_losses(model, x, batch_size: int = 2048, binarize: bool = False) -> dict:
    """Per-sample means of ``loss`` and every named term over ``x`` (a tensor of one modality's rows, named
    as the model reads it, or a mapping ``{modality: rows}``), in large batches, no gradients."""
    if not isinstance(x, dict):
        x = {getattr(model, "modality", "image"): x}
    sums: dict = {}
    with eval_mode(model), torch.inference_mode():
        for xb in iterate_inputs(x, batch_size):
            if binarize:
                xb = binarize_batch(xb)
            out = model(xb)
            n = batch_rows(xb)
            sums["loss"] = sums.get("loss", 0) + out.loss.double() * n
            for k, v in out.terms.items():
                sums[k] = sums.get(k, 0) + v.double() * n
    names = list(sums)
    values = torch.stack([sums[k] for k in names]).tolist()
    return {k: v / batch_rows(x) for k, v in zip(names, values)}


def format_record(rec: dict, epochs: int) -> str:
    val = f"  val {rec['val_loss']:.5g}" if "val_loss" in rec else ""
    return (f"epoch {rec['epoch']:>3}/{epochs}  train {rec['train_loss']:.5g}{val}  test {rec['test_loss']:.5g}  "
            f"{rec['seconds']:.2f} s  {rec['samples_per_second']:,.0f} samples/s")
