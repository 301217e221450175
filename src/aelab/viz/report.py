"""Self-contained HTML reports: one file with the figures embedded (base64 PNGs), inline CSS, no
scripts and no network: it opens from a USB stick or an e-mail attachment.

- :func:`write_run_report`: ``RUN/report.html``, the config, the metrics of ``evaluation.json``
  (evaluated first when missing or stale) and every figure that applies to the run.
- :func:`write_comparison_report`: several runs on one page: one metrics table, the same test
  digits reconstructed by each run, a bar chart of the metrics and every run's latent map.
"""
from __future__ import annotations

import base64
import datetime
import html
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DATA_OPTIONS
from ..data.batches import as_float
from ..data.dataset import Dataset
from ..errors import AelabError
from ..io import atomic_write_text
from ..models.base import MULTIMODAL, has
from ..registry import MODELS, accepted_fields
from ..runfolder import Run, load_run_data, open_run
from ..version import __version__
from ..evaluation import METRIC_KEYS, ensure_evaluation
from ..evaluation.anomaly import anomaly_rows
from ..evaluation.chance import chance_warnings, with_references
from ..evaluation.compare import fmt, image_metrics
from ..evaluation.specs import METRICS, SPECS, metric_unit
from .figures import plot_metric_bars, plot_reconstruction_comparison
from .latent import DEFAULT_POINTS
from .multimodal import multimodal_figure_paths, write_multimodal_figures
from .run_figures import class_balanced_indices, figure_paths, write_latent_map, write_run_figures

logger = logging.getLogger(__name__)
REPORT = "report.html"
HIDDEN_SETTINGS = ("report",)  # run settings that say nothing inside a report (it was written, whatever they say)
LOWER_IS_BETTER = {spec.key for spec in METRICS if spec.better == "lower"}
HIGHER_IS_BETTER = {spec.key for spec in METRICS if spec.better == "higher"}
CSS = """
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2329;background:#f4f5f7;margin:0}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:19px;margin:34px 0 10px;border-bottom:2px solid #dde1e6;padding-bottom:4px}
h3{font-size:16px;margin:0 0 6px}.sub{color:#5b6570;margin:0 0 14px}
nav a{margin-right:14px;color:#2458a6;text-decoration:none}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001;font-size:14px}
th,td{padding:5px 12px;text-align:left;border-bottom:1px solid #e6e9ed}th{background:#eef1f4;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,Menlo,Consolas,monospace}
td.note{color:#5b6570;font-size:13px}tr:nth-child(even) td{background:#fafbfc}td.best{font-weight:700;color:#0b6b2c}
figure{background:#fff;margin:16px 0;padding:14px 16px;box-shadow:0 1px 2px #0001;border-radius:4px}
figure img{max-width:100%;height:auto;display:block;margin:6px auto}
figcaption{color:#4a535c;font-size:14px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:14px}
.grid figure{margin:0}.notes{color:#5b6570;font-size:13px}
table+h3,table+h2,table+p{margin-top:24px}
th.group{text-align:center;border-bottom:1px solid #d5dae0}
table.epochs th,table.epochs td{padding:4px 9px}
.warn{background:#fff4e5;border-left:4px solid #d9822b;padding:8px 14px;margin:14px 0;border-radius:3px}
.warn p{margin:4px 0}.warn strong{color:#8a4b08}
"""


def embed_png(path: str | Path) -> str:
    """The PNG at ``path`` as a ``data:`` URI, for an ``<img src>`` that needs no file beside the page."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _figure(path: Path, title: str, caption: str = "", fig_id: str = "") -> str:
    ident = f' id="{_e(fig_id)}"' if fig_id else ""
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return (f'<figure{ident}><h3>{_e(title)}</h3><img alt="{_e(title)}" data-file="{_e(path.name)}" '
            f'src="{embed_png(path)}">{cap}</figure>')


def _table(header: list[str], rows: list[list], numeric_from: int | None = 1, best: dict | None = None,
           numeric_count: int = 1_000) -> str:
    """An HTML table; ``numeric_count`` cells from column ``numeric_from`` on (None: none) are right-aligned
    as numbers; ``best`` marks cells {(row, col): True} as the best of their row or column."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            cls = ["num"] if numeric_from is not None and numeric_from <= j < numeric_from + numeric_count else []
            if best and best.get((i, j)):
                cls.append("best")
            cells.append(f'<td class="{" ".join(cls)}">{_e(cell)}</td>' if cls else f"<td>{_e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _page(title: str, body: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n"
            f'<p class="notes">Written by aelab {_e(__version__)} on {stamp}. One self-contained file: '
            f"the figures are embedded.</p></main></body></html>\n")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def metric_rows(evaluation: dict) -> list[list[str]]:
    """The rows (metric, value, unit, better, meaning) of a run's metrics table."""
    rows = []
    for key in METRIC_KEYS:
        if key not in evaluation:
            continue
        unit = metric_unit(key, evaluation)
        rows.append([key, fmt(evaluation[key]), unit, SPECS[key].better, SPECS[key].meaning])
    return rows


def _load_data(cfg, data):
    if data is not None:
        return data
    return load_run_data(cfg)


def multimodal_tables(evaluation: dict) -> str:
    """The metrics of a multimodal run as HTML: retrieval per ordered pair (recall@1/5/10, mAP), coherence per
    pair beside the oracle that judges it, and what each modality's shared code tells a probe."""
    parts = []
    retrieval = evaluation.get("retrieval") or {}
    if retrieval:
        cols = ["recall@1", "recall@5", "recall@10", "map"]
        rows = [[pair, *[fmt(v.get(c)) for c in cols]] for pair, v in retrieval.items()]
        parts += [f"<h3>Retrieval</h3><p>{_e(SPECS['retrieval'].meaning)}.</p>",
                  _table(["query -> gallery", *cols], rows)]
    coherence = evaluation.get("coherence") or {}
    if coherence:
        oracle = evaluation.get("oracle_accuracy") or {}
        rows = [[pair, fmt(v), fmt(oracle.get(pair.split("->")[-1]))] for pair, v in coherence.items()]
        parts += [f"<h3>Coherence</h3><p>{_e(SPECS['coherence'].meaning)}; beside it, the judging classifier's "
                  f"own test accuracy (oracle_accuracy: {_e(SPECS['oracle_accuracy'].meaning)}).</p>",
                  _table(["source -> generated", "coherence", "oracle accuracy of the target"], rows)]
    for key, title in (("reconstruction", "Reconstruction of each modality"),
                       ("probes", "Probes on the shared code, per modality encoded")):
        values = evaluation.get(key) or {}
        if values:
            cols = _columns(values)
            rows = [[m, *[fmt(v.get(c)) if isinstance(v, dict) else fmt(v) for c in cols]] for m, v in values.items()]
            parts += [f"<h3>{_e(title)}</h3>", _table(["modality", *cols], rows)]
    return "\n".join(parts)


FIRST_COLUMNS = ("linear_probe_accuracy", "knn_accuracy", "mse", "mse_joint", "char_accuracy", "char_accuracy_joint")


def _columns(values: dict) -> list[str]:
    """The columns of a per-modality table: every key whose value is a number (or a flag) in some row, the
    headline metrics first; nested values (per-class details, timings by step) are left to evaluation.json."""
    scalar = {c for v in values.values() if isinstance(v, dict) for c, x in v.items()
              if isinstance(x, (int, float, bool)) or x is None}
    return [c for c in FIRST_COLUMNS if c in scalar] + sorted(scalar - set(FIRST_COLUMNS))


# ------------------------------------------------------------------------------------------------ one run
@dataclass(frozen=True)
class ReportPages:
    """What a run's report shows, per kind of model: its figures (written and found), one phrase saying what
    the model is, and the metrics as HTML. :func:`report_pages` picks them by the model's capabilities."""

    write_figures: Callable  # (run, data, *, method, n_points, log) -> {name: path}
    figure_paths: Callable  # (run_dir) -> [(path, title, caption)]
    describe: Callable  # (run, data) -> HTML phrase, e.g. "dense autoencoder"
    metrics: Callable  # (evaluation) -> HTML


def _one_modality_metrics(evaluation: dict) -> str:
    html = _table(["metric", "value", "unit", "better", "what it measures"], metric_rows(evaluation),
                  numeric_from=None)
    if evaluation.get("anomaly", {}).get("scores"):  # a run trained on its normal classes
        anomaly = evaluation["anomaly"]
        html += (f"<h3>Anomaly scores: normal classes {_e(', '.join(map(str, anomaly['normal_classes'])))}, "
                 f"{anomaly['test_normal']:,} normal and {anomaly['test_anomalous']:,} anomalous test items</h3>"
                 + _table(["score", "AUROC", "average precision", "what it measures"], anomaly_rows(anomaly),
                          numeric_from=None))
    return html


ONE_MODALITY = ReportPages(write_run_figures, figure_paths, lambda run, data: f"{_e(run.config.model)} autoencoder",
                           _one_modality_metrics)
SEVERAL_MODALITIES = ReportPages(
    lambda run, data, method="tsne", n_points=None, log=None: write_multimodal_figures(run, data, log=log),
    multimodal_figure_paths,
    lambda run, data: (f"multimodal autoencoder ({_e(', '.join(data.modalities))}; fusion "
                       f"{_e(run.model.settings.fusion)})"),
    multimodal_tables)


def report_pages(model) -> ReportPages:
    """The report's parts for ``model``, chosen by its capabilities (a multimodal model has its own)."""
    return SEVERAL_MODALITIES if has(model, MULTIMODAL) else ONE_MODALITY


def write_run_report(run, data=None, *, method: str = "tsne", n_points: int | None = DEFAULT_POINTS,
                     redraw: bool = True, progress: bool = True, log=logger.info) -> Path:
    """Write ``RUN/report.html`` for a run folder (or a :class:`aelab.Run`) and return its path.

    ``data`` defaults to the run's own dataset. The metrics come from ``evaluation.json`` (evaluated
    first when missing or older than the weights). With ``redraw`` every figure that applies is drawn
    again (the latent map by ``method`` on ``n_points`` codes); without it the figures already in
    the folder are used.
    """

    run = run if isinstance(run, Run) and run.model is not None else open_run(run.path if isinstance(run, Run) else run)
    data = _load_data(run.config, data)
    evaluation = ensure_evaluation(run.path, data, progress=progress, log=log)
    pages = report_pages(run.model)
    if redraw:
        pages.write_figures(run, data, method=method, n_points=n_points, log=log)
    cfg, hist = run.config, run.history
    params = sum(p.numel() for p in run.model.parameters())
    seconds = sum(r.get("seconds", 0.0) for r in hist)
    figures = pages.figure_paths(run.path)
    what = pages.describe(run, data)
    parts = [f"<h1>{_e(run.path.name)}</h1>",
             f'<p class="sub">{what} on {_e(data.name)}: {len(hist)} epochs, '
             f"{params:,} parameters, latent size {_e(run.model.latent_dim)}, {seconds:.1f} s of training</p>",
             chance_html(evaluation, data, cfg.lr),
             '<nav><a href="#metrics">metrics</a><a href="#figures">figures</a><a href="#training">training</a>'
             '<a href="#config">config</a></nav>',
             '<h2 id="metrics">Metrics on the test set</h2>']
    parts.append(pages.metrics(evaluation))
    items = evaluation.get("test_items")
    detail = [", ".join(f"{n:,} test {m} items" for m, n in items.items()) if isinstance(items, dict)
              else f"{evaluation.get('test_samples', '?')} test samples"]
    if "probe_train_samples" in evaluation:
        detail.append(f"probes fitted on {evaluation['probe_train_samples']:,} train codes")
    if evaluation.get("binarized"):
        detail.append("likelihoods on binarized test images")
    detail += list(evaluation.get("notes", []))
    parts.append(f'<p class="notes">{_e("; ".join(detail))}. From evaluation.json (aelab evaluate).</p>')
    parts.append('<h2 id="figures">Figures</h2>')
    parts += [_figure(p, t, c, fig_id=p.stem) for p, t, c in figures]
    parts.append('<h2 id="training">Training, epoch by epoch</h2>')
    parts.append(epoch_table(hist))
    parts.append('<h2 id="config">Configuration</h2>')
    settings = [[k, "default" if v is None else v] for k, v in run_settings(cfg).items()]
    parts.append(_table(["setting", "value"], settings, numeric_from=None))
    return _write(run.path / REPORT, _page(f"aelab: {run.path.name}", "\n".join(parts)))


SPLITS = ("train", "val", "test")  # the per-epoch metrics' prefixes, in the epoch table's order


def epoch_table(history: list[dict]) -> str:
    """The per-epoch metrics as one table whose header groups them by split (train, val, test) above the metric
    names (loss first), so that a run with many named terms (a multimodal one: ten) fits a page 1,280 pixels wide."""
    groups = []
    for split in SPLITS:
        names = sorted({k[len(split) + 1:] for r in history for k in r if k.startswith(split + "_")})
        names = (["loss"] if "loss" in names else []) + [n for n in names if n != "loss"]
        if names:
            groups.append((split, names))
    top = "".join(f'<th class="group" colspan="{len(names)}">{_e(split)}</th>' for split, names in groups)
    # a break opportunity after each / and _ lets a long name (recon/image) wrap inside its column
    sub = "".join(f"<th>{_e(n).replace('/', '/<wbr>').replace('_', '_<wbr>')}</th>"
                  for _, names in groups for n in names)
    body = []
    for r in history:
        values = [fmt(r.get(f"{split}_{n}")) for split, names in groups for n in names]
        cells = [str(r.get("epoch", "")), *values, f"{r.get('seconds', 0):.1f}"]
        body.append("<tr>" + "".join(f'<td class="num">{_e(c)}</td>' for c in cells) + "</tr>")
    return (f'<table class="epochs"><thead><tr><th rowspan="2">epoch</th>{top}<th rowspan="2">seconds</th></tr>'
            f"<tr>{sub}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def run_settings(cfg) -> dict:
    """The settings a run has, as its reports show them: the general ones and its own family's (a dense run has no
    penalty, k, beta or fusion: config.json records them empty), without the data options a dataset by name leaves
    unset and without ``HIDDEN_SETTINGS``."""
    values = {k: v for k, v in cfg.to_dict().items() if k not in HIDDEN_SETTINGS}
    if cfg.model not in MODELS:  # a family registered in another process: every setting
        return values
    others = {f for name in MODELS for f in accepted_fields(name)} - set(accepted_fields(cfg.model))
    return {k: v for k, v in values.items() if k not in others and not (k in DATA_OPTIONS and v in (None, False))}


def chance_html(evaluation: dict, data: Dataset, lr: float | None = None) -> str:
    """A warning box naming each metric that sits at its chance level (:func:`aelab.evaluation.chance.chance_warnings`)
    with the likely fix; empty when none does."""
    lines = chance_warnings(with_references(evaluation, data), len(data.classes) if data.classes else None, lr=lr)
    if not lines:
        return ""
    said = "".join(f"<p>{_e(line[:1].upper() + line[1:])}</p>" for line in lines)
    return (f'<div class="warn" id="chance"><p><strong>This run learned little: {len(lines)} metric'
            f'{"s sit" if len(lines) > 1 else " sits"} at chance level.</strong></p>{said}</div>')


# ------------------------------------------------------------------------------------------------ comparison
def run_names(run_dirs: list[Path]) -> list[str]:
    """Short unique names: the folder name, with its parent when two runs share a name."""
    names = [p.name for p in run_dirs]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in run_dirs]


def write_comparison_report(run_dirs, html_path, data=None, *, method: str = "tsne",
                            n_points: int | None = DEFAULT_POINTS, progress: bool = False, log=logger.info) -> Path:
    """Write one HTML page comparing the runs in ``run_dirs`` and return its path.

    Runs without an up-to-date ``evaluation.json`` are evaluated first (each on its own data: ``data`` when given,
    for the one-modality runs; a multimodal run always on its paired data), runs without a latent map get one
    (``method``, ``n_points``; a multimodal run's map is of its image codes). The page names and links every run's
    own ``report.html``. The side-by-side reconstructions show the runs whose images are the first run's (a
    multimodal run reconstructs from the image alone). Two PNGs are written beside the page
    (``<name>-reconstructions.png``, ``<name>-metrics.png``).
    """

    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise AelabError("give at least one run folder to compare")
    html_path = Path(html_path)
    if html_path.suffix.lower() not in (".html", ".htm"):
        raise AelabError(f"the comparison report is an HTML file; name it like {html_path.with_suffix('.html')}")
    runs = [open_run(r) for r in run_dirs]
    names = run_names(run_dirs)
    own = _RunData(data)
    evals = [ensure_evaluation(run.path, own.of(run), progress=progress, log=log) for run in runs]
    pictures = [own.images(run) for run in runs]  # the images each run encodes (None: a run without images)
    for run, images in zip(runs, pictures):  # every run with images needs a latent map for the last section
        if images is not None and not (run.path / "latent.png").is_file():
            write_latent_map(run, images, method=method, n_points=n_points, log=log)

    stem = html_path.with_suffix("")
    shown = [({**e, **image_metrics(e)} if has(run.model, MULTIMODAL) else e) for run, e in zip(runs, evals)]
    parts = [f"<h1>Comparing {len(runs)} runs</h1>",
             f'<p class="sub runs">{_run_links(runs, names, html_path)}</p>',
             '<nav><a href="#metrics">metrics</a><a href="#reconstructions">reconstructions</a>'
             '<a href="#maps">latent maps</a><a href="#settings">settings</a></nav>',
             '<h2 id="metrics">Metrics on the test set</h2>', _comparison_table(runs, names, shown)]
    ks = {e.get("iwae_samples") for e in evals if "iwae_samples" in e}
    k_note = f"iwae_nll with K = {', '.join(str(k) for k in sorted(ks))} importance samples. " if ks else ""
    several = [n for run, n in zip(runs, names) if has(run.model, MULTIMODAL)]
    mm_note = (f"{', '.join(several)}: test_mse and the probes of the code of the image alone (reconstruction and "
               f"probes of its image modality); its cross-modal metrics are in its own report. " if several else "")
    parts.append(f'<p class="notes">{_e(k_note + mm_note)}The best value of each row where one is better: '
                 f"bold green.</p>")
    parts.append('<h2 id="reconstructions">The same test digits, reconstructed by each run</h2>')
    parts.append(_reconstructions(runs, names, pictures, stem))
    metrics = {n: {k: e[k] for k in METRIC_KEYS if k in e and k != "iwae_samples"} for n, e in zip(names, shown)}
    bars = plot_metric_bars(metrics, Path(f"{stem}-metrics.png"), keys=[k for k in METRIC_KEYS if k != "iwae_samples"],
                            lower_is_better=LOWER_IS_BETTER, higher_is_better=HIGHER_IS_BETTER)
    parts.append(_figure(bars, "Metrics side by side", "One panel per metric; a missing bar (n/a) means the "
                         "metric does not apply to that model (likelihoods are for variational models).", "bars"))
    parts.append('<h2 id="maps">Latent maps</h2><div class="grid">')
    parts += [_figure(run.path / "latent.png", name, f"{run.config.model}, latent size {run.model.latent_dim}"
                      + (", codes of the images alone" if has(run.model, MULTIMODAL) else ""))
              for run, name in zip(runs, names) if (run.path / "latent.png").is_file()]
    parts.append("</div>")
    parts.append('<h2 id="settings">Settings that differ between runs</h2>')
    parts.append(_settings_table(runs, names))
    return _write(html_path, _page(f"aelab: comparing {len(runs)} runs", "\n".join(parts)))


class _RunData:
    """Each run's own data, loaded once per distinct source: ``data`` (when given) for one-modality runs, the
    paired data of its config for a multimodal run; and the images a run encodes (a multimodal run: its image
    modality alone)."""

    def __init__(self, data: Dataset | None):
        self.data, self.loaded = data, {}

    def of(self, run) -> Dataset:
        cfg, paired = run.config, has(run.model, MULTIMODAL)
        if self.data is not None and not paired:
            return self.data
        key = (paired, cfg.dataset, cfg.data_dir, cfg.modalities, cfg.audio_data, cfg.seed if paired else None)
        if key not in self.loaded:
            self.loaded[key] = _load_data(cfg, None)
        return self.loaded[key]

    def images(self, run) -> Dataset | None:
        d = self.of(run)
        if not isinstance(d.x_test, dict):
            return d
        if "image" not in d.x_test:
            return None
        return Dataset(d.name, d.x_train["image"], d.x_test["image"], d.y_train, d.y_test, d.classes, d.source)


def _run_links(runs, names, html_path: Path) -> str:
    """Each run's name, linked to its own report (relative to the comparison page) when it has one."""
    links = []
    for run, name in zip(runs, names):
        page = run.path / REPORT
        if page.is_file():
            href = Path(os.path.relpath(page.resolve(), html_path.resolve().parent)).as_posix()
            links.append(f'<a href="{_e(href)}">{_e(name)}</a>')
        else:
            links.append(_e(name))
    return " · ".join(links)


def _reconstructions(runs, names, pictures, stem: Path) -> str:
    """The figure of the first run's test images reconstructed by every run that encodes the same images."""
    first = pictures[0]
    if first is None or not first.is_images:
        return '<p class="notes">The data are not images; no reconstructions to show.</p>'
    same = [i for i, images in enumerate(pictures) if _same_images(images, first)]
    pick = class_balanced_indices(first.y_test, 10)
    fig = plot_reconstruction_comparison({names[i]: runs[i].model for i in same}, as_float(first.x_test[pick]),
                                         Path(f"{stem}-reconstructions.png"), n=10)
    skipped = [names[i] for i in range(len(runs)) if i not in same]
    note = f"Not shown (other images): {', '.join(skipped)}." if skipped else ""
    several = [names[i] for i in same if has(runs[i].model, MULTIMODAL)]
    mm = f" {', '.join(several)}: from the code of the image alone." if several else ""
    return _figure(fig, f"Reconstructions of {first.name} test digits", "Top row: the test images. "
                   "Each row below: one run's reconstruction of them." + mm + " " + note, "reconstructions")


def _same_images(a: Dataset | None, b: Dataset) -> bool:
    """Whether ``a`` holds the test images of ``b`` (the same object, or the same name, shape and pixels)."""
    if a is None:
        return False
    return a is b or (a.name == b.name and a.x_test.shape == b.x_test.shape and torch.equal(a.x_test, b.x_test))


def _comparison_table(runs, names, evals) -> str:
    """Runs side by side (a column per run, a row per metric: fits a page for any number of metrics)."""
    keys = [k for k in METRIC_KEYS if k != "iwae_samples" and any(k in e for e in evals)]
    rows = [["model", *[r.config.model for r in runs], "", ""],
            ["latent size", *[r.model.latent_dim for r in runs], "", ""],
            ["epochs", *[len(r.history) for r in runs], "", ""],
            ["training seconds", *[f"{sum(h.get('seconds', 0.0) for h in r.history):.1f}" for r in runs], "", ""]]
    best = {}
    for key in keys:
        i, better = len(rows), SPECS[key].better
        rows.append([key, *[fmt(e.get(key)) for e in evals], SPECS[key].unit, better])
        values = [(e[key], j) for j, e in enumerate(evals) if isinstance(e.get(key), (int, float))]
        if len(values) > 1 and better:
            pick = min(values) if better == "lower" else max(values)
            best[(i, 1 + pick[1])] = True
    return _table(["", *names, "unit", "better"], rows, numeric_from=1, best=best, numeric_count=len(names))


def _settings_table(runs, names) -> str:
    """The settings whose values differ between the runs; a run's cell is blank where its model has no such
    setting (a dense run has no penalty)."""
    configs = [run_settings(run.config) for run in runs]
    order = [k for k in runs[0].config.to_dict() if any(k in c for c in configs)]  # RunConfig's order
    keys = [k for k in order if k != "out" and len({(k in c, repr(c.get(k))) for c in configs}) > 1]
    if not keys:
        return '<p class="notes">None: every run has the same settings.</p>'
    cell = lambda c, k: "" if k not in c else "default" if c[k] is None else c[k]  # noqa: E731
    rows = [[k, *[cell(c, k) for c in configs]] for k in keys]
    return (_table(["setting", *names], rows, numeric_from=None)
            + '<p class="notes">A blank cell: that run\'s model has no such setting.</p>')


__all__ = ["REPORT", "embed_png", "ensure_evaluation", "write_comparison_report", "write_run_report"]
