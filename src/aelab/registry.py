"""The model registry ``{name: class}``: the CLI, configs and tests all read it.

Adding a model is one file in ``models/`` plus one line here.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import AelabError, closest
from .io import atomic_torch_save, load_checkpoint
from .models import VAE, ConvAE, ConvVAE, DenseAE, SparseAE
from .modality import Modality
from .models.base import Autoencoder, SettingsBase
from .models.multimodal import MultimodalAE

MODELS: dict[str, type[Autoencoder]] = {
    "dense": DenseAE,
    "conv": ConvAE,
    "sparse": SparseAE,
    "vae": VAE,
    "conv-vae": ConvVAE,
    "multimodal": MultimodalAE,
}


def model_class(name: str) -> type[Autoencoder]:
    if name not in MODELS:
        raise AelabError(f"unknown model '{name}'{closest(name, MODELS)}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def is_multimodal(name: str) -> bool:
    """True for a family built from several modalities (``modalities=``) rather than one input shape."""
    return bool(getattr(model_class(name), "multimodal", False))


def training_defaults(name: str) -> dict:
    """RunConfig values a family is measured with when the user gives none (e.g. the multimodal model's epochs,
    batch size and learning rate); an unknown name is left to the config's own check."""
    cls = MODELS.get(name)
    return dict(getattr(cls, "training_defaults", None) or {})


def settings_class(name: str) -> type[SettingsBase]:
    """The settings dataclass of a registered model family (its fields, defaults and checks)."""
    return model_class(name).Settings


def model_params(name: str) -> list[str]:
    """The settings the model takes (the fields of its family's settings dataclass)."""
    return settings_class(name).names()


def build_model(name: str, input_shape=(1, 28, 28), *, modalities=None, **kwargs) -> Autoencoder:
    """Build a registered model from keyword settings; unknown ones are an AelabError naming the valid ones.
    A multimodal family is built from ``modalities`` (``{name: Modality or its dict}``) instead of one input
    shape. The model's ``spec`` (saved with its weights) holds the name, the input shape or the modalities,
    the settings as given (``kwargs``) and as validated (``settings``, every field)."""
    cls = model_class(name)
    settings = cls.Settings.build(name, kwargs)
    given = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    if is_multimodal(name):
        if not modalities:
            raise AelabError(f"the {name} model is built from its modalities; pass modalities={{name: Modality}} "
                             f"(aelab.data.multimodal.modalities_of(data) gives a dataset's)")
        specs = {k: (m if isinstance(m, Modality) else Modality.from_dict(m)) for k, m in dict(modalities).items()}
        model = cls(specs, settings=settings)
        model.spec = {"name": name, "modalities": {k: m.to_dict() for k, m in specs.items()}, "kwargs": given,
                      "settings": model.settings.to_dict()}
        return model
    model = cls(input_shape=tuple(input_shape), settings=settings)
    model.spec = {"name": name, "input_shape": list(model.input_shape), "kwargs": given,
                  "settings": model.settings.to_dict()}
    return model


def model_kwargs_from_config(cfg, bounded: bool = True) -> dict:
    """The settings a run config gives its model: every field of the model's settings that the config sets
    (None = the family's default), and the output function the data calls for."""
    values = cfg.to_dict()
    params = model_params(cfg.model)
    kwargs = {k: values[k] for k in params if values.get(k) is not None}
    if "output" in params:
        kwargs["output"] = "sigmoid" if bounded else "linear"
    return kwargs


def check_model_settings(cfg) -> None:
    """The run config's model fields, judged by the model families that own them: each value by every family
    that has the field (so a bad --target-sparsity is refused whatever the model), and the rules across fields
    by the chosen model's family alone (k <= latent_dim only matters for a topk sparse model)."""
    values = cfg.to_dict()
    for name in MODELS:
        cls = settings_class(name)
        cls.build(name, {k: values[k] for k in cls.names() if values.get(k) is not None}).check_fields()
    chosen = settings_class(cfg.model)
    chosen.build(cfg.model, {k: values[k] for k in chosen.names() if values.get(k) is not None}).validate()


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
        if "modalities" in spec:
            model = build_model(spec["name"], modalities=spec["modalities"], **spec["kwargs"])
        else:
            model = build_model(spec["name"], spec["input_shape"], **spec["kwargs"])
    except (KeyError, TypeError):
        raise AelabError(f"{source} holds a model spec this aelab cannot read; retrain with this version") from None
    model.load_state_dict(state)
    return model.eval()
