"""``aelab report RUN`` (a self-contained HTML report of one run) and ``aelab tour`` (the whole
autoencoder module in one command: four models trained, evaluated, shown and compared)."""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import AelabError

# The tour: (registry name, epochs on mnist5k, what a newcomer should know about it). The epochs keep
# the whole tour within about three minutes on a 2-core laptop CPU while every model learns digits
# one can recognise; the models use their registry defaults (the sparse one its KL penalty).
TOUR = [
    ("dense", 30, "the classic autoencoder: an MLP squeezes each image into a 32-number code and back"),
    ("sparse", 30, "256 code units; a KL penalty pulls each unit's mean activation to {rho:.0%}: units learn strokes"),
    ("conv", 8, "convolutions see local patterns: sharper reconstructions from the same 32-number code"),
    ("vae", 30, "the code is a Gaussian posterior, trained on the ELBO: the model can generate new digits"),
]
TOUR_SAMPLES = 4000  # the tour's epochs are for mnist5k's 4,000 train images; other datasets keep the samples seen


def tour(dataset: str = "mnist5k", *, epochs: int | None = None, out: str | Path | None = None,
         data_dir: str | None = None, threads: int = 1, progress: bool = True, log=print) -> Path:
    """Train, evaluate and report a dense, a sparse (KL), a convolutional and a variational autoencoder on
    ``dataset`` into ``out`` (default ``runs/tour-<dataset>``, numbered if taken); return the comparison
    report's path (``out/report.html``). ``epochs`` (default: per model, see :data:`TOUR`; on a larger
    dataset scaled to see as many samples) applies to every model. ``threads``: CPU threads per
    operation (torch, BLAS, OpenMP) while the tour runs; the caller's settings are restored after."""
    import torch
    from threadpoolctl import threadpool_limits

    if threads < 1:
        raise AelabError(f"--threads must be at least 1, got {threads}")
    # One thread by default: these models are small, and on a 2-core machine where anything else runs,
    # two spinning OpenMP threads per op made the whole tour 4x slower (281 s against 69 s, load average 3).
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            return _tour(dataset, epochs, out, data_dir, progress, log)
    finally:
        torch.set_num_threads(previous)


def _tour(dataset, epochs, out, data_dir, progress, log) -> Path:
    from .. import RunConfig, load_dataset, train
    from ..evaluation.compare import markdown_table
    from ..viz.report import write_comparison_report, write_run_report

    if epochs is not None and epochs < 1:
        raise AelabError(f"--epochs must be at least 1, got {epochs}")
    out = Path(out) if out is not None else _fresh(Path("runs") / f"tour-{dataset}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AelabError(f"{out} already exists and is not empty; choose another --out or remove it")
    say = log or (lambda *a, **k: None)
    t0 = time.perf_counter()
    data = load_dataset(dataset, data_dir)
    if not data.is_images:
        raise AelabError(f"the tour trains convolutional models, which need images; {dataset} holds "
                         f"{data.input_shape} features: use aelab train --model dense on it")
    scale = TOUR_SAMPLES / len(data.x_train)
    say(f"aelab tour: four autoencoders on {data.name} ({len(data.x_train):,} train / {len(data.x_test):,} test "
        f"images), written to {out}/")
    run_dirs = []
    for i, (name, default_epochs, what) in enumerate(TOUR, start=1):
        n = epochs or max(1, round(default_epochs * scale))
        what = what.format(rho=RunConfig().target_sparsity)
        say(f"\n[{i}/{len(TOUR)}] {name}: {what} ({n} epoch{'s' * (n > 1)})")
        t = time.perf_counter()
        run = train(name, data, out=out / name, epochs=n, report=False, progress=progress, log=None)
        write_run_report(run, data, progress=False, log=(lambda m: say(f"      {m}")) if progress else None)
        run_dirs.append(run.path)
        say(f"      test loss {run.last['test_loss']:.4g}, {time.perf_counter() - t:.0f} s; report: "
            f"{run.path / 'report.html'}")
    html = write_comparison_report(run_dirs, out / "report.html", data, progress=False, log=None)
    from ..evaluation import read_evaluation

    rows = [{**(read_evaluation(r) or {}), "run": r.name} for r in run_dirs]
    say("\n" + markdown_table(rows).rstrip())
    say(f"\ntour done in {time.perf_counter() - t0:.0f} s. Open the comparison report in a browser:\n  {html}")
    return html


def _fresh(base: Path) -> Path:
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def cmd_report(args) -> int:
    from ..viz.report import write_run_report

    points = _points(args.points)
    path = write_run_report(Path(args.run), method=args.method, n_points=points, progress=not args.quiet,
                            log=None if args.quiet else print)
    print(f"wrote {path}")
    return 0


def _points(value: str) -> int | None:
    if value.lower() == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 2:
        raise AelabError(f"--points must be a number of codes (at least 2) or 'all', got '{value}'")
    return n


def cmd_tour(args) -> int:
    epochs = None
    if args.epochs is not None:
        try:
            epochs = int(args.epochs)
        except ValueError:
            raise AelabError(f"--epochs must be an integer, got '{args.epochs}'") from None
    try:
        threads = int(args.threads)
    except ValueError:
        raise AelabError(f"--threads must be an integer, got '{args.threads}'") from None
    tour(args.dataset, epochs=epochs, out=args.out, data_dir=args.data_dir, threads=threads, progress=not args.quiet)
    return 0


def add_parsers(sub) -> None:
    from ..viz.latent import DEFAULT_POINTS, METHODS

    r = sub.add_parser("report", help="write RUN/report.html: metrics, config and every figure, in one file",
                       description="Write a self-contained HTML report of a run (figures embedded, no network): "
                                   "evaluates the run first if needed and redraws every figure.")
    r.add_argument("run", metavar="RUN", help="a run folder written by aelab train")
    r.add_argument("--method", choices=METHODS, default="tsne",
                   help="projection of the latent map: tsne, pca, or umap (needs umap-learn) (default: tsne)")
    r.add_argument("--points", default=str(DEFAULT_POINTS), metavar="N",
                   help=f"test codes on the latent map, or 'all' (default: {DEFAULT_POINTS})")
    r.add_argument("--quiet", action="store_true", help="no progress messages")
    r.set_defaults(func=cmd_report)

    t = sub.add_parser("tour", help="the whole module in one command: dense, sparse, conv and VAE, "
                                    "trained, compared and shown",
                       description="Train a dense, a sparse (KL penalty), a convolutional and a variational "
                                   "autoencoder, evaluate each, write their runs and reports and one comparison "
                                   "report. About three minutes on a laptop CPU with the defaults.")
    t.add_argument("--dataset", default="mnist5k", help="dataset name (default: mnist5k; mnist for the full set)")
    t.add_argument("--data-dir", default=None, metavar="DIR", help="folder holding the dataset's files")
    t.add_argument("--epochs", default=None, metavar="N",
                   help="epochs for every model (default: per model, " +
                        ", ".join(f"{n} {e}" for n, e, _ in TOUR) + " on mnist5k)")
    t.add_argument("--out", default=None, metavar="DIR", help="folder for the runs and report.html "
                                                             "(default: runs/tour-<dataset>)")
    t.add_argument("--threads", default="1", metavar="N",
                   help="CPU threads per operation (default: 1, the fastest on a shared 2-core machine; "
                        "raise it on an idle many-core one)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_tour)
