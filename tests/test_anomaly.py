"""Anomaly scores (issue 19): known answers for every score, the normal-classes spec, the one-class entry of
evaluation.json, ``Predictor.score`` and ``aelab score``; bad input is one line and exit 2."""
import json

import numpy as np
import pyarrow.csv as pa_csv
import pytest
import torch

import aelab
from aelab.cli import main

from .conftest import run_cli
from aelab.data import from_arrays
from aelab.data.anomaly import apply_normal_classes, normal_only, parse_classes
from aelab.errors import AelabError
from aelab.evaluation.anomaly import (SCORES, AnomalyScorer, anomaly_rows, anomaly_truth, applicable_scores, auroc_ap,
                                      evaluate_anomaly)
from aelab.evaluation.likelihood import iwae_nll, neg_elbo
from aelab.runfolder import load_run_data

pytestmark = pytest.mark.usefixtures("one_thread")


def identity_model(d: int = 4):
    """A dense autoencoder whose code is its input and whose reconstruction is exact: every score known."""
    model = aelab.build_model("dense", (d,), latent_dim=d, hidden_dims=[], output="linear", loss="mse")
    with torch.no_grad():
        for layer in (model.encoder[0], model.decoder[0]):
            layer.weight.copy_(torch.eye(d))
            layer.bias.zero_()
    return model.eval()


def points(*xs):
    """Rows (x, 0, 0, 0)."""
    return torch.tensor([[float(x), 0.0, 0.0, 0.0] for x in xs])


# ---------------------------------------------------------------------------------------------- known answers
def test_a_perfect_reconstruction_scores_zero():
    model = identity_model()
    x = torch.randn(50, 4)
    scorer = AnomalyScorer.fit(model, x, methods=["recon"])
    assert scorer.methods == ("recon",) and scorer.default == "recon"
    assert np.array_equal(scorer.score(x * 3), np.zeros(50))


def test_knn_is_the_mean_distance_to_the_nearest_training_codes():
    model, train = identity_model(), points(0, 1, 3)
    one = AnomalyScorer.fit(model, train, methods=["knn"], k=1)
    assert one.score(train, "knn").tolist() == [0.0, 0.0, 0.0]  # a training point is its own nearest code
    assert one.score(points(2.5, -2), "knn").tolist() == [0.5, 2.0]
    two = AnomalyScorer.fit(model, train, methods=["knn"], k=2)
    assert two.score(points(2), "knn").tolist() == [1.0]  # neighbours 1 and 3
    # training rows leave themselves out: 0 -> 1, 1 -> 0, 3 -> 1 with k=1
    assert one.training_scores("knn").tolist() == [1.0, 1.0, 2.0]


def test_mahalanobis_is_zero_at_the_training_mean_and_grows_away_from_it():
    model = identity_model()
    train = torch.randn(400, 4, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 2.0, 0.5, 1.0])
    scorer = AnomalyScorer.fit(model, train, methods=["mahalanobis"])
    mean = train.mean(0, keepdim=True)
    at, one, five = scorer.score(torch.cat([mean, mean + 1, mean + 5]), "mahalanobis")
    assert abs(at) < 1e-6 and one > 0.5 and five == pytest.approx(5 * one)  # a norm: 5 steps out is 5 times as far


def test_the_threshold_is_the_quantile_of_the_training_scores():
    scorer = AnomalyScorer.fit(identity_model(), points(0, 1, 3), methods=["knn"], k=1)  # training scores 1, 1, 2
    assert scorer.threshold("knn", contamination=0.5) == 1.0
    assert scorer.threshold("knn", contamination=0.05) == pytest.approx(1.9)  # 95% of the way from 1 to 2
    for bad in (0, 0.6, "x"):
        with pytest.raises(AelabError, match="contamination"):
            scorer.threshold("knn", contamination=bad)


def test_auroc_of_separable_scores_is_one_and_of_a_constant_a_half():
    truth = np.array([0, 0, 0, 1, 1], bool)
    assert auroc_ap([0.1, 0.2, 0.3, 0.8, 0.9], truth) == {"auroc": 1.0, "average_precision": 1.0}
    assert auroc_ap([0.9, 0.8, 0.7, 0.1, 0.2], truth)["auroc"] == 0.0
    assert auroc_ap(np.zeros(5), truth)["auroc"] == 0.5
    with pytest.raises(AelabError, match="both normal and anomalous"):
        auroc_ap([1.0, 2.0], [True, True])


def test_variational_scores_are_the_likelihood_bounds(small_mnist):
    torch.manual_seed(0)
    vae = aelab.build_model("vae", small_mnist.input_shape, latent_dim=4, hidden_dims=[16]).eval()
    x = small_mnist.x_test[:30]
    scorer = AnomalyScorer.fit(vae, small_mnist.x_train[:100], seed=7, iwae_samples=3)
    assert scorer.methods == tuple(SCORES) and applicable_scores(vae) == tuple(SCORES)
    xf = x.float() / 255
    assert np.allclose(scorer.score(x, "elbo"), neg_elbo(vae, xf, seed=7).numpy())
    assert np.allclose(scorer.score(x, "iwae"), iwae_nll(vae, xf, 3, seed=7).numpy())
    assert np.array_equal(scorer.score(x, "elbo"), scorer.score(x, "elbo"))  # seeded: the same twice
    # a one-modality model trained with bce scores its own loss: the binary cross-entropy summed per image
    recon = vae.reconstruct(xf)
    bce = torch.nn.functional.binary_cross_entropy(recon.clamp(1e-7, 1 - 1e-7), xf, reduction="none")
    assert np.allclose(scorer.score(x, "recon"), bce.flatten(1).sum(1).detach().numpy(), rtol=1e-4)


def test_a_score_the_model_lacks_or_does_not_exist_is_one_line():
    model = identity_model()
    assert applicable_scores(model) == ("recon", "relative", "knn", "mahalanobis")
    with pytest.raises(AelabError, match="needs a one-modality variational model"):
        AnomalyScorer.fit(model, torch.randn(10, 4), methods=["elbo"])
    with pytest.raises(AelabError, match="unknown anomaly score 'lof'; choose one of: recon, relative, knn, mahalanobis"):
        AnomalyScorer.fit(model, torch.randn(10, 4), methods="lof")
    scorer = AnomalyScorer.fit(model, torch.randn(10, 4), methods=["recon"])
    with pytest.raises(AelabError, match="fitted for recon, not knn"):
        scorer.score(torch.randn(3, 4), "knn")


def test_evaluate_anomaly_scores_the_whole_test_set_against_the_normal_classes():
    """Class 0 near the origin, class 1 far away: the code scores separate them perfectly; the identity model
    reconstructs both exactly, so its reconstruction error knows nothing (AUROC 0.5)."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(60, 4, generator=g), torch.randn(60, 4, generator=g) + 20])
    y = torch.tensor([0] * 60 + [1] * 60)
    data = from_arrays(x, y, test_fraction=0.25, classes=["near", "far"])
    out = evaluate_anomaly(identity_model(), data, "near")
    assert out["normal_classes"] == [0] and out["default"] == "recon"
    assert (out["test_normal"], out["test_anomalous"]) == (15, 15)
    assert out["scores"]["recon"]["auroc"] == out["scores"]["relative"]["auroc"] == 0.5  # zero error, any scale
    assert out["scores"]["knn"] == out["scores"]["mahalanobis"] == {"auroc": 1.0, "average_precision": 1.0}
    assert json.loads(json.dumps(out)) == out  # what evaluation.json holds
    assert [r[:3] for r in anomaly_rows(out)] == [["recon (default)", "0.5000", "0.5000"],
                                                  ["relative", "0.5000", "0.5000"], ["knn", "1.0000", "1.0000"],
                                                  ["mahalanobis", "1.0000", "1.0000"]]
    assert anomaly_truth(torch.tensor([0, 1, 2]), [0, 2]).tolist() == [False, True, False]


# ---------------------------------------------------------------------------------------------- normal classes
def test_parse_classes_reads_indices_names_and_ranges():
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress"]
    assert parse_classes("3", None, 10) == [3]
    assert parse_classes("0-4", None, 10) == [0, 1, 2, 3, 4]
    assert parse_classes("2,5, 8", None, 10) == [2, 5, 8]
    assert parse_classes("T-shirt/top,dress", names, 4) == [0, 3]  # a name with a hyphen is a name
    assert parse_classes("1-2,1", names, 4) == [1, 2]


@pytest.mark.parametrize("spec, classes, message", [
    ("10", None, "no class 10: its classes are 0..9"),
    ("3-12", None, "no class 10"),
    ("cat", ["dog", "bird"], "no class 'cat'; its classes are dog, bird"),
    ("0-9", None, "every class"),
    ("5-3", None, "runs backwards"),
    ("3,,4", None, "empty name"),
])
def test_bad_normal_classes_are_one_line(spec, classes, message):
    with pytest.raises(AelabError, match=message) as info:
        parse_classes(spec, classes, len(classes) if classes else 10)
    assert "\n" not in str(info.value)


def test_normal_only_keeps_the_training_rows_of_those_classes_and_every_test_row(small_mnist):
    kept = normal_only(small_mnist, [3, 5])
    assert set(kept.y_train.tolist()) == {3, 5} and len(kept.y_train) == int(torch.isin(small_mnist.y_train,
                                                                                      torch.tensor([3, 5])).sum())
    assert kept.x_test is small_mnist.x_test and kept.meta["normal_classes"] == [3, 5]
    assert torch.equal(kept.x_train, small_mnist.x_train[torch.isin(small_mnist.y_train, torch.tensor([3, 5]))])
    assert apply_normal_classes(small_mnist, None) is small_mnist
    assert torch.equal(apply_normal_classes(kept, "3,5").x_train, kept.x_train)  # twice is once
    unlabelled = from_arrays(torch.rand(20, 4))
    with pytest.raises(AelabError, match="has no labels"):
        apply_normal_classes(unlabelled, "0")


# ---------------------------------------------------------------------------------------------- a run, the CLI
_run = run_cli  # tests.conftest: aelab ARGS in-process


def _one_line_exit_2(code, err, *needles):
    assert code == 2 and len(err.strip().splitlines()) == 1 and "error: " in err, err
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    """A tiny conv autoencoder trained one epoch on the 3s of mnist5k (`aelab train --normal-classes 3`)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "conv3"
    assert main(["train", "--model", "conv", "--dataset", "mnist5k", "--normal-classes", "3", "--epochs", "1",
                 "--latent-dim", "4", "--hidden-dims", "4,8", "--out", str(out), "--quiet"]) == 0
    return out


def test_a_run_on_normal_classes_trains_on_them_and_evaluates_every_score(run3, mnist5k):
    assert json.loads((run3 / "config.json").read_text())["normal_classes"] == "3"
    run = aelab.open_run(run3)
    assert set(load_run_data(run.config).y_train.tolist()) == {3}  # trained on the 3s alone
    anomaly = json.loads((run3 / "evaluation.json").read_text())["anomaly"]
    assert anomaly["normal_classes"] == [3] and anomaly["default"] == "recon"
    assert set(anomaly["scores"]) == {"recon", "relative", "knn", "mahalanobis"}
    n3 = int((mnist5k.y_test == 3).sum())
    assert (anomaly["test_normal"], anomaly["test_anomalous"]) == (n3, len(mnist5k.y_test) - n3)
    assert all(0 <= v["auroc"] <= 1 and 0 < v["average_precision"] <= 1 for v in anomaly["scores"].values())
    for name in ("anomaly_roc.png", "anomaly_histograms.png", "anomaly_extremes.png"):
        assert (run3 / name).is_file() and f'data-file="{name}"' in (run3 / "report.html").read_text()


def test_predictor_score_is_the_scorer_fitted_on_the_runs_normal_rows(run3, mnist5k):
    p = aelab.Predictor.from_run(run3, device="cpu")
    x = mnist5k.x_test[:40]
    threes = mnist5k.x_train[mnist5k.y_train == 3]
    expected = AnomalyScorer.fit(p.model, threes).score(x, "knn")
    assert torch.allclose(p.score(x, method="knn"), torch.from_numpy(expected).float())
    assert p.score(x[0]).shape == (1,) and p.scorer.default == "recon"
    with pytest.raises(AelabError, match="reads image inputs of shape"):
        p.score(torch.zeros(3, 5))


def test_aelab_score_writes_one_row_per_input_flagged_at_the_training_quantile(run3, mnist5k, tmp_path, capsys):
    threes = mnist5k.x_train[mnist5k.y_train == 3].numpy()
    np.savez(tmp_path / "threes.npz", x=threes)
    code, out, err = _run(["score", str(run3), "--input", str(tmp_path / "threes.npz"), "--out",
                           str(tmp_path / "s.csv"), "--contamination", "0.1"], capsys)
    assert code == 0, err
    table = pa_csv.read_csv(tmp_path / "s.csv")
    assert table.column_names == ["file", "score", "is_anomaly"] and table.num_rows == len(threes)
    flagged = np.asarray(table["is_anomaly"].to_pylist())
    assert abs(flagged.mean() - 0.1) <= 1 / len(threes)  # the training rows themselves: a tenth above the threshold
    scores = np.asarray(table["score"].to_pylist())
    assert np.allclose(scores, aelab.Predictor.from_run(run3, device="cpu").score(threes).numpy(), rtol=1e-5)

    code, out, err = _run(["score", str(run3), "--out", str(tmp_path / "t.csv"), "--method", "mahalanobis",
                           "--threshold", "4.5"], capsys)  # the run's own test set, with its labels
    assert code == 0, err
    table = pa_csv.read_csv(tmp_path / "t.csv")
    assert table.column_names == ["file", "score", "is_anomaly", "label"] and table.num_rows == len(mnist5k.y_test)
    assert [str(v) for v in table["label"].to_pylist()] == [str(v) for v in mnist5k.y_test.tolist()]
    assert np.array_equal(np.asarray(table["is_anomaly"].to_pylist()), np.asarray(table["score"].to_pylist()) > 4.5)
    assert "above the threshold 4.5 (given)" in out


def test_bad_score_input_is_one_line(run3, tmp_path, capsys):
    np.savez(tmp_path / "flat.npz", x=np.zeros((5, 7), np.float32))
    out = str(tmp_path / "s.csv")
    code, _, err = _run(["score", str(run3), "--out", out, "--threshold", "abc"], capsys)
    _one_line_exit_2(code, err, "--threshold must be a finite number, got 'abc'")
    code, _, err = _run(["score", str(run3), "--input", str(tmp_path / "flat.npz"), "--out", out], capsys)
    _one_line_exit_2(code, err, "shape (7,)", "(1, 28, 28)")
    code, _, err = _run(["score", str(run3), "--out", out, "--method", "iwae"], capsys)
    _one_line_exit_2(code, err, "needs a one-modality variational model")
    code, _, err = _run(["score", str(run3), "--out", out, "--contamination", "0.9"], capsys)
    _one_line_exit_2(code, err, "(0, 0.5]")
    with pytest.raises(SystemExit) as info:  # argparse's own usage error: one line, exit 2
        main(["score", str(run3), "--out", out, "--threshold", "1", "--contamination", "0.1"])
    assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err
    code, _, err = _run(["score", str(run3), "--out", str(tmp_path / "s.txt")], capsys)
    _one_line_exit_2(code, err, "name the file .csv or .parquet")
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("spec, needle", [("10", "no class 10"), ("0-9", "every class"), ("seven", "no class 'seven'"),
                                          (" ", "normal_classes is empty")])
def test_bad_normal_classes_stop_training_in_one_line(spec, needle, tmp_path, capsys):
    code, _, err = _run(["train", "--model", "dense", "--dataset", "mnist5k", "--normal-classes", spec, "--epochs",
                         "1", "--out", str(tmp_path / "r"), "--quiet"], capsys)
    _one_line_exit_2(code, err, needle)


def test_a_dataset_passed_to_train_keeps_its_normal_classes_rows(small_mnist, tmp_path):
    model = aelab.build_model("dense", small_mnist.input_shape, latent_dim=4, hidden_dims=[16])
    run = aelab.train(model, small_mnist, out=tmp_path / "r", epochs=1, normal_classes="1,7", report=False,
                      progress=False, log=None)
    assert run.config.normal_classes == "1,7"
    p = aelab.Predictor(run.model)
    with pytest.raises(AelabError, match="Predictor.from_run"):
        p.score(small_mnist.x_test[:2])
