"""Data files that parse but hold what a model cannot use: every IDX element type, shape and count.

An MNIST-style folder is four IDX files; each may hold any of the six IDX element types (0x08 ubyte,
0x09 byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double), any shape and any values. Only unsigned
bytes (N, H, W) with as many labels (N,) of type 0x08 in the class range, train and test images of one
size, are let in; everything else is one AelabError line naming the file (exit 2 from the CLI), never a
traceback from inside a model. Complements tests/test_idx.py (the reader) and tests/test_bad_input.py.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import aelab
from aelab.cli import main
from aelab.data.datasets import IDX_FILES
from aelab.data.idx import read_idx, type_code, write_idx
from aelab.errors import AelabError

# IDX type code -> the element type write_idx stores for it
TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}
FEW = settings(max_examples=40, deadline=None)
PER_CODE = settings(max_examples=10, deadline=None)  # times six type codes


def _valid(n_train=6, n_test=4, size=(5, 5)) -> list[np.ndarray]:
    """The four arrays of a small valid MNIST-style set (images, labels, test images, test labels)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (n_train, *size), dtype=np.uint8), (np.arange(n_train) % 10).astype(np.uint8),
            rng.integers(0, 256, (n_test, *size), dtype=np.uint8), (np.arange(n_test) % 10).astype(np.uint8)]


def _write(folder: Path, arrays, gz: bool = True) -> list[Path]:
    """Write the four files (gzipped under their usual names, or as their uncompressed twins)."""
    paths = [folder / (name if gz else name.removesuffix(".gz")) for name in IDX_FILES]
    for path, arr in zip(paths, arrays):
        write_idx(path, arr)
    return paths


def _load(arrays, gz: bool = True):
    """Load the four arrays as dataset 'mnist'; returns (dataset or None, error or None, file paths)."""
    with tempfile.TemporaryDirectory() as d:
        paths = _write(Path(d), arrays, gz)
        try:
            return aelab.load_dataset("mnist", data_dir=d), None, paths
        except AelabError as exc:
            return None, str(exc), paths


def _names_one_file(err: str, paths, which: int | None = None) -> None:
    assert err and "\n" not in err
    if which is None:
        assert any(str(p) in err for p in paths), err
    else:
        assert str(paths[which]) in err, err


def _values(dtype) -> st.SearchStrategy:
    """Any value of ``dtype``, NaN and infinities included for floats."""
    if np.dtype(dtype).kind == "f":
        return st.one_of(st.floats(0, 255, width=8 * np.dtype(dtype).itemsize), st.sampled_from([0.5, 255.0]),
                         st.floats(width=8 * np.dtype(dtype).itemsize))
    return hnp.from_dtype(np.dtype(dtype))


def typed_images(code: int) -> st.SearchStrategy:
    """Small (N, H, W) arrays of the element type of IDX type ``code``, with any values."""
    shapes = st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5))
    return hnp.arrays(TYPES[code], shapes, elements=_values(TYPES[code]))


# ------------------------------------------------------------------------------------ element types
@pytest.mark.parametrize("code", sorted(TYPES), ids=lambda c: f"0x{c:02X}")
@PER_CODE
@given(data=st.data(), slot=st.sampled_from([0, 2]), gz=st.booleans())
def test_images_of_every_idx_type(code, data, slot, gz):
    """Unsigned bytes load bit for bit; any other type is refused naming the file, its type and the fix."""
    x = data.draw(typed_images(code))
    arrays = _valid(n_train=len(x), n_test=len(x), size=x.shape[1:])
    arrays[slot] = x
    loaded, err, paths = _load(arrays, gz)
    if code == 0x08:
        assert err is None, err
        got = loaded.x_train if slot == 0 else loaded.x_test
        assert got.dtype == torch.uint8 and got.shape == (len(x), 1, *x.shape[1:])
        assert np.array_equal(got[:, 0].numpy(), x)
        return
    assert loaded is None
    _names_one_file(err, paths, slot)
    assert f"holds {x.dtype} values (IDX type 0x{code:02X})" in err
    assert "images must be unsigned bytes 0..255 (IDX type 0x08)" in err and "write_idx" in err
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        assert f"{int((~np.isfinite(x)).sum())} of them NaN or infinite" in err
    elif x.min() < 0 or x.max() > 255:
        assert "scale them to 0..255" in err


@pytest.mark.parametrize("code", sorted(TYPES), ids=lambda c: f"0x{c:02X}")
@PER_CODE
@given(values=st.lists(st.integers(0, 12), min_size=1, max_size=6), slot=st.sampled_from([1, 3]))
def test_labels_of_every_idx_type(code, values, slot):
    """Labels must be unsigned bytes in 0..9: other types, and bytes out of the class range, are refused."""
    y = np.array(values, dtype=TYPES[code])
    arrays = _valid(n_train=len(y), n_test=len(y))
    arrays[slot] = y
    data, err, paths = _load(arrays)
    if code == 0x08 and max(values) <= 9:
        assert err is None, err
        assert (data.y_train if slot == 1 else data.y_test).tolist() == values
        return
    assert data is None
    _names_one_file(err, paths, slot)
    if code != 0x08:
        assert f"holds {y.dtype} values (IDX type 0x{code:02X})" in err and "must be integers" in err
    else:
        assert "holds labels outside 0..9" in err and f"max {max(values)}" in err


# ------------------------------------------------------------------------------------ shapes and counts
dims = st.lists(st.integers(0, 4), min_size=1, max_size=4).map(tuple)


@st.composite
def four_shapes(draw):
    """Shapes of the four files: each the one that fits the others (three times in four) or any shape
    (empty ones included), so that about a third of the sets are usable."""
    n, m, h, w = (draw(st.integers(1, 3)) for _ in range(4))
    return [fits if draw(st.integers(0, 3)) else draw(dims) for fits in [(n, h, w), (n,), (m, h, w), (m,)]]


@FEW
@given(four_shapes())
@example([(2, 3, 1), (2,), (1, 3, 1), (1,)])  # a usable set, whatever the draws
def test_any_shapes_and_counts(shapes):
    """Four files of any shapes: loaded exactly when they make a usable set, else one line naming a file."""
    arrays = [np.zeros(s, np.uint8) for s in shapes]
    xtr, ytr, xte, yte = (tuple(s) for s in shapes)
    ok = (len(xtr) == 3 and len(xte) == 3 and len(ytr) == 1 and len(yte) == 1 and xtr[0] == ytr[0]
          and xte[0] == yte[0] and 0 not in xtr and 0 not in xte and xtr[1:] == xte[1:])
    data, err, paths = _load(arrays)
    if ok:
        assert err is None, err
        assert data.x_train.shape == (xtr[0], 1, *xtr[1:]) and data.x_test.shape == (xte[0], 1, *xte[1:])
        assert len(data.y_train) == xtr[0] and len(data.y_test) == xte[0]
    else:
        assert data is None
        _names_one_file(err, paths)


# ------------------------------------------------------------------------------------ known messages
@pytest.mark.parametrize("x, needles", [
    (np.full((3, 4, 4), 0.5, np.float32),
     ["holds float32 values (IDX type 0x0D) from 0.5 to 0.5 with fractions", "multiply pixels in [0, 1] by 255"]),
    (np.full((3, 4, 4), 200, np.int32), ["holds int32 values (IDX type 0x0C) from 200 to 200",
                                         "they lie in 0..255 already, so convert them and save"]),
    (np.full((3, 4, 4), 300, np.int16), ["holds int16 values (IDX type 0x0B) from 300 to 300",
                                         "scale them to 0..255"]),
    (np.full((3, 4, 4), -1, np.int8), ["holds int8 values (IDX type 0x09) from -1 to -1", "scale them to 0..255"]),
    (np.array([[[np.nan, 1.0], [np.inf, 2.0]]] * 3), ["holds float64 values (IDX type 0x0E), 6 of them NaN or "
                                                      "infinite", "replace the NaN and infinite pixels"]),
    (np.full((3, 4, 4), 7.5, np.float64), ["from 7.5 to 7.5 with fractions", "round them to whole numbers"]),
])
def test_image_messages(x, needles):
    arrays = _valid(n_train=3, n_test=3, size=x.shape[1:])
    arrays[0] = x
    data, err, paths = _load(arrays)
    assert data is None and err.startswith(f"{paths[0]} holds ")
    for needle in needles:
        assert needle in err, (needle, err)


def test_train_and_test_images_of_different_sizes_name_both_files():
    arrays = _valid()
    arrays[2] = np.zeros((4, 6, 5), np.uint8)
    data, err, paths = _load(arrays)
    assert "train images are (5, 5) but test images are (6, 5)" in err
    assert str(paths[0]) in err and str(paths[2]) in err and "fetch them again" in err


def test_type_code_of_every_type():
    assert {type_code(np.zeros(1, t)): t for t in TYPES.values()} == TYPES


@pytest.mark.parametrize("array, needle", [
    (np.zeros(3, np.int64), "cannot hold int64 values"),
    (np.zeros(3, bool), "cannot hold bool values"),
    (np.zeros((1,) * 5, np.uint8), "1 to 4 dimensions, not 5"),
    (np.uint8(3), "1 to 4 dimensions, not 0"),
])
def test_write_idx_refuses_what_it_cannot_store(tmp_path, array, needle):
    with pytest.raises(AelabError, match=needle):
        write_idx(tmp_path / "x", array)
    assert not (tmp_path / "x").exists()


def test_big_endian_arrays_round_trip(tmp_path):
    x = np.arange(12, dtype=">i4").reshape(3, 4)
    write_idx(tmp_path / "x", x)
    back = read_idx(tmp_path / "x")
    assert back.dtype == np.int32 and np.array_equal(back, x)


# ------------------------------------------------------------------------------------ the command line
def _bad_images_nan(folder):
    write_idx(folder / IDX_FILES[0], np.full((6, 5, 5), np.nan, np.float32))


def _bad_images_int16(folder):
    write_idx(folder / IDX_FILES[2], np.full((4, 5, 5), 1000, np.int16))


def _bad_labels_double(folder):
    write_idx(folder / IDX_FILES[3], np.zeros(4, np.float64))


def _bad_count(folder):
    write_idx(folder / IDX_FILES[1], np.zeros(5, np.uint8))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("damage, file, needle", [
    (_bad_images_nan, 0, "150 of them NaN or infinite"),
    (_bad_images_int16, 2, "int16 values (IDX type 0x0B) from 1000 to 1000"),
    (_bad_labels_double, 3, "float64 values (IDX type 0x0E)"),
    (_bad_count, 1, "has 6 images but"),
])
def test_cli_one_line_exit_2(damage, file, needle, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    _write(data, _valid())
    damage(data)
    capsys.readouterr()
    code = main(["train", "--dataset", "mnist", "--data-dir", str(data), "--epochs", "1", "--out",
                 str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("aelab: error: ") and "Traceback" not in err
    assert str(data / IDX_FILES[file]) in err and needle in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.usefixtures("one_thread")
def test_cli_trains_on_a_small_valid_set(tmp_path, capsys):
    """The other side of the property: a tiny set of odd-sized images that passes the checks trains."""
    data = tmp_path / "data"
    data.mkdir()
    _write(data, _valid(size=(3, 2)), gz=False)
    code = main(["train", "--dataset", "mnist", "--data-dir", str(data), "--epochs", "1", "--hidden-dims", "8",
                 "--latent-dim", "2", "--out", str(tmp_path / "r"), "--quiet", "--no-report"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "r" / "model.pt").is_file()
