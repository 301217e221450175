"""The one-class protocol on full MNIST (or another labelled dataset), timed: prints and writes one JSON.

    python benchmarks/one_class.py --out /tmp/one_class.json                        # the recipe, digits 0-9
    python benchmarks/one_class.py --classes 2,5,8 --epochs 20 --out /tmp/oc.json    # a variation
    python benchmarks/one_class.py --dataset fashion-mnist --out /tmp/fashion.json

Runs ``aelab.oneclass.one_class`` (what ``aelab one-class`` runs: one model per normal class, trained on that class's
training images, the whole test set scored) into a temporary folder, then scores the same models' test sets by
every other score of ``--also`` (no retraining), so one run gives the table of scores side by side. The JSON holds
the AUROC per class and its mean for each score, the protocol's own seconds (training and scoring of the chosen
score: what the 20-minute target is about), the seconds the extra scores took, the published Deep SVDD and DCAE
numbers (Ruff et al. 2018, Table 1), and the machine: CPUs, torch threads and the load average before and after
(other people's processes on a shared machine slow every number here).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None, help="default: AELAB_DATA_DIR/<dataset>, then ../shared/data/<dataset>")
    p.add_argument("--classes", default=None, help="default: every class")
    p.add_argument("--model", default=None, help="default: the recipe's")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument("--score", default=None, help="default: the recipe's")
    p.add_argument("--also", default="recon,knn,mahalanobis,relative+knn",
                   help="more scores of the same models, comma-separated ('' for none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="write the runs and the report here instead of a temporary folder")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)

    import torch

    import aelab
    from aelab.evaluation.anomaly import anomaly_truth, auroc_ap
    from aelab.oneclass import RESULT, class_scores, one_class

    data_dir = args.data_dir or _shared(args.dataset)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep or Path(tmp) / "one-class")
        t0 = time.perf_counter()
        one_class(args.dataset, args.classes, out=out, data_dir=data_dir, model=args.model, epochs=args.epochs,
                  score=args.score, seed=args.seed, threads=args.threads, progress=False, log=print)
        wall = time.perf_counter() - t0
        result = json.loads((out / RESULT).read_text())
        scores = {result["score"]: {"auroc": result["auroc"], "mean": result["mean"]}}
        also = [s for s in args.also.split(",") if s and s != result["score"]]
        t1 = time.perf_counter()
        if also:
            torch.set_num_threads(args.threads)
            data = aelab.load_dataset(args.dataset, data_dir)
            for c, run_dir in result["runs"].items():
                model = aelab.open_run(run_dir).model.eval()
                truth = anomaly_truth(data.y_test, [int(c)])
                for score in also:
                    auroc = auroc_ap(class_scores(model, data, int(c), score, seed=args.seed), truth)["auroc"]
                    scores.setdefault(score, {"auroc": {}})["auroc"][c] = auroc
            for entry in scores.values():
                entry["mean"] = float(np.mean(list(entry["auroc"].values())))
    summary = {
        "dataset": result["dataset"], "model": result["model"], "settings": result["settings"],
        "epochs": result["epochs"], "score": result["score"], "scores": scores,
        "auroc": result["auroc"], "mean": result["mean"], "average_precision": result["average_precision"],
        "seconds": result["seconds"], "seconds_per_class": result["seconds_per_class"], "wall_seconds": wall,
        "extra_scores_seconds": time.perf_counter() - t1,
        "deep_svdd": result["deep_svdd"], "dcae": result["dcae"], "published_source": result["published_source"],
        "cpus": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _shared(dataset: str) -> str | None:
    """AELAB_DATA_DIR/<dataset> when set, else the repository's ../shared/data/<dataset> when present."""
    if os.environ.get("AELAB_DATA_DIR"):
        return None  # aelab looks there itself
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / dataset
    return str(shared) if shared.is_dir() else None


if __name__ == "__main__":
    sys.exit(main())
