"""One table of metrics: every key evaluation writes has a row, and the README shows the table as it is."""
from pathlib import Path

import pytest

import aelab
from aelab.errors import AelabError
from aelab.evaluation import evaluate_model
from aelab.evaluation.specs import (METRIC_KEYS, METRICS, SPARSE_KEYS, SPECS, metric_unit, spec_for,
                                    spec_table_markdown)

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_metric_evaluation_writes_has_one_row(small_mnist):
    model = aelab.build_model("vae", small_mnist.input_shape, latent_dim=4)
    result = evaluate_model(model, small_mnist, iwae_samples=2, progress=False, noise="gaussian:0.5")
    written = {k for k, v in result.items() if isinstance(v, float) or k in SPECS}
    extra = {"test_samples", "latent_dim", "seconds", "active_threshold", "probe_train_samples", "linear_probe_c",
             "probe_train_total", "active_units_mean"}  # bookkeeping, not metrics (active_units_mean: l0's old name)
    assert written - extra <= set(SPECS), f"metrics without a row: {written - extra - set(SPECS)}"
    # every scalar row is written for a VAE on labelled images, but those of the SPARSE capability
    assert set(METRIC_KEYS) - set(SPARSE_KEYS) <= set(result)
    sparse = aelab.build_model("sparse", small_mnist.input_shape, latent_dim=16, penalty="topk", k=4)
    result = evaluate_model(sparse, small_mnist, progress=False)
    assert set(SPARSE_KEYS) <= set(result)
    assert {k for k, v in result.items() if isinstance(v, float)} - extra <= set(SPECS)


def test_rows_are_well_formed_and_unique():
    keys = [s.key for s in METRICS]
    assert len(keys) == len(set(keys))
    for s in METRICS:
        assert s.better in ("lower", "higher", "") and s.unit and s.meaning and "|" not in s.meaning + s.unit


def test_units_and_nested_keys():
    assert metric_unit("l0", {"latent_dim": 256}).startswith("of 256 units")
    assert metric_unit("dead_fraction_training", {"dead_after": 100}).endswith("(100 steps)")
    assert metric_unit("iwae_nll", {"binarized": True}).endswith("binarized test images")
    assert spec_for("test_mse").better == "lower"
    with pytest.raises(AelabError, match="not a metric"):
        spec_for("accuracy_of_vibes")


def test_the_readme_shows_the_table_as_it_is():
    text = README.read_text()
    start, end = text.index("<!-- metric table: begin -->\n"), text.index("<!-- metric table: end -->")
    shown = text[start + len("<!-- metric table: begin -->\n"):end]
    assert shown == spec_table_markdown(), "README's metric table is stale: paste spec_table_markdown() into it"
