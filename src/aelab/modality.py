"""What one modality of a sample is: its shape, its dtype on disk and the likelihood its decoder uses.

A batch is a mapping ``{modality name: tensor}``; a single-image model is a one-modality instance
(``"image"``), flat float features are ``"features"``. Each model stores its modalities' specs in its saved
spec, so a run folder says what its model reads.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

IMAGE = "image"  # the modality name of images (N, C, H, W)
FEATURES = "features"  # the modality name of flat float features (N, D) and other non-image arrays

LIKELIHOODS = ("bernoulli", "gaussian", "categorical")


@dataclass(frozen=True)
class Modality:
    name: str  # "image", "audio", "text", "features", ...
    shape: tuple  # one sample's shape: (1, 28, 28) for an image, (T, 13) for MFCC frames, (L,) for text
    dtype: str  # how samples are stored: "uint8" (images 0..255), "float32" or "int64" (symbol ids)
    likelihood: str  # the decoder's likelihood: "bernoulli", "gaussian" or "categorical"
    vocab: int = 0  # categorical modalities: number of symbols, including the padding id 0

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, values: dict) -> "Modality":
        return cls(**{**values, "shape": tuple(int(s) for s in values["shape"])})
