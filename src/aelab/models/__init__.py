"""Autoencoder models: one file per family. The registry lives in :mod:`aelab.registry`."""
from .base import AEOutput, Autoencoder
from .conv import ConvAE
from .dense import DenseAE
from .sparse import SparseAE
from .vae import VAE, ConvVAE, DiagonalGaussian

__all__ = ["AEOutput", "Autoencoder", "ConvAE", "ConvVAE", "DenseAE", "DiagonalGaussian", "SparseAE", "VAE"]
