"""Untrusted files: a checkpoint never runs code, paths from a settings file never escape, partial
downloads are never used.

The hostile checkpoints here hold a pickle that would run `touch MARKER`: each test shows aelab
refuses the file and the marker never appears, and the last test shows the file really was armed.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
import torch

import aelab
from aelab.cli import build_parser, main
from aelab.commands.train import settings_from_args
from aelab.data.datasets import IDX_FILES
from aelab.data.idx import write_idx
from aelab.io import PREVIOUS, load_checkpoint


class _RunsACommand:
    """Unpickling this calls os.system: what a hostile checkpoint looks like."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny trainings: see conftest.one_thread


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "a hostile pickle ran its command"


def _arm(good: Path, marker: Path, out: Path | None = None) -> Path:
    """A copy of the real file ``good`` with a hostile object added: same keys, same weights."""
    payload = torch.load(good, weights_only=True)
    payload["note"] = _RunsACommand(marker)
    out = out or good
    torch.save(payload, out)
    return out


def _cli_run(tmp_path: Path, epochs: int = 1) -> Path:
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", str(epochs), "--hidden-dims", "8", "--latent-dim", "2",
                 "--batch-size", "1000", "--quiet", "--no-report"]) == 0
    return out


def test_load_model_refuses_a_pickle_that_runs_code(tmp_path, marker):
    good = tmp_path / "model.pt"
    aelab.save_model(aelab.build_model("dense", latent_dim=2, hidden_dims=[8]), good)
    evil = _arm(good, marker, tmp_path / "evil.pt")
    with pytest.raises(aelab.AelabError, match="refuses to load it because unpickling it could run code") as e:
        aelab.load_model(evil)
    assert str(evil) in str(e.value) and "\n" not in str(e.value)


def test_resume_and_open_run_refuse_a_hostile_checkpoint(tmp_path, marker, capsys):
    run = _cli_run(tmp_path, epochs=2)
    _arm(run / "checkpoints" / "last.pt", marker)
    capsys.readouterr()
    code = main(["train", "--out", str(run), "--resume", "--epochs", "3", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "could run code" in err and "last.pt" in err
    # refused, not skipped: the good previous.pt is not quietly used instead of a file someone changed
    assert load_checkpoint(run / "checkpoints" / PREVIOUS)["epoch"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    _arm(run / "model.pt", marker)
    with pytest.raises(aelab.AelabError, match="could run code"):
        aelab.open_run(run)


def test_a_hostile_previous_checkpoint_is_refused_too(tmp_path, marker, capsys):
    run = _cli_run(tmp_path, epochs=2)
    (run / "checkpoints" / "last.pt").write_bytes(b"damaged")
    _arm(run / "checkpoints" / PREVIOUS, marker)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--quiet"]) == 2
    assert "could run code" in capsys.readouterr().err


def test_the_hostile_file_really_was_armed(tmp_path):
    """Without weights_only, torch.load runs the command: the refusals above are real."""
    marker = tmp_path / "armed"
    good = tmp_path / "model.pt"
    aelab.save_model(aelab.build_model("dense", latent_dim=2, hidden_dims=[8]), good)
    torch.load(_arm(good, marker, tmp_path / "evil.pt"), weights_only=False)
    assert marker.exists()


# ------------------------------------------------------------------------------------ paths
def _settings(argv, cwd: Path, monkeypatch) -> dict:
    monkeypatch.chdir(cwd)
    return settings_from_args(build_parser().parse_args(argv))


@pytest.mark.parametrize("out", ["../../x", "../x", "/tmp/aelab-escape", "runs/../../x"])
def test_out_in_a_settings_file_cannot_escape(out, tmp_path, capsys, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (work / "c.toml").write_text(f'out = "{out}"\nepochs = 1\n')
    monkeypatch.chdir(work)
    capsys.readouterr()
    code = main(["train", "--config", "c.toml"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"'out = {out}' in c.toml points outside" in err and "pass --out on the command line" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "c.toml"]  # nothing written anywhere


def test_out_in_a_settings_file_may_stay_in_the_current_or_the_files_folder(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "c.toml").write_text('out = "runs/a"\n')
    assert _settings(["train", "--config", "c.toml"], tmp_path / "exp", monkeypatch)["out"] == "runs/a"
    # run from the parent folder: out is read from there (the current folder), still inside it
    assert _settings(["train", "--config", "exp/c.toml"], tmp_path, monkeypatch)["out"] == "runs/a"
    # run from a subfolder of the file's folder: ../b lands in the file's folder, allowed
    (tmp_path / "exp" / "sub").mkdir()
    (tmp_path / "exp" / "c.toml").write_text('out = "../b"\n')
    assert _settings(["train", "--config", "../c.toml"], tmp_path / "exp" / "sub", monkeypatch)["out"] == "../b"


def test_explicit_out_flag_is_the_users_choice(tmp_path, monkeypatch):
    (tmp_path / "c.toml").write_text('out = "../../x"\n')
    settings = _settings(["train", "--config", "c.toml", "--out", "../elsewhere"], tmp_path, monkeypatch)
    assert settings["out"] == "../elsewhere"  # the flag wins, so the file's out is never used
    settings = _settings(["train", "--out", "../elsewhere"], tmp_path, monkeypatch)
    assert settings["out"] == "../elsewhere"


@pytest.mark.parametrize("flag", ["--model", "--dataset"])
def test_names_with_path_parts_write_nothing(flag, tmp_path, capsys, monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    monkeypatch.chdir(work)
    capsys.readouterr()
    assert main(["train", flag, "../../x", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown model" in err if flag == "--model" else "no file or folder ../../x" in err
    assert [p.name for p in tmp_path.rglob("*")] == ["w"]


# ------------------------------------------------------------------------------------ downloads
def test_a_partial_download_is_never_used(tmp_path):
    """A killed download leaves only its .part file; aelab never reads it and asks for the real file."""
    cache = tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    for name in IDX_FILES[1:]:
        write_idx(cache / name, torch.zeros(3, dtype=torch.uint8).numpy())
    (cache / f".{IDX_FILES[0]}.k1ll3d.part").write_bytes(b"\x1f\x8b half a file")
    with pytest.raises(aelab.AelabError, match=f"needs {IDX_FILES[0]}"):
        aelab.load_dataset("mnist")
