"""``aelab score RUN --input PATH --out scores.csv``: how unusual each input is to a trained run, one row each."""
from __future__ import annotations

import io
import math
from pathlib import Path

SCORE_FORMATS = (".csv", ".parquet")


def _number(flag: str, value: str) -> float:
    from ..errors import AelabError

    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise AelabError(f"{flag} must be a finite number, got '{value}'")
    return number


def write_scores(path, id_name: str, ids: list[str], scores, flagged, labels=None):
    """One row per input: its id (``file`` or ``row``), ``score``, ``is_anomaly`` (0/1) and ``label`` when known,
    as .csv or .parquet (by the suffix of ``path``), atomically."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from ..errors import AelabError
    from ..io import atomic_write_bytes

    path = Path(path)
    if path.suffix.lower() not in SCORE_FORMATS:
        raise AelabError(f"cannot write scores as '{path.suffix or path.name}'; name the file .csv or .parquet")
    columns = {id_name: pa.array(ids, pa.string()), "score": pa.array(scores, pa.float64()),
               "is_anomaly": pa.array(flagged, pa.int8())}
    if labels is not None:
        columns["label"] = pa.array(labels, pa.string())
    buffer = io.BytesIO()
    (pa_csv.write_csv if path.suffix.lower() == ".csv" else pq.write_table)(pa.table(columns), buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise AelabError(f"cannot write {path} ({exc.strerror or exc}); choose another --out") from None
    return path


def cmd_score(args) -> int:
    from ..evaluation.anomaly import DEFAULT_CONTAMINATION, check_contamination, check_methods
    from ..predict import Predictor, run_inputs

    # every flag checked before the model and the data are loaded
    threshold = None if args.threshold is None else _number("--threshold", args.threshold)
    contamination = check_contamination(DEFAULT_CONTAMINATION if args.contamination is None
                                        else _number("--contamination", args.contamination))
    predictor = Predictor.from_run(args.run, device=args.device)
    if args.method is not None:
        check_methods(predictor.model, [args.method])
    inputs = run_inputs(predictor, args.input, skip_bad=args.skip_bad, progress=not args.quiet)
    scorer = predictor.scorer  # fitted on the run's training rows
    method = args.method or scorer.default
    scores = scorer.score(inputs.x, method)
    how = "given"
    if threshold is None:
        threshold = scorer.threshold(method, contamination)
        how = f"{contamination:g} of the training rows score above it"
    flagged = (scores > threshold).astype("int8")
    path = write_scores(args.out, inputs.id_name, inputs.ids, scores, flagged, inputs.labels)
    what = args.input or f"the test set of {args.run}"
    print(f"wrote {path}: {len(scores):,} {method} scores of {what}; {int(flagged.sum()):,} above the threshold "
          f"{threshold:.6g} ({how})")
    return 0


def add_parsers(sub) -> None:
    s = sub.add_parser("score", help="write how unusual each input is to a trained run (anomaly scores) to a table",
                       description="Score inputs with a trained run: higher = more unusual. Inputs are read as "
                                   "aelab encode reads them (a folder of images, an image file, a table, an "
                                   ".npz/.npy). Writes one row per input: its file or row, the score, is_anomaly (1 "
                                   "above the threshold) and the label when the input has one. The threshold is the "
                                   "training rows' score that a share --contamination of them lies above, or "
                                   "--threshold. Train with --normal-classes to learn what normal is from some "
                                   "classes alone.")
    s.add_argument("run", help="a run folder made by aelab train")
    s.add_argument("--input", default=None, metavar="PATH", help="what to score (default: the run's own test set)")
    s.add_argument("--out", required=True, metavar="FILE", help="where to write the scores: .csv or .parquet "
                                                               "(required; no default)")
    s.add_argument("--method", default=None, metavar="NAME",
                   help="the score: recon, relative, knn, mahalanobis, and for vae/conv-vae elbo, iwae "
                        "(default: the run's, recon)")
    limit = s.add_mutually_exclusive_group()
    limit.add_argument("--contamination", default=None, metavar="SHARE",
                       help="the share of training rows above the threshold, in (0, 0.5] (default: 0.05)")
    limit.add_argument("--threshold", default=None, metavar="X",
                       help="flag the inputs scoring above X instead (default: none, the --contamination quantile)")
    s.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable image files (one warning counts them) instead of stopping")
    s.add_argument("--device", default="auto", help="where to run the model (default: auto, CUDA when present)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_score)
