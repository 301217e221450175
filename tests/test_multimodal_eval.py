"""Multimodal metrics with known answers: retrieval ranks, coherence, the text oracle, distinct test items; the
cached oracles; and evaluate_multimodal's contract on a small model."""
import math

import numpy as np
import pytest
import torch

from aelab.data import multimodal as mm
from aelab.errors import AelabError
from aelab.evaluation import multimodal as ev
from aelab.models.multimodal import MultimodalAE

from .test_multimodal_data import fake_fsdd


def test_retrieval_on_a_hand_made_case_with_known_ranks():
    # gallery on a line; labels: a a b b a at positions 0 1 2 3 10
    gallery = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    g_labels = torch.tensor([0, 0, 1, 1, 0])
    # query 1 at 2.9, label 0: ranking 3(b) 2(b) 1(a) 0(a) 10(a) -> relevant at ranks 3, 4, 5
    # query 2 at 0.1, label 1: ranking 0(a) 1(a) 2(b) 3(b) 10(a) -> relevant at ranks 3, 4
    queries = torch.tensor([[2.9], [0.1]])
    q_labels = torch.tensor([0, 1])
    out = ev.retrieval_metrics(queries, q_labels, gallery, g_labels, ks=(1, 2, 3, 5))
    assert out["recall@1"] == 0.0 and out["recall@2"] == 0.0 and out["recall@3"] == 1.0 and out["recall@5"] == 1.0
    ap1 = (1 / 3 + 2 / 4 + 3 / 5) / 3
    ap2 = (1 / 3 + 2 / 4) / 2
    assert math.isclose(out["map"], (ap1 + ap2) / 2, rel_tol=1e-6)


def test_retrieval_perfect_and_without_relevant_items():
    codes = torch.eye(4)
    labels = torch.arange(4)
    perfect = ev.retrieval_metrics(codes, labels, codes, labels)
    assert perfect == {"recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0, "map": 1.0}
    none = ev.retrieval_metrics(codes, labels, codes, labels + 10)  # no gallery item shares a query's label
    assert none == {"recall@1": 0.0, "recall@5": 0.0, "recall@10": 0.0, "map": 0.0}


def test_retrieval_in_blocks_matches_all_at_once(monkeypatch):
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(50, 3, generator=g), torch.randn(40, 3, generator=g)
    ql, gl = torch.randint(0, 4, (50,), generator=g), torch.randint(0, 4, (40,), generator=g)
    whole = ev.retrieval_metrics(q, ql, gal, gl)
    monkeypatch.setattr(ev, "RANK_BLOCK", 100)  # two queries a block
    assert ev.retrieval_metrics(q, ql, gal, gl) == pytest.approx(whole)


def test_retrieval_refuses_mismatched_input():
    with pytest.raises(AelabError, match="one label each"):
        ev.retrieval_metrics(torch.zeros(3, 2), torch.zeros(2), torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(AelabError, match="same width"):
        ev.retrieval_metrics(torch.zeros(3, 2), torch.zeros(3), torch.zeros(4, 5), torch.zeros(4))


def test_coherence_on_known_labels():
    assert ev.coherence(torch.tensor([1, 2, 3, -1]), torch.tensor([1, 2, 0, 4])) == 0.5
    assert ev.coherence([7, 7], [7, 7]) == 1.0
    with pytest.raises(AelabError, match="one prediction per source label"):
        ev.coherence([1, 2], [1])


def test_the_text_oracle_reads_every_form_and_refuses_ambiguity():
    for held_out in (False, True):
        for d, forms in mm.digit_forms(held_out).items():
            assert ev.classify_text(forms).tolist() == [d] * len(forms)
    assert ev.classify_text(["thseven", "SEVEN", "", "one two", "zzz", "3 (three)"]).tolist() == [7, 7, -1, -1, -1, 3]


def test_test_items_are_distinct_recordings_and_forms(tmp_path, mnist5k, monkeypatch):
    monkeypatch.setattr(mm, "load_dataset", lambda name, data_dir=None: mnist5k)
    data = mm.load_multimodal("mnist5k", "image,audio,text", audio_path=fake_fsdd(tmp_path / "d.npz"), seed=0)
    assert len(ev.item_rows(data, "test", "image")) == 1000
    audio = ev.item_rows(data, "test", "audio")
    assert len(audio) == 40  # 20% of 200 recordings, each once
    assert len(set(data.meta["pairing"]["test"]["audio"][audio.numpy()])) == 40
    text = ev.item_rows(data, "test", "text")
    assert len(text) == 10 * len(mm.TEST_TEMPLATES)
    assert len(set(mm.decode_text(data.x_test["text"][text]))) == len(text)


def _tiny_pair(tmp_path, monkeypatch, mnist5k):
    monkeypatch.setattr(mm, "load_dataset", lambda name, data_dir=None: mnist5k)
    data = mm.load_multimodal("mnist5k", "audio,text", audio_path=fake_fsdd(tmp_path / "d.npz", per_digit=30))
    torch.manual_seed(0)
    model = MultimodalAE(mm.modalities_of(data), latent_dim=4, audio_channels=[4, 8], text_embed=4, text_hidden=8)
    return data, model


def test_oracles_are_trained_once_and_cached(tmp_path, mnist5k, monkeypatch, one_thread):
    data, _ = _tiny_pair(tmp_path, monkeypatch, mnist5k)
    first = ev.get_oracle("audio", data, train_samples=2000)
    assert not first.cached and first.accuracy > 0.5  # the fake recordings carry their digit
    files = list((tmp_path / "cache" / "oracles").glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("audio-32x13-")
    again = ev.get_oracle("audio", data, train_samples=2000)
    assert again.cached and again.accuracy == first.accuracy
    x = data.x_test["audio"][:20]
    assert torch.equal(again.predict(x), first.predict(x))
    assert ev.get_oracle("text", data).accuracy == 1.0  # a rule: every test form read right
    with pytest.raises(AelabError, match="no oracle for the modality 'smell'"):
        ev.get_oracle("smell", data)


def test_evaluate_multimodal_returns_every_pair(tmp_path, mnist5k, monkeypatch, one_thread):
    data, model = _tiny_pair(tmp_path, monkeypatch, mnist5k)
    oracles = {"audio": ev.get_oracle("audio", data, train_samples=500)}
    out = ev.evaluate_multimodal(model, data, oracles=oracles)
    assert set(out["retrieval"]) == {"audio->text", "text->audio"}
    assert set(out["retrieval"]["audio->text"]) == {"recall@1", "recall@5", "recall@10", "map"}
    assert set(out["coherence"]) == {"audio->text", "text->audio", "joint->audio", "joint->text"}
    assert all(0 <= v <= 1 for v in out["coherence"].values())
    assert out["oracle_accuracy"] == {"audio": oracles["audio"].accuracy, "text": 1.0}
    assert set(out["reconstruction"]["audio"]) == {"mse", "mse_joint"}
    assert set(out["reconstruction"]["text"]) == {"char_accuracy", "exact", "char_accuracy_joint", "exact_joint"}
    assert set(out["probes"]) == {"audio", "text", "joint"}
    assert out["test_items"] == {"audio": 60, "text": 10 * len(mm.TEST_TEMPLATES)}
    with pytest.raises(AelabError, match="two or more modalities"):
        ev.evaluate_multimodal(model, type(data)("one", {"audio": data.x_train["audio"]},
                                                 {"audio": data.x_test["audio"]}, data.y_train, data.y_test))


def test_reconstruction_error_known_answers():
    ids = torch.tensor([[1, 2, 0], [3, 3, 3]])
    out = ev.reconstruction_error("text", torch.tensor([[1, 2, 0], [3, 0, 3]]), ids)
    assert out == {"char_accuracy": pytest.approx(5 / 6), "exact": 0.5}
    img = torch.zeros(2, 1, 2, 2, dtype=torch.uint8)
    assert ev.reconstruction_error("image", torch.full((2, 1, 2, 2), 0.5), img) == {"mse": 0.25}
    assert np.isclose(ev.reconstruction_error("audio", torch.ones(2, 4, 13), torch.zeros(2, 4, 13))["mse"], 1.0)
