"""Convolutional autoencoder: Conv2d 1->32->64, stride 2 (28->14->7), linear to the code, and back."""
from __future__ import annotations

import torch
from torch import nn

from dataclasses import dataclass

from ..errors import AelabError
from .base import AESettings, Autoencoder


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_features): two stride-2 convolutions, flatten, linear."""

    def __init__(self, input_shape, channels, out_features: int):
        super().__init__()
        c, h, w = input_shape
        c1, c2 = channels
        self.body = nn.Sequential(
            nn.Conv2d(c, c1, 4, stride=2, padding=1), nn.ReLU(),  # (B, c1, H/2, W/2)
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),  # (B, c2, H/4, W/4)
            nn.Flatten(),  # (B, c2*H/4*W/4)
        )
        self.fc = nn.Linear(c2 * (h // 4) * (w // 4), out_features)

    def forward(self, x):
        return self.fc(self.body(x))


class ConvDecoder(nn.Module):
    """(B, latent) -> (B, C, H, W) logits: linear to c2 x H/4 x W/4, two stride-2 transposed convolutions."""

    def __init__(self, input_shape, channels, latent_dim: int):
        super().__init__()
        c, h, w = input_shape
        c1, c2 = channels
        self.grid = (c2, h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(latent_dim, c2 * (h // 4) * (w // 4)), nn.ReLU())
        self.body = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),  # (B, c1, H/2, W/2)
            nn.ConvTranspose2d(c1, c, 4, stride=2, padding=1),  # (B, C, H, W)
        )

    def forward(self, z):
        return self.body(self.fc(z).view(-1, *self.grid))


def check_conv_shape(input_shape, channels) -> None:
    if len(input_shape) != 3 or input_shape[1] % 4 or input_shape[2] % 4 or input_shape[1] < 4:
        raise AelabError(f"convolutional models need images (C, H, W) with H and W multiples of 4, got "
                         f"{tuple(input_shape)}; for a folder of images pass --image-size 28,28 or 32,32, and use "
                         f"the dense model for flat features")
    if len(channels) != 2:
        raise AelabError(f"convolutional models take two channel counts in hidden_dims (e.g. 32,64), got {channels}")


@dataclass
class ConvSettings(AESettings):
    hidden_dims: list[int] | None = None  # channels of the two convolutions; None = 32,64


class ConvAE(Autoencoder):
    name = "conv"
    Settings = ConvSettings

    def __init__(self, input_shape=(1, 28, 28), settings: ConvSettings | None = None, **kwargs):
        super().__init__(input_shape, settings, **kwargs)
        channels = [32, 64] if self.settings.hidden_dims is None else list(self.settings.hidden_dims)
        self.settings.hidden_dims = channels
        check_conv_shape(self.input_shape, channels)
        self.encoder = ConvEncoder(self.input_shape, channels, self.latent_dim)
        self.decoder = ConvDecoder(self.input_shape, channels, self.latent_dim)
        self.init_weights()

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)
