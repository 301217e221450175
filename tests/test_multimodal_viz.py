"""The figures of a multimodal run: which apply to which modalities, that each is a real PNG of a stable size,
and what the image-to-text figure says."""
import types

import pytest
import torch
from PIL import Image

from aelab.data import multimodal as mm
from aelab.models.multimodal import MultimodalAE
from aelab.viz import multimodal as mv

from .test_multimodal_data import fake_fsdd

TINY = dict(latent_dim=4, image_channels=[4, 8], audio_channels=[4, 8], text_embed=4, text_hidden=8)


@pytest.fixture
def load(tmp_path, mnist5k, monkeypatch):
    monkeypatch.setattr(mm, "load_dataset", lambda name, data_dir=None: mnist5k)
    fsdd = fake_fsdd(tmp_path / "digits.npz")
    return lambda names: mm.load_multimodal("mnist5k", names, audio_path=fsdd, seed=0)


def run_of(tmp_path, data):
    torch.manual_seed(0)
    model = MultimodalAE(mm.modalities_of(data), **TINY)
    history = [{"epoch": 1, "train_loss": 3.0, "test_loss": 3.5, "train_recon/image": 2.0, "test_recon/image": 2.5}]
    return types.SimpleNamespace(path=tmp_path / "run", model=model, history=history, config=None)


def test_every_figure_of_three_modalities(tmp_path, load, one_thread):
    data = load("image,audio,text")
    run = run_of(tmp_path, data)
    paths = mv.write_multimodal_figures(run, data, map_points=60)
    assert list(paths) == [f for f, _, _ in mv.FIGURES]  # all of them, in report order
    sizes = {}
    for name, path in paths.items():
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) > 200, name
            sizes[name] = im.size
    assert sizes["text_to_image.png"][1] < sizes["audio_to_image.png"][1]  # 3 rows of forms, 4 of recordings
    listed = mv.multimodal_figure_paths(run.path)
    assert [p.name for p, _, _ in listed] == list(paths) and all(title and caption for _, title, caption in listed)
    titles = {p.name: title for p, title, _ in listed}
    assert titles["retrieval.png"] == "Retrieval: the nearest recordings to an image"  # audio is the gallery


def test_only_the_figures_that_apply(tmp_path, load, one_thread):
    data = load("image,text")
    paths = mv.write_multimodal_figures(run_of(tmp_path, data), data, map_points=60)
    assert "audio_to_image.png" not in paths and {"text_to_image.png", "image_to_text.png", "retrieval.png",
                                                    "latent_modalities.png"} <= set(paths)
    # without audio the retrieval figure ranks texts, and says so (issue 22: it said "recordings")
    for modalities in (None, ["image", "text"]):
        titles = {p.name: (t, c) for p, t, c in mv.multimodal_figure_paths(run_of(tmp_path, data).path, modalities)}
        title, caption = titles["retrieval.png"]
        assert title == "Retrieval: the nearest texts to an image" and "recording" not in title + caption
    data = load("audio,text")
    paths = mv.write_multimodal_figures(run_of(tmp_path / "b", data), data, map_points=60)
    assert set(paths) == {"loss.png", "latent_modalities.png"}  # no images to draw from or into


def test_figure_size_does_not_depend_on_what_the_model_says(tmp_path, load, one_thread):
    data = load("image,text")
    a, b = run_of(tmp_path / "a", data), run_of(tmp_path / "b", data)
    torch.manual_seed(1)
    b.model = MultimodalAE(mm.modalities_of(data), **TINY)  # other weights: other decoded words
    sizes = []
    for run in (a, b):
        with Image.open(mv.plot_image_to_text(run.model, data, run.path / "t.png")) as im:
            sizes.append(im.size)
    assert sizes[0] == sizes[1]


def test_text_to_image_rows_are_labelled_in_words_not_template_placeholders(tmp_path, load, monkeypatch, one_thread):
    """The row labels name what fills each slot from the column's digit; the issue saw "the number w" and
    "digit d" as labels."""
    data = load("image,text")
    labels = []
    real = mv._grid
    monkeypatch.setattr(mv, "_grid", lambda images, row_labels, path, title: labels.extend(row_labels) or
                        real(images, row_labels, path, title))
    mv.plot_text_to_image(run_of(tmp_path, data).model, tmp_path / "t.png")
    assert labels == ["the word", "the number <word>\n(held out)", "digit <numeral>\n(held out)"]
    assert mv.template_label("{d} ({w})") == "<numeral> (<word>)" and mv.template_label("{U}") == "<WORD>"
