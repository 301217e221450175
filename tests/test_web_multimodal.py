"""The explorer and the Predictor on a multimodal run: images, text and (when the FSDD file is there) sound.

One tiny multimodal run is trained per session (image,audio,text when the suite's shared data folder holds
fsdd-mfcc/digits.npz, else image,text; one epoch on 256 training rows: seconds, not a model one would keep)
and served with its full test split. Checked with known answers from the Predictor: the map and the contract routes are
about the images' codes, an item carries the word decoded from its image's code and the digits of the test
recordings nearest it, ``POST /api/text`` turns a text into images; every bad request is a JSON 4xx, and
fuzzing the multimodal routes from the schema never gets a 5xx.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import aelab
from aelab.data import Dataset
from aelab.data.multimodal import ALPHABET, decode_text, load_multimodal
from aelab.errors import AelabError
from aelab.predict import Predictor
from aelab.registry import build_model
from aelab.web import LIMITS, create_app
from tests.conftest import SHARED_DATA
from tests.test_predict import tiny_runs

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

FSDD = SHARED_DATA / "fsdd-mfcc" / "digits.npz"  # ../shared/data, or $AELAB_SHARED_DATA
MODALITIES = ("image", "audio", "text") if FSDD.is_file() else ("image", "text")
TRAIN_ROWS = 256
LATENT = 8
_TRAINED: dict[str, tuple[Path, Dataset]] = {}
needs_audio = pytest.mark.skipif("audio" not in MODALITIES, reason=f"no FSDD MFCC file at {FSDD} (the audio modality)")


def tiny_multimodal(tmp_path_factory) -> tuple[Path, Dataset]:
    """A run folder of a tiny multimodal model and the paired data it was trained on (its full test split)."""
    if "run" not in _TRAINED:
        data = load_multimodal("mnist5k", MODALITIES, audio_path=FSDD if "audio" in MODALITIES else None)
        keep = torch.arange(0, len(data.y_train), len(data.y_train) // TRAIN_ROWS)[:TRAIN_ROWS]
        small = Dataset(data.name, {k: v[keep] for k, v in data.x_train.items()}, data.x_test, data.y_train[keep],
                        data.y_test, data.classes, data.source, data.meta)
        out = tmp_path_factory.mktemp("tiny-multimodal") / "mm"
        aelab.train("multimodal", small, out=out, epochs=1, batch_size=64, lr=3e-3, latent_dim=LATENT,
                    modalities=",".join(MODALITIES), audio_data=str(FSDD) if "audio" in MODALITIES else None,
                    report=False, progress=False, log=None)
        _TRAINED["run"] = (out, data)
    return _TRAINED["run"]


@pytest.fixture(scope="module")
def mm(tmp_path_factory):
    return tiny_multimodal(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(mm):
    return Predictor.from_run(mm[0], device="cpu")


@pytest.fixture(scope="module")
def client(mm):
    path, data = mm
    return TestClient(create_app(path, data=data, method="pca", device="cpu", log=None), raise_server_exceptions=False)


def pixels(data_url: str) -> np.ndarray:
    head, b64 = data_url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def expected_pixels(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()[:, 0]


# ---------------------------------------------------------------------------------------------- the Predictor
def test_predictor_shows_the_image_modality(predictor, mm):
    _, data = mm
    assert predictor.multimodal and predictor.modalities == MODALITIES
    assert (predictor.modality, predictor.input_shape, predictor.latent_dim) == ("image", (1, 28, 28), LATENT)
    images = data.x_test["image"][:5]
    z = predictor.encode(images)
    with torch.no_grad():
        want = predictor.model.codes({"image": images.float() / 255})
    torch.testing.assert_close(z, want)
    assert predictor.decode(z).shape == (5, 1, 28, 28)
    # another modality by name: the same shared space
    ids = data.x_test["text"][:5]
    torch.testing.assert_close(predictor.encode(ids, modality="text"), predictor.encode_text(decode_text(ids)))


def test_predictor_text_verbs(predictor):
    z = predictor.encode_text(["seven", "3"])
    assert z.shape == (2, LATENT) and z.dtype == torch.float32
    torch.testing.assert_close(z[:1], predictor.encode_text("seven"))
    ids = predictor.decode(z, modality="text")
    assert ids.dtype == torch.int64 and ids.shape == (2, 16)
    assert predictor.decode_text(z) == decode_text(ids)
    # a text's codes: its own code first, then draws from q(z | text), the same for the same seed
    codes = predictor.text_codes("seven", n=4, seed=3)
    assert codes.shape == (4, LATENT)
    torch.testing.assert_close(codes[:1], z[:1])
    torch.testing.assert_close(codes, predictor.text_codes("seven", n=4, seed=3))
    assert not torch.equal(codes[1:], predictor.text_codes("seven", n=4, seed=4)[1:])
    torch.testing.assert_close(predictor.text_codes("seven"), z[:1])


@pytest.mark.parametrize("call, message", [
    (lambda p: p.encode_text("a/b"), "not in the vocabulary"),
    (lambda p: p.encode_text("x" * 17), "at most 16"),
    (lambda p: p.encode(torch.zeros(2, 16), modality="text"), "integer symbol ids"),
    (lambda p: p.encode(torch.full((2, 16), 999), modality="text"), "must lie in"),
    (lambda p: p.encode(torch.zeros(2, 5, dtype=torch.int64), modality="text"), "shape"),
    (lambda p: p.encode(torch.zeros(2, 1, 28, 28), modality="video"), "no modality 'video'"),
    (lambda p: p.text_codes("seven", n=0), "at least 1"),
    (lambda p: p.text_codes(["seven"]), "one string"),
])
def test_predictor_bad_multimodal_input(predictor, call, message):
    with pytest.raises(AelabError, match=message):
        call(predictor)


def test_one_modality_predictor_has_no_text():
    p = Predictor(build_model("dense", (1, 28, 28), latent_dim=2, hidden_dims=[8]))
    assert not p.multimodal and p.modalities == ("image",)
    with pytest.raises(AelabError, match="reads no text"):
        p.encode_text("seven")
    with pytest.raises(AelabError, match="no modality 'text'"):
        p.decode(torch.zeros(1, 2), modality="text")


# ---------------------------------------------------------------------------------------------- the routes
def test_info_names_the_modalities_and_the_map(client, mm):
    _, data = mm
    info = client.get("/api/info").json()
    assert (info["model"], info["latent_dim"], info["dataset"]) == ("multimodal", LATENT, "mnist5k")
    assert info["modalities"] == list(MODALITIES) and info["map_modality"] == "image"
    assert info["input_shape"] == [1, 28, 28] and info["test_count"] == len(data.y_test)
    assert info["text"] == {"max_length": 16, "alphabet": ALPHABET}
    if "audio" in MODALITIES:
        assert info["recordings"] == len(np.unique(data.meta["pairing"]["test"]["audio"]))
    else:
        assert info["recordings"] is None
    assert info["map"]["method"] == "pca" and info["map"]["points"] == len(data.y_test)


def test_contract_routes_are_about_the_images(client, predictor, mm):
    _, data = mm
    points = client.get("/api/points").json()["points"]
    assert len(points) == len(data.y_test)
    assert [p["label"] for p in points] == data.y_test.tolist()
    z = client.post("/api/encode", json={"index": 17}).json()["z"]
    np.testing.assert_allclose(z, predictor.encode(data.x_test["image"][17])[0].numpy(), rtol=1e-5, atol=1e-6)
    image = client.post("/api/decode", json={"z": z}).json()["image"]
    np.testing.assert_array_equal(pixels(image), expected_pixels(predictor.decode(torch.tensor([z])))[0])
    png = client.get("/api/images/17")
    assert png.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png.content))), data.x_test["image"][17, 0].numpy())


def test_item_adds_the_decoded_word_and_the_nearest_recordings(client, predictor, mm):
    _, data = mm
    index = 42
    item = client.get(f"/api/items/{index}").json()
    z = predictor.encode(data.x_test["image"][index])
    assert item["word"] == predictor.decode_text(z)[0]
    assert item["text"] == decode_text(data.x_test["text"][index:index + 1])[0]
    np.testing.assert_allclose(item["z"], z[0].numpy(), rtol=1e-5, atol=1e-6)
    if "audio" not in MODALITIES:
        assert "nearest_recordings" not in item
        return
    # known answer: every distinct test recording encoded alone, the five nearest the image's code
    fsdd = np.asarray(data.meta["pairing"]["test"]["audio"])
    ids, rows = np.unique(fsdd, return_index=True)
    codes = predictor.encode(data.x_test["audio"][torch.as_tensor(rows)], modality="audio")
    distance = torch.cdist(z, codes)[0].numpy()
    order = np.argsort(distance, kind="stable")[:5]
    near = item["nearest_recordings"]
    assert [r["recording"] for r in near] == ids[order].tolist()
    assert [r["digit"] for r in near] == data.y_test[rows[order]].tolist()
    assert [r["distance"] for r in near] == pytest.approx(distance[order].tolist(), abs=1e-3)
    assert all(fsdd[r["row"]] == r["recording"] for r in near)  # a test row paired with that recording
    assert [ids[r["id"]] for r in near] == [r["recording"] for r in near]  # the id is the recording's place


def test_decode_gives_the_word_and_recordings_of_any_code(client, predictor):
    """Issue 22, defect 4: the word (and the nearest recordings) follow the code on screen, not the item."""
    z = [1.5, -2.0, 0.5, 0.0, 3.0, -1.0, 0.25, 2.0]
    answer = client.post("/api/decode", json={"z": z}).json()
    assert answer["word"] == predictor.decode_text(torch.tensor([z]))[0]
    np.testing.assert_array_equal(pixels(answer["image"]), expected_pixels(predictor.decode(torch.tensor([z])))[0])
    if "audio" in MODALITIES:
        codes = client.app.state.views["mm"].recordings.codes
        distance = torch.cdist(torch.tensor([z]), codes)[0].numpy()
        assert [r["id"] for r in answer["nearest_recordings"]] == np.argsort(distance, kind="stable")[:5].tolist()


@pytest.mark.parametrize("text, unknown", [("xyz", ["xyz"]), ("neuf", ["neuf"]), ("seven", []), ("Seven", []),
                                           ("the number six", []), ("digit 7", []), ("7 (seven)", []),
                                           ("neuf neuf 77", ["neuf", "77"]), ("sEVEN", ["sEVEN"])])
def test_text_flags_words_outside_the_training_vocabulary(client, predictor, text, unknown):
    """Issue 22: a word the model never saw is flagged, and still decoded."""
    answer = client.post("/api/text", json={"text": text, "n": 2}).json()
    assert answer["unknown"] == unknown
    assert answer["word"] == predictor.decode_text(predictor.text_codes(text, 1))[0] and len(answer["images"]) == 2


@needs_audio
def test_recordings_list_and_one_recording(client, predictor, mm):
    _, data = mm
    view = client.app.state.views["mm"]
    listing = client.get("/api/recordings").json()
    fsdd = np.asarray(data.meta["pairing"]["test"]["audio"])
    ids, rows = np.unique(fsdd, return_index=True)
    assert [r["recording"] for r in listing["recordings"]] == ids.tolist()
    assert [r["id"] for r in listing["recordings"]] == list(range(len(ids)))
    assert [r["digit"] for r in listing["recordings"]] == data.y_test[rows].tolist()
    # a PCA map: each recording's code projected on the map's axes (known answer: the same code, mapped back)
    assert listing["placement"] == "projected"
    proj = view.projection
    codes = predictor.encode(data.x_test["audio"][torch.as_tensor(rows)], modality="audio").numpy()
    xy = np.array([[r["x"], r["y"]] for r in listing["recordings"]])
    np.testing.assert_allclose(xy, (codes - proj.origin) @ proj.axes.T, atol=2e-3)
    # one recording: its MFCCs as a picture (blue below the mean, red above), what its code decodes to
    k = 3
    rec = client.get(f"/api/recordings/{k}").json()
    np.testing.assert_allclose(rec["z"], codes[k], rtol=1e-5, atol=1e-5)
    mfcc = pixels(rec["mfcc"])
    features = data.x_test["audio"][rows[k]].numpy()  # (T, 13)
    assert mfcc.shape == (13, features.shape[0], 3)
    top_row = mfcc[0]  # the last coefficient, drawn on top
    assert ((top_row[:, 0] > top_row[:, 2]) == (features[:, -1] > 0))[np.abs(features[:, -1]) > 0.05].all()
    assert pixels(rec["reconstruction"]).shape == mfcc.shape
    own = torch.tensor(codes[k:k + 1])
    np.testing.assert_array_equal(pixels(rec["image"]), expected_pixels(predictor.decode(own))[0])
    assert rec["word"] == predictor.decode_text(own)[0]
    # the text's nearest recordings: text -> recording retrieval
    answer = client.post("/api/text", json={"text": "seven", "n": 1}).json()
    distance = torch.cdist(predictor.encode_text("seven"), torch.tensor(codes))[0].numpy()
    assert [r["id"] for r in answer["nearest_recordings"]] == np.argsort(distance, kind="stable")[:5].tolist()
    # past the end: the same rule as test items
    past = client.get(f"/api/recordings/{len(ids)}")
    assert past.status_code == 422 and past.json()["detail"] == (
        f"recording {len(ids)} is out of range: the test set has {len(ids)} recordings (0 to {len(ids) - 1})")


@needs_audio
def test_recordings_on_a_tsne_map_sit_among_their_nearest_image_codes(client):
    view = client.app.state.views["mm"]
    rec = dataclasses.replace(view.recordings)  # a copy: place() sets its points
    tsne_like = type(view.projection)(view.projection.points, view.projection.index, "tsne", ("a", "b"))
    images = view.predictor.encode(view.x)
    rec.place(tsne_like, images)
    near = torch.cdist(rec.codes[:1], images).topk(5, largest=False).indices[0].numpy()
    np.testing.assert_allclose(rec.points[0], view.projection.points[near].mean(0), rtol=1e-5)
    assert rec.placement == "nearest images"


def test_one_modality_item_has_no_multimodal_keys(tmp_path_factory):
    client = TestClient(create_app(tiny_runs(tmp_path_factory) / "conv", method="pca", device="cpu", log=None))
    item = client.get("/api/items/0").json()
    assert set(item) == {"index", "label", "class", "image", "reconstruction", "z"}
    info = client.get("/api/info").json()
    assert info["modalities"] is None and info["map_modality"] == "image"  # no stray "image" in the header
    assert info["text"] is None and info["recordings"] is None and info["flat"] is False
    answer = client.post("/api/text", json={"text": "seven"})
    assert answer.status_code == 400 and "no text modality" in answer.json()["detail"]


def test_text_makes_images(client, predictor):
    answer = client.post("/api/text", json={"text": "seven", "n": 6, "seed": 1}).json()
    assert answer["text"] == "seven" and len(answer["images"]) == len(answer["z"]) == 6
    codes = predictor.text_codes("seven", n=6, seed=1)
    np.testing.assert_allclose(answer["z"], codes.numpy(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(answer["z"][0]), predictor.encode_text("seven")[0], rtol=1e-5, atol=1e-6)
    want = expected_pixels(predictor.decode(codes))
    for k, image in enumerate(answer["images"]):
        np.testing.assert_array_equal(pixels(image), want[k])
    assert answer["word"] == predictor.decode_text(codes[:1])[0]
    # the defaults: 8 images, seed 0, so the same text gives the same images
    first = client.post("/api/text", json={"text": "seven"}).json()
    assert len(first["images"]) == 8 and client.post("/api/text", json={"text": "seven"}).json() == first
    other = client.post("/api/text", json={"text": "one"}).json()
    assert other["z"][0] != first["z"][0]


@pytest.mark.parametrize("body, status", [
    ({"text": "sev/en"}, 422),  # a character outside the alphabet
    ({"text": "seven\n"}, 422),
    ({"text": "ö"}, 422),
    ({"text": "x" * (LIMITS["max_text"] + 1)}, 422),
    ({"text": ""}, 422),
    ({"text": 7}, 422),
    ({"text": ["seven"]}, 422),
    ({}, 422),
    ({"text": "seven", "n": 0}, 422),
    ({"text": "seven", "n": LIMITS["max_samples"] + 1}, 422),
    ({"text": "seven", "n": 2.5}, 422),
    ({"text": "seven", "seed": -1}, 422),
    ({"text": "seven", "extra": 1}, 422),
])
def test_bad_text_requests(client, body, status):
    answer = client.post("/api/text", json=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json" and "detail" in answer.json()
    assert "Traceback" not in answer.text


@pytest.mark.parametrize("path, status", [("/api/items/1000", 422), ("/api/items/-1", 422), ("/api/items/x", 422),
                                          ("/api/recordings/100000", 422 if "audio" in MODALITIES else 400),
                                          ("/api/recordings/-1", 422), ("/api/info?run=nope", 404)])
def test_bad_item_requests(client, path, status):
    answer = client.get(path)
    assert answer.status_code == status and "detail" in answer.json()


def test_text_body_not_json(client):
    for body, kind in ((b"{", "application/json"), (b"\xff\xfe", "application/json"), (b"text=seven", "text/plain")):
        answer = client.post("/api/text", content=body, headers={"content-type": kind})
        assert 400 <= answer.status_code < 500 and "detail" in answer.json()


TEXT_CHARS = st.text(alphabet=st.sampled_from(ALPHABET + "/ö\n\x00%."), max_size=20)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(
    st.fixed_dictionaries({"text": TEXT_CHARS},
                          optional={"n": st.integers(-2, 70), "seed": st.none() | st.integers(-1, 2**33)}),
    st.dictionaries(st.text(max_size=6), st.none() | st.integers() | st.text(max_size=6), max_size=3)))
def test_text_fuzz_never_a_5xx(client, body):
    answer = client.post("/api/text", content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert answer.status_code < 500, (body, answer.text[:200])
    if answer.status_code == 200:
        assert body["text"] and len(body["text"]) <= 16 and all(c in ALPHABET for c in body["text"])
        assert all(i.startswith("data:image/png;base64,") for i in answer.json()["images"])


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(-5, 1100))
def test_item_fuzz_never_a_5xx(client, index):
    answer = client.get(f"/api/items/{index}")
    assert answer.status_code in (200, 422)
    if answer.status_code == 200:
        assert isinstance(answer.json()["word"], str)


@needs_audio
def test_serve_reads_the_recordings_from_audio_data(mm, capsys):
    from aelab.cli import main

    # the run's config names the FSDD file; --audio-data overrides it: a missing one is one line and exit 2
    assert main(["serve", str(mm[0]), "--port", "0", "--quiet", "--audio-data", "/nonexistent/digits.npz"]) == 2
    err = capsys.readouterr().err
    assert "/nonexistent/digits.npz does not exist" in err and len(err.strip().splitlines()) == 1
    view = create_app(mm[0], method="pca", device="cpu", log=None, audio_data=str(FSDD)).state.views["mm"]
    recordings = np.unique(mm[1].meta["pairing"]["test"]["audio"])
    assert view.recordings is not None and len(view.recordings.rows) == len(recordings)
