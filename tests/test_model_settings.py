"""Each model family owns its settings: a dataclass next to the model, validated there once, saved in the spec."""
import dataclasses

import pytest

import aelab
from aelab.errors import AelabError
from aelab.modality import Modality
from aelab.models.base import MULTIMODAL, AESettings, SettingsBase, has
from aelab.registry import settings_class


MODALITIES = {"image": Modality("image", (1, 28, 28), "uint8", "bernoulli"),
              "text": Modality("text", (16,), "int64", "categorical", vocab=40)}


@pytest.mark.parametrize("name", list(aelab.MODELS))
def test_settings_are_a_dataclass_saved_whole_in_the_spec(name):
    cls = settings_class(name)
    assert dataclasses.is_dataclass(cls) and issubclass(cls, AESettings if not has(aelab.MODELS[name], MULTIMODAL) else SettingsBase)
    extra = {"modalities": MODALITIES} if has(aelab.MODELS[name], MULTIMODAL) else {}
    model = aelab.build_model(name, latent_dim=8, **extra)
    assert isinstance(model.settings, cls) and model.settings.latent_dim == 8 == model.latent_dim
    saved = model.spec["settings"]
    assert saved == model.settings.to_dict() and set(saved) == {f.name for f in dataclasses.fields(cls)}
    again = aelab.build_model(name, **saved, **extra)  # every field, as saved, rebuilds the same model
    assert again.settings == model.settings


def test_family_defaults_live_with_the_family():
    assert aelab.build_model("sparse").latent_dim == 256 and aelab.build_model("dense").latent_dim == 32
    assert aelab.RunConfig(model="sparse").validate().latent_dim is None  # None = the family's default


def test_one_rule_one_message_from_the_model_and_from_the_config():
    with pytest.raises(AelabError) as built:
        aelab.build_model("sparse", penalty="topk", latent_dim=8, k=9)
    with pytest.raises(AelabError) as configured:
        aelab.RunConfig(model="sparse", penalty="topk", latent_dim=8, k=9).validate()
    assert str(built.value) == str(configured.value) == \
        "k (9) cannot exceed latent_dim (8); lower --k or raise --latent-dim"


def test_a_setting_is_read_by_the_chosen_family_or_refused():
    """Settings are never dropped: k means nothing to dense, so it is refused (it used to be accepted and
    recorded in config.json without effect); the chosen family's own rules judge the rest."""
    with pytest.raises(AelabError, match="--k does not apply to --model dense; it is a setting of sparse"):
        aelab.RunConfig(model="dense", k=9).validate()
    with pytest.raises(AelabError, match="--beta does not apply to --model sparse"):
        aelab.RunConfig(model="sparse", beta=-1.0).validate()
    with pytest.raises(AelabError, match="target_sparsity must lie strictly between 0 and 1"):
        aelab.RunConfig(model="sparse", target_sparsity=1.5).validate()
    with pytest.raises(AelabError, match="beta must be >= 0"):
        aelab.RunConfig(model="vae", beta=-1.0).validate()
    aelab.RunConfig(model="multimodal", beta=2.0, weight_init="torch").validate()  # the settings it reads


def test_unknown_setting_names_the_valid_ones():
    with pytest.raises(AelabError, match="model 'dense' takes no setting 'penalty'.*it takes: latent_dim"):
        aelab.build_model("dense", penalty="kl")
