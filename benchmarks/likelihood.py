"""What each likelihood option of the VAE buys (issue 21): each added alone to a base VAE, the same epochs, then the
IWAE estimate of the test negative log-likelihood.

    python benchmarks/likelihood.py                          # every row of ROWS, 20 epochs each (hours on 2 cores)
    python benchmarks/likelihood.py --rows base,gated --epochs 20 --threads 1
    python benchmarks/likelihood.py --quick                  # mnist5k, 1 epoch, K = 10: checks the script

Base: 784-512-256-32, ReLU MLP, N(0, I) prior, ELBO, float32, batch 128, Adam 1e-3 with a cosine decay, KL warm-up
over 5 epochs, dynamically binarized MNIST, seed 0 (``BASE``). Each row of ``ROWS`` changes what it names. The NLL
is the IWAE bound with ``--samples`` (1,000) importance samples on the first ``--test-images`` (2,000) test images,
binarized once with a seeded generator: a subset, so compare rows with each other, not with the whole test set
(that is ``aelab evaluate RUN --iwae-samples 1000``). One JSON line per row to ``--out`` (appended as each row
ends) and stdout; the runs stay in ``--workdir``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import load_average, mnist_dir  # noqa: E402

import aelab  # noqa: E402
from aelab.data import as_float  # noqa: E402
from aelab.evaluation import iwae_nll  # noqa: E402

BASE = dict(binarize=True, latent_dim=32, hidden_dims=[512, 256], batch_size=128, lr=1e-3, lr_schedule="cosine",
            kl_warmup=5, epochs=20)
BATCH_512 = dict(batch_size=512, lr=2e-3, precision="bf16")  # "base 2": larger batches under bfloat16 autocast
ROWS = {
    "base": {},
    "gated": dict(hidden_block="gated"),
    "mog": dict(prior="mog"),
    "iwae5": dict(iwae_k=5),
    "iwae5-reparam": dict(iwae_k=5, iwae_gradient="reparam"),
    "no-warmup": dict(kl_warmup=0),
    "b512bf16": BATCH_512,
    "b512bf16-iwae5": dict(BATCH_512, iwae_k=5),
    "b512bf16-vamp": dict(BATCH_512, prior="vamp"),
}


def run_row(name: str, data, args) -> dict:
    settings = {**BASE, "epochs": args.epochs, **ROWS[name]}
    out = Path(args.workdir) / name
    t0 = time.perf_counter()
    run = aelab.train("vae", data, out=out, progress=False, report=False, log=None, **settings)
    train_seconds = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    x = torch.bernoulli(as_float(data.x_test[:args.test_images]), generator=torch.Generator().manual_seed(1234))
    t1 = time.perf_counter()
    nll = float(iwae_nll(run.model, x, args.samples, seed=1).mean())
    return dict(name=name, settings=settings, train_seconds=train_seconds,
                sum_epoch_seconds=sum(r["seconds"] for r in rows), test_neg_elbo=rows[-1].get("test_neg_elbo"),
                iwae_nll=nll, K=args.samples, n_test=len(x), eval_seconds=time.perf_counter() - t1,
                threads=torch.get_num_threads(), load_average=load_average())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    p.add_argument("--epochs", type=int, default=BASE["epochs"], help="epochs of every row (default 20)")
    p.add_argument("--samples", type=int, default=1000, help="K of the IWAE bound (default 1000)")
    p.add_argument("--test-images", type=int, default=2000, help="test images scored (default 2000)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="mnist5k, 1 epoch, K = 10, 200 test images")
    p.add_argument("--workdir", default="likelihood-runs", help="where the runs go (default ./likelihood-runs)")
    p.add_argument("--out", default=None, help="append one JSON line per row here")
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for name in rows:
        if name not in ROWS:
            p.error(f"unknown row {name!r}; choose from {', '.join(ROWS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        data = aelab.load_dataset("mnist5k")
        args.epochs, args.samples, args.test_images = 1, 10, 200
    else:
        data = aelab.load_dataset("mnist", data_dir=mnist_dir(None))
    for name in rows:
        result = run_row(name, data, args)
        line = json.dumps(result)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
