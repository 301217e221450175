"""``aelab encode RUN --input PATH --out FILE``: a trained model's codes of any input the run can read, as a file."""
from __future__ import annotations


def cmd_encode(args) -> int:
    from ..predict import Predictor, encode_inputs, write_codes

    predictor = Predictor.from_run(args.run, device=args.device)
    encoded = encode_inputs(predictor, args.input, skip_bad=args.skip_bad, progress=not args.quiet)
    path = write_codes(encoded, args.out)
    what = args.input or f"the test set of {args.run}"
    print(f"wrote {path}: {tuple(encoded.codes.shape)} codes of {what}"
          + ("" if encoded.labels is None else ", with labels"))
    return 0


def add_parsers(sub) -> None:
    e = sub.add_parser("encode", help="write a trained model's codes of some inputs to a file (.npy, .csv, .parquet)",
                       description="Encode inputs with a trained run: a folder of images, an image file, a table or an "
                                   ".npz/.npy, read as the run reads its data (the same image size and channels, the same "
                                   "table standardisation and one-hot columns). Writes .npy (N, latent), or .csv / "
                                   ".parquet with one column per code dimension after the file name or row and the label.")
    e.add_argument("run", help="a run folder made by aelab train")
    e.add_argument("--input", default=None, metavar="PATH",
                   help="what to encode (default: the run's own test set)")
    e.add_argument("--out", required=True, metavar="FILE", help="where to write the codes: .npy, .csv or .parquet (required; no default)")
    e.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable image files (one warning counts them) instead of stopping")
    e.add_argument("--device", default="auto", help="where to run the model (default: auto, CUDA when present)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_encode)
