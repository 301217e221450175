"""Property-based tests: random bytes at the IDX reader, random settings at the config loader.

Whatever comes in, only aelab's own one-line AelabError may come out; and whatever is accepted is
sound (an array of the shape the header promises; a config that passes its own validation).
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aelab.config import ALIASES, RunConfig, read_config_file
from aelab.data.idx import parse_idx, read_idx, read_image_label_pair
from aelab.errors import AelabError

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FIELDS = [f.name for f in dataclasses.fields(RunConfig)]
TYPE_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]


def _one_line(exc: AelabError) -> None:
    assert str(exc) and "\n" not in str(exc)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("prop")


# ------------------------------------------------------------------------------------ IDX reader
@FAST
@given(st.binary(max_size=300))
def test_idx_parser_random_bytes(data):
    try:
        arr = parse_idx(data, "random")
    except AelabError as exc:
        _one_line(exc)
        return
    ndim = data[3]
    assert arr.shape == struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])


@st.composite
def idx_like(draw):
    """Mostly-valid IDX bytes: a real header whose dimensions and body length may disagree."""
    code = draw(st.sampled_from(TYPE_CODES + [draw(st.integers(0, 255))]))
    ndim = draw(st.integers(0, 6))
    dims = draw(st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)), min_size=ndim, max_size=ndim))
    header = bytes([0, 0, code, ndim]) + struct.pack(f">{ndim}I", *dims)
    item = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(code, 1)
    exact = math.prod(dims) * item if math.prod(dims) * item < 2000 else 10
    body = draw(st.sampled_from([exact, max(exact - 1, 0), exact + 1, draw(st.integers(0, 64))]))
    return header + bytes(body), dims


@FAST
@given(idx_like())
def test_idx_parser_headers_that_lie(case):
    data, dims = case
    try:
        arr = parse_idx(data, "lying")
    except AelabError as exc:
        _one_line(exc)
        return
    assert arr.shape == tuple(dims)


@FAST
@given(st.binary(max_size=200), st.sampled_from(["raw", "gzip", "gzip-cut", "gzip-magic"]))
def test_idx_file_reader_random_files(folder, data, wrap):
    if wrap == "gzip":
        data = gzip.compress(data)
    elif wrap == "gzip-cut":
        data = gzip.compress(data)[: max(2, len(data) // 2)]
    elif wrap == "gzip-magic":
        data = b"\x1f\x8b" + data
    path = folder / "x-idx3-ubyte.gz"
    path.write_bytes(data)
    try:
        read_idx(path)
    except AelabError as exc:
        _one_line(exc)
        assert str(path) in str(exc)


@FAST
@given(idx_like(), idx_like())
def test_image_label_pair_random(folder, images, labels):
    (folder / "img").write_bytes(images[0])
    (folder / "lab").write_bytes(labels[0])
    try:
        x, y = read_image_label_pair(folder / "img", folder / "lab")
    except AelabError as exc:
        _one_line(exc)
        return
    assert x.ndim == 3 and y.ndim == 1 and len(x) == len(y) and y.dtype == np.int64


# ------------------------------------------------------------------------------------ config loader
keys = st.one_of(st.sampled_from(FIELDS), st.sampled_from(sorted(ALIASES)), st.text(max_size=12),
                 st.sampled_from([f.replace("_", "-") for f in FIELDS]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 300), st.floats(),
                    st.floats(-2, 2), st.text(max_size=10), st.sampled_from(["dense", "sparse", "topk", "mse", "bce",
                                                                            "256,128", "a,b", "none"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_config_from_random_dicts(raw):
    try:
        cfg = RunConfig.from_dict(raw, source="random")
    except AelabError as exc:
        _one_line(exc)
        return
    assert cfg.validate() is cfg  # what is accepted passes its own checks ...
    back = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())), source="again")  # ... and round-trips
    assert back.to_dict() == cfg.to_dict()


@FAST
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)), st.sampled_from([".json", ".toml"]))
def test_config_file_random_bytes(folder, data, suffix):
    path = folder / f"c{suffix}"
    path.write_bytes(data)
    try:
        RunConfig.load(path)
    except AelabError as exc:
        _one_line(exc)


@FAST
@given(st.dictionaries(keys, values, max_size=6), st.sampled_from([None, 1, 2, "1", [1]]))
def test_run_config_json_random_contents(folder, raw, version):
    path = folder / "config.json"
    payload = dict(raw) if version is None else {**raw, "format_version": version}
    path.write_text(json.dumps(payload))
    try:
        cfg = RunConfig.load(path)
    except AelabError as exc:
        _one_line(exc)
        return
    assert cfg.validate() is cfg
    assert read_config_file(path).get("format_version", 1) == 1
