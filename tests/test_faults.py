"""Nothing lost: killed runs, signals, damaged checkpoints, a full disk and a NaN loss.

The kill tests run the real command line in a child process, stop it at a chosen point (mid-epoch,
or inside a checkpoint write between the temp file and the rename) and resume it; the final
weights must equal, bit for bit, those of a run that was never interrupted. Every child runs with
one thread, so CPU float results do not depend on how busy the machine is.
"""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import aelab
from aelab.cli import main
from aelab.io import PREVIOUS, load_checkpoint

# 4 epochs of 40 steps of a tiny dense model on mnist5k: a child process takes a few seconds.
TRAIN = ["train", "--hidden-dims", "32", "--latent-dim", "4", "--epochs", "4", "--batch-size", "100",
         "--seed", "3", "--no-report", "--quiet"]
STEPS_PER_EPOCH = 40

# Runs `aelab train` through aelab.cli.main with one fault point armed:
#   FAULT_STEP=N   after the N-th backward pass of this process (before its optimizer step);
#   FAULT_WRITE=M  inside the M-th write of checkpoints/last.pt, after the temp file is complete and
#                  fsynced, just before the rename.
# At the point it writes FAULT_MARKER, then hangs (to be killed) or, with FAULT_GO set, waits for
# that file to appear and carries on (so a signal sent meanwhile is handled as in real life).
DRIVER = r'''
import os, sys, time
from pathlib import Path
import torch

marker = Path(os.environ["FAULT_MARKER"])
go = os.environ.get("FAULT_GO")
step_at, write_at = int(os.environ.get("FAULT_STEP", 0)), int(os.environ.get("FAULT_WRITE", 0))
counts = {"step": 0, "write": 0}

def reached(what):
    marker.write_text(what)
    deadline = time.time() + 120
    while time.time() < deadline and not (go and Path(go).exists()):
        time.sleep(0.01)

backward = torch.Tensor.backward
def counted_backward(self, *a, **k):
    backward(self, *a, **k)
    counts["step"] += 1
    if counts["step"] == step_at:
        reached("step")
torch.Tensor.backward = counted_backward

replace = os.replace
def slow_replace(src, dst, *a, **k):
    if str(dst).endswith("last.pt"):
        counts["write"] += 1
        if counts["write"] == write_at:
            reached("write")
    return replace(src, dst, *a, **k)
os.replace = slow_replace

from aelab.cli import main
sys.exit(main(sys.argv[1:]))
'''


def _env(tmp: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", AELAB_OFFLINE="1",
               AELAB_CACHE_DIR=str(tmp / "cache"), PYTHONUNBUFFERED="1")
    env.pop("AELAB_DATA_DIR", None)
    return env


def _start(args, tmp: Path, **fault) -> subprocess.Popen:
    """Start `aelab train ARGS` in a child; with ``fault`` (step=N / write=M, go=PATH), through the driver."""
    env = _env(tmp)
    if fault:
        (tmp / "driver.py").write_text(DRIVER)
        (tmp / "marker").unlink(missing_ok=True)
        env.update(FAULT_MARKER=str(tmp / "marker"), FAULT_STEP=str(fault.get("step", 0)),
                   FAULT_WRITE=str(fault.get("write", 0)))
        if "go" in fault:
            env["FAULT_GO"] = str(fault["go"])
        cmd = [sys.executable, str(tmp / "driver.py"), *args]
    else:
        cmd = [sys.executable, "-m", "aelab", *args]
    return subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_marker(proc: subprocess.Popen, marker: Path, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (code {proc.returncode}) before reaching its fault point:\n{err[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the run never reached its fault point")
        time.sleep(0.02)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _weights(run: Path) -> dict:
    return aelab.load_model(run / "model.pt").state_dict()


def _assert_same_run(run: Path, ref: Path) -> None:
    a, b = _weights(run), _weights(ref)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs from the uninterrupted run"
    got = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in got] == [1, 2, 3, 4]
    for key in ("train_loss", "test_loss"):  # even the running sums of an interrupted epoch are restored
        assert [r[key] for r in got] == [r[key] for r in want], key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same run, never interrupted."""
    tmp = tmp_path_factory.mktemp("reference")
    code, _, err = _finish(_start([*TRAIN, "--out", "ref"], tmp))
    assert code == 0, err
    return tmp / "ref"


def _checkpoint(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")


@pytest.mark.slow
def test_sigkill_mid_epoch_and_inside_a_checkpoint_write_then_resume_is_bit_identical(reference, tmp_path):
    args = [*TRAIN, "--out", "run"]
    run = tmp_path / "run"
    # 1. killed mid-epoch: 10 steps into epoch 2
    proc = _start(args, tmp_path, step=STEPS_PER_EPOCH + 10)
    _wait_for_marker(proc, tmp_path / "marker")
    proc.kill()
    proc.wait()
    assert _checkpoint(run)["epoch"] == 1 and "partial" not in _checkpoint(run)
    # 2. resumed, then killed inside its second checkpoint write (end of epoch 3): the temp file is
    #    complete, the rename has not happened
    proc = _start([*args, "--resume"], tmp_path, write=2)
    _wait_for_marker(proc, tmp_path / "marker")
    proc.kill()
    proc.wait()
    ckpts = run / "checkpoints"
    temps = list(ckpts.glob(".last.pt.*.tmp"))
    assert temps, "the kill should have left the temp file of the unfinished write"
    assert load_checkpoint(temps[0])["epoch"] == 3  # complete, yet never taken for last.pt
    assert _checkpoint(run)["epoch"] == 2 and load_checkpoint(ckpts / PREVIOUS)["epoch"] == 2
    # 3. resumed to the end
    code, out, err = _finish(_start([*args, "--resume"], tmp_path))
    assert code == 0, err
    assert "resuming" in out and not list(ckpts.glob(".*.tmp"))
    _assert_same_run(run, reference)


@pytest.mark.slow
def test_sigint_and_sigterm_stop_cleanly_and_resume_bit_identical(reference, tmp_path):
    args = [*TRAIN, "--out", "run"]
    run = tmp_path / "run"
    for n, (sig, code_wanted, epoch_done, step_done) in enumerate(
            [(signal.SIGINT, 130, 1, 10), (signal.SIGTERM, 143, 2, 20)]):
        go = tmp_path / f"go{n}"
        # 50 steps into this process: epoch 2 step 10 (fresh), then epoch 3 step 20 (resumed at epoch 2 step 10)
        proc = _start(args + (["--resume"] if n else []), tmp_path, step=50, go=go)
        _wait_for_marker(proc, tmp_path / "marker")
        proc.send_signal(sig)
        go.touch()
        code, _, err = _finish(proc)
        assert code == code_wanted, err
        assert f"stopped by {sig.name}" in err and "--resume" in err and "Traceback" not in err
        state = _checkpoint(run)
        assert state["epoch"] == epoch_done and state["partial"]["step"] == step_done
        metrics = (run / "metrics.jsonl").read_text().splitlines()  # the metrics so far
        assert [json.loads(line)["epoch"] for line in metrics] == list(range(1, epoch_done + 1))
    code, _, err = _finish(_start([*args, "--resume"], tmp_path))
    assert code == 0, err
    _assert_same_run(run, reference)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_the_run(reference, tmp_path):
    """The plain `python -m aelab train --resume`, killed at random moments during training, twice."""
    args = [*TRAIN, "--out", "run", "--resume"]  # --resume on a missing folder starts a fresh run
    run, rng = tmp_path / "run", random.Random(0)
    train_seconds = sum(json.loads(line)["seconds"] + json.loads(line)["eval_seconds"]
                        for line in (reference / "metrics.jsonl").read_text().splitlines())
    landed = []
    for _ in range(2):
        before = _config_id(run)
        proc = _start(args, tmp_path)
        while _config_id(run) == before and proc.poll() is None:  # config.json is rewritten just before training
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 1.5 * train_seconds))
        proc.kill()
        proc.wait()
        ckpt = run / "checkpoints" / "last.pt"
        landed.append(_checkpoint(run)["epoch"] if ckpt.exists() else 0)
    code, _, err = _finish(_start(args, tmp_path))
    assert code == 0, f"kills landed after epochs {landed}: {err}"
    _assert_same_run(run, reference)


def _config_id(run: Path):
    try:
        st = (run / "config.json").stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


# ------------------------------------------------------------------------------------ in-process
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny trainings: see conftest.one_thread


TINY = dict(hidden_dims=[16], latent_dim=4, batch_size=100, progress=False, report=False, seed=5)


def _damage(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "bit flipped":  # one bit inside the tensor data, the zip structure intact
        i = raw.find(b"data/0") + 200
        raw[i] ^= 0x10
        path.write_bytes(bytes(raw))
    else:
        path.write_bytes(os.urandom(len(raw)))


def test_a_kill_between_checkpoint_and_metrics_loses_no_row(small_mnist, tmp_path):
    """A kill after the last epoch's checkpoint but before metrics.jsonl leaves the file a row short; resuming the
    finished run restores every row from the checkpoint's history (seen once in CI: rows 1-3 of 4)."""
    run = tmp_path / "r"
    aelab.train("dense", small_mnist, out=run, epochs=3, log=None, **TINY)
    rows = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(rows[:2]) + "\n")  # as the kill leaves it
    aelab.train("dense", small_mnist, out=run, resume=True, epochs=3, log=None, progress=False, report=False)
    assert (run / "metrics.jsonl").read_text().splitlines() == rows


@pytest.mark.parametrize("how", ["truncated", "empty", "bit flipped", "random bytes"])
def test_damaged_last_checkpoint_is_named_and_the_previous_one_used(small_mnist, tmp_path, how):
    full = aelab.train("dense", small_mnist, out=tmp_path / "full", epochs=3, log=None, **TINY)
    aelab.train("dense", small_mnist, out=tmp_path / "part", epochs=2, log=None, **TINY)
    last = tmp_path / "part" / "checkpoints" / "last.pt"
    _damage(last, how)
    lines = []
    resumed = aelab.train("dense", small_mnist, out=tmp_path / "part", resume=True, epochs=3, log=lines.append,
                          progress=False, report=False)
    warning = next(line for line in lines if line.startswith("warning"))
    assert str(last) in warning and "damaged" in warning and PREVIOUS in warning and "epoch 1" in warning
    assert last.with_name("last.pt.damaged").is_file()  # kept for inspection, never rotated into previous.pt
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # epoch 2 redone from epoch 1: the same weights


def test_both_checkpoints_damaged_is_a_clear_error(small_mnist, tmp_path):
    aelab.train("dense", small_mnist, out=tmp_path / "r", epochs=2, log=None, **TINY)
    ckpts = tmp_path / "r" / "checkpoints"
    _damage(ckpts / "last.pt", "truncated")
    _damage(ckpts / PREVIOUS, "random bytes")
    with pytest.raises(aelab.AelabError) as e:
        aelab.train("dense", small_mnist, out=tmp_path / "r", resume=True, epochs=3, log=None, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "both checkpoints are damaged" in msg
    assert str(ckpts / "last.pt") in msg and str(ckpts / PREVIOUS) in msg and "another --out" in msg


def test_no_space_left_keeps_the_previous_checkpoint(small_mnist, tmp_path, monkeypatch, capsys):
    """ENOSPC while the epoch-2 checkpoint is written (simulated at its fsync): epoch 1 stays intact."""
    out = tmp_path / "r"
    main(["train", "--out", str(out), "--epochs", "1", "--hidden-dims", "16", "--latent-dim", "4",
          "--batch-size", "500", "--quiet", "--no-report"])
    before = (out / "checkpoints" / "last.pt").read_bytes()
    fsync = os.fsync

    def full_disk(fd):
        if os.fstat(fd).st_size > 50_000:  # the checkpoint, not config.json or a folder
            raise OSError(errno.ENOSPC, "No space left on device")
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    capsys.readouterr()
    code = main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "no space left on the device while writing" in err and "last.pt" in err and "--resume" in err
    assert (out / "checkpoints" / "last.pt").read_bytes() == before
    assert not list((out / "checkpoints").glob(".*.tmp"))
    monkeypatch.setattr(os, "fsync", fsync)  # space freed: the run continues
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert _checkpoint(out)["epoch"] == 2


def test_nan_loss_exits_nonzero_naming_epoch_and_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch,
                                                                                   capsys):
    build = aelab.api.build_model
    calls = {"n": 0}

    def poisoned(*args, **kwargs):  # the loss turns NaN at the 11th training step: epoch 2, step 3
        model = build(*args, **kwargs)

        def hook(module, inputs, output):
            if module.training:
                calls["n"] += 1
                if calls["n"] >= 11:
                    return output * float("nan")
            return output

        model.decoder.register_forward_hook(hook)
        return model

    monkeypatch.setattr(aelab.api, "build_model", poisoned)
    out = tmp_path / "r"
    code = main(["train", "--out", str(out), "--epochs", "3", "--hidden-dims", "16", "--latent-dim", "4",
                 "--batch-size", "500", "--quiet", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "NaN or infinite at epoch 2, step 3" in err and "--grad-clip" in err and "--lr" in err
    state = _checkpoint(out)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1 and not (out / "model.pt").exists()
    monkeypatch.setattr(aelab.api, "build_model", build)  # the cause fixed, the run continues from epoch 1
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    assert _checkpoint(out)["epoch"] == 3


def test_signals_in_process_stop_with_a_checkpoint_and_resume_bit_identical(tmp_path, monkeypatch, capsys):
    """The quick twin of the child-process test: SIGINT, then SIGTERM, each mid-epoch, then the rest."""
    args = ["train", "--hidden-dims", "16", "--latent-dim", "4", "--epochs", "3", "--batch-size", "500",
            "--quiet", "--no-report", "--seed", "2"]  # 8 steps an epoch
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    backward, fire = torch.Tensor.backward, {}

    def signalling_backward(self, *a, **k):
        backward(self, *a, **k)
        fire["n"] = fire.get("n", 0) + 1
        if fire["n"] == fire.get("at"):
            os.kill(os.getpid(), fire["sig"])

    monkeypatch.setattr(torch.Tensor, "backward", signalling_backward)
    run = tmp_path / "run"
    for sig, at, code, (epoch, step) in [(signal.SIGINT, 12, 130, (1, 4)), (signal.SIGTERM, 6, 143, (2, 2))]:
        fire.update(n=0, at=at, sig=sig)
        capsys.readouterr()
        assert main([*args, "--out", str(run), "--resume"]) == code
        assert f"stopped by {sig.name}" in capsys.readouterr().err
        state = _checkpoint(run)
        assert (state["epoch"], state["partial"]["step"]) == (epoch, step)
        assert len((run / "metrics.jsonl").read_text().splitlines()) == epoch
    fire.update(at=None)
    assert main([*args, "--out", str(run), "--resume"]) == 0
    a, b = _weights(run), _weights(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in a)
    train_losses = [[json.loads(line)["train_loss"] for line in (p / "metrics.jsonl").read_text().splitlines()]
                    for p in (run, tmp_path / "ref")]
    assert train_losses[0] == train_losses[1]
