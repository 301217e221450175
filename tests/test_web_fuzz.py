"""Property-based fuzzing of the explorer's API from its own OpenAPI schema (hypothesis, no schemathesis).

For every operation in ``/openapi.json``, requests are drawn from the schema (valid values at and near the
bounds) mixed with arbitrary JSON, wrong types and raw bytes. Whatever comes in: never a 5xx, errors are JSON
``{"detail": ...}`` without a traceback, and a 200 answers in the documented form.
"""
from __future__ import annotations

import json
import math
import warnings
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aelab.web import create_app
from tests.test_predict import TINY_RUNS, tiny_runs

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

DEFAULT_RUN = sorted(TINY_RUNS)[0]  # the first run of the folder answers requests without ?run=
FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Every operation of the schema; test_every_operation_is_fuzzed keeps this list equal to /openapi.json.
OPERATIONS = [("get", "/api/runs"), ("get", "/api/info"), ("get", "/api/points"), ("get", "/api/items/{index}"),
              ("get", "/api/images/{index}"), ("post", "/api/encode"), ("post", "/api/decode"),
              ("post", "/api/interpolate"), ("post", "/api/sample"), ("post", "/api/text"),
              ("get", "/api/recordings"), ("get", "/api/recordings/{index}")]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(tiny_runs(tmp_path_factory), method="pca", device="cpu", log=None)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def schema(client):
    return client.get("/openapi.json").json()


# ---------------------------------------------------------------------------------------------- strategies
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


def resolve(node: dict, spec: dict) -> dict:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def from_schema(node: dict, spec: dict) -> st.SearchStrategy:
    """Values the JSON schema ``node`` allows (with bounds honoured), for the parts of JSON Schema FastAPI writes."""
    node = resolve(node, spec)
    if "anyOf" in node:
        return st.one_of([from_schema(n, spec) for n in node["anyOf"]])
    kind = node.get("type")
    if kind == "integer":
        lo, hi = node.get("minimum"), node.get("maximum")
        edges = [v for v in (lo, hi, 0, 1, (lo or 0) - 1, (hi or 0) + 1) if v is not None]
        return st.integers(lo, hi) | st.sampled_from(edges)
    if kind == "number":
        lo, hi = node.get("minimum"), node.get("maximum")
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False) | st.sampled_from(
            [v for v in (lo, hi, 0.0, math.nan, math.inf, -math.inf, 1e308) if v is not None])
    if kind == "string":
        return st.text(max_size=min(node.get("maxLength", 40), 40))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        items = from_schema(node.get("items", {}), spec) if node.get("items") else ANY_JSON
        return st.lists(items, min_size=node.get("minItems", 0), max_size=min(node.get("maxItems", 30), 30))
    if kind == "object":
        props = node.get("properties", {})
        required = set(node.get("required", []))
        return st.fixed_dictionaries({k: from_schema(v, spec) for k, v in props.items() if k in required},
                                     optional={k: from_schema(v, spec) for k, v in props.items() if k not in required})
    return ANY_JSON


def codes_of_size(d: int) -> st.SearchStrategy:
    """{"z": [...]} of exactly ``d`` values (the schema alone rarely draws the run's latent size), mostly valid,
    sometimes with values that are not."""
    clean = st.floats(-1e4, 1e4)
    dirty = clean | st.sampled_from([math.nan, math.inf, -math.inf, 1e4 + 1, -1e300])
    return st.fixed_dictionaries({"z": st.lists(clean, min_size=d, max_size=d) | st.lists(dirty, min_size=d, max_size=d)})


def body_strategy(operation: dict, spec: dict, latent_dim: int) -> st.SearchStrategy:
    """Raw request bodies: the schema's objects, wrong JSON, and bytes that are not JSON at all."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    valid = from_schema(content["schema"], spec) if content else st.just({})
    if content and resolve(content["schema"], spec).get("title") == "DecodeRequest":
        valid = st.one_of(valid, codes_of_size(latent_dim))
    as_json = st.one_of(valid, valid, ANY_JSON).map(lambda v: json.dumps(v, allow_nan=True).encode())
    return st.one_of(as_json, as_json, as_json, st.binary(max_size=64), st.just(b""))


def param_strategy(param: dict, spec: dict) -> st.SearchStrategy:
    """A parameter's value as URL text: from its schema, or any text (the run's name: also the served ones)."""
    values = from_schema(param.get("schema", {}), spec).map(lambda v: "" if v is None else str(v))
    if param["name"] == "run":
        served = st.sampled_from(list(TINY_RUNS))
        return st.one_of(served, served, served, values, st.text(max_size=20))
    return st.one_of(values, values, st.text(max_size=20))


# ---------------------------------------------------------------------------------------------- the checks
def check_answer(answer, route: str) -> None:
    assert answer.status_code < 500, (route, answer.status_code, answer.text[:300])
    assert "Traceback" not in answer.text and 'File "' not in answer.text
    assert answer.headers.get("x-content-type-options") == "nosniff"
    if answer.status_code >= 400:
        assert answer.headers["content-type"] == "application/json", answer.headers
        assert "detail" in answer.json()
    elif route == "/api/images/{index}":
        assert answer.content.startswith(b"\x89PNG")
    else:
        body = answer.json()
        if route in ("/api/decode",):
            assert body["image"].startswith("data:image/png;base64,")
        elif route == "/api/encode":
            assert all(isinstance(v, float) for v in body["z"])
        elif route in ("/api/sample", "/api/interpolate", "/api/text"):
            assert all(i.startswith("data:image/png;base64,") for i in body["images"])


def test_every_operation_is_fuzzed(schema):
    documented = sorted((method, path) for path, ops in schema["paths"].items() for method in ops)
    assert documented == sorted(OPERATIONS)


@pytest.mark.parametrize("method, route", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
@FUZZ
@given(data=st.data())
def test_no_request_gets_a_5xx(client, schema, method, route, data):
    operation = schema["paths"][route][method]
    path, query = route, {}
    for param in operation.get("parameters", []):
        if param["in"] == "query" and data.draw(st.booleans(), label=f"send {param['name']}"):
            query[param["name"]] = data.draw(param_strategy(param, schema), label=param["name"])
        elif param["in"] == "path":
            value = data.draw(param_strategy(param, schema), label=param["name"])
            path = path.replace("{" + param["name"] + "}", quote(value, safe="") or "0")
    if method == "post":
        run = TINY_RUNS.get(query.get("run", DEFAULT_RUN), TINY_RUNS[DEFAULT_RUN])  # the run that will answer
        body = data.draw(body_strategy(operation, schema, run[1]["latent_dim"]), label="body")
        answer = client.post(path, params=query, content=body, headers={"content-type": "application/json"})
    else:
        answer = client.get(path, params=query)
    check_answer(answer, route)


@FUZZ
@given(route=st.sampled_from(["/api/decode", "/api/encode", "/api/interpolate", "/api/sample"]),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                     "multipart/form-data; boundary=x", ""]),
       body=st.binary(max_size=200))
def test_any_bytes_with_any_content_type(client, route, content_type, body):
    check_answer(client.post(route, content=body, headers={"content-type": content_type}), route)
