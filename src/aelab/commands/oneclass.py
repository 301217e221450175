"""``aelab one-class``: the one-class protocol of the literature in one command (:func:`aelab.oneclass.one_class`)."""
from __future__ import annotations

from ..errors import AelabError


def _int(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise AelabError(f"{flag} must be an integer, got '{value}'") from None


def cmd_one_class(args) -> int:
    from ..oneclass import one_class

    options = {}
    if args.image_size is not None:
        options["image_size"] = args.image_size
    if args.channels is not None:
        options["channels"] = _int(args.channels, "--channels")
    if args.test_fraction is not None:
        try:
            options["test_fraction"] = float(args.test_fraction)
        except ValueError:
            raise AelabError(f"--test-fraction must be a number, got '{args.test_fraction}'") from None
    if args.label_column is not None:
        options["label_column"] = args.label_column
    if args.skip_bad:
        options["skip_bad"] = True
    one_class(args.dataset, args.classes, out=args.out, data_dir=args.data_dir, model=args.model,
              epochs=_int(args.epochs, "--epochs"), score=args.score, seed=_int(args.seed, "--seed"),
              threads=_int(args.threads, "--threads"), progress=not args.quiet, log=print, **options)
    return 0


def add_parsers(sub) -> None:
    from ..oneclass import RECIPE
    from ..evaluation.anomaly import SCORES

    p = sub.add_parser("one-class", help="the one-class anomaly protocol: each class normal in turn, AUROC per class",
                       description="The one-class protocol of Ruff et al. 2018 (Deep SVDD, Table 1): each class in "
                                   "turn is normal and a model is trained on its training rows alone; the whole test "
                                   "set is scored, every other class being an anomaly. Writes DIR/one_class.json, "
                                   "DIR/report.html (the AUROC per class beside Deep SVDD's and the autoencoder "
                                   "baseline's, ROC curves, the most anomalous test images) and a run folder per "
                                   "class in DIR/runs/. The recipe: a " + RECIPE["model"] + " autoencoder, "
                                   f"{RECIPE['epochs']} epochs, score '{RECIPE['score']}' (benchmarks/README.md, "
                                   "Results, One-class MNIST).")
    p.add_argument("--dataset", default="mnist", metavar="NAME|PATH",
                   help="dataset name or your own labelled data (a folder of class folders, a table with "
                        "--label-column, an .npz) (default: mnist)")
    p.add_argument("--classes", default=None, metavar="SPEC",
                   help="the classes that are normal in turn: a range, a list or class names, like 0-9, 2,5,8 or "
                        "Sneaker,Bag (default: every class)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder for one_class.json, report.html and the runs "
                                                             "(default: runs/one-class-<dataset>)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder holding the dataset's files (default: AELAB_DATA_DIR/<dataset>, then the cache)")
    p.add_argument("--image-size", default=None, metavar="H,W",
                   help="your own images: bring every image to this size (default: the most common)")
    p.add_argument("--channels", default=None, metavar="1|3",
                   help="your own images: 1 (grey) or 3 (RGB) channels (default: the most common)")
    p.add_argument("--test-fraction", default=None, metavar="F",
                   help="your own data without a test split: the share of each class held out (default: 0.2)")
    p.add_argument("--label-column", default=None, metavar="NAME",
                   help="your own table: the column holding each row's label (default: none)")
    p.add_argument("--skip-bad", action="store_true", help="your own images: skip unreadable files instead of stopping")
    p.add_argument("--model", default=None, metavar="NAME",
                   help=f"another model family than the recipe's, with its defaults (default: {RECIPE['model']})")
    p.add_argument("--epochs", default=None, metavar="N", help=f"epochs per class (default: {RECIPE['epochs']})")
    p.add_argument("--score", default=None, metavar="NAME",
                   help=f"the anomaly score: {', '.join(SCORES)}, or several joined by '+' "
                        f"(summed after standardising each by its training scores) (default: {RECIPE['score']})")
    p.add_argument("--seed", default="0", metavar="N", help="seeds every model (default: 0)")
    p.add_argument("--threads", default="1", metavar="N",
                   help="CPU threads per operation (default: 1, the fastest on a shared 2-core machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_one_class)
