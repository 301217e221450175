"""The model protocol as a user meets it: a registered model of their own trains through aelab.train with a
callback that sees every epoch and can stop the run, is saved and re-loaded from its run folder, and is served
by the Predictor; config.json records exactly what the model was built with; the returned model's state; and
no layer above the models asks whether a model is multimodal."""
import ast
import json
from pathlib import Path

import pytest
import torch

import aelab
from aelab.errors import AelabError
from aelab.models.base import SPARSE, has
from aelab.models.dense import DenseAE


class ScaledDense(DenseAE):
    """A user's variation on a built-in family: the code is scaled by a learned factor."""

    capabilities = frozenset({SPARSE}) - {SPARSE}  # declares nothing beyond the verbs

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def _encode(self, x):
        return super()._encode(x) * self.scale


@pytest.fixture
def registered():
    aelab.register_model("scaled-dense", ScaledDense)
    yield "scaled-dense"
    aelab.MODELS.pop("scaled-dense", None)


class StopAfter:
    """A callback: records what it is shown, stops the run after ``epochs`` epochs."""

    def __init__(self, epochs):
        self.epochs, self.seen = epochs, []

    def on_epoch_end(self, epoch, metrics):
        self.seen.append((epoch, dict(metrics)))
        return epoch >= self.epochs


def test_a_registered_subclass_trains_stops_by_callback_and_serves(registered, small_mnist, tmp_path):
    assert registered in aelab.MODELS
    stop = StopAfter(2)
    run = aelab.train(registered, small_mnist, out=tmp_path / "mine", epochs=6, latent_dim=4, hidden_dims=[16],
                      callbacks=[stop], progress=False, log=None, report=False)
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert [e for e, _ in stop.seen] == [1, 2] and len(rows) == 2  # stopped after the epoch that returned True
    assert [m for _, m in stop.seen] == rows  # the very rows written to metrics.jsonl
    assert isinstance(run.model, ScaledDense)
    assert json.loads((run.path / "config.json").read_text())["model"] == registered

    back = aelab.open_run(run.path).model  # rebuilt from the run folder through the registry
    assert type(back) is ScaledDense
    x = small_mnist.x_test[:8]
    p = aelab.Predictor.from_run(run.path, device="cpu")
    assert p.name == registered
    with torch.no_grad():
        expected = run.model.encode(x.float() / 255)
    torch.testing.assert_close(p.encode(x), expected)


def test_a_model_built_without_build_model_still_saves_its_spec(registered, small_mnist, tmp_path):
    model = ScaledDense((1, 28, 28), latent_dim=3, hidden_dims=[8])
    run = aelab.train(model, small_mnist, out=tmp_path / "direct", epochs=1, progress=False, log=None, report=False)
    assert type(aelab.open_run(run.path).model) is ScaledDense


def test_an_unregistered_model_is_told_how_to_register(small_mnist, tmp_path):
    class Unknown(DenseAE):
        pass

    with pytest.raises(AelabError, match="register_model"):
        aelab.train(Unknown(), small_mnist, out=tmp_path / "u", epochs=1, progress=False, log=None, report=False)


def test_register_model_refuses_what_cannot_work():
    with pytest.raises(AelabError, match="built-in model"):
        aelab.register_model("dense", ScaledDense)
    with pytest.raises(AelabError, match="does not follow the model protocol"):
        aelab.register_model("thing", object)
    with pytest.raises(AelabError, match="non-empty string"):
        aelab.register_model(" x", ScaledDense)
    aelab.register_model("twice", ScaledDense)
    try:
        with pytest.raises(AelabError, match="already registered"):
            aelab.register_model("twice", DenseAE)
        aelab.register_model("twice", DenseAE, replace=True)
        assert aelab.MODELS["twice"] is DenseAE
    finally:
        aelab.MODELS.pop("twice")


def test_config_json_records_what_the_model_was_built_with(small_mnist, tmp_path):
    """The family's defaults are filled in; settings of other families stay unset (None)."""
    sparse = aelab.train("sparse", small_mnist, out=tmp_path / "s", epochs=1, penalty="topk", latent_dim=32, k=5,
                         progress=False, log=None, report=False)
    saved = json.loads((sparse.path / "config.json").read_text())
    assert (saved["penalty"], saved["k"], saved["latent_dim"]) == ("topk", 5, 32)
    assert saved["target_sparsity"] == 0.05 and saved["weight_init"] == "he" and saved["hidden_dims"] == []
    assert saved["beta"] is None and saved["fusion"] is None and saved["modalities"] is None
    dense = aelab.train("dense", small_mnist, out=tmp_path / "d", epochs=1, progress=False, log=None, report=False)
    saved = json.loads((dense.path / "config.json").read_text())
    assert saved["hidden_dims"] == [256, 128] and saved["latent_dim"] == 32 and saved["loss"] == "mse"
    assert saved["penalty"] is None and saved["k"] is None and saved["beta"] is None
    assert aelab.RunConfig.load(dense.path / "config.json").hidden_dims == [256, 128]  # and it loads back


def test_train_refuses_a_setting_the_family_does_not_read(small_mnist, tmp_path):
    with pytest.raises(AelabError, match="--k does not apply to --model dense; it is a setting of sparse"):
        aelab.train("dense", small_mnist, out=tmp_path / "x", epochs=1, k=3, progress=False, log=None)
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_the_returned_model_is_on_the_cpu_in_eval_mode(small_mnist, tmp_path):
    run = aelab.train("dense", small_mnist, out=tmp_path / "d", epochs=1, latent_dim=4, progress=False, log=None,
                      report=False)
    assert not run.model.training
    assert all(p.device.type == "cpu" for p in run.model.parameters())
    assert run.model.encode(small_mnist.x_test.float() / 255).shape == (len(small_mnist.x_test), 4)  # the README's line


# --------------------------------------------------------------------------------------- no multimodal branches
SRC = Path(aelab.__file__).parent
# the multimodal model, its data and its own figures and metrics; data/dataset.py stores paired rows as a mapping
OWN = {"models/multimodal.py", "data/multimodal.py", "viz/multimodal.py", "evaluation/multimodal.py",
       "data/dataset.py"}


def multimodal_branches() -> list[str]:
    """Conditions (if, ternary, while) outside OWN that mention a `multimodal` flag or `is_multimodal`."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in OWN:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.If, ast.IfExp, ast.While)):
                names = {n.attr for n in ast.walk(node.test) if isinstance(n, ast.Attribute)}
                names |= {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
                if names & {"multimodal", "is_multimodal"}:
                    found.append(f"{rel}:{node.lineno}")
    return found


def test_no_layer_asks_whether_a_model_is_multimodal():
    """Layers ask for a capability (has(model, MULTIMODAL)) or use the protocol; the 28 branches on a
    `multimodal` flag that api, config, registry, runfolder, predict, evaluate, the report and the explorer had
    are gone."""
    assert multimodal_branches() == []


def test_capabilities_are_asked_of_classes_and_instances():
    assert has(aelab.MODELS["vae"], "generative") and not has(aelab.MODELS["dense"], "generative")
    with pytest.raises(ValueError, match="unknown capability"):
        has(aelab.MODELS["vae"], "flying")
