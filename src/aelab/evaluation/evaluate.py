"""Evaluate a model or a run folder: every metric, with one definition for every model.

What is measured: the keys of ``evaluation.json`` (a contract; absent where a metric does not apply), each
described once in the table of :mod:`aelab.evaluation.specs` (unit, meaning, which way is better).

Codes are ``model.codes(x)``, the code the decoder receives (posterior mean for a VAE) of the
grey-level images. ``neg_elbo`` and ``iwae_nll`` use dynamically binarized test images (one seeded
Bernoulli draw per pixel, the same draw for both) when the run was trained on binarized images,
the grey-level images otherwise. The probes read every train code (up to :data:`probes.MAX_TRAIN`);
``pixel_probe_accuracy`` is the same linear probe on the raw inputs (cached: :func:`probes.pixel_probe`).
The sparse dashboard (``l0``, ``dead_fraction``, ``mean_log10_feature_density``, ``explained_variance``,
``mean_class_purity``) is written for every model, with the one threshold of :mod:`metrics`;
``dead_fraction_training`` (with ``dead_after``, its window in training steps) for models with the SPARSE
capability, which count the steps since each unit last fired. Extra keys: ``active_threshold``,
``firing_rates`` (one per unit), ``active_units_mean`` (``l0``'s older name), ``probe_train_samples``/
``probe_train_total``, ``linear_probe_converged``/``linear_probe_iterations``, ``pixel_probe_converged``/
``pixel_probe_train_samples``/``pixel_probe_cached``, ``binarized``, ``test_samples``, ``seconds``,
``seconds_by_part`` (reconstruction, encode_train, linear_probe, knn, pixel_probe, dashboard), ``notes``, and
``noise`` (the corruption behind ``denoising_mse``, for a run trained with ``--noise``).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from ..data.batches import as_float, iterate_batches
from ..data.datasets import Dataset
from ..data.noise import Noise, corrupt, noise_for
from ..device import INFERENCE_BATCH, resolve_device
from ..errors import AelabError
from ..io import atomic_write_text
from ..models.base import MULTIMODAL, SPARSE, eval_mode, has, model_device
from ..runfolder import CHECKPOINT, EVALUATION, MODEL, load_run_data, open_run
from . import likelihood
from .anomaly import evaluate_anomaly
from .multimodal import evaluate_multimodal
from .metrics import (ACTIVE_THRESHOLD, ExplainedVariance, bce_per_image, class_purity, mean_class_purity,
                      mse_per_pixel, sparsity_summary)
from .probes import MAX_TRAIN, pixel_probe, probe_accuracies, stratified_subset
from .specs import METRIC_KEYS  # noqa: F401  (re-exported: the keys evaluate_model writes)

DEFAULT_IWAE_SAMPLES = 100  # a few seconds on mnist5k on a CPU; the benchmarks use K >= 1000


def evaluate_model(model, data: Dataset, *, binarize: bool = False, iwae_samples: int | None = None,
                   seed: int = 0, progress: bool = True, noise: str | None = None) -> dict:
    """Every metric of ``model`` on ``data``'s test set (codes of the train set feed the probes).

    ``binarize``: score the likelihood bounds on dynamically binarized test images (as the model was
    trained). ``iwae_samples``: K for the IWAE bound (None: 100; 0: skip it). ``seed`` fixes the
    binarization, the posterior samples and the probes' train subset. ``noise`` (a denoising run's
    ``--noise``, e.g. "gaussian:0.5"): also ``denoising_mse`` and ``noisy_input_mse``. Runs on the model's device.
    Returns a dict whose keys are described in this module's docstring.
    """
    t0 = time.perf_counter()
    k = DEFAULT_IWAE_SAMPLES if iwae_samples is None else int(iwae_samples)
    if k < 0:
        raise AelabError(f"iwae_samples must be 0 (skip) or a positive number of samples, got {iwae_samples}")
    device = model_device(model)
    model.check_input(as_float(data.x_test[:1]).to(device))
    if binarize and not data.bounded:
        raise AelabError(f"binarize needs data in [0, 1] but {data.name} is not; evaluate without binarizing")
    with eval_mode(model):
        result = _evaluate(model, data, device, binarize, k, seed, progress, t0)
        if noise:  # a denoising autoencoder: how much of the noise it removes
            result.update(denoising_errors(model, data.x_test.to(device), noise_for(noise, data.bounded), seed))
            result["seconds"] = time.perf_counter() - t0
        return result


def _evaluate(model, data: Dataset, device, binarize: bool, k: int, seed: int, progress: bool, t0: float) -> dict:
    x_test = data.x_test.to(device)
    result: dict = {"test_samples": len(x_test)}
    notes: list[str] = []
    seconds: dict[str, float] = {}

    # --- reconstruction and codes, in large batches
    sums = {"mse": 0.0, "bce": 0.0}
    bounded = data.bounded  # BCE needs targets in [0, 1]
    explained = ExplainedVariance()
    codes = []
    with torch.inference_mode():
        for xb in iterate_batches(x_test, INFERENCE_BATCH):
            z = model.codes(xb)
            recon = model.reconstruct(xb)  # decode(codes(x)) for our models; a model may define its own
            sums["mse"] = sums["mse"] + mse_per_pixel(recon, xb).double().sum()
            if bounded:
                sums["bce"] = sums["bce"] + bce_per_image(recon, xb).double().sum()
            explained.update(recon, xb)
            codes.append(z.flatten(1).float())
    codes = torch.cat(codes)
    result["test_mse"] = float(sums["mse"]) / len(x_test)
    if bounded:
        result["test_bce"] = float(sums["bce"]) / len(x_test)
    if math.isfinite(explained.value()):  # (test inputs that do not vary leave nothing to explain)
        result["explained_variance"] = explained.value()
    seconds["reconstruction"] = time.perf_counter() - t0

    # --- likelihood bounds of variational models
    if likelihood.is_variational(model):
        x_lik = x_test
        if binarize:
            with likelihood.seeded(seed, device):
                x_lik = torch.bernoulli(as_float(x_test))
        result["neg_elbo"] = float(likelihood.neg_elbo(model, x_lik, seed=seed).mean())
        if k > 0:
            result["iwae_nll"] = float(likelihood.iwae_nll(model, x_lik, k, seed=seed + 1, progress=progress).mean())
            result["iwae_samples"] = k
        result["binarized"] = bool(binarize)

    # --- probes on the codes, and the same linear probe on the pixels
    skipped = _probes_skipped(data)
    if skipped:
        notes.append(skipped)
    else:
        result.update(_probes(model, data, codes, device, seed, notes, seconds))

    # --- sparsity, the same definition for every model (the sparse dashboard)
    start = time.perf_counter()
    result.update(sparsity_summary(codes, ACTIVE_THRESHOLD))
    purity = mean_class_purity(class_purity(codes, data.y_test)) if data.y_test is not None else math.nan
    if math.isfinite(purity):  # (NaN when no unit is ever active)
        result["mean_class_purity"] = purity
    if has(model, SPARSE):  # units that stopped firing in training, over the model's own window of steps
        result["dead_fraction_training"] = float(model.dead_units.float().mean())
        result["dead_after"] = int(model.dead_after)
    result["latent_dim"] = codes.shape[1]
    seconds["dashboard"] = time.perf_counter() - start
    result["seconds"] = time.perf_counter() - t0
    result["seconds_by_part"] = {part: round(s, 2) for part, s in seconds.items()}
    if notes:
        result["notes"] = notes
    return result


def _probes_skipped(data: Dataset) -> str:
    """Why the probes cannot run on ``data`` (a note), or "" when they can."""
    if data.y_train is None or data.y_test is None:
        return "probes skipped: the dataset has no labels"
    if len(torch.unique(data.y_train)) < 2:
        return "probes skipped: the training labels hold a single class, so there is nothing to tell apart"
    return ""


def _probes(model, data: Dataset, codes: torch.Tensor, device, seed: int, notes: list, seconds: dict) -> dict:
    """The probes' keys: the linear probe and kNN on the codes, the linear probe on the pixels (cached)."""
    start = time.perf_counter()
    num_classes = len(data.classes) if data.classes else None
    keep = torch.as_tensor(stratified_subset(data.y_train.cpu().numpy(), MAX_TRAIN, seed), device=data.x_train.device)
    train_codes = encode_all(model, data.x_train[keep].to(device))
    seconds["encode_train"] = time.perf_counter() - start
    result = probe_accuracies(train_codes, data.y_train[keep], codes, data.y_test, seed=seed, num_classes=num_classes)
    seconds.update(result.pop("probe_seconds"))
    result["probe_train_total"] = len(data.x_train)
    if result["probe_train_samples"] < len(data.x_train):
        notes.append(f"probes fitted on a stratified sample of {result['probe_train_samples']:,} of "
                     f"{len(data.x_train):,} train codes")
    start = time.perf_counter()
    pixels = pixel_probe(data.x_train, data.y_train, data.x_test, data.y_test, seed=seed, num_classes=num_classes,
                         name=data.name)
    result.update({key: value for key, value in pixels.items() if key != "pixel_probe_seconds"})
    seconds["pixel_probe"] = time.perf_counter() - start
    return result


def denoising_errors(model, x: torch.Tensor, noise: Noise, seed: int = 0) -> dict:
    """How well a denoising autoencoder cleans ``x`` (N, ...) (uint8 or float rows) corrupted by ``noise``, one
    seeded copy (a CPU generator: the same copy on every device): ``denoising_mse``, the clean rows against the
    reconstructions of the corrupted copy, and ``noisy_input_mse``, the corrupted copy against the clean rows
    (what returning the input unchanged would score); both per value, as ``test_mse``. Also ``noise``."""
    generator = torch.Generator().manual_seed(seed)
    sums = torch.zeros(2, dtype=torch.float64, device=x.device)
    with eval_mode(model), torch.inference_mode():
        for xb in iterate_batches(x, INFERENCE_BATCH):
            noisy = corrupt(xb, noise, generator)
            sums += torch.stack([mse_per_pixel(model.reconstruct(noisy), xb).double().sum(),
                                 mse_per_pixel(noisy, xb).double().sum()])
    denoised, noisy = (sums / len(x)).tolist()
    return {"denoising_mse": denoised, "noisy_input_mse": noisy, "noise": str(noise)}


def encode_all(model, x: torch.Tensor, batch_size: int = INFERENCE_BATCH) -> torch.Tensor:
    """``model.codes`` of every sample of ``x`` (B, ...) in large batches, no gradients: (B, D) float32."""
    with torch.inference_mode():
        return torch.cat([model.codes(xb).flatten(1).float() for xb in iterate_batches(x, batch_size)])


def evaluate_run(run_dir, *, iwae_samples: int | None = None, data: Dataset | None = None, progress: bool = True,
                 device: str = "auto") -> dict:
    """Evaluate a run folder with :func:`evaluate_model` and write ``RUN/evaluation.json`` (atomically).

    The dataset is the run's own (from its config) unless ``data`` is given; binarization follows the
    run's config. ``device``: where to evaluate ("auto": CUDA when present). Returns the metrics,
    with ``run``, ``model`` and ``dataset`` added.
    """
    run = open_run(run_dir)
    cfg = run.config
    if data is None:
        data = load_run_data(cfg)  # by name, or the user's own data from its path (a one-line error if it is gone)
    model = run.model.to(resolve_device(device))
    result = {"run": str(run_dir), "model": cfg.model, "dataset": data.name, "epochs": len(run.history)}
    if has(model, MULTIMODAL):  # retrieval, coherence (judged by cached oracles), per-modality errors and probes
        result["modalities"] = data.modalities
        result.update(evaluate_multimodal(model, data, seed=cfg.seed))
    else:
        result.update(evaluate_model(model, data, binarize=cfg.binarize, iwae_samples=iwae_samples, seed=cfg.seed,
                                     progress=progress, noise=cfg.noise))
        if cfg.normal_classes:  # trained on normal classes alone: how well each score finds the other classes
            result["anomaly"] = evaluate_anomaly(model, data, cfg.normal_classes, seed=cfg.seed)
    atomic_write_text(Path(run_dir) / EVALUATION, json.dumps(result, indent=2) + "\n")
    return result


def read_evaluation(run_dir) -> dict | None:
    """The metrics stored in ``RUN/evaluation.json``, or None when the run has not been evaluated since
    its weights last changed (no file, an unreadable one, or weights newer than it)."""
    path = Path(run_dir) / EVALUATION
    if not path.is_file():
        return None
    weights = [p for p in (Path(run_dir) / MODEL, Path(run_dir) / CHECKPOINT) if p.is_file()]
    if any(p.stat().st_mtime > path.stat().st_mtime for p in weights):
        return None
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return values if isinstance(values, dict) else None


def ensure_evaluation(run_dir, data: Dataset | None = None, *, iwae_samples: int | None = None,
                      progress: bool = False, log=None, message: str = "evaluating {run_dir} ...") -> dict:
    """The run's up-to-date ``evaluation.json`` (see :func:`read_evaluation`); evaluated now with
    :func:`evaluate_run` (and written) when missing or stale, after ``log(message)`` (``{run_dir}`` filled in)."""
    values = read_evaluation(run_dir)
    if values is None:
        if log:
            log(message.format(run_dir=run_dir))
        values = evaluate_run(run_dir, iwae_samples=iwae_samples, data=data, progress=progress)
    return values
