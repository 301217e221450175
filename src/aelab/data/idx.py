"""Reader and writer for the IDX format of MNIST and Fashion-MNIST (LeCun et al.).

An IDX file is: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the values. Files may be gzip-compressed (``.gz``). Every check names the file.
"""
from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import AelabError

# type code -> numpy dtype (big-endian where it matters)
_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
          np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise AelabError(f"{path} does not exist")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise AelabError(f"{path} is a damaged gzip file ({exc}); delete it and fetch it again") from None
    return raw


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array, checking the magic number, the dimensions and the length."""
    if len(data) < 4:
        raise AelabError(f"{name} is too short to be an IDX file ({len(data)} bytes); fetch it again")
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in _TYPES or not 1 <= ndim <= 4:
        raise AelabError(f"{name} is not an IDX file (bad magic number 0x{data[:4].hex()}); "
                         f"check that it is an MNIST-style -idx file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise AelabError(f"{name} is truncated inside its header; fetch it again")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_TYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: four 2**32 dimensions must not wrap around
    if math.prod(d for d in dims if d) * dtype.itemsize > 2**47:  # no array can have such a shape, even empty
        raise AelabError(f"{name} has an impossible header ({'x'.join(map(str, dims))} values); the file is "
                         f"corrupt, fetch it again")
    got = len(data) - header
    if got < expected:
        raise AelabError(f"{name} is truncated: header promises {'x'.join(map(str, dims))} values "
                         f"({expected} bytes) but only {got} bytes follow; fetch it again")
    if got > expected:
        raise AelabError(f"{name} has {got - expected} bytes of trailing data after "
                         f"{'x'.join(map(str, dims))} values; the file is corrupt, fetch it again")
    arr = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False) if dtype.byteorder == ">" else arr


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or .gz) into a numpy array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), name=str(path))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file; gzip it when the name ends in .gz (or ``compress`` says so)."""
    path = Path(path)
    array = np.asarray(array)
    if array.dtype.newbyteorder("=") not in _CODES:
        raise AelabError(f"IDX files cannot hold {array.dtype} values; convert the array first to one of "
                         f"uint8, int8, int16, int32, float32, float64 (uint8 for images and labels)")
    if not 1 <= array.ndim <= 4:
        raise AelabError(f"an IDX file holds an array of 1 to 4 dimensions, not {array.ndim}; reshape it first")
    code = _CODES[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = array.astype(array.dtype.newbyteorder(">"), copy=False).tobytes()
    payload = header + body
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def type_code(array: np.ndarray) -> int:
    """The IDX type code of ``array``'s element type (0x08 ubyte ... 0x0E double)."""
    return _CODES[np.dtype(array.dtype).newbyteorder("=")]


def read_image_label_pair(images: str | Path, labels: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read matching MNIST-style image and label files, checking that a model can use what they hold.

    Images must be 3-D (N, H, W) of IDX type 0x08 (unsigned bytes 0..255) with at least one pixel;
    labels 1-D (N,) of type 0x08, one per image. Any other element type is refused, even when its
    values would fit in a byte (int32 pixels 0..255, say): the message says what the file holds (its
    type; NaN/inf or values outside 0..255) and how to rewrite it with :func:`write_idx`. Returns the
    images as uint8 (N, H, W) and the labels as int64 (N,); each error is one line naming the file.
    """
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3:
        raise AelabError(f"{images} holds an array of shape {x.shape}; expected images (N, H, W): it is not an "
                         f"MNIST-style images file, fetch it again")
    if y.ndim != 1:
        raise AelabError(f"{labels} holds an array of shape {y.shape}; expected labels (N,): it is not an "
                         f"MNIST-style labels file, fetch it again")
    if len(x) != len(y):
        raise AelabError(f"{images} has {len(x)} images but {labels} has {len(y)} labels; "
                         f"the two files do not belong together")
    if x.size == 0:
        raise AelabError(f"{images} holds no pixels (shape {x.shape}); fetch it again")
    if x.dtype != np.uint8:
        raise AelabError(f"{images} holds {_what(x)}; images must be unsigned bytes 0..255 (IDX type 0x08): "
                         f"{_image_fix(x)} and save them with aelab.data.write_idx(path, images.astype('uint8'))")
    if y.dtype != np.uint8:
        raise AelabError(f"{labels} holds {_what(y)}; labels must be integers stored as unsigned bytes (IDX type "
                         f"0x08): fetch it again, or save class indices with aelab.data.write_idx(path, "
                         f"labels.astype('uint8'))")
    return x, y.astype(np.int64)


def _what(a: np.ndarray) -> str:
    """What a non-empty array holds, for an error: its element type, and NaN/inf or its range."""
    head = f"{a.dtype} values (IDX type 0x{type_code(a):02X})"
    if a.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            return f"{head}, {bad} of them NaN or infinite"
        lo, hi = float(a.min()), float(a.max())
        frac = "" if np.array_equal(a, np.round(a)) else " with fractions"
        return f"{head} from {lo:g} to {hi:g}{frac}"
    return f"{head} from {int(a.min())} to {int(a.max())}"


def _image_fix(x: np.ndarray) -> str:
    """How to turn images of another element type into unsigned bytes, from what they hold."""
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        return "replace the NaN and infinite pixels, scale the images to 0..255"
    lo, hi = float(x.min()), float(x.max())
    if x.dtype.kind == "f" and lo >= 0 and hi <= 1 and not np.array_equal(x, np.round(x)):
        return "scale them to 0..255 (multiply pixels in [0, 1] by 255)"
    if lo < 0 or hi > 255:
        return "scale them to 0..255"
    if not np.array_equal(x, np.round(x)):
        return "round them to whole numbers"
    return "they lie in 0..255 already, so convert them"
