"""Run configuration: one flat, typed dataclass, saved as ``config.json`` with every run.

A run can be rebuilt from its folder alone: ``RunConfig.load(run / "config.json")``.
Values come, in increasing priority, from the defaults below, a TOML or JSON file (``--config``),
then command-line flags.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AelabError, closest, first_line
from .io import atomic_write_text
from .data.datasets import DATASETS
from .data.noise import parse_noise
from .models.base import MULTIMODAL, has, require
from .registry import check_model_settings, model_class

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

FORMAT_VERSION = 1  # bump when the layout of a run folder changes incompatibly
LR_SCHEDULES = ("constant", "cosine", "onecycle")
DATA_OPTIONS = ("test_fraction", "image_size", "channels", "label_column", "drop_columns", "impute", "skip_bad")
MAX_SEED = 2**32 - 1  # per-epoch shuffles seed torch with seed * 1_000_003 + epoch, which must fit 64 bits


@dataclass
class RunConfig:
    # --- what to train on what
    model: str = "dense"  # registry name: see `aelab.MODELS`
    dataset: str = "mnist5k"  # dataset name (see `aelab datasets`) or the path of your own data: a folder of images, a table (.csv, .tsv, .parquet), an .npz or .npy
    data_dir: str | None = None  # folder holding this dataset's files (overrides AELAB_DATA_DIR)
    # --- your own data (--dataset PATH); the split, image format and table transform are recorded in data.json
    test_fraction: float | None = None  # share of the rows held out as the test set (seeded, stratified by label) unless the data brings train/ and test/; None = 0.2
    image_size: list[int] | None = None  # images: H,W every image is brought to; None = the most common size
    channels: int | None = None  # images: 1 (grey) or 3 (RGB); None = the most common mode
    label_column: str | None = None  # tables: the column holding each row's label (its values become the classes)
    drop_columns: list[str] | None = None  # tables: columns left out, e.g. id,timestamp
    impute: str | None = None  # tables: fill NaN or infinite values with the training rows' "mean" or "median" (else they are an error)
    skip_bad: bool = False  # images: skip unreadable or truncated files (one warning counts them) instead of stopping
    normal_classes: str | None = None  # anomaly detection: train and validate on these labels only ("3", "0-4" or "2,5,8"); the test set keeps every class
    out: str | None = None  # run folder; default runs/<model>-<dataset>[-N]
    # --- the model's settings: owned and validated by its family's settings class (models/<family>.py). None =
    # the family's default; a value the chosen family does not read is refused (never silently dropped), and
    # config.json records every setting the model was built with.
    latent_dim: int | None = None  # size of the code z (dense, conv, vae: 32; sparse: 256)
    hidden_dims: list[int] | None = None  # hidden layer sizes (dense, vae, sparse; [] = none) or channels (conv)
    loss: str | None = None  # reconstruction loss: "mse" or "bce" (one-modality models)
    weight_init: str | None = None  # encoder weights: "he" (Kaiming normal for its ReLU layers; default) or "torch"
    # --- sparse autoencoder
    penalty: str | None = None  # sparsity penalty: "kl" (default), "l1", "topk", "batchtopk" or "wta"
    target_sparsity: float | None = None  # kl: rho, the target mean activation of each unit; wta: the share of a batch each unit fires on (0.05)
    sparsity_weight: float | None = None  # weight of the penalty (kl, l1) or of the dead-unit AuxK loss (topk, batchtopk); None = per-penalty default
    k: int | None = None  # active units per sample (topk; batchtopk: on average over the batch; 25)
    # --- variational autoencoders (vae, conv-vae, multimodal)
    beta: float | None = None  # weight of the KL term (beta-VAE; 1.0 = the plain ELBO)
    kl_warmup: int | None = None  # epochs over which the KL weight ramps linearly from 0 to beta (0)
    iwae_k: int | None = None  # vae, conv-vae: train on the IWAE bound with K importance samples per image (Burda et al. 2016); None or 1 = the ELBO; beta and the KL warm-up weight log p(z) - log q(z|x) inside each log-weight
    iwae_gradient: str | None = None  # vae, conv-vae with iwae_k > 1: the encoder's gradient estimator, "reparam" (the IWAE paper's) or "dreg" (doubly reparameterized, Tucker et al. 2019); None = dreg
    prior: str | None = None  # vae, conv-vae: the prior p(z): "normal" (N(0, I), the default), "vamp" (VampPrior, Tomczak & Welling 2018: a mixture of the posteriors of learned pseudo-inputs) or "mog" (a learned mixture of Gaussians)
    prior_components: int | None = None  # vae, conv-vae: components of the vamp or mog prior; None = 500 (vamp), 10 (mog)
    hidden_block: str | None = None  # vae: each hidden layer "plain" (Linear + ReLU, the default), "gated" (Linear times sigmoid(Linear), VampPrior's GatedDense) or "residual" (an identity skip over each layer whose width in equals its width out: needs two equal neighbouring hidden_dims, e.g. 512,512)
    binarize: bool = False  # train and evaluate on dynamically binarized images (Bernoulli draws per batch)
    # --- multimodal autoencoder (--model multimodal)
    modalities: str | None = None  # two or more of image,audio,text, comma-separated; None = image,audio,text when the FSDD file is found, else image,text
    audio_data: str | None = None  # the FSDD MFCC file digits.npz; None = AELAB_DATA_DIR/fsdd-mfcc/digits.npz, then the cache
    fusion: str | None = None  # how the modalities' codes join: "poe" (MVAE), "moe" (MMVAE) or "shared"; None = the model's default
    align_weight: float | None = None  # multimodal: weight of a contrastive (InfoNCE) term that pulls each item's codes from its different modalities together; 0 = off; None = the family's default (10)
    # --- denoising autoencoder (any one-modality family)
    noise: str | None = None  # denoising: corrupt each training batch afresh on the device: gaussian:SIGMA, masking:P or salt-pepper:P; the target stays clean
    # --- optimisation
    epochs: int = 10  # passes over the training set (unless given, what a family is measured with: --model multimodal 3, with --batch-size 256 and --lr 2e-3; --model sparse 20, with --lr 2e-3 and --lr-schedule cosine)
    batch_size: int = 128  # samples per step
    lr: float = 1e-3  # Adam learning rate
    lr_schedule: str = "constant"  # "constant"; "cosine": from lr down to 0 over the run's epochs; "onecycle": up from lr/25 to lr over the first 30%, then down to lr/250000 (Smith & Topin 2019); per step
    warmup_epochs: float = 0.0  # epochs of linear warm-up from 0 to lr at the start (constant and cosine; onecycle warms up by itself)
    weight_decay: float = 0.0  # Adam weight decay
    grad_clip: float | None = None  # clip the gradient norm to this value; None = no clipping
    seed: int = 0  # seeds weights, shuffling and sampling
    data_init: bool = True  # before the first step, set the decoder's output bias so it starts at the mean training image
    device: str = "auto"  # "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ...
    compile: bool = False  # torch.compile the model (helps on GPU; measured in benchmarks/)
    precision: str = "auto"  # forward-pass precision: "auto" (bf16 autocast on CUDA, float32 on CPU), "fp32", "bf16"
    # --- early stopping
    patience: int | None = None  # stop after this many epochs without a lower validation loss, keep the best epoch's weights in model.pt; None = train every epoch
    val_fraction: float | None = None  # share of the TRAINING set held out for validation (never the test set); None = 0.1 with --patience, else no validation split
    # --- outputs
    report: bool = True  # write figures and report.html when training ends
    tensorboard: bool = False  # also log to <run>/tensorboard: scalars per epoch, reconstructions and samples, test codes for the projector (pip install "aelab[tensorboard]")

    # ----------------------------------------------------------------- validation
    def validate(self) -> "RunConfig":
        """Check ranges and cross-field rules; raise AelabError naming the field and the fix."""
        require(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        require(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        require(math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}; try --lr 1e-3")
        require(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be >= 0, got {self.weight_decay}")
        require(self.lr_schedule in LR_SCHEDULES,
             f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got '{self.lr_schedule}'")
        require(math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0,
             f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        require(not (self.warmup_epochs and self.lr_schedule == "onecycle"),
             "warmup_epochs applies to the constant and cosine schedules; onecycle warms up by itself: drop "
             "--warmup-epochs")
        if self.patience is not None:
            require(self.patience >= 1, f"patience must be at least 1 epoch, got {self.patience}")
        if self.val_fraction is not None:
            require(math.isfinite(self.val_fraction) and 0 <= self.val_fraction < 1,
                 f"val_fraction must lie in [0, 1), got {self.val_fraction}; try --val-fraction 0.1")
        require(not (self.patience is not None and self.validation_fraction == 0),
             "early stopping (--patience) watches a validation split: give --val-fraction above 0 (e.g. 0.1)")
        require(self.precision in ("auto", "fp32", "bf16"),
             f"precision must be 'auto', 'fp32' or 'bf16', got '{self.precision}'")
        if self.grad_clip is not None:
            require(math.isfinite(self.grad_clip) and self.grad_clip > 0,
                 f"grad_clip must be a positive number, got {self.grad_clip}")
        require(0 <= self.seed <= MAX_SEED, f"seed must lie in 0..{MAX_SEED}, got {self.seed}")
        self.check_data_options()
        check_model_settings(self)  # the model's fields: read by the chosen family, judged by its settings class
        self.check_normal_classes()
        self.check_noise()
        return self

    def check_noise(self) -> None:
        """``noise``: a well-formed corruption (see :mod:`aelab.data.noise`), for a one-modality family."""
        if self.noise is not None:
            parse_noise(self.noise)
            require(not has(model_class(self.model), MULTIMODAL),
                    f"--noise does not apply to --model {self.model}: a denoising run corrupts one modality; "
                    f"drop --noise or train a one-modality model (dense, conv, sparse, vae, conv-vae)")

    def check_normal_classes(self) -> None:
        """``normal_classes``: a non-empty spec of one-modality data (checked against the data's classes when
        it is loaded: :func:`aelab.data.anomaly.parse_classes`)."""
        if self.normal_classes is not None:
            require(self.normal_classes.strip() != "",
                    "normal_classes is empty; name the normal classes like --normal-classes 3, 0-4 or 2,5,8")
            require(not has(model_class(self.model), MULTIMODAL),
                    f"--normal-classes does not apply to --model {self.model}: anomaly detection by normal classes "
                    f"trains a one-modality model (dense, conv, sparse, vae, conv-vae)")

    def data_options(self) -> dict:
        """The own-data options given (load_dataset's keyword arguments for a path), with the run's seed."""
        given = {k: getattr(self, k) for k in DATA_OPTIONS if getattr(self, k) not in (None, False)}
        if "image_size" in given:
            given["image_size"] = tuple(given["image_size"])
        return {**given, "seed": self.seed}

    def check_data_options(self) -> None:
        given = [k for k in DATA_OPTIONS if getattr(self, k) not in (None, False)]
        require(not given or self.dataset not in DATASETS,
                f"--{given[0].replace('_', '-') if given else ''} applies to your own data (--dataset PATH), not to "
                f"the named dataset {self.dataset}; drop it")
        if self.test_fraction is not None:
            require(math.isfinite(self.test_fraction) and 0 < self.test_fraction < 1,
                    f"test_fraction must lie strictly between 0 and 1, got {self.test_fraction}; try --test-fraction 0.2")
        if self.image_size is not None:
            require(len(self.image_size) == 2 and all(v >= 1 for v in self.image_size),
                    f"image_size takes a height and a width like 28,28, got {self.image_size}")
        require(self.channels in (None, 1, 3), f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        require(self.impute in (None, "mean", "median"), f"impute must be 'mean' or 'median', got '{self.impute}'")

    @property
    def validation_fraction(self) -> float:
        """The share of the training rows held out for validation: val_fraction, or 0.1 with early stopping."""
        if self.val_fraction is not None:
            return self.val_fraction
        return 0.1 if self.patience is not None else 0.0

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "RunConfig":
        """Build from a mapping, checking every key and type; unknown keys get the closest valid one."""
        return cls(**coerce_fields(cls, values, source)).validate()

    def save(self, path: str | Path) -> None:
        payload = {"format_version": FORMAT_VERSION, **self.to_dict()}
        atomic_write_text(Path(path), json.dumps(payload, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """Read a ``config.json`` of a run folder, or a user's TOML/JSON config file."""
        values = read_config_file(path)
        version = values.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise AelabError(f"{path} was written by run-folder format {version}; this aelab reads format "
                             f"{FORMAT_VERSION}: use a matching aelab version or retrain")
        return cls.from_dict(values, source=str(path))


def read_config_file(path: str | Path) -> dict:
    """Parse a TOML or JSON file into a dict; a missing or malformed file is an AelabError."""
    path = Path(path)
    if not path.is_file():
        raise AelabError(f"config file {path} does not exist; check the path")
    text = path.read_bytes()
    try:
        if path.suffix.lower() == ".toml":
            values = tomllib.loads(text.decode("utf-8"))
        else:
            values = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSON/TOML decode errors are ValueErrors
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        first = "nested too deeply" if isinstance(exc, RecursionError) else first_line(exc, 10_000)
        raise AelabError(f"config file {path} is not valid {kind}: {first}") from None
    if not isinstance(values, dict):
        raise AelabError(f"config file {path} must hold a table of settings, not {type(values).__name__}")
    return values


# Names people reach for from other libraries, and the setting they mean.
ALIASES = {"learning_rate": "lr", "latent_size": "latent_dim", "latent": "latent_dim", "z_dim": "latent_dim",
           "bs": "batch_size", "hidden": "hidden_dims", "hidden_sizes": "hidden_dims", "n_epochs": "epochs",
           "num_epochs": "epochs", "rho": "target_sparsity", "topk": "k"}


def coerce_fields(cls, values: dict, source: str) -> dict:
    """Check names and types of ``values`` against the dataclass ``cls``; return clean kwargs."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    clean = {}
    for key, value in values.items():
        norm = str(key).replace("-", "_")
        if norm not in hints:
            hint = f" (did you mean '{ALIASES[norm]}'?)" if norm in ALIASES else closest(norm, names)
            raise AelabError(f"unknown setting {str(key)!r} in {source}{hint}; "  # repr: a key may hold a newline
                             f"valid settings: {', '.join(names)}")
        clean[norm] = _coerce(norm, value, hints[norm], source)
    return clean


def _coerce(name: str, value, hint, source: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    optional = origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args
    if optional:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = AelabError(f"setting '{name}' in {source} must be {_describe(hint)}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin is list and args == (str,):  # "id,timestamp" from a flag or a TOML string, or a list of names
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad
        return list(value)
    if origin is list:
        if isinstance(value, str):  # "256,128" from a flag or a TOML string
            try:
                value = [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise bad from None
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad
        return list(value)
    return value


def _describe(hint) -> str:
    if typing.get_origin(hint) is list and typing.get_args(hint) == (str,):
        return "a list of names like id,timestamp"
    if typing.get_origin(hint) is list:
        return "a list of integers like 256,128"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def check_file_paths(values: dict, source: str | Path) -> dict:
    """Refuse an ``out`` in a settings file that would make aelab write outside the current folder or the
    file's own folder (``../../x``, ``/etc``): a file may come from someone else; ``--out`` is the user's own."""
    out = values.get("out")
    if isinstance(out, str) and out:
        target = os.path.abspath(out)  # lexical: a symlink the user made is theirs to follow
        homes = [os.path.abspath("."), os.path.dirname(os.path.abspath(source))]
        if not any(_inside(target, h) for h in homes):
            raise AelabError(f"'out = {out}' in {source} points outside the current folder and the file's folder; "
                             f"aelab does not write there for a settings file: pass --out on the command line")
    return values


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives on Windows
        return False


def default_out(cfg: RunConfig, root: str | Path = "runs") -> Path:
    """A fresh run folder name: runs/<model>-<dataset>, then -2, -3, ... if taken."""
    root = Path(root)
    # a dataset by name, or a file or folder of the user's own: its name without the extension
    dataset = cfg.dataset if cfg.dataset in DATASETS else (Path(cfg.dataset.rstrip("/\\")).stem or "data")
    base = f"{cfg.model}-{dataset}"
    candidate, n = root / base, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{base}-{n}"
    return candidate
