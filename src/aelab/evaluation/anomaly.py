"""Anomaly scores: how unusual each sample is to a trained autoencoder; higher = more anomalous.

    scorer = AnomalyScorer.fit(model, train_x)          # the training rows (of the normal classes)
    s = scorer.score(test_x, "recon")                   # (N,) numpy, one score per sample
    flagged = s > scorer.threshold("recon", contamination=0.05)
    auroc_ap(s, is_anomaly)                             # {"auroc": ..., "average_precision": ...}

Every model has the reconstruction error and the two scores on its code (``knn``, ``mahalanobis``); a
variational model adds its likelihood bounds (``elbo``, ``iwae``, reusing :mod:`aelab.evaluation.likelihood`).
:data:`SCORES` names and describes them all. Codes are ``model.encode(x)``, the code the decoder receives (a
VAE's posterior mean). The scores of the one-class protocol (Ruff et al. 2018, "Deep One-Class Classification",
Table 1: one class is normal, trained on alone; the whole test set is scored) are :func:`evaluate_anomaly`'s.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import NearestNeighbors

from ..data.anomaly import normal_ids_of, normal_only
from ..data.batches import as_float
from ..data.dataset import Dataset
from ..device import INFERENCE_BATCH
from ..errors import AelabError
from ..models.base import MULTIMODAL, VARIATIONAL, eval_mode, has, model_device
from .likelihood import iwae_nll, neg_elbo
from .metrics import bce_per_image, mse_per_pixel

KNN_K = 5  # neighbours of the knn score
IWAE_SAMPLES = 100  # K of the iwae score (evaluation's default K too): a few seconds on mnist5k on a CPU
DEFAULT_CONTAMINATION = 0.05  # the share of training rows above the threshold (PyOD's default is 0.1)
DEFAULT_SCORE = "recon"  # the score a run uses unless told otherwise

SCORES = {  # name -> what it measures (ordered: the reports show them in this order)
    "recon": "reconstruction error: mean squared error per value, or the binary cross-entropy summed per sample "
             "for a model trained with the bce loss (the model's own reconstruction loss)",
    "relative": "reconstruction error per unit of the input's mass (recon / mean |x|; for images the squared error "
                "per unit of ink): a thin stroke and a bold one on one scale (the one-class protocol's score)",
    "elbo": "negative ELBO in nats (one posterior sample, KL in closed form): variational models",
    "iwae": f"IWAE estimate of -log p(x) in nats with K = {IWAE_SAMPLES} importance samples: variational models",
    "knn": f"mean Euclidean distance of the code to its {KNN_K} nearest training codes",
    "mahalanobis": "Mahalanobis distance of the code under a Gaussian fitted to the training codes "
                   "(Ledoit-Wolf shrinkage covariance)",
}
LIKELIHOOD_SCORES = ("elbo", "iwae")  # need a one-modality variational model
CODE_SCORES = ("knn", "mahalanobis")  # need the training codes


def applicable_scores(model) -> tuple[str, ...]:
    """The scores of :data:`SCORES` that ``model`` has: the likelihood ones only for a one-modality
    variational model."""
    variational = has(model, VARIATIONAL) and not has(model, MULTIMODAL)
    return tuple(m for m in SCORES if variational or m not in LIKELIHOOD_SCORES)


class AnomalyScorer:
    """Anomaly scores of one trained model, fitted to its training rows (see :data:`SCORES`).

    Make it with :meth:`fit`. ``score(x, method)`` gives (N,) numpy scores, higher = more anomalous;
    ``threshold(method, contamination)`` the score above which a sample is flagged, the (1 - contamination)
    quantile of the training rows' scores (computed on first need and kept). A training row's knn score leaves
    the row itself out of its neighbours, so the threshold is not biased low. Scores run in batches of
    ``batch_size`` on the model's device without gradients; ``elbo`` and ``iwae`` draw seeded posterior samples
    (the same inputs in the same order give the same scores).
    """

    def __init__(self, model, methods: tuple[str, ...], *, seed: int = 0, k: int = KNN_K,
                 iwae_samples: int = IWAE_SAMPLES, batch_size: int = INFERENCE_BATCH):
        self.model = model
        self.methods = methods  # the scores this scorer gives, in SCORES order
        self.seed, self.k, self.iwae_samples, self.batch_size = int(seed), int(k), int(iwae_samples), int(batch_size)
        self.train_x: torch.Tensor | None = None  # the training rows, on the CPU
        self.train_codes: np.ndarray | None = None  # (N, D) float64, for knn and mahalanobis
        self._neighbours: NearestNeighbors | None = None
        self._gaussian: LedoitWolf | None = None
        self._train_scores: dict[str, np.ndarray] = {}

    @classmethod
    def fit(cls, model, train_x, *, methods=None, seed: int = 0, k: int = KNN_K, iwae_samples: int = IWAE_SAMPLES,
            batch_size: int = INFERENCE_BATCH) -> "AnomalyScorer":
        """A scorer of ``model`` fitted to ``train_x`` (the training rows of the model's main modality, (N, ...)
        uint8 images or floats): keeps the training codes and their Gaussian for knn and mahalanobis.
        ``methods``: the scores wanted (default: every one that applies to the model)."""
        methods = check_methods(model, methods)
        if k < 1:
            raise AelabError(f"the knn score needs at least 1 neighbour, got k={k}")
        if iwae_samples < 1:
            raise AelabError(f"the iwae score needs at least 1 importance sample, got {iwae_samples}")
        scorer = cls(model, methods, seed=seed, k=k, iwae_samples=iwae_samples, batch_size=batch_size)
        scorer.train_x = as_rows(train_x, "the training rows").cpu()
        if len(scorer.train_x) < 2:
            raise AelabError(f"anomaly scores need at least 2 training rows, got {len(scorer.train_x)}")
        if any(m in CODE_SCORES for m in methods):
            codes = scorer.codes(scorer.train_x)
            scorer.train_codes = codes
            scorer._neighbours = NearestNeighbors(n_neighbors=min(scorer.k, len(codes) - 1)).fit(codes)
            scorer._gaussian = LedoitWolf().fit(codes)
        return scorer

    @property
    def default(self) -> str:
        """The score a run uses unless told otherwise (:data:`DEFAULT_SCORE` when this scorer has it)."""
        return DEFAULT_SCORE if DEFAULT_SCORE in self.methods else self.methods[0]

    def __repr__(self) -> str:
        n = 0 if self.train_x is None else len(self.train_x)
        return f"AnomalyScorer({getattr(self.model, 'name', 'model')!r}, methods={self.methods}, train_rows={n})"

    # ---------------------------------------------------------------------------------------------- scores
    def score(self, x, method: str | None = None) -> np.ndarray:
        """(N,) float64 scores of the samples ``x`` (N, ...) by ``method`` (default: :attr:`default`);
        higher = more anomalous."""
        method = self._method(method)
        x = as_rows(x, "the inputs")
        if method == "recon":
            return self._batched(x, self._recon)
        if method == "relative":
            return relative_error(self._batched(x, self._recon), x)
        if method in LIKELIHOOD_SCORES:
            return self._likelihood(x, method)
        codes = self.codes(x)
        if method == "knn":
            return knn_distances(self._neighbours, codes)
        return mahalanobis_distances(self._gaussian, codes)

    def training_scores(self, method: str | None = None) -> np.ndarray:
        """(N,) scores of the training rows by ``method``, in their order (a row's knn leaves the row out)."""
        method = self._method(method)
        if method not in self._train_scores:
            if method == "knn":  # kneighbors() without X: each training code's neighbours other than itself
                scores = self._neighbours.kneighbors(return_distance=True)[0].mean(1)
            else:
                scores = self.score(self.train_x, method)
            self._train_scores[method] = np.asarray(scores, dtype=np.float64)
        return self._train_scores[method]

    def threshold(self, method: str | None = None, contamination: float = DEFAULT_CONTAMINATION) -> float:
        """The score above which a sample is flagged: the (1 - contamination) quantile of the training rows'
        scores, so that a share ``contamination`` of them lies above it."""
        check_contamination(contamination)
        return float(np.quantile(self.training_scores(method), 1.0 - contamination))

    def codes(self, x) -> np.ndarray:
        """(N, D) float64 codes of ``x``: what the decoder receives (a VAE's posterior mean)."""
        return self._batched(as_rows(x, "the inputs"), lambda b: self.model.encode(b).flatten(1))

    # ---------------------------------------------------------------------------------------------- helpers
    def _method(self, method: str | None) -> str:
        method = self.default if method is None else method
        if method not in self.methods:
            check_methods(self.model, [method])  # the error for an unknown score or one the model lacks
            raise AelabError(f"this scorer was fitted for {', '.join(self.methods)}, not {method}; fit it with "
                             f"methods including {method}")
        return method

    def _batch(self, xb: torch.Tensor, device) -> dict:
        return {self.model.main_modality: as_float(xb.to(device))}

    def _recon(self, batch: dict) -> torch.Tensor:
        modality = self.model.main_modality
        x = batch[modality]
        recon = self.model.reconstruct(batch, modality)
        if self.model.modalities[modality].likelihood == "bernoulli":  # trained with bce: its own loss
            return bce_per_image(recon.float(), x.float())
        return mse_per_pixel(recon.float(), x.float())

    def _batched(self, x: torch.Tensor, fn) -> np.ndarray:
        """``fn(batch)`` over ``x`` in batches on the model's device, no gradients, concatenated on the CPU."""
        device = model_device(self.model)
        out = []
        with eval_mode(self.model), torch.inference_mode():
            for start in range(0, len(x), self.batch_size):
                out.append(fn(self._batch(x[start:start + self.batch_size], device)).double().cpu())
        return torch.cat(out).cpu().numpy() if out else np.zeros(0)

    def _likelihood(self, x: torch.Tensor, method: str) -> np.ndarray:
        device, modality = model_device(self.model), self.model.main_modality
        out = []
        for i, start in enumerate(range(0, len(x), self.batch_size)):  # seeded per batch: reproducible
            xb = self._batch(x[start:start + self.batch_size], device)[modality]
            seed = self.seed + 1_000_003 * i
            if method == "elbo":
                out.append(neg_elbo(self.model, xb, seed=seed).cpu())
            else:
                out.append(iwae_nll(self.model, xb, self.iwae_samples, seed=seed).cpu())
        return torch.cat(out).cpu().numpy() if out else np.zeros(0)


# ---------------------------------------------------------------------------------------------- pure functions
def knn_distances(neighbours: NearestNeighbors, codes: np.ndarray) -> np.ndarray:
    """Mean Euclidean distance of each code (N, D) to its nearest training codes (those ``neighbours`` was
    fitted to, its ``n_neighbors`` of them) -> (N,). 0 for a training code itself with one neighbour."""
    return neighbours.kneighbors(codes, return_distance=True)[0].mean(1)


def mahalanobis_distances(gaussian: LedoitWolf, codes: np.ndarray) -> np.ndarray:
    """sqrt((z - mean)^T precision (z - mean)) of each code (N, D) under the fitted Gaussian -> (N,);
    0 at the training codes' mean. (scikit-learn's ``mahalanobis`` gives the square.)"""
    return np.sqrt(np.maximum(gaussian.mahalanobis(codes), 0.0))


def auroc_ap(scores, is_anomaly) -> dict:
    """``{"auroc": ..., "average_precision": ...}`` of ``scores`` (N,) (higher = more anomalous) against the
    truth ``is_anomaly`` (N,) booleans, by scikit-learn's ``roc_auc_score`` and ``average_precision_score``:
    AUROC 1 when every anomaly scores above every normal sample, 0.5 for a score that knows nothing."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    truth = np.asarray(is_anomaly).reshape(-1).astype(bool)
    if len(scores) != len(truth):
        raise AelabError(f"{len(scores)} scores for {len(truth)} labels; give one score per sample")
    if truth.all() or not truth.any():
        raise AelabError("AUROC needs both normal and anomalous samples, but every sample is "
                         f"{'anomalous' if truth.all() else 'normal'}; score a set that holds both")
    if not np.isfinite(scores).all():
        raise AelabError("the scores hold NaN or infinite values; the model's outputs are not finite")
    return {"auroc": float(roc_auc_score(truth, scores)),
            "average_precision": float(average_precision_score(truth, scores))}


def anomaly_truth(y, normal_ids) -> np.ndarray:
    """(N,) booleans: True where the label ``y`` (N,) is not one of the normal classes ``normal_ids``."""
    y = torch.as_tensor(y).cpu().numpy()
    return ~np.isin(y, np.asarray(list(normal_ids), dtype=y.dtype))


def relative_error(recon: np.ndarray, x) -> np.ndarray:
    """The reconstruction error ``recon`` (N,) per unit of the input's mass: ``recon / mean |x|`` per sample of
    ``x`` (N, ...) (for images in [0, 1]: the squared error summed over the pixels per unit of ink; the plain error
    mostly measures how much ink a digit has). An input without mass (a blank image) gets its error over 1e-6."""
    mass = as_float(torch.as_tensor(x)).abs().flatten(1).mean(1).double().cpu().numpy()
    return np.asarray(recon, dtype=np.float64) / np.maximum(mass, 1e-6)


def check_methods(model, methods) -> tuple[str, ...]:
    """The scores ``methods`` (None: all that apply) checked against :data:`SCORES` and the model, in
    SCORES order; an unknown one or one the model lacks is an AelabError naming those it has."""
    have = applicable_scores(model)
    if methods is None:
        return have
    methods = [methods] if isinstance(methods, str) else list(methods)
    for m in methods:
        if m not in SCORES:
            raise AelabError(f"unknown anomaly score '{m}'; choose one of: {', '.join(have)}")
        if m not in have:
            raise AelabError(f"the {m} score needs a one-modality variational model (vae, conv-vae); "
                             f"this {getattr(model, 'name', 'model')} model has: {', '.join(have)}")
    if not methods:
        raise AelabError(f"name at least one anomaly score; choose from: {', '.join(have)}")
    return tuple(m for m in SCORES if m in methods)


def check_contamination(contamination) -> float:
    """``contamination`` as a float in (0, 0.5] (PyOD's range), or an AelabError."""
    try:
        value = float(contamination)
    except (TypeError, ValueError):
        raise AelabError(f"contamination must be a number in (0, 0.5], got {contamination!r}") from None
    if not 0 < value <= 0.5:
        raise AelabError(f"contamination is the share of training rows flagged, in (0, 0.5]; got {contamination}; "
                         f"try 0.05")
    return value


def as_rows(x, what: str) -> torch.Tensor:
    """``x`` (numpy or tensor, (N, ...)) as a uint8 or float32 tensor."""
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if x.dim() < 2:
        raise AelabError(f"{what} must be a batch (N, ...) of samples, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise AelabError(f"{what} must be uint8 (0..255) or floats, got {x.dtype}; convert them first")
    return x if x.dtype == torch.uint8 else x.to(torch.float32)  # float64 numpy rows meet float32 weights


# ---------------------------------------------------------------------------------------------- the protocol
def anomaly_test_scores(model, data: Dataset, normal_classes, *, seed: int = 0, methods=None
                        ) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    """Every score of the whole test set of ``data`` by a model trained on its normal classes (``normal_classes``:
    a spec such as "3" or "0-4", or class indices), fitted on the training rows of those classes:
    ``({method: (N,) scores}, (N,) truth, default method)``, truth True for the test items of the other classes.
    No scores when the test set lacks normal or anomalous items (nothing to tell apart)."""
    ids = normal_ids_of(data, normal_classes)
    modality = model.main_modality
    scorer = AnomalyScorer.fit(model, normal_only(data, ids).inputs("train")[modality], methods=methods, seed=seed)
    truth = anomaly_truth(data.y_test, ids)
    if truth.all() or not truth.any():
        return {}, truth, scorer.default
    x = data.inputs("test")[modality]
    return {m: scorer.score(x, m) for m in scorer.methods}, truth, scorer.default


def evaluate_anomaly(model, data: Dataset, normal_classes, *, seed: int = 0, methods=None) -> dict:
    """The ``anomaly`` entry of ``evaluation.json`` for a model trained on the normal classes of ``data``: each
    score of :func:`anomaly_test_scores` measured by :func:`auroc_ap` against the truth (the other classes are
    the anomalies), the one-class protocol of Ruff et al. 2018.

    ``{"normal_classes": [...], "default": ..., "scores": {method: {"auroc", "average_precision"}},
    "test_normal": n, "test_anomalous": m}``, with ``note`` (and no scores) when the test set lacks either kind.
    """
    scores, truth, default = anomaly_test_scores(model, data, normal_classes, seed=seed, methods=methods)
    result = {"normal_classes": normal_ids_of(data, normal_classes), "default": default,
              "scores": {m: auroc_ap(s, truth) for m, s in scores.items()},
              "test_normal": int((~truth).sum()), "test_anomalous": int(truth.sum())}
    if not scores:
        result["note"] = f"no scores: the test set holds no {'normal' if truth.all() else 'anomalous'} samples"
    return result


def anomaly_rows(anomaly: dict) -> list[list[str]]:
    """The ``anomaly`` entry as table rows (score, AUROC, average precision, what it measures), the default
    score marked: what a report shows."""
    return [[f"{m} (default)" if m == anomaly.get("default") else m, f"{v['auroc']:.4f}",
             f"{v['average_precision']:.4f}", SCORES.get(m, "")] for m, v in anomaly.get("scores", {}).items()]


def anomaly_lines(anomaly: dict) -> list[str]:
    """The ``anomaly`` entry as lines of text (what ``aelab evaluate`` prints): one score a line."""
    lines = [f"  anomaly: normal classes {', '.join(map(str, anomaly.get('normal_classes', [])))}; "
             f"{anomaly.get('test_normal', 0):,} normal / {anomaly.get('test_anomalous', 0):,} anomalous test samples"]
    for method, values in anomaly.get("scores", {}).items():
        mark = "  (default)" if method == anomaly.get("default") else ""
        lines.append(f"    {method:<12} AUROC {values['auroc']:.4f}  average precision "
                     f"{values['average_precision']:.4f}{mark}")
    if anomaly.get("note"):
        lines.append(f"    note: {anomaly['note']}")
    return lines


__all__ = ["AnomalyScorer", "CODE_SCORES", "DEFAULT_CONTAMINATION", "DEFAULT_SCORE", "IWAE_SAMPLES", "KNN_K",
           "LIKELIHOOD_SCORES", "SCORES", "anomaly_lines", "anomaly_rows", "anomaly_test_scores", "anomaly_truth",
           "applicable_scores", "auroc_ap", "check_contamination", "check_methods", "evaluate_anomaly", "knn_distances", "mahalanobis_distances"]
