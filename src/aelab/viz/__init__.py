"""Figures (matplotlib PNGs), one function per figure, each usable from Python."""
from .figures import plot_loss_curves, plot_reconstructions

__all__ = ["plot_loss_curves", "plot_reconstructions"]
