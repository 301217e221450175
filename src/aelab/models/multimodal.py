"""One latent space for image, sound and text: a multimodal autoencoder with three ways to fuse modalities.

Each modality has its own encoder and decoder, chosen from its :class:`~aelab.modality.Modality` spec:

- images (C, H, W): the convolutional blocks of :mod:`aelab.models.conv`, Bernoulli (or Gaussian) likelihood;
- frame sequences (T, F), e.g. MFCCs: 1-D convolutions over time, Gaussian likelihood with unit variance on
  normalised features (half the squared error, summed per recording);
- text (L,) of symbol ids (0 = padding): embedding + 1-D convolutions + max over positions (a word is found
  wherever it stands); decoded by a GRU conditioned on the code (greedy at generation time) or by per-position
  logits; categorical likelihood summed over the symbols and the first padding position (the end of the word).

Fusion (``settings.fusion``):

- ``"poe"``: product of Gaussian experts with a N(0, I) prior expert, MVAE (Wu & Goodman 2018, "Multimodal
  generative models for scalable weakly-supervised learning"), trained with the paper's sub-sampled objective
  without its random-subset terms: the ELBO of the joint posterior (reconstructing every modality) plus the
  ELBO of each single modality's posterior (reconstructing that modality).
- ``"moe"``: mixture of experts, MMVAE (Shi et al. 2019, "Variational mixture-of-experts autoencoders for
  multi-modal deep generative models"), the stratified ELBO of the authors' ``m_elbo_naive``
  (github.com/iffsid/mmvae, objectives.py): for each modality m a code z_m ~ q(z|x_m) reconstructs EVERY
  modality, minus KL(q(z|x_m) || p(z)), averaged over m; Gaussian experts and one sample instead of their
  Laplace experts and K-sample DReG bound.
- ``"shared"``: a deterministic shared code, the average of the codes of the modalities present, trained with
  modality dropout and cross-reconstruction in the manner of the bimodal deep autoencoder of Ngiam et al. 2011
  ("Multimodal deep learning", ICML), which zeroes one modality's input for part of the training set: here each
  modality is left out of the average with probability ``dropout`` (at least one kept per sample) and every
  modality is reconstructed from what is left.

The default is ``moe``: of the three it both translates between modalities and retrieves across them; ``shared``
translates as well but its modalities' codes drift apart, and ``poe`` translates from one modality poorly while
its joint code decodes well (the weakness of MVAE's single-modality inference that Shi et al. 2019 report). The
numbers are measured by benchmarks/multimodal.py and kept in one place: benchmarks/README.md, "Multimodal".

Alignment (``settings.align_weight``, any fusion): a symmetric InfoNCE term (CLIP's, Radford et al. 2021) between
the codes each modality gives the same items (the experts' means for poe and moe, the codes for shared), averaged
over the pairs of modalities, with logits -(squared Euclidean distance) / ``align_temperature``: the distance that
retrieval ranks by. The ELBOs alone leave the modalities' codes half aligned: on full MNIST + FSDD + text, moe
retrieves the right digit first, but its mean average precision stays low for the pairs with audio or text as
query or gallery, since each modality's codes sit apart along a few directions; the term lifts every ordered pair
(measured for issue 21: benchmarks/README.md, "Multimodal"). A weight of 0 turns it off and leaves
each fusion's objective exactly as above.

Likelihood weighting: each modality's log-likelihood is scaled by (values in the largest modality) / (values
in this one), as MMVAE's ``llik_scaling`` does for MNIST-SVHN (image 784 values, sound 32 x 13, text 16:
weights 1, 1.9 and 49); ``settings.weights`` overrides it per modality.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..data.multimodal import MODALITIES, check_modalities, find_fsdd, load_multimodal
from ..errors import AelabError, closest
from ..losses import at_least_float32
from ..modality import Modality
from .base import (GENERATIVE, MULTIMODAL, VARIATIONAL, WEIGHT_INITS, AEOutput, BaseAutoencoder, SettingsBase, he_init,
                   model_device, require)
from .conv import ConvDecoder, ConvEncoder, check_conv_shape
from .vae import DiagonalGaussian

FUSIONS = ("poe", "moe", "shared")
TEXT_DECODERS = ("gru", "mlp")
# The optimisation this family is measured with (benchmarks/multimodal.py; its numbers: benchmarks/README.md)
# 3 epochs, not 5: with one thread (TRAIN_THREADS) an epoch takes about 45 s of one core; coherence is about flat
# over 3, 5 and 8 epochs while retrieval slips (issue 21; benchmarks/README.md, "Multimodal")
TRAIN_DEFAULTS = {"epochs": 3, "batch_size": 256, "lr": 2e-3}
TRAIN_THREADS = 1  # intra-op threads while training (see MultimodalAE.training_threads)
# The contrastive term's default weight and temperature. Measured on full MNIST + FSDD + text, one epoch, seed 0:
# retrieval mAP over the six ordered pairs 0.67-0.91 without it, 0.88-0.95 at weight 3, 0.90-0.98 at 10 and
# 0.93-0.97 at 30; 30 costs recall@1 and coherence after 3 epochs (image->audio recall@1 0.89, audio->image
# coherence 0.95), 10 keeps them (0.95, 0.97). The numbers: benchmarks/README.md, "Multimodal".
ALIGN_WEIGHT = 10.0
ALIGN_TEMPERATURE = 1.0

@dataclass
class MultimodalSettings(SettingsBase):
    latent_dim: int = 32  # size of the shared code
    fusion: str = "moe"  # "poe" (MVAE), "moe" (MMVAE) or "shared" (deterministic, modality dropout)
    beta: float = 1.0  # weight of the KL term (poe, moe)
    kl_warmup: int = 0  # epochs over which the KL weight grows linearly from 0 to beta (0: none)
    weights: dict | None = None  # {modality: likelihood weight}; None (or a missing name): values-count scaling
    image_channels: list = field(default_factory=lambda: [16, 32])  # the two conv widths of the image encoder/decoder
    audio_channels: list = field(default_factory=lambda: [32, 64])  # the widths of the 1-D convolutions over frames
    text_embed: int = 32  # size of a symbol's embedding
    text_hidden: int = 64  # text encoder width and decoder GRU (or MLP) width
    text_decoder: str = "gru"  # "gru" (autoregressive, greedy decoding) or "mlp" (per-position logits)
    dropout: float = 0.5  # shared: probability that a modality is left out of the fused code in training
    weight_init: str = "he"  # encoders' weights: "he" (Kaiming normal before a ReLU) or "torch" (PyTorch's default)
    align_weight: float = ALIGN_WEIGHT  # weight of the contrastive term between the modalities' codes (0: off)
    align_temperature: float = ALIGN_TEMPERATURE  # its logits are -(squared distance) / temperature

    def check_fields(self) -> "MultimodalSettings":
        require(self.latent_dim is not None and int(self.latent_dim) >= 1,
             f"latent_dim must be at least 1, got {self.latent_dim}; pass --latent-dim 32, say")
        require(self.fusion in FUSIONS,
             f"fusion must be one of {', '.join(FUSIONS)}, got '{self.fusion}'{closest(str(self.fusion), FUSIONS)}")
        require(isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta >= 0,
             f"beta must be >= 0 (a finite number), got {self.beta}")
        require(int(self.kl_warmup) >= 0, f"kl_warmup must be >= 0 epochs, got {self.kl_warmup}")
        require(self.weights is None or isinstance(self.weights, dict),
             f"weights maps a modality to its likelihood weight, e.g. {{'text': 50}}, got {self.weights!r}")
        for key, v in (self.weights or {}).items():
            require(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0,
                 f"the likelihood weight of '{key}' must be a finite number >= 0, got {v!r}")
        for name in ("image_channels", "audio_channels"):
            value = list(getattr(self, name))
            require(len(value) == 2 and all(int(c) >= 1 for c in value),
                 f"{name} takes two positive channel counts (e.g. 32,64), got {value}")
        for name in ("text_embed", "text_hidden"):
            require(int(getattr(self, name)) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        require(self.text_decoder in TEXT_DECODERS,
             f"text_decoder must be one of {', '.join(TEXT_DECODERS)}, got '{self.text_decoder}'")
        require(isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1,
             f"dropout is a probability in [0, 1), got {self.dropout}")
        require(self.weight_init in WEIGHT_INITS, f"weight_init must be 'he' or 'torch', got '{self.weight_init}'")
        require(isinstance(self.align_weight, (int, float)) and math.isfinite(self.align_weight)
                and self.align_weight >= 0,
                f"align_weight must be >= 0 (a finite number; 0 = off), got {self.align_weight}")
        require(isinstance(self.align_temperature, (int, float)) and math.isfinite(self.align_temperature)
                and self.align_temperature > 0, f"align_temperature must be > 0, got {self.align_temperature}")
        return self

    def validate(self) -> "MultimodalSettings":
        return self.check_fields().check_together()


# ------------------------------------------------------------------ likelihoods (negative log, per sample)
def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor, sample_dims: int) -> torch.Tensor:
    """-log Bernoulli(x; sigmoid(logits)) summed over the last ``sample_dims`` dims: (..., B, *S) -> (..., B).
    x in [0, 1] broadcasts over leading dims of logits (the binary cross-entropy of Kingma & Welling 2014, C.1)."""
    logits = at_least_float32(logits)
    dims = tuple(range(-sample_dims, 0))
    return F.softplus(logits).sum(dims) - (x * logits).sum(dims)


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, sample_dims: int) -> torch.Tensor:
    """-log N(x; mean, I) without the constant: half the squared error summed per sample, (..., B, *S) -> (..., B)."""
    return 0.5 * (at_least_float32(mean) - x).square().sum(tuple(range(-sample_dims, 0)))


def text_mask(ids: torch.Tensor) -> torch.Tensor:
    """Positions that count in the text likelihood: every symbol and the first padding (the end of the word).
    ids (B, L) int64 -> (B, L) bool."""
    pad = ids == 0
    return ~pad | (pad & (pad.long().cumsum(-1) == 1))


def categorical_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (..., B, L, V) against ids (B, L), summed over :func:`text_mask` -> (..., B)."""
    logits = at_least_float32(logits)
    ids = ids.expand(logits.shape[:-1])
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1), reduction="none").view(ids.shape)
    return (ce * text_mask(ids)).sum(-1)


def product_of_experts(means: torch.Tensor, logvars: torch.Tensor) -> DiagonalGaussian:
    """Gaussian experts (M, B, D) times a N(0, I) prior expert: precision-weighted (Wu & Goodman 2018, eq. 5)."""
    precision = torch.exp(-logvars.clamp(-30.0, 20.0))  # (M, B, D)
    total = 1.0 + precision.sum(0)  # the prior's precision is 1
    mean = (means * precision).sum(0) / total
    return DiagonalGaussian(mean, -torch.log(total))


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's loss, Radford et al. 2021) of paired codes a, b (B, D) -> (B,): row i of ``a``
    should pick row i of ``b`` among all rows of ``b``, and the other way round, with logits
    -||a_i - b_j||^2 / temperature (the Euclidean distance retrieval ranks by; no normalisation, so the
    codes' scale counts). log(B) when every code is the same; towards 0 as matched codes grow apart."""
    a, b = at_least_float32(a), at_least_float32(b)
    d2 = a.square().sum(1)[:, None] + b.square().sum(1)[None] - 2 * a @ b.T  # (B, B) squared distances
    logits = -d2 / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target, reduction="none")
                  + F.cross_entropy(logits.T, target, reduction="none"))


def alignment_loss(codes: torch.Tensor, temperature: float) -> torch.Tensor:
    """:func:`info_nce` averaged over every pair of modalities: codes (M, B, D) of the same B items -> (B,)."""
    pairs = [(i, j) for i in range(len(codes)) for j in range(i + 1, len(codes))]
    return sum(info_nce(codes[i], codes[j], temperature) for i, j in pairs) / len(pairs)


# ------------------------------------------------------------------ per-modality networks
class SequenceEncoder(nn.Module):
    """(B, T, F) frames -> (B, out): Conv1d over time (F -> c1, then two stride-2 c1 -> c2 -> c2), flatten, linear."""

    def __init__(self, shape, channels, out_features: int):
        super().__init__()
        t, f = shape
        c1, c2 = channels
        self.body = nn.Sequential(
            nn.Conv1d(f, c1, 3, padding=1), nn.ReLU(),  # (B, c1, T)
            nn.Conv1d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),  # (B, c2, T/2)
            nn.Conv1d(c2, c2, 4, stride=2, padding=1), nn.ReLU(),  # (B, c2, T/4)
            nn.Flatten(),
        )
        self.fc = nn.Linear(c2 * (t // 4), out_features)

    def forward(self, x):
        return self.fc(self.body(x.transpose(1, 2)))


class SequenceDecoder(nn.Module):
    """(B, latent) -> (B, T, F): linear to c2 x T/4, two stride-2 transposed Conv1d, a k=3 Conv1d to F."""

    def __init__(self, shape, channels, latent_dim: int):
        super().__init__()
        t, f = shape
        c1, c2 = channels
        self.grid = (c2, t // 4)
        self.fc = nn.Sequential(nn.Linear(latent_dim, c2 * (t // 4)), nn.ReLU())
        self.body = nn.Sequential(
            nn.ConvTranspose1d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),  # (B, c1, T/2)
            nn.ConvTranspose1d(c1, c1, 4, stride=2, padding=1), nn.ReLU(),  # (B, c1, T)
            nn.Conv1d(c1, f, 3, padding=1),  # (B, F, T)
        )

    def forward(self, z):
        return self.body(self.fc(z).view(-1, *self.grid)).transpose(1, 2)


class TextEncoder(nn.Module):
    """(B, L) ids -> (B, out): embedding, two Conv1d (k=3), max over positions, linear."""

    def __init__(self, vocab: int, embed: int, hidden: int, out_features: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, padding_idx=0)
        self.body = nn.Sequential(
            nn.Conv1d(embed, hidden, 3, padding=1), nn.ReLU(),  # (B, H, L)
            nn.Conv1d(hidden, hidden, 3, padding=1), nn.ReLU(),  # (B, H, L)
        )
        self.fc = nn.Linear(hidden, out_features)

    def forward(self, ids):
        h = self.body(self.embed(ids).transpose(1, 2))  # (B, H, L)
        return self.fc(h.amax(-1))


class TextDecoder(nn.Module):
    """(B, latent) -> (B, L, V) logits. "gru": a GRU whose input is the previous symbol's embedding beside a
    projection of the code, started from tanh(linear(code)); teacher-forced in training, greedy when
    generating. "mlp": one hidden layer to per-position logits (no dependence between positions)."""

    def __init__(self, length: int, vocab: int, embed: int, hidden: int, latent_dim: int, kind: str):
        super().__init__()
        self.length, self.vocab, self.kind = length, vocab, kind
        if kind == "mlp":
            self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, length * vocab))
            return
        self.embed = nn.Embedding(vocab + 1, embed)  # id ``vocab`` is the start symbol
        self.init = nn.Linear(latent_dim, hidden)
        self.cond = nn.Linear(latent_dim, embed)
        self.gru = nn.GRU(2 * embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, z, ids=None):
        """Logits (B, L, V): teacher-forced on ``ids`` (B, L) when given, else greedy."""
        if self.kind == "mlp":
            return self.net(z).view(-1, self.length, self.vocab)
        h = torch.tanh(self.init(z))[None]  # (1, B, H)
        cond = self.cond(z)[:, None]  # (B, 1, E)
        start = torch.full((z.shape[0], 1), self.vocab, dtype=torch.long, device=z.device)
        if ids is not None:
            prev = torch.cat([start, ids[:, :-1]], 1)  # (B, L)
            out, _ = self.gru(torch.cat([self.embed(prev), cond.expand(-1, self.length, -1)], -1), h)
            return self.head(out)  # (B, L, V)
        tok, steps = start, []
        for _ in range(self.length):
            out, h = self.gru(torch.cat([self.embed(tok), cond], -1), h)
            steps.append(self.head(out))  # (B, 1, V)
            tok = steps[-1].argmax(-1)
        return torch.cat(steps, 1)


def modality_kind(m: Modality) -> str:
    """"image", "sequence" or "text": which encoder and decoder a modality gets, from its shape and likelihood."""
    if m.likelihood == "categorical":
        if len(m.shape) != 1 or int(m.vocab) < 2:
            raise AelabError(f"categorical modality '{m.name}' needs shape (L,) and vocab >= 2, got shape "
                             f"{tuple(m.shape)} and vocab {m.vocab}")
        return "text"
    if m.likelihood not in ("bernoulli", "gaussian"):
        raise AelabError(f"modality '{m.name}' has unknown likelihood '{m.likelihood}'; use bernoulli, gaussian "
                         "or categorical")
    if len(m.shape) == 3:
        return "image"
    if len(m.shape) == 2 and m.shape[0] % 4 == 0 and m.shape[0] >= 4:
        return "sequence"
    raise AelabError(f"modality '{m.name}' of shape {tuple(m.shape)} fits no encoder; use images (C, H, W) or "
                     "frames (T, F) with T a multiple of 4")


# ------------------------------------------------------------------ the model
class MultimodalAE(BaseAutoencoder):
    """Per-modality encoders into one latent space and decoders out of it; see the module docstring.

    ``modalities`` maps a name ("image", "audio", "text", ...) to its :class:`Modality` (or its dict);
    ``settings`` (or keyword arguments building them) are a :class:`MultimodalSettings`.
    """

    name = "multimodal"
    capabilities = frozenset({MULTIMODAL, GENERATIVE, VARIATIONAL})  # fusion "shared" has no prior (see __init__)
    training_defaults = TRAIN_DEFAULTS  # what `aelab train --model multimodal` uses unless told otherwise
    # intra-op threads for training (aelab.device.training_threads): its kernels are small (batch 256, 32-wide codes,
    # 16-step GRU), so a second thread gains little alone and, beside another training, its spinning OpenMP
    # threads wait on each other (measured: benchmarks/README.md, Results, Multimodal)
    training_threads = TRAIN_THREADS
    data_settings = ("modalities", "audio_data")  # the RunConfig fields about paired data that this family reads
    Settings = MultimodalSettings

    def __init__(self, modalities: Mapping[str, Modality], settings: MultimodalSettings | None = None, **kwargs):
        super().__init__()
        if settings is not None and kwargs:
            raise AelabError("give the multimodal model either settings or keyword settings, not both")
        self.settings = (settings if settings is not None else self.Settings.build(self.name, kwargs)).validate()
        settings = self.settings
        self.modalities = {k: (m if isinstance(m, Modality) else Modality.from_dict(m))
                           for k, m in dict(modalities or {}).items()}
        if len(self.modalities) < 2:
            raise AelabError(f"the multimodal model needs at least two modalities, got "
                             f"{', '.join(self.modalities) or 'none'}; pass e.g. --modalities image,text")
        for key in self.settings.weights or {}:
            if key not in self.modalities:
                raise AelabError(f"weights name modality '{key}', which this model does not have; it has "
                                 f"{', '.join(self.modalities)}")
        self.latent_dim = int(settings.latent_dim)
        self.variational = settings.fusion != "shared"
        if not self.variational:  # a deterministic shared code: no posterior, no prior to sample from
            self.capabilities = frozenset({MULTIMODAL})
        self.kinds = {k: modality_kind(m) for k, m in self.modalities.items()}
        self.weights = self.likelihood_weights()
        self.kl_weight = float(settings.beta) if int(settings.kl_warmup) == 0 else 0.0
        width = 2 * self.latent_dim if self.variational else self.latent_dim  # (mean, logvar) or the code
        self.encoders = nn.ModuleDict({k: self.build_encoder(m, width) for k, m in self.modalities.items()})
        self.decoders = nn.ModuleDict({k: self.build_decoder(m) for k, m in self.modalities.items()})
        if settings.weight_init == "he":
            for enc in self.encoders.values():
                he_init(enc)  # Kaiming-normal before a ReLU, LeCun before the code, as Autoencoder.init_weights does
        # what rebuilds this model (the registry's build_model writes the same keys): Modality dicts and settings
        self.spec = {"name": self.name, "modalities": {k: m.to_dict() for k, m in self.modalities.items()},
                     "kwargs": self.settings.to_dict(), "settings": self.settings.to_dict()}

    @classmethod
    def from_modalities(cls, modalities: dict, **settings) -> "MultimodalAE":
        return cls(modalities, **settings)

    @classmethod
    def load_data(cls, cfg):
        """The paired digits of :func:`aelab.data.multimodal.load_multimodal` (deterministic under the run's seed)."""
        modalities = cfg.modalities or cls.settle_config(vars(cfg))["modalities"]
        return load_multimodal(cfg.dataset, modalities, audio_path=cfg.audio_data, data_dir=cfg.data_dir,
                               seed=cfg.seed)

    @classmethod
    def settle_config(cls, values: dict) -> dict:
        """The modalities of a run that names none: image,audio,text when the FSDD file is found
        (``audio_data``, ``AELAB_DATA_DIR/fsdd-mfcc/digits.npz``, the cache), else image,text."""
        if values.get("modalities"):
            return {"modalities": ",".join(check_modalities(values["modalities"]))}
        try:
            find_fsdd(values.get("audio_data"), values.get("data_dir"))
        except AelabError:
            return {"modalities": "image,text"}
        return {"modalities": ",".join(MODALITIES)}

    def build_encoder(self, m: Modality, width: int) -> nn.Module:
        s, kind = self.settings, self.kinds[m.name]
        if kind == "image":
            check_conv_shape(m.shape, list(s.image_channels))
            return ConvEncoder(m.shape, list(s.image_channels), width)
        if kind == "sequence":
            return SequenceEncoder(m.shape, list(s.audio_channels), width)
        return TextEncoder(int(m.vocab), int(s.text_embed), int(s.text_hidden), width)

    def build_decoder(self, m: Modality) -> nn.Module:
        s, kind = self.settings, self.kinds[m.name]
        if kind == "image":
            return ConvDecoder(m.shape, list(s.image_channels), self.latent_dim)
        if kind == "sequence":
            return SequenceDecoder(m.shape, list(s.audio_channels), self.latent_dim)
        return TextDecoder(m.shape[0], int(m.vocab), int(s.text_embed), int(s.text_hidden), self.latent_dim,
                           s.text_decoder)

    def likelihood_weights(self) -> dict[str, float]:
        """Per modality: the settings' weight, else (values in the largest modality) / (values in this one)."""
        sizes = {k: math.prod(m.shape) for k, m in self.modalities.items()}
        given = self.settings.weights or {}
        return {k: float(given.get(k, max(sizes.values()) / sizes[k])) for k in self.modalities}

    # ---------------------------------------------------------------- checks
    def check_input(self, batch, require_all: bool = True) -> None:
        """A one-line AelabError for a batch that is not {modality: tensor} of this model's modalities and shapes."""
        if not isinstance(batch, Mapping):
            raise AelabError(f"the multimodal model reads a dict {{modality: tensor}}, got {type(batch).__name__}")
        unknown = [k for k in batch if k not in self.modalities]
        if unknown:
            raise AelabError(f"unknown modality '{unknown[0]}'{closest(unknown[0], self.modalities)}; this model "
                             f"reads {', '.join(self.modalities)}")
        missing = [k for k in self.modalities if k not in batch]
        if not batch or (require_all and missing):
            raise AelabError(f"the batch lacks modality {', '.join(missing)}; training needs every one of "
                             f"{', '.join(self.modalities)}" if batch else "the batch holds no modality")
        sizes = {int(x.shape[0]) for x in batch.values()}
        if len(sizes) > 1:
            raise AelabError(f"the modalities of a batch have different numbers of rows {sorted(sizes)}; pair them")
        for k, x in batch.items():
            m = self.modalities[k]
            if tuple(x.shape[1:]) != tuple(m.shape):
                raise AelabError(f"modality '{k}' was built for samples of shape {tuple(m.shape)} but got "
                                 f"{tuple(x.shape[1:])}; build the model for this data")
            if self.kinds[k] == "text" and x.dtype not in (torch.int64, torch.int32):
                raise AelabError(f"modality '{k}' takes integer symbol ids, got {x.dtype}")
            if self.kinds[k] != "text" and not x.is_floating_point():
                raise AelabError(f"modality '{k}' takes float values (images in [0, 1]), got {x.dtype}; "
                                 "convert on the data side")

    # ---------------------------------------------------------------- encoding
    def experts(self, batch) -> dict[str, torch.Tensor]:
        """Each present modality's encoder output: (B, 2*latent) for poe/moe, (B, latent) for shared."""
        return {k: self.encoders[k](x) for k, x in batch.items() if k in self.encoders}

    def posterior(self, batch) -> DiagonalGaussian:
        """The fused posterior of the present modalities: poe, the product of their experts and the prior;
        moe, a Gaussian with the mixture's mean and variance (the mixture itself is not Gaussian)."""
        if not self.variational:
            raise AelabError("fusion 'shared' has a deterministic code, no posterior; use fusion poe or moe")
        out = torch.stack(list(self.experts(batch).values()))  # (M, B, 2*latent)
        means, logvars = out.chunk(2, -1)
        if self.settings.fusion == "poe":
            return product_of_experts(means, logvars)
        # moe: the mixture's mean and the variance of the equal-weight mixture (law of total variance)
        mean = means.mean(0)
        var = (logvars.exp() + means.square()).mean(0) - mean.square()
        return DiagonalGaussian(mean, var.clamp_min(1e-12).log())

    def encode(self, batch) -> torch.Tensor:
        """(B, latent) deterministic code from any non-empty subset of the modalities (a tensor is read as the
        main modality): the fused posterior's mean (poe: product of experts; moe: mean of the mixture) or the
        shared code (average of the codes)."""
        batch = self.as_batch(batch)
        self.check_input(batch, require_all=False)
        if not self.variational:
            return torch.stack(list(self.experts(batch).values())).mean(0)
        return self.posterior(batch).mean

    # ---------------------------------------------------------------- decoding
    def decode_logits(self, z: torch.Tensor, targets: Mapping | None = None) -> dict[str, torch.Tensor]:
        """Codes (..., latent) -> {modality: logits (..., *shape) for bernoulli, mean for gaussian, (..., L, V)
        for text}. Text is teacher-forced on ``targets[name]`` (B, L) when given (the leading dims of z are
        then samples of the same B rows), else greedy."""
        lead, flat = z.shape[:-1], z.reshape(-1, self.latent_dim)
        out = {}
        for k, dec in self.decoders.items():
            if self.kinds[k] == "text":
                ids = None if targets is None else targets[k].repeat(flat.shape[0] // targets[k].shape[0], 1)
                y = dec(flat, ids)
            else:
                y = dec(flat)
            out[k] = y.reshape(*lead, *y.shape[1:])
        return out

    def to_output(self, name: str, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output to data space: probabilities for bernoulli, the mean for gaussian, ids for text
        (argmax, with everything after the first padding set to padding)."""
        m = self.modalities[name]
        if m.likelihood == "bernoulli":
            return torch.sigmoid(logits)
        if m.likelihood == "gaussian":
            return logits
        ids = logits.argmax(-1)
        return ids * ((ids == 0).long().cumsum(-1) == 0)

    def decode(self, z: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """Codes (B, latent) -> one modality's output (default: the main one, the image): images in [0, 1],
        frames, text as int64 ids (B, L). Translation is ``decode(encode({"text": ids}), "image")``."""
        name = modality or self.main_modality
        if name not in self.decoders:
            raise AelabError(f"the multimodal model has no modality '{name}'{closest(name, self.modalities)}; it "
                             f"has {', '.join(self.modalities)}")
        dec, flat = self.decoders[name], z.reshape(-1, self.latent_dim)
        out = self.to_output(name, dec(flat, None) if self.kinds[name] == "text" else dec(flat))
        return out.reshape(*z.shape[:-1], *out.shape[1:])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, modality: str | None = None) -> torch.Tensor:
        """``n`` outputs of ``modality`` (default: the main one) decoded from codes drawn from the prior N(0, I)
        (poe, moe; drawn on the CPU, so a seeded generator gives the same codes on every device)."""
        if not self.variational:
            raise AelabError("fusion 'shared' has no prior to sample from; use fusion poe or moe to sample")
        z = torch.randn(n, self.latent_dim, generator=generator).to(model_device(self))
        return self.decode(z, modality)

    # ---------------------------------------------------------------- training
    def nll(self, name: str, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) of one modality per sample: logits (..., B, *S), x (B, *S) -> (..., B)."""
        m = self.modalities[name]
        if m.likelihood == "categorical":
            return categorical_nll(logits, x)
        if m.likelihood == "bernoulli":
            return bernoulli_nll(logits, x, len(m.shape))
        return gaussian_nll(logits, x, len(m.shape))

    def set_progress(self, epochs_done: float) -> None:
        """KL warm-up: the KL weight grows linearly from 0 to beta over ``kl_warmup`` epochs."""
        warmup = int(self.settings.kl_warmup)
        self.kl_weight = float(self.settings.beta) * (1.0 if warmup == 0 else min(1.0, epochs_done / warmup))

    @torch.no_grad()
    def init_from_data(self, batch) -> None:
        """Start the image decoders at the mean image (per channel, through the logit) and the frame decoders at
        the mean frame (per feature): early steps learn how samples differ from the mean (see Autoencoder)."""
        for k, x in batch.items():
            if k not in self.modalities or self.kinds[k] == "text" or x.shape[0] == 0:
                continue
            x = x.to(model_device(self), torch.float32)
            if self.kinds[k] == "image":
                bias = self.decoders[k].body[-1].bias
                mean = x.transpose(0, 1).flatten(1).mean(1)
            else:
                bias = self.decoders[k].body[-1].bias
                mean = x.flatten(0, 1).mean(0)
            if self.modalities[k].likelihood == "bernoulli":
                mean = mean.clamp(1e-3, 1 - 1e-3)
                mean = torch.log(mean) - torch.log1p(-mean)
            bias.copy_(mean.to(bias.dtype))

    def forward(self, batch) -> AEOutput:
        """The loss of the chosen fusion on a batch holding every modality; terms ``recon/<modality>`` (mean
        -log p per sample, unweighted) and ``kl`` (poe, moe)."""
        self.check_input(batch)
        return {"poe": self._poe, "moe": self._moe, "shared": self._shared}[self.settings.fusion](batch)

    def _weighted(self, nlls: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[k] * v for k, v in nlls.items())

    def _align(self, codes: torch.Tensor) -> torch.Tensor | None:
        """The contrastive term (B,) between each item's codes from its modalities (M, B, D), or None when
        ``align_weight`` is 0 (the loss is then the fusion's objective alone, computed as before)."""
        if not self.settings.align_weight:
            return None
        return alignment_loss(codes, float(self.settings.align_temperature))

    def _kl_weight(self) -> float:
        return self.kl_weight if self.training else float(self.settings.beta)

    def _poe(self, batch) -> AEOutput:
        # MVAE's subsampled ELBO: the joint posterior reconstructs every modality, and each single modality's
        # posterior (its expert times the prior) reconstructs itself
        names = list(batch)
        means, logvars = torch.stack(list(self.experts(batch).values())).chunk(2, -1)  # (M, B, latent) each
        joint = product_of_experts(means, logvars)
        z = joint.sample()
        logits = self.decode_logits(z, batch)
        nll = {k: self.nll(k, v, batch[k]) for k, v in logits.items()}  # (B,) each
        kl = joint.kl()
        loss = self._weighted(nll) + self._kl_weight() * kl
        for i, k in enumerate(names):
            q = product_of_experts(means[i:i + 1], logvars[i:i + 1])
            zi = q.sample()
            dec = self.decoders[k]
            own = dec(zi, batch[k]) if self.kinds[k] == "text" else dec(zi)
            kli = q.kl()
            loss = loss + self.weights[k] * self.nll(k, own, batch[k]) + self._kl_weight() * kli
            kl = kl + kli
        align = self._align(means)  # each modality's own expert means
        return self._output(loss, nll, kl, z, logits, align)

    def _moe(self, batch) -> AEOutput:
        # MMVAE's stratified ELBO (m_elbo_naive): a code from each modality's posterior reconstructs every modality
        means, logvars = torch.stack(list(self.experts(batch).values())).chunk(2, -1)  # (M, B, latent) each
        q = DiagonalGaussian(means, logvars)
        z = q.sample()  # (M, B, latent)
        logits = self.decode_logits(z, batch)
        nll = {k: self.nll(k, v, batch[k]) for k, v in logits.items()}  # (M, B) each
        kl = q.kl()  # (M, B)
        loss = (self._weighted(nll) + self._kl_weight() * kl).mean(0)
        nll = {k: v.mean(0) for k, v in nll.items()}
        own = {k: logits[k][i] for i, k in enumerate(batch)}  # each modality from its own expert's code
        return self._output(loss, nll, kl.mean(0), means.mean(0), own, self._align(means))

    def _shared(self, batch) -> AEOutput:
        # modality dropout (Ngiam et al. 2011): average the codes of a random non-empty subset per sample,
        # reconstruct every modality from it
        codes = torch.stack(list(self.experts(batch).values()))  # (M, B, latent)
        keep = torch.ones(codes.shape[:2], device=codes.device)
        if self.training and self.settings.dropout > 0:
            keep = (torch.rand_like(keep) >= self.settings.dropout).float()
            empty = keep.sum(0) == 0  # (B,): give each such sample one modality back, at random
            pick = torch.randint(codes.shape[0], (codes.shape[1],), device=codes.device)
            keep = torch.where(empty[None], F.one_hot(pick, codes.shape[0]).T.float(), keep)
        z = (codes * keep[..., None]).sum(0) / keep.sum(0)[:, None]  # (B, latent)
        logits = self.decode_logits(z, batch)
        nll = {k: self.nll(k, v, batch[k]) for k, v in logits.items()}
        return self._output(self._weighted(nll), nll, None, z, logits, self._align(codes))

    def _output(self, loss, nll, kl, z, logits, align=None) -> AEOutput:
        """``recon``: each modality in data space from the logits at hand (poe: the joint code; moe: the
        modality's own expert; shared: the fused code); text is the argmax of the teacher-forced logits.
        ``align`` (B,): the contrastive term, added to the loss with its weight."""
        terms = {f"recon/{k}": v.mean() for k, v in nll.items()}
        if kl is not None:
            terms["kl"] = kl.mean()
        if align is not None:
            loss = loss + float(self.settings.align_weight) * align
            terms["align"] = align.mean()
        with torch.no_grad():
            recon = {k: self.to_output(k, v.detach()) for k, v in logits.items()}
        return AEOutput(loss=loss.mean(), z=z, terms=terms, recons=recon, modality=self.main_modality)
