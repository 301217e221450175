"""The one-class protocol of the anomaly-detection literature, as one call (``aelab one-class``).

    aelab.oneclass.one_class("mnist", "0-9", out="runs/one-class")   # -> runs/one-class/report.html

Ruff et al. 2018 ("Deep One-Class Classification", ICML, Table 1) fixed how anomaly detection is measured on
MNIST: one class is normal and the model is trained on that class's training images alone; the whole test set
is then scored, the other nine classes being the anomalies, and the AUROC is reported per normal class.
:func:`one_class` runs that protocol for every class asked, with the recipe below, and writes
``DIR/one_class.json`` and ``DIR/report.html`` (the per-class table beside Deep SVDD's and the convolutional
autoencoder baseline's published numbers, the ROC curves, the most anomalous test images of each class) and
each class's run folder under ``DIR/runs/`` (trained with ``normal_classes``: ``aelab evaluate`` and
``aelab score`` work on it).

The recipe (:data:`RECIPE`), measured on full MNIST on 2 CPU cores (benchmarks/README.md, Results, One-class
MNIST, where every alternative tried is tabled):

- model: the dense autoencoder (784-256-128-32 and back, MSE), 10 epochs, batch 128, Adam 1e-3, seed 0;
- score: ``relative``, the reconstruction error per unit of input mass: the squared error summed over the
  pixels divided by the ink of the image (``recon`` x values / sum |x|). The plain reconstruction error
  mostly measures how much ink an image has: a model of 8s reconstructs a thin 1 with a small absolute error and
  ranks it normal. Per unit of ink the 1 stands out: the mean AUROC over the ten digits rises, 8 the most, while
  5 and 6 lose a little.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_curve

from .api import fresh_folder, train
from .config import DATA_OPTIONS, RunConfig
from .data import Dataset, load_dataset
from .data.anomaly import RANGE, class_count, parse_classes
from .data.batches import as_float
from .device import cpu_threads
from .errors import AelabError
from .evaluation.anomaly import SCORES, AnomalyScorer, anomaly_truth, auroc_ap, relative_error
from .io import atomic_write_text
from .viz.figures import RUN_COLOURS, _save, as_images, plt
from .viz.report import _e, _figure, _page, _table, _write

logger = logging.getLogger("aelab")

# Ruff et al. 2018, "Deep One-Class Classification", ICML (PMLR 80:4393-4402), Table 1: AUROC in % per normal
# class (mean over 10 seeds). DEEP_SVDD: one-class Deep SVDD; DCAE: the deep convolutional autoencoder baseline of
# the same table (reconstruction error as the score); proceedings.mlr.press/v80/ruff18a.html. The paper reports
# MNIST and CIFAR-10 only: there are no published numbers of theirs for other datasets, and the report shows none.
DEEP_SVDD = {"mnist": [98.0, 99.7, 91.7, 91.9, 94.9, 88.5, 98.3, 94.6, 93.9, 96.5]}
DCAE = {"mnist": [97.6, 98.3, 85.4, 86.7, 86.5, 78.2, 94.6, 92.3, 86.5, 90.4]}
SOURCE = "Ruff et al. 2018, Deep One-Class Classification, ICML, Table 1"

# The recipe: the model and its settings, the optimisation, and the score (see the module docstring).
RECIPE = {"model": "dense", "settings": {"latent_dim": 32}, "epochs": 10, "batch_size": 128, "lr": 1e-3,
          "score": "relative"}
# "a+b" (the protocol's --score) sums scores of evaluation.anomaly.SCORES standardised by the mean and standard
# deviation of their training scores.
RESULT, REPORT = "one_class.json", "report.html"
ROC_FIGURE, EXTREMES_FIGURE = "one_class_roc.png", "one_class_anomalous.png"
SHOWN = 8  # test images per class in the figure of the most anomalous ones


def one_class(dataset: str = "mnist", classes: str | None = None, out: str | Path | None = None,
              data_dir: str | None = None, *, model: str | None = None, epochs: int | None = None,
              score: str | None = None, seed: int = 0, threads: int = 1, progress: bool = True, log=logger.info,
              **data_options) -> Path:
    """Run the one-class protocol on ``dataset`` for each class of ``classes`` ("0-9", "2,5,8" or class names;
    default: every class) and return the path of ``out/report.html``.

    For each class: train the recipe's model (:data:`RECIPE`; ``model``, ``epochs`` and ``score`` replace its
    parts) on that class's training rows into ``out/runs/class-<index>``, score the whole test set and measure
    the AUROC and average precision against the truth (every other class is an anomaly). Writes
    ``out/one_class.json`` (``auroc`` and ``average_precision`` per class, their ``mean``, ``seconds``, ``model``,
    ``score``, the published numbers where there are some) and ``out/report.html``. ``data_options``: the own-data
    options of :class:`aelab.RunConfig` for a ``dataset`` path (``image_size``, ``channels``, ``test_fraction``,
    ...). ``threads``: CPU threads per operation while it runs (1: the fastest on a shared 2-core machine).
    """
    if threads < 1:
        raise AelabError(f"--threads must be at least 1, got {threads}")
    recipe = _recipe(model, epochs, score)
    cfg = RunConfig.from_dict({"dataset": dataset, "data_dir": data_dir, "seed": seed, **data_options},
                              source="one-class settings")
    out = Path(out) if out is not None else fresh_folder(Path("runs") / f"one-class-{_short(dataset)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AelabError(f"{out} already exists and is not empty; choose another --out or remove it")
    with cpu_threads(threads):
        return _one_class(cfg, classes, out, recipe, progress, log or (lambda *a: None))


def _one_class(cfg: RunConfig, classes, out: Path, recipe: dict, progress: bool, say) -> Path:
    t0 = time.perf_counter()
    data = load_dataset(cfg.dataset, cfg.data_dir, **cfg.data_options())
    ids = class_ids(classes, data)
    names = class_names(data)
    # each run's config names the data as given (a path, the data folder, its options), so that aelab evaluate and
    # aelab score on the run read the same rows
    source = {"dataset": cfg.dataset, "data_dir": cfg.data_dir,
              **{k: getattr(cfg, k) for k in DATA_OPTIONS if getattr(cfg, k) not in (None, False)}}
    epochs = f"{recipe['epochs']} epoch{'s' * (recipe['epochs'] > 1)}"
    say(f"aelab one-class: {len(ids)} normal class{'es' * (len(ids) > 1)} of {data.name}, one {recipe['model']} "
        f"model each ({epochs}), score '{recipe['score']}', written to {out}/")
    results = {}
    for i, c in enumerate(ids, start=1):
        t = time.perf_counter()
        run = train(recipe["model"], data, out=out / "runs" / f"class-{c}", normal_classes=str(c),
                    epochs=recipe["epochs"], batch_size=recipe["batch_size"], lr=recipe["lr"], seed=cfg.seed,
                    report=False, progress=progress, log=None, **source, **recipe["settings"])
        test = class_scores(run.model, data, c, recipe["score"], seed=cfg.seed)
        truth = anomaly_truth(data.y_test, [c])
        results[c] = {**auroc_ap(test, truth), "seconds": time.perf_counter() - t, "scores": test, "truth": truth,
                      "run": run.path}
        say(f"[{i}/{len(ids)}] normal class {names[c]}: AUROC {results[c]['auroc']:.4f}, average precision "
            f"{results[c]['average_precision']:.4f} ({results[c]['seconds']:.0f} s)")
    summary = write_result(out, data, results, recipe, time.perf_counter() - t0)
    report = write_report(out, data, results, summary)
    say(f"mean AUROC {summary['mean']:.4f} over {len(ids)} classes in {summary['seconds']:.0f} s. Open the report "
        f"in a browser:\n  {report}")
    return report


# ---------------------------------------------------------------------------------------------- classes
def class_ids(spec: str | None, data: Dataset) -> list[int]:
    """The class indices ``spec`` lists, in its order without repeats: indices, class names and ranges of
    indices ("0-9", "2,5,8", "Sneaker,Bag"), each class normal on its own; None: every class of ``data``."""
    n = class_count(data)
    if n < 2:
        raise AelabError(f"{data.name} has {n} class; the one-class protocol needs at least two (one normal, the "
                         f"others anomalous)")
    if spec is None or str(spec).strip().lower() in ("", "all"):
        return list(range(n))
    ids: list[int] = []
    for token in (t.strip() for t in str(spec).split(",")):
        match = RANGE.match(token)
        tokens = [str(i) for i in range(int(match.group(1)), int(match.group(2)) + 1)] if match else [token]
        if match and not tokens:
            raise AelabError(f"the class range '{token}' runs backwards; write it low to high")
        for one in tokens:
            ids.extend(i for i in parse_classes(one, data.classes, n) if i not in ids)
    return ids


def class_names(data: Dataset) -> list[str]:
    """Each class's name (its index as text when the data names none)."""
    return list(data.classes) if data.classes else [str(i) for i in range(class_count(data))]


# ---------------------------------------------------------------------------------------------- scores
def class_scores(model, data: Dataset, normal: int, score: str, seed: int = 0) -> np.ndarray:
    """(N,) scores of the whole test set of ``data`` by ``score`` (higher = more anomalous) for ``model`` trained
    on the class ``normal``: a name of :data:`~aelab.evaluation.anomaly.SCORES`, or
    several joined by "+", each standardised by its training scores' mean and standard deviation and summed."""
    modality = model.main_modality
    train_x = data.inputs("train")[modality][data.y_train == normal]
    test_x = data.inputs("test")[modality]
    parts = score.split("+")
    base = sorted(set(parts), key=list(SCORES).index)
    scorer = AnomalyScorer.fit(model, train_x, methods=base, seed=seed)
    if len(parts) == 1:
        return _score(scorer, test_x, parts[0])
    total = np.zeros(len(test_x))
    for part in parts:
        fitted = _score(scorer, train_x, part, training=True)
        total += (_score(scorer, test_x, part) - fitted.mean()) / max(fitted.std(), 1e-12)
    return total


def _score(scorer: AnomalyScorer, x, part: str, training: bool = False) -> np.ndarray:
    return scorer.training_scores(part) if training else scorer.score(x, part)


def check_score(score: str) -> str:
    """``score`` if every part of it (joined by "+") is a known score, else an AelabError naming them."""
    known = list(SCORES)
    for part in str(score).split("+"):
        if part not in known:
            raise AelabError(f"unknown score '{part}'; choose one of {', '.join(known)}, or several joined by '+'")
    return score


def _recipe(model: str | None, epochs: int | None, score: str | None) -> dict:
    if epochs is not None and epochs < 1:
        raise AelabError(f"--epochs must be at least 1, got {epochs}")
    recipe = {**RECIPE, "settings": dict(RECIPE["settings"])}
    if model is not None and model != recipe["model"]:
        recipe.update(model=model, settings={})  # another family: its own defaults
    recipe["epochs"] = epochs or recipe["epochs"]
    recipe["score"] = check_score(score or recipe["score"])
    return recipe


# ---------------------------------------------------------------------------------------------- outputs
def write_result(out: Path, data: Dataset, results: dict, recipe: dict, seconds: float) -> dict:
    """``out/one_class.json``: AUROC and average precision per class (keyed by class index), their means, the
    seconds, the recipe, the published numbers for the dataset (None where there are none) and the machine."""
    names = class_names(data)
    auroc = {str(c): r["auroc"] for c, r in results.items()}
    summary = {
        "dataset": data.name, "classes": {str(c): names[c] for c in results},
        "auroc": auroc, "average_precision": {str(c): r["average_precision"] for c, r in results.items()},
        "mean": float(np.mean(list(auroc.values()))),
        "mean_average_precision": float(np.mean([r["average_precision"] for r in results.values()])),
        "seconds": seconds, "seconds_per_class": {str(c): r["seconds"] for c, r in results.items()},
        "model": recipe["model"], "settings": recipe["settings"], "epochs": recipe["epochs"],
        "batch_size": recipe["batch_size"], "lr": recipe["lr"], "score": recipe["score"],
        "runs": {str(c): str(r["run"]) for c, r in results.items()},
        "deep_svdd": _published(data.name, DEEP_SVDD, results), "dcae": _published(data.name, DCAE, results),
        "published_source": SOURCE, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    atomic_write_text(out / RESULT, json.dumps(summary, indent=1) + "\n")
    return summary


def _published(dataset: str, table: dict, results: dict) -> dict | None:
    values = table.get(dataset)
    return None if values is None else {str(c): values[c] / 100 for c in results if c < len(values)}


def plot_roc_per_class(results: dict, names: list[str], path: Path) -> Path:
    """One ROC curve per normal class (its model's scores of the whole test set), the AUROC in the legend."""
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    ax.plot([0, 1], [0, 1], ":", color="#999", linewidth=1, label="chance (AUROC 0.5)")
    for i, (c, r) in enumerate(results.items()):
        fpr, tpr, _ = roc_curve(r["truth"], r["scores"])
        ax.plot(fpr, tpr, color=RUN_COLOURS[i % len(RUN_COLOURS)], linewidth=1.3,
                label=f"{names[c]} (AUROC {r['auroc']:.3f})")
    ax.set_xlabel("false positive rate (normal test items flagged)")
    ax.set_ylabel("true positive rate (anomalies found)")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1.01)
    ax.set_title("ROC curve of each normal class's model", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", title="normal class", title_fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_most_anomalous(x, results: dict, names: list[str], y, path: Path, n: int = SHOWN) -> Path:
    """One row per normal class: the ``n`` test images its model scores most anomalous (left, each titled with
    its class) and the ``n`` test images of the normal class itself it scores most anomalous (right)."""
    rows = len(results)
    fig, axes = plt.subplots(rows, 2 * n, figsize=(0.8 * 2 * n + 1.2, 0.95 * rows + 0.5), squeeze=False)
    y = np.asarray(y)
    for r, (c, res) in enumerate(results.items()):
        order = np.argsort(-res["scores"], kind="stable")
        picks = [*order[:n], *[i for i in order if y[i] == c][:n]]
        images = as_images(as_float(x[picks]))
        for j, ax in enumerate(axes[r]):
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(picks):
                ax.imshow(images[j], cmap="gray", vmin=0, vmax=1)
                ax.set_title(names[int(y[picks[j]])][:10], fontsize=6, pad=1)
        axes[r][0].set_ylabel(names[c][:12], rotation=0, ha="right", va="center", fontsize=8)
    axes[0][0].annotate("most anomalous test images", (0, 1.45), xycoords="axes fraction", fontsize=8)
    axes[0][n].annotate("normal test images scored most anomalous", (0, 1.45), xycoords="axes fraction", fontsize=8)
    fig.subplots_adjust(left=1.2 / (0.8 * 2 * n + 1.2), right=0.99, top=1 - 0.45 / (0.95 * rows + 0.5),
                        bottom=0.01, wspace=0.06, hspace=0.35)
    return _save(fig, path)


def write_report(out: Path, data: Dataset, results: dict, summary: dict) -> Path:
    """``out/report.html``: the per-class table (with the published numbers), the ROC curves and the most
    anomalous test images of each class, self-contained."""
    names = class_names(data)
    svdd, dcae = summary["deep_svdd"], summary["dcae"]
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    rows, best = [], {}
    for i, c in enumerate(results):
        key = str(c)
        row = [names[c], pct(summary["auroc"][key]), pct(svdd and svdd.get(key)), pct(dcae and dcae.get(key)),
               pct(summary["average_precision"][key]), f"{summary['seconds_per_class'][key]:.0f}"]
        best[(i, 1)] = svdd is not None and key in svdd and summary["auroc"][key] >= svdd[key]
        rows.append(row)
    mean = lambda d: None if not d else float(np.mean(list(d.values())))  # noqa: E731
    rows.append(["mean", pct(summary["mean"]), pct(mean(svdd)), pct(mean(dcae)), pct(summary["mean_average_precision"]),
                 f"{summary['seconds']:.0f}"])
    best[(len(rows) - 1, 1)] = svdd is not None and summary["mean"] >= mean(svdd)
    table = _table(["normal class", "AUROC % (this recipe)", "Deep SVDD", "DCAE", "average precision %", "seconds"],
                   rows, best=best)
    roc = plot_roc_per_class(results, names, out / ROC_FIGURE)
    figures = [_figure(roc, "ROC curves", "Each normal class's model scoring the whole test set; the other "
                                          "classes are the anomalies.")]
    if data.is_images:
        extremes = plot_most_anomalous(data.x_test, results, names, data.y_test.cpu().numpy(), out / EXTREMES_FIGURE)
        figures.append(_figure(extremes, "The most anomalous test images",
                               "Per normal class (rows): the test images its model scores highest, and the test "
                               "images of the normal class itself that it scores highest (titled with their class)."))
    published_note = ("Deep SVDD and DCAE: " + SOURCE + " (AUROC % per normal class, mean of 10 seeds). Bold: at or "
                      "above Deep SVDD." if svdd else f"No published one-class numbers of {SOURCE} for {data.name}.")
    body = (f"<h1>One-class anomaly detection on {_e(data.name)}</h1>"
            f"<p class='sub'>Each class in turn is normal: a {_e(summary['model'])} autoencoder is trained on its "
            f"training images alone ({summary['epochs']} epochs), the whole test set is scored by "
            f"'{_e(summary['score'])}' and every other class is an anomaly. Mean AUROC {summary['mean']:.4f} in "
            f"{summary['seconds']:.0f} s.</p><h2>AUROC per normal class</h2>{table}"
            f"<p class='notes'>{_e(published_note)} The runs: {_e(out / 'runs')}/.</p>"
            f"<h2>Figures</h2><div class='grid'>{''.join(figures)}</div>")
    return _write(out / REPORT, _page(f"one-class {data.name}", body))


def _short(dataset: str) -> str:
    return Path(str(dataset).rstrip("/\\")).stem or "data"


__all__ = ["DCAE", "DEEP_SVDD", "RECIPE", "check_score", "class_ids", "class_scores", "one_class",
           "relative_error"]
