"""Denoising autoencoders (issue 19): how much of the noise a model trained with ``--noise`` removes.

Each model is trained on full MNIST (60,000 training images) with the input corrupted afresh every batch and
the loss scored against the clean image, then evaluated as ``aelab evaluate`` does: ``denoising_mse`` (the
clean test images against the reconstructions of one seeded corrupted copy) beside ``noisy_input_mse`` (that
copy against the clean images). The target: gaussian sigma 0.5, ``denoising_mse <= noisy_input_mse / 3``.

    AELAB_DATA_DIR=../shared/data python benchmarks/denoising.py                       # dense and conv, 10 epochs
    python benchmarks/denoising.py --models dense --noise gaussian:0.5 masking:0.5 --epochs 5 --out denoising.json

Prints JSON (stdout or ``--out``): per model and noise the two errors, their ratio, the clean ``test_mse``,
training seconds and the machine's load average around the run; ``--figures DIR`` also writes each run's
``denoising.png`` (noisy / denoised / clean rows) there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

import aelab
from aelab.data.batches import as_float
from aelab.data.noise import noise_for
from aelab.evaluation.evaluate import denoising_errors, evaluate_model
from aelab.viz.figures import plot_denoising
from aelab.viz.run_figures import class_balanced_indices

TARGET = 1 / 3  # denoising_mse at most a third of noisy_input_mse (gaussian sigma 0.5)


def measure(model: str, noise: str, data, epochs: int, seed: int, figures: Path | None) -> dict:
    """Train one denoising run in a temporary folder and score it; the figure goes to ``figures``."""
    with tempfile.TemporaryDirectory(prefix="aelab-denoising-") as tmp:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        run = aelab.train(model, data, out=Path(tmp) / "run", epochs=epochs, noise=noise, seed=seed, report=False,
                          progress=False, log=lambda line: print(f"  {model} {noise}: {line}", file=sys.stderr))
        seconds = time.perf_counter() - t0
        clean = evaluate_model(run.model, data, iwae_samples=0, seed=seed, progress=False)
        errors = denoising_errors(run.model, data.x_test, noise_for(noise, data.bounded), seed)
        if figures is not None:
            pick = class_balanced_indices(data.y_test, 10)
            path = plot_denoising(run.model, as_float(data.x_test[pick]), noise_for(noise, data.bounded),
                                  Path(tmp) / "denoising.png", seed=seed)
            figures.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, figures / f"denoising-{model}-{noise.replace(':', '-')}.png")
    ratio = errors["denoising_mse"] / errors["noisy_input_mse"]
    print(f"{model} {noise}: denoising_mse {errors['denoising_mse']:.4f}, noisy_input_mse "
          f"{errors['noisy_input_mse']:.4f} (ratio {ratio:.3f}), {seconds:.0f} s", file=sys.stderr)
    return {"model": model, "noise": noise, "epochs": epochs, "seed": seed,
            "denoising_mse": errors["denoising_mse"], "noisy_input_mse": errors["noisy_input_mse"],
            "ratio": ratio, "clean_test_mse": clean["test_mse"], "train_seconds": round(seconds, 1),
            "load_before": load, "load_after": os.getloadavg()[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["dense", "conv"])
    ap.add_argument("--noise", nargs="+", default=["gaussian:0.5"], help="one run per model and noise")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--figures", type=Path, default=None, help="also write each run's denoising.png here")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = aelab.load_dataset(args.dataset, args.data_dir)
    runs = []
    for model in args.models:
        for noise in args.noise:
            runs.append(measure(model, noise, data, args.epochs, args.seed, args.figures))
            if args.out:  # after every run: a long benchmark cut short keeps what it measured
                Path(args.out).write_text(json.dumps(summary(data, runs), indent=2) + "\n")
    if not args.out:
        sys.stdout.write(json.dumps(summary(data, runs), indent=2) + "\n")
    return 0


def summary(data, runs: list[dict]) -> dict:
    gaussian = [r for r in runs if r["noise"] == "gaussian:0.5"]
    return {
        "benchmark": "denoising",
        "dataset": f"{data.name}: {len(data.x_train)} train / {len(data.x_test)} test images",
        "target": "gaussian:0.5: denoising_mse <= noisy_input_mse / 3",
        "meets_target": bool(gaussian) and all(r["ratio"] <= TARGET for r in gaussian),
        "runs": runs,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine()},
    }


if __name__ == "__main__":
    sys.exit(main())
