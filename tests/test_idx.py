import gzip

import numpy as np
import pytest

from aelab.data.idx import parse_idx, read_idx, read_image_label_pair, write_idx
from aelab.errors import AelabError


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, dtype, suffix):
    arr = (np.arange(2 * 3 * 5) % 250).astype(dtype).reshape(2, 3, 5)
    path = tmp_path / f"a-idx3-ubyte{suffix}"
    write_idx(path, arr)
    back = read_idx(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def _bytes(arr):
    import io
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x"
        write_idx(p, arr, compress=False)
        return p.read_bytes()


def test_wrong_magic_is_named(tmp_path):
    raw = bytearray(_bytes(np.zeros((2, 4, 4), np.uint8)))
    raw[0] = 7
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(bytes(raw))
    with pytest.raises(AelabError, match=r"bad-idx3-ubyte is not an IDX file \(bad magic"):
        read_idx(p)


def test_truncated_file_is_named(tmp_path):
    raw = _bytes(np.zeros((10, 4, 4), np.uint8))
    p = tmp_path / "short-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(raw[:-7]))
    with pytest.raises(AelabError, match=r"short-idx3-ubyte.gz is truncated: .*\(160 bytes\) but only 153"):
        read_idx(p)


def test_truncated_header():
    with pytest.raises(AelabError, match="truncated inside its header"):
        parse_idx(b"\x00\x00\x08\x03\x00\x00", "hdr")


def test_trailing_bytes_rejected():
    raw = _bytes(np.zeros((2, 2), np.uint8)) + b"xx"
    with pytest.raises(AelabError, match="trailing data"):
        parse_idx(raw, "tail")


def test_damaged_gzip(tmp_path):
    good = gzip.compress(_bytes(np.zeros((50, 8, 8), np.uint8)))
    p = tmp_path / "dmg.gz"
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(AelabError, match="damaged gzip"):
        read_idx(p)


def test_label_count_mismatch(tmp_path):
    write_idx(tmp_path / "img.gz", np.zeros((5, 4, 4), np.uint8))
    write_idx(tmp_path / "lab.gz", np.zeros(4, np.uint8))
    with pytest.raises(AelabError, match="has 5 images but .* has 4 labels"):
        read_image_label_pair(tmp_path / "img.gz", tmp_path / "lab.gz")


def test_images_must_be_3d(tmp_path):
    write_idx(tmp_path / "img.gz", np.zeros((5, 16), np.uint8))
    write_idx(tmp_path / "lab.gz", np.zeros(5, np.uint8))
    with pytest.raises(AelabError, match=r"expected images \(N, H, W\)"):
        read_image_label_pair(tmp_path / "img.gz", tmp_path / "lab.gz")
