"""Sparse codes against pixels (issue 20): linear-probe accuracy against L0 for every sparse penalty.

Each penalty of the sparse family is swept over its own sparsity knob (topk and batchtopk: ``k``; wta: the share of
the batch each unit fires on; l1 and kl: the penalty weight) on the same data with the same budget (width, epochs,
optimiser), and each trained model is measured as ``aelab evaluate`` measures it: the linear probe on every train
code (``aelab.evaluation.probes``, the L2 strength chosen on held-out train rows), ``l0`` (mean active units per
test image) and the test MSE. The pixel baseline is the same probe on the raw pixels of the same split.

    AELAB_DATA_DIR=../shared/data python benchmarks/sparse_probe.py --out probe_l0.json --plot probe_l0.png
    python benchmarks/sparse_probe.py --dataset mnist5k --epochs 10 --penalties topk wta     # a quick look

Prints JSON (stdout or ``--out``): per run the penalty, its knob, the probe accuracy, l0, dead fraction, test MSE
and training seconds; the pixel probe; the published numbers beside them (the k-sparse autoencoder, Makhzani &
Frey 2014, Table 1: 1,000 units, k = 25, logistic regression, 1.35 % error; the fully connected winner-take-all
autoencoder, Makhzani & Frey 2015: 2,000 units, 5 % lifetime sparsity, linear SVM, 1.2 % error); and the machine's
CPUs, threads and load average around the run. ``--plot`` draws probe accuracy against L0 (log scale), one line per
penalty, the pixel probe as a horizontal line and the papers as stars.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

import aelab
from aelab.data.batches import as_float
from aelab.evaluation.metrics import dead_fraction, l0
from aelab.evaluation.probes import pixel_probe, probe_accuracies

# (penalty, the setting swept, its values): from dense-ish to very sparse codes, the same width for all
SWEEPS = {
    "topk": ("k", [10, 25, 50, 100]),
    "batchtopk": ("k", [10, 25, 50]),
    "wta": ("target_sparsity", [0.02, 0.05, 0.1]),
    "l1": ("sparsity_weight", [3e-5, 1e-4, 3e-4]),
    "kl": ("sparsity_weight", [1e-3, 3e-3, 1e-2]),
}
PAPERS = [
    {"paper": "k-sparse autoencoder (Makhzani & Frey 2014, Table 1)", "units": 1000, "l0": 25,
     "probe": "logistic regression", "accuracy": 0.9865},
    {"paper": "FC winner-take-all autoencoder (Makhzani & Frey 2015)", "units": 2000, "l0": 100,
     "probe": "linear SVM", "accuracy": 0.988},
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--latent-dim", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=5, help="the same budget for every run")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-schedule", default="cosine")
    p.add_argument("--penalties", nargs="+", default=list(SWEEPS), choices=list(SWEEPS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--plot", default=None, help="write the probe-vs-L0 figure here (PNG)")
    args = p.parse_args(argv)

    data = aelab.load_dataset(args.dataset)
    load_before = os.getloadavg()
    pixels = pixel_probe(data.x_train, data.y_train, data.x_test, data.y_test, seed=args.seed,
                         num_classes=len(data.classes), name=data.name)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for penalty in args.penalties:
            knob, values = SWEEPS[penalty]
            for value in values:
                runs.append(measure(data, penalty, knob, value, args, Path(tmp) / f"{penalty}-{value}"))
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    result = {
        "dataset": data.name, "latent_dim": args.latent_dim, "epochs": args.epochs, "lr": args.lr,
        "lr_schedule": args.lr_schedule, "seed": args.seed,
        "pixel_probe_accuracy": pixels["pixel_probe_accuracy"], "runs": runs, "papers": PAPERS,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__, "load_before": load_before, "load_after": os.getloadavg()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.plot:
        plot(result, args.plot)
    return 0


def measure(data, penalty: str, knob: str, value, args, out: Path) -> dict:
    """Train one sparse model (``penalty``, ``knob`` = ``value``) and measure its codes as aelab evaluate does."""
    model = aelab.build_model("sparse", data.input_shape, latent_dim=args.latent_dim, penalty=penalty,
                              **{knob: value})
    run = aelab.train(model, data, epochs=args.epochs, lr=args.lr, lr_schedule=args.lr_schedule, seed=args.seed,
                      out=out, report=False, progress=False)
    model = run.model.eval()
    with torch.inference_mode():
        train_codes = torch.cat([model.encode(as_float(b)) for b in data.x_train.split(10_000)])
        x_test = as_float(data.x_test)
        test_codes = model.encode(x_test)
        mse = float((model.reconstruct(x_test) - x_test).pow(2).mean())
    probe = probe_accuracies(train_codes, data.y_train, test_codes, data.y_test, seed=args.seed,
                             num_classes=len(data.classes), knn=False)
    return {"penalty": penalty, knob: value, "knob": knob, "value": value,
            "linear_probe_accuracy": probe["linear_probe_accuracy"], "linear_probe_c": probe["linear_probe_c"],
            "l0": l0(test_codes), "dead_fraction": dead_fraction(test_codes), "test_mse": mse,
            "train_seconds": round(sum(r.get("seconds", 0.0) for r in run.history), 1)}


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for penalty in dict.fromkeys(r["penalty"] for r in result["runs"]):
        rows = sorted((r for r in result["runs"] if r["penalty"] == penalty), key=lambda r: r["l0"])
        ax.plot([r["l0"] for r in rows], [r["linear_probe_accuracy"] for r in rows], "o-", label=penalty)
    ax.axhline(result["pixel_probe_accuracy"], color="0.3", ls="--", label="pixels")
    for paper in result["papers"]:
        ax.plot(paper["l0"], paper["accuracy"], "*", ms=13, color="k")
        ax.annotate(paper["paper"].split(" (")[0], (paper["l0"], paper["accuracy"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("L0: active units per test image (log scale)")
    ax.set_ylabel("linear-probe test accuracy")
    ax.set_title(f"Sparse codes against pixels: {result['dataset']}, {result['latent_dim']} units, "
                 f"{result['epochs']} epochs each", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
