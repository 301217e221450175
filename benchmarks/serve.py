"""Latent-space explorer benchmark (issue 12): how fast ``aelab serve`` answers, over real HTTP.

    python benchmarks/serve.py                         # runs in /tmp/aelab-bench-serve (trained once, then reused)
    python benchmarks/serve.py --runs DIR --out serve.json --markdown serve.md
    python benchmarks/serve.py --no-page               # without the browser part

What is measured, against ``aelab serve`` started as a user starts it (its own process, uvicorn on 127.0.0.1,
a free port) on a folder of three runs: dense, conv and vae, default sizes (latent 32), one epoch on mnist5k:

- decode round trip, per model: ``POST /api/decode?run=NAME`` with a test item's code, from sending the request
  to holding the PNG's bytes (the answer read, its JSON parsed and its base64 decoded), over one kept-alive
  connection, ``--requests`` times after ``--warmup``; the median and p95. Targets: median < 30 ms, p95 < 100 ms;
- concurrency: ``--burst`` (200) decode requests from ``--clients`` (8) threads with a connection each, all at
  once: how many were answered 200 (all of them is the target), the wall time and the requests per second;
- first load of the page with 10,000 points in headless Chromium (Debian's): a dense run trained one epoch on
  the full MNIST (its test set is 10,000 images; ``--mnist DIR``), served alone; from ``page.goto`` to the page
  reporting ready with every point drawn, in a fresh browser context each time (no cache), ``--loads`` times.
  Target: < 2 s. The map (``--map``, t-SNE by default) is computed before serving and cached in the run.

JSON goes to stdout (or ``--out``), a Markdown table to stderr (and ``--markdown``). Wall time: other work on
the machine shows up in it, so the JSON records the load average before and after.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import aelab

MODELS = ["dense", "conv", "vae"]
ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"median_ms": 30.0, "p95_ms": 100.0, "first_load_s": 2.0}


# ---------------------------------------------------------------------------------------------- runs
def ensure_runs(base: Path, mnist_dir: Path | None, say) -> dict[str, Path]:
    """The runs the benchmark serves, trained when missing: base/models/{dense,conv,vae}, base/mnist-dense."""
    made = {}
    for name in MODELS:
        out = base / "models" / name
        if not (out / "model.pt").is_file():
            shutil.rmtree(out, ignore_errors=True)
            say(f"training {name} on mnist5k (1 epoch) ...")
            aelab.train(name, "mnist5k", out=out, epochs=1, report=False, progress=False, log=None)
        made[name] = out
    if mnist_dir is not None:
        out = base / "mnist-dense"
        if not (out / "model.pt").is_file():
            shutil.rmtree(out, ignore_errors=True)
            say("training dense on the full MNIST (1 epoch) ...")
            aelab.train("dense", "mnist", data_dir=str(mnist_dir), out=out, epochs=1, report=False, progress=False,
                        log=None)
        made["mnist"] = out
    return made


class Served:
    """``aelab serve PATH --port 0`` in its own process, as a user starts it; ``url`` once it listens."""

    def __init__(self, path: Path, method: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "aelab", "serve", str(path), "--port", "0", "--map", method],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in self.proc.stdout:  # "loading ..." lines, then "serving ... at URL (Ctrl-C to stop)"
            lines.append(line)
            if line.startswith("serving "):
                self.url = line.split(" at ")[1].split()[0]
                break
        else:
            raise RuntimeError("aelab serve did not start:\n" + "".join(lines))
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep its pipe drained
        self.host, self.port = self.url.split("//")[1].rstrip("/").split(":")

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, int(self.port), timeout=60)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def call(conn: http.client.HTTPConnection, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"content-type": "application/json"} if data else {})
    answer = conn.getresponse()
    return answer.status, json.loads(answer.read())


def png_of(answer: dict) -> bytes:
    head, b64 = answer["image"].split(",", 1)
    png = base64.b64decode(b64)
    assert head == "data:image/png;base64" and png.startswith(b"\x89PNG")
    return png


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ---------------------------------------------------------------------------------------------- measurements
def decode_round_trips(server: Served, run: str, requests: int, warmup: int) -> dict:
    conn = server.connection()
    codes = [call(conn, "POST", f"/api/encode?run={run}", {"index": i})[1]["z"] for i in range(50)]
    times = []
    for k in range(warmup + requests):
        t0 = time.perf_counter()
        status, answer = call(conn, "POST", f"/api/decode?run={run}", {"z": codes[k % len(codes)]})
        png_of(answer)
        if k >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
        assert status == 200
    conn.close()
    return {"requests": requests, "median_ms": round(statistics.median(times), 2),
            "p95_ms": round(percentile(times, 95), 2), "mean_ms": round(statistics.fmean(times), 2),
            "max_ms": round(max(times), 2)}


def burst(server: Served, run: str, total: int, clients: int) -> dict:
    conn = server.connection()
    code = call(conn, "POST", f"/api/encode?run={run}", {"index": 0})[1]["z"]
    conn.close()
    statuses, errors, lock = [], [], threading.Lock()
    start = threading.Barrier(clients)

    def client(n: int) -> None:
        c = server.connection()
        start.wait()
        for _ in range(n):
            try:
                status, answer = call(c, "POST", f"/api/decode?run={run}", {"z": code})
                png_of(answer)
            except Exception as exc:  # noqa: BLE001 - counted, not raised: a lost request is the measurement
                with lock:
                    errors.append(repr(exc))
                c.close()
                c = server.connection()
                continue
            with lock:
                statuses.append(status)
        c.close()

    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=client, args=(n,)) for n in shares]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return {"requests": total, "clients": clients, "answered_200": statuses.count(200),
            "other_status": len(statuses) - statuses.count(200), "errors": errors[:5], "lost": total - len(statuses),
            "seconds": round(seconds, 3), "requests_per_s": round(total / seconds, 1)}


def first_loads(server: Served, loads: int) -> dict:
    from playwright.sync_api import sync_playwright  # optional: only this part needs a browser

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return {"skipped": "no Chromium on PATH (apt-get install chromium)"}
    conn = server.connection()
    points = len(call(conn, "GET", "/api/points")[1]["points"])
    conn.close()
    seconds, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        for _ in range(loads):
            context = browser.new_context(viewport={"width": 1400, "height": 950})  # a fresh cache each time
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            t0 = time.perf_counter()
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            seconds.append(time.perf_counter() - t0)
            drawn = int(page.get_attribute("#map", "data-points"))
            assert drawn == points, (drawn, points)
            context.close()
        browser.close()
    return {"points": points, "loads": loads, "median_s": round(statistics.median(seconds), 3),
            "max_s": round(max(seconds), 3), "all_s": [round(s, 3) for s in seconds], "console_errors": errors}


# ---------------------------------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    rows = ["| what | median | p95 | target | met |", "|---|---|---|---|---|"]
    for name, r in result["decode"].items():
        met = r["median_ms"] < TARGETS["median_ms"] and r["p95_ms"] < TARGETS["p95_ms"]
        rows.append(f"| decode round trip, {name} | {r['median_ms']} ms | {r['p95_ms']} ms | "
                    f"< {TARGETS['median_ms']:.0f} / < {TARGETS['p95_ms']:.0f} ms | {'yes' if met else 'no'} |")
    b = result["burst"]
    rows.append(f"| {b['requests']} decodes from {b['clients']} clients at once | {b['answered_200']} answered, "
                f"{b['lost']} lost | {b['seconds']} s ({b['requests_per_s']}/s) | all answered | "
                f"{'yes' if b['answered_200'] == b['requests'] else 'no'} |")
    page = result.get("page")
    if page and "median_s" in page:
        rows.append(f"| first load, {page['points']:,} points | {page['median_s']} s | max {page['max_s']} s | "
                    f"< {TARGETS['first_load_s']:.0f} s | {'yes' if page['max_s'] < TARGETS['first_load_s'] else 'no'} |")
    elif page:
        rows.append(f"| first load | {page.get('skipped')} | | | |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("/tmp/aelab-bench-serve"),
                        help="folder for the benchmark's runs (trained when missing, reused after)")
    parser.add_argument("--mnist", type=Path, default=Path(os.environ.get("AELAB_DATA_DIR", ROOT.parent / "shared" / "data"))
                        / "mnist", help="the full MNIST's IDX files (for the 10,000-point page)")
    parser.add_argument("--requests", type=int, default=200, help="timed decode requests per model")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--burst", type=int, default=200, help="concurrent decode requests")
    parser.add_argument("--clients", type=int, default=8, help="client threads of the burst")
    parser.add_argument("--loads", type=int, default=5, help="first loads of the page")
    parser.add_argument("--map", choices=("tsne", "pca"), default="tsne")
    parser.add_argument("--no-page", action="store_true", help="leave out the browser's first load")
    parser.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    mnist = None if args.no_page else args.mnist
    if mnist is not None and not (mnist / "t10k-images-idx3-ubyte.gz").is_file():
        say(f"no full MNIST at {mnist}: the page is loaded with mnist5k's 1,000 points instead")
        mnist = None
    load_before = os.getloadavg()
    runs = ensure_runs(args.runs, mnist, say)
    result = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "aelab": aelab.__version__,
                          "load_before": [round(v, 2) for v in load_before]},
              "settings": {k: v for k, v in vars(args).items() if k in ("requests", "warmup", "burst", "clients", "loads", "map")},
              "targets": TARGETS, "decode": {}}

    say("serving the dense, conv and vae runs ...")
    server = Served(args.runs / "models", args.map)
    try:
        for name in MODELS:
            result["decode"][name] = decode_round_trips(server, name, args.requests, args.warmup)
            say(f"decode {name}: {result['decode'][name]}")
        result["burst"] = burst(server, "dense", args.burst, args.clients)
        say(f"burst: {result['burst']}")
    finally:
        server.close()

    if not args.no_page:
        say("serving the page's run (the map is computed once and cached in it) ...")
        server = Served(runs.get("mnist", runs["dense"]), args.map)
        try:
            result["page"] = first_loads(server, args.loads)
            say(f"page: {result['page']}")
        finally:
            server.close()
    result["machine"]["load_after"] = [round(v, 2) for v in os.getloadavg()]

    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    table = markdown(result)
    sys.stderr.write(table)
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
