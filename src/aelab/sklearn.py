"""aelab's autoencoders as a scikit-learn transformer (codes in a ``Pipeline``, settings in ``GridSearchCV``) and
as an outlier detector by PyOD's conventions (:class:`AutoencoderDetector`: ``decision_function`` higher for more
anomalous rows, ``predict`` 1 for an outlier).

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from aelab.sklearn import AutoencoderTransformer

    pipe = make_pipeline(AutoencoderTransformer(latent_dim=32, epochs=10, random_state=0), LogisticRegression())
    pipe.fit(x_train.reshape(len(x_train), -1), y_train)

The estimator follows scikit-learn's conventions: ``__init__`` only stores its arguments, ``fit`` returns
``self``, what it learned ends in ``_``, and the same data with the same ``random_state`` give the same codes
(the caller's torch random state is left as it was). Training goes through :func:`aelab.train` into a
temporary run folder that is removed when ``fit`` returns; no report or figures are written.

What it takes, and how it scales it (``scaling="auto"``):

- ``uint8`` arrays are pixel values 0..255, divided by 255 (as :func:`aelab.from_arrays` does): images
  ``(N, H, W)`` or ``(N, C, H, W)``, or flattened ``(N, D)``; the decoder ends in a sigmoid.
- float arrays whose values all lie in [0, 1] are used as they are, with a sigmoid output.
- any other numbers (tabular data of any scale) are standardised per feature (``mean_``, ``scale_``, learned
  in ``fit``; a constant feature keeps scale 1), the decoder output is linear and the loss a squared error
  (a Gaussian decoder for the VAE). ``inverse_transform`` undoes the standardisation.

``scaling="standard"`` standardises whatever the data; ``scaling="none"`` uses the values as they are.
"""
from __future__ import annotations

import logging
import numbers
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

from .api import train
from .config import MAX_SEED
from .data import from_arrays
from .data.batches import iterate_batches
from .device import INFERENCE_BATCH, resolve_device
from .errors import AelabError
from .evaluation.anomaly import DEFAULT_CONTAMINATION, AnomalyScorer, check_contamination, check_methods
from .models.base import eval_mode
from .predict import Predictor
from .registry import build_model, model_class
from .training.trainer import TrainingInterrupted

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6: the estimator's own method
    def validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)

logger = logging.getLogger(__name__)

SCALINGS = ("auto", "standard", "none")
MONITOR_ROWS = 1024  # training rows scored after every epoch (the trainer's per-epoch "test" loss)


class InvalidInputError(AelabError, ValueError):
    """Bad settings or data given to the estimator: an :class:`AelabError` (aelab's one-line message) that is
    also a ``ValueError``, the type scikit-learn and its users catch."""


class _Autoencoding:
    """What the estimators share: checking and scaling ``X``, training the autoencoder on it (``_fit_model``),
    and running the trained model. Their parameters (``model``, ``latent_dim``, ``epochs``, ...) have the same
    names and meanings."""

    def _fit_model(self, X, **train_settings):
        """Train ``model_`` on ``X`` (checked here and returned); ``train_settings`` go to :func:`aelab.train`."""
        X = self._check_X(X, reset=True)
        if self.scaling not in SCALINGS:
            raise InvalidInputError(f"scaling must be one of {', '.join(SCALINGS)}, got {self.scaling!r}")
        self.input_shape_ = tuple(X.shape[1:])
        self.scaling_ = _choose_scaling(X, self.scaling)
        self.mean_, self.scale_ = _standardisation(X) if self.scaling_ == "standard" else (None, None)
        self.seed_ = _seed(self.random_state)
        x = self._to_tensor(X)
        bounded = self.scaling_ == "pixels" or (self.scaling_ == "none" and 0 <= float(x.min()) and float(x.max()) <= 1)
        kwargs = dict(self.model_settings or {})
        kwargs.update(latent_dim=self.latent_dim, output="sigmoid" if bounded else "linear")
        if self.hidden_dims is not None:
            kwargs["hidden_dims"] = list(self.hidden_dims)
        loss = self.loss if self.loss is not None else (None if bounded else "mse")
        if loss is not None:
            kwargs["loss"] = loss
        data = from_arrays(x, x_test=x[:MONITOR_ROWS], name="arrays")
        try:
            run = self._train(data, kwargs, **train_settings)
        except TrainingInterrupted as exc:  # Ctrl-C: nothing to resume (the run folder is gone)
            raise KeyboardInterrupt(f"{type(self).__name__}.fit interrupted") from exc
        except AelabError as exc:  # bad settings: aelab's one-line message, as the ValueError sklearn expects
            raise _invalid(exc) from None
        self.model_ = run.model.cpu().eval()
        self.history_ = list(run.history)
        self.loss_curve_ = [r["train_loss"] for r in self.history_]
        return X

    def _train(self, data, model_kwargs: dict, **train_settings):
        """Build the model and train it with :func:`aelab.train` into a temporary run folder, seeded by ``seed_``,
        inside a fork of torch's random state (the caller's stream is left as it was)."""
        device = resolve_device(self.device)
        forked = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(self.seed_)
            model = build_model(self.model, _model_shape(self.input_shape_), **model_kwargs)
            with tempfile.TemporaryDirectory(prefix="aelab-sklearn-") as tmp:
                return train(model, data, out=Path(tmp) / "run", epochs=self.epochs, batch_size=self.batch_size,
                             lr=self.lr, weight_decay=self.weight_decay, seed=self.seed_, device=self.device,
                             report=False, progress=bool(self.verbose), log=logger.info if self.verbose else None,
                             **train_settings)

    def _check_X(self, X, reset: bool):
        X = validate_data(self, X, reset=reset, allow_nd=True, dtype=(np.float64, np.float32, np.uint8))
        if X.ndim > 4:
            raise InvalidInputError(f"X has {X.ndim} dimensions; give rows of features (N, D) or images "
                                    f"(N, H, W) or (N, C, H, W)")
        shape = tuple(X.shape[1:])
        if not reset and shape != self.input_shape_ and not (
                self.scaling_ == "run" and _model_shape(shape) == self.input_shape_):
            raise InvalidInputError(f"X has samples of shape {shape} but {type(self).__name__} was "
                                    f"fitted on {self.input_shape_}; give data shaped as in fit")
        return X

    def _to_tensor(self, X, dtype=torch.float32) -> torch.Tensor:
        """X as the model reads it: uint8 pixels stay uint8 (the data side divides them by 255), other values
        become ``dtype``, standardised when ``fit`` chose to; images get their channel axis."""
        if self.scaling_ == "pixels" or (self.scaling_ == "run" and X.dtype == np.uint8):
            x = torch.from_numpy(np.array(X, dtype=np.uint8))  # a writable copy (X may be a read-only memmap)
        elif self.scaling_ == "standard":
            x = torch.from_numpy((X - self.mean_) / self.scale_).to(dtype)
        else:
            x = torch.from_numpy(np.array(X, dtype=np.float64 if dtype == torch.float64 else np.float32))
        return x.reshape(len(x), *_model_shape(self.input_shape_))

    def _on_device(self, dtype=torch.float32):
        return _ModelForInference(self.model_, resolve_device(self.device), dtype)


class AutoencoderTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, _Autoencoding, BaseEstimator):
    """An aelab autoencoder trained without labels; ``transform`` gives its codes.

    Parameters
    ----------
    model : str, default="dense"
        A registered model: "dense", "sparse", "conv", "vae", "conv-vae" (see ``aelab.MODELS``). The
        convolutional ones need images whose height and width are multiples of 4.
    latent_dim : int, default=32
        Size of the code, the number of columns ``transform`` returns.
    hidden_dims : list of int or None, default=None
        Hidden layer sizes (dense, sparse, vae) or the two channel counts (conv); None: the model's default.
    epochs : int, default=20
        Passes over the training rows.
    batch_size : int, default=128
        Rows per optimisation step.
    lr : float, default=1e-3
        Adam's learning rate.
    weight_decay : float, default=0.0
        Adam's weight decay.
    loss : {"mse", "bce"} or None, default=None
        Reconstruction loss; None: the model's default ("bce" for the VAEs on data in [0, 1], "mse"
        otherwise). "bce" needs data in [0, 1].
    scaling : {"auto", "standard", "none"}, default="auto"
        How values reach the model (see the module's docstring).
    standardize_codes : bool, default=True
        Centre each code unit and scale it to unit variance over the training codes (``code_mean_``,
        ``code_scale_``), as linear models downstream need to converge: on the raw codes of a dense autoencoder
        of mnist5k, LogisticRegression's lbfgs had not converged after 1,000 iterations; on the standardised
        ones it converged in 63. False: the model's codes as they are (the zeros of a sparse code, the prior's
        scale of a VAE's). ``inverse_transform`` takes codes of the same kind.
    model_settings : dict or None, default=None
        Further settings of the model's family, e.g. ``{"penalty": "topk", "k": 10}`` for "sparse" or
        ``{"beta": 4.0}`` for "vae".
    device : str, default="auto"
        Where to train and encode: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ... ``model_`` is
        kept on the CPU between calls, so a fitted estimator pickles and loads anywhere.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the shuffling and any sampling. An int is used as aelab's seed (``aelab train
        --seed``); None draws one from numpy's global random state.
    verbose : bool, default=False
        Log one line per epoch (logger ``aelab.sklearn``, at INFO) and show progress bars.

    Attributes
    ----------
    model_ : aelab.models.Autoencoder
        The trained model (on the CPU, in eval mode).
    n_features_in_ : int
        ``X.shape[1]`` at fit (for image arrays, the first image axis; ``input_shape_`` has them all).
    feature_names_in_ : ndarray of str
        Column names, when ``X`` had them.
    input_shape_ : tuple of int
        The shape of one sample of ``X`` as given to ``fit``.
    scaling_ : {"pixels", "none", "standard"}
        What ``fit`` chose: uint8 pixel values divided by 255, values as they are, or standardisation.
    mean_, scale_ : ndarray or None
        Per-value mean and scale of the standardisation (shape ``input_shape_``); None without it.
    code_mean_, code_scale_ : ndarray of shape (latent_dim,) or None
        The standardisation of the codes (``standardize_codes``); None without it.
    seed_ : int
        The seed the training used (``random_state`` resolved).
    history_ : list of dict
        One record per epoch from the trainer: ``train_loss`` (and its terms), and ``test_loss``, which here is
        the loss on the first ``MONITOR_ROWS`` training rows (no rows are held out).
    loss_curve_ : list of float
        ``train_loss`` per epoch.
    """

    def __init__(self, model="dense", latent_dim=32, hidden_dims=None, epochs=20, batch_size=128, lr=1e-3,
                 weight_decay=0.0, loss=None, scaling="auto", standardize_codes=True, model_settings=None,
                 device="auto", random_state=None, verbose=False):
        self.model = model
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.loss = loss
        self.scaling = scaling
        self.standardize_codes = standardize_codes
        self.model_settings = model_settings
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Train the autoencoder on ``X`` (``y`` is ignored: the codes are learned without labels)."""
        X = self._fit_model(X)
        self.code_mean_ = self.code_scale_ = None
        if self.standardize_codes:
            self.code_mean_, self.code_scale_ = _standardisation(self._codes(X))
        return self

    # ------------------------------------------------------------------------------------------ using it
    def transform(self, X):
        """The codes of ``X``: (n_samples, latent_dim), standardised unless ``standardize_codes=False`` (the
        posterior mean for a VAE). Computed in float64 for float64 input, so a row's code does not depend on
        the other rows of the call (float32 kernels round differently for different batch sizes), and in
        float32 otherwise; returned float32 for float32 input and float64 otherwise."""
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        codes = self._codes(X)
        if self.code_mean_ is not None:
            codes = (codes - self.code_mean_) / self.code_scale_
        return codes.astype(_out_dtype(X.dtype), copy=False)

    def inverse_transform(self, X):
        """Decode codes ``X`` (n_samples, latent_dim) back to the space of the data given to ``fit``: its
        shape per sample and its units (0..255 for uint8 pixels, the original scale of standardised data)."""
        check_is_fitted(self)
        Z = check_array(X, dtype=(np.float64, np.float32))
        if Z.shape[1] != self.model_.latent_dim:
            raise InvalidInputError(f"inverse_transform takes codes with {self.model_.latent_dim} columns "
                                    f"(latent_dim), got {Z.shape[1]}; pass the output of transform")
        dtype, out_dtype = _compute_dtype(Z.dtype), _out_dtype(Z.dtype)
        if self.code_mean_ is not None:
            Z = Z * self.code_scale_ + self.code_mean_  # float64
        z = torch.as_tensor(Z, dtype=dtype)
        with self._on_device(dtype) as (model, device), torch.inference_mode():
            parts = [model.decode(zb.to(device)).cpu() for zb in z.split(INFERENCE_BATCH)]
        out = torch.cat(parts).double().numpy().reshape(len(Z), *self.input_shape_)
        if self.scaling_ == "pixels":
            out = out * 255.0
        elif self.scaling_ == "standard":
            out = out * self.scale_ + self.mean_
        return out.astype(out_dtype, copy=False)

    def score(self, X, y=None):
        """The negative mean squared reconstruction error of ``X``, per value and in ``X``'s own units
        (``-mean((X - inverse_transform(transform(X)))**2)``): higher is better, as ``GridSearchCV`` wants."""
        X = self._check_X(X, reset=False)
        recon = self.inverse_transform(self.transform(X))
        return -float(np.mean((X.astype(np.float64) - recon.astype(np.float64)) ** 2))

    @property
    def _n_features_out(self):
        return self.model_.latent_dim

    # ------------------------------------------------------------------------------------------ helpers
    def _codes(self, X) -> np.ndarray:
        """The model's codes of checked ``X``, computed in float64 for float64 input, else float32."""
        dtype = _compute_dtype(X.dtype)
        x = self._to_tensor(X, dtype)
        with self._on_device(dtype) as (model, device), torch.inference_mode():
            codes = [model.encode(xb.to(device)).flatten(1).cpu() for xb in iterate_batches(x, INFERENCE_BATCH)]
        return torch.cat(codes).numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"preserves_dtype": ["float64", "float32"]}


class AutoencoderDetector(_Autoencoding, BaseEstimator):
    """An outlier detector by PyOD's conventions: an aelab autoencoder trained on ``X`` (mostly normal rows),
    and an anomaly score of :mod:`aelab.evaluation.anomaly` (the same :class:`AnomalyScorer` as ``aelab score``
    and ``Predictor.score``).

    ``decision_function(X)`` gives each row's score, higher = more anomalous; ``predict(X)`` is 1 for a row
    scoring above ``threshold_``, the (1 - ``contamination``) quantile of the training rows' scores, else 0. (Not
    scikit-learn's outlier convention of -1/+1 and higher = more normal: PyOD's, as its detectors are used.)
    ``AutoencoderDetector.from_run(RUN)`` makes a fitted detector of a trained run folder.

    Parameters
    ----------
    model, latent_dim, hidden_dims, epochs, batch_size, lr, weight_decay, loss, scaling, model_settings, device,
    random_state, verbose
        As in :class:`AutoencoderTransformer`: the autoencoder, its training, and how ``X`` is scaled.
    method : str or None, default=None
        The anomaly score (a name of ``aelab.evaluation.anomaly.SCORES``): "recon" (reconstruction error),
        "knn" or "mahalanobis" (on the codes), "elbo" or "iwae" (the VAEs). None: aelab's default.
    contamination : float, default=0.05
        The share of training rows flagged, in (0, 0.5]: it sets ``threshold_`` (PyOD's default is 0.1; aelab's
        ``aelab score --contamination`` default is 0.05).
    noise : str or None, default=None
        Train a denoising autoencoder: ``"gaussian:SIGMA"``, ``"masking:P"`` or ``"salt-pepper:P"`` (``aelab train
        --noise``).

    Attributes
    ----------
    model_ : aelab.models.Autoencoder
        The trained model (on the CPU, in eval mode).
    scorer_ : aelab.evaluation.anomaly.AnomalyScorer
        The scores, fitted on the training rows (their codes for knn and mahalanobis).
    method_ : str
        The score used (``method`` resolved).
    decision_scores_ : ndarray of shape (n_samples,)
        The training rows' scores (a row's knn score leaves the row itself out).
    threshold_ : float
        The score above which a row is an outlier.
    labels_ : ndarray of shape (n_samples,)
        0/1 for the training rows: ``decision_scores_ > threshold_``.
    n_features_in_, feature_names_in_, input_shape_, scaling_, mean_, scale_, seed_, history_, loss_curve_
        As in :class:`AutoencoderTransformer`.
    """

    def __init__(self, model="dense", latent_dim=32, hidden_dims=None, epochs=20, batch_size=128, lr=1e-3,
                 weight_decay=0.0, loss=None, scaling="auto", method=None, contamination=DEFAULT_CONTAMINATION,
                 noise=None, model_settings=None, device="auto", random_state=None, verbose=False):
        self.model = model
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.loss = loss
        self.scaling = scaling
        self.method = method
        self.contamination = contamination
        self.noise = noise
        self.model_settings = model_settings
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        """Train the autoencoder on ``X`` (``y`` is ignored) and fit the score and the threshold to its rows."""
        try:  # the settings first: a bad one fails before any training
            check_contamination(self.contamination)
            if self.method is not None:
                check_methods(model_class(self.model), [self.method])
        except AelabError as exc:
            raise _invalid(exc) from None
        if hasattr(X, "__len__") and len(X) < 2:  # a threshold is a quantile of the training rows' scores
            raise InvalidInputError(f"{type(self).__name__} needs at least 2 samples to fit, got {len(X)} sample")
        X = self._fit_model(X, **({"noise": self.noise} if self.noise is not None else {}))
        with self._on_device():
            self.scorer_ = AnomalyScorer.fit(self.model_, self._to_tensor(X), seed=self.seed_,
                                             methods=None if self.method is None else [self.method])
        return self._fit_threshold()

    @classmethod
    def from_run(cls, run_dir, method=None, contamination=DEFAULT_CONTAMINATION, device="auto"):
        """A fitted detector of an aelab run folder: its model, and the scorer ``aelab score`` uses (fitted on the
        run's training rows). ``decision_function`` then takes rows as the run's model reads them (uint8 images
        or floats in [0, 1], (N, H, W) or (N, C, H, W); a table's rows after the run's transform) and gives the
        scores ``aelab score`` writes; ``fit`` would train a new model with the run's settings."""
        predictor = Predictor.from_run(run_dir, device="cpu")
        cfg, model = predictor.run.config, predictor.model
        named = ("latent_dim", "hidden_dims", "loss", "output")  # parameters of their own, or chosen by fit
        settings = {k: v for k, v in model.settings.to_dict().items() if k not in named}
        detector = cls(model=cfg.model, latent_dim=model.latent_dim, hidden_dims=cfg.hidden_dims, epochs=cfg.epochs,
                       batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, loss=cfg.loss,
                       method=method, contamination=contamination, noise=cfg.noise, model_settings=settings,
                       device=device, random_state=cfg.seed)
        detector.model_, detector.scorer_ = model.cpu().eval(), predictor.scorer
        detector.input_shape_, detector.scaling_ = tuple(model.input_shape), "run"
        detector.mean_ = detector.scale_ = None
        detector.seed_, detector.history_ = cfg.seed, list(predictor.run.history)
        detector.loss_curve_ = [r["train_loss"] for r in detector.history_]
        return detector._fit_threshold()

    def _fit_threshold(self):
        """``method_``, the training rows' scores, the threshold and their labels, as PyOD's detectors set them."""
        self.method_ = self.method or self.scorer_.default
        try:
            check_methods(self.model_, [self.method_])
            with self._on_device():
                self.decision_scores_ = self.scorer_.training_scores(self.method_)
            self.threshold_ = self.scorer_.threshold(self.method_, self.contamination)
        except AelabError as exc:
            raise _invalid(exc) from None
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def decision_function(self, X):
        """The anomaly score of each row of ``X``: (n_samples,) float64, higher = more anomalous (computed in
        float32, as the model was trained)."""
        check_is_fitted(self)
        X = self._check_X(X, reset=False)
        with self._on_device():  # the scorer holds the same model: on the device for the call
            return np.asarray(self.scorer_.score(self._to_tensor(X), self.method_), dtype=np.float64)

    def predict(self, X):
        """1 for the rows of ``X`` scoring above ``threshold_`` (outliers), 0 for the others: (n_samples,) int."""
        return (self.decision_function(X) > self.threshold_).astype(int)

    def fit_predict(self, X, y=None):
        """``fit(X)`` then the training rows' ``labels_``."""
        return self.fit(X, y).labels_


def _invalid(exc: AelabError) -> ValueError:
    """aelab's one-line error as the ValueError scikit-learn and its users catch."""
    return exc if isinstance(exc, ValueError) else InvalidInputError(str(exc))


class _ModelForInference:
    """``with _ModelForInference(model, device, dtype) as (model, device)``: the model in eval mode on ``device`` with
    parameters of ``dtype`` for the block, then back to float32 on the CPU (float32 to float64 and back is
    exact)."""

    def __init__(self, model, device, dtype=torch.float32):
        self.model, self.device, self.dtype = model, device, dtype
        self._mode = eval_mode(model)

    def __enter__(self):
        self._mode.__enter__()
        return self.model.to(self.device, self.dtype), self.device

    def __exit__(self, *exc):
        self.model.to("cpu", torch.float32)
        return self._mode.__exit__(*exc)


def _choose_scaling(X: np.ndarray, scaling: str) -> str:
    if scaling == "standard":
        return "standard"
    if X.dtype == np.uint8:
        return "pixels"
    if scaling == "none" or (X.min() >= 0.0 and X.max() <= 1.0):
        return "none"
    return "standard"


def _standardisation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-value mean and standard deviation over the rows (float64); a (near) constant value keeps scale 1."""
    X = X.astype(np.float64, copy=False)
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    tiny = std <= 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    return mean, np.where(tiny, 1.0, std)


def _model_shape(shape: tuple) -> tuple:
    """A sample's shape as the models read it: (D,) features, (H, W) -> (1, H, W), (C, H, W) as it is."""
    return (1, *shape) if len(shape) == 2 else tuple(shape)


def _seed(random_state) -> int:
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool) \
            and 0 <= random_state <= MAX_SEED:
        return int(random_state)
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def _compute_dtype(dtype) -> torch.dtype:
    return torch.float64 if dtype == np.float64 else torch.float32


def _out_dtype(dtype) -> type:
    return np.float32 if dtype == np.float32 else np.float64


__all__ = ["AutoencoderDetector", "AutoencoderTransformer", "InvalidInputError"]
