"""The explorer's JSON API (aelab.web) through FastAPI's test client and over real HTTP, and ``aelab serve``.

Every route answers what the contract says (with known answers from the Predictor); every kind of bad
request gets a JSON 4xx without a traceback; no request path reaches a file outside the served assets and
the run's own files.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aelab
from aelab.cli import main
from aelab.predict import Predictor
from aelab.web import LIMITS, BackgroundServer, create_app
from tests.test_predict import TINY_RUNS, tiny_runs

with warnings.catch_warnings():  # starlette's note about httpx versions is not ours to act on
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tiny_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def app(runs):
    return create_app(runs, method="pca", device="cpu", log=None)  # a folder of runs: dense2, conv, vae


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def mnist():
    return aelab.load_dataset("mnist5k")


def pixels(data_url: str) -> np.ndarray:
    """The 8-bit pixels of a PNG data: URL (read with Pillow: an independent PNG decoder)."""
    head, b64 = data_url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def expected_pixels(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------- the routes
def test_runs_lists_every_run_of_the_folder(client):
    answer = client.get("/api/runs").json()
    assert [r["name"] for r in answer["runs"]] == sorted(TINY_RUNS)
    assert answer["default"] == "conv"  # the first by name
    assert {r["name"]: r["latent_dim"] for r in answer["runs"]} == {k: v[1]["latent_dim"] for k, v in TINY_RUNS.items()}


@pytest.mark.parametrize("run", list(TINY_RUNS))
def test_info(client, run):
    info = client.get("/api/info", params={"run": run}).json()
    model, settings = TINY_RUNS[run]
    assert (info["model"], info["latent_dim"], info["dataset"]) == (model, settings["latent_dim"], "mnist5k")
    assert info["classes"] == [str(d) for d in range(10)] and info["test_count"] == 1000
    assert info["can_sample"] == (model == "vae") and info["input_shape"] == [1, 28, 28]
    assert info["map"]["method"] == ("direct" if settings["latent_dim"] == 2 else "pca") and info["map"]["linear"]
    assert all(len(info["stats"][k]) == settings["latent_dim"] for k in ("mean", "std", "min", "max"))
    assert info["limits"] == LIMITS and info["epochs"] == 1


def test_info_without_run_is_the_default_run(client):
    assert client.get("/api/info").json()["run"] == "conv"


def test_points_one_per_test_item(client, mnist):
    points = client.get("/api/points", params={"run": "dense2"}).json()["points"]
    assert len(points) == 1000 and sorted(p["index"] for p in points) == list(range(1000))
    assert all(set(p) == {"x", "y", "label", "index"} for p in points)
    assert [p["label"] for p in points] == mnist.y_test.tolist()
    # the 2-D code is its own map: a point is the item's code
    z = Predictor.from_run(client.app.state.views["dense2"].path, device="cpu").encode(mnist.x_test[:5])
    np.testing.assert_allclose([[p["x"], p["y"]] for p in points[:5]], z.numpy(), atol=1e-4)


@pytest.mark.parametrize("run", list(TINY_RUNS))
def test_encode_and_decode_known_answers(client, runs, mnist, run):
    p = Predictor.from_run(runs / run, device="cpu")
    z = client.post("/api/encode", params={"run": run}, json={"index": 7}).json()["z"]
    np.testing.assert_allclose(z, p.encode(mnist.x_test[7])[0].numpy(), rtol=1e-5, atol=1e-6)
    image = client.post("/api/decode", params={"run": run}, json={"z": z}).json()["image"]
    want = expected_pixels(p.decode(torch.tensor(z)))[0, 0]
    assert np.abs(pixels(image).astype(int) - want).max() <= 1


def test_decode_any_code_within_the_bounds(client):
    answer = client.post("/api/decode", params={"run": "dense2"}, json={"z": [LIMITS["max_abs"], -3.5]})
    assert answer.status_code == 200 and pixels(answer.json()["image"]).shape == (28, 28)


def test_item_and_image(client, mnist):
    item = client.get("/api/items/12", params={"run": "conv"}).json()
    assert (item["index"], item["label"], item["class"]) == (12, int(mnist.y_test[12]), str(int(mnist.y_test[12])))
    np.testing.assert_array_equal(pixels(item["image"]), mnist.x_test[12, 0].numpy())  # the test image, exactly
    assert pixels(item["reconstruction"]).shape == (28, 28) and len(item["z"]) == 4
    png = client.get("/api/images/12", params={"run": "conv"})
    assert png.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png.content))), mnist.x_test[12, 0].numpy())


def test_interpolate_ends_at_the_two_items(client):
    answer = client.post("/api/interpolate", params={"run": "vae"}, json={"a": 3, "b": 9, "steps": 5}).json()
    assert len(answer["images"]) == len(answer["z"]) == 5
    za = client.post("/api/encode", params={"run": "vae"}, json={"index": 3}).json()["z"]
    zb = client.post("/api/encode", params={"run": "vae"}, json={"index": 9}).json()["z"]
    np.testing.assert_allclose(answer["z"][0], za, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(answer["z"][-1], zb, rtol=1e-5, atol=1e-6)
    recon = client.get("/api/items/3", params={"run": "vae"}).json()["reconstruction"]
    np.testing.assert_array_equal(pixels(answer["images"][0]), pixels(recon))


def test_sample_a_generative_run(client):
    a = client.post("/api/sample", params={"run": "vae"}, json={"n": 3, "seed": 5}).json()["images"]
    b = client.post("/api/sample", params={"run": "vae"}, json={"n": 3, "seed": 5}).json()["images"]
    assert len(a) == 3 and a == b
    assert client.post("/api/sample", params={"run": "vae"}, json={"n": 3, "seed": 6}).json()["images"] != a


def test_run_files_by_name(client, runs):
    info = client.get("/api/info", params={"run": "conv"}).json()
    assert "config.json" in info["files"] and "metrics.jsonl" in info["files"]
    answer = client.get("/files/config.json", params={"run": "conv"})
    assert answer.status_code == 200 and answer.json()["model"] == "conv"
    assert answer.content == (runs / "conv" / "config.json").read_bytes()
    # a run's file (a self-contained report) may style itself inline but never run a script: one policy, sandboxed
    policies = answer.headers.get_list("content-security-policy")
    assert len(policies) == 1 and "sandbox" in policies[0] and "script" not in policies[0]


def test_page_and_assets_are_served_with_security_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and "latent-space explorer" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the network
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert "https://" not in asset.text
    assert page.headers.get_list("content-security-policy") == [
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'"]  # no inline script or style, nothing from elsewhere
    assert page.headers["x-content-type-options"] == "nosniff"


def test_openapi_documents_the_contract(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path, method in [("/api/info", "get"), ("/api/points", "get"), ("/api/decode", "post"), ("/api/encode", "post")]:
        assert method in paths[path]
    assert schema["components"]["schemas"]["DecodeRequest"]["required"] == ["z"]
    assert schema["components"]["schemas"]["EncodeRequest"]["required"] == ["index"]


# ---------------------------------------------------------------------------------------------- bad requests
JSON = {"content-type": "application/json"}
BAD_REQUESTS = [  # (why, method, path, keyword arguments of the request, status)
    ("code too short", "post", "/api/decode?run=vae", dict(json={"z": [0.0] * 19}), 422),
    ("code too long", "post", "/api/decode?run=dense2", dict(json={"z": [0.0, 0.0, 0.0]}), 422),
    ("empty code", "post", "/api/decode", dict(json={"z": []}), 422),
    ("NaN", "post", "/api/decode?run=dense2", dict(content=b'{"z": [NaN, 0]}', headers=JSON), 422),
    ("infinity", "post", "/api/decode?run=dense2", dict(content=b'{"z": [Infinity, 0]}', headers=JSON), 422),
    ("overflowing float", "post", "/api/decode?run=dense2", dict(content=b'{"z": [1e999, 0]}', headers=JSON), 422),
    ("value out of bound", "post", "/api/decode?run=dense2", dict(json={"z": [1e4 + 1, 0]}), 422),
    ("strings for numbers", "post", "/api/decode?run=dense2", dict(json={"z": ["1", "2"]}), 422),
    ("code not a list", "post", "/api/decode", dict(json={"z": 3}), 422),
    ("extra field", "post", "/api/decode?run=dense2", dict(json={"z": [0, 0], "x": 1}), 422),
    ("body not an object", "post", "/api/decode", dict(json=[1, 2]), 422),
    ("broken JSON", "post", "/api/decode", dict(content=b'{"z": [1,', headers=JSON), 422),
    ("not UTF-8", "post", "/api/encode", dict(content=b'\xff\xfe\x00', headers=JSON), 400),
    ("no body", "post", "/api/encode", {}, 422),
    ("index out of range", "post", "/api/encode", dict(json={"index": 1000}), 422),
    ("negative index", "post", "/api/encode", dict(json={"index": -1}), 422),
    ("huge index", "post", "/api/encode", dict(json={"index": 10 ** 30}), 422),
    ("index as string", "post", "/api/encode", dict(json={"index": "3"}), 422),
    ("index as float", "post", "/api/encode", dict(json={"index": 3.5}), 422),
    ("index as bool", "post", "/api/encode", dict(json={"index": True}), 422),
    ("interpolation end out of range", "post", "/api/interpolate", dict(json={"a": 0, "b": 1000}), 422),
    ("too many steps", "post", "/api/interpolate", dict(json={"a": 0, "b": 1, "steps": LIMITS["max_steps"] + 1}), 422),
    ("one step", "post", "/api/interpolate", dict(json={"a": 0, "b": 1, "steps": 1}), 422),
    ("too many samples", "post", "/api/sample?run=vae", dict(json={"n": LIMITS["max_samples"] + 1}), 422),
    ("no samples", "post", "/api/sample?run=vae", dict(json={"n": 0}), 422),
    ("negative seed", "post", "/api/sample?run=vae", dict(json={"n": 1, "seed": -1}), 422),
    ("no prior", "post", "/api/sample?run=conv", dict(json={"n": 2}), 400),
    ("item out of range", "get", "/api/items/1000", {}, 422),
    ("item not a number", "get", "/api/items/abc", {}, 422),
    ("negative item", "get", "/api/items/-1", {}, 422),
    ("image out of range", "get", "/api/images/99999", {}, 422),
    ("recordings of a run without audio", "get", "/api/recordings", {}, 400),
    ("a recording of a run without audio", "get", "/api/recordings/0", {}, 400),
    ("a report the folder does not hold", "get", "/reports/nothing.html", {}, 404),
    ("a folder report's run file that is not listed", "get", "/reports/conv/model.pt", {}, 404),
    ("a folder report's unknown run", "get", "/reports/nope/report.html", {}, 404),
    ("unknown run", "get", "/api/info?run=nope", {}, 404),
    ("run name as a path", "get", "/api/points?run=../conv", {}, 404),
    ("run name too long", "get", "/api/info?run=" + "a" * 500, {}, 422),
    ("body over the limit", "post", "/api/decode", dict(json={"z": [0.5] * 100_000}), 413),
    ("body over the limit, chunked", "post", "/api/decode",
     dict(content=iter([b'{"z": [' + b"0," * 100_000] * 2), headers=JSON), 413),
    ("Content-Length not a number", "post", "/api/encode",
     dict(content=b'{"index": 1}', headers={**JSON, "content-length": "12x"}), 400),
    ("wrong method", "get", "/api/decode", {}, 405),
    ("wrong method", "post", "/api/info", {}, 405),
    ("unknown route", "get", "/api/nothing", {}, 404),
    ("unknown asset", "get", "/static/nothing.js", {}, 404),
    ("a run file that is not listed", "get", "/files/model.pt", {}, 404),
    ("a run file in a subfolder", "get", "/files/checkpoints/last.pt", {}, 404),
]


@pytest.mark.parametrize("why, method, path, kwargs, status", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_json_4xx(client, why, method, path, kwargs, status):
    answer = client.request(method.upper(), path, **kwargs)
    assert answer.status_code == status, answer.text[:300]
    assert answer.headers["content-type"] == "application/json"
    assert "detail" in answer.json()
    assert "Traceback" not in answer.text and 'File "' not in answer.text


def test_the_error_names_the_problem(client):
    answer = client.post("/api/decode", params={"run": "vae"}, json={"z": [0.0] * 19})
    assert answer.json()["detail"] == "z has 19 values but this run's codes have 20"
    answer = client.post("/api/encode", json={"index": 1000})
    assert answer.json()["detail"] == "index 1000 is out of range: the test set has 1000 items (0 to 999)"


INDEX_ROUTES = [("get", "/api/items/{i}", {}), ("get", "/api/images/{i}", {}),
                ("post", "/api/encode", {"index": "{i}"}), ("post", "/api/interpolate", {"a": 0, "b": "{i}"}),
                ("post", "/api/interpolate", {"a": "{i}", "b": 0})]


@pytest.mark.parametrize("index", [1000, 10 ** 6, 2 ** 31 - 1])
def test_an_index_past_the_end_is_the_same_422_on_every_route(client, index):
    """One rule (issue 22): /api/items and /api/images answered 404 where /api/encode answered 422."""
    answers = []
    for method, path, body in INDEX_ROUTES:
        body = {k: index if v == "{i}" else v for k, v in body.items()}
        answers.append(client.request(method.upper(), path.replace("{i}", str(index)), json=body or None))
    assert [a.status_code for a in answers] == [422] * len(INDEX_ROUTES)
    want = f"index {index} is out of range: the test set has 1000 items (0 to 999)"
    assert [a.json()["detail"] for a in answers] == [want] * len(INDEX_ROUTES)


def test_runs_list_the_folder_reports_and_serve_them(runs, tmp_path):
    folder = tmp_path / "tour"
    shutil.copytree(runs / "dense2", folder / "dense2")
    (folder / "report.html").write_text('<h1>Comparing 1 run</h1><a href="dense2/report.html">dense2</a>')
    (folder / "dense2" / "report.html").write_text("<h1>dense2</h1>")
    (folder / "notes.txt").write_text("not a report")
    client = TestClient(create_app(folder, method="pca", device="cpu", log=None))
    assert client.get("/api/runs").json()["reports"] == ["report.html"]
    page = client.get("/reports/report.html")
    assert page.status_code == 200 and "Comparing 1 run" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")  # no script, as a run's files
    assert client.get("/reports/dense2/report.html").text == "<h1>dense2</h1>"  # its relative link leads there
    assert client.get("/reports/notes.txt").status_code == 404
    # a single run served alone: no folder, no reports
    assert TestClient(create_app(folder / "dense2", method="pca", device="cpu", log=None)).get(
        "/api/runs").json()["reports"] == []


def test_a_run_that_cannot_be_shown_is_left_out_of_a_folder(runs, tmp_path, caplog):
    shutil.copytree(runs / "conv", tmp_path / "conv")
    (tmp_path / "unfinished").mkdir()  # a run that has not saved weights yet
    shutil.copy(runs / "conv" / "config.json", tmp_path / "unfinished" / "config.json")
    app = create_app(tmp_path, method="pca", device="cpu", log=None)
    assert list(app.state.views) == ["conv"]
    assert "left out: " in caplog.text and "holds no weights yet" in caplog.text
    shutil.rmtree(tmp_path / "conv")
    shutil.copytree(tmp_path / "unfinished", tmp_path / "unfinished-too")
    with pytest.raises(aelab.AelabError, match="none of the 2 runs in .* can be shown; the first: .*no weights"):
        create_app(tmp_path, method="pca", device="cpu", log=None)


def test_an_unexpected_error_is_a_500_without_its_traceback(runs, monkeypatch):
    app = create_app(runs / "conv", method="pca", device="cpu", log=None)
    monkeypatch.setattr(app.state.views["conv"], "decode", lambda z: 1 / 0)
    answer = TestClient(app, raise_server_exceptions=False).post("/api/decode", json={"z": [0.0] * 4})
    assert answer.status_code == 500 and answer.json() == {"detail": "internal error; see the server's log"}


def test_a_loopback_server_refuses_other_host_names(runs):
    app = create_app(runs / "conv", method="pca", device="cpu", allowed_hosts=["127.0.0.1", "localhost"], log=None)
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get("/api/info").status_code == 200
    # a page of another site that resolves its name to 127.0.0.1 (DNS rebinding) sends its own Host
    assert client.get("/api/info", headers={"host": "evil.example"}).status_code == 400


# ---------------------------------------------------------------------------------------------- paths, over HTTP
TRAVERSALS = [
    "/static/../../../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static/..%2f..%2f__init__.py",
    "/static/%2E%2E/app.py",
    "/static/..%5c..%5capp.py",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/files/../../../../../../etc/passwd",
    "/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/files/%2e%2e%2fconv%2fmodel.pt",
    "/files//etc/passwd",
    "/files/%2Fetc%2Fpasswd",
    "/files/checkpoints%2flast.pt",
    "/files/config.json%00.png",
    "/files/config.json?run=..%2f..%2f..%2fetc",
    "/files/passwd?run=%2fetc",
    "//etc/passwd",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
]


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """Send ``GET target`` exactly as written (no client normalises the path) and return (status, body)."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture(scope="module")
def live(app):
    with BackgroundServer(app) as url:
        yield url


@pytest.mark.parametrize("target", TRAVERSALS)
def test_no_path_leaves_the_served_files(live, target):
    status, body = raw_get(live, target)
    assert status in (400, 404), (status, body[:200])
    assert b"root:" not in body and b"import" not in body and b"state_dict" not in body


def raw_request(url: str, head: str) -> bytes:
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize("head", [
    "POST /api/encode HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\nConnection: close\r\n\r\n{}",
    "GET /api/info HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n",  # two Host headers
    "GET /api/info HTTP/1.1\r\nHost x\r\nConnection: close\r\n\r\n",  # a header line without a colon
])
def test_a_request_that_is_not_http_is_uvicorns_plain_400_as_the_readme_says(live, head):
    """Issue 22: what the README promises about such requests is what the HTTP layer does."""
    answer = raw_request(live, head)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"400" and b"content-type: text/plain" in rest.lower()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Explore a latent space in the browser")[1].split("\n## ")[0]
    assert "plain-text 400" in section and "uvicorn" in section


def test_over_http_the_routes_answer(live):
    status, body = raw_get(live, "/api/info?run=vae")
    assert status == 200 and json.loads(body)["latent_dim"] == 20
    assert raw_get(live, "/static/app.js")[0] == 200


# ---------------------------------------------------------------------------------------------- aelab serve
@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "is not a folder"),
    (lambda tmp: tmp, "is not a run folder (no config.json) and holds none"),
    (lambda tmp: (tmp / "f.txt").write_text("x") and tmp / "f.txt", "is not a folder"),
])
def test_serve_a_missing_or_non_run_folder_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    assert main(["serve", str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_serve_a_port_in_use_or_out_of_range(runs, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert main(["serve", str(runs / "conv"), "--port", str(busy.getsockname()[1])]) == 2
    assert "the port is taken; choose another --port" in capsys.readouterr().err
    assert main(["serve", str(runs / "conv"), "--port", "70000"]) == 2
    assert "--port must be between 0 and 65535" in capsys.readouterr().err


def test_serve_a_host_that_is_not_this_machines_names_the_host(runs, capsys):
    """Issue 22: an address that cannot be bound advised "choose another --port"."""
    assert main(["serve", str(runs / "conv"), "--host", "192.0.2.1", "--port", "0"]) == 2  # TEST-NET-1: nobody's
    err = capsys.readouterr().err
    assert "192.0.2.1 is not an address of this machine" in err and "--host" in err
    assert "choose another --port" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_serve_listens_on_loopback_unless_told_and_warns(runs, capsys, monkeypatch, host, warned):
    served = {}
    monkeypatch.setattr("aelab.web.serve", lambda app, sock: served.update(address=sock.getsockname()[0], app=app))
    argv = ["serve", str(runs / "conv"), "--port", "0", "--map", "pca", "--quiet"]
    assert main(argv + ["--host", host] if warned else argv) == 0
    out, err = capsys.readouterr()
    # the address printed is one a browser can open: 0.0.0.0 is not (issue 22); it says it listens everywhere
    assert served["address"] == host and "at http://127.0.0.1:" in out and "http://0.0.0.0" not in out
    assert ("listening on all interfaces" in out) == warned
    assert ("warning: serving on 0.0.0.0, not loopback" in err) == warned
    assert TestClient(served["app"], base_url=f"http://{host}").get("/api/info").status_code == 200


def test_serve_without_the_web_framework_says_what_to_install(runs, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "aelab.web" or m.startswith("aelab.web.")]:
        monkeypatch.delitem(sys.modules, name)  # imported afresh, and put back after the test
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if it were not installed
    assert main(["serve", str(runs / "conv")]) == 2
    assert "aelab serve needs the web framework (fastapi is missing); pip install fastapi uvicorn" in capsys.readouterr().err


def test_aelab_serve_end_to_end(runs):
    """The real command in its own process: it prints its address and answers there."""
    proc = subprocess.Popen([sys.executable, "-m", "aelab", "serve", str(runs / "dense2"), "--port", "0", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving ") and "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() else "")
        url = line.split(" at ")[1].split()[0]
        status, body = raw_get(url, "/api/info")
        assert status == 200 and json.loads(body)["latent_dim"] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=20)
