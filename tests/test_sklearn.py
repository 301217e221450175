"""aelab.sklearn.AutoencoderTransformer: scikit-learn's own contract suite, then what it promises beyond it.

The contract is ``sklearn.utils.estimator_checks`` run on tiny settings (2 epochs, 8 hidden units), so each
check trains in well under a second. Every check applies to the dense model and passes; none is listed as an
expected failure. What cannot apply, and why:

- the convolutional models (``conv``, ``conv-vae``) need images whose sides are multiples of 4, and the checks
  feed tabular arrays of 1 to 10 columns: fitting them refuses the data with a ValueError, so they are not
  run through the suite (``test_images_*`` below covers them);
- ``check_array_api_input`` skips itself unless SCIPY_ARRAY_API=1 is set: the estimator takes numpy arrays
  (it converts to torch itself), not array-API namespaces;
- the pandas and polars output checks (set_output) return without checking when those packages are absent,
  as they are here.

A stochastic neural estimator passes the determinism checks (``check_fit_idempotent``,
``check_methods_subset_invariance``, ...) because the same ``random_state`` gives bit-identical training,
and ``transform`` computes in float64 for float64 input, so a row's code does not depend on the batch it
came in (in float32 two of 60 values differed by one unit in the last place between batch sizes).
"""
from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from aelab.errors import AelabError
from aelab.sklearn import AutoencoderTransformer, InvalidInputError

TINY = dict(epochs=2, latent_dim=3, hidden_dims=[8], batch_size=16, random_state=0)


def tiny(**kwargs) -> AutoencoderTransformer:
    return AutoencoderTransformer(**{**TINY, **kwargs})


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one torch thread is faster than two fighting over a shared 2-core machine."""


# ------------------------------------------------------------------------------------------ the contract
@parametrize_with_checks([tiny()])
def test_sklearn_contract_dense(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([tiny(model="vae"),
                          tiny(model="sparse", latent_dim=6, model_settings={"penalty": "topk", "k": 2})])
def test_sklearn_contract_vae_and_sparse(estimator, check):
    check(estimator)


# ------------------------------------------------------------------------------------------ data
def low_rank(n=400, seed=0):
    """Rows on a 2-D plane in 10-D, in large units: a linear code of 2 dims reconstructs them exactly."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 2))
    w = rng.normal(size=(2, 10))
    return 1000.0 + 50.0 * (a @ w)


@pytest.fixture(scope="module")
def digits(mnist5k):
    """667 train / 200 test real digits of every class (mnist5k is sorted by label: every 6th and 5th row) as
    uint8 images (N, 28, 28), and their labels."""
    return (mnist5k.x_train[::6, 0].numpy(), mnist5k.y_train[::6].numpy(),
            mnist5k.x_test[::5, 0].numpy(), mnist5k.y_test[::5].numpy())


# ------------------------------------------------------------------------------------------ conventions
def test_init_only_stores_parameters_and_clone_keeps_them():
    est = AutoencoderTransformer(model="nonsense", latent_dim=-3, hidden_dims=[4], random_state=7)
    assert est.get_params()["model"] == "nonsense" and est.get_params()["latent_dim"] == -3  # no checks in __init__
    assert not [k for k in vars(est) if k.endswith("_")]
    twin = clone(est.set_params(epochs=5))
    assert twin.get_params() == est.get_params() and twin.epochs == 5
    with pytest.raises(NotFittedError):
        twin.transform(np.zeros((2, 3)))


def test_fit_returns_self_and_learned_state_ends_in_underscore():
    X = low_rank(100)
    est = tiny()
    assert est.fit(X) is est
    assert est.n_features_in_ == 10 and est.input_shape_ == (10,) and est.scaling_ == "standard"
    assert len(est.history_) == est.epochs == len(est.loss_curve_) and est.seed_ == 0
    assert est.model_.latent_dim == 3 and not est.model_.training
    assert list(est.get_feature_names_out()) == [f"autoencodertransformer{i}" for i in range(3)]


def test_same_data_and_random_state_give_the_same_codes_others_differ():
    X = low_rank(200)
    a = tiny(random_state=3).fit(X).transform(X)
    assert np.array_equal(a, tiny(random_state=3).fit(X).transform(X))
    assert not np.allclose(a, tiny(random_state=4).fit(X).transform(X))
    np.random.seed(11)  # random_state=None draws from numpy's global state, so seeding it repeats the fit
    b = tiny(random_state=None).fit(X)
    np.random.seed(11)
    assert np.array_equal(b.transform(X), tiny(random_state=None).fit(X).transform(X))


def test_fit_leaves_the_callers_torch_random_stream_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny().fit(low_rank(50))
    assert torch.equal(torch.rand(3), expected)


def test_fit_writes_nothing_that_stays(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tiny().fit(low_rank(50))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ tabular data
def test_tabular_data_of_any_scale_is_standardised_and_decoded_back_to_its_units():
    X = low_rank(400)
    est = AutoencoderTransformer(latent_dim=2, hidden_dims=[16], epochs=40, batch_size=32, lr=1e-2,
                                 random_state=0).fit(X)
    np.testing.assert_allclose(est.mean_, X.mean(0))
    np.testing.assert_allclose(est.scale_, X.std(0))
    Z = est.transform(X)
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-6)  # standardised codes
    np.testing.assert_allclose(Z.std(0), 1, rtol=1e-6)
    R = est.inverse_transform(Z)
    assert R.shape == X.shape and R.dtype == np.float64
    # the model's error in X's units is a small part of the variance (predicting the mean scores -var)
    assert -est.score(X) < 0.005 * X.var(0).mean()
    assert est.score(X) == pytest.approx(-np.mean((X - R) ** 2))


def test_a_constant_feature_keeps_scale_one():
    X = low_rank(60)
    X[:, 4] = 7.0
    est = tiny().fit(X)
    assert est.scale_[4] == 1.0 and np.isfinite(est.transform(X)).all()


def test_values_in_zero_one_are_used_as_they_are_with_a_sigmoid_output():
    X = np.random.default_rng(0).uniform(size=(80, 6))
    est = tiny().fit(X)
    assert est.scaling_ == "none" and est.mean_ is None and est.model_.output == "sigmoid"
    R = est.inverse_transform(est.transform(X))
    assert R.min() >= 0 and R.max() <= 1
    assert tiny(scaling="standard").fit(X).model_.output == "linear"


def test_dtypes_float32_stays_float32_others_become_float64():
    X = low_rank(60)
    est = tiny().fit(X)
    assert est.transform(X.astype(np.float32)).dtype == np.float32
    assert est.transform(X).dtype == np.float64
    assert est.transform(X.astype(np.int64)).dtype == np.float64
    assert est.inverse_transform(est.transform(X).astype(np.float32)).dtype == np.float32


def test_raw_codes_are_the_models_own():
    X = low_rank(60)
    est = tiny(standardize_codes=False).fit(X)
    assert est.code_mean_ is None
    x = torch.as_tensor((X - est.mean_) / est.scale_, dtype=torch.float32)
    with torch.no_grad():
        np.testing.assert_allclose(est.transform(X.astype(np.float32)), est.model_.codes(x).numpy(), atol=1e-5)


def test_model_settings_reach_the_model():
    X = low_rank(100)
    est = tiny(model="sparse", latent_dim=12, standardize_codes=False,
               model_settings={"penalty": "topk", "k": 3}).fit(X)
    assert ((est.transform(X) != 0).sum(1) <= 3).all()


# ------------------------------------------------------------------------------------------ images
def test_images_uint8_are_pixels_and_decode_to_their_shape_and_units(digits):
    xtr, _, xte, _ = digits
    est = AutoencoderTransformer(epochs=3, random_state=0).fit(xtr)
    assert est.scaling_ == "pixels" and est.model_.input_shape == (1, 28, 28)
    Z = est.transform(xte)
    assert Z.shape == (200, 32)
    R = est.inverse_transform(Z)
    assert R.shape == (200, 28, 28) and 0 <= R.min() and R.max() <= 255
    # trained longer, the reconstruction error falls: the score rises (higher is better)
    longer = AutoencoderTransformer(epochs=12, random_state=0).fit(xtr)
    assert longer.score(xte) > est.score(xte)
    with pytest.raises(ValueError, match="samples of shape"):
        est.transform(xte[:, :, :27])


def test_images_with_a_channel_axis_train_the_convolutional_model(digits):
    xtr = digits[0][:200, None].astype(np.float32) / 255  # (N, 1, 28, 28) in [0, 1]
    est = AutoencoderTransformer(model="conv", latent_dim=8, hidden_dims=[4, 8], epochs=1, random_state=0).fit(xtr)
    assert est.scaling_ == "none" and est.transform(xtr).shape == (200, 8)
    assert est.inverse_transform(est.transform(xtr[:5])).shape == (5, 1, 28, 28)


def test_pickled_estimator_gives_the_same_codes():
    X = low_rank(60)
    est = tiny(model="vae").fit(X)
    again = pickle.loads(pickle.dumps(est))
    assert np.array_equal(again.transform(X), est.transform(X))


# ------------------------------------------------------------------------------------------ in sklearn's tools
def test_pipeline_with_logistic_regression_learns_the_digits(digits):
    xtr, ytr, xte, yte = digits
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    pipe = Pipeline([("ae", AutoencoderTransformer(latent_dim=16, epochs=8, random_state=0)),
                     ("clf", LogisticRegression())])
    pipe.fit(flat(xtr), ytr)
    assert pipe.score(flat(xte), yte) > 0.7  # 10 classes: chance is 0.1


def test_grid_search_prefers_the_larger_code_by_reconstruction():
    X = low_rank(300)
    rng = np.random.default_rng(1)
    X = X + rng.normal(scale=20.0, size=X.shape) @ np.diag([1.0] * 5 + [0.0] * 5)  # more than 1 dim of signal
    search = GridSearchCV(tiny(epochs=6, hidden_dims=[16], lr=1e-2), {"latent_dim": [1, 6]}, cv=2).fit(X)
    assert search.best_params_ == {"latent_dim": 6}
    assert search.best_estimator_.transform(X).shape == (300, 6)


def test_grid_search_over_a_pipeline(digits):
    xtr, ytr = digits[0][::2].reshape(-1, 784), digits[1][::2]
    pipe = Pipeline([("ae", AutoencoderTransformer(epochs=2, random_state=0)), ("clf", LogisticRegression())])
    search = GridSearchCV(pipe, {"ae__latent_dim": [4, 16]}, cv=2).fit(xtr, ytr)
    assert search.best_params_["ae__latent_dim"] in (4, 16) and 0 < search.best_score_ <= 1


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("settings, X, words", [
    ({"model": "dens"}, None, "did you mean 'dense'"),
    ({"scaling": "minmax"}, None, "scaling must be one of"),
    ({"model": "conv"}, None, "need images"),
    ({"loss": "bce"}, None, "bce loss needs data in [0, 1]"),
    ({"epochs": 0}, None, "epochs must be at least 1"),
    ({"device": "tpu"}, None, "unknown device"),
    ({}, np.zeros((3, 2, 2, 2, 2)), "5 dimensions"),
])
def test_bad_settings_or_data_are_one_line_value_errors(settings, X, words):
    X = low_rank(20) if X is None else X
    with pytest.raises(InvalidInputError) as info:
        tiny(**settings).fit(X)
    assert isinstance(info.value, ValueError) and isinstance(info.value, AelabError)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_inverse_transform_refuses_codes_of_the_wrong_width():
    est = tiny().fit(low_rank(20))
    with pytest.raises(ValueError, match="3 columns"):
        est.inverse_transform(np.zeros((2, 5)))


# ------------------------------------------------------------------------------------------ import cost
@pytest.mark.slow  # a fresh interpreter importing torch and aelab: 5 to 13 s on 2 busy cores
def test_importing_it_pulls_in_nothing_beyond_aelab_and_sklearn_base():
    code = ("import sys, aelab; before = set(sys.modules); import aelab.sklearn; "
            "print(sorted(m for m in set(sys.modules) - before if not m.startswith('aelab')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import aelab.sklearn loads more than import aelab: {out}"
