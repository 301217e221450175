"""Sparse autoencoders: a dense autoencoder whose code is pushed to be mostly zero.

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
  it; 1/32 by default, as in the paper).
"""
from __future__ import annotations

import torch

from ..errors import AelabError
from ..losses import kl_sparsity_penalty, l1_penalty
from .base import AEOutput, Autoencoder, mlp

DEFAULT_WEIGHTS = {"kl": 1e-4, "l1": 1e-3, "topk": 1 / 32}  # per-penalty default of sparsity_weight


class SparseAE(Autoencoder):
    name = "sparse"

    def __init__(self, input_shape=(1, 28, 28), latent_dim: int = 256, hidden_dims=(256, 128),
                 loss: str | None = None, output: str = "sigmoid", penalty: str = "kl", target_sparsity: float = 0.05,
                 sparsity_weight: float | None = None, k: int = 25, dead_after: int = 200):
        super().__init__(input_shape, latent_dim, loss, output)
        if penalty not in DEFAULT_WEIGHTS:
            raise AelabError(f"penalty must be 'kl', 'l1' or 'topk', got '{penalty}'")
        if penalty == "topk" and not 1 <= k <= self.latent_dim:
            raise AelabError(f"k ({k}) must lie between 1 and latent_dim ({self.latent_dim}); lower --k")
        if not 0 < target_sparsity < 1:
            raise AelabError(f"target_sparsity must lie strictly between 0 and 1, got {target_sparsity}")
        self.penalty = penalty
        self.rho = float(target_sparsity)
        self.weight = float(DEFAULT_WEIGHTS[penalty] if sparsity_weight is None else sparsity_weight)
        self.k = int(k)
        self.k_aux = min(2 * self.k, self.latent_dim)
        self.dead_after = int(dead_after)
        hidden = list(hidden_dims) if hidden_dims is not None else [256, 128]
        self.encoder = mlp([self.input_size, *hidden, self.latent_dim])  # (B, D) -> (B, latent) pre-activations
        self.decoder = mlp([self.latent_dim, *reversed(hidden), self.input_size])  # (B, latent) -> (B, D) logits
        # training steps since each unit last fired (for dead-unit detection and the topk remedy)
        self.register_buffer("steps_since_fired", torch.zeros(self.latent_dim, dtype=torch.long))

    # ---------------------------------------------------------------- the code
    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Pre-activations (B, latent) -> the sparse code the decoder receives (B, latent)."""
        if self.penalty == "kl":
            return torch.sigmoid(pre)
        if self.penalty == "l1":
            return torch.relu(pre)
        values, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(values))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.pre_activation(x))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.input_shape)

    @property
    def dead_units(self) -> torch.Tensor:
        """Boolean mask (latent,) of units that have not fired for ``dead_after`` training steps."""
        return self.steps_since_fired > self.dead_after

    # ---------------------------------------------------------------- loss
    def sparsity_term(self, code: torch.Tensor) -> torch.Tensor:
        if self.penalty == "kl":
            return kl_sparsity_penalty(code.mean(0), self.rho)
        if self.penalty == "l1":
            return l1_penalty(code)
        return code.new_zeros(())

    def forward(self, x: torch.Tensor) -> AEOutput:
        self.check_input(x)
        pre = self.pre_activation(x)
        z = self.activate(pre)
        logits = self.decode_logits(z)
        rec = self.recon_term(logits, x)
        sparsity = self.sparsity_term(z)
        loss = rec + self.weight * sparsity
        terms = {"recon": rec}
        if self.penalty == "topk":
            aux = self.auxk_loss(pre, z, x)
            loss = loss + self.weight * aux
            terms["auxk"] = aux
        else:
            terms["sparsity"] = sparsity
        if self.training:  # device-side bookkeeping, no host sync
            fired = (z > 0).any(0)
            self.steps_since_fired.copy_(torch.where(fired, 0, self.steps_since_fired + 1))
        recon = torch.sigmoid(logits) if self.output == "sigmoid" else logits
        return AEOutput(loss=loss, recon=recon, z=z, terms=terms, logits=logits)

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
