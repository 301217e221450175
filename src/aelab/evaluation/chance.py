"""Did a run learn anything? Plain warnings for the metrics of ``evaluation.json`` that sit at their chance level.

    from aelab.evaluation.chance import chance_warnings
    for line in chance_warnings(read_evaluation("runs/multimodal-mnist5k"), num_classes=10):
        print("warning:", line)

What "at chance" means here (each threshold is a constant below, with its reason):

- an accuracy (linear probe, kNN, coherence) below ``CHANCE_FACTOR / classes``: 0.25 for ten digits. A model whose
  outputs (or codes) tell apart at most two of ten classes scores 0.2; the rest of the margin is the noise of a test
  set of a few hundred items (three standard errors of 0.2 at 600 items is 0.05). The issue's failed run read
  0.10-0.21; a run that learned anything on digits reads above 0.5. With few classes the level is capped at a
  quarter of the way from chance to perfect (:func:`chance_level`).
- a reconstruction error at or above ``MEAN_FRACTION`` (0.9) of the error of predicting the mean training value for
  every test sample (``mean_image_mse`` of a one-modality run, ``reconstruction[m]["mean_mse"]`` of a multimodal
  one): the model then explains less than a tenth of what the mean image leaves (R^2 < 0.1): a grey blob. Without
  the reference key no reconstruction warning is given (there is nothing honest to compare with).

A coherence is judged only when its oracle (the classifier that reads the output) is itself above chance: a blind
judge says nothing about the model.
"""
from __future__ import annotations

import torch

from ..data.batches import as_float
from .evaluate import read_evaluation
from .multimodal import item_rows

CHANCE_FACTOR = 2.5  # an accuracy below CHANCE_FACTOR / classes reads as chance (see the module docstring)
MEAN_FRACTION = 0.9  # a reconstruction error above this fraction of the mean-prediction error reads as chance
DEFAULT_CLASSES = 10  # the digits of every built-in labelled dataset, when neither the caller nor the run says
BLOCK = 8192  # rows converted to float64 at once (full MNIST's 60,000 at once would take 376 MB)
FIX = "train for more steps (more --epochs, or a smaller --batch-size) or check the learning rate"


def chance_warnings(evaluation: dict | None, num_classes: int | None = None, lr: float | None = None) -> list[str]:
    """One plain sentence per metric of ``evaluation`` (a run's ``evaluation.json`` as a dict) that sits at its
    chance level (the probes, coherence over every modality pair, the probes of each modality's code, the
    reconstructions), each naming the values and ending with the likely fix. ``num_classes``: the labels' classes
    (default: the evaluation's ``num_classes`` key, else 10). ``lr``: the run's learning rate, named in the fix.
    Empty when nothing is at chance (or ``evaluation`` is None)."""
    if not evaluation:
        return []
    classes = int(num_classes or evaluation.get("num_classes") or DEFAULT_CLASSES)
    fix = FIX + (f" (this run used --lr {lr:g})" if lr else "")
    lines = [f"{text}: {fix}." for text in _accuracy_findings(evaluation, classes)]
    lines += [f"{text}: {fix}." for text in _reconstruction_findings(evaluation)]
    return lines


def run_chance_warnings(run, data) -> list[str]:
    """:func:`chance_warnings` of a run (a :class:`aelab.Run`) from its current ``evaluation.json``, its
    references computed from ``data`` (the run's dataset) and its recorded learning rate; none when the run has
    no current evaluation. What the end of ``aelab train``, the report and the explorer's header say."""
    evaluation = read_evaluation(run.path)
    if not evaluation:
        return []
    return chance_warnings(with_references(evaluation, data), len(data.classes) if data.classes else None,
                           lr=run.config.lr)


def chance_level(num_classes: int) -> float:
    """The accuracy below which a metric over ``num_classes`` balanced classes reads as chance: ``CHANCE_FACTOR``
    times chance, but never more than a quarter of the way from chance to perfect (two classes: 0.625, not 1.25)."""
    base = 1 / max(int(num_classes), 2)
    return min(CHANCE_FACTOR * base, base + (1 - base) / 4)


def mean_prediction_mse(x_train: torch.Tensor, x_test: torch.Tensor) -> float:
    """Mean squared error per value of predicting the mean training sample (x_train (N, ...)) for every test sample
    (x_test (M, ...)), uint8 images as in [0, 1]: the reference a reconstruction error is read against."""
    mean = sum(as_float(x_train[s:s + BLOCK]).double().sum(0) for s in range(0, len(x_train), BLOCK)) / len(x_train)
    total = sum(float((as_float(x_test[s:s + BLOCK]).double() - mean).pow(2).sum())
                for s in range(0, len(x_test), BLOCK))
    return total / x_test.numel()


def with_references(evaluation: dict, data) -> dict:
    """``evaluation`` with the mean-prediction references that :func:`chance_warnings` reads, computed from
    ``data`` (the run's :class:`~aelab.data.Dataset`) where the evaluation does not already record them:
    ``mean_image_mse`` for one modality, ``reconstruction[m]["mean_mse"]`` for each image or audio modality of a
    multimodal run (over the same distinct test items as its ``mse``). A new dict; ``evaluation`` is unchanged."""
    out = dict(evaluation or {})
    if isinstance(data.x_test, dict):
        recon = {m: dict(v) for m, v in (out.get("reconstruction") or {}).items()}
        for m, errors in recon.items():
            if "mse" in errors and "mean_mse" not in errors and m in data.x_test:
                rows = item_rows(data, "test", m)
                errors["mean_mse"] = mean_prediction_mse(data.x_train[m], data.x_test[m][rows])
        if recon:
            out["reconstruction"] = recon
    elif "test_mse" in out and "mean_image_mse" not in out:
        out["mean_image_mse"] = mean_prediction_mse(data.x_train, data.x_test)
    if "num_classes" not in out and data.classes:
        out["num_classes"] = len(data.classes)
    return out


def _accuracy_findings(evaluation: dict, classes: int) -> list[str]:
    level = chance_level(classes)
    base = 1 / classes

    def low(value) -> bool:
        return isinstance(value, (int, float)) and value < level

    out = []
    probes = {name: evaluation[key] for key, name in (("linear_probe_accuracy", "linear"), ("knn_accuracy", "5-NN"))
              if low(evaluation.get(key))}
    if probes:
        said = ", ".join(f"{name} {value:.0%}" for name, value in probes.items())
        out.append(f"the probes read the label off the codes about as often as chance ({said}; chance is {base:.0%} "
                   f"for {classes} classes): the codes hold no class information")
    oracles = evaluation.get("oracle_accuracy") or {}
    pairs = {pair: value for pair, value in (evaluation.get("coherence") or {}).items()
             if low(value) and not low(oracles.get(pair.split("->")[-1], 1.0))}  # a blind judge blames no model
    if pairs:
        said = ", ".join(f"{pair} {value:.2f}" for pair, value in pairs.items())
        out.append(f"coherence sits near chance ({said}; chance is {base:.2f} for {classes} classes): what is decoded "
                   f"into another modality does not carry the source's digit")
    codes = {m: p["linear_probe_accuracy"] for m, p in (evaluation.get("probes") or {}).items()
             if isinstance(p, dict) and low(p.get("linear_probe_accuracy"))}
    if codes:
        said = ", ".join(f"{m} {value:.0%}" for m, value in codes.items())
        out.append(f"the linear probe reads the label off the codes about as often as chance ({said}; chance is "
                   f"{base:.0%}): those codes hold no class information")
    return out


def _reconstruction_findings(evaluation: dict) -> list[str]:
    pairs = [("test", evaluation.get("test_mse"), evaluation.get("mean_image_mse"))]
    for modality, errors in (evaluation.get("reconstruction") or {}).items():
        if isinstance(errors, dict):
            pairs.append((modality, errors.get("mse"), errors.get("mean_mse")))
    blurred = [(what, mse, reference) for what, mse, reference in pairs
               if isinstance(mse, (int, float)) and isinstance(reference, (int, float)) and reference > 0
               and mse >= MEAN_FRACTION * reference]
    if not blurred:
        return []
    said = ", ".join(f"{what} MSE {mse:.4g} against {reference:.4g}" for what, mse, reference in blurred)
    return [f"the reconstructions are no better than predicting the mean for every sample ({said}): the model "
            f"outputs a blur of the average"]


__all__ = ["CHANCE_FACTOR", "MEAN_FRACTION", "chance_level", "chance_warnings", "mean_prediction_mse",
           "with_references"]
