"""Metrics with one definition for every model: reconstruction, likelihood bounds, probes, sparsity.

    from aelab.evaluation import evaluate_model, evaluate_run, probe_accuracies
    metrics = evaluate_run("runs/vae-mnist5k", iwae_samples=1000)   # also writes evaluation.json

Evaluation imports models and data; it knows no model by name (a model is *variational* when it declares the
capability: its ``posterior(x)`` is a distribution). See :mod:`aelab.evaluation.evaluate` for every key.
"""
from .evaluate import (DEFAULT_IWAE_SAMPLES, EVALUATION, METRIC_KEYS, encode_all, ensure_evaluation, evaluate_model,
                       evaluate_run, read_evaluation)
from .likelihood import iwae_from_log_weights, iwae_nll, is_variational, log_importance_weights, neg_elbo
from .metrics import (ACTIVE_THRESHOLD, active_units, bce_per_image, dead_fraction, firing_rates, hoyer_sparsity,
                      mse_per_pixel, sparsity_summary)
from .probes import probe_accuracies, stratified_subset

__all__ = ["ACTIVE_THRESHOLD", "DEFAULT_IWAE_SAMPLES", "EVALUATION", "METRIC_KEYS", "active_units", "bce_per_image",
           "dead_fraction", "encode_all", "ensure_evaluation", "evaluate_model", "evaluate_run", "firing_rates",
           "hoyer_sparsity", "is_variational", "iwae_from_log_weights", "iwae_nll", "log_importance_weights", "mse_per_pixel",
           "neg_elbo", "probe_accuracies", "read_evaluation", "sparsity_summary", "stratified_subset"]
