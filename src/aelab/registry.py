"""The model registry ``{name: class}``: the CLI, configs and tests all read it.

Adding a model is one file in ``models/`` plus one line here.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

from .errors import AelabError, closest
from .io import atomic_torch_save, load_checkpoint
from .models import VAE, ConvAE, ConvVAE, DenseAE, SparseAE
from .models.base import Autoencoder

MODELS: dict[str, type[Autoencoder]] = {
    "dense": DenseAE,
    "conv": ConvAE,
    "sparse": SparseAE,
    "vae": VAE,
    "conv-vae": ConvVAE,
}


def model_class(name: str) -> type[Autoencoder]:
    if name not in MODELS:
        raise AelabError(f"unknown model '{name}'{closest(name, MODELS)}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def model_params(name: str) -> list[str]:
    """The keyword arguments the model's constructor takes."""
    return [p for p in inspect.signature(model_class(name).__init__).parameters if p != "self"]


def build_model(name: str, input_shape=(1, 28, 28), **kwargs) -> Autoencoder:
    """Build a registered model; unknown keyword arguments are an AelabError naming the valid ones."""
    cls = model_class(name)
    params = model_params(name)
    for key in kwargs:
        if key not in params:
            raise AelabError(f"model '{name}' takes no setting '{key}'{closest(key, params)}; "
                             f"it takes: {', '.join(params)}")
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    model = cls(input_shape=tuple(input_shape), **kwargs)
    model.spec = {"name": name, "input_shape": list(model.input_shape), "kwargs": kwargs}
    return model


def model_kwargs_from_config(cfg, bounded: bool = True) -> dict:
    """The constructor arguments a run config gives a model: every config field the model takes, when set."""
    params = model_params(cfg.model)
    values = cfg.to_dict()
    kwargs = {k: values[k] for k in params if k in values and values[k] is not None and k != "input_shape"}
    if "output" in params:
        kwargs["output"] = "sigmoid" if bounded else "linear"
    return kwargs


def save_model(model: Autoencoder, path: str | Path) -> None:
    """Write the model's spec and weights (plain tensors and primitives: loadable with weights_only)."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise AelabError("this model was not made by aelab.build_model, so it cannot be saved with its spec")
    atomic_torch_save({"spec": spec, "state_dict": model.state_dict()}, Path(path))


def load_model(path: str | Path, map_location="cpu") -> Autoencoder:
    """Rebuild a model saved by :func:`save_model` (never executes code from the file)."""
    payload = load_checkpoint(Path(path), map_location=map_location)
    try:
        spec, state = payload["spec"], payload["state_dict"]
    except (KeyError, TypeError):
        raise AelabError(f"{path} is not an aelab model file (no spec and weights inside)") from None
    return model_from_spec(spec, state, source=path)


def model_from_spec(spec: dict, state: dict, source="the file") -> Autoencoder:
    """Rebuild a model from its saved spec and load ``state`` into it; in eval mode."""
    try:
        model = build_model(spec["name"], spec["input_shape"], **spec["kwargs"])
    except (KeyError, TypeError):
        raise AelabError(f"{source} holds a model spec this aelab cannot read; retrain with this version") from None
    model.load_state_dict(state)
    return model.eval()
