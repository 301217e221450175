"""``aelab report RUN`` (a self-contained HTML report of one run) and ``aelab tour`` (the whole
autoencoder module in one command: four models trained, evaluated, shown and compared; :func:`aelab.api.tour`)."""
from __future__ import annotations

from pathlib import Path

from ..errors import AelabError

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
    from ..api import tour

    tour(args.dataset, epochs=epochs, out=args.out, data_dir=args.data_dir, threads=threads, progress=not args.quiet,
         log=print)
    return 0


def add_parsers(sub) -> None:
    from ..api import TOUR
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
                       description="Train a dense, a sparse (TopK: 25 of 256 units per image), a convolutional and a variational "
                                   "autoencoder, evaluate each, write their runs and reports and one comparison "
                                   "report. About two minutes on 2 CPU cores (benchmarks/README.md, Results, The tour).")
    t.add_argument("--dataset", default="mnist5k", help="dataset name (default: mnist5k; mnist for the full set)")
    t.add_argument("--data-dir", default=None, metavar="DIR", help="folder holding the dataset's files (default: AELAB_DATA_DIR/<dataset>, then the cache)")
    t.add_argument("--epochs", default=None, metavar="N",
                   help="epochs for every model (default: per model, " +
                        ", ".join(f"{s['model']} {s['epochs']}" for s in TOUR) + " on mnist5k)")
    t.add_argument("--out", default=None, metavar="DIR", help="folder for the runs and report.html "
                                                             "(default: runs/tour-<dataset>)")
    t.add_argument("--threads", default="1", metavar="N",
                   help="CPU threads per operation (default: 1, the fastest on a shared 2-core machine; "
                        "raise it on an idle many-core one)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_tour)
