"""The shipped recipes (examples/configs/*.toml) and the time-to-quality benchmark that measures them (issue 21)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aelab.config import RunConfig, coerce_fields, read_config_file

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.toml"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import time_to_quality  # noqa: E402


def test_the_issue_s_recipes_are_shipped():
    names = {p.name for p in CONFIGS}
    assert {"fast-dense.toml", "fast-vae.toml", "fast-conv.toml", "vae-nll.toml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_recipe_is_a_valid_run_config(path):
    """Every key is a RunConfig field of the right type, and the settings pass the run config's and the family's
    checks (a typo or a setting the family does not read would be refused here, not at a user's prompt)."""
    settings = coerce_fields(RunConfig, read_config_file(path), str(path))
    cfg = RunConfig(**{**settings, "dataset": "mnist"}).validate()
    assert cfg.model in ("dense", "vae", "conv")
    assert "dataset" not in settings, "the command names the dataset (--dataset mnist); the file leaves it out"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_recipe_trains_from_the_command_line(path, tmp_path):
    """`aelab train --config FILE` as the README runs it, cut to one epoch on the embedded digits: the settings
    in the file are the ones the run folder records."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "aelab", "train", "--config", str(path), "--dataset", "mnist5k",
                           "--epochs", "1", "--out", str(out), "--no-report", "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    recorded = json.loads((out / "config.json").read_text())
    for key, value in read_config_file(path).items():
        if key != "epochs":
            assert recorded[key] == value, key
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["seconds"] > 0


def test_time_to_counts_training_seconds_up_to_the_first_epoch_at_the_target():
    assert time_to_quality.time_to([1.0, 2.0, 4.0], [0.3, 0.2, 0.1], 0.2) == (3.0, 2)
    assert time_to_quality.time_to([1.0, 2.0, 4.0], [0.3, 0.2, 0.1], 0.35) == (1.0, 1)
    assert time_to_quality.time_to([1.0, 2.0], [0.3, 0.2], 0.1) == (None, None)


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_on_the_embedded_digits(tmp_path):
    """--quick: the reference loop for 2 epochs, the shipped recipe through the CLI, and a JSON whose ratio is the
    recipe's summed training seconds over the reference loop's."""
    out = tmp_path / "ttq.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_to_quality.py"), "--quick",
                           "--models", "dense", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    dense = report["families"]["dense"]
    ref, rec, ttq = dense["reference"], dense["recipe"], dense["time_to_quality"]
    assert len(ref["epoch_seconds"]) == 2 and ref["target"] == ref["metric_per_epoch"][-1]
    assert rec["config"] == "examples/configs/fast-dense.toml"
    if ttq["epoch"] is not None:
        assert ttq["seconds"] == pytest.approx(sum(rec["epoch_seconds"][:ttq["epoch"]]), rel=1e-3)
        assert report["ratios"]["dense"] == pytest.approx(ttq["seconds"] / ref["seconds"])
    assert report["load_before"] is not None and "other_cores" in report
