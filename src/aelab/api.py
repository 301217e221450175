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
from threadpoolctl import threadpool_limits

from .config import RunConfig
from .data import Dataset, load_dataset
from .data.batches import iterate_inputs, slice_inputs
from .data.multimodal import describe_multimodal, modalities_of
from .io import atomic_write_text
from .errors import AelabError
from .evaluation import read_evaluation
from .evaluation.compare import markdown_table
from .models.base import Autoencoder
from .models.multimodal import TOUR as MULTIMODAL_TOUR
from .predict import write_latent_stats
from .registry import build_model, is_multimodal, model_kwargs_from_config, save_model, training_defaults
from .runfolder import CONFIG, DATA, MODEL, TENSORBOARD, Run, default_modalities, load_run_data, settle_folder
from .training import distributed
from .training.tensorboard import TensorBoardLogger
from .training.trainer import Trainer
from .viz.report import write_comparison_report, write_run_report
from .viz.multimodal import write_multimodal_figures
from .viz.run_figures import TRAIN_END, write_run_figures

logger = logging.getLogger("aelab")


def train(model: Autoencoder | str | None = None, data: Dataset | str | None = None, *,
          out: str | Path | None = None, resume: bool = False, config: RunConfig | None = None,
          progress: bool = True, log=logger.info, **settings) -> Run:
    """Train ``model`` on ``data`` into the run folder ``out`` and return the finished :class:`Run`.

    ``model`` is a built model or a registry name; ``data`` a :class:`Dataset` or a dataset name.
    ``settings`` are :class:`RunConfig` fields (epochs=10, lr=1e-3, ...). With ``resume=True`` an
    existing run in ``out`` continues from its last checkpoint. Started by ``torchrun``, every process
    calls this and trains its shard with DistributedDataParallel; rank 0 alone writes the run folder
    (see :mod:`aelab.training.distributed`). ``log``: a callback for one line per epoch and the report's
    path (default: the ``aelab`` logger at INFO; None: silent).
    """
    with distributed.session() as dist:
        return _train(model, data, dist, out=out, resume=resume, config=config, progress=progress,
                      log=log, **settings)


def _train(model, data, dist: distributed.DistContext, *, out, resume, config, progress, log, **settings) -> Run:
    cfg = RunConfig(**(config.to_dict() if config else {}))
    if isinstance(model, str):
        settings["model"] = model
    if isinstance(data, str):
        settings["dataset"] = data
    if out is not None:
        settings["out"] = str(out)
    if isinstance(model, torch.nn.Module):
        spec = getattr(model, "spec", None) or {}
        settings.setdefault("model", spec.get("name", model.name))
        for key, value in spec.get("kwargs", {}).items():
            if hasattr(cfg, key) and key != "output":
                settings.setdefault(key, value)
    if config is None and not resume:  # a family measured with its own optimisation defaults gets them
        for key, value in training_defaults(settings.get("model", cfg.model)).items():
            settings.setdefault(key, value)
    if isinstance(data, Dataset):
        settings.setdefault("dataset", data.name)
        if data.is_multimodal:
            settings.setdefault("modalities", ",".join(data.modalities))
    cfg = RunConfig.from_dict({**cfg.to_dict(), **settings}, source="settings")
    if is_multimodal(cfg.model) and cfg.modalities is None:  # the run's config records what it trained on
        cfg = dataclasses.replace(cfg, modalities=default_modalities(cfg))
    cfg = distributed.from_rank0(dist, settle_folder, cfg, settings, resume)
    run_dir = Path(cfg.out)
    log = log if dist.is_main else None

    if not isinstance(data, Dataset):
        data = load_run_data(cfg)
    if is_multimodal(cfg.model) and not data.is_multimodal:
        raise AelabError(f"the {cfg.model} model trains on paired modalities, but {data.name} holds one; load "
                         f"them with aelab.data.multimodal.load_multimodal or pass --modalities image,text")
    if not isinstance(model, torch.nn.Module):
        torch.manual_seed(cfg.seed)
        try:
            if data.is_multimodal:
                model = build_model(cfg.model, modalities=modalities_of(data), **model_kwargs_from_config(cfg))
            else:
                model = build_model(cfg.model, data.input_shape, **model_kwargs_from_config(cfg, data.bounded))
        except (RuntimeError, MemoryError) as exc:  # torch's allocator fails with a RuntimeError
            if not isinstance(exc, MemoryError) and "alloc" not in str(exc):
                raise
            raise AelabError(f"the {cfg.model} model does not fit in memory (latent_dim {cfg.latent_dim}, hidden_dims "
                             f"{cfg.hidden_dims}); choose smaller --hidden-dims or --latent-dim") from None
    else:
        model.check_input(next(iterate_inputs(slice_inputs(data.inputs("test"), slice(0, 1)), 1))
                          if data.is_multimodal else data.x_test[:1].float())
    if not data.is_multimodal and (cfg.loss == "bce" or getattr(model, "loss_kind", None) == "bce"):
        if not data.bounded:
            raise AelabError(f"the bce loss needs data in [0, 1] but {data.name} is not; use --loss mse")

    if dist.is_main:  # rank 0 alone writes the run folder
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AelabError(f"cannot create the run folder {run_dir} ({exc.strerror or exc}); "
                             f"choose another --out") from None
        cfg.save(run_dir / CONFIG)
        if data.is_multimodal:  # the FSDD split, its statistics and the text forms, for whoever reads the run
            atomic_write_text(run_dir / DATA, json.dumps(describe_multimodal(data), indent=1) + "\n")
    torch.manual_seed(cfg.seed + 1)  # the stream for sampling noise and binarization, separate from init
    callbacks = [TensorBoardLogger(run_dir / TENSORBOARD, data)] if cfg.tensorboard and dist.is_main else []
    trainer = Trainer(model, data, cfg, run_dir, progress=progress, log=log, rank=dist.rank,
                      world_size=dist.world_size, callbacks=callbacks)
    if resume and trainer.load_checkpoint():
        if log:
            log(f"resuming {run_dir} after epoch {trainer.epoch}")
    partial_step = trainer._partial.step if trainer._partial else 0
    distributed.check_same(dist, [trainer.epoch, partial_step], trainer.device, "the checkpoint to resume from")
    trainer.fit()
    result = Run(run_dir, cfg, trainer.history, model)
    if dist.is_main:
        save_model(model, run_dir / MODEL)
        write_latent_stats(run_dir, model, data)  # what the explorer's sliders need (after model.pt: not stale)
        if cfg.report:
            write_figures(result, data, log=log)
    return result


def write_figures(run: Run, data: Dataset, log=None) -> list[Path]:
    """The end of training: every figure that applies to the run, its evaluation and ``report.html``.

    Kept to seconds: the latent map is a t-SNE of 500 test codes here (``aelab report RUN`` draws
    the full one). Returns the paths written, the report last.
    """
    if data.is_multimodal:
        paths = list(write_multimodal_figures(run, data, log=log).values())
    else:
        paths = list(write_run_figures(run, data, **TRAIN_END).values())
    paths.append(write_run_report(run, data, redraw=False, progress=False, log=None))
    if log:
        log(f"report: {paths[-1]}")
    return paths


# ------------------------------------------------------------------------------------------------ the tour
# The tour: each model with its epochs on mnist5k, its settings (RunConfig fields) and what a newcomer should
# know about it. The epochs keep the whole tour within about three minutes on a 2-core laptop CPU while every
# model learns digits one can recognise.
TOUR = [
    {"model": "dense", "epochs": 30, "settings": {},
     "what": "the classic autoencoder: an MLP squeezes each image into a 32-number code and back"},
    {"model": "sparse", "epochs": 30, "settings": {"penalty": "topk", "k": 25},
     "what": "256 code units, of which only the 25 largest per image are kept (TopK): each image uses 25 units "
             "and each unit learns a pen stroke. The KL penalty (--penalty kl) only pulls each unit's average "
             "activation towards 5%: on mnist5k about 170 of 256 units stay active per image and its units draw "
             "blurry whole digits"},
    {"model": "conv", "epochs": 8, "settings": {},
     "what": "convolutions see local patterns: sharper reconstructions from the same 32-number code"},
    {"model": "vae", "epochs": 30, "settings": {},
     "what": "the code is a Gaussian posterior, trained on the ELBO: the model can generate new digits"},
]
# The tour's last run: one latent space for digits seen and written (and heard, when the FSDD file is found), on
# digit datasets only (the words name digits).
TOUR_MULTIMODAL = {"model": "multimodal", "epochs": MULTIMODAL_TOUR["train"]["epochs"],
                   "settings": MULTIMODAL_TOUR["settings"], "train": MULTIMODAL_TOUR["train"],
                   "what": "one latent space for digits seen, written (and heard, when the spoken-digit file is found): "
                           "a word generates an image, an image its word, a recording finds its images"}
TOUR_DIGITS = ("mnist5k", "mnist")
TOUR_SAMPLES = 4000  # the tour's epochs are for mnist5k's 4,000 train images; other datasets keep the samples seen


def tour(dataset: str = "mnist5k", *, epochs: int | None = None, out: str | Path | None = None,
         data_dir: str | None = None, threads: int = 1, progress: bool = True, log=logger.info) -> Path:
    """Train, evaluate and report each model of :data:`TOUR` on ``dataset`` into ``out`` (default
    ``runs/tour-<dataset>``, numbered if taken); return the comparison report's path (``out/report.html``).
    ``epochs`` (default: per model; on a larger dataset scaled to see as many samples) applies to every
    model. ``threads``: CPU threads per operation (torch, BLAS, OpenMP) while the tour runs; the caller's
    settings are restored after. ``log``: a callback for the tour's messages (default: the ``aelab`` logger at INFO; None: silent)."""
    if threads < 1:
        raise AelabError(f"--threads must be at least 1, got {threads}")
    # One thread by default: these models are small, and on a 2-core machine where anything else runs,
    # two spinning OpenMP threads per op made the whole tour 4x slower (281 s against 69 s, load average 3).
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            return _tour(dataset, epochs, out, data_dir, progress, log or (lambda *a: None))
    finally:
        torch.set_num_threads(previous)


def _tour(dataset, epochs, out, data_dir, progress, say) -> Path:
    if epochs is not None and epochs < 1:
        raise AelabError(f"--epochs must be at least 1, got {epochs}")
    out = Path(out) if out is not None else _fresh(Path("runs") / f"tour-{dataset}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AelabError(f"{out} already exists and is not empty; choose another --out or remove it")
    t0 = time.perf_counter()
    data = load_dataset(dataset, data_dir)
    if not data.is_images:
        raise AelabError(f"the tour trains convolutional models, which need images; {dataset} holds "
                         f"{data.input_shape} features: use aelab train --model dense on it")
    scale = TOUR_SAMPLES / len(data.x_train)
    say(f"aelab tour: four autoencoders on {data.name} ({len(data.x_train):,} train / {len(data.x_test):,} test "
        f"images), written to {out}/")
    run_dirs = []
    steps = len(TOUR) + (dataset in TOUR_DIGITS)
    for i, step in enumerate(TOUR, start=1):
        name = step["model"]
        n = epochs or max(1, round(step["epochs"] * scale))
        say(f"\n[{i}/{steps}] {name}: {step['what']} ({n} epoch{'s' * (n > 1)})")
        t = time.perf_counter()
        run = train(name, data, out=out / name, epochs=n, report=False, progress=progress, log=None,
                    **step["settings"])
        write_run_report(run, data, progress=False, log=(lambda m: say(f"      {m}")) if progress else None)
        run_dirs.append(run.path)
        say(f"      test loss {run.last['test_loss']:.4g}, {time.perf_counter() - t:.0f} s; report: "
            f"{run.path / 'report.html'}")
    html = write_comparison_report(run_dirs, out / "report.html", data, progress=False, log=None)
    rows = [{**(read_evaluation(r) or {}), "run": r.name} for r in run_dirs]
    say("\n" + markdown_table(rows).rstrip())
    if dataset in TOUR_DIGITS:
        _tour_multimodal(dataset, epochs, out, data_dir, progress, say, steps, scale)
    say(f"\ntour done in {time.perf_counter() - t0:.0f} s. Open the comparison report in a browser:\n  {html}")
    return html


def _tour_multimodal(dataset, epochs, out, data_dir, progress, say, steps, scale) -> Path:
    """The tour's multimodal run: trained, evaluated and reported; its coherence and retrieval printed."""
    step = TOUR_MULTIMODAL
    n = epochs or max(1, round(step["epochs"] * scale))
    t = time.perf_counter()
    cfg = RunConfig(model="multimodal", dataset=dataset, data_dir=data_dir)
    modalities = default_modalities(cfg)
    say(f"\n[{steps}/{steps}] multimodal ({modalities.replace(',', ' + ')}): {step['what']} "
        f"({n} epoch{'s' * (n > 1)})")
    data = load_run_data(dataclasses.replace(cfg, modalities=modalities))
    torch.manual_seed(0)
    model = build_model("multimodal", modalities=modalities_of(data), **step["settings"])  # small: seconds a epoch
    optimisation = {k: v for k, v in step["train"].items() if k != "epochs"}
    run = train(model, data, out=out / "multimodal", epochs=n, report=False, progress=progress, log=None,
                **optimisation)
    report = write_run_report(run, progress=False, log=None)
    ev = read_evaluation(run.path) or {}
    shown = ", ".join(f"{pair} {value:.2f}" for pair, value in (ev.get("coherence") or {}).items()
                      if not pair.startswith("joint"))
    say(f"      coherence (an independent classifier agrees with the source's digit): {shown}")
    recall = ", ".join(f"{pair} {v['recall@1']:.2f}" for pair, v in (ev.get("retrieval") or {}).items())
    say(f"      retrieval recall@1: {recall}")
    say(f"      {time.perf_counter() - t:.0f} s; report: {report}")
    return report


def _fresh(base: Path) -> Path:
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
