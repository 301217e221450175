"""Chance-level warnings: known answers for each kind of metric, and silence for a run that learned."""
from __future__ import annotations

import pytest
import torch

from aelab.data import Dataset
from aelab.evaluation.chance import chance_level, chance_warnings, mean_prediction_mse, with_references

from .conftest import run_cli

LEARNED = {"test_mse": 0.012, "mean_image_mse": 0.067, "linear_probe_accuracy": 0.91, "knn_accuracy": 0.94}


def test_chance_level_for_ten_classes_is_a_quarter():
    assert chance_level(10) == pytest.approx(0.25)
    assert chance_level(2) == pytest.approx(0.625)  # capped: a quarter of the way from 0.5 to 1
    assert chance_level(4) == pytest.approx(0.4375)


def test_a_run_that_learned_gets_no_warning():
    assert chance_warnings(LEARNED, 10) == []
    assert chance_warnings(None) == []
    assert chance_warnings({}) == []


def test_probes_at_chance_are_one_sentence_with_the_fix_and_the_learning_rate():
    lines = chance_warnings({**LEARNED, "linear_probe_accuracy": 0.11, "knn_accuracy": 0.12}, 10, lr=1e-3)
    assert len(lines) == 1
    assert "linear 11%" in lines[0] and "5-NN 12%" in lines[0] and "chance is 10%" in lines[0]
    assert "--epochs" in lines[0] and "--lr 0.001" in lines[0] and lines[0].endswith(".")


def test_reconstruction_no_better_than_the_mean_image_is_flagged():
    lines = chance_warnings({**LEARNED, "test_mse": 0.066}, 10)
    assert len(lines) == 1 and "mean" in lines[0] and "MSE 0.066 against 0.067" in lines[0]
    assert chance_warnings({**LEARNED, "test_mse": 0.059}, 10) == []  # 0.88 of the reference: learned a little
    # without the reference there is nothing to compare with: no warning
    assert chance_warnings({"test_mse": 0.5}, 10) == []


def test_multimodal_coherence_probes_and_reconstruction_at_chance():
    # the failed run: coherence 0.10-0.21, grey-blob images
    evaluation = {"coherence": {"image->text": 0.10, "text->image": 0.21, "joint->image": 0.62},
                  "oracle_accuracy": {"image": 0.98, "text": 1.0},
                  "reconstruction": {"image": {"mse": 0.066, "mean_mse": 0.067}, "text": {"char_accuracy": 0.5}},
                  "probes": {"image": {"linear_probe_accuracy": 0.9}, "text": {"linear_probe_accuracy": 0.1}}}
    lines = chance_warnings(evaluation, 10)
    assert len(lines) == 3, lines
    coherence, probes, recon = lines
    assert "image->text 0.10" in coherence and "text->image 0.21" in coherence and "joint->image" not in coherence
    assert "text 10%" in probes and "image" not in probes
    assert "image MSE 0.066 against 0.067" in recon


def test_a_blind_oracle_does_not_blame_the_model():
    evaluation = {"coherence": {"image->audio": 0.1}, "oracle_accuracy": {"audio": 0.1}}
    assert chance_warnings(evaluation, 10) == []


def test_the_number_of_classes_moves_the_level():
    assert chance_warnings({"knn_accuracy": 0.55}, 2)  # two classes: 0.55 is chance
    assert chance_warnings({"knn_accuracy": 0.55}, 10) == []
    assert chance_warnings({"knn_accuracy": 0.7}, 2) == []
    assert chance_warnings({"knn_accuracy": 0.55, "num_classes": 2})  # the evaluation may say it


def test_mean_prediction_mse_known_answer():
    x_train = torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # mean (0.5, 1.0)
    x_test = torch.tensor([[1.0, 0.0]])  # errors 0.25 and 1.0
    assert mean_prediction_mse(x_train, x_test) == pytest.approx(0.625)
    images = torch.full((2, 1, 2, 2), 255, dtype=torch.uint8)  # uint8 read as [0, 1]
    assert mean_prediction_mse(images, torch.zeros_like(images)) == pytest.approx(1.0)


def test_with_references_adds_what_is_missing_and_keeps_what_is_there():
    x_train = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    x_test = torch.tensor([[1.0, 0.0]])
    data = Dataset("t", x_train, x_test, torch.tensor([0, 1]), torch.tensor([0]), classes=["a", "b"])
    out = with_references({"test_mse": 0.6}, data)
    assert out["mean_image_mse"] == pytest.approx(0.625) and out["num_classes"] == 2
    assert with_references({"test_mse": 0.6, "mean_image_mse": 0.1}, data)["mean_image_mse"] == 0.1
    assert chance_warnings(out)  # 0.6 >= 0.9 * 0.625: no better than the mean


def test_aelab_train_ends_with_the_warnings_of_a_run_that_learned_nothing(tmp_path, capsys):
    """A learning rate of 1e-9 leaves the decoder at the mean image it starts from (the data init): the end of
    `aelab train` says the reconstructions are no better than the mean, with the recorded learning rate."""
    code, out, _ = run_cli(["train", "--epochs", "1", "--lr", "1e-9", "--latent-dim", "2", "--hidden-dims", "16",
                            "--out", str(tmp_path / "r"), "--quiet"], capsys)
    assert code == 0
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert any("no better than predicting the mean" in line and "--lr 1e-09" in line for line in warnings), out
    report = (tmp_path / "r" / "report.html").read_text()
    assert 'id="chance"' in report and "no better than predicting the mean" in report
