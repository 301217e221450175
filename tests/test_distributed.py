"""Multi-process training: two CPU processes (gloo on 127.0.0.1) against one process with the same
global batch, resume of a distributed run, and a rank that dies.

Run as a script, this file is the worker the tests launch (through torchrun, or as plain processes
with torchrun's environment variables): it trains through the command line, ``aelab train ...``, and
saves each rank's final weights as ``rank<R>.pt`` in the run folder so that the ranks can be
compared; ``--die-at-step K`` makes rank 1 exit abruptly at its K-th training step.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).resolve()
# Two epochs of a tiny dense model on mnist5k (4,000 training digits): 40 steps of the global batch.
TRAIN_ARGS = ["--model", "dense", "--hidden-dims", "32", "--latent-dim", "8", "--batch-size", "100",
              "--seed", "3", "--quiet", "--no-report"]
# The tolerance between 2 processes and 1: the same arithmetic in a different order of float sums.
# Measured after 3 epochs (2, then resumed): weights differ by at most 1.2e-7, losses by 1e-7 relative.
WEIGHT_ATOL, LOSS_RTOL = 1e-4, 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _start(cmd: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    # a session of its own, so that the whole tree (torchrun and its workers) can be ended at once
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _end(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def torchrun(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node 2`` on 127.0.0.1 running this worker."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), str(WORKER), *args]
    proc = _start(cmd, _env(), cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        _end(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert worst < WEIGHT_ATOL, f"weights differ by {worst:g}"


@pytest.mark.slow
def test_two_processes_match_one_and_resume(tmp_path, mnist5k):
    import aelab

    run = tmp_path / "dist"
    first = torchrun(["train", *TRAIN_ARGS, "--epochs", "2", "--out", str(run)], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("done:") == 1  # rank 0 alone reports
    r0, r1 = _weights(run / "rank0.pt"), _weights(run / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "the ranks ended with different weights"
    assert not (run / "rank1").exists() and sorted(p.name for p in run.iterdir() if p.suffix != ".pt") == [
        "checkpoints", "config.json", "latent_stats.json", "metrics.jsonl"]

    settings = dict(model="dense", hidden_dims=[32], latent_dim=8, batch_size=100, seed=3, progress=False,
                    log=None, report=False)
    single = aelab.train(data=mnist5k, out=tmp_path / "single", epochs=2, **settings)
    _assert_close(r0, single.model.state_dict())
    _assert_close(aelab.load_model(run / "model.pt").state_dict(), r0)
    dist_lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for d, s in zip(dist_lines, single.history, strict=True):
        assert d["train_loss"] == pytest.approx(s["train_loss"], rel=LOSS_RTOL)
        assert d["test_loss"] == pytest.approx(s["test_loss"], rel=LOSS_RTOL)

    # the distributed run resumed from its checkpoint to epoch 3 ends where one process trained for 3 does
    second = torchrun(["train", "--out", str(run), "--resume", "--epochs", "3", "--quiet", "--no-report"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming" in second.stdout and second.stdout.count("resuming") == 1
    r0, r1 = _weights(run / "rank0.pt"), _weights(run / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    aelab.train(data=mnist5k, out=tmp_path / "single", resume=True, epochs=3, progress=False, log=None)
    _assert_close(r0, aelab.load_model(tmp_path / "single" / "model.pt").state_dict())
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


@pytest.mark.slow
def test_two_processes_train_topk_as_one_does(tmp_path, mnist5k):
    """TopK under DDP: every rank ends with the firing counters of one process with the same global batch (a
    unit fired when it fired on any rank; not rank 0's counters, which see one shard), and close weights."""
    import aelab

    args = ["--model", "sparse", "--penalty", "topk", "--k", "4", "--latent-dim", "64", "--batch-size", "100",
            "--seed", "3", "--epochs", "2", "--quiet", "--no-report"]
    done = torchrun(["train", *args, "--out", str(tmp_path / "dist")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    single = aelab.train("sparse", mnist5k, out=tmp_path / "single", penalty="topk", k=4, latent_dim=64,
                         batch_size=100, seed=3, epochs=2, progress=False, log=None, report=False)
    want = single.model.state_dict()
    for rank in (0, 1):
        got = _weights(tmp_path / "dist" / f"rank{rank}.pt")
        assert torch.equal(got["steps_since_fired"], want["steps_since_fired"]), rank
        _assert_close(got, want)


@pytest.mark.slow
def test_two_processes_train_the_vae_and_resume_bit_identical(tmp_path, mnist5k):
    """The VAE under DDP (each rank draws its own noise): the ranks agree, a run resumed after epoch 1 ends bit
    for bit where the run never stopped does, and the losses are those of one process within sampling noise."""
    import aelab

    args = ["--model", "vae", "--latent-dim", "4", "--hidden-dims", "32", "--batch-size", "100", "--seed", "3",
            "--quiet", "--no-report"]
    for out, epochs in (("straight", "2"), ("stopped", "1")):
        done = torchrun(["train", *args, "--epochs", epochs, "--out", str(tmp_path / out)], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    done = torchrun(["train", "--out", str(tmp_path / "stopped"), "--resume", "--epochs", "2", "--quiet",
                     "--no-report"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = _weights(tmp_path / "straight" / "rank0.pt"), _weights(tmp_path / "straight" / "rank1.pt")
    resumed = _weights(tmp_path / "stopped" / "rank0.pt")
    assert all(torch.equal(r0[k], r1[k]) and torch.equal(r0[k], resumed[k]) for k in r0)
    rows = [[json.loads(line) for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]
            for out in ("straight", "stopped")]
    assert [r["train_loss"] for r in rows[0]] == [r["train_loss"] for r in rows[1]]
    assert [r["test_loss"] for r in rows[0]] == [r["test_loss"] for r in rows[1]]
    single = aelab.train("vae", mnist5k, out=tmp_path / "single", latent_dim=4, hidden_dims=[32], batch_size=100,
                         seed=3, epochs=2, progress=False, log=None, report=False)
    assert rows[0][-1]["test_loss"] == pytest.approx(single.last["test_loss"], rel=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["dies", "hangs"])
def test_a_rank_that_dies_or_hangs_fails_the_others_in_bounded_time(tmp_path, how):
    """Plain processes with torchrun's variables (no torchrun to end the others): rank 0 must stop by
    itself, with one clear line, within the collective timeout (a hang) or at once (a death)."""
    port, timeout = _free_port(), 10
    base = dict(WORLD_SIZE=2, LOCAL_WORLD_SIZE=2, MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                AELAB_DIST_TIMEOUT=timeout)
    flag = {"dies": "--die-at-step", "hangs": "--hang-at-step"}[how]
    args = [sys.executable, str(WORKER), flag, "5", "train", *TRAIN_ARGS,
            "--epochs", "3", "--out", str(tmp_path / "r")]
    procs = [_start(args, _env(RANK=r, LOCAL_RANK=r, **base), tmp_path) for r in (0, 1)]
    try:
        if how == "dies":
            procs[1].wait(timeout=240)  # rank 1 exits at its 5th step
            assert procs[1].returncode == 17, procs[1].stderr.read()[-2000:]
        else:
            deadline = time.monotonic() + 240
            while not (tmp_path / "rank1-hangs").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        stopped = time.monotonic()
        procs[0].wait(timeout=timeout + 60)
        waited = time.monotonic() - stopped
        err = procs[0].stderr.read()
    finally:
        for p in procs:
            _end(p)
    assert procs[0].returncode == 2, err[-2000:]
    assert "aelab: error: rank 0 of 2 stopped: another rank died or stopped answering" in err
    assert "--resume" in err and "Traceback" not in err
    assert waited < timeout + 30


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_all_after_a_saved_epoch(tmp_path):
    """A scheduler's SIGTERM reaching one rank: every rank finishes the epoch, it is saved, all stop
    with 128 + 15 (rather than one rank leaving the others waiting inside a step)."""
    base = dict(WORLD_SIZE=2, LOCAL_WORLD_SIZE=2, MASTER_ADDR="127.0.0.1", MASTER_PORT=_free_port(),
                AELAB_DIST_TIMEOUT=30)
    run = tmp_path / "r"
    args = [sys.executable, str(WORKER), "train", *TRAIN_ARGS, "--epochs", "500", "--out", str(run)]
    procs = [_start(args, _env(RANK=r, LOCAL_RANK=r, **base), tmp_path) for r in (0, 1)]
    try:
        deadline = time.monotonic() + 240
        while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=90)
        errs = [p.stderr.read() for p in procs]
    finally:
        for p in procs:
            _end(p)
    assert [p.returncode for p in procs] == [143, 143], errs
    assert all("stopped by SIGTERM" in e and "--resume" in e for e in errs)
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == epochs[-1] < 500 and "partial" not in state


def test_batch_size_is_global_and_must_split_evenly():
    from aelab import AelabError
    from aelab.training.distributed import check_batch_size

    assert check_batch_size(128, 1) == 128 and check_batch_size(128, 4) == 32
    with pytest.raises(AelabError, match=r"global batch.*multiple of 3, like 99"):
        check_batch_size(100, 3)


@pytest.mark.parametrize("n, world", [(1000, 2), (1001, 2), (1003, 4), (7, 3)])
def test_shards_split_each_single_process_batch(n, world):
    """Step i of rank r holds the samples r, r + N, ... of the single-process batch i, and every rank
    takes as many steps of as many samples (else DDP would wait for a step that never comes)."""
    from aelab.training.distributed import shard

    order, batch = torch.randperm(n), 2 * world
    shards = [shard(order, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) * world > n - world
    local = batch // world
    for i in range(0, len(shards[0]), local):
        merged = torch.stack([s[i:i + local] for s in shards], 1).flatten()
        assert torch.equal(merged, order[i * world:i * world + len(merged)])


def test_environment_is_read_and_checked(monkeypatch):
    from aelab import AelabError
    from aelab.training.distributed import env_context, init, timeout_seconds

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init()
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_context().local_rank == 1 and not env_context().is_main
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(AelabError, match="does not fit WORLD_SIZE"):
        env_context()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(AelabError, match="MASTER_ADDR is not set; launch with torchrun"):
        init()
    monkeypatch.setenv("AELAB_DIST_TIMEOUT", "soon")
    with pytest.raises(AelabError, match="AELAB_DIST_TIMEOUT"):
        timeout_seconds()


# ------------------------------------------------------------------------------------ sparse statistics
# Two sparse models run three steps (forward and backward, no optimizer step) on fixed batches of 16 rows: in the
# test process on the whole batches, in two ranks on halves of them.
SPARSE_CHECK = {"kl": dict(latent_dim=16, penalty="kl"), "topk": dict(latent_dim=64, penalty="topk", k=2, dead_after=1)}


def _sparse_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(16, 1, 28, 28, generator=g) for _ in range(3)]


def _sparse_steps(model, batches) -> dict:
    """Forward and backward on each batch (the gradients add up); the counters, the last step's terms, the
    gradients."""
    model.train()
    for x in batches:
        out = model({"image": x})
        out.loss.backward()
    inner = getattr(model, "module", model)  # DDP's wrapped model
    return {"terms": {k: v.detach().clone() for k, v in out.terms.items()},
            "counters": inner.steps_since_fired.clone(),
            "grads": {n: p.grad.clone() for n, p in inner.named_parameters()}}


def _check_sparse(out: Path) -> int:
    """The worker's part: each rank takes every second row of each batch, through DDP."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import aelab

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))  # a lost peer fails the test, never hangs it
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {}
    for name, settings in SPARSE_CHECK.items():
        torch.manual_seed(0)
        model = DistributedDataParallel(aelab.build_model("sparse", **settings))
        result[name] = _sparse_steps(model, [x[rank::world] for x in _sparse_batches()])
    torch.save(result, out / f"sparse{rank}.pt")
    dist.destroy_process_group()
    return 0


def test_sparse_statistics_are_reduced_across_ranks(tmp_path):
    """Every rank's firing counters are the global batch's (a unit fired when it fired on any rank; not rank 0's
    counters, which DDP broadcasts by default), and the KL penalty's mean activation, with its gradient, is the
    global batch's, not each shard's."""
    import aelab

    base = dict(WORLD_SIZE=2, LOCAL_WORLD_SIZE=2, MASTER_ADDR="127.0.0.1", MASTER_PORT=_free_port())
    args = [sys.executable, str(WORKER), "--check-sparse", str(tmp_path)]
    procs = [_start(args, _env(RANK=r, LOCAL_RANK=r, **base), tmp_path) for r in (0, 1)]
    try:
        errs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
        for p in procs:
            _end(p)
    assert [p.returncode for p in procs] == [0, 0], errs
    ranks = [torch.load(tmp_path / f"sparse{r}.pt", weights_only=True) for r in (0, 1)]
    for name, settings in SPARSE_CHECK.items():
        torch.manual_seed(0)
        whole = _sparse_steps(aelab.build_model("sparse", **settings), _sparse_batches())
        torch.manual_seed(0)
        half = _sparse_steps(aelab.build_model("sparse", **settings), [x[0::2] for x in _sparse_batches()])
        if name == "topk":  # what rank 0 alone would count differs: the check can tell
            assert not torch.equal(half["counters"], whole["counters"]) and whole["terms"]["auxk"] > 0
        else:
            assert half["terms"]["sparsity"].item() != pytest.approx(whole["terms"]["sparsity"].item(), rel=1e-3)
        for got in ranks:
            assert torch.equal(got[name]["counters"], whole["counters"]), name
            for key, grad in whole["grads"].items():
                torch.testing.assert_close(got[name]["grads"][key], grad, atol=1e-6, rtol=1e-5, msg=f"{name} {key}")
            if name == "kl":
                assert got[name]["terms"]["sparsity"].item() == pytest.approx(whole["terms"]["sparsity"].item(),
                                                                             rel=1e-6)


def _worker(argv: list[str]) -> int:
    import aelab.cli
    import aelab.api

    if argv[:1] == ["--check-sparse"]:
        return _check_sparse(Path(argv[1]))
    die_at, hang = None, False
    if argv[:1] in (["--die-at-step"], ["--hang-at-step"]):
        die_at, hang, argv = int(argv[1]), argv[0] == "--hang-at-step", argv[2:]
    rank = int(os.environ.get("RANK", "0"))
    real_train, real_build = aelab.api.train, aelab.api.build_model
    finished = []

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        if die_at is not None and rank == 1:
            steps = [0]

            def count(module, inputs):
                if module.training:
                    steps[0] += 1
                    if steps[0] >= die_at and hang:
                        Path("rank1-hangs").touch()
                        time.sleep(3600)  # alive but silent: a deadlock, a stuck file system
                    if steps[0] >= die_at:
                        os._exit(17)  # no cleanup, no goodbye: as a crash or an OOM kill looks to the others

            model.register_forward_pre_hook(count)
        return model

    def train(*args, **kwargs):
        finished.append(real_train(*args, **kwargs))
        return finished[-1]

    aelab.api.train, aelab.api.build_model = train, build
    code = aelab.cli.main(argv)
    if finished:
        run = finished[-1]
        torch.save(run.model.state_dict(), run.path / f"rank{rank}.pt")
    return code


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
