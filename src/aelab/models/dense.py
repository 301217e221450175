"""The classic fully-connected autoencoder: 784-256-128-32 and back (ReLU, sigmoid output)."""
from __future__ import annotations

import torch

from dataclasses import dataclass

from .base import AESettings, Autoencoder, mlp


@dataclass
class DenseSettings(AESettings):
    hidden_dims: list[int] | None = None  # hidden layer sizes; None = 256,128; [] = none (a linear map each way)


class DenseAE(Autoencoder):
    name = "dense"
    Settings = DenseSettings

    def __init__(self, input_shape=(1, 28, 28), settings: DenseSettings | None = None, **kwargs):
        super().__init__(input_shape, settings, **kwargs)
        hidden = [256, 128] if self.settings.hidden_dims is None else list(self.settings.hidden_dims)
        self.settings.hidden_dims = hidden
        self.encoder = mlp([self.input_size, *hidden, self.latent_dim])  # (B, D) -> (B, latent)
        self.decoder = mlp([self.latent_dim, *reversed(hidden), self.input_size])  # (B, latent) -> (B, D) logits
        self.init_weights()

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))  # (B, C, H, W) -> (B, C*H*W) -> (B, latent)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.input_shape)  # (B, latent) -> (B, C, H, W)
