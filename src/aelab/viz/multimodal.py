"""Figures of a multimodal run: translation between image, sound and text, retrieval, and the shared latent map.

Each ``plot_*`` function takes a model following the batch contract (``codes({m: x})`` from any subset of its
modalities, ``decode(z) -> {m: output}``) and a dataset from :func:`aelab.data.multimodal.load_multimodal`,
writes one PNG and returns its path; :func:`write_multimodal_figures` writes every one that applies to the
run's modalities into the run folder, and :func:`multimodal_figure_paths` lists those present, in report order.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..data.multimodal import TEST_TEMPLATES, decode_text, encode_text, text_form
from ..evaluation.multimodal import classify_text, decode, encode, item_rows
from ..models.base import eval_mode
from ..runfolder import CONFIG
from .figures import _save, as_images, plt, plot_loss_curves
from .latent import project

# (file, title, caption) in the order the report shows them
FIGURES = [
    ("loss.png", "Loss curves",
     "Train and test loss per epoch, and each named term: the negative log-likelihood of each modality "
     "(recon/image, recon/audio, recon/text) and the KL term of a variational fusion."),
    ("text_to_image.png", "Images generated from words",
     "Each column a digit, each row a way of writing it; the image decoded from the code of that text alone. "
     "The first row is the word (\"zero\" .. \"nine\"); the rows marked held out use surface forms never seen "
     "in training."),
    ("audio_to_image.png", "Images generated from held-out recordings",
     "Each column a digit, each row a different test recording of it (never heard in training); the image "
     "decoded from the code of the sound alone."),
    ("image_to_text.png", "Words decoded from test images",
     "Test images and the text decoded from the code of each image alone: green when the text names the "
     "image's digit, red otherwise."),
    ("retrieval.png", "Retrieval: the nearest {gallery} to an image",
     "Each row an image query (left) and the test {gallery} nearest to its code in the shared "
     "space, nearest first, titled with their digit: green for the query's digit, red for another."),
    ("latent_modalities.png", "One latent space for every modality",
     "Codes of test items from each modality alone, projected together to two dimensions (t-SNE): colour is "
     "the digit, the marker the modality. Where a digit's markers meet, the modalities share its code; a gap "
     "between one colour's markers is what one modality holds and the others cannot (an image's style, a "
     "speaker's voice). Retrieval ranks by these distances."),
]
MARKERS = {"image": "o", "audio": "^", "text": "s"}
DIGITS = 10


GALLERY_WORDS = {"audio": "recordings", "text": "texts"}  # what the retrieval figure's gallery items are called


def retrieval_gallery(modalities) -> str:
    """The modality whose test items the retrieval figure ranks against image queries: audio when the run has it,
    else text (see :func:`plot_retrieval`)."""
    return "audio" if "audio" in modalities else "text"


def multimodal_figure_paths(run_dir, modalities=None) -> list[tuple[Path, str, str]]:
    """The catalogued multimodal figures present in ``run_dir``, in report order: (path, title, caption).
    ``modalities`` (default: the run's config.json) name the retrieval figure's gallery: recordings or texts."""
    if modalities is None:  # the run's config; else its figures: an audio-to-image one means the run has audio
        recorded = read_config(run_dir).get("modalities")
        modalities = recorded.split(",") if recorded else \
            ["audio"] * (Path(run_dir) / "audio_to_image.png").is_file()
    words = {"gallery": GALLERY_WORDS[retrieval_gallery(modalities)]}
    return [(Path(run_dir) / f, t.format(**words), c.format(**words)) for f, t, c in FIGURES
            if (Path(run_dir) / f).is_file()]


def read_config(run_dir) -> dict:
    """The run's config.json as a dict ({} when it is missing or unreadable: the titles then stay generic)."""
    try:
        values = json.loads((Path(run_dir) / CONFIG).read_text())
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def _test_items(data, modality: str, per_digit: int) -> list[list[int]]:
    """For each digit, the test rows of its first ``per_digit`` distinct items of ``modality``."""
    rows = item_rows(data, "test", modality)
    labels = data.y_test.cpu()[rows]
    return [rows[labels == d][:per_digit].tolist() for d in range(DIGITS)]


def _clean_axes(ax) -> None:
    ax.set_xticks([]), ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _grid(images: np.ndarray, row_labels: list[str], path, title: str) -> Path:
    """images (R, C, H, W) in [0, 1] as a grid, rows labelled, columns headed by the digits 0..C-1."""
    r, c = images.shape[:2]
    margin, cell = 1.9, 0.8
    fig, axes = plt.subplots(r, c, figsize=(margin + cell * c, 0.5 + cell * r), squeeze=False)
    for i in range(r):
        for j in range(c):
            ax = axes[i][j]
            _clean_axes(ax)
            ax.imshow(images[i, j], cmap="gray", vmin=0, vmax=1)
            if i == 0:
                ax.set_title(str(j), fontsize=10)
        axes[i][0].set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=margin / (margin + cell * c), right=0.995, top=1 - 0.45 / (0.5 + cell * r),
                        bottom=0.01, wspace=0.05, hspace=0.05)
    return _save(fig, path)


@torch.no_grad()
def plot_text_to_image(model, path, templates=("{w}", *TEST_TEMPLATES)) -> Path:
    """Images decoded from the code of text alone: a row per template (``"{w}"``: the words "zero".."nine"),
    a column per digit."""
    texts = [text_form(t, d) for t in templates for d in range(DIGITS)]
    with eval_mode(model):
        z = encode(model, {"text": encode_text(texts)})
        images = as_images(decode(model, z, "image")).reshape(len(templates), DIGITS, 28, 28)
    return _grid(images, [template_label(t) for t in templates], path, "images generated from text")


# how each slot of a text template reads in a row label: the column's digit fills it
SLOT_WORDS = {"d": "<numeral>", "w": "<word>", "W": "<Word>", "U": "<WORD>"}


def template_label(template: str) -> str:
    """A row label of the text-to-image figure: the template with each slot named for what fills it from the
    column's digit ("the number {w}" -> 'the number <word>' above '(held out)'); the bare word reads "the word"."""
    if template == "{w}":
        return "the word"
    label = template.format(**SLOT_WORDS)
    return label + ("\n(held out)" if template in TEST_TEMPLATES else "")  # two lines: the label margin is narrow


@torch.no_grad()
def plot_audio_to_image(model, data, path, per_digit: int = 4) -> Path:
    """Images decoded from the code of test recordings alone: ``per_digit`` recordings (rows) of each digit
    (columns)."""
    picks = _test_items(data, "audio", per_digit)
    n = min(len(p) for p in picks)
    rows = torch.tensor([picks[d][k] for k in range(n) for d in range(DIGITS)])
    with eval_mode(model):
        z = encode(model, {"audio": data.x_test["audio"][rows]})
        images = as_images(decode(model, z, "image")).reshape(n, DIGITS, 28, 28)
    return _grid(images, [f"recording {k + 1}" for k in range(n)], path, "images generated from held-out recordings")


@torch.no_grad()
def plot_image_to_text(model, data, path, per_digit: int = 2) -> Path:
    """``per_digit`` test images of each digit with the text decoded from each image's code alone."""
    picks = _test_items(data, "image", per_digit)
    n = min(len(p) for p in picks)
    rows = torch.tensor([picks[d][k] for k in range(n) for d in range(DIGITS)])
    with eval_mode(model):
        z = encode(model, {"image": data.x_test["image"][rows]})
        texts = decode_text(decode(model, z, "text"))
    read = classify_text(texts).tolist()
    images = as_images(data.x_test["image"][rows].float() / 255.0)
    fig, axes = plt.subplots(n, DIGITS, figsize=(1.25 * DIGITS, 1.55 * n), squeeze=False)
    for k in range(n):
        for d in range(DIGITS):
            ax, text = axes[k][d], texts[k * DIGITS + d]
            _clean_axes(ax)
            ax.imshow(images[k * DIGITS + d], cmap="gray", vmin=0, vmax=1)
            right = read[k * DIGITS + d] == d
            ax.set_xlabel(repr(text) if len(text) <= 12 else repr(text[:11] + "…"), fontsize=8,
                          color="tab:green" if right else "tab:red")
    fig.suptitle("text decoded from test images", fontsize=11)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.08, wspace=0.1, hspace=0.45)
    return _save(fig, path)


@torch.no_grad()
def plot_retrieval(model, data, path, gallery: str | None = None, queries: int = 5, top: int = 6) -> Path:
    """For ``queries`` test images of different digits, the ``top`` nearest test items of ``gallery`` (default
    audio, else text) by Euclidean distance between codes: recordings drawn as their MFCC frames, text as the
    string; each titled with its digit, green when it is the query's."""
    gallery = gallery or retrieval_gallery(data.x_test)
    picks = _test_items(data, "image", 1)
    step = max(1, DIGITS // queries)
    query_rows = torch.tensor([picks[d][0] for d in range(0, DIGITS, step)][:queries])
    g_rows = item_rows(data, "test", gallery)
    with eval_mode(model):
        zq = encode(model, {"image": data.x_test["image"][query_rows]})
        zg = encode(model, {gallery: data.x_test[gallery][g_rows]})
    nearest = torch.cdist(zq, zg).argsort(1)[:, :top]  # (Q, top) positions in g_rows
    fig, axes = plt.subplots(len(query_rows), top + 1, figsize=(1.0 + 1.3 * top, 1.35 * len(query_rows)),
                             squeeze=False)
    for i, q in enumerate(query_rows.tolist()):
        digit = int(data.y_test[q])
        ax = axes[i][0]
        _clean_axes(ax)
        ax.imshow(data.x_test["image"][q, 0].float().cpu().numpy() / 255.0, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"query: {digit}", fontsize=9)
        for j, pos in enumerate(nearest[i].tolist()):
            row = int(g_rows[pos])
            found = int(data.y_test[row])
            ax = axes[i][j + 1]
            _clean_axes(ax)
            if gallery == "audio":
                ax.imshow(data.x_test["audio"][row].T.cpu().numpy(), aspect="auto", cmap="magma", origin="lower")
            else:
                ax.text(0.5, 0.5, decode_text(data.x_test[gallery][row:row + 1])[0], ha="center", va="center",
                        fontsize=8, wrap=True)
            ax.set_title(f"#{j + 1}: {found}", fontsize=9, color="tab:green" if found == digit else "tab:red")
    fig.suptitle(f"nearest test {'recordings (MFCC frames)' if gallery == 'audio' else gallery} to image queries",
                 fontsize=11)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.02, wspace=0.08, hspace=0.4)
    return _save(fig, path)


@torch.no_grad()
def plot_modality_map(model, data, path, per_modality: int = 300, seed: int = 0, log=None) -> Path:
    """The test codes of each modality alone (at most ``per_modality`` items each, class-balanced) projected
    together by t-SNE: colour by digit, marker by modality."""
    codes, labels, kinds = [], [], []
    with eval_mode(model):
        for m in data.x_test:
            per_digit = max(1, per_modality // DIGITS)
            rows = torch.tensor(sorted(r for p in _test_items(data, m, per_digit) for r in p))
            codes.append(encode(model, {m: data.x_test[m][rows]}))
            labels.append(data.y_test.cpu()[rows].numpy())
            kinds += [m] * len(rows)
    proj = project(torch.cat(codes), "tsne", n_points=None, seed=seed, log=log)
    labels, kinds = np.concatenate(labels), np.array(kinds)
    fig, ax = plt.subplots(figsize=(7.4, 5.8))
    cmap = plt.get_cmap("tab10")
    for m in data.x_test:
        for d in range(DIGITS):
            sel = (kinds == m) & (labels == d)
            big = m == "text"  # few text items: draw them large, on top
            ax.scatter(proj.points[sel, 0], proj.points[sel, 1], s=60 if big else 14, marker=MARKERS.get(m, "x"),
                       color=cmap(d), alpha=1.0 if big else 0.6, edgecolors="black" if big else "none",
                       linewidths=0.6 if big else 0, zorder=3 if big else 2)
    handles = [plt.Line2D([], [], ls="", marker="o", color=cmap(d), label=str(d)) for d in range(DIGITS)]
    handles += [plt.Line2D([], [], ls="", marker=MARKERS.get(m, "x"), color="gray", label=f"{m} ({(kinds == m).sum()})")
                for m in data.x_test]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title("the shared latent space: test codes of each modality alone, t-SNE", fontsize=11)
    fig.subplots_adjust(left=0.03, right=0.78, bottom=0.04, top=0.93)
    return _save(fig, path)


def write_multimodal_figures(run, data, log=None, map_points: int = 300) -> dict[str, Path]:
    """Every multimodal figure that applies to the run's modalities, written into ``run.path``:
    ``{file name: path}`` (see :data:`FIGURES`). ``run`` has ``path``, ``model``, ``history`` and ``config``;
    ``map_points``: test items per modality on the latent map (a t-SNE of ~650 points takes a few seconds)."""
    out, model, names = Path(run.path), run.model, set(data.x_test)
    seed = getattr(getattr(run, "config", None), "seed", 0)
    paths = {}
    if run.history:
        paths["loss.png"] = plot_loss_curves(run.history, out / "loss.png")
    if {"image", "text"} <= names:
        paths["text_to_image.png"] = plot_text_to_image(model, out / "text_to_image.png")
    if {"image", "audio"} <= names:
        paths["audio_to_image.png"] = plot_audio_to_image(model, data, out / "audio_to_image.png")
    if {"image", "text"} <= names:
        paths["image_to_text.png"] = plot_image_to_text(model, data, out / "image_to_text.png")
    if "image" in names:
        paths["retrieval.png"] = plot_retrieval(model, data, out / "retrieval.png")
    paths["latent_modalities.png"] = plot_modality_map(model, data, out / "latent_modalities.png",
                                                       per_modality=map_points, seed=seed, log=log)
    return paths


__all__ = ["FIGURES", "multimodal_figure_paths", "retrieval_gallery", "template_label",
            "plot_audio_to_image", "plot_image_to_text",
           "plot_modality_map", "plot_retrieval", "plot_text_to_image", "write_multimodal_figures"]
