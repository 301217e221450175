"""The model registry ``{name: class}``: the CLI, configs and tests all read it.

Adding a model is one file in ``models/`` plus one line here; a user adds one with :func:`register_model`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import AelabError, closest
from .io import atomic_torch_save, load_checkpoint
from .models import VAE, ConvAE, ConvVAE, DenseAE, SparseAE
from .modality import FEATURES, IMAGE, Modality
from .models.base import BaseAutoencoder, SettingsBase
from .models.multimodal import MultimodalAE

MODELS: dict[str, type[BaseAutoencoder]] = {
    "dense": DenseAE,
    "conv": ConvAE,
    "sparse": SparseAE,
    "vae": VAE,
    "conv-vae": ConvVAE,
    "multimodal": MultimodalAE,
}
BUILT_IN = frozenset(MODELS)


def register_model(name: str, cls: type, *, replace: bool = False) -> type:
    """Make ``cls`` a model family named ``name``: ``aelab.train(name, ...)``, ``aelab train --model name`` (in a
    process that registered it), ``build_model`` and loading its run folder then work as for a built-in model.

    ``cls`` follows the model protocol (:class:`aelab.models.base.BaseAutoencoder`): a subclass of a built-in
    model, or any ``nn.Module`` subclass with a ``Settings`` dataclass (a SettingsBase), ``from_modalities``,
    ``forward``, ``encode`` and ``decode``. Returns ``cls`` (so it works as a class decorator through
    ``functools.partial``). A built-in name is refused; a name already registered needs ``replace=True``.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise AelabError(f"a model name is a non-empty string without surrounding spaces, got {name!r}")
    if name in BUILT_IN:
        raise AelabError(f"'{name}' is a built-in model; register yours under another name")
    if name in MODELS and not replace and MODELS[name] is not cls:
        raise AelabError(f"a model '{name}' is already registered ({MODELS[name].__name__}); pass replace=True")
    missing = [verb for verb in ("Settings", "from_modalities", "forward", "encode", "decode")
               if not callable(getattr(cls, verb, None))]
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)) or missing:
        raise AelabError(f"{getattr(cls, '__name__', cls)!r} does not follow the model protocol (an nn.Module class "
                         f"with {', '.join(missing) or 'the verbs'}); subclass a built-in model or "
                         f"aelab.models.base.BaseAutoencoder")
    MODELS[name] = cls
    return cls


def model_class(name: str) -> type[BaseAutoencoder]:
    if name not in MODELS:
        raise AelabError(f"unknown model '{name}'{closest(name, MODELS)}; choose one of: {', '.join(MODELS)} (or "
                         f"register yours with aelab.register_model)")
    return MODELS[name]


def training_defaults(name: str) -> dict:
    """RunConfig values a family is measured with when the user gives none (e.g. the multimodal model's epochs,
    batch size and learning rate); an unknown name is left to the config's own check."""
    return dict(getattr(MODELS.get(name), "training_defaults", None) or {})


def settings_class(name: str) -> type[SettingsBase]:
    """The settings dataclass of a registered model family (its fields, defaults and checks)."""
    return model_class(name).Settings


def model_params(name: str) -> list[str]:
    """The settings the model takes (the fields of its family's settings dataclass)."""
    return settings_class(name).names()


def accepted_fields(name: str) -> list[str]:
    """The run-config fields a family reads: its settings and the data settings it alone uses."""
    cls = model_class(name)
    return [*cls.Settings.names(), *getattr(cls, "data_settings", ())]


def families_with(field: str) -> list[str]:
    """The registered families that read the run-config field ``field``."""
    return [name for name in MODELS if field in accepted_fields(name)]


def as_modalities(modalities) -> dict[str, Modality]:
    """``{name: Modality}`` from Modality objects or their dicts."""
    return {k: (m if isinstance(m, Modality) else Modality.from_dict(m)) for k, m in dict(modalities).items()}


def build_model(name: str, input_shape=None, *, modalities=None, **kwargs) -> BaseAutoencoder:
    """Build a registered model for data of ``modalities`` (``{name: Modality or its dict}``, what
    ``Dataset.specs()`` gives) or, for a one-modality family, of ``input_shape`` (default (1, 28, 28), images
    in [0, 1]), from keyword settings; unknown settings are an AelabError naming the valid ones. The model's
    ``spec`` (saved with its weights) holds the name, the modalities, the settings as given (``kwargs``) and
    as validated (``settings``, every field)."""
    cls = model_class(name)
    if modalities is None:
        shape = tuple(int(d) for d in (input_shape or (1, 28, 28)))
        kind = IMAGE if len(shape) == 3 else FEATURES
        output = kwargs.get("output", "sigmoid")
        modalities = {kind: Modality(kind, shape, "float32", "bernoulli" if output == "sigmoid" else "gaussian")}
    specs = as_modalities(modalities)
    cls.Settings.build(name, kwargs)  # unknown settings: one line naming the valid ones, before any layer is built
    model = cls.from_modalities(specs, **kwargs)
    model.spec = {"name": name, "modalities": {k: m.to_dict() for k, m in specs.items()},
                  "kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()},
                  "settings": model.settings.to_dict()}
    return model


def model_kwargs_from_config(cfg) -> dict:
    """The settings a run config gives its model: every field of the model's settings that the config sets
    (None = the family's default)."""
    values = cfg.to_dict()
    return {k: values[k] for k in model_params(cfg.model) if values.get(k) is not None}


def check_model_settings(cfg) -> None:
    """Settings are never dropped: a run-config value that the chosen family does not read is refused with one
    line naming the flag and the families that read it; the chosen family's own rules judge the rest."""
    values = cfg.to_dict()
    model_fields = {f for name in MODELS for f in accepted_fields(name)}
    accepted = set(accepted_fields(cfg.model))
    for key in sorted(model_fields - accepted):
        if key in values and values[key] is not None:
            owners = families_with(key)
            raise AelabError(f"--{key.replace('_', '-')} does not apply to --model {cfg.model}; it is a setting of "
                             f"{', '.join(owners)}: drop it or train one of those")
    chosen = settings_class(cfg.model)
    chosen.build(cfg.model, {k: values[k] for k in chosen.names() if values.get(k) is not None}).validate()


def ensure_spec(model: BaseAutoencoder) -> dict:
    """The model's spec (what rebuilds it: name, modalities, settings), made from the model itself when it was
    built without :func:`build_model` (e.g. ``MyAE(input_shape, latent_dim=8)`` of a registered family)."""
    spec = getattr(model, "spec", None)
    if spec is None:
        name = next((n for n, cls in MODELS.items() if cls is type(model)), None)
        settings = getattr(model, "settings", None)
        if name is None or settings is None:
            raise AelabError(f"{type(model).__name__} is not a registered model family, so its run could not be "
                             f"rebuilt; register it first: aelab.register_model('name', {type(model).__name__})")
        kwargs = settings.to_dict()
        spec = {"name": name, "modalities": {k: m.to_dict() for k, m in model.modalities.items()},
                "kwargs": kwargs, "settings": kwargs}
        model.spec = spec
    return spec


def save_model(model: BaseAutoencoder, path: str | Path) -> None:
    """Write the model's spec and weights (plain tensors and primitives: loadable with weights_only)."""
    atomic_torch_save({"spec": ensure_spec(model), "state_dict": model.state_dict()}, Path(path))


def load_model(path: str | Path, map_location="cpu") -> BaseAutoencoder:
    """Rebuild a model saved by :func:`save_model` (never executes code from the file)."""
    payload = load_checkpoint(Path(path), map_location=map_location)
    try:
        spec, state = payload["spec"], payload["state_dict"]
    except (KeyError, TypeError):
        raise AelabError(f"{path} is not an aelab model file (no spec and weights inside)") from None
    return model_from_spec(spec, state, source=path)


def model_from_spec(spec: dict, state: dict, source="the file") -> BaseAutoencoder:
    """Rebuild a model from its saved spec and load ``state`` into it; in eval mode. Specs written before the
    modalities were saved for every model (``input_shape``) still load."""
    try:
        if "modalities" in spec:
            model = build_model(spec["name"], modalities=spec["modalities"], **spec["kwargs"])
        else:
            model = build_model(spec["name"], spec["input_shape"], **spec["kwargs"])
    except (KeyError, TypeError):
        raise AelabError(f"{source} holds a model spec this aelab cannot read; retrain with this version") from None
    model.load_state_dict(state)
    return model.eval()
