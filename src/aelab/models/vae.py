"""Variational autoencoders (Kingma & Welling 2014): dense (`vae`) and convolutional (`conv-vae`).

The encoder returns a :class:`DiagonalGaussian` posterior q(z|x) (``sample``, ``mode``, ``kl``,
``log_prob``); the decoder is Bernoulli by default (BCE with logits, summed per image) or Gaussian
with one learned variance (``loss="mse"``). The loss is the negative ELBO per image,
``-log p(x|z) + beta * KL(q(z|x) || p(z))``, with beta ramped from 0 over ``kl_warmup`` epochs.

Options for likelihood (each a settings field and a CLI flag):

- ``iwae_k`` K > 1: the IWAE bound with K samples per image (Burda et al. 2016, eq. 8) instead of the ELBO;
  ``iwae_gradient`` "dreg" gives the encoder the doubly reparameterized gradient (Tucker et al. 2019).
  KL warm-up and beta weight log p(z) - log q(z|x) inside each log-weight.
- ``prior`` "mog" (a learned mixture of Gaussians) or "vamp" (VampPrior, Tomczak & Welling 2018) instead of
  N(0, I); the KL is then the one-sample estimate log q(z|x) - log p(z). ``prior_log_prob(z)`` gives log p(z).
- ``hidden_block`` (dense ``vae``): "gated" (GatedDense, Dauphin et al. 2017, as in the VampPrior paper) or
  "residual" hidden layers instead of Linear + ReLU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import at_least_float32, gaussian_kl_standard, to_output
from .base import GENERATIVE, VARIATIONAL, AEOutput, AESettings, Autoencoder, mlp, model_device, require
from .conv import ConvDecoder, ConvEncoder, check_conv_shape

LOG_2PI = math.log(2 * math.pi)
IWAE_GRADIENTS = ("dreg", "reparam")  # the first is the default
PRIORS = ("normal", "mog", "vamp")
HIDDEN_BLOCKS = ("plain", "gated", "residual")
DEFAULT_COMPONENTS = {"mog": 10, "vamp": 500}  # vamp: the VampPrior paper's K on MNIST


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) over codes of shape (B, D)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)  # keeps exp() finite early in training

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, n: int | None = None) -> torch.Tensor:
        """Reparameterised draw(s): (B, D), or (n, B, D) when ``n`` is given; gradients reach mean and logvar."""
        shape = self.mean.shape if n is None else (n, *self.mean.shape)
        return self.mean + self.std * torch.randn(shape, device=self.mean.device, dtype=self.mean.dtype)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, (B,), in closed form."""
        return gaussian_kl_standard(self.mean, self.logvar)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) summed over the code dimensions; z is (..., B, D) -> (..., B)."""
        return (-0.5 * ((z - self.mean).square() / self.logvar.exp() + self.logvar + LOG_2PI)).sum(-1)

    def detached(self) -> "DiagonalGaussian":
        """The same distribution with its parameters cut from the graph (gradients reach log_prob via z only)."""
        return DiagonalGaussian(self.mean.detach(), self.logvar.detach())


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return (-0.5 * (z.square() + LOG_2PI)).sum(-1)


def mixture_log_prob(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """log (1/C) sum_c N(z; means[c], diag(exp(logvars[c]))): an equal-weight mixture of C diagonal Gaussians.

    z: (..., D); means, logvars: (C, D) -> (...). The squared distances are expanded into two matmuls,
    sum_d z^2/v - 2 z m/v + m^2/v, so no (..., C, D) tensor is built (K * B * 500 * D floats for a VampPrior);
    in float64, since the expansion cancels large terms when a component is narrow.
    """
    z64, m, logv = z.double(), means.double(), logvars.double()
    precision = torch.exp(-logv)  # (C, D)
    quad = (z64.square() @ precision.T - 2 * z64 @ (m * precision).T
            + (m.square() * precision).sum(-1))  # (..., C): sum_d (z_d - m_cd)^2 / v_cd
    log_n = -0.5 * (quad + logv.sum(-1) + z.shape[-1] * LOG_2PI)  # (..., C)
    return (torch.logsumexp(log_n, dim=-1) - math.log(means.shape[0])).to(at_least_float32(z).dtype)


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """The IWAE bound as a loss, -(logsumexp_k log w_k - log K) (Burda et al. 2016, eq. 8). log_w: (K, B) -> (B,).

    With K = 1 it is -log w, the negative ELBO on that one sample; it is never above the mean of the K values
    of -log w (Jensen's inequality holds for every draw)."""
    return -(torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0]))


# ---------------------------------------------------------------- hidden blocks
class GatedDense(nn.Module):
    """h = a(x) * sigmoid(b(x)), no other activation: VampPrior's GatedDense (Tomczak & Welling 2018, after
    Dauphin et al. 2017). a and b are the two halves of one Linear layer, so a step does one matmul."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, 2 * n_out)  # rows [:n_out] are a, rows [n_out:] are b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.linear(x).chunk(2, dim=-1)
        return a * torch.sigmoid(b)


class ResidualDense(nn.Module):
    """h = x + relu(Linear(x)): a Linear + ReLU block with an identity skip (its width in = width out)."""

    def __init__(self, n: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n, n), nn.ReLU())  # he_init gives it the ReLU gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def hidden_stack(sizes: list[int], block: str, final_activation: bool = False) -> nn.Sequential:
    """Layers of the given sizes, each hidden one a ``block`` (HIDDEN_BLOCKS); the last is a plain Linear
    unless ``final_activation``. "plain" is exactly :func:`mlp` (the same parameter names as before). A
    "residual" layer whose widths differ (e.g. 784 -> 512) has nothing to skip over: it stays Linear + ReLU."""
    if block == "plain":
        return mlp(sizes, final_activation)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i == len(sizes) - 2 and not final_activation:
            layers.append(nn.Linear(a, b))
        elif block == "gated":
            layers.append(GatedDense(a, b))
        else:
            layers.append(ResidualDense(a) if a == b else nn.Sequential(nn.Linear(a, b), nn.ReLU()))
    return nn.Sequential(*layers)


# ---------------------------------------------------------------- settings
@dataclass
class VariationalSettings(AESettings):
    """The settings of both VAE families (``conv-vae`` reads these; the dense ``vae`` adds ``hidden_block``)."""

    hidden_dims: list[int] | None = None  # hidden layer sizes (vae; None = 400; [] = none) or channels (conv-vae; None = 32,64)
    beta: float = 1.0  # weight of the KL term (beta-VAE; 1.0 = the plain ELBO)
    kl_warmup: int = 0  # epochs over which the KL weight ramps linearly from 0 to beta
    iwae_k: int = 1  # importance samples per image in the training loss: 1 = the ELBO, K > 1 = the IWAE bound
    iwae_gradient: str | None = None  # with iwae_k > 1: "dreg" (Tucker et al. 2019) or "reparam"; None = dreg
    prior: str = "normal"  # p(z): "normal" N(0, I), "mog" (learned mixture of Gaussians) or "vamp" (VampPrior)
    prior_components: int | None = None  # components of a mog or vamp prior; None = 10 (mog), 500 (vamp)

    def check_fields(self) -> "VariationalSettings":
        super().check_fields()
        require(math.isfinite(self.beta) and self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        require(self.kl_warmup >= 0, f"kl_warmup must be >= 0 epochs, got {self.kl_warmup}")
        require(isinstance(self.iwae_k, int) and self.iwae_k >= 1,
                f"iwae_k must be an integer >= 1 (1 = the ELBO), got {self.iwae_k}; try --iwae-k 5")
        require(self.iwae_gradient in (None, *IWAE_GRADIENTS),
                f"iwae_gradient must be {' or '.join(map(repr, IWAE_GRADIENTS))}, got '{self.iwae_gradient}'")
        require(self.prior in PRIORS, f"prior must be one of {', '.join(PRIORS)}, got '{self.prior}'")
        if self.prior_components is not None:
            require(self.prior_components >= 1,
                    f"prior_components must be at least 1, got {self.prior_components}; try --prior-components 500")
        return self

    def check_together(self) -> "VariationalSettings":
        super().check_together()
        require(self.iwae_gradient is None or self.iwae_k > 1,
                "iwae_gradient applies to the IWAE loss (iwae_k > 1): drop --iwae-gradient or pass --iwae-k 5")
        require(self.prior_components is None or self.prior != "normal",
                "prior_components applies to the mog and vamp priors: drop --prior-components or pass --prior vamp")
        return self


@dataclass
class VAESettings(VariationalSettings):
    hidden_block: str = "plain"  # each hidden layer: "plain" (Linear + ReLU), "gated" (GatedDense) or "residual"

    def check_fields(self) -> "VAESettings":
        super().check_fields()
        require(self.hidden_block in HIDDEN_BLOCKS,
                f"hidden_block must be one of {', '.join(HIDDEN_BLOCKS)}, got '{self.hidden_block}'")
        return self

    def check_together(self) -> "VAESettings":
        super().check_together()
        widths = self.hidden_dims or []
        require(self.hidden_block != "residual" or any(a == b for a, b in zip(widths, widths[1:])),
                f"hidden_block residual skips over layers of equal width, and hidden_dims {widths or 'default'} "
                f"has none: pass --hidden-dims 512,512 (say)")
        return self


# ---------------------------------------------------------------- models
class VAE(Autoencoder):
    """Dense VAE: x -> hidden_dims -> (mean, logvar) of the code; code -> reversed hidden_dims -> x."""

    name = "vae"
    default_loss = "bce"
    capabilities = frozenset({GENERATIVE, VARIATIONAL})

    Settings = VAESettings
    default_hidden = (400,)

    def __init__(self, input_shape=(1, 28, 28), settings: VariationalSettings | None = None, **kwargs):
        super().__init__(input_shape, settings, **kwargs)
        s = self.settings
        self.beta = float(s.beta)
        self.kl_warmup = int(s.kl_warmup)
        self.kl_weight = self.beta if self.kl_warmup == 0 else 0.0
        self.iwae_k = int(s.iwae_k)
        if self.iwae_k > 1:  # the recorded settings say which estimator was used
            s.iwae_gradient = s.iwae_gradient or IWAE_GRADIENTS[0]
        self.iwae_gradient = s.iwae_gradient
        self.prior_kind = s.prior
        if self.prior_kind != "normal":
            s.prior_components = int(s.prior_components or DEFAULT_COMPONENTS[self.prior_kind])
        hidden = s.hidden_dims
        s.hidden_dims = list(self.default_hidden if hidden is None else hidden)
        self.build(s.hidden_dims)
        self.init_weights()  # the encoder's feature layers; to_moments keeps PyTorch's default
        # Gaussian decoder: one learned log-variance shared by every pixel (unused for Bernoulli)
        self.log_sigma2 = nn.Parameter(torch.zeros(())) if self.loss_kind == "mse" else None
        self.build_prior(s.prior_components)

    def build(self, hidden: list[int]) -> None:
        block = self.settings.hidden_block
        self.encoder = hidden_stack([self.input_size, *hidden], block, final_activation=True)  # (B, D) -> (B, H); [] = identity
        self.to_moments = nn.Linear(hidden[-1] if hidden else self.input_size, 2 * self.latent_dim)  # -> (B, 2 * latent)
        self.decoder = hidden_stack([self.latent_dim, *reversed(hidden), self.input_size], block)  # (B, latent) -> (B, D)

    def build_prior(self, components: int | None) -> None:
        """The learned parameters of a mog or vamp prior (none for N(0, I))."""
        if self.prior_kind == "mog":  # means spread like N(0, I) draws, unit variances
            self.prior_means = nn.Parameter(torch.randn(components, self.latent_dim))  # (C, D)
            self.prior_logvars = nn.Parameter(torch.zeros(components, self.latent_dim))  # (C, D)
        elif self.prior_kind == "vamp":  # pseudo-inputs u_k; the paper's N(0.05, 0.01) start for [0, 1] data
            start = torch.randn(components, *self.input_shape)
            self.pseudo_inputs = nn.Parameter(start * 0.01 + 0.05 if self.output == "sigmoid" else start)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))

    # ---------------------------------------------------------------- verbs
    def posterior(self, x) -> DiagonalGaussian:
        """The posterior q(z|x) of ``x`` (a batch mapping or an input tensor)."""
        mean, logvar = self.to_moments(self.features(self.check_input(x))).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x).mode()  # the posterior mean: the code of a VAE

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(*z.shape[:-1], *self.input_shape)

    def log_likelihood(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per sample, summed over pixels; logits (..., B, *shape), x (B, *shape) -> (..., B)."""
        dims = tuple(range(-len(self.input_shape), 0))
        if self.loss_kind == "bce":
            # log Bernoulli(x; sigmoid(l)) = x * l - softplus(l): the same numbers as -BCE-with-logits, but x
            # broadcasts over the K samples of an IWAE pass without being copied, and it runs ~1.8x faster
            logits = at_least_float32(logits)
            return (x * logits).sum(dims) - F.softplus(logits).sum(dims)
        mean = to_output(logits, self.output)
        return (-0.5 * ((x - mean).square() / self.log_sigma2.exp() + self.log_sigma2 + LOG_2PI)).sum(dims)

    # ---------------------------------------------------------------- prior
    def pseudo_input_values(self) -> torch.Tensor:
        """The VampPrior's pseudo-inputs (C, *input_shape), held in [0, 1] by a hardtanh for [0, 1] data
        (the paper's parameterisation); a value pushed past 0 or 1 stays there."""
        u = self.pseudo_inputs
        return F.hardtanh(u, 0.0, 1.0) if self.output == "sigmoid" else u

    def prior_mixture(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(means, logvars), each (C, D), of the mog prior's components or of the VampPrior's q(z|u_c)."""
        if self.prior_kind == "mog":
            return self.prior_means, self.prior_logvars.clamp(-30.0, 20.0)
        q = self.posterior(self.pseudo_input_values())
        return q.mean, q.logvar

    def prior_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) under the model's prior; z (..., D) -> (...)."""
        if self.prior_kind == "normal":
            return standard_normal_log_prob(z)
        return mixture_log_prob(z, *self.prior_mixture())

    # ---------------------------------------------------------------- loss
    def set_progress(self, epochs_done: float) -> None:
        """KL warm-up: the KL weight grows linearly from 0 to beta over ``kl_warmup`` epochs."""
        ramp = 1.0 if self.kl_warmup == 0 else min(1.0, epochs_done / self.kl_warmup)
        self.kl_weight = self.beta * ramp

    def forward(self, x, target=None) -> AEOutput:
        x = self.check_input(x)
        q = self.posterior(x)
        target = self.target_of(x, target)  # the clean batch of a denoising step
        weight = self.kl_weight if self.training else self.beta
        if self.iwae_k > 1 or self.prior_kind != "normal":
            return self.importance_weighted(q, target, self.iwae_k, weight, self.iwae_gradient)
        z = q.sample()  # (B, latent), reparameterised
        logits = self.decode_logits(z)
        nll = -self.log_likelihood(logits, target)  # (B,)
        kl = q.kl()  # (B,), in closed form
        loss = (nll + weight * kl).mean()
        terms = {"recon": nll.mean(), "kl": kl.mean(), "neg_elbo": (nll + kl).mean()}
        return self.output_of(loss, z, terms, logits)

    def importance_weighted(self, q: DiagonalGaussian, x: torch.Tensor, k: int, weight: float = 1.0,
                            gradient: str | None = None) -> AEOutput:
        """The loss on K samples per image: the mean over images of :func:`iwae_bound` of the log-weights
        log w = log p(x|z) + weight * (log p(z) - log q(z|x)) (K = 1: the ELBO with a one-sample KL).

        ``gradient`` "dreg" (Tucker et al. 2019, eq. 7): log q is taken with its parameters stopped and the
        gradient reaching each z_k is scaled by its normalised weight w~_k, so the encoder gets
        sum_k w~_k^2 d log w_k/dz dz/dphi (K = 1: the "sticking the landing" gradient) while the decoder and
        the prior keep the IWAE gradient sum_k w~_k d log w_k/dtheta. "reparam" or None: the plain IWAE gradient.
        Terms: recon, kl and neg_elbo averaged over the K samples (neg_elbo = recon + kl = mean of -log w at
        weight 1), and iwae, the bound at weight 1, when K > 1.
        """
        z = q.sample(k)  # (K, B, D), reparameterised
        dreg = gradient == "dreg"
        logits = self.decode_logits(z)  # (K, B, *shape)
        log_px = self.log_likelihood(logits, x)  # (K, B)
        zf = at_least_float32(z)  # under bf16 autocast, densities of about -50 nats keep float32's resolution
        log_ratio = self.prior_log_prob(zf) - (q.detached() if dreg else q).log_prob(zf)  # (K, B)
        log_w = log_px + weight * log_ratio
        if dreg and z.requires_grad:
            w = torch.softmax(log_w.detach(), dim=0).unsqueeze(-1)  # (K, B, 1) normalised weights
            z.register_hook(lambda grad: grad * w.to(grad.dtype))
        loss = iwae_bound(log_w).mean()
        recon, kl = -log_px.detach().mean(), -log_ratio.detach().mean()
        terms = {"recon": recon, "kl": kl, "neg_elbo": recon + kl}
        if k > 1:
            terms["iwae"] = iwae_bound((log_px + log_ratio).detach()).mean()
        return self.output_of(loss, z[0], terms, logits[0])

    # ---------------------------------------------------------------- data init and generation
    @torch.no_grad()
    def init_from_data(self, x) -> None:
        """The decoder's output bias from the data's mean (see Autoencoder), and a VampPrior's pseudo-inputs
        from the first C training rows (rows reused in turn when there are fewer), kept just inside [0, 1]
        for [0, 1] data so that every pixel starts with a gradient through the hardtanh."""
        super().init_from_data(x)
        rows = self.input_of(x)
        if self.prior_kind != "vamp" or rows.shape[0] == 0:
            return
        u = rows[torch.arange(len(self.pseudo_inputs)) % rows.shape[0]].to(self.pseudo_inputs)
        self.pseudo_inputs.copy_(u.clamp(0.01, 0.99) if self.output == "sigmoid" else u)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, modality: str | None = None) -> torch.Tensor:
        """``n`` outputs decoded from codes drawn from the prior (drawn on the CPU, so a seeded generator gives
        the same codes on every device): N(0, I), or a mixture component picked uniformly, then its Gaussian
        (for a VampPrior: the posterior of a pseudo-input)."""
        eps = torch.randn(n, self.latent_dim, generator=generator)
        device = model_device(self)
        if self.prior_kind == "normal":
            return self.decode(eps.to(device), modality)
        means, logvars = self.prior_mixture()
        c = torch.randint(len(means), (n,), generator=generator).to(device)
        z = means[c] + torch.exp(0.5 * logvars[c]) * eps.to(device)
        return self.decode(z, modality)


class ConvVAE(VAE):
    """Convolutional VAE: the conv autoencoder's layers, with the encoder giving (mean, logvar)."""

    name = "conv-vae"
    default_hidden = (32, 64)
    Settings = VariationalSettings  # no hidden_block: its layers are convolutions

    def build(self, channels: list[int]) -> None:
        check_conv_shape(self.input_shape, channels)
        self.encoder = ConvEncoder(self.input_shape, channels, 2 * self.latent_dim)  # (B, C, H, W) -> (B, 2*latent)
        self.to_moments = nn.Identity()
        self.decoder = ConvDecoder(self.input_shape, channels, self.latent_dim)  # (B, latent) -> (B, C, H, W)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        return self.decoder(z.reshape(-1, self.latent_dim)).view(*lead, *self.input_shape)
