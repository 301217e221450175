"""The library's top: train a model into a run folder (and report on it at the end), and the tour.

``aelab.train`` is the Python face of ``aelab train``; ``aelab.tour`` the face of ``aelab tour``. Both sit
above the trainer, evaluation and the reports, so the end-of-run reporting is called from here and no
lower layer imports upwards. Messages go to the ``log`` callback, by default the ``aelab`` logger
(the command line prints it; a library user sees it once logging is configured).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from .config import RunConfig
from .data import Dataset, load_dataset
from .data.anomaly import apply_normal_classes
from .data.batches import iterate_inputs, slice_inputs
from .io import atomic_write_text
from .device import cpu_threads
from .errors import AelabError
from .evaluation import read_evaluation
from .evaluation.chance import run_chance_warnings
from .evaluation.compare import image_metrics, markdown_table
from .models.base import MULTIMODAL, BaseAutoencoder, has
from .predict import write_latent_stats
from .registry import (accepted_fields, build_model, ensure_spec, model_class, model_kwargs_from_config, save_model,
                       training_defaults)
from .runfolder import CONFIG, DATA, MODEL, Run, load_run_data, settle_folder
from .training import distributed
from .training.trainer import Trainer
from .viz.report import report_pages, write_comparison_report, write_run_report
from .viz.run_figures import TRAIN_END

logger = logging.getLogger("aelab")


def train(model: BaseAutoencoder | str | None = None, data: Dataset | str | None = None, *,
          out: str | Path | None = None, resume: bool = False, config: RunConfig | None = None,
          progress: bool = True, log=logger.info, callbacks=(), **settings) -> Run:
    """Train ``model`` on ``data`` into the run folder ``out`` and return the finished :class:`Run`.

    ``model`` is a built model or a registry name (``aelab.MODELS``; add yours with ``aelab.register_model``);
    ``data`` a :class:`Dataset` or a dataset name. ``settings`` are :class:`RunConfig` fields (epochs=10,
    lr=1e-3, ...); one the model's family does not read is refused. With ``resume=True`` an existing run in
    ``out`` continues from its last checkpoint. ``callbacks``: objects with any of the trainer's hooks, e.g.
    ``on_epoch_end(epoch, metrics)``, called after every epoch with the row just written to metrics.jsonl;
    returning True from it stops training after that epoch (see :class:`aelab.training.trainer.Trainer`).
    Started by ``torchrun``, every process calls this and trains its shard with DistributedDataParallel; rank 0
    alone writes the run folder (see :mod:`aelab.training.distributed`). ``log``: a callback for one line per
    epoch and the report's path (default: the ``aelab`` logger at INFO; None: silent).

    The returned run's model is on the CPU in eval mode, whatever device trained it, so
    ``run.model.encode(data.x_test.float() / 255)`` works as it is (``.to(device)`` takes it back).
    """
    with distributed.session() as dist:
        return _train(model, data, dist, out=out, resume=resume, config=config, progress=progress,
                      log=log, callbacks=callbacks, **settings)


def _run_config(model, data, config: RunConfig | None, resume: bool, settings: dict) -> RunConfig:
    """The run's config: ``config`` (or the defaults), the family's measured optimisation defaults, what a built
    model and a Dataset say of themselves, then ``settings``; the family fills in what it decides itself."""
    cfg = RunConfig(**(config.to_dict() if config else {}))
    if isinstance(model, str):
        settings["model"] = model
    if isinstance(data, str):
        settings["dataset"] = data
    if isinstance(model, torch.nn.Module):
        spec = ensure_spec(model)
        settings.setdefault("model", spec["name"])
        for key, value in spec["kwargs"].items():
            if hasattr(cfg, key) and key != "output":
                settings.setdefault(key, value)
    name = settings.get("model", cfg.model)
    if config is None and not resume:  # a family measured with its own optimisation defaults gets them
        for key, value in training_defaults(name).items():
            settings.setdefault(key, value)
    if isinstance(data, Dataset):
        settings.setdefault("dataset", data.name)
        if "modalities" in accepted_fields(name):  # a family that reads paired data records which modalities
            settings.setdefault("modalities", ",".join(data.modalities))
    cfg = RunConfig.from_dict({**cfg.to_dict(), **settings}, source="settings")
    return dataclasses.replace(cfg, **model_class(cfg.model).settle_config(cfg.to_dict()))


# A family's measured batch size (the multimodal one: 256, for full MNIST's 60,000 rows) leaves a small dataset too
# few optimizer steps: on mnist5k (4,000 rows) 4 epochs at batch 256 are 64 steps, and that run sits at chance
# (coherence 0.00-0.21, grey images; measured in issue 22), while 4 epochs at batch 64 (252 steps) reach coherence
# 0.89-1.00. So the family's default batch is halved (not below MIN_FAMILY_BATCH) until the run has MIN_STEPS steps;
# a batch size the user gives is kept as it is.
MIN_STEPS = 250
MIN_FAMILY_BATCH = 32


def small_data_batch(cfg: RunConfig, train_rows: int) -> RunConfig:
    """``cfg`` with the family's default batch size (:func:`aelab.registry.training_defaults`) halved until its
    epochs over ``train_rows`` take at least ``MIN_STEPS`` optimizer steps (not below ``MIN_FAMILY_BATCH``);
    unchanged for a family without a default batch or a batch size other than that default."""
    batch = training_defaults(cfg.model).get("batch_size")
    if batch is None or cfg.batch_size != batch:
        return cfg
    while batch > MIN_FAMILY_BATCH and cfg.epochs * -(-train_rows // batch) < MIN_STEPS:
        batch //= 2
    return dataclasses.replace(cfg, batch_size=batch)


def _build(cfg: RunConfig, data: Dataset) -> BaseAutoencoder:
    """The run's model, built for the data's modalities from the config's settings (seeded)."""
    torch.manual_seed(cfg.seed)
    try:
        return build_model(cfg.model, modalities=data.specs(), **model_kwargs_from_config(cfg))
    except (RuntimeError, MemoryError) as exc:  # torch's allocator fails with a RuntimeError
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc):
            raise
        raise AelabError(f"the {cfg.model} model does not fit in memory (latent_dim {cfg.latent_dim}, hidden_dims "
                         f"{cfg.hidden_dims}); choose smaller --hidden-dims or --latent-dim") from None


def _train(model, data, dist: distributed.DistContext, *, out, resume, config, progress, log, callbacks,
           **settings) -> Run:
    if out is not None:
        settings["out"] = str(out)
    family_batch = config is None and not resume and "batch_size" not in settings  # the family's default batch
    cfg = _run_config(model, data, config, resume, settings)
    cfg = distributed.from_rank0(dist, settle_folder, cfg, settings, resume)
    run_dir = Path(cfg.out)
    log = log if dist.is_main else None

    if not isinstance(data, Dataset):
        data = load_run_data(cfg)  # the family's loader keeps the normal classes' training rows itself
    elif cfg.normal_classes:
        data = apply_normal_classes(data, cfg.normal_classes)  # a Dataset passed in: its normal classes' rows
    if family_batch:
        rows = len(data.y_train) if data.y_train is not None else len(data.x_train)
        smaller = small_data_batch(cfg, rows)
        if smaller.batch_size != cfg.batch_size and log:
            log(f"batch size {smaller.batch_size} (not the {cfg.model} default {cfg.batch_size}): {rows:,} training "
                f"rows need it for {MIN_STEPS} optimizer steps in {cfg.epochs} epochs; --batch-size sets it")
        cfg = smaller
    if isinstance(model, torch.nn.Module):
        model.check_input(next(iterate_inputs(slice_inputs(data.inputs("test"), slice(0, 1)), 1)))
    else:
        model = _build(cfg, data)
    # config.json records every setting the model was built with (the family's defaults filled in)
    built = {k: v for k, v in model.settings.to_dict().items() if k in accepted_fields(cfg.model) and hasattr(cfg, k)}
    cfg = dataclasses.replace(cfg, **built)

    torch.manual_seed(cfg.seed + 1)  # the stream for sampling noise and binarization, separate from init
    trainer = Trainer(model, data, cfg, run_dir, progress=progress, log=log, rank=dist.rank,
                      world_size=dist.world_size, callbacks=callbacks)  # TensorBoard: the trainer adds it from cfg
    if resume and trainer.load_checkpoint():  # a resume that would change the run is refused before any write
        if log:
            log(f"resuming {run_dir} after epoch {trainer.epoch}")
    partial_step = trainer._partial.step if trainer._partial else 0
    distributed.check_same(dist, [trainer.epoch, partial_step], trainer.device, "the checkpoint to resume from")
    if dist.is_main:  # rank 0 alone writes the run folder
        _write_run_files(run_dir, cfg, data)
    trainer.fit()
    result = Run(run_dir, cfg, trainer.history, model)
    if dist.is_main:
        save_model(model, run_dir / MODEL)
        write_latent_stats(run_dir, model, data)  # what the explorer's sliders need (after model.pt: not stale)
        if cfg.report:
            write_figures(result, data, log=log)
            warn_at_chance(result, data, log)
    model.cpu().eval()  # the documented state of a returned model: on the CPU, in eval mode
    return result


def _write_run_files(run_dir: Path, cfg: RunConfig, data: Dataset) -> None:
    """config.json, and data.json when the dataset records something of itself (a paired dataset's splits)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AelabError(f"cannot create the run folder {run_dir} ({exc.strerror or exc}); "
                         f"choose another --out") from None
    cfg.save(run_dir / CONFIG)
    if data.record is not None:
        atomic_write_text(run_dir / DATA, json.dumps(data.record, indent=1) + "\n")


def warn_at_chance(run: Run, data: Dataset, log=None) -> list[str]:
    """The end of training: one ``warning:`` line to ``log`` per metric of the run's evaluation that sits at its
    chance level, with the likely fix (:func:`aelab.evaluation.chance.chance_warnings`); returns the lines."""
    lines = run_chance_warnings(run, data)
    for line in lines if log else ():
        log(f"warning: {line}")
    return lines


def write_figures(run: Run, data: Dataset, log=None) -> list[Path]:
    """The end of training: every figure that applies to the run, its evaluation and ``report.html``.

    Kept to seconds: the latent map is a t-SNE of 500 test codes here (``aelab report RUN`` draws
    the full one). Returns the paths written, the report last.
    """
    paths = list(report_pages(run.model).write_figures(run, data, **TRAIN_END).values())
    paths.append(write_run_report(run, data, redraw=False, progress=False, log=None))
    if log:
        log(f"report: {paths[-1]}")
    return paths


# ------------------------------------------------------------------------------------------------ the tour
# The tour, its one definition: each model with its epochs on mnist5k, its settings (keyword settings of
# build_model), its optimisation (RunConfig fields) and what a newcomer should know about it. The epochs keep the
# whole tour within a couple of minutes on 2 CPU cores (measured: benchmarks/README.md, Results, The tour) while
# every model learns digits one can recognise.
# A family that reads paired modalities (the multimodal one) runs on digit datasets only (its words name digits).
TOUR = [
    {"model": "dense", "epochs": 30, "settings": {}, "train": {},
     "what": "the classic autoencoder: an MLP squeezes each image into a 32-number code and back"},
    {"model": "sparse", "epochs": 30, "settings": {"penalty": "topk", "latent_dim": 1000, "k": 25}, "train": {},
     "what": "1,000 code units, of which only the 25 largest per image are kept (TopK): an overcomplete, hard-sparse "
             "code whose units draw pen strokes, and from which a linear classifier reads the digit far better than "
             "from the pixels or the dense model's 32 numbers. The KL penalty (--penalty kl) only pulls each unit's "
             "average activation towards 5%: its codes are never exactly zero and its units draw blurry whole digits"},
    {"model": "conv", "epochs": 8, "settings": {}, "train": {},
     "what": "convolutions see local patterns: sharper reconstructions from the same 32-number code"},
    {"model": "vae", "epochs": 30, "settings": {}, "train": {},
     "what": "the code is a Gaussian posterior, trained on the ELBO: the model can generate new digits"},
    {"model": "multimodal", "epochs": 8, "train": {"batch_size": 64, "lr": 2e-3},
     "settings": {"latent_dim": 16, "image_channels": [8, 16], "audio_channels": [16, 32], "text_hidden": 32},
     "what": "one latent space for digits seen, written (and heard, when the spoken-digit file is found): "
             "a word generates an image, an image its word, a recording finds its images"},
]
TOUR_MULTIMODAL = next(step for step in TOUR if step["model"] == "multimodal")  # (the notebook trains it alone)
TOUR_DIGITS = ("mnist5k", "mnist")
TOUR_SAMPLES = 4000  # the tour's epochs are for mnist5k's 4,000 train images; other datasets keep the samples seen


def tour(dataset: str = "mnist5k", *, epochs: int | None = None, out: str | Path | None = None,
         data_dir: str | None = None, threads: int = 1, progress: bool = True, log=logger.info) -> Path:
    """Train, evaluate and report each model of :data:`TOUR` on ``dataset`` into ``out`` (default
    ``runs/tour-<dataset>``, numbered if taken); return the comparison report's path (``out/report.html``).
    ``epochs`` (default: per model; on a larger dataset scaled to see as many samples) applies to every
    model. ``threads``: CPU threads per operation (torch, BLAS, OpenMP) while the tour runs; the caller's
    settings are restored after. ``log``: a callback for the tour's messages (default: the ``aelab`` logger at INFO; None: silent)."""
    # One thread by default: these models are small, and on a 2-core machine where anything else runs,
    # two spinning OpenMP threads per op made the whole tour 4x slower (281 s against 69 s, load average 3).
    with cpu_threads(threads):
        return _tour(dataset, epochs, out, data_dir, progress, log or (lambda *a: None))


def _tour(dataset, epochs, out, data_dir, progress, say) -> Path:
    if epochs is not None and epochs < 1:
        raise AelabError(f"--epochs must be at least 1, got {epochs}")
    out = Path(out) if out is not None else fresh_folder(Path("runs") / f"tour-{dataset}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AelabError(f"{out} already exists and is not empty; choose another --out or remove it")
    t0 = time.perf_counter()
    data = load_dataset(dataset, data_dir)
    if not data.is_images:
        raise AelabError(f"the tour trains convolutional models, which need images; {dataset} holds "
                         f"{data.input_shape} features: use aelab train --model dense on it")
    scale = TOUR_SAMPLES / len(data.x_train)
    steps = [s for s in TOUR if dataset in TOUR_DIGITS or not has(model_class(s["model"]), MULTIMODAL)]
    say(f"aelab tour: {len(steps)} autoencoders on {data.name} ({len(data.x_train):,} train / {len(data.x_test):,} "
        f"test images), written to {out}/")
    runs: list[Run] = []
    for i, step in enumerate(steps, start=1):
        name, paired = step["model"], has(model_class(step["model"]), MULTIMODAL)
        n = epochs or max(1, round(step["epochs"] * scale))
        t = time.perf_counter()
        step_data = load_run_data(RunConfig(model=name, dataset=dataset, data_dir=data_dir)) if paired else data
        say(f"\n[{i}/{len(steps)}] {name}{' (' + ' + '.join(step_data.modalities) + ')' if paired else ''}: "
            f"{step['what']} ({n} epoch{'s' * (n > 1)})")
        torch.manual_seed(0)
        model = build_model(name, modalities=step_data.specs(), **step["settings"])
        run = train(model, step_data, out=out / name, epochs=n, report=False, progress=progress, log=None,
                    **step["train"])
        report = write_run_report(run, step_data, progress=False,
                                  log=(lambda m: say(f"      {m}")) if progress else None)
        say(_tour_summary(run, paired) + f", {time.perf_counter() - t:.0f} s; report: {report}")
        warn_at_chance(run, step_data, log=lambda line: say(f"      {line}"))
        runs.append(run)
    # every run on one page, the multimodal one too (its image code beside the others)
    html = write_comparison_report([r.path for r in runs], out / "report.html", data, progress=False, log=None)
    say("\n" + markdown_table([_comparable_row(r) for r in runs]).rstrip())
    say(f"\ntour done in {time.perf_counter() - t0:.0f} s. Open the comparison report in a browser:\n  {html}")
    return html


def _comparable_row(run: Run) -> dict:
    """A run's row of the tour's printed table: its metrics; for a multimodal run those of its image code alone."""
    ev = read_evaluation(run.path) or {}
    if has(run.model, MULTIMODAL):
        ev = {"model": ev.get("model"), "dataset": ev.get("dataset"), **image_metrics(ev)}
    return {**ev, "run": run.path.name}


def _tour_summary(run: Run, paired: bool) -> str:
    """One line of a tour step's result: the test loss; for paired modalities, coherence and recall@1 too."""
    if not paired:
        return f"      test loss {run.last['test_loss']:.4g}"
    ev = read_evaluation(run.path) or {}
    shown = ", ".join(f"{pair} {value:.2f}" for pair, value in (ev.get("coherence") or {}).items()
                      if not pair.startswith("joint"))
    recall = ", ".join(f"{pair} {v['recall@1']:.2f}" for pair, v in (ev.get("retrieval") or {}).items())
    return (f"      coherence (an independent classifier agrees with the source's digit): {shown}\n"
            f"      retrieval recall@1: {recall}\n      done")


def fresh_folder(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that does not exist yet."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
