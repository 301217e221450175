"""One module per group of sub-commands; each exposes ``add_parsers(subparsers)``."""
