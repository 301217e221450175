"""Runs: train a model into a run folder, open a finished run. The Python face of ``aelab train``.

A run folder holds ``config.json`` (enough to rebuild the run), ``metrics.jsonl`` (one line per
epoch), ``checkpoints/last.pt`` (model, optimizer, RNG states, epoch), ``model.pt`` (final weights),
and, unless ``report=False``, ``evaluation.json``, the figures (``loss.png``, ``reconstructions.png``,
``latent.png``, ...) and ``report.html``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import FORMAT_VERSION, RunConfig, default_out
from .data.datasets import Dataset, load_dataset
from .errors import AelabError
from .models.base import Autoencoder
from .registry import build_model, load_model, model_kwargs_from_config, save_model
from .training import distributed
from .training.checkpoint import load_checkpoint
from .training.trainer import CHECKPOINT, Trainer

CONFIG = "config.json"
METRICS = "metrics.jsonl"
MODEL = "model.pt"


@dataclass
class Run:
    """A run folder and what is in it."""

    path: Path
    config: RunConfig
    history: list[dict] = field(default_factory=list)
    model: Autoencoder | None = None

    @property
    def last(self) -> dict:
        """The final epoch's metrics."""
        return self.history[-1] if self.history else {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, model={self.config.model!r}, epochs={len(self.history)})"


def train(model: Autoencoder | str | None = None, data: Dataset | str | None = None, *,
          out: str | Path | None = None, resume: bool = False, config: RunConfig | None = None,
          progress: bool = True, log=print, **settings) -> Run:
    """Train ``model`` on ``data`` into the run folder ``out`` and return the finished :class:`Run`.

    ``model`` is a built model or a registry name; ``data`` a :class:`Dataset` or a dataset name.
    ``settings`` are :class:`RunConfig` fields (epochs=10, lr=1e-3, ...). With ``resume=True`` an
    existing run in ``out`` continues from its last checkpoint. Started by ``torchrun``, every process
    calls this and trains its shard with DistributedDataParallel; rank 0 alone writes the run folder
    (see :mod:`aelab.training.distributed`).
    """
    with distributed.session() as dist:
        return _train(model, data, dist, out=out, resume=resume, config=config, progress=progress, log=log,
                      **settings)


def _settle_folder(cfg: RunConfig, settings: dict, resume: bool) -> RunConfig:
    """Choose the run folder and, when resuming, merge its saved config (rank 0 decides for all)."""
    run_dir = Path(cfg.out) if cfg.out else default_out(cfg)
    cfg.out = str(run_dir)
    existing = run_dir / CONFIG
    if run_dir.exists() and not run_dir.is_dir():
        raise AelabError(f"{run_dir} is a file, not a run folder; choose another --out")
    if resume and not existing.is_file() and run_dir.is_dir() and any(run_dir.iterdir()):
        raise AelabError(f"{run_dir} is not a run folder (no {CONFIG}) so there is nothing to resume; "
                         f"check --out, or start a new run in an empty folder")
    if existing.is_file() and not resume:
        raise AelabError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if resume and existing.is_file():
        saved = RunConfig.load(existing)
        changed = {k: v for k, v in settings.items() if k not in ("out",)}
        cfg = RunConfig.from_dict({**saved.to_dict(), **changed, "out": str(run_dir)}, source="settings")
    return cfg


def _train(model, data, dist: distributed.DistContext, *, out, resume, config, progress, log, **settings) -> Run:
    cfg = RunConfig(**(config.to_dict() if config else {}))
    if isinstance(model, str):
        settings["model"] = model
    if isinstance(data, str):
        settings["dataset"] = data
    if out is not None:
        settings["out"] = str(out)
    if isinstance(model, Autoencoder):
        spec = getattr(model, "spec", None) or {}
        settings.setdefault("model", spec.get("name", model.name))
        for key, value in spec.get("kwargs", {}).items():
            if hasattr(cfg, key) and key != "output":
                settings.setdefault(key, value)
    if isinstance(data, Dataset):
        settings.setdefault("dataset", data.name)
    cfg = RunConfig.from_dict({**cfg.to_dict(), **settings}, source="settings")
    cfg = distributed.from_rank0(dist, _settle_folder, cfg, settings, resume)
    run_dir = Path(cfg.out)
    log = log if dist.is_main else None

    if not isinstance(data, Dataset):
        data = load_dataset(cfg.dataset, cfg.data_dir)
    if not isinstance(model, Autoencoder):
        torch.manual_seed(cfg.seed)
        try:
            model = build_model(cfg.model, data.input_shape, **model_kwargs_from_config(cfg, data.bounded))
        except (RuntimeError, MemoryError) as exc:  # torch's allocator fails with a RuntimeError
            if not isinstance(exc, MemoryError) and "alloc" not in str(exc):
                raise
            raise AelabError(f"the {cfg.model} model does not fit in memory (latent_dim {cfg.latent_dim}, hidden_dims "
                             f"{cfg.hidden_dims}); choose smaller --hidden-dims or --latent-dim") from None
    else:
        model.check_input(data.x_test[:1].float())
    if cfg.loss == "bce" or getattr(model, "loss_kind", None) == "bce":
        if not data.bounded:
            raise AelabError(f"the bce loss needs data in [0, 1] but {data.name} is not; use --loss mse")

    if dist.is_main:  # rank 0 alone writes the run folder
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AelabError(f"cannot create the run folder {run_dir} ({exc.strerror or exc}); "
                             f"choose another --out") from None
        cfg.save(run_dir / CONFIG)
    torch.manual_seed(cfg.seed + 1)  # the stream for sampling noise and binarization, separate from init
    trainer = Trainer(model, data, cfg, run_dir, progress=progress, log=log, rank=dist.rank,
                      world_size=dist.world_size)
    if resume and trainer.load_checkpoint():
        if log:
            log(f"resuming {run_dir} after epoch {trainer.epoch}")
    partial_step = trainer._partial.step if trainer._partial else 0
    distributed.check_same(dist, [trainer.epoch, partial_step], trainer.device, "the checkpoint to resume from")
    trainer.fit()
    result = Run(run_dir, cfg, trainer.history, model)
    if dist.is_main:
        save_model(model, run_dir / MODEL)
        if cfg.report:
            write_figures(result, data, log=log)
    return result


def write_figures(run: Run, data: Dataset, log=None) -> list[Path]:
    """The end of training: every figure that applies to the run, its evaluation and ``report.html``.

    Kept to seconds: the latent map is a t-SNE of 500 test codes here (``aelab report RUN`` draws
    the full one). Returns the paths written, the report last.
    """
    from .viz.report import write_run_report
    from .viz.run_figures import TRAIN_END, write_run_figures

    paths = list(write_run_figures(run, data, **TRAIN_END).values())
    paths.append(write_run_report(run, data, redraw=False, progress=False, log=None))
    if log:
        log(f"report: {paths[-1]}")
    return paths


def open_run(path: str | Path, map_location="cpu") -> Run:
    """Open a finished (or interrupted) run folder: config, metrics, and the model's latest weights."""
    path = Path(path)
    if not path.is_dir():
        raise AelabError(f"{path} is not a folder; give the path of a run folder made by aelab train")
    if not (path / CONFIG).is_file():
        raise AelabError(f"{path} is not a run folder (no {CONFIG}); give the folder aelab train wrote")
    cfg = RunConfig.load(path / CONFIG)
    history = []
    if (path / METRICS).is_file():
        for i, line in enumerate((path / METRICS).read_text().splitlines()):
            try:
                history.append(json.loads(line))
            except json.JSONDecodeError:
                raise AelabError(f"{path / METRICS} line {i + 1} is not valid JSON; the file is damaged") from None
    if (path / MODEL).is_file():
        model = load_model(path / MODEL, map_location=map_location)
    elif (path / CHECKPOINT).is_file():
        state = load_checkpoint(path / CHECKPOINT, map_location=map_location)
        spec = state.get("spec")
        if not spec:
            raise AelabError(f"{path / CHECKPOINT} has no model spec; it was not written by this aelab")
        model = build_model(spec["name"], spec["input_shape"], **spec["kwargs"])
        model.load_state_dict(state["model"])
        model.eval()
    else:
        raise AelabError(f"{path} holds no weights yet ({MODEL} or {CHECKPOINT}); train it first")
    return Run(path, cfg, history, model)


__all__ = ["CONFIG", "FORMAT_VERSION", "METRICS", "MODEL", "Run", "open_run", "train",
           "write_figures"]
