"""The run folder: its layout, opening a finished (or interrupted) run, choosing a fresh folder.

A run folder holds ``config.json`` (enough to rebuild the run), ``metrics.jsonl`` (one line per
epoch), ``checkpoints/last.pt`` (model, optimizer, RNG states, epoch), ``model.pt`` (final weights),
and, unless the run was trained with ``report=False``, ``evaluation.json``, the figures and ``report.html``.
This layer knows files, not training: the trainer, evaluation and reports all build on it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import FORMAT_VERSION, RunConfig, default_out
from .data import Dataset
from .data.multimodal import find_fsdd
from .errors import AelabError
from .io import load_checkpoint
from .registry import load_model, model_class, model_from_spec

CONFIG = "config.json"
METRICS = "metrics.jsonl"
MODEL = "model.pt"
CHECKPOINT = Path("checkpoints") / "last.pt"
BEST = Path("checkpoints") / "best.pt"  # with a validation split: the weights of the epoch with the lowest validation loss
EVALUATION = "evaluation.json"
TENSORBOARD = "tensorboard"  # --tensorboard: event files for `tensorboard --logdir`
DATA = "data.json"  # what the dataset records of itself (Dataset.record): a multimodal run's modalities, FSDD split, ...


def load_run_data(cfg: RunConfig) -> Dataset:
    """The data a run trains and is evaluated on, from its config alone: what its model family loads (a dataset
    by name; paired modalities for a multimodal model), deterministic, so evaluation sees the rows training had."""
    return model_class(cfg.model).load_data(cfg)


@dataclass
class Run:
    """A run folder and what is in it."""

    path: Path
    config: RunConfig
    history: list[dict] = field(default_factory=list)
    model: object | None = None  # the model (see aelab.models.base.BaseAutoencoder) with its latest weights

    @property
    def last(self) -> dict:
        """The final epoch's metrics."""
        return self.history[-1] if self.history else {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, model={self.config.model!r}, epochs={len(self.history)})"


def settle_folder(cfg: RunConfig, settings: dict, resume: bool) -> RunConfig:
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


def read_data_record(run_dir: str | Path) -> dict | None:
    """The run's ``data.json`` (what its dataset recorded of itself: the split, the image format or the table's
    transform), or None when the run has none (a dataset by name)."""
    path = Path(run_dir) / DATA
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        raise AelabError(f"{path} is damaged (not JSON); retrain the run or restore the file") from None
    return values if isinstance(values, dict) else None


def with_recorded_files(cfg: RunConfig, record: dict | None) -> RunConfig:
    """``cfg`` with the data file that ``data.json`` recorded filled in where the config names none, so a run
    finds its data again without the environment it was trained in (a spoken-digit file found through
    ``AELAB_DATA_DIR``): the recorded file when it is still there, else the usual search (``data_dir``,
    ``AELAB_DATA_DIR``, the cache); when neither finds it, the recorded path, so that loading the data fails
    with one line naming the file the run needs."""
    recorded = ((record or {}).get("audio") or {}).get("path")
    if not recorded or cfg.audio_data is not None:
        return cfg
    if not Path(recorded).is_file():
        try:
            find_fsdd(None, cfg.data_dir)
            return cfg  # a copy where the usual search looks
        except AelabError:
            pass
    return dataclasses.replace(cfg, audio_data=str(recorded))


def read_history(path: Path) -> list[dict]:
    """The per-epoch records of ``metrics.jsonl`` (empty when the file does not exist)."""
    history = []
    if path.is_file():
        for i, line in enumerate(path.read_text().splitlines()):
            try:
                history.append(json.loads(line))
            except json.JSONDecodeError:
                raise AelabError(f"{path} line {i + 1} is not valid JSON; the file is damaged") from None
    return history


def open_run(path: str | Path, map_location="cpu") -> Run:
    """Open a finished (or interrupted) run folder: config, metrics, and the model's latest weights."""
    path = Path(path)
    if not path.is_dir():
        raise AelabError(f"{path} is not a folder; give the path of a run folder made by aelab train")
    if not (path / CONFIG).is_file():
        raise AelabError(f"{path} is not a run folder (no {CONFIG}); give the folder aelab train wrote")
    cfg = with_recorded_files(RunConfig.load(path / CONFIG), read_data_record(path))
    history = read_history(path / METRICS)
    if (path / MODEL).is_file():
        model = load_model(path / MODEL, map_location=map_location)
    elif (path / CHECKPOINT).is_file():
        state = load_checkpoint(path / CHECKPOINT, map_location=map_location)
        spec = state.get("spec")
        if not spec:
            raise AelabError(f"{path / CHECKPOINT} has no model spec; it was not written by this aelab")
        model = model_from_spec(spec, state["model"], source=path / CHECKPOINT)
    else:
        raise AelabError(f"{path} holds no weights yet ({MODEL} or {CHECKPOINT}); train it first")
    return Run(path, cfg, history, model)


__all__ = ["CHECKPOINT", "CONFIG", "DATA", "EVALUATION", "FORMAT_VERSION", "METRICS", "MODEL", "Run", "open_run",
           "read_data_record", "read_history", "settle_folder", "with_recorded_files"]
