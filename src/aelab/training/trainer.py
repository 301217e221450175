"""A trainer that knows no model by name: it reads ``output.loss``, logs the named ``output.terms``,
and calls the model's optional ``set_progress(epochs_done)`` hook (for schedules such as KL warm-up).

Fast by design: the dataset lives on the training device, batches are gathers of a seeded
permutation, and losses are summed on the device and read once per epoch (no host sync per step;
the progress bar reads the loss at most twice a second).
"""
from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import RunConfig
from ..data.batches import as_float, epoch_permutation, iterate_batches
from ..data.datasets import Dataset
from ..errors import AelabError
from .checkpoint import atomic_torch_save, atomic_write_text, load_checkpoint

CHECKPOINT = Path("checkpoints") / "last.pt"


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written. ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, path: Path):
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint saved in {path}: "
                         f"continue with --resume")


def make_adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all parameters; CUDA, and CPU since torch 2.4):
    on this 2-core CPU it takes the optimizer step of the dense model from ~2 ms to ~0.5 ms."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch or a device without the fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AelabError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AelabError(f"device '{name}' asked for but CUDA is not available here; use --device cpu")
    return device


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
        log: where one line per epoch goes (``print`` by default; ``None`` for silence).
    """

    def __init__(self, model, data: Dataset, cfg: RunConfig, out: str | Path, progress: bool = True, log=print,
                 rank: int = 0, world_size: int = 1):
        self.cfg = cfg
        self.out = Path(out)
        self.device = resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.data = data.to(self.device)
        self.progress = progress
        self.log = log or (lambda *a, **k: None)
        self.rank, self.world_size = rank, world_size
        self.optimizer = make_adam(self.model.parameters(), cfg.lr, cfg.weight_decay)
        self.step_model = torch.compile(self.model) if cfg.compile else self.model
        self.history: list[dict] = []
        self.epoch = 0  # completed epochs
        self._partial: _EpochState | None = None
        self._stop_signal: int | None = None

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
            atomic_torch_save(self.state_dict(partial), self.checkpoint_path)

    def load_checkpoint(self, path: Path | None = None) -> bool:
        """Restore from ``path`` (default: the run's last checkpoint); False when there is none."""
        path = Path(path or self.checkpoint_path)
        if not path.is_file():
            return False
        state = load_checkpoint(path, map_location=self.device)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng_torch"].cpu())
            if state["rng_cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
            self.epoch = int(state["epoch"])
            self.history = list(state["history"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise AelabError(f"{path} does not fit this model and config ({str(exc).splitlines()[0][:120]}); "
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
            atomic_write_text(self.out / "metrics.jsonl", text)

    # ------------------------------------------------------------------ training
    def fit(self) -> list[dict]:
        """Train from the current state to ``cfg.epochs``; return the per-epoch history."""
        self.out.mkdir(parents=True, exist_ok=True)
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for s in previous:
                signal.signal(s, self._on_signal)
        except ValueError:  # not the main thread: leave signals alone
            previous = {}
        try:
            while self.epoch < self.cfg.epochs:
                record = self._run_epoch(self.epoch + 1)
                self.epoch += 1
                self.history.append(record)
                self.save_checkpoint()
                self.write_metrics()
                self.log(format_record(record, self.cfg.epochs))
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        return self.history

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum

    def _run_epoch(self, epoch: int) -> dict:
        cfg, model, x = self.cfg, self.model, self.data.x_train
        order = epoch_permutation(len(x), cfg.seed, epoch, self.device)
        if self.world_size > 1:  # each rank takes its own shard of the same permutation
            order = order[self.rank::self.world_size]
        steps = math.ceil(len(order) / cfg.batch_size)
        state = self._partial or _EpochState(0, 0, {}, torch.tensor(-1, device=self.device), 0.0)
        self._partial = None
        model.train()
        has_progress = hasattr(model, "set_progress")
        bar = tqdm(total=steps, initial=state.step, desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                   disable=None if self.progress and self.rank == 0 else True, dynamic_ncols=True)
        last_show, t0 = time.perf_counter(), time.perf_counter()
        for i in range(state.step, steps):
            xb = as_float(x.index_select(0, order[i * cfg.batch_size:(i + 1) * cfg.batch_size]))
            if cfg.binarize:
                xb = torch.bernoulli(xb)
            if has_progress:
                model.set_progress(epoch - 1 + i / steps)
            out = self.step_model(xb)
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self._after_backward()
            self.optimizer.step()
            n = xb.shape[0]
            loss = out.loss.detach()
            state.sums["loss"] = state.sums.get("loss", 0) + loss * n
            for name, value in out.terms.items():
                state.sums[name] = state.sums.get(name, 0) + value.detach() * n
            state.bad_step = torch.where((state.bad_step < 0) & ~torch.isfinite(loss), i, state.bad_step)
            state.seen += n
            state.step = i + 1
            bar.update(1)
            if self.progress and time.perf_counter() - last_show > 0.5:  # a host read, twice a second at most
                bar.set_postfix(loss=f"{loss.item():.4g}")
                last_show = time.perf_counter()
            if self._stop_signal is not None:
                break
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        state.seconds += time.perf_counter() - t0
        bar.close()
        bad = int(state.bad_step.item())
        if bad >= 0:
            raise AelabError(
                f"the loss became NaN or infinite at epoch {epoch}, step {bad + 1}: the learning rate ({cfg.lr:g}) is "
                f"likely too high or the data holds extreme values; lower --lr or pass --grad-clip 1.0 "
                f"(the last good checkpoint, epoch {self.epoch}, is kept in {self.checkpoint_path})")
        if self._stop_signal is not None:
            self.save_checkpoint(partial=state if state.step < steps else None)
            if state.step >= steps:  # the epoch happened to be complete: record it properly
                self._partial = None
            raise TrainingInterrupted(self._stop_signal, self.checkpoint_path)
        sums = self._reduce(state.sums, state.seen)
        record = {"epoch": epoch, "train_loss": sums.pop("loss")}
        record.update({f"train_{k}": v for k, v in sums.items()})
        t_eval = time.perf_counter()
        test = mean_losses(self.step_model, self.data.x_test, binarize=cfg.binarize)
        record["test_loss"] = test.pop("loss")
        record.update({f"test_{k}": v for k, v in test.items()})
        record["seconds"] = state.seconds
        record["samples_per_second"] = state.seen * self.world_size / max(state.seconds, 1e-9)
        record["eval_seconds"] = time.perf_counter() - t_eval
        return record

    def _after_backward(self) -> None:
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)

    def _reduce(self, sums: dict, seen: int) -> dict:
        """Per-sample means of the epoch's sums (one host read for all of them)."""
        names = list(sums)
        values = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=self.device) for k in names])
        return {k: float(v) / max(seen, 1) for k, v in zip(names, values.tolist())}


def mean_losses(model, x: torch.Tensor, batch_size: int = 2048, binarize: bool = False) -> dict:
    """Per-sample means of ``loss`` and every named term over ``x``, in large batches, no gradients."""
    was_training = model.training
    model.eval()
    sums: dict = {}
    with torch.inference_mode():
        for xb in iterate_batches(x, batch_size):
            if binarize:
                xb = torch.bernoulli(xb)
            out = model(xb)
            n = xb.shape[0]
            sums["loss"] = sums.get("loss", 0) + out.loss.double() * n
            for k, v in out.terms.items():
                sums[k] = sums.get(k, 0) + v.double() * n
    model.train(was_training)
    names = list(sums)
    values = torch.stack([sums[k] for k in names]).tolist()
    return {k: v / len(x) for k, v in zip(names, values)}


def format_record(rec: dict, epochs: int) -> str:
    return (f"epoch {rec['epoch']:>3}/{epochs}  train {rec['train_loss']:.5g}  test {rec['test_loss']:.5g}  "
            f"{rec['seconds']:.2f} s  {rec['samples_per_second']:,.0f} samples/s")
