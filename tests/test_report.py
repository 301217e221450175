"""The HTML reports: one file that parses, embeds every figure it names (and no file from elsewhere),
shows every metric of evaluation.json and asks nothing of the network."""
import base64
import json
import re
from html.parser import HTMLParser

import pytest
import torch

import aelab
from aelab.cli import main
from aelab.errors import AelabError
from aelab.evaluation import METRIC_KEYS, evaluate_run
from aelab.evaluation.compare import fmt
from aelab.viz.report import write_comparison_report, write_run_report
from aelab.viz.run_figures import FIGURES

from .conftest import TINY_KWARGS

VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr"}


class Page(HTMLParser):
    """Collects tags and attributes and checks that every element is closed in order."""

    def __init__(self, text):
        super().__init__()
        self.stack, self.tags, self.urls, self.images, self.text = [], [], [], [], []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.urls += [attrs[a] for a in ("src", "href") if a in attrs]
        if tag == "img":
            self.images.append(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(path) -> Page:
    page = Page(path.read_text(encoding="utf-8"))
    assert page.stack == [], f"unclosed elements: {page.stack}"
    assert page.tags[0] == "html" and "body" in page.tags
    return page


def assert_self_contained(page: Page):
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for url in page.urls:  # inline data, or a relative path; never a fetch (base64 may spell "http" by chance)
        assert url.startswith("data:") or ("://" not in url and not url.startswith("//")), url[:80]


def embedded(img: dict) -> bytes:
    src = img["src"]
    assert src.startswith("data:image/png;base64,"), src[:40]
    data = base64.b64decode(src.split(",", 1)[1], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return data


@pytest.fixture(scope="module")
def two_runs(small_mnist, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    runs = []
    for name in ("dense", "vae"):
        torch.manual_seed(0)
        model = aelab.build_model(name, **TINY_KWARGS[name])
        runs.append(aelab.train(model, small_mnist, out=root / name, epochs=2, progress=False, log=None,
                                report=False))
    # the VAE evaluated up front with a small K (the report must reuse it); the dense run is evaluated
    # by the comparison report, which finds no evaluation.json
    evaluate_run(runs[1].path, data=small_mnist, iwae_samples=8, progress=False)
    return runs


def test_run_report_is_one_self_contained_file(two_runs, small_mnist):
    run = two_runs[1]  # the VAE: likelihood metrics and generative figures too
    path = write_run_report(run.path, small_mnist, method="pca", log=None)
    assert path == run.path / "report.html"
    page = parse(path)
    assert_self_contained(page)
    # every catalogued figure in the folder is embedded, byte for byte, and nothing else
    on_disk = {f for f, _, _ in FIGURES if (run.path / f).is_file()}
    assert {"loss.png", "latent.png", "samples.png", "interpolations.png"} <= on_disk
    named = {img["data-file"] for img in page.images}
    assert named == on_disk
    for img in page.images:
        assert embedded(img) == (run.path / img["data-file"]).read_bytes()
    # every metric of evaluation.json, by name and value as `aelab evaluate` prints it
    text = " ".join(page.text)
    evaluation = json.loads((run.path / "evaluation.json").read_text())
    metrics = [k for k in METRIC_KEYS if k in evaluation]
    assert {"test_mse", "neg_elbo", "iwae_nll", "linear_probe_accuracy"} <= set(metrics)
    assert evaluation["iwae_samples"] == 8  # the existing evaluation was used, not redone
    for key in metrics:
        assert key in text and fmt(evaluation[key]) in text, key
    assert "config" in text.lower() and str(run.config.lr) in text and run.config.model in text


def test_comparison_report(two_runs, small_mnist, tmp_path):
    out = write_comparison_report([r.path for r in two_runs], tmp_path / "cmp.html", small_mnist, method="pca",
                                  log=None)
    page = parse(out)
    assert_self_contained(page)
    text = " ".join(page.text)
    for run in two_runs:
        assert run.path.name in text
        evaluation = json.loads((run.path / "evaluation.json").read_text())  # written when missing
        for key in METRIC_KEYS:
            if key in evaluation and key != "iwae_samples":
                assert key in text and fmt(evaluation[key]) in text, (run.path.name, key)
    files = [img["data-file"] for img in page.images]
    assert files.count("latent.png") == 2  # every run's latent map on the page
    assert "cmp-reconstructions.png" in files and "cmp-metrics.png" in files
    for img in page.images:
        embedded(img)
    assert (tmp_path / "cmp-reconstructions.png").is_file()


def test_comparison_report_bad_input(two_runs, tmp_path):
    with pytest.raises(AelabError, match="at least one run"):
        write_comparison_report([], tmp_path / "x.html")
    with pytest.raises(AelabError, match="HTML file"):
        write_comparison_report([two_runs[0].path], tmp_path / "x.png")


def test_training_ends_with_the_report_unless_told_not_to(small_mnist, tmp_path):
    kwargs = dict(epochs=1, progress=False, log=None, latent_dim=2, hidden_dims=[16])
    run = aelab.train("dense", small_mnist, out=tmp_path / "on", **kwargs)
    for name in ("report.html", "evaluation.json", "latent.png", "loss.png", "unit_features.png"):
        assert (run.path / name).is_file(), name
    parse(run.path / "report.html")
    off = aelab.train("dense", small_mnist, out=tmp_path / "off", report=False, **kwargs)
    assert not any((off.path / n).exists() for n in ("report.html", "evaluation.json", "latent.png", "loss.png"))


def test_report_command(mnist5k, tmp_path, capsys):
    torch.manual_seed(0)
    run = aelab.train(aelab.build_model("dense", **TINY_KWARGS["dense"]), mnist5k, out=tmp_path / "r", epochs=1,
                      progress=False, log=None, report=False)
    assert main(["report", str(run.path), "--method", "pca", "--quiet"]) == 0
    assert str(run.path / "report.html") in capsys.readouterr().out
    parse(run.path / "report.html")
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aelab: error:") and "\n" not in err
    assert main(["report", str(run.path), "--points", "1"]) == 2


def config_rows(html_text: str) -> dict:
    """The settings table of a run report: {setting: value as shown}."""
    section = html_text.split('id="config"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", section)
    return dict(rows)


def table_after(html_text: str, anchor: str) -> list[list[str]]:
    """The body rows (cells as shown) of the first table after ``anchor``."""
    section = html_text.split(anchor, 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", section.split("<tbody>")[1])
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]


def test_each_run_shows_only_the_settings_its_model_has(two_runs, small_mnist):
    """Issue 22: a dense run's report listed penalty, k, beta and fusion, and said `report False` inside a report."""
    dense, vae = two_runs
    rows = config_rows(write_run_report(dense.path, small_mnist, method="pca", log=None).read_text())
    assert {"model", "latent_dim", "hidden_dims", "loss", "lr", "epochs", "seed"} <= set(rows)
    for absent in ("penalty", "k", "target_sparsity", "beta", "kl_warmup", "fusion", "modalities", "audio_data",
                   "report", "image_size", "label_column"):
        assert absent not in rows, absent
    rows = config_rows(write_run_report(vae.path, small_mnist, method="pca", log=None).read_text())
    assert "beta" in rows and "penalty" not in rows and "report" not in rows


def test_the_comparison_links_every_run_and_leaves_settings_a_model_lacks_blank(two_runs, small_mnist, tmp_path):
    for run in two_runs:  # each run's own report, to link to
        write_run_report(run.path, small_mnist, redraw=False, log=None)
    out = write_comparison_report([r.path for r in two_runs], tmp_path / "cmp.html", small_mnist, method="pca",
                                  log=None)
    text = out.read_text()
    links = dict((name, href) for href, name in re.findall(r'<a href="([^"#]+)">([^<]+)</a>', text))
    assert set(links) == {"dense", "vae"}
    for run in two_runs:
        assert (out.parent / links[run.path.name]).resolve() == (run.path / "report.html").resolve()
    settings = {row[0]: row[1:] for row in table_after(text, 'id="settings"')}
    assert settings["model"] == ["dense", "vae"]
    assert settings["beta"] == ["", "1.0"] and settings["kl_warmup"] == ["", "0"]  # a dense run has neither
    assert "penalty" not in settings and "report" not in settings
