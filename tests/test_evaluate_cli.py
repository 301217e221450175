"""`aelab evaluate` and `aelab compare`: the files they write, their keys, blanks, and bad input."""
import csv
import json
import os
import sys
import time
import types

import pytest
import torch

import aelab
import aelab.viz
from aelab.cli import main
from aelab.evaluation import read_evaluation
from aelab.evaluation.specs import METRIC_KEYS as ALL_KEYS, NOISE_KEYS, SPARSE_KEYS

# these runs were trained without --noise, and neither is a sparse model (which alone counts dead units in training)
METRIC_KEYS = [k for k in ALL_KEYS if k not in (*NOISE_KEYS, *SPARSE_KEYS)]

VARIATIONAL_ONLY = {"neg_elbo", "iwae_nll", "iwae_samples"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist5k):
    """A tiny VAE and a tiny dense autoencoder, one epoch each on mnist5k (its own config names it)."""
    root = tmp_path_factory.mktemp("runs")
    small = aelab.Dataset("mnist5k", mnist5k.x_train[::4], mnist5k.x_test[::5], mnist5k.y_train[::4],
                          mnist5k.y_test[::5], classes=mnist5k.classes)
    for name in ("vae", "dense"):
        torch.manual_seed(0)
        aelab.train(aelab.build_model(name, latent_dim=4, hidden_dims=[16]), small, epochs=1,
                    out=root / name, progress=False, log=None, report=False)
    return root


def _cli(args, capsys):
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_evaluate_writes_evaluation_json_with_the_contract_keys(runs, capsys):
    code, out, err = _cli(["evaluate", str(runs / "vae"), "--iwae-samples", "7", "--quiet"], capsys)
    assert code == 0, err
    result = json.loads((runs / "vae" / "evaluation.json").read_text())
    assert set(METRIC_KEYS) <= set(result)
    assert result["iwae_samples"] == 7 and result["model"] == "vae"
    assert result["test_samples"] == 1000  # evaluated on the run's own dataset, mnist5k's test set
    assert all(key in out for key in METRIC_KEYS) and "evaluation.json" in out
    assert read_evaluation(runs / "vae") == result


def test_compare_writes_markdown_and_csv_with_blanks(runs, capsys, tmp_path):
    for f in ("evaluation.json",):  # the dense run has never been evaluated: compare evaluates it first
        assert not (runs / "dense" / f).exists()
    code, out, err = _cli(["compare", str(runs / "vae"), str(runs / "dense"), "--out", str(tmp_path),
                           "--iwae-samples", "3", "--quiet"], capsys)
    assert code == 0, err
    assert (runs / "dense" / "evaluation.json").is_file()
    with open(tmp_path / "comparison.csv", newline="") as f:
        rows = {row["model"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"vae", "dense"}
    for key in METRIC_KEYS:
        assert rows["vae"][key] != "", key
        assert (rows["dense"][key] == "") == (key in VARIATIONAL_ONLY), key
    assert float(rows["vae"]["test_mse"]) == pytest.approx(
        json.loads((runs / "vae" / "evaluation.json").read_text())["test_mse"])
    md = (tmp_path / "comparison.md").read_text()
    assert md in out  # the printed table is the Markdown one
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in md.splitlines()[2:]}
    assert set(METRIC_KEYS) <= set(lines)
    assert lines["neg_elbo"][1] == "" and lines["neg_elbo"][0] != ""  # dense column blank, vae column filled
    assert all(len(cells) == 3 for cells in lines.values())  # two runs and the unit: no stray '|'


def test_compare_html_calls_the_report(runs, capsys, tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("aelab.viz.report")
    fake.write_comparison_report = lambda run_dirs, path: calls.append((list(run_dirs), path)) or path
    monkeypatch.setitem(sys.modules, "aelab.viz.report", fake)
    monkeypatch.setattr(aelab.viz, "report", fake, raising=False)
    code, out, err = _cli(["compare", str(runs / "vae"), "--out", str(tmp_path), "--html",
                           str(tmp_path / "c.html"), "--quiet"], capsys)
    assert code == 0, err
    assert calls == [([runs / "vae"], tmp_path / "c.html")]


def test_stale_evaluation_is_redone(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "evaluation.json").write_text('{"test_mse": 0.5}')
    os.utime(tmp_path / "model.pt", (1000, 1000))
    assert read_evaluation(tmp_path) == {"test_mse": 0.5}
    os.utime(tmp_path / "model.pt", (time.time() + 10,) * 2)  # the weights changed after the evaluation
    assert read_evaluation(tmp_path) is None
    (tmp_path / "evaluation.json").write_text("{damaged")
    os.utime(tmp_path / "model.pt", (1000, 1000))
    assert read_evaluation(tmp_path) is None


@pytest.mark.parametrize("args, pattern", [
    (["evaluate", "nowhere"], "nowhere is not a folder"),
    (["evaluate", "."], "is not a run folder"),
    (["evaluate", "RUN", "--iwae-samples", "-3"], "--iwae-samples must be 0"),
    (["evaluate", "RUN", "--iwae-samples", "many"], "--iwae-samples must be 0"),
    (["compare", "RUN", "nowhere"], "nowhere is not a folder"),
])
def test_bad_input_is_one_line_and_exit_2(args, pattern, runs, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [str(runs / "vae") if a == "RUN" else a for a in args]
    code, out, err = _cli(args, capsys)
    assert code == 2 and pattern in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
