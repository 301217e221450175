"""A run folder finds its data again (issue 22, defect 6): a multimodal run trained with the spoken digits found
through AELAB_DATA_DIR is opened, served and evaluated without that variable, from the file its data.json
records; when that file is gone too, one line names it."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

import aelab
from aelab.data import Dataset
from aelab.data.multimodal import load_multimodal
from aelab.errors import AelabError
from aelab.evaluation import evaluate_run
from aelab.runfolder import load_run_data, open_run
from aelab.web import create_app

from .test_multimodal_data import fake_fsdd

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

MODALITIES = ("image", "audio")
ROWS = 200  # training rows: the run only has to exist, not to be good


@pytest.fixture
def run_from_data_dir(tmp_path, monkeypatch, mnist5k):
    """A tiny image+audio run trained while AELAB_DATA_DIR pointed at a folder holding fsdd-mfcc/digits.npz;
    the variable is unset again when the test body starts. Returns (run folder, the FSDD file)."""
    monkeypatch.setattr("aelab.data.multimodal.load_dataset", lambda name, data_dir=None: mnist5k)
    data_dir = tmp_path / "data"
    (data_dir / "fsdd-mfcc").mkdir(parents=True)
    fsdd = fake_fsdd(data_dir / "fsdd-mfcc" / "digits.npz")
    monkeypatch.setenv("AELAB_DATA_DIR", str(data_dir))
    data = load_multimodal("mnist5k", MODALITIES)
    keep = torch.arange(ROWS)
    small = Dataset(data.name, {k: v[keep] for k, v in data.x_train.items()}, data.x_test, data.y_train[keep],
                    data.y_test, data.classes, data.source, data.meta)
    out = tmp_path / "mm"
    torch.manual_seed(0)
    aelab.train("multimodal", small, out=out, epochs=1, batch_size=64, latent_dim=4, modalities="image,audio",
                report=False, progress=False, log=None)
    monkeypatch.delenv("AELAB_DATA_DIR")
    return out, fsdd


def test_the_run_records_the_file_but_its_config_does_not(run_from_data_dir):
    out, fsdd = run_from_data_dir
    assert json.loads((out / "config.json").read_text())["audio_data"] is None  # found by the search, not given
    assert json.loads((out / "data.json").read_text())["audio"]["path"] == str(fsdd)


def test_an_opened_run_loads_its_data_from_the_recorded_file(run_from_data_dir):
    out, fsdd = run_from_data_dir
    run = open_run(out)
    assert run.config.audio_data == str(fsdd)
    data = load_run_data(run.config)
    assert data.modalities == list(MODALITIES) and data.meta["audio"]["path"] == str(fsdd)


def test_the_run_is_served_and_evaluated_without_the_variable(run_from_data_dir, monkeypatch):
    out, _ = run_from_data_dir
    client = TestClient(create_app(out, method="pca", device="cpu", log=None), raise_server_exceptions=False)
    points = client.get("/api/points")
    assert points.status_code == 200, points.text
    assert client.get("/api/items/0").status_code == 200
    # oracles trained briefly: the point is that the data loads, not how good the judges are
    monkeypatch.setitem(aelab.evaluation.multimodal.TRAIN_SAMPLES, "image", 256)
    monkeypatch.setitem(aelab.evaluation.multimodal.TRAIN_SAMPLES, "audio", 256)
    monkeypatch.setitem(aelab.evaluation.multimodal.MIN_EPOCHS, "image", 1)
    monkeypatch.setitem(aelab.evaluation.multimodal.MIN_EPOCHS, "audio", 1)
    result = evaluate_run(out, progress=False)
    assert set(result["coherence"]) >= {"image->audio", "audio->image"}


def test_a_copy_where_the_usual_search_looks_is_found_when_the_recorded_file_is_gone(run_from_data_dir, tmp_path,
                                                                                     monkeypatch):
    out, fsdd = run_from_data_dir
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "fsdd-mfcc").mkdir(parents=True)
    shutil.move(fsdd, elsewhere / "fsdd-mfcc" / "digits.npz")
    monkeypatch.setenv("AELAB_DATA_DIR", str(elsewhere))
    run = open_run(out)
    assert run.config.audio_data is None  # the usual search finds the copy
    assert "audio" in load_run_data(run.config).modalities


def test_a_run_whose_file_is_gone_says_which_file_it_needs_in_one_line(run_from_data_dir):
    out, fsdd = run_from_data_dir
    fsdd.unlink()
    with pytest.raises(AelabError) as info:
        load_run_data(open_run(out).config)
    message = str(info.value)
    assert str(fsdd) in message and "\n" not in message and "--audio-data" in message
