"""``aelab evaluate RUN`` and ``aelab compare RUN [RUN ...]``."""
from __future__ import annotations

from pathlib import Path

from ..errors import AelabError


def _samples(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        k = int(value)
    except ValueError:
        k = -1
    if k < 0:
        raise AelabError(f"--iwae-samples must be 0 (skip the IWAE bound) or a positive integer, got '{value}'")
    return k


def format_evaluation(result: dict) -> str:
    """The short table ``aelab evaluate`` prints: one metric a line, with its unit."""
    from ..evaluation.anomaly import anomaly_lines
    from ..evaluation.compare import flat_metrics, fmt, pair_keys
    from ..evaluation.specs import METRIC_KEYS, metric_unit
    from ..runfolder import EVALUATION

    lines = [f"{result.get('run', '')}: {result.get('model', '?')} on {result.get('dataset', '?')}, "
             f"{result.get('test_samples', 0):,} test samples, {result.get('seconds', 0):.1f} s"]
    for key in METRIC_KEYS:
        if key not in result:
            continue
        lines.append(f"  {key:<22} {fmt(result[key]):>9}  {metric_unit(key, result)}")
    flat = flat_metrics(result)  # multimodal runs: one line per modality pair and measure
    for key in pair_keys([result]):
        lines.append(f"  {key:<34} {fmt(flat[key]):>9}  {metric_unit(key.split('/')[0], result)}")
    if "anomaly" in result:  # a run trained on its normal classes: each score's AUROC and average precision
        lines += anomaly_lines(result["anomaly"])
    lines += [f"  note: {n}" for n in result.get("notes", [])]
    if result.get("run"):
        lines.append(f"wrote {Path(result['run']) / EVALUATION}")
    return "\n".join(lines)


def cmd_evaluate(args) -> int:
    from ..evaluation import DEFAULT_IWAE_SAMPLES, evaluate_run

    k = _samples(args.iwae_samples)
    if not args.quiet:
        print(f"evaluating {args.run} (variational models: IWAE bound with K={DEFAULT_IWAE_SAMPLES if k is None else k}"
              f" samples per image) ...", flush=True)
    result = evaluate_run(args.run, iwae_samples=k, progress=not args.quiet, device=args.device)
    print(format_evaluation(result))
    return 0


def cmd_compare(args) -> int:
    from ..evaluation.compare import collect, markdown_table, write_comparison

    k = _samples(args.iwae_samples)
    rows = collect(args.runs, iwae_samples=k, progress=not args.quiet, log=None if args.quiet else print)
    print(markdown_table(rows), end="")
    md, cs = write_comparison(rows, args.out)
    print(f"wrote {md} and {cs}")
    if args.html:
        from ..viz.report import write_comparison_report

        print(f"wrote {write_comparison_report([Path(r) for r in args.runs], Path(args.html))}")
    return 0


def add_parsers(sub) -> None:
    e = sub.add_parser("evaluate", help="measure a run: reconstruction, likelihood, probes, sparsity",
                       description="Evaluate a run folder on its test set; writes RUN/evaluation.json.")
    e.add_argument("run", metavar="RUN", help="a run folder written by aelab train")
    e.add_argument("--iwae-samples", metavar="K", default=None,
                   help="samples per image for the IWAE bound of variational models; 0 skips it (default: 100)")
    e.add_argument("--device", default="auto", help="where to evaluate: auto, cpu, cuda, cuda:N (default: auto)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("compare", help="all metrics of several runs side by side",
                       description="Print the metrics of runs side by side and write comparison.md and "
                                   "comparison.csv; runs without evaluation.json are evaluated first.")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by aelab train")
    c.add_argument("--out", metavar="DIR", default=".", help="folder for comparison.md and comparison.csv "
                                                            "(default: the current folder)")
    c.add_argument("--html", metavar="OUT.html", help="also write an HTML comparison report (default: none)")
    c.add_argument("--iwae-samples", metavar="K", default=None,
                   help="K for runs that must be evaluated first (default: 100)")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_compare)
