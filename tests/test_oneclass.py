"""``aelab one-class`` (issue 19): the one-class protocol of Ruff et al. 2018 in one command. Known answers for the
class lists and the scores, a two-class run end to end (its AUROC recomputed from the saved runs), a folder of your
own images, and bad input as one line and exit 2."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import aelab
from aelab.cli import main
from aelab.data import from_arrays
from aelab.errors import AelabError
from aelab.evaluation.anomaly import AnomalyScorer, anomaly_truth, auroc_ap
from aelab.oneclass import (DCAE, DEEP_SVDD, RECIPE, RESULT, class_ids, class_scores, one_class,
                            relative_error)

from .conftest import SHARED_DATA, requires_shared
from .test_report import assert_self_contained, parse

pytestmark = pytest.mark.usefixtures("one_thread")


def features(n_per_class: int = 30, classes: int = 3, d: int = 6, seed: int = 0):
    """Float features of ``classes`` labelled Gaussian blobs, split into train and test."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.randn(len(y), d, generator=g) + 3.0 * torch.nn.functional.one_hot(y, d).float()
    return from_arrays(x.numpy(), y.numpy(), test_fraction=0.3, seed=seed)


# ---------------------------------------------------------------------------------------------- known answers
def test_the_published_numbers_are_those_of_the_paper():
    assert round(float(np.mean(DEEP_SVDD["mnist"])), 1) == 94.8  # the issue's mean of Table 1's one-class Deep SVDD
    assert DEEP_SVDD["mnist"][8] == 93.9 and len(DCAE["mnist"]) == 10
    assert all(a < s for a, s in zip(DCAE["mnist"], DEEP_SVDD["mnist"]))  # the autoencoder baseline trails it


def test_class_lists_name_indices_ranges_and_names_in_order(mnist5k):
    assert class_ids(None, mnist5k) == list(range(10)) == class_ids("0-9", mnist5k) == class_ids("all", mnist5k)
    assert class_ids("8,2,2,0-1", mnist5k) == [8, 2, 0, 1]  # the order given, each class once
    clothes = aelab.Dataset("clothes", mnist5k.x_train, mnist5k.x_test, mnist5k.y_train, mnist5k.y_test,
                            classes=["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                     "Sneaker", "Bag", "Ankle boot"])
    assert class_ids("Sneaker,bag", clothes) == [7, 8]


@pytest.mark.parametrize("spec, words", [("12", "no class 12"), ("5-3", "backwards"), ("seven", "no class 'seven'")])
def test_a_class_list_naming_what_the_data_lacks_is_refused(mnist5k, spec, words):
    with pytest.raises(AelabError, match=words):
        class_ids(spec, mnist5k)


def test_unlabelled_or_one_class_data_is_refused(mnist5k):
    unlabelled = aelab.Dataset("plain", mnist5k.x_train, mnist5k.x_test)
    with pytest.raises(AelabError, match="no labels"):
        class_ids(None, unlabelled)
    ones = aelab.Dataset("ones", mnist5k.x_train[:10], mnist5k.x_test[:5], torch.zeros(10, dtype=torch.long),
                         torch.zeros(5, dtype=torch.long))
    with pytest.raises(AelabError, match="at least two"):
        class_ids(None, ones)


def test_the_relative_error_is_the_error_per_unit_of_input_mass():
    recon = np.array([0.1, 0.2, 0.3, 0.4])
    x = torch.tensor([[0.5, 0.5, 0.5, 0.5], [-1.0, 1.0, -1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    assert np.allclose(relative_error(recon, x), [0.2, 0.2, 0.3 / 1e-6, 0.8])
    image = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)  # uint8 images count as values in [0, 1]
    assert np.allclose(relative_error(np.array([0.5]), image), [0.5])


def test_class_scores_are_the_scorers_scores_and_their_standardised_sum():
    data = features()
    torch.manual_seed(0)
    model = aelab.build_model("dense", (6,), latent_dim=2, hidden_dims=[8], output="linear").eval()
    train_x = data.x_train[data.y_train == 1]
    scorer = AnomalyScorer.fit(model, train_x, methods=["recon", "knn"])
    recon, knn = scorer.score(data.x_test, "recon"), scorer.score(data.x_test, "knn")
    assert np.allclose(class_scores(model, data, 1, "knn"), knn)
    assert np.allclose(class_scores(model, data, 1, "relative"), relative_error(recon, data.x_test))
    z = lambda s, t: (s - t.mean()) / t.std()  # noqa: E731
    expected = z(recon, scorer.training_scores("recon")) + z(knn, scorer.training_scores("knn"))
    assert np.allclose(class_scores(model, data, 1, "recon+knn"), expected)


# ---------------------------------------------------------------------------------------------- end to end
def test_two_digits_of_mnist5k_end_to_end(tmp_path, capsys):
    out = tmp_path / "oc"
    assert main(["one-class", "--dataset", "mnist5k", "--classes", "0,1", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    result = json.loads((out / RESULT).read_text())
    assert set(result["auroc"]) == {"0", "1"} and result["classes"] == {"0": "0", "1": "1"}
    assert result["mean"] == pytest.approx(np.mean(list(result["auroc"].values())))
    assert result["model"] == RECIPE["model"] and result["score"] == RECIPE["score"] and result["epochs"] == 1
    assert result["seconds"] > 0 and result["deep_svdd"] is None  # mnist5k is not the paper's full MNIST
    assert result["auroc"]["0"] > 0.8  # one epoch already tells most other digits from zeros (0.97 measured)
    # the AUROC is what the saved run scores: the run folder is a normal run trained on its class alone
    run = aelab.open_run(result["runs"]["0"])
    assert run.config.normal_classes == "0" and run.config.dataset == "mnist5k"
    data = aelab.load_dataset("mnist5k")
    again = auroc_ap(class_scores(run.model.eval(), data, 0, result["score"]), anomaly_truth(data.y_test, [0]))
    assert again["auroc"] == pytest.approx(result["auroc"]["0"], abs=1e-9)
    page = parse(out / "report.html")
    assert_self_contained(page)
    assert {img["data-file"] for img in page.images} == {"one_class_roc.png", "one_class_anomalous.png"}
    assert "Deep SVDD" in " ".join(page.text)


def test_a_folder_of_your_own_labelled_images(tmp_path, mnist5k):
    folder = tmp_path / "digits"
    for digit, name in ((0, "zero"), (1, "one"), (7, "seven")):
        (folder / name).mkdir(parents=True)
        for i, image in enumerate(mnist5k.x_train[mnist5k.y_train == digit][:40]):
            Image.fromarray(image[0].numpy()).save(folder / name / f"{i}.png")
    out = tmp_path / "oc"
    report = one_class(str(folder), "zero,seven", out=out, epochs=1, progress=False, log=None, image_size=[16, 16],
                       channels=1)
    assert report == out / "report.html" and report.is_file()
    result = json.loads((out / RESULT).read_text())
    assert result["classes"] == {"2": "zero", "1": "seven"}  # folders sorted by name: one, seven, zero; the order given
    run = aelab.open_run(next(iter(result["runs"].values())))
    assert run.config.dataset == str(folder) and run.config.image_size == [16, 16] and run.config.channels == 1
    assert run.model.input_shape == (1, 16, 16)
    assert (out / "one_class_anomalous.png").is_file()


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    cases = [["--classes", "12"], ["--score", "psychic"], ["--epochs", "0"], ["--epochs", "many"],
             ["--image-size", "28,28"], ["--threads", "0"], ["--out", str(used)]]
    for extra in cases:
        argv = ["one-class", "--dataset", "mnist5k", "--out", str(tmp_path / "new"), "--quiet", *extra]
        assert main(argv) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("aelab: error:"), (extra, err)
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
@requires_shared("mnist")
def test_the_recipe_beats_deep_svdd_on_a_hard_digit_of_full_mnist(tmp_path):
    """Digit 2, one of the hard ones: Deep SVDD 91.7, its autoencoder baseline 85.4; the recipe 95.9 (seed 0)."""
    one_class("mnist", "2", out=tmp_path / "oc", data_dir=str(SHARED_DATA / "mnist"), progress=False, log=None)
    result = json.loads((tmp_path / "oc" / RESULT).read_text())
    assert result["auroc"]["2"] >= DEEP_SVDD["mnist"][2] / 100
    assert result["deep_svdd"]["2"] == pytest.approx(0.917) and result["dcae"]["2"] == pytest.approx(0.854)
