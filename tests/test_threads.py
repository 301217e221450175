"""How many cores the process really has (aelab.device.available_cores): affinity and cgroup quotas, read from
fake cgroup trees and a patched affinity mask."""
import os

import pytest
import torch

from aelab.device import available_cores, cgroup_cpu_limit
from aelab.errors import AelabError


@pytest.fixture
def machine(monkeypatch):
    """An 8-core machine with all 8 in the affinity mask (change either per test)."""
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    return monkeypatch


def v2(tmp_path, text):
    (tmp_path / "cpu.max").write_text(text + "\n")
    return tmp_path


def v1(tmp_path, quota, period):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return tmp_path


@pytest.mark.parametrize("text, cpus", [("max 100000", None), ("150000 100000", 1.5), ("200000 100000", 2.0),
                                        ("50000 100000", 0.5), ("garbage", None)])
def test_cgroup_v2_quota_is_quota_over_period(tmp_path, text, cpus):
    assert cgroup_cpu_limit(v2(tmp_path, text)) == cpus


@pytest.mark.parametrize("quota, period, cpus", [(-1, 100000, None), (300000, 100000, 3.0), (25000, 50000, 0.5)])
def test_cgroup_v1_quota_is_quota_over_period(tmp_path, quota, period, cpus):
    assert cgroup_cpu_limit(v1(tmp_path, quota, period)) == cpus


def test_no_cgroup_files_mean_no_quota(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None


def test_the_machine_count_when_nothing_limits(machine, tmp_path):
    assert available_cores(tmp_path) == 8
    assert available_cores(v2(tmp_path, "max 100000")) == 8


def test_the_affinity_mask_limits(machine, tmp_path):
    machine.setattr(os, "sched_getaffinity", lambda pid: {2, 5, 7}, raising=False)
    assert available_cores(tmp_path) == 3


@pytest.mark.parametrize("text, cores", [("300000 100000", 3), ("250000 100000", 2), ("50000 100000", 1),
                                         ("1600000 100000", 8)])
def test_a_v2_quota_limits_rounded_down_at_least_one(machine, tmp_path, text, cores):
    assert available_cores(v2(tmp_path, text)) == cores


def test_a_v1_quota_limits(machine, tmp_path):
    assert available_cores(v1(tmp_path, 200000, 100000)) == 2


def test_the_least_of_affinity_and_quota(machine, tmp_path):
    machine.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert available_cores(v2(tmp_path, "400000 100000")) == 2
    machine.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert available_cores(v2(tmp_path, "400000 100000")) == 4


def test_without_affinity_support_the_quota_and_count_decide(machine, tmp_path):
    machine.delattr(os, "sched_getaffinity", raising=False)
    assert available_cores(v2(tmp_path, "300000 100000")) == 3
    machine.setattr(os, "cpu_count", lambda: None)  # os.cpu_count() may not know
    assert available_cores(tmp_path) == 1


def test_training_threads_are_the_family_choice_within_the_cores(machine, tmp_path):
    from aelab.device import training_threads
    from aelab.models.multimodal import MultimodalAE
    machine.delenv("OMP_NUM_THREADS", raising=False)
    root = v2(tmp_path, "300000 100000")  # 3 cores allowed of 8
    previous = torch.get_num_threads()
    torch.set_num_threads(8)  # torch's default: the machine's 8 cores, not the container's 3
    try:
        assert training_threads(None, root) == 3
        assert training_threads(2, root) == 2 and training_threads(16, root) == 3
        assert training_threads(MultimodalAE.training_threads, root) == 1  # its small kernels want one (issue 21)
        with pytest.raises(AelabError, match="training_threads must be at least 1"):
            training_threads(0, root)
        torch.set_num_threads(1)  # a caller who asked for fewer (aelab tour --threads 1) keeps them
        assert training_threads(None, root) == 1 and training_threads(2, root) == 1
    finally:
        torch.set_num_threads(previous)


def test_the_users_omp_num_threads_wins(machine, tmp_path):
    import torch
    from aelab.device import training_threads
    machine.setenv("OMP_NUM_THREADS", "2")
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # as torch sets itself from OMP_NUM_THREADS=2 at import
    try:
        assert training_threads(1, v2(tmp_path, "300000 100000")) == 2  # not the family's 1
    finally:
        torch.set_num_threads(previous)


class ThreadsSeen:
    """A callback that records torch's intra-op thread count at each epoch's end (inside the training run)."""

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, epoch, metrics):
        self.seen.append(torch.get_num_threads())


@pytest.mark.parametrize("family", ["dense", "multimodal"])
def test_the_trainer_trains_with_the_familys_threads_and_restores_the_callers(family, machine, tmp_path):
    """During `aelab.train` the thread count is the family's (multimodal: one; dense: every available core, here
    torch's own two), and afterwards the caller's setting is back."""
    import aelab
    from aelab.models.multimodal import MultimodalAE
    from aelab.data.dataset import Dataset
    from aelab.data.multimodal import DIGIT_WORDS, encode_text, modality_specs
    machine.delenv("OMP_NUM_THREADS", raising=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        y = torch.arange(60) % 10
        images = torch.randint(0, 256, (60, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        if family == "multimodal":
            text = encode_text([DIGIT_WORDS[int(d)] for d in y])
            data = Dataset("tiny", {"image": images[:40], "text": text[:40]}, {"image": images[40:], "text": text[40:]},
                           y[:40], y[40:], classes=[str(d) for d in range(10)])
            model = MultimodalAE(modality_specs(("image", "text")), latent_dim=4, image_channels=[4, 8], text_embed=4,
                                 text_hidden=8)
        else:
            data = Dataset("tiny", images[:40], images[40:], y[:40], y[40:], classes=[str(d) for d in range(10)])
            model = aelab.build_model("dense", (1, 28, 28), latent_dim=4, hidden_dims=[8])
        seen = ThreadsSeen()
        aelab.train(model, data, out=tmp_path / "run", epochs=1, batch_size=64, progress=False, log=None,
                    report=False, callbacks=[seen], device="cpu")
        expected = 1 if family == "multimodal" else min(2, aelab.device.available_cores())
        assert seen.seen == [expected]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
