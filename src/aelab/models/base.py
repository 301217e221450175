"""What every autoencoder shares: the named output, the verbs, input checks and the reconstruction term."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..data.anomaly import apply_normal_classes
from ..data.datasets import load_dataset
from ..errors import AelabError, closest
from ..losses import reconstruction_loss, to_output
from ..modality import FEATURES, IMAGE, Modality


# ------------------------------------------------------------------ capabilities
# What a model can do beyond the verbs every model has. A model class declares its set in ``capabilities``
# (an instance may narrow it, e.g. a multimodal model whose fusion has no prior); the layers above ask
# :func:`has`, never a model's name.
GENERATIVE = "generative"  # sample(n): draws from a prior
VARIATIONAL = "variational"  # posterior(x): a distribution object (sample, mode, kl, log_prob), log_likelihood
SPARSE = "sparse"  # a sparse code with per-unit firing statistics (dead units)
MULTIMODAL = "multimodal"  # built from several modalities: encodes any non-empty subset of them
CAPABILITIES = (GENERATIVE, VARIATIONAL, SPARSE, MULTIMODAL)


def has(model, capability: str) -> bool:
    """True when ``model`` (an instance or a model class) declares ``capability`` (one of CAPABILITIES)."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; one of {', '.join(CAPABILITIES)}")
    return capability in getattr(model, "capabilities", ())


class AEOutput:
    """What ``forward`` returns. The trainer reads ``loss`` and logs every entry of ``terms`` (named scalars:
    ``recon``, ``kl``, ... for one modality; ``recon/image``, ``recon/text``, ... for several).

    ``recons`` is the reconstruction of every modality in input space, ``{modality: tensor}``; ``recon`` is the
    one of ``modality`` (the model's main modality). A one-modality model gives ``logits`` instead, and the
    reconstruction is computed from them on first access, so a training step, which never reads it, does not
    pay for a sigmoid over every pixel.
    """

    __slots__ = ("loss", "z", "terms", "logits", "output", "modality", "_recons")

    def __init__(self, loss: torch.Tensor, recons: dict | None = None, z: torch.Tensor | None = None,
                 terms: dict[str, torch.Tensor] | None = None, logits: torch.Tensor | None = None,
                 output: str = "linear", modality: str = IMAGE):
        if recons is None and logits is None:
            raise ValueError("AEOutput needs recons or logits")
        self.modality = modality  # the main modality: the one ``recon`` is about
        self.loss = loss  # scalar to minimise
        self.z = z  # the code the decoder received, (B, latent_dim)
        self.terms = dict(terms or {})  # named loss terms (scalars)
        self.logits = logits  # one-modality models: the decoder output before the output function
        self.output = output  # "sigmoid" or "linear": how logits become the reconstruction
        self._recons = None if recons is None else dict(recons)

    @property
    def recons(self) -> dict:
        """The reconstruction of every modality, ``{modality: tensor}``."""
        if self._recons is None:
            self._recons = {self.modality: to_output(self.logits, self.output)}
        return self._recons

    @property
    def recon(self) -> torch.Tensor:
        """The reconstruction of the main modality (same shape as its input)."""
        return self.recons[self.modality]


def require(condition: bool, message: str) -> None:
    """Raise AelabError(message) unless ``condition``: one line per rule in the settings' checks."""
    if not condition:
        raise AelabError(message)


class SettingsBase:
    """What every model family's settings dataclass answers to (the registry and the run config use only this):
    ``names``, ``build`` from keyword values, ``check_fields`` (each value alone), ``check_together`` (rules
    across fields), ``validate`` (both) and ``to_dict``. A family whose checks are all per-field may implement
    ``validate`` alone."""

    def check_fields(self):
        return self.validate()

    def check_together(self):
        return self

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls, model: str, values: dict):
        """Settings from keyword values; an unknown name is an AelabError naming the valid ones."""
        names = cls.names()
        for key in values:
            require(key in names, f"model '{model}' takes no setting '{key}'{closest(key, names)}; "
                               f"it takes: {', '.join(names)}")
        return cls(**{k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()})

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class AESettings(SettingsBase):
    """What every single-modality autoencoder is built from. Each family subclasses it next to its model,
    with its own defaults and fields; ``check_fields`` judges each value alone, ``check_together`` the rules
    across fields, and ``validate`` both: the one place a model's settings are validated (the run config
    calls the same checks for its flags)."""

    latent_dim: int = 32  # size of the code z
    hidden_dims: list[int] | None = None  # hidden layer sizes (dense) or channels (conv); None = the family's default
    loss: str | None = None  # reconstruction loss: "mse" or "bce"; None = the family's default
    output: str = "sigmoid"  # "sigmoid" for data in [0, 1] (images), "linear" for unbounded features (from the data)
    weight_init: str = "he"  # encoder weights: "he" (Kaiming normal) or "torch" (PyTorch's default)

    def check_fields(self) -> "AESettings":
        require(self.latent_dim is None or self.latent_dim >= 1,
             f"latent_dim must be at least 1, got {self.latent_dim}; pass --latent-dim 32, say")
        if self.hidden_dims is not None:
            require(all(h >= 1 for h in self.hidden_dims),  # [] = no hidden layer (a linear encoder and decoder)
                 f"hidden_dims must be positive sizes like 256,128, got {self.hidden_dims}")
        require(self.loss in (None, "mse", "bce"), f"loss must be 'mse' or 'bce', got '{self.loss}'")
        require(self.output in ("sigmoid", "linear"), f"output must be 'sigmoid' or 'linear', got '{self.output}'")
        require(self.weight_init in WEIGHT_INITS, f"weight_init must be 'he' or 'torch', got '{self.weight_init}'")
        return self

    def check_together(self) -> "AESettings":
        require(not (self.loss == "bce" and self.output != "sigmoid"),
             "the bce loss needs data in [0, 1]; use --loss mse for unbounded features")
        return self

    def validate(self) -> "AESettings":
        return self.check_fields().check_together()


class BaseAutoencoder(nn.Module):
    """The protocol every model follows; the trainer, evaluation, the predictor, the reports and the server use
    nothing else (a user's model registered with ``aelab.register_model`` follows it too).

    - ``forward(batch)``: a batch ``{modality: tensor}`` -> :class:`AEOutput` (``loss``, named ``terms``, ``z``).
      The one-modality families also take ``forward(noisy, target=clean)``: the loss scores the reconstruction
      of ``noisy`` against ``clean`` (a denoising autoencoder's step, ``--noise``).
    - ``encode(x)``: the code the decoder receives, a tensor (B, latent_dim), for ``x`` a batch mapping (a
      multimodal model: any non-empty subset of its modalities) or a tensor of the main modality.
    - ``decode(z, modality=None)``: codes (B, latent_dim) -> that modality's output (default: the main one);
      ``decode_all(z)``: every modality, ``{modality: tensor}``; ``reconstruct(x)``: decode(encode(x)).
    - ``interpolate(z1, z2, steps)``: codes on the line between two codes.
    - capabilities (:func:`has`): GENERATIVE models add ``sample(n, generator=None, modality=None)``;
      VARIATIONAL ones ``posterior(x)``, a distribution with ``sample``, ``mode``, ``kl`` and ``log_prob``.
    - hooks the trainer calls: ``set_progress(epochs_done)`` (schedules such as KL warm-up) and
      ``init_from_data(batch)`` (before the first step of a fresh run); both do nothing unless overridden.

    A family is built from the modalities of the data (``from_modalities``) and its ``Settings`` dataclass.
    """

    name = "autoencoder"
    capabilities: frozenset = frozenset()  # what the family can do beyond the verbs: see CAPABILITIES
    Settings: type = None  # the family's settings dataclass (a SettingsBase)
    training_defaults: dict = {}  # RunConfig values the family is measured with, used unless the user gives them
    training_threads: int | None = None  # intra-op CPU threads while training (a family of small kernels wants 1); None = every available core
    data_settings: tuple = ()  # RunConfig fields about the data that this family alone reads (e.g. modalities)
    latent_dim: int
    modalities: dict  # {modality name: Modality}

    @classmethod
    def from_modalities(cls, modalities: dict, **settings) -> "BaseAutoencoder":
        """The family's model for data of these modalities (``{name: Modality}``), built from keyword settings."""
        raise NotImplementedError

    @classmethod
    def load_data(cls, cfg):
        """The :class:`~aelab.data.Dataset` a run of this family trains and is evaluated on, from its config
        alone (``cfg.dataset``, ``cfg.data_dir``, ...): deterministic, so evaluation sees the rows training had."""
        data = load_dataset(cfg.dataset, cfg.data_dir, **cfg.data_options())
        return apply_normal_classes(data, cfg.normal_classes)  # --normal-classes: those classes' train rows alone

    @classmethod
    def settle_config(cls, values: dict) -> dict:
        """RunConfig values the family decides from the environment when the user left them unset (e.g. which
        modalities a multimodal run uses); returns only the values it fills in."""
        return {}

    @property
    def main_modality(self) -> str:
        """The modality shown and decoded by default: the image when there is one, else the first."""
        return IMAGE if IMAGE in self.modalities else next(iter(self.modalities))

    def as_batch(self, x) -> dict:
        """``x`` as a batch mapping: a mapping as it is, a tensor as the main modality's rows."""
        return dict(x) if isinstance(x, Mapping) else {self.main_modality: x}

    def encode(self, x) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decode_all(self, z: torch.Tensor) -> dict:
        """Codes (B, latent_dim) -> ``{modality: output}`` for every modality the model writes."""
        return {m: self.decode(z, m) for m in self.modalities}

    def codes(self, x) -> torch.Tensor:
        """The same as :meth:`encode` (the name older code used)."""
        return self.encode(x)

    def reconstruct(self, x, modality: str | None = None) -> torch.Tensor:
        """decode(encode(x)): ``modality`` (default: the main one) from the code of ``x``."""
        return self.decode(self.encode(x), modality)

    @staticmethod
    def interpolate(z1: torch.Tensor, z2: torch.Tensor, steps: int = 10) -> torch.Tensor:
        """(steps, latent_dim) codes evenly spaced on the line from code ``z1`` to ``z2`` (each (D,) or (1, D)),
        both ends included; ``decode`` them for the outputs."""
        z1, z2 = z1.reshape(1, -1), z2.reshape(1, -1)
        t = torch.linspace(0, 1, steps, device=z1.device, dtype=z1.dtype)[:, None]
        return (1 - t) * z1 + t * z2

    def sample(self, n: int, generator: torch.Generator | None = None, modality: str | None = None) -> torch.Tensor:
        raise AelabError(f"the {self.name} model has no prior to sample from; train a vae or conv-vae")

    def set_progress(self, epochs_done: float) -> None:
        """Called by the trainer before each step with the fractional epochs done (schedules); nothing here."""

    def init_from_data(self, batch) -> None:
        """Called once before the first step of a fresh run with training rows; nothing here."""


class Autoencoder(BaseAutoencoder):
    """Base class of the one-modality families: subclasses build ``encoder``/``decoder`` layers and implement
    ``_encode`` (input tensor -> code) and ``decode_logits`` (code -> logits).

    A model is built from its family's settings (``Settings``, validated once here), given as ``settings=``
    or as keyword values. ``output`` is "sigmoid" for data in [0, 1] (images) and "linear" for unbounded
    features.
    """

    default_loss = "mse"
    Settings: type[AESettings] = AESettings

    def __init__(self, input_shape=(1, 28, 28), settings: AESettings | None = None, **kwargs):
        super().__init__()
        s = (settings or self.Settings.build(self.name, kwargs)).validate()
        # a copy that records what the model is built with: the family's defaults filled in (families fill
        # in their layer sizes), so config.json and the spec say exactly what was built
        self.settings = s = dataclasses.replace(s, loss=s.loss or self.default_loss)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.latent_dim = int(s.latent_dim)
        self.loss_kind = s.loss
        self.output = s.output
        self.weight_init = s.weight_init
        require(not (self.loss_kind == "bce" and self.output != "sigmoid"),
             "the bce loss needs data in [0, 1]; use --loss mse for unbounded features")

    @classmethod
    def from_modalities(cls, modalities: dict, **settings) -> "Autoencoder":
        """The model for data of one modality: its shape; its values in [0, 1] ("bernoulli") give a sigmoid
        output, unbounded ones ("gaussian") a linear output."""
        require(len(modalities) == 1, f"the {cls.name} model reads one modality, but the data holds "
                                   f"{', '.join(modalities)}; train --model multimodal on paired data")
        (spec,) = modalities.values()
        settings.setdefault("output", "sigmoid" if spec.likelihood == "bernoulli" else "linear")
        return cls(input_shape=tuple(spec.shape), **settings)

    def init_weights(self) -> None:
        """Called by each model once its layers exist. "he": the encoder's layers get Kaiming-normal weights
        (:func:`he_init`), so the code keeps the input's scale through the ReLU layers instead of shrinking
        by ~6x per layer as under PyTorch's default; the decoder keeps PyTorch's smaller default, so with
        data init it starts close to the mean image. "torch": PyTorch's default everywhere. What it changed
        on full MNIST is measured in the README (Models)."""
        if self.weight_init == "he":
            he_init(self.encoder)

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    @property
    def modality(self) -> str:
        """The one modality this model reads: "image" for (C, H, W) inputs, "features" for anything else."""
        return IMAGE if len(self.input_shape) == 3 else FEATURES

    @property
    def modalities(self) -> dict[str, Modality]:
        """``{modality: spec}``: one entry, the input this model was built for and its decoder's likelihood."""
        likelihood = "bernoulli" if self.loss_kind == "bce" else "gaussian"
        return {self.modality: Modality(self.modality, self.input_shape, "float32", likelihood)}

    def input_of(self, x) -> torch.Tensor:
        """The tensor this model reads from ``x``: a batch mapping's entry for its modality, or ``x`` itself."""
        if isinstance(x, Mapping):
            if self.modality not in x:
                raise AelabError(f"{self.name} model reads the modality '{self.modality}' but the batch holds "
                                 f"{', '.join(map(repr, x)) or 'nothing'}; give it {self.modality} data")
            return x[self.modality]
        return x

    # ---------------------------------------------------------------- verbs
    def check_input(self, x) -> torch.Tensor:
        """The input tensor of ``x`` (a batch mapping or a tensor), with a clear error for data of the wrong
        shape instead of a matmul error deep inside."""
        x = self.input_of(x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise AelabError(f"{self.name} model was built for inputs of shape {self.input_shape} but got "
                             f"{tuple(x.shape[1:])}; build the model for this data or reshape the data")
        return x

    def encode(self, x) -> torch.Tensor:
        """(B, latent_dim): the code the decoder receives for ``x`` (a batch mapping or an input tensor)."""
        return self._encode(self.check_input(x))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """Codes (B, latent_dim) to reconstructions in input space."""
        if modality not in (None, self.modality):
            raise AelabError(f"the {self.name} model writes {self.modality} only, not {modality}")
        return to_output(self.decode_logits(z), self.output)

    def output_bias(self) -> torch.Tensor | None:
        """The bias of the decoder's last layer (per output value for a linear layer, per channel for a
        convolution), or None when it has none."""
        layers = [m for m in self.decoder.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
        return layers[-1].bias if layers else None

    @torch.no_grad()
    def init_from_data(self, x) -> None:
        """Start the decoder at the mean of ``x`` (training inputs, (N, *input_shape)): its output bias becomes
        the mean input value (per output value, or per channel for a convolutional decoder), through the logit
        for a sigmoid output. Early steps then learn how inputs differ from the mean image instead of first
        finding it (the IWAE code of Burda et al. 2016 initialises its Bernoulli decoder this way; what it
        changed is measured in the README, Models). The trainer calls this on a fresh run unless ``data_init``
        is off."""
        x = self.input_of(x)
        bias = self.output_bias()
        if bias is None or x.shape[0] == 0:
            return
        x = x.to(bias.device, torch.float32)
        if bias.numel() == self.input_size:
            mean = x.mean(0).flatten()
        elif bias.numel() == self.input_shape[0] and x.dim() > 2:
            mean = x.transpose(0, 1).flatten(1).mean(1)  # per channel
        else:
            return
        if self.output == "sigmoid":
            mean = mean.clamp(1e-3, 1 - 1e-3)
            mean = torch.log(mean) - torch.log1p(-mean)
        bias.copy_(mean.to(bias.dtype))

    def recon_term(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(logits, x, self.loss_kind, self.output)

    def output_of(self, loss, z, terms, logits) -> AEOutput:
        """The named output of this model's forward pass."""
        return AEOutput(loss=loss, z=z, terms=terms, logits=logits, output=self.output, modality=self.modality)

    def target_of(self, x: torch.Tensor, target) -> torch.Tensor:
        """What the reconstruction is scored against: the clean ``target`` (a batch mapping or a tensor) of a
        denoising step, or the input ``x`` itself when there is none."""
        return x if target is None else self.check_input(target)

    def forward(self, x, target=None) -> AEOutput:
        x = self.check_input(x)
        z = self._encode(x)
        logits = self.decode_logits(z)
        rec = self.recon_term(logits, self.target_of(x, target))
        return self.output_of(rec, z, {"recon": rec}, logits)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model.eval()`` for the duration of a ``with`` block, then the mode it had (also after an error)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


WEIGHT_INITS = ("he", "torch")


def fan_in(layer: nn.Module) -> float:
    """The inputs that each output value of ``layer`` sums: in_features, in_channels x kernel area for a
    convolution, and in_channels x kernel area / stride area for a transposed one (each output value
    receives only the taps that land on it)."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    area = math.prod(layer.kernel_size)
    if isinstance(layer, nn.ConvTranspose2d):
        return layer.in_channels * area / math.prod(layer.stride)
    return layer.in_channels // layer.groups * area


@torch.no_grad()
def he_init(module: nn.Module) -> None:
    """Kaiming-normal weights (He et al. 2015, "Delving deep into rectifiers") for every linear and
    convolution layer in ``module``: std sqrt(2 / fan_in) where a ReLU follows the layer in its
    ``nn.Sequential``, sqrt(1 / fan_in) (LeCun) where none does (a code or logits layer); biases zero."""
    for parent in module.modules():
        children = list(parent.children())
        for i, layer in enumerate(children):
            if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                gain = 2.0 if i + 1 < len(children) and isinstance(children[i + 1], nn.ReLU) else 1.0
                layer.weight.normal_(0.0, math.sqrt(gain / fan_in(layer)))
                if layer.bias is not None:
                    layer.bias.zero_()


def mlp(sizes: list[int], final_activation: bool = False) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
