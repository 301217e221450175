"""Sparse autoencoders: an overcomplete code (256 units by default) pushed to be mostly zero.

By default one linear map each way (``hidden_dims=()``), the classic sparse autoencoder whose units'
decoder columns are readable pen strokes; ``hidden_dims`` adds hidden layers on both sides.

Penalties (``penalty``):

- ``kl``: the code is ``sigmoid(pre)`` and the decoder receives exactly that code; the penalty is
  KL(rho || rho_hat) summed over units, rho_hat being each unit's mean activation over the batch
  (Ng, CS294A notes, 2011). (A common version penalises ``sigmoid(z)`` but decodes the raw ``z``, so
  the penalty constrains nothing the decoder uses; here the penalised code *is* the decoder's input.)
- ``l1``: the code is ``relu(pre)``; the penalty is the mean L1 norm of the codes.
- ``topk``: the code keeps the ``k`` largest pre-activations of each sample (then ReLU) and zeroes
  the rest (Makhzani & Frey 2014; Gao et al. 2024, "Scaling and evaluating sparse autoencoders").
  Units that have not fired for ``dead_after`` training steps are *dead*; the auxiliary loss of
  Gao et al. (AuxK, section A.2) lets the top dead units join the code and asks that code to
  reconstruct the input, which gives dead units a gradient and revives them (``sparsity_weight`` weighs
  it; see DEFAULT_WEIGHTS). With the tied initialisation and centred input below, no unit stayed dead on
  full MNIST.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..losses import kl_sparsity_penalty, l1_penalty, to_output
from .base import SPARSE, AEOutput, AESettings, Autoencoder, mlp, require

# Per-penalty default of sparsity_weight. The AuxK weight is 1.0, not the paper's 1/32: our reconstruction
# term is a per-pixel mean (not the paper's variance-normalised MSE), and at 1/32 a quarter to a half of the
# units stayed dead on MNIST; at 1.0 none did (benchmarks/quality.py).
DEFAULT_WEIGHTS = {"kl": 3e-3, "l1": 1e-4, "topk": 1.0, "batchtopk": 1.0, "wta": 0.0}
PENALTIES = tuple(DEFAULT_WEIGHTS)
USES_K = ("topk", "batchtopk")  # the penalties that keep k units per sample (the exact k, or k on average)
# The optimisation this family is measured with (benchmarks/sparse_probe.py; numbers in benchmarks/README.md): a
# 1,000-unit TopK code on full MNIST gains little probe accuracy past 20 epochs at lr 2e-3 with a cosine decay.
TRAIN_DEFAULTS = {"epochs": 20, "lr": 2e-3, "lr_schedule": "cosine"}
BATCH_LEVEL = ("batchtopk", "wta")  # codes chosen over the whole batch in training, by a threshold at inference
THRESHOLD_MOMENTUM = 0.05  # batchtopk: weight of each training batch in the running inference threshold


@dataclass
class SparseSettings(AESettings):
    latent_dim: int = 256  # code units (overcomplete: more than the 32 of a dense code)
    hidden_dims: list[int] | None = None  # hidden layers on both sides; None or [] = one linear map each way
    penalty: str = "kl"  # sparsity penalty: "kl", "l1", "topk", "batchtopk" or "wta"
    target_sparsity: float = 0.05  # kl: rho, each unit's target mean activation; wta: the share of a batch each unit fires on
    sparsity_weight: float | None = None  # weight of the penalty (kl, l1) or of AuxK (topk, batchtopk); None = DEFAULT_WEIGHTS
    k: int = 25  # active units per sample (topk; batchtopk: on average over the batch)
    dead_after: int = 100  # training steps without firing after which a unit counts as dead (topk's AuxK)

    def check_fields(self) -> "SparseSettings":
        super().check_fields()
        require(self.penalty in DEFAULT_WEIGHTS,
                f"penalty must be one of {', '.join(PENALTIES)}, got '{self.penalty}'")
        require(not (self.penalty == "wta" and self.sparsity_weight),
                "the wta penalty has no weight (each unit keeps its share of the batch): drop --sparsity-weight")
        require(0 < self.target_sparsity < 1,
             f"target_sparsity must lie strictly between 0 and 1, got {self.target_sparsity}")
        require(self.sparsity_weight is None or (math.isfinite(self.sparsity_weight) and self.sparsity_weight >= 0),
             f"sparsity_weight must be >= 0, got {self.sparsity_weight}")
        require(self.k >= 1, f"k must be at least 1, got {self.k}")
        require(self.dead_after >= 1, f"dead_after must be at least 1 step, got {self.dead_after}")
        return self

    def check_together(self) -> "SparseSettings":
        super().check_together()
        if self.penalty in USES_K:
            require(self.k <= self.latent_dim,
                 f"k ({self.k}) cannot exceed latent_dim ({self.latent_dim}); lower --k or raise --latent-dim")
        return self


class SparseAE(Autoencoder):
    name = "sparse"
    capabilities = frozenset({SPARSE})
    Settings = SparseSettings
    training_defaults = TRAIN_DEFAULTS  # what `aelab train --model sparse` uses unless told otherwise

    def __init__(self, input_shape=(1, 28, 28), settings: SparseSettings | None = None, **kwargs):
        super().__init__(input_shape, settings, **kwargs)
        s = self.settings
        self.penalty = s.penalty
        self.rho = float(s.target_sparsity)
        self.weight = float(DEFAULT_WEIGHTS[s.penalty] if s.sparsity_weight is None else s.sparsity_weight)
        self.k = int(s.k)
        self.k_aux = min(2 * self.k, self.latent_dim)
        self.dead_after = int(s.dead_after)
        hidden = s.hidden_dims = list(s.hidden_dims or ())
        self.encoder = mlp([self.input_size, *hidden, self.latent_dim])  # (B, D) -> (B, latent) pre-activations
        self.decoder = mlp([self.latent_dim, *reversed(hidden), self.input_size])  # (B, latent) -> (B, D) logits
        self.init_weights()
        if not hidden:  # one linear map each way: tie the initial encoder to the decoder (Gao et al. 2024, 3.1)
            with torch.no_grad():
                atoms = self.decoder[0].weight  # (D, latent): one unit-norm image direction per unit
                atoms /= atoms.norm(dim=0, keepdim=True)
                self.encoder[0].weight.copy_(atoms.t())
                self.encoder[0].bias.zero_()
        # training steps since each unit last fired (for dead-unit detection and the topk remedy)
        self.register_buffer("steps_since_fired", torch.zeros(self.latent_dim, dtype=torch.long))
        if self.penalty in BATCH_LEVEL:  # the inference threshold (wta: one per unit); NaN until training sets it
            shape = () if self.penalty == "batchtopk" else (self.latent_dim,)
            self.register_buffer("threshold", torch.full(shape, float("nan")))

    # ---------------------------------------------------------------- the code
    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``x`` minus the decoder's image of the zero code (its output bias), so units compete on how
        an input differs from the typical one rather than on the mean image (Gao et al. 2024's b_pre)."""
        return self.encoder(x.flatten(1) - to_output(self.decoder[-1].bias, self.output))

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Pre-activations (B, latent) -> the sparse code the decoder receives (B, latent)."""
        if self.penalty == "kl":
            return torch.sigmoid(pre)
        if self.penalty == "l1":
            return torch.relu(pre)
        if self.penalty in BATCH_LEVEL:
            return self.batch_code(pre) if self.training else threshold_code(pre, self.threshold)
        values, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(values))

    def batch_code(self, pre: torch.Tensor) -> torch.Tensor:
        """The training code of the batch-level penalties from pre-activations (B, latent): batchtopk keeps the
        ``k x B`` largest ReLU'd values of the batch, wta each unit's ``ceil(target_sparsity x B)`` largest. The
        smallest value kept (batchtopk: of the batch; wta: per unit) updates the running inference threshold."""
        relu = torch.relu(pre)
        code = batch_top(relu, self.k * len(pre)) if self.penalty == "batchtopk" else lifetime_top(relu, self.rho)
        self.track_threshold(code.detach())
        return code

    @torch.no_grad()
    def track_threshold(self, code: torch.Tensor) -> None:
        """Move ``threshold`` towards the smallest positive value of ``code`` (device-side, no host sync; a unit
        or batch that kept nothing leaves it as it was; the first batch sets it)."""
        kept = code.masked_fill(code <= 0, float("inf"))
        smallest = kept.amin() if self.penalty == "batchtopk" else kept.amin(0)
        smallest = torch.where(torch.isfinite(smallest), smallest, self.threshold)
        world = training_world()
        if world > 1:  # the ranks' mean, so that every rank infers with the same threshold
            dist.all_reduce(smallest)
            smallest = smallest / world
        running = torch.lerp(self.threshold, smallest, THRESHOLD_MOMENTUM)
        self.threshold.copy_(torch.where(torch.isnan(self.threshold), smallest, running))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.pre_activation(x))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.input_shape)

    @property
    def dead_units(self) -> torch.Tensor:
        """Boolean mask (latent,) of units that have not fired for ``dead_after`` training steps."""
        return self.steps_since_fired > self.dead_after

    # ---------------------------------------------------------------- loss
    def mean_activation(self, code: torch.Tensor) -> torch.Tensor:
        """rho_hat, each unit's mean activation over the batch: (B, latent) -> (latent,). In training under
        DistributedDataParallel, over the global batch: its value is the ranks' means (of equal shards) averaged by
        an all-reduce in the forward pass, its gradient this shard's, which DDP's averaging of the gradients turns
        into the full batch's. No collective runs in the backward pass, where it could meet DDP's own gradient
        all-reduces in a different order on different ranks (and hang)."""
        rho_hat = code.mean(0)
        world = training_world() if self.training else 1
        if world > 1:
            total = rho_hat.detach().float().clone()
            dist.all_reduce(total)
            rho_hat = rho_hat + (total / world - rho_hat.detach())
        return rho_hat

    def sparsity_term(self, code: torch.Tensor) -> torch.Tensor:
        if self.penalty == "kl":
            return kl_sparsity_penalty(self.mean_activation(code), self.rho)
        if self.penalty == "l1":
            return l1_penalty(code)
        return code.new_zeros(())

    def forward(self, x, target=None) -> AEOutput:
        x = self.check_input(x)
        pre = self.pre_activation(x)
        z = self.activate(pre)
        logits = self.decode_logits(z)
        x = self.target_of(x, target)  # a denoising step's clean batch: both reconstructions are scored against it
        rec = self.recon_term(logits, x)
        sparsity = self.sparsity_term(z)
        loss = rec + self.weight * sparsity
        terms = {"recon": rec}
        if self.penalty in USES_K:
            aux = self.auxk_loss(pre, z, x)
            loss = loss + self.weight * aux
            terms["auxk"] = aux
        else:
            terms["sparsity"] = sparsity
        if self.training:  # device-side bookkeeping, no host sync
            self.count_firing((z > 0).any(0))
        return self.output_of(loss, z, terms, logits)

    @torch.no_grad()
    def count_firing(self, fired: torch.Tensor) -> None:
        """One training step more for each unit since it last fired, 0 for those that ``fired`` (latent,) now.
        Under DistributedDataParallel a unit fired when it fired on any rank (a MAX all-reduce): every rank
        then counts the global batch, instead of DDP's default of rank 0's counters, which see one shard."""
        if training_world() > 1:
            fired = fired.to(torch.int32)
            dist.all_reduce(fired, op=dist.ReduceOp.MAX)
            fired = fired.bool()
        self.steps_since_fired.copy_(torch.where(fired, 0, self.steps_since_fired + 1))

    def auxk_loss(self, pre: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """AuxK (Gao et al. 2024): reconstruct x from the code plus the top ``k_aux`` dead units.

        With no dead unit the term is zero (and so is its gradient). Unlike the main code, the auxiliary
        code skips the ReLU: a unit whose pre-activations all went negative would otherwise get no gradient.
        """
        dead = self.dead_units
        masked = pre.masked_fill(~dead, float("-inf"))
        values, idx = masked.topk(self.k_aux, dim=-1)
        values = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
        z_aux = torch.zeros_like(pre).scatter(-1, idx, values)
        aux = self.recon_term(self.decode_logits(z.detach() + z_aux), x)
        return aux * dead.any().to(aux.dtype)


def batch_top(values: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` largest entries of ``values`` (B, latent) over the whole batch kept, the rest zeroed."""
    flat = values.flatten()
    top, idx = flat.topk(min(n, flat.numel()))
    return torch.zeros_like(flat).scatter(0, idx, top).view_as(values)


def lifetime_top(values: torch.Tensor, rate: float) -> torch.Tensor:
    """Winner-take-all lifetime sparsity: each unit (column of ``values`` (B, latent)) keeps its
    ``ceil(rate x B)`` largest entries over the batch, the rest zeroed."""
    n = max(1, math.ceil(rate * len(values)))
    top, idx = values.topk(n, dim=0)
    return torch.zeros_like(values).scatter(0, idx, top)


def threshold_code(pre: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """A batch-level penalty at inference: every pre-activation at or above ``threshold`` (one, or one per unit)
    kept; a NaN threshold (a model, or a unit, that never kept anything in training) keeps the positive ones."""
    floor = torch.where(torch.isnan(threshold), torch.zeros_like(threshold), threshold)
    return torch.where((pre >= floor) & (pre > 0), pre, torch.zeros_like(pre))


def training_world() -> int:
    """How many processes train together: the size of an initialised ``torch.distributed`` group, else 1 (no
    collective, no host read: the single-process path stays as it was)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
