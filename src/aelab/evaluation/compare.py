"""Compare runs: every metric of every run in one table, blank where a metric does not apply.

The printed table and ``comparison.md`` put the runs side by side (a column per run, a row per
metric) so that ten metrics of a few runs fit a terminal; ``comparison.csv`` has one row per run
and one column per metric, the shape pandas and spreadsheets expect. The CSV keeps full precision,
the Markdown four significant digits.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from ..io import atomic_write_text
from ..runfolder import CONFIG, open_run
from .evaluate import ensure_evaluation
from .specs import METRIC_KEYS, METRICS, spec_for

logger = logging.getLogger(__name__)
ID_KEYS = ("model", "dataset")  # rows above the metrics, to tell the runs apart


def collect(run_dirs, *, iwae_samples: int | None = None, progress: bool = True, log=logger.info) -> list[dict]:
    """The metrics of each run: its ``evaluation.json``, or a fresh evaluation when it has none
    (or its weights changed since). Each dict gets ``run``: the folder as given."""
    for run_dir in run_dirs:  # every folder checked before the first (slow) evaluation starts
        if not (Path(run_dir) / CONFIG).is_file():
            open_run(run_dir)  # raises the AelabError that says what is wrong with it
    rows = []
    for run_dir in run_dirs:
        values = ensure_evaluation(run_dir, iwae_samples=iwae_samples, progress=progress, log=log,
                                   message="evaluating {run_dir} (no up-to-date evaluation.json yet)")
        rows.append({**values, "run": str(run_dir)})
    return rows


def fmt(value) -> str:
    """A cell: blank for a missing metric, integers as they are, other numbers to four significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool) or isinstance(value, str):
        return str(value).replace("|", "\\|")  # a bare | would end the Markdown cell
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def image_metrics(evaluation: dict) -> dict:
    """The one-modality metrics a multimodal run's evaluation holds for its image modality, under their
    one-modality keys: ``test_mse`` (``reconstruction["image"]["mse"]``: the images decoded from the code of the
    image alone, the same definition) and ``linear_probe_accuracy``/``knn_accuracy`` (``probes["image"]``). Empty
    for a run without an image modality."""
    out = {}
    mse = ((evaluation.get("reconstruction") or {}).get("image") or {}).get("mse")
    if mse is not None:
        out["test_mse"] = mse
    probes = (evaluation.get("probes") or {}).get("image") or {}
    out.update({k: probes[k] for k in ("linear_probe_accuracy", "knn_accuracy") if k in probes})
    return out


def flat_metrics(row: dict) -> dict:
    """A run's metrics with the per-modality-pair ones spread out: ``retrieval/image->audio/recall@1``, ..."""
    flat = dict(row)
    for spec in METRICS:
        if spec.pairs and isinstance(row.get(spec.key), dict):
            flat.pop(spec.key)
            for pair, value in row[spec.key].items():
                if isinstance(value, dict):
                    flat.update({f"{spec.key}/{pair}/{k}": v for k, v in value.items()})
                else:
                    flat[f"{spec.key}/{pair}"] = value
    return flat


def pair_keys(rows: list[dict]) -> list[str]:
    """The spread-out per-pair keys any of ``rows`` has, in the table's order of metrics."""
    keys = []
    for spec in METRICS:
        if spec.pairs:
            keys += sorted({k for r in rows for k in flat_metrics(r) if k.startswith(spec.key + "/")})
    return keys


def markdown_table(rows: list[dict]) -> str:
    """The runs side by side: a header of run folders, a row per metric, blank cells where absent."""
    header = ["metric", *[fmt(r["run"]) for r in rows], "unit"]
    flat = [flat_metrics(r) for r in rows]
    body = [[key, *[fmt(r.get(key)) for r in flat], spec_for(key).unit if key not in ID_KEYS else ""]
            for key in (*ID_KEYS, *METRIC_KEYS, *pair_keys(rows))]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells, numeric=False):
        padded = [c.ljust(w) if i == 0 or i == len(cells) - 1 or not numeric else c.rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i in (0, len(widths) - 1) else "-" * (w + 1) + ":"
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *[line(cells, numeric=True) for cells in body]]) + "\n"


def csv_table(rows: list[dict]) -> str:
    """One row per run, a column per metric (full precision), empty cells where a metric does not apply."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = ["run", *ID_KEYS, *METRIC_KEYS, *pair_keys(rows)]
    writer.writerow(columns)
    for r in map(flat_metrics, rows):
        writer.writerow(["" if r.get(c) is None else r[c] for c in columns])
    return buf.getvalue()


def write_comparison(rows: list[dict], out_dir) -> tuple[Path, Path]:
    """Write ``comparison.md`` and ``comparison.csv`` into ``out_dir`` (atomically); return their paths."""
    out_dir = Path(out_dir)
    md, cs = out_dir / "comparison.md", out_dir / "comparison.csv"
    atomic_write_text(md, markdown_table(rows))
    atomic_write_text(cs, csv_table(rows))
    return md, cs
