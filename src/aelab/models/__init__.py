"""Autoencoder models: one file per family. The registry lives in :mod:`aelab.registry`."""
from .base import AEOutput, Autoencoder
from .conv import ConvAE
from .dense import DenseAE

__all__ = ["AEOutput", "Autoencoder", "ConvAE", "DenseAE"]
