import json
import os
import subprocess
import sys

import pytest

from aelab.cli import main
from aelab.config import RunConfig


def _run_cli(args, capsys):
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize("args, pattern", [
    (["train", "--lr", "-1"], "lr must be a positive number"),
    (["train", "--latent-dim", "0"], "latent_dim must be at least 1"),
    (["train", "--model", "vea"], "unknown model 'vea'"),
    (["train", "--dataset", "mnistt"], "unknown dataset 'mnistt' (did you mean 'mnist'?)"),
    (["train", "--epochs", "ten"], "--epochs must be an integer, got 'ten'"),
    (["train", "--loss", "l2"], "loss must be 'mse' or 'bce'"),
    (["train", "--config", "nope.toml"], "config file nope.toml does not exist"),
    (["train", "--dataset", "mnist", "--epochs", "1"], "dataset 'mnist' needs train-images-idx3-ubyte.gz"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_input_is_one_line_and_exit_2(args, pattern, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) if "--bogus" in args else _nullcontext() as ex:
        code, out, err = _run_cli(args, capsys)
    if "--bogus" in args:
        assert ex.value.code == 2
        err = capsys.readouterr().err
    else:
        assert code == 2
    assert pattern in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_config_file_with_flag_override(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('latent_dim = 3\nhidden_dims = [8]\nepochs = 3\nlearning_rate = 0.1\n')
    code, _, err = _run_cli(["train", "--config", "c.toml"], capsys)
    assert code == 2 and "unknown setting 'learning_rate'" in err and "did you mean 'lr'" in err
    (tmp_path / "c.toml").write_text('latent_dim = 3\nhidden_dims = [8]\nepochs = 3\nreport = false\n')
    code, out, err = _run_cli(["train", "--config", "c.toml", "--epochs", "1", "--out", "r", "--quiet"], capsys)
    assert code == 0, err
    cfg = RunConfig.load(tmp_path / "r" / "config.json")
    assert (cfg.latent_dim, cfg.hidden_dims, cfg.epochs) == (3, [8], 1)


def test_datasets_command(capsys):
    code, out, _ = _run_cli(["datasets"], capsys)
    assert code == 0
    assert "mnist5k" in out and "fashion-mnist" in out


@pytest.mark.slow
def test_train_end_to_end_writes_the_run_folder(tmp_path):
    """`aelab train --epochs 1` as a user runs it: a real process, the default model and dataset."""
    env = dict(os.environ, AELAB_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "aelab", "train", "--epochs", "1", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "checkpoints/last.pt", "model.pt", "loss.png",
                 "reconstructions.png"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "dense" and cfg["dataset"] == "mnist5k" and cfg["epochs"] == 1
    rec = json.loads((run / "metrics.jsonl").read_text())
    assert rec["epoch"] == 1 and rec["test_loss"] < 0.2
    assert "done:" in proc.stdout
