"""`aelab tour`: the whole module in one command, end to end on the embedded mnist5k."""
import json

import pytest

from aelab.cli import main
from aelab.api import TOUR

from .test_report import assert_self_contained, parse


@pytest.mark.slow
def test_tour_one_epoch_end_to_end(tmp_path, capsys):
    out = tmp_path / "tour"
    assert main(["tour", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed
    assert [step["model"] for step in TOUR] == ["dense", "sparse", "conv", "vae", "multimodal"]  # one definition
    names = ["dense", "sparse", "conv", "vae"]  # one modality each: the comparison report's runs
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
    assert [img["data-file"] for img in page.images].count("latent.png") == 4
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
