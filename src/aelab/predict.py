"""Inference on a trained model: one :class:`Predictor` for the server, the reports and Python users.

    p = Predictor.from_run("runs/vae-mnist5k")
    z = p.encode(images)            # (N, latent_dim): the code the decoder receives (a VAE's posterior mean)
    x = p.decode(z)                 # (N, 1, 28, 28) in input space
    x = p.sample(16)                # generative models only (p.can_sample)
    strip = p.decode(p.interpolate(z[0], z[1], steps=8))
    s = p.score(images)             # (N,) anomaly scores, higher = more unusual (p.scorer: threshold, methods)

A multimodal model reads and writes several modalities through one latent space. Its Predictor shows the
image modality by default (``encode``, ``decode``, ``reconstruct`` and ``sample`` are about images, as for
any other model); ``modality=`` picks another, and text has its own verbs::

    p.modalities                    # ("image", "audio", "text")
    z = p.encode(recordings, modality="audio")
    z = p.encode_text(["seven", "3"])             # strings to codes
    p.decode_text(z)                # codes to strings: ["seven", "three"]
    images = p.decode(p.text_codes("seven", n=8, seed=0))   # images generated from a word

The run folder also keeps what a latent-space explorer needs and should not recompute on every start:
``latent_stats.json`` (per-dimension mean, std, min and max of the test codes, the class names) written by
:func:`write_latent_stats`, and the 2-D map of the test codes, ``projection-<method>.npz``, written by
:func:`write_projection`. Both are stale (and recomputed by :func:`ensure_latent_files`) once the weights
are newer than they are.
"""
from __future__ import annotations

import inspect
import io
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits

from .data import Dataset
from .data.folders import images_transform
from .data.own import ID_NAMES, read_inputs
from .data.multimodal import decode_text as text_of_ids, encode_text as ids_of_text
from .device import INFERENCE_BATCH, resolve_device
from .errors import AelabError
from .evaluation.anomaly import AnomalyScorer
from .io import atomic_write_bytes, atomic_write_text
from .models.base import GENERATIVE, MULTIMODAL, VARIATIONAL, eval_mode, has, model_device
from .runfolder import CHECKPOINT, MODEL, Run, load_run_data, open_run, read_data_record

logger = logging.getLogger(__name__)

LATENT_STATS = "latent_stats.json"
PROJECTION = "projection-{method}.npz"
MAP_METHODS = ("tsne", "pca")  # the explorer's maps; "direct" is used instead of either when the codes are 2-D
PROJECTIONS = (*MAP_METHODS, "umap")  # every projection (UMAP needs the optional umap-learn)
MAX_MAP_POINTS = 20_000  # test codes on the map at most (a seeded subset beyond): t-SNE is O(N log N) per step
TSNE_STEPS = 500  # half sklearn's default: a map as good by the 5-NN accuracy of its points (project_codes)
TSNE_PCA_DIMS = 50  # codes wider than this are reduced by PCA before t-SNE


class Predictor:
    """A trained model ready for inference: on its device, in eval mode, one call at a time, no gradients.

    Inputs may be uint8 (0..255, scaled to [0, 1]) or float, numpy arrays or tensors, one sample
    (``input_shape``) or a batch (N, ``*input_shape``); they are run in batches of ``batch_size``.
    Every result is a float32 tensor on the CPU, batched: (N, latent_dim) codes, (N, ``*input_shape``) outputs.
    """

    def __init__(self, model: torch.nn.Module, *, device: str | torch.device | None = None,
                 batch_size: int = INFERENCE_BATCH, run: Run | None = None):
        self.device = model_device(model) if device is None else torch.device(device)
        self.model = model.to(self.device).eval()
        self.run = run  # the run folder it came from, when it did
        self.batch_size = int(batch_size)
        self.name = (getattr(model, "spec", None) or {}).get("name", model.name)
        self.latent_dim = int(model.latent_dim)
        self.specs = dict(model.modalities)  # {modality: Modality}
        self.modalities = tuple(self.specs)
        self.modality = model.main_modality  # the modality shown and decoded by default (the image, if any)
        self.input_shape = tuple(self.specs[self.modality].shape)
        self.multimodal = has(model, MULTIMODAL)  # several modalities, one latent space
        self.can_sample = has(model, GENERATIVE)  # a prior to sample from
        self._lock = threading.Lock()  # torch already spreads one call over every core: serve calls in turn
        self._scorer: AnomalyScorer | None = None  # fitted on the run's training rows on first use (score)

    @classmethod
    def from_run(cls, path: str | Path, device: str = "auto", batch_size: int = INFERENCE_BATCH) -> "Predictor":
        """The model of a run folder (weights loaded with ``weights_only``), on ``device`` ("auto": CUDA when present)."""
        run = open_run(path)
        return cls(run.model, device=resolve_device(device), batch_size=batch_size, run=run)

    def __repr__(self) -> str:
        return (f"Predictor({self.name!r}, latent_dim={self.latent_dim}, input_shape={self.input_shape}, "
                f"device='{self.device}')")

    # ------------------------------------------------------------------ inputs
    def _modality(self, modality: str | None) -> str:
        if modality is None:
            return self.modality
        if modality not in self.modalities:
            raise AelabError(f"the {self.name} model has no modality '{modality}'; it has {', '.join(self.modalities)}")
        return modality

    def _is_text(self, modality: str) -> bool:
        spec = self.specs.get(modality)
        return spec is not None and spec.likelihood == "categorical"

    def _shape(self, modality: str) -> tuple[int, ...]:
        return tuple(self.specs[modality].shape)

    def _inputs(self, x, modality: str | None = None) -> torch.Tensor:
        """``x`` as a batch (N, *shape) of ``modality`` (default: the one shown) on the CPU: float32 with uint8
        scaled to [0, 1]; symbol ids (int64) for text."""
        modality = self._modality(modality)
        if self._is_text(modality):
            return self._ids(x, modality)
        shape = self._shape(modality)
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if x.dtype == torch.uint8:
            x = x.to(torch.float32) / 255.0
        elif x.is_floating_point():
            x = x.to(torch.float32)
        else:
            raise AelabError(f"inputs must be uint8 (0..255) or floats, got {x.dtype}; convert them first")
        if tuple(x.shape) == shape:
            x = x[None]
        if tuple(x.shape[1:]) != shape:
            raise AelabError(f"the {self.name} model reads {modality} inputs of shape {shape} (or a batch of them) "
                             f"but got {tuple(x.shape)}; reshape the data")
        if not torch.isfinite(x).all():
            raise AelabError("the inputs hold NaN or infinite values; remove or replace them")
        return x

    def _ids(self, x, modality: str) -> torch.Tensor:
        """Text as int64 symbol ids (N, L): strings are encoded, ids checked against the vocabulary."""
        spec = self.specs[modality]
        if isinstance(x, str):
            x = [x]
        if isinstance(x, (list, tuple)) and all(isinstance(s, str) for s in x):
            return ids_of_text(list(x), length=spec.shape[0])
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if x.is_floating_point() or x.dtype == torch.bool:
            raise AelabError(f"{modality} inputs are integer symbol ids (or strings), got {x.dtype}")
        x = x.to(torch.int64)
        if tuple(x.shape) == tuple(spec.shape):
            x = x[None]
        if tuple(x.shape[1:]) != tuple(spec.shape):
            raise AelabError(f"the {self.name} model reads {modality} of shape {tuple(spec.shape)} (or a batch of "
                             f"them) but got {tuple(x.shape)}; encode the strings with encode_text")
        if x.numel() and (x.min() < 0 or x.max() >= spec.vocab):
            raise AelabError(f"{modality} symbol ids must lie in 0..{spec.vocab - 1}, "
                             f"got {int(x.min())}..{int(x.max())}")
        return x

    def _codes_in(self, z) -> torch.Tensor:
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.dim() == 1:
            z = z[None]
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise AelabError(f"codes must have {self.latent_dim} values each (shape (N, {self.latent_dim})), "
                             f"got shape {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            raise AelabError("the codes hold NaN or infinite values; give finite numbers")
        return z

    def _batched(self, fn, x: torch.Tensor) -> torch.Tensor:
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(x), self.batch_size):
                y = fn(x[start:start + self.batch_size].to(self.device))
                out.append((y.float() if y.is_floating_point() else y).cpu())  # text stays int64 ids
        return torch.cat(out) if out else torch.empty(0)


    # ------------------------------------------------------------------ verbs
    def encode(self, x, modality: str | None = None) -> torch.Tensor:
        """(N, latent_dim) codes: what the decoder receives (the posterior mean for a variational model).
        ``modality``: which modality ``x`` is, for a multimodal model (default: the one shown, the image)."""
        modality = self._modality(modality)
        x = self._inputs(x, modality)
        return self._batched(lambda b: self.model.encode({modality: b}).flatten(1), x)

    def decode(self, z, modality: str | None = None) -> torch.Tensor:
        """Codes (N, latent_dim) or one code (latent_dim,) to outputs (N, *input_shape) in input space
        (``modality``: which of a multimodal model's outputs; text comes as int64 ids, see decode_text)."""
        modality = self._modality(modality)
        return self._batched(lambda b: self.model.decode(b, modality), self._codes_in(z))

    def reconstruct(self, x) -> torch.Tensor:
        """decode(encode(x)), in one pass per batch."""
        x = self._inputs(x)
        return self._batched(lambda b: self.model.reconstruct({self.modality: b}, self.modality), x)

    # ------------------------------------------------------------------ anomaly scores
    @property
    def scorer(self) -> AnomalyScorer:
        """The run's :class:`~aelab.evaluation.anomaly.AnomalyScorer`, fitted once on the run's training rows
        (those of its normal classes, for a run trained with ``normal_classes``) and kept."""
        if self._scorer is None:
            if self.run is None:
                raise AelabError("anomaly scores are fitted on the run's training rows: make the Predictor with "
                                 "Predictor.from_run, or fit aelab.evaluation.anomaly.AnomalyScorer on your rows")
            rows = load_run_data(self.run.config).inputs("train")[self.modality]
            with self._lock:
                self._scorer = AnomalyScorer.fit(self.model, rows, seed=self.run.config.seed,
                                                 batch_size=self.batch_size)
        return self._scorer

    def score(self, x, method: str | None = None) -> torch.Tensor:
        """(N,) anomaly scores of ``x``, higher = more anomalous, by ``method`` (a name of
        ``aelab.evaluation.anomaly.SCORES``; default: the run's, ``scorer.default``)."""
        x = self._inputs(x)
        scorer = self.scorer
        with self._lock:
            return torch.from_numpy(scorer.score(x, method)).float()

    # ------------------------------------------------------------------ text (multimodal models with text)
    def _text_modality(self) -> str:
        for m in self.modalities:
            if self._is_text(m):
                return m
        raise AelabError(f"the {self.name} model reads no text; train a multimodal model with --modalities "
                         f"image,text")

    def encode_text(self, texts) -> torch.Tensor:
        """Strings (one or a list) to their codes (N, latent_dim); characters outside the model's alphabet
        or strings too long for it are an AelabError."""
        return self.encode(texts, modality=self._text_modality())

    def decode_text(self, z) -> list[str]:
        """Codes (N, latent_dim) or one code to the strings the text decoder writes for them."""
        return text_of_ids(self.decode(z, modality=self._text_modality()))

    def text_codes(self, text: str, n: int = 1, seed: int | None = None) -> torch.Tensor:
        """(n, latent_dim) codes for one string: its code (the posterior mean) first, then n - 1 drawn from the
        posterior q(z | text), so ``decode`` of them shows what the model imagines for the text. A model
        without a posterior (fusion "shared") gives the one code only."""
        if not isinstance(text, str):
            raise AelabError(f"text_codes takes one string, got {type(text).__name__}")
        if n < 1:
            raise AelabError(f"the number of codes must be at least 1, got {n}")
        modality = self._text_modality()
        ids = self._inputs(text, modality)
        with self._lock, torch.inference_mode():
            batch = {modality: ids.to(self.device)}
            if not has(self.model, VARIATIONAL) or n == 1:
                return self.model.encode(batch).float().cpu()
            posterior = self.model.posterior(batch)
            mean, std = posterior.mean.float().cpu(), posterior.std.float().cpu()
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        noise = torch.randn(n - 1, self.latent_dim, generator=generator)
        return torch.cat([mean, mean + std * noise])

    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` new outputs decoded from codes drawn from the model's prior (generative models only)."""
        if not self.can_sample:
            raise AelabError(f"the {self.name} model has no prior to sample from; train a vae or conv-vae")
        if n < 1:
            raise AelabError(f"the number of samples must be at least 1, got {n}")
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        with self._lock, torch.inference_mode():
            out = self.model.sample(int(n), generator=generator, modality=self.modality)
        return out.float().cpu()

    def interpolate(self, a, b, steps: int = 10) -> torch.Tensor:
        """(steps, latent_dim) codes evenly spaced on the line from code ``a`` to code ``b`` (both ends included);
        ``decode`` them for the images. Encode two inputs first to interpolate between them."""
        if steps < 2:
            raise AelabError(f"an interpolation needs at least 2 steps, got {steps}")
        za, zb = self._codes_in(a), self._codes_in(b)
        if len(za) != 1 or len(zb) != 1:
            raise AelabError("interpolate takes one code at each end; pass z[i], not a batch")
        t = torch.linspace(0, 1, steps)[:, None]
        return (1 - t) * za + t * zb


# ---------------------------------------------------------------------------------------------- codes out
@dataclass
class Encoded:
    """The codes of a run's inputs: ``codes`` (N, latent_dim), each row's ``ids`` (a file name or a row index, as
    text; ``id_name`` says which), its class name when the input carries the run's labels (else None)."""

    codes: torch.Tensor
    ids: list[str]
    id_name: str
    labels: list[str] | None


def run_transform(run: Run) -> dict:
    """How raw inputs become the run's model inputs: the transform its dataset recorded in data.json (a folder
    of images, a table, an .npz), or, for a dataset by name, the shape its model reads (images or arrays)."""
    record = read_data_record(run.path) or {}
    if isinstance(record.get("transform"), dict):
        return record["transform"]
    shape = tuple(run.model.modalities[run.model.main_modality].shape)
    classes = (read_latent_stats(run.path) or {}).get("classes")
    if len(shape) == 3 and shape[0] in (1, 3):
        return images_transform(shape[1:], shape[0], classes)
    return {"kind": "arrays", "shape": list(shape), "dtype": "float32", "classes": classes}


@dataclass
class RunInputs:
    """Inputs read as a run reads its data: ``x`` the model inputs, each row's ``ids`` (``id_name``: "file" or
    "row") and its class name when known (``labels``, else None)."""

    x: torch.Tensor
    ids: list[str]
    id_name: str
    labels: list[str] | None


def run_inputs(predictor: Predictor, path=None, *, skip_bad: bool = False, progress: bool = True) -> RunInputs:
    """``path`` read as the run reads its data (:func:`aelab.data.own.read_inputs` with the run's transform: image
    size and channels, a table's standardisation and one-hot columns), or the run's own test set when ``path`` is
    None. What ``aelab encode`` and ``aelab score`` read. The predictor must come from ``Predictor.from_run``."""
    if predictor.run is None:
        raise AelabError("reading a run's inputs needs a Predictor made with Predictor.from_run")
    transform = run_transform(predictor.run)
    classes = transform.get("classes")
    if path is None:
        data = load_run_data(predictor.run.config)
        x, y = data.inputs("test")[predictor.modality], data.y_test
        ids = (data.meta.get("ids") or {}).get("test") or [str(i) for i in range(len(x))]
        classes = data.classes or classes
    else:
        x, ids, y = read_inputs(path, transform, skip_bad=skip_bad, progress=progress)
    labels = None if y is None else [classes[int(i)] if classes else str(int(i)) for i in y.tolist()]
    return RunInputs(x, list(ids), ID_NAMES.get(transform.get("kind"), "row"), labels)


def encode_inputs(predictor: Predictor, path=None, *, skip_bad: bool = False, progress: bool = True) -> Encoded:
    """The codes of ``path`` (or of the run's test set) read as :func:`run_inputs` reads them."""
    inputs = run_inputs(predictor, path, skip_bad=skip_bad, progress=progress)
    return Encoded(predictor.encode(inputs.x), inputs.ids, inputs.id_name, inputs.labels)


CODE_FORMATS = (".npy", ".csv", ".parquet")


def write_codes(encoded: Encoded, out: str | Path) -> Path:
    """Write codes as ``.npy`` (N, latent_dim) float32, or ``.csv`` / ``.parquet`` with one column per code
    dimension (``z0``, ``z1``, ...) after the row's id (``file`` or ``row``) and its ``label`` when known;
    atomically."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in CODE_FORMATS:
        raise AelabError(f"cannot write codes as '{out.suffix or out.name}'; name the file .npy, .csv or .parquet")
    codes = encoded.codes.float().cpu().numpy()
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, codes)
    else:
        columns = {encoded.id_name: pa.array(encoded.ids, pa.string())}
        if encoded.labels is not None:
            columns["label"] = pa.array(encoded.labels, pa.string())
        columns.update({f"z{j}": pa.array(codes[:, j]) for j in range(codes.shape[1])})
        table = pa.table(columns)
        if suffix == ".csv":
            pa_csv.write_csv(table, buffer)
        else:
            pq.write_table(table, buffer)
    try:
        atomic_write_bytes(out, buffer.getvalue())
    except OSError as exc:
        raise AelabError(f"cannot write {out} ({exc.strerror or exc}); choose another --out") from None
    return out


# ---------------------------------------------------------------------------------------------- run files
def _is_fresh(path: Path, run_dir: Path) -> bool:
    """True when ``path`` exists and no weights of the run are newer than it."""
    if not path.is_file():
        return False
    weights = [p for p in (run_dir / MODEL, run_dir / CHECKPOINT) if p.is_file()]
    return not any(p.stat().st_mtime > path.stat().st_mtime for p in weights)


def latent_stats(codes: torch.Tensor, classes: list[str] | None = None, dataset: str = "") -> dict:
    """Per-dimension ``mean``, ``std``, ``min`` and ``max`` of codes (N, D), with the class names: what the
    explorer's sliders need."""
    codes = torch.as_tensor(codes, dtype=torch.float64)
    if codes.dim() != 2 or len(codes) == 0:
        raise AelabError(f"codes must be a non-empty (N, D) array, got shape {tuple(codes.shape)}")
    return {"dataset": dataset, "count": len(codes), "latent_dim": codes.shape[1],
            "mean": codes.mean(0).tolist(), "std": codes.std(0, unbiased=False).tolist(),
            "min": codes.min(0).values.tolist(), "max": codes.max(0).values.tolist(),
            "classes": list(classes) if classes else None}


def encode_test_set(predictor: Predictor, data: Dataset) -> torch.Tensor:
    """The codes of ``data``'s test set, (N, latent_dim)."""
    return predictor.encode(data.inputs("test")[predictor.modality])


def write_latent_stats(run_dir: str | Path, model, data: Dataset, codes: torch.Tensor | None = None) -> Path:
    """Write ``RUN/latent_stats.json`` from the test codes of ``data`` (computed with ``model`` unless
    ``codes`` are given) and return its path. Called at the end of training; fast (one pass over the test set)."""
    run_dir = Path(run_dir)
    if codes is None and isinstance(model, Predictor):
        codes = encode_test_set(model, data)
    elif codes is None:
        with eval_mode(model):  # the trainer's model goes back to the mode it was in
            codes = encode_test_set(Predictor(model), data)
    path = run_dir / LATENT_STATS
    atomic_write_text(path, json.dumps(latent_stats(codes, data.classes, data.name), indent=1) + "\n")
    return path


def read_latent_stats(run_dir: str | Path) -> dict | None:
    """``RUN/latent_stats.json``, or None when missing, unreadable or older than the weights."""
    path = Path(run_dir) / LATENT_STATS
    if not _is_fresh(path, Path(run_dir)):
        return None
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return values if isinstance(values, dict) and "mean" in values else None


@dataclass
class Projection:
    """The 2-D map of test codes: ``points[i]`` is where test item ``index[i]`` lies.

    For a linear map (``pca``, or ``direct`` for 2-D codes) a map position (x, y) is the code
    ``origin + x * axes[0] + y * axes[1]``, so any position can be decoded; a t-SNE map has no such inverse.
    """

    points: np.ndarray  # (M, 2) float32
    index: np.ndarray  # (M,) int64, ascending rows of the test set
    method: str  # "tsne", "pca", "umap" or "direct"
    axis_labels: tuple[str, str]
    origin: np.ndarray | None = None  # (D,) for a linear map
    axes: np.ndarray | None = None  # (2, D) for a linear map
    seconds: float = 0.0

    @property
    def linear(self) -> bool:
        return self.axes is not None


def map_subset(n: int, max_points: int | None, seed: int = 0) -> np.ndarray:
    """``max_points`` of ``range(n)`` chosen at random with ``seed`` (all of them when n is no larger), sorted."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def project_codes(codes, method: str = "tsne", max_points: int | None = MAX_MAP_POINTS, seed: int = 0,
                  log=None) -> Projection:
    """Codes (N, D) to a 2-D :class:`Projection` with ``method`` ("tsne", "pca" or "umap"), on a seeded subset of
    ``max_points`` codes (None: all): the one projection of the package (the explorer's map, the reports' latent
    maps). 2-D codes are drawn as they are and 1-D codes against seeded jitter ("direct", a linear map like
    "pca", whose positions decode); ``log`` gets a line before a t-SNE or UMAP."""
    if method not in PROJECTIONS:
        raise AelabError(f"unknown map '{method}'; choose one of: {', '.join(PROJECTIONS)}")
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().float().cpu()
    z = np.asarray(codes, dtype=np.float32)
    if z.ndim != 2 or len(z) < 2:
        raise AelabError(f"the map needs at least 2 codes of shape (N, D), got shape {z.shape}")
    index = map_subset(len(z), max_points, seed)
    z, d, t0 = z[index], z.shape[1], time.perf_counter()
    if d <= 2:
        eye = np.eye(2, d, dtype=np.float32)  # (2, D); a 1-D code gets seeded jitter on the second axis
        points = z @ eye.T
        if d == 1:
            points[:, 1] = np.random.default_rng(seed).uniform(-1, 1, size=len(z))
        return Projection(points, index, "direct", ("z1", "z2" if d == 2 else "jitter"), np.zeros(d, np.float32), eye)
    if method == "pca" or len(z) < 5:  # t-SNE and UMAP need a handful of neighbours
        pca = PCA(2, random_state=seed).fit(z)
        ratio = pca.explained_variance_ratio_
        return Projection(pca.transform(z).astype(np.float32), index, "pca",
                          (f"PC 1 ({ratio[0]:.0%} of variance)", f"PC 2 ({ratio[1]:.0%} of variance)"),
                          pca.mean_.astype(np.float32), pca.components_.astype(np.float32), time.perf_counter() - t0)
    if log:
        log(f"{'UMAP' if method == 'umap' else 't-SNE'} of {len(z):,} codes ({d}-D) ...")
    if method == "umap":
        try:
            import umap  # optional: pip install umap-learn
        except ImportError:
            raise AelabError("the UMAP projection needs the umap-learn package; pip install umap-learn, "
                             "or use the t-SNE or PCA projection") from None
        points = umap.UMAP(n_components=2, random_state=seed).fit_transform(z)
        return Projection(np.asarray(points, np.float32), index, "umap", ("UMAP 1", "UMAP 2"),
                          seconds=time.perf_counter() - t0)
    if d > TSNE_PCA_DIMS:
        z = PCA(TSNE_PCA_DIMS, random_state=seed).fit_transform(z)
    # 500 iterations, not sklearn's 1,000: half the time, and a map as good by the 5-NN accuracy of its
    # 2-D points (0.873 against 0.880 on 2,000 dense-autoencoder codes of mnist5k)
    steps = {"max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter": TSNE_STEPS}
    tsne = TSNE(2, perplexity=min(30.0, (len(z) - 1) / 3), init="pca", learning_rate="auto", random_state=seed,
                **steps)
    # One OpenMP thread: the map is then bit-for-bit the same on every machine (a multi-threaded sum changes the
    # order of additions), and on a busy CPU two spinning threads ran 4-5x *slower* than one (measured: 2,000
    # codes, 81 s with two threads against 22 s with one, load average 9 on 2 cores).
    with threadpool_limits(1, user_api="openmp"):
        points = tsne.fit_transform(z)
    seconds = time.perf_counter() - t0
    if log:
        log(f"t-SNE done in {seconds:.1f} s")
    return Projection(np.asarray(points, np.float32), index, "tsne", ("t-SNE 1", "t-SNE 2"), seconds=seconds)


def write_projection(run_dir: str | Path, projection: Projection, method: str) -> Path:
    """Cache ``projection`` (asked for as ``method``) in ``RUN/projection-<method>.npz``; returns the path."""
    arrays = {"points": projection.points, "index": projection.index, "method": np.array(projection.method),
              "axis_labels": np.array(projection.axis_labels), "seconds": np.array(projection.seconds)}
    if projection.linear:
        arrays.update(origin=projection.origin, axes=projection.axes)
    path = Path(run_dir) / PROJECTION.format(method=method)
    buffer = io.BytesIO()  # the standard library's io; aelab.io writes it atomically
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_projection(run_dir: str | Path, method: str) -> Projection | None:
    """The cached map of ``RUN/projection-<method>.npz``, or None when missing, unreadable or stale."""
    path = Path(run_dir) / PROJECTION.format(method=method)
    if not _is_fresh(path, Path(run_dir)):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            linear = "axes" in f.files
            return Projection(f["points"].astype(np.float32), f["index"].astype(np.int64), str(f["method"]),
                              tuple(str(s) for s in f["axis_labels"]),
                              f["origin"].astype(np.float32) if linear else None,
                              f["axes"].astype(np.float32) if linear else None, float(f["seconds"]))
    except (OSError, ValueError, KeyError):
        return None


def test_count(data: Dataset) -> int:
    """The number of test items of ``data`` (of any of its modalities: the rows are aligned)."""
    return len(next(iter(data.inputs("test").values())))


def _matches(stats: dict | None, projection: Projection | None, predictor: Predictor, data: Dataset, n: int):
    """The cached statistics and map, each kept only when it describes this model's codes of these test items."""
    if stats is not None and (stats.get("count") != n or stats.get("latent_dim") != predictor.latent_dim
                              or stats.get("dataset") != data.name):
        stats = None
    if projection is not None and (len(projection.index) != min(n, MAX_MAP_POINTS)
                                   or (len(projection.index) and int(projection.index.max()) >= n)):
        projection = None
    return stats, projection


def ensure_latent_files(predictor: Predictor, data: Dataset, method: str = "tsne", log=None) -> tuple[dict, Projection]:
    """The run's latent statistics and map, read from its folder, or computed now and cached there when
    missing, stale (older than the weights) or made from other test data. A folder that cannot be written
    (read-only) only costs the cache: the values are still returned. ``log`` gets a line before a
    computation that takes a while."""
    if predictor.run is None:
        raise AelabError("ensure_latent_files needs a Predictor made with Predictor.from_run")
    run_dir, n = Path(predictor.run.path), test_count(data)
    stats, projection = _matches(read_latent_stats(run_dir), read_projection(run_dir, method), predictor, data, n)
    if stats is not None and projection is not None:
        return stats, projection
    codes = encode_test_set(predictor, data)
    if stats is None:
        stats = latent_stats(codes, data.classes, data.name)
        _cache(lambda: write_latent_stats(run_dir, predictor, data, codes=codes))
    if projection is None:
        if log and method == "tsne" and predictor.latent_dim > 2:
            log(f"t-SNE map of {min(n, MAX_MAP_POINTS):,} test codes (once; cached in {run_dir}) ...")
        projection = project_codes(codes, method)
        _cache(lambda: write_projection(run_dir, projection, method))
    return stats, projection


def _cache(write) -> None:
    try:
        write()
    except AelabError as exc:
        logger.warning("not cached: %s", exc)


__all__ = ["CODE_FORMATS", "Encoded", "RunInputs", "run_inputs", "LATENT_STATS", "MAP_METHODS", "PROJECTION", "Predictor", "Projection",
           "encode_inputs", "ensure_latent_files", "run_transform", "write_codes",
           "latent_stats", "project_codes", "read_latent_stats", "read_projection", "encode_test_set", "test_count",
           "write_latent_stats", "write_projection"]
