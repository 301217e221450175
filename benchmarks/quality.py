"""Quality benchmark of the model family (issue 3): what the codes and likelihoods reach on full MNIST.

    python benchmarks/quality.py                 # full MNIST from ../shared/data (or $AELAB_DATA_DIR)
    python benchmarks/quality.py --quick         # mnist5k, a few epochs: checks the script in a minute
    python benchmarks/quality.py --only iwae     # one section

Sections (JSON to stdout or --out, a Markdown table to stderr):
- ``probes``: the dense autoencoder's 32-dimensional codes, linear-probe and kNN accuracy, next to the
  same probes on raw pixels.
- ``sparse``: a sparse autoencoder with 256 units, top-k (k=25) with the AuxK dead-unit remedy, against
  the dense 32-unit model trained the same way (same epochs, batch, optimizer): test MSE ratio, active
  units per sample, dead fraction.
- ``iwae``: a VAE trained on dynamically binarized MNIST within a time budget, then the IWAE estimate of
  the test negative log-likelihood with K importance samples.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

import aelab
from aelab.data import as_float
from aelab.evaluation import evaluate_model, probe_accuracies
from speed import mnist_dir  # benchmarks/speed.py: sys.path[0] when this runs as a script

ROOT = Path(__file__).resolve().parents[1]


def load(args):
    if args.quick:
        return aelab.load_dataset("mnist5k")
    return aelab.load_dataset("mnist", data_dir=mnist_dir(None))  # None: aelab's own search (cache, download)


def train(name, data, out, epochs, **kw):
    t0 = time.perf_counter()
    run = aelab.train(name, data, out=out, epochs=epochs, progress=False, report=False,
                      log=lambda s: print(f"  [{name}] {s}", file=sys.stderr, flush=True), **kw)
    return run, time.perf_counter() - t0


def section_probes_and_sparse(data, args, workdir) -> dict:
    epochs = 2 if args.quick else args.ae_epochs
    common = dict(batch_size=128, lr=1e-3, seed=0)
    dense, dense_s = train("dense", data, workdir / "dense32", epochs, latent_dim=32, **common)
    sparse, sparse_s = train("sparse", data, workdir / "sparse256", epochs, latent_dim=256, penalty="topk", k=25,
                             **common)
    ev_dense = evaluate_model(dense.model, data, progress=False)
    ev_sparse = evaluate_model(sparse.model, data, progress=False)
    raw = probe_accuracies(as_float(data.x_train.flatten(1)), data.y_train,
                           as_float(data.x_test.flatten(1)), data.y_test)
    return {
        "probes": {
            "epochs": epochs,
            "dense32_linear_probe_accuracy": ev_dense["linear_probe_accuracy"],
            "dense32_knn_accuracy": ev_dense["knn_accuracy"],
            "raw_pixels_linear_probe_accuracy": raw["linear_probe_accuracy"],
            "raw_pixels_knn_accuracy": raw["knn_accuracy"],
        },
        "sparse": {
            "epochs": epochs,
            "dense32_test_mse": ev_dense["test_mse"],
            "sparse256_test_mse": ev_sparse["test_mse"],
            "mse_ratio": ev_sparse["test_mse"] / ev_dense["test_mse"],
            "target_mse_ratio_at_most": 1.25,
            "active_units_mean": ev_sparse["active_units_mean"],
            "target_active_at_most": 25,
            "dead_fraction": ev_sparse["dead_fraction"],
            "target_dead_fraction_below": 0.10,
            "dense_train_seconds": dense_s,
            "sparse_train_seconds": sparse_s,
        },
    }


def section_iwae(data, args, workdir) -> dict:
    epochs = 2 if args.quick else args.vae_epochs
    k = 50 if args.quick else args.iwae_samples
    settings = dict(latent_dim=args.vae_latent, hidden_dims=args.vae_hidden, binarize=True, batch_size=128,
                    lr=args.vae_lr, lr_schedule="cosine", kl_warmup=args.kl_warmup, seed=0)
    run, seconds = train("vae", data, workdir / "vae-iwae", epochs, **settings)
    t0 = time.perf_counter()
    ev = evaluate_model(run.model, data, binarize=True, iwae_samples=k, progress=True)
    return {"iwae": {
        "settings": {**settings, "epochs": epochs},
        "train_seconds": seconds,
        "train_budget_seconds": 15 * 60,
        "neg_elbo": ev["neg_elbo"],
        "iwae_nll": ev["iwae_nll"],
        "iwae_samples": ev["iwae_samples"],
        "target_iwae_nll_at_most": 90.0,
        "eval_seconds": time.perf_counter() - t0,
    }}


def markdown(results: dict) -> str:
    lines = ["| section | metric | value |", "|---|---|---|"]
    for section, values in results.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, float):
                value = f"{value:.4g}"
            lines.append(f"| {section} | {key} | {value} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="mnist5k and a few epochs (a smoke test)")
    p.add_argument("--only", choices=["probes", "iwae"], help="run one section (probes includes sparse)")
    p.add_argument("--ae-epochs", type=int, default=10, help="epochs for the dense and sparse autoencoders")
    p.add_argument("--vae-epochs", type=int, default=80, help="epochs for the IWAE VAE (fit 15 minutes here)")
    p.add_argument("--vae-lr", type=float, default=1e-3, help="peak learning rate (cosine schedule)")
    p.add_argument("--kl-warmup", type=int, default=5, help="epochs of KL warm-up")
    p.add_argument("--vae-hidden", type=lambda s: [int(v) for v in s.split(",")], default=[512, 256])
    p.add_argument("--vae-latent", type=int, default=32)
    p.add_argument("--iwae-samples", type=int, default=1000)
    p.add_argument("--workdir", default=str(ROOT / "benchmarks" / "results" / "quality"))
    p.add_argument("--out", help="write the JSON here too")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    data = load(args)
    workdir = Path(args.workdir)
    if workdir.exists():
        import shutil

        shutil.rmtree(workdir)
    results = {"dataset": data.name, "torch_threads": torch.get_num_threads(), "machine_load": os.getloadavg()}
    if args.only in (None, "probes"):
        results.update(section_probes_and_sparse(data, args, workdir))
    if args.only in (None, "iwae"):
        results.update(section_iwae(data, args, workdir))
    text = json.dumps(results, indent=2)
    print(text)
    print(markdown(results), file=sys.stderr)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
