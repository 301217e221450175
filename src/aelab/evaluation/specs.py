"""The one table of metrics: every key of ``evaluation.json`` with its unit, its meaning in one line, which
way is better and which models it applies to. Evaluation, ``aelab evaluate`` and ``aelab compare``, the
HTML reports and the README's list of keys all read this table; a new metric is a new row here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import AelabError
from .metrics import DENSITY_EPS, PURITY_TOP


@dataclass(frozen=True)
class MetricSpec:
    key: str  # the key in evaluation.json (a contract)
    unit: str  # shown beside the value
    meaning: str  # what it measures, one line
    better: str = ""  # "lower", "higher", or "" (a count or a setting, neither)
    applies_to: str = "every model"  # which runs have it
    pairs: bool = False  # a mapping per ordered modality pair ("image->audio": ...) rather than one number
    nested: bool = False  # a mapping of its own shape, shown in its own table (anomaly: one entry per score)


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("test_mse", "per pixel", "mean squared error per pixel between test images and their reconstructions",
               "lower"),
    MetricSpec("test_bce", "nats per image", "binary cross-entropy of the reconstructions, summed per image",
               "lower", "data in [0, 1]"),
    MetricSpec("neg_elbo", "nats per image",
               "negative evidence lower bound on the test set (one posterior sample; the KL in closed form for the "
               "N(0, I) prior, estimated on that sample for a mog or VampPrior)",
               "lower", "variational models"),
    MetricSpec("iwae_nll", "nats per image", "importance-weighted estimate of -log p(x) (Burda et al. 2016), "
               "tighter than the ELBO", "lower", "variational models"),
    MetricSpec("iwae_samples", "K", "importance samples per image behind iwae_nll", "", "variational models"),
    MetricSpec("linear_probe_accuracy", "logistic regression",
               "test accuracy of a logistic regression (after standard scaling) reading the label off the code, "
               "fitted on the train codes (all of them, up to 60,000), its L2 strength (linear_probe_c) chosen on a "
               "held-out tenth of them", "higher", "labelled data"),
    MetricSpec("pixel_probe_accuracy", "logistic regression on the inputs",
               "the same logistic regression on the raw pixels (flattened inputs) of the same split: what the "
               "code's linear_probe_accuracy is read against (a baseline of the data, not of the model: no better "
               "or worse between runs)", "", "labelled data"),
    MetricSpec("knn_accuracy", "5-NN", "test accuracy of a 5-nearest-neighbour classifier on the codes", "higher",
               "labelled data"),
    MetricSpec("l0", "abs(z) > 0.01",
               "L0: active units (abs(z) > 0.01) on an average test sample (the code the decoder receives)"),
    MetricSpec("dead_fraction", "never abs(z) > 0.01", "fraction of units never active on the test set"),
    MetricSpec("dead_fraction_training", "no firing in training",
               "fraction of units that fired in none of the last dead_after training steps", "lower",
               "sparse models"),
    MetricSpec("mean_log10_feature_density", "log10 of a fraction",
               f"mean over units of log10(density + {DENSITY_EPS:g}), a unit's density being the fraction of test "
               f"samples it is active on (as SAELens; a dead unit counts {math.log10(DENSITY_EPS):g})"),
    MetricSpec("explained_variance", "1 perfect, 0 the mean image",
               "1 - (sum of squared reconstruction errors) / (sum of squared deviations of the test inputs from "
               "their mean)", "higher"),
    MetricSpec("mean_class_purity", "fraction",
               f"mean over live units of the share of a unit's {PURITY_TOP} strongest test activations that carry "
               "its most common label (a unit blind to the labels reads about 0.22 on ten balanced classes)", "higher",
               "labelled data"),
    MetricSpec("hoyer", "0 dense .. 1 one unit",
               "Hoyer sparsity of the codes, (sqrt(n) - L1/L2) / (sqrt(n) - 1): 0 all units equal, 1 a single "
               "active unit"),
    MetricSpec("denoising_mse", "per pixel",
               "mean squared error per pixel between the clean test images and the reconstructions of a seeded "
               "corrupted copy (the run's --noise)", "lower", "runs trained with --noise"),
    MetricSpec("noisy_input_mse", "per pixel",
               "mean squared error per pixel between that corrupted copy and the clean test images: what "
               "denoising_mse is measured against", "", "runs trained with --noise"),
    MetricSpec("anomaly", "AUROC and average precision per score",
               "one-class anomaly detection: each anomaly score (recon, elbo, iwae, knn, mahalanobis) of the whole "
               "test set, the classes not trained on being the anomalies; and the run's default score", "higher",
               "runs trained with --normal-classes", nested=True),
    MetricSpec("retrieval", "recall@1, @5, @10, mAP",
               "cross-modal retrieval: each test item of modality a queries the test items of b, ranked by distance "
               "in the shared code; a hit is the same digit", "higher", "multimodal models", pairs=True),
    MetricSpec("coherence", "fraction",
               "cross-modal generation: decode a's code into b and let an independent classifier of b read the "
               "digit; the fraction that is the source's digit (joint->b: from every modality at once)",
               "higher", "multimodal models", pairs=True),
    MetricSpec("oracle_accuracy", "fraction",
               "test accuracy of the independent per-modality classifier that judges coherence (its ceiling)",
               "higher", "multimodal models", pairs=True),
)
SPECS = {spec.key: spec for spec in METRICS}
# The scalar metrics of single-modality runs, in table order (what `aelab compare` lists row by row).
METRIC_KEYS = tuple(spec.key for spec in METRICS if not spec.pairs and not spec.nested)
# the scalar metrics written only for runs trained with --noise (absent from every other run)
NOISE_KEYS = tuple(spec.key for spec in METRICS if spec.applies_to == "runs trained with --noise")
# the scalar metrics written only for models with the SPARSE capability (absent from every other run)
SPARSE_KEYS = tuple(spec.key for spec in METRICS if spec.applies_to == "sparse models")


def spec_for(key: str) -> MetricSpec:
    """The spec of ``key``; a nested key such as ``retrieval/image->audio/recall@1`` gets its first part's."""
    spec = SPECS.get(key) or SPECS.get(key.split("/")[0])
    if spec is None:
        raise AelabError(f"'{key}' is not a metric aelab knows; known: {', '.join(SPECS)}")
    return spec


def metric_unit(key: str, result: dict) -> str:
    """The unit of metric ``key`` as shown beside its value, with what this run's ``result`` adds to it."""
    unit = spec_for(key).unit
    if key == "l0" and "latent_dim" in result:
        unit = f"of {result['latent_dim']} units, {unit}"
    if key == "dead_fraction_training" and "dead_after" in result:
        unit = f"{unit} ({result['dead_after']} steps)"
    if key in ("neg_elbo", "iwae_nll") and result.get("binarized"):
        unit += ", binarized test images"
    return unit


def spec_table_markdown() -> str:
    """The table as Markdown, for the README (a test keeps the README's copy equal to this)."""
    lines = ["| key | unit | better | applies to | what it measures |", "|---|---|---|---|---|"]
    for s in METRICS:
        key = f"`{s.key}`" + (" (per modality pair)" if s.pairs else "")
        lines.append(f"| {key} | {s.unit} | {s.better} | {s.applies_to} | {s.meaning} |")
    return "\n".join(lines) + "\n"
