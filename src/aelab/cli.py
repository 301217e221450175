"""The command line: ``aelab train | datasets | ...``. Every user error is one line and exit code 2."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import AelabError
from .version import __version__

# Each module adds its sub-command(s) with ``add_parsers(subparsers)`` and sets ``func`` on them.
COMMAND_MODULES = ["train", "evaluate", "report", "serve", "encode", "score", "oneclass"]


# Shown at the end of `aelab COMMAND --help` (a test keeps one for every sub-command).
EXAMPLES = {
    "train": ["aelab train --model vae --dataset mnist --epochs 30",
              "aelab train --model sparse --penalty topk --k 25 --patience 5 --tensorboard",
              "aelab train --model multimodal --modalities image,audio,text --audio-data digits.npz"],
    "datasets": ["aelab datasets"],
    "evaluate": ["aelab evaluate runs/vae-mnist5k", "aelab evaluate runs/vae-mnist5k --iwae-samples 0"],
    "compare": ["aelab compare runs/dense-mnist5k runs/vae-mnist5k --html comparison.html"],
    "report": ["aelab report runs/vae-mnist5k --method pca --points all"],
    "tour": ["aelab tour", "aelab tour --dataset mnist --threads 2"],
    "serve": ["aelab serve runs/vae-mnist5k", "aelab serve runs/ --port 8080"],
    "encode": ["aelab encode runs/conv-photos --input photos/ --out codes.npy",
               "aelab encode runs/dense-table --input new_rows.csv --out codes.parquet"],
    "score": ["aelab score runs/conv-mnist5k --input new_digits.npz --out scores.csv",
              "aelab score runs/vae-mnist5k --method elbo --threshold 180 --out test_scores.parquet"],
    "one-class": ["aelab one-class --dataset mnist --classes 0-9 --out runs/one-class",
                  "aelab one-class --dataset fashion-mnist --classes Sneaker,Bag",
                  "aelab one-class --dataset photos/ --image-size 32,32 --channels 3"],
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aelab", description="Learn representations without labels with autoencoders.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    parser.add_argument("--version", action="version", version=f"aelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f".commands.{name}", __package__).add_parsers(sub)
    for name, command in sub.choices.items():  # every sub-command's help ends with examples
        command.formatter_class = argparse.RawDescriptionHelpFormatter
        command.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES.get(name, ()))
    return parser


class _PrintHandler(logging.Handler):
    """The library's log messages (the ``aelab`` logger), printed as plain lines on the current stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), flush=True)


def show_library_messages() -> None:
    """The command line decides what is printed: the ``aelab`` logger's INFO messages, as plain lines."""
    logger = logging.getLogger("aelab")
    if not any(isinstance(h, _PrintHandler) for h in logger.handlers):
        logger.addHandler(_PrintHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv=None) -> int:
    show_library_messages()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version", "--debug"):
        argv = ["train", *argv]  # `aelab` alone trains the default model on the default dataset
    if argv == ["--debug"]:
        argv = ["--debug", "train"]
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args([*argv, "train"])
    try:
        return int(args.func(args) or 0)
    except AelabError as exc:
        if args.debug:
            raise
        one_line = str(exc).replace("\r", "\\r").replace("\n", "\\n")  # names echoed from input may hold newlines
        print(f"aelab: error: {one_line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aelab: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001
        code = getattr(exc, "exit_code", None)
        if code is None or args.debug:
            raise
        print(f"aelab: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
