"""aelab.sklearn.AutoencoderDetector: PyOD's interface on scikit-learn's estimator rules, scored by the same
AnomalyScorer as ``aelab score``.

scikit-learn's contract suite runs on tiny settings. The detector follows PyOD's conventions (``predict`` gives
1 for an outlier and 0 otherwise, ``decision_function`` is higher for more anomalous rows), not scikit-learn's
outlier-detector ones (-1/+1, higher = more normal), so it does not declare itself a scikit-learn outlier
detector and the suite runs its general estimator checks (fit, predict, decision_function, pickling, input
validation, determinism): each applies and passes, none is listed as an expected failure
(``check_array_api_input`` skips itself unless SCIPY_ARRAY_API=1 is set, as for AutoencoderTransformer).
"""
from __future__ import annotations

import csv
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import aelab
from aelab.cli import main
from aelab.sklearn import AutoencoderDetector

TINY = dict(epochs=2, latent_dim=2, hidden_dims=[8], batch_size=16, random_state=0)


def tiny(**kwargs) -> AutoencoderDetector:
    return AutoencoderDetector(**{**TINY, **kwargs})


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one torch thread is faster than two fighting over a shared 2-core machine."""


# ------------------------------------------------------------------------------------------ the contract
@parametrize_with_checks([tiny(), tiny(method="knn")])
def test_sklearn_contract(estimator, check):
    check(estimator)


# ------------------------------------------------------------------------------------------ data
def plane_with_outliers(n=400, outliers=20, seed=0):
    """Rows on a 2-D plane in 10-D (normal) and rows off it (anomalous), in large units; truth 1 = outlier."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(2, 10))
    normal = 1000.0 + 50.0 * (rng.normal(size=(n, 2)) @ w)
    odd = 1000.0 + 50.0 * (rng.normal(size=(outliers, 2)) @ w) + 150.0 * rng.normal(size=(outliers, 10))
    X = np.vstack([normal, odd])
    return X, np.r_[np.zeros(n, int), np.ones(outliers, int)]


def test_pyod_interface_known_answers():
    X, truth = plane_with_outliers()
    det = tiny(epochs=30, contamination=0.05).fit(X[:400])  # trained on normal rows alone
    scores = det.decision_function(X)
    assert roc_auc_score(truth, scores) > 0.99  # off the plane: a 2-D code cannot reconstruct it
    assert det.threshold_ == pytest.approx(np.quantile(det.decision_scores_, 0.95))
    assert det.labels_.tolist() == (det.decision_scores_ > det.threshold_).astype(int).tolist()
    assert det.labels_.mean() == pytest.approx(0.05, abs=0.005) and det.method_ == "recon"
    assert set(det.predict(X).tolist()) == {0, 1} and det.predict(X)[400:].mean() > 0.9
    assert np.array_equal(det.predict(X), (scores > det.threshold_).astype(int))


def test_training_rows_score_as_their_decision_scores():
    X, _ = plane_with_outliers()
    det = tiny().fit(X.astype(np.float32))
    np.testing.assert_allclose(det.decision_function(X.astype(np.float32)), det.decision_scores_, rtol=1e-6)
    assert np.array_equal(tiny().fit_predict(X.astype(np.float32)), det.labels_)


def test_pipeline_clone_and_params():
    X, truth = plane_with_outliers()
    pipe = Pipeline([("scale", StandardScaler()), ("det", tiny(epochs=30, latent_dim=2))])
    pipe.fit(X[:400])
    assert roc_auc_score(truth, pipe.decision_function(X)) > 0.99
    assert pipe.predict(X).shape == (420,)
    twin = clone(pipe)
    assert twin.get_params()["det__latent_dim"] == 2 and not hasattr(twin.named_steps["det"], "scorer_")
    twin.set_params(det__contamination=0.1, det__method="mahalanobis").fit(X[:400])
    assert twin.named_steps["det"].method_ == "mahalanobis"
    assert twin.named_steps["det"].labels_.mean() == pytest.approx(0.1, abs=0.005)


def test_pickled_detector_gives_the_same_scores():
    X, _ = plane_with_outliers(60, 5)
    det = tiny(method="knn").fit(X)
    again = pickle.loads(pickle.dumps(det))
    assert np.array_equal(again.decision_function(X), det.decision_function(X))


def test_a_denoising_detector_trains_with_noise():
    X = np.random.default_rng(0).random((200, 12))
    plain, noisy = tiny().fit(X), tiny(noise="masking:0.5").fit(X)
    assert not np.array_equal(plain.decision_scores_, noisy.decision_scores_)
    assert noisy.history_[0]["train_loss"] > plain.history_[0]["train_loss"]  # the harder task: noisy inputs


@pytest.mark.parametrize("settings, words", [
    (dict(contamination=0.7), "in (0, 0.5]"),
    (dict(contamination="a lot"), "must be a number"),
    (dict(method="elbo"), "variational model"),
    (dict(method="vibes"), "unknown anomaly score"),
    (dict(noise="gauss:1"), "KIND one of"),
])
def test_bad_settings_are_one_line_value_errors(settings, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as err:
        tiny(**settings).fit(np.random.default_rng(0).random((20, 4)))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ the run's scores
@pytest.mark.parametrize("method", ["recon", "knn"])
def test_scores_of_a_run_equal_aelab_score(method, mnist5k, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "1", "--latent-dim", "4", "--hidden-dims", "16",
                 "--quiet", "--no-report"]) == 0
    out = tmp_path / "scores.csv"
    assert main(["score", str(run), "--out", str(out), "--method", method, "--contamination", "0.1",
                 "--quiet"]) == 0
    rows = list(csv.DictReader(out.open()))
    det = AutoencoderDetector.from_run(run, method=method, contamination=0.1)
    images = mnist5k.x_test.numpy()  # the run's test set, (N, 1, 28, 28) uint8, as `aelab score` read it
    assert det.method_ == method and det.get_params()["latent_dim"] == 4
    np.testing.assert_allclose(det.decision_function(images), [float(r["score"]) for r in rows], rtol=1e-12)
    assert det.predict(images).tolist() == [int(r["is_anomaly"]) for r in rows]
    np.testing.assert_allclose(det.decision_function(images[:, 0]), det.decision_function(images))  # (N, H, W)
    with pytest.raises(ValueError, match="shape"):
        det.decision_function(images[:, :, :14])
