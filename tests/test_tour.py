"""`aelab tour`: the whole module in one command, end to end on the embedded mnist5k."""
import functools
import json
import re

import pytest

from aelab import api
from aelab.cli import main
from aelab.api import TOUR
from aelab.evaluation import multimodal as multimodal_eval

from .conftest import TINY_KWARGS
from .test_report import assert_self_contained, parse, table_after


@pytest.mark.slow
def test_tour_one_epoch_end_to_end(tmp_path, capsys):
    out = tmp_path / "tour"
    assert main(["tour", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed
    assert [step["model"] for step in TOUR] == ["dense", "sparse", "conv", "vae", "multimodal"]  # one definition
    names = ["dense", "sparse", "conv", "vae"]  # one modality each
    for name in names:
        run = out / name
        for f in ("config.json", "model.pt", "evaluation.json", "report.html", "latent.png", "reconstructions.png"):
            assert (run / f).is_file(), f"{name}/{f}"
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["model"] == name and cfg["dataset"] == "mnist5k" and cfg["epochs"] == 1
        assert json.loads((run / "evaluation.json").read_text())["test_samples"] == 1000
    sparse = next(step for step in TOUR if step["model"] == "sparse")
    assert json.loads((out / "sparse" / "config.json").read_text())["penalty"] == sparse["settings"]["penalty"]
    assert (out / "vae" / "samples.png").is_file()
    page = parse(out / "report.html")
    assert_self_contained(page)
    text = " ".join(page.text)
    assert all(name in text for name in names)
    assert "multimodal" in text  # the comparison holds all five runs
    assert [img["data-file"] for img in page.images].count("latent.png") == 5
    mm = out / "multimodal"  # the last run: one latent space for image and text (and audio when found)
    assert json.loads((mm / "config.json").read_text())["model"] == "multimodal"
    assert {"retrieval", "coherence", "oracle_accuracy"} <= set(json.loads((mm / "evaluation.json").read_text()))
    assert (mm / "report.html").is_file() and "coherence" in printed and str(mm / "report.html") in printed


def test_tour_refuses_a_used_folder_and_bad_epochs(tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    assert main(["tour", "--out", str(used)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["tour", "--epochs", "0", "--out", str(tmp_path / "new")]) == 2
    assert main(["tour", "--epochs", "many", "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert err.count("aelab: error:") == 2 and "--epochs" in err
    assert not (tmp_path / "new").exists()


@pytest.fixture
def tiny_tour(monkeypatch):
    """The tour with its five models made tiny (the conftest's settings), latent maps by PCA, and the multimodal
    run's judges trained briefly: a full tour in well under a minute; what is tested is the tour's pages."""
    tiny = [{**step, "settings": {**TINY_KWARGS[step["model"]],
                                  **({"penalty": "topk", "k": 3} if step["model"] == "sparse" else {})},
             "train": {}} for step in TOUR]
    monkeypatch.setattr(api, "TOUR", tiny)
    monkeypatch.setattr(api, "write_run_report", functools.partial(api.write_run_report, method="pca"))
    for modality in ("image", "audio"):
        monkeypatch.setitem(multimodal_eval.TRAIN_SAMPLES, modality, 500)
        monkeypatch.setitem(multimodal_eval.MIN_EPOCHS, modality, 1)
    return tiny


def test_the_tour_compares_and_links_all_five_runs(tiny_tour, tmp_path, capsys, one_thread):
    """Issue 22: the comparison said "Comparing 4 runs", left out the multimodal run and linked no run's report;
    its settings listed `penalty` for the dense, conv and VAE runs."""
    out = tmp_path / "tour"
    assert main(["tour", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    names = [step["model"] for step in tiny_tour]
    assert names == ["dense", "sparse", "conv", "vae", "multimodal"]
    html = (out / "report.html").read_text()
    page = parse(out / "report.html")
    assert_self_contained(page)
    assert "Comparing 5 runs" in html
    links = dict((name, href) for href, name in re.findall(r'<a href="([^"#]+)">([^<]+)</a>', html))
    assert set(links) == set(names)
    for name in names:  # each link opens that run's own report
        assert links[name] == f"{name}/report.html" and (out / name / "report.html").is_file()
    assert [img["data-file"] for img in page.images].count("latent.png") == 5  # the multimodal run's image codes too
    settings = {row[0]: row[1:] for row in table_after(html, 'id="settings"')}
    assert settings["penalty"] == ["", "topk", "", "", ""]  # a setting of the sparse model alone
    assert settings["fusion"][:4] == ["", "", "", ""] and settings["fusion"][4]
    # the printed table has the five runs too
    table = printed.split("| metric")[1]
    assert all(f" {name} " in table.splitlines()[0] for name in names)
