"""What every autoencoder shares: the named output, the verbs, input checks and the reconstruction term."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import AelabError
from ..losses import reconstruction_loss


@dataclass
class AEOutput:
    """What ``forward`` returns. The trainer reads ``loss`` and logs every entry of ``terms``."""

    loss: torch.Tensor  # scalar to minimise
    recon: torch.Tensor  # reconstruction in input space, same shape as x
    z: torch.Tensor  # the code the decoder received, (B, latent_dim)
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # named loss terms (scalars)
    logits: torch.Tensor | None = None  # decoder output before the output function


class Autoencoder(nn.Module):
    """Base class: subclasses build ``encoder`` layers and implement ``encode`` and ``decode_logits``.

    ``output`` is "sigmoid" for data in [0, 1] (images) and "linear" for unbounded features.
    """

    name = "autoencoder"
    default_loss = "mse"

    def __init__(self, input_shape=(1, 28, 28), latent_dim: int = 32, loss: str | None = None,
                 output: str = "sigmoid"):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.latent_dim = int(latent_dim)
        self.loss_kind = loss or self.default_loss
        self.output = output
        if self.latent_dim < 1:
            raise AelabError(f"latent_dim must be at least 1, got {latent_dim}")
        if self.loss_kind not in ("mse", "bce"):
            raise AelabError(f"loss must be 'mse' or 'bce', got '{self.loss_kind}'")
        if self.output not in ("sigmoid", "linear"):
            raise AelabError(f"output must be 'sigmoid' or 'linear', got '{self.output}'")
        if self.loss_kind == "bce" and self.output != "sigmoid":
            raise AelabError("the bce loss needs data in [0, 1]; use --loss mse for unbounded features")

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    # ---------------------------------------------------------------- verbs
    def check_input(self, x: torch.Tensor) -> None:
        """A clear error for data of the wrong shape, instead of a matmul error deep inside."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise AelabError(f"{self.name} model was built for inputs of shape {self.input_shape} but got "
                             f"{tuple(x.shape[1:])}; build the model for this data or reshape the data")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (B, latent_dim) to reconstructions in input space."""
        out = self.decode_logits(z)
        return torch.sigmoid(out) if self.output == "sigmoid" else out

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code the decoder receives for ``x`` (deterministic; for metrics and maps)."""
        return self.encode(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.codes(x))

    def recon_term(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(logits, x, self.loss_kind, self.output)

    def forward(self, x: torch.Tensor) -> AEOutput:
        self.check_input(x)
        z = self.encode(x)
        logits = self.decode_logits(z)
        rec = self.recon_term(logits, x)
        recon = torch.sigmoid(logits) if self.output == "sigmoid" else logits
        return AEOutput(loss=rec, recon=recon, z=z, terms={"recon": rec}, logits=logits)


def mlp(sizes: list[int], final_activation: bool = False) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
