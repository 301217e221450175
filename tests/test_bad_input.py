"""Nothing let in: every kind of bad input is one line naming the problem and the fix, exit code 2.

Complements tests/test_idx.py (the IDX reader's own checks) and tests/test_cli.py (a first set of
bad flags): here each input goes through the command line or the public API as a user would send it.
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import aelab
from aelab.cli import main
from aelab.data.datasets import IDX_FILES
from aelab.data.idx import write_idx


def _cli(args, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def _one_line_exit_2(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("aelab: error: ") and "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny trainings: see conftest.one_thread


# ------------------------------------------------------------------------------------ IDX files
def _idx_set(folder: Path, train_shape=(20, 28, 28), test_shape=(10, 28, 28)) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = [rng.integers(0, 256, train_shape, dtype=np.uint8), (np.arange(train_shape[0]) % 10).astype(np.uint8),
              rng.integers(0, 256, test_shape, dtype=np.uint8), (np.arange(test_shape[0]) % 10).astype(np.uint8)]
    for name, arr in zip(IDX_FILES, arrays):
        write_idx(folder / name, arr)


def _wrong_magic(p: Path):
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[2] = 0x42
    p.write_bytes(gzip.compress(bytes(raw)))


def _truncated(p: Path):
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-100]))


def _gzip_damage(p: Path):
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) * 2 // 3])


def _labels_mismatch(p: Path):
    write_idx(p, np.zeros(7, np.uint8))


def _labels_out_of_range(p: Path):
    write_idx(p, np.full(20, 12, np.uint8))


def _labels_float(p: Path):
    write_idx(p, np.zeros(20, np.float32))


def _no_images(p: Path):
    write_idx(p, np.zeros((0, 28, 28), np.uint8))
    write_idx(p.with_name(IDX_FILES[1]), np.zeros(0, np.uint8))


def _flat_images(p: Path):
    write_idx(p, np.zeros((20, 784), np.uint8))


def _other_size(p: Path):
    write_idx(p, np.zeros((10, 14, 14), np.uint8))


@pytest.mark.parametrize("damage, file, needles", [
    (_wrong_magic, 0, ["train-images-idx3-ubyte.gz is not an IDX file (bad magic", "MNIST-style"]),
    (_truncated, 2, ["t10k-images-idx3-ubyte.gz is truncated", "fetch it again"]),
    (_gzip_damage, 1, ["train-labels-idx1-ubyte.gz is a damaged gzip file", "fetch it again"]),
    (_labels_mismatch, 3, ["has 10 images but", "t10k-labels-idx1-ubyte.gz has 7 labels", "do not belong together"]),
    (_labels_out_of_range, 1, ["train-labels-idx1-ubyte.gz holds labels outside 0..9", "fetch it again"]),
    (_labels_float, 1, ["train-labels-idx1-ubyte.gz holds float32 values", "must be integers"]),
    (_no_images, 0, ["train-images-idx3-ubyte.gz holds no pixels"]),
    (_flat_images, 0, ["expected images (N, H, W)"]),
    (_other_size, 2, ["train images are (28, 28) but test images are (14, 14)"]),
])
def test_damaged_idx_files_through_the_cli(damage, file, needles, tmp_path, capsys):
    data = tmp_path / "data"
    _idx_set(data)
    damage(data / IDX_FILES[file])
    code, err = _cli(["train", "--dataset", "mnist", "--data-dir", str(data), "--epochs", "1",
                      "--out", str(tmp_path / "r")], capsys)
    _one_line_exit_2(code, err, *needles)
    assert not (tmp_path / "r").exists()  # nothing written for a run that could not start


def test_idx_images_of_the_wrong_size_for_the_conv_model(tmp_path, capsys):
    data = tmp_path / "data"
    _idx_set(data, (20, 10, 10), (10, 10, 10))
    code, err = _cli(["train", "--model", "conv", "--dataset", "mnist", "--data-dir", str(data), "--epochs", "1",
                      "--out", str(tmp_path / "r")], capsys)
    _one_line_exit_2(code, err, "H and W multiples of 4", "(1, 10, 10)", "dense model")


# ------------------------------------------------------------------------------------ arrays
def test_8x8_images_into_a_conv_model_built_for_28x28(tmp_path):
    model = aelab.build_model("conv", latent_dim=2, hidden_dims=[4, 8])
    data = aelab.from_arrays(np.random.default_rng(0).integers(0, 256, (40, 1, 8, 8), dtype=np.uint8))
    with pytest.raises(aelab.AelabError, match=r"built for inputs of shape \(1, 28, 28\) but got \(1, 8, 8\)"):
        aelab.train(model, data, out=tmp_path / "r", epochs=1, progress=False, log=None)
    assert not (tmp_path / "r").exists()


def test_flat_features_into_the_conv_model(tmp_path):
    data = aelab.from_arrays(np.random.default_rng(0).random((40, 20), dtype=np.float32))
    with pytest.raises(aelab.AelabError, match=r"convolutional models need images .* got \(20,\); .*--image-size 28,28 .*use the dense"):
        aelab.train("conv", data, out=tmp_path / "r", epochs=1, progress=False, log=None)


@pytest.mark.parametrize("x, needle", [
    (np.array([["a", "b"]] * 10), "dtype <U1"),
    (np.array([[object(), 1]] * 10, dtype=object), "dtype object"),
    (np.zeros((10, 3), complex), "dtype complex128"),
    (np.zeros((10, 3), bool), "dtype torch.bool"),
    ([[1.0, 2.0], [3.0]], "rows of different lengths"),
    (np.zeros(10, np.float32), "expected (N, features...)"),
    (np.zeros((0, 3), np.float32), "is empty"),
])
def test_arrays_of_the_wrong_dtype_or_shape(x, needle):
    with pytest.raises(aelab.AelabError) as e:
        aelab.from_arrays(x)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x_train", "x_test"])
def test_nan_or_inf_in_input_data(bad, where):
    x = np.random.default_rng(0).random((30, 4)).astype(np.float32)
    poisoned = x.copy()
    poisoned[3, 2] = bad
    kwargs = {"x_train": poisoned, "x_test": x} if where == "x_train" else {"x_train": x, "x_test": poisoned}
    with pytest.raises(aelab.AelabError, match=f"{where} contains 1 NaN or infinite values; clean or impute"):
        aelab.from_arrays(**kwargs)


@pytest.mark.parametrize("labels, needle", [
    (np.arange(40) % 10 + 3, "holds the label 12 but there are 10 classes; labels must lie in 0..9"),
    (np.arange(40) % 10 - 1, "holds negative labels"),
    (np.arange(40) / 3, "holds non-integer values"),
    (np.array(["cat"] * 40), "labels must be class indices"),
])
def test_labels_outside_the_classes(labels, needle):
    x = np.random.default_rng(0).random((40, 4)).astype(np.float32)
    with pytest.raises(aelab.AelabError, match="y_train") as e:
        aelab.from_arrays(x, labels, classes=[str(i) for i in range(10)])
    assert needle in str(e.value)


# ------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("text, needles", [
    ('latnet_dim = 8', ["unknown setting 'latnet_dim'", "did you mean 'latent_dim'", "valid settings:"]),
    ('batchsize = 8', ["unknown setting 'batchsize'", "did you mean 'batch_size'"]),
    ('epochs = "ten"', ["setting 'epochs'", "must be an integer, got 'ten'"]),
    ('lr = "fast"', ["setting 'lr'", "must be a number"]),
    ('binarize = "yes"', ["setting 'binarize'", "must be true or false"]),
    ('hidden_dims = [1.5, 2]', ["setting 'hidden_dims'", "a list of integers"]),
    ('hidden_dims = "a,b"', ["setting 'hidden_dims'", "a list of integers"]),
    ('latent_dim = 8.5', ["setting 'latent_dim'", "an integer"]),
    ('lr = 0', ["lr must be a positive number, got 0.0", "--lr 1e-3"]),
    ('lr = -0.1', ["lr must be a positive number"]),
    ('lr = nan', ["lr must be a positive number, got nan"]),
    ('latent_dim = 0', ["latent_dim must be at least 1, got 0"]),
    ('model = "sparse"\npenalty = "topk"\nlatent_dim = 8\nk = 9', ["k (9) cannot exceed latent_dim (8)"]),
    ('model = "sparse"\ntarget_sparsity = 0', ["target_sparsity must lie strictly between 0 and 1"]),
    ('model = "sparse"\ntarget_sparsity = 1.0', ["target_sparsity must lie strictly between 0 and 1"]),
    ('model = "sparse"\ntarget_sparsity = 1.5', ["target_sparsity must lie strictly between 0 and 1"]),
    ('batch_size = 0', ["batch_size must be at least 1"]),
    ('seed = 99999999999999999', ["seed must lie in 0..4294967295"]),
    ('epochs = 2\nepochs = 3', ["is not valid TOML"]),
    ('[[x]]]', ["is not valid TOML"]),
])
def test_bad_config_file(text, needles, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(text + "\n")
    code, err = _cli(["train", "--config", "c.toml"], capsys)
    _one_line_exit_2(code, err, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]  # nothing trained, nothing written


@pytest.mark.parametrize("text, needle", [
    ("[1, 2]", "must hold a table of settings, not list"),
    ("[" * 50_000, "nested too deeply"),
    ('{"epochs": 1,}', "is not valid JSON"),
])
def test_bad_json_config(text, needle, tmp_path, capsys):
    (tmp_path / "c.json").write_text(text)
    _one_line_exit_2(*_cli(["train", "--config", str(tmp_path / "c.json")], capsys), needle)


@pytest.mark.parametrize("flags, needles", [
    (["--model", "sparse", "--target-sparsity", "2"], ["target_sparsity must lie strictly between 0 and 1"]),
    # settings are never dropped: one that the chosen family does not read is refused, naming the flag and its owners
    (["--model", "dense", "--k", "3", "--epochs", "1"], ["--k does not apply to --model dense", "sparse"]),
    (["--model", "dense", "--beta", "9"], ["--beta does not apply to --model dense", "vae, conv-vae, multimodal"]),
    (["--model", "vae", "--fusion", "poe"], ["--fusion does not apply to --model vae", "multimodal"]),
    (["--model", "multimodal", "--hidden-dims", "8,8"], ["--hidden-dims does not apply to --model multimodal"]),
    (["--model", "multimodal", "--loss", "mse"], ["--loss does not apply to --model multimodal"]),
    (["--model", "conv", "--modalities", "image,text"], ["--modalities does not apply to --model conv"]),
    (["--model", "sparse", "--penalty", "topk", "--latent-dim", "4", "--k", "5"], ["k (5) cannot exceed"]),
    (["--lr", "0"], ["lr must be a positive number"]),
    (["--weight-init", "xavier"], ["weight_init must be 'he' or 'torch'"]),
    (["--grad-clip", "-1"], ["grad_clip must be a positive number"]),
    (["--model", "transformer"], ["unknown model 'transformer'", "choose one of: dense, conv"]),
    (["--dataset", "cifar10"], ["unknown dataset 'cifar10'", "choose one of: mnist5k, mnist, fashion-mnist"]),
    (["--hidden-dims", "10000000000000", "--epochs", "1"], ["does not fit in memory", "smaller --hidden-dims"]),
])
def test_bad_flags(flags, needles, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_line_exit_2(*_cli(["train", *flags], capsys), *needles)


def test_every_registered_model_is_listed_for_an_unknown_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text(json.dumps({"model": "dnse"}))
    code, err = _cli(["train", "--config", "c.json"], capsys)
    _one_line_exit_2(code, err, "unknown model 'dnse'", "did you mean 'dense'", *aelab.MODELS)


# ------------------------------------------------------------------------------------ run folders
def _finished_run(tmp_path: Path, small_mnist) -> Path:
    return aelab.train("dense", small_mnist, out=tmp_path / "run", epochs=1, progress=False, log=None,
                       report=False, hidden_dims=[8], latent_dim=2).path


def test_open_run_on_something_that_is_not_a_run(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(aelab.AelabError, match="is not a folder; give the path of a run folder"):
        aelab.open_run(tmp_path / "file.txt")
    with pytest.raises(aelab.AelabError, match=r"is not a run folder \(no config.json\)"):
        aelab.open_run(tmp_path)


def test_run_folder_of_another_format_version(small_mnist, tmp_path, capsys):
    run = _finished_run(tmp_path, small_mnist)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(aelab.AelabError, match="written by run-folder format 99; this aelab reads format 1"):
        aelab.open_run(run)
    code, err = _cli(["train", "--out", str(run), "--resume"], capsys)
    _one_line_exit_2(code, err, "run-folder format 99", "use a matching aelab version")


def test_resume_into_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    code, err = _cli(["train", "--out", str(tmp_path / "photos"), "--resume"], capsys)
    _one_line_exit_2(code, err, "is not a run folder (no config.json) so there is nothing to resume")
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["cat.jpg"]


def test_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, err = _cli(["train", "--out", str(tmp_path / "notes.txt")], capsys)
    _one_line_exit_2(code, err, "notes.txt is a file, not a run folder")
    code, err = _cli(["train", "--out", str(tmp_path / "notes.txt" / "sub"), "--epochs", "1"], capsys)
    _one_line_exit_2(code, err, "cannot create the run folder", "choose another --out")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_checkpoint_of_another_model_is_a_clear_error(small_mnist, tmp_path):
    run = _finished_run(tmp_path, small_mnist)
    other = aelab.build_model("dense", latent_dim=3, hidden_dims=[8])
    with pytest.raises(aelab.AelabError, match="does not fit this model and config"):
        aelab.train(other, small_mnist, out=run, resume=True, epochs=2, progress=False, log=None)


# ------------------------------------------------------------------------------------ the real process
@pytest.mark.slow
def test_real_process_one_line_and_debug_traceback(tmp_path):
    """What a user sees in a terminal: one line and exit 2; with --debug, the traceback."""
    cmd = [sys.executable, "-m", "aelab", "train", "--model", "sparse", "--target-sparsity", "1.5"]
    plain = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == ["aelab: error: target_sparsity must lie strictly between 0 and 1, "
                                                 "got 1.5"]
    debug = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True, cwd=tmp_path,
                           timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "AelabError" in debug.stderr


def test_a_single_test_row_still_gets_a_run_and_a_report(tmp_path):
    """Too few test codes for a 2-D map: the map is skipped, everything else is written."""
    x = np.random.default_rng(0).random((50, 20)).astype("float32")
    run = aelab.train("dense", aelab.from_arrays(x[:49], x_test=x[49:]), out=tmp_path / "r", epochs=1,
                      progress=False, log=None)
    assert (run.path / "report.html").is_file() and (run.path / "loss.png").is_file()
    assert not (run.path / "latent.png").exists()


def test_labels_of_one_class_skip_the_probes_with_a_note(tmp_path):
    x = np.random.default_rng(0).random((50, 20)).astype("float32")
    run = aelab.train("dense", aelab.from_arrays(x, np.zeros(50, dtype=int)), out=tmp_path / "r", epochs=1,
                      progress=False, log=None)
    result = json.loads((run.path / "evaluation.json").read_text())
    assert not any(k.startswith("probe") for k in result)
    assert any("single class" in n for n in result["notes"])
