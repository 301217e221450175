"""Figures (matplotlib PNGs), one function per figure, each usable from Python, and the HTML reports.

Figures take plain data (a history, codes, tensors) or a model plus tensors, write one PNG and
return its path. The reports live in :mod:`aelab.viz.report` (``write_run_report``,
``write_comparison_report``); :mod:`aelab.viz.run_figures` knows which figures apply to a run.
"""
from .figures import (image_grid, mosaic, plot_loss_curves, plot_metric_bars, plot_reconstruction_comparison,
                      plot_reconstructions)
from .generative import is_generative, plot_interpolations, plot_manifold, plot_samples
from .latent import Projection, plot_latent_map, plot_projection, project
from .units import (decoder_starts_linear, plot_code_heatmap, plot_code_histogram, plot_firing_rates,
                    plot_top_activations, plot_unit_features, unit_features)

__all__ = ["Projection", "decoder_starts_linear", "image_grid", "is_generative", "mosaic", "plot_code_heatmap",
           "plot_code_histogram", "plot_firing_rates", "plot_interpolations", "plot_latent_map", "plot_loss_curves",
           "plot_manifold", "plot_metric_bars", "plot_projection", "plot_reconstruction_comparison",
           "plot_reconstructions", "plot_samples", "plot_top_activations", "plot_unit_features", "project",
           "unit_features"]
