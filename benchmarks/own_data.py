"""Decode-once speed and peak memory of loading a folder of images: prints one JSON line.

    python benchmarks/own_data.py                      # 100,000 28x28 PNGs in 10 class folders, in the temp folder
    python benchmarks/own_data.py --n 20000 --dir /tmp # fewer, elsewhere

The script writes ``--n`` PNG images (real digits from mnist5k, 28x28 gray, one folder per digit), then, in
a fresh process with its own empty cache ($AELAB_CACHE_DIR), runs ``aelab.load_dataset(FOLDER)`` twice: the
first call reads every image's header (to choose the most common size and mode), decodes every image once
into the cached uint8 file and opens it as a memory-mapped dataset; the second finds the cache and decodes
nothing. It reports both times, the images decoded per second, and that process's peak resident set size
(``VmHWM`` from /proc, reset with ``/proc/self/clear_refs`` once torch and aelab are imported, so the peak is
what loading cost). ``--image-size 28,28`` skips the header survey. Folder and cache are deleted unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status(field: str) -> float:
    """A /proc/self/status memory field in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def make_folder(root: Path, n: int) -> float:
    """Write ``n`` 28x28 gray PNGs of real digits into ``root/<digit>/``; return the seconds it took."""
    import numpy as np
    from PIL import Image

    import aelab

    data = aelab.load_dataset("mnist5k")
    x, y = data.x_train[:, 0].numpy(), data.y_train.numpy()
    for d in range(10):
        (root / str(d)).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(n):
        j = i % len(x)
        pixels = x[j] if i < len(x) else np.roll(x[j], i // len(x) % 5 - 2, axis=1)  # not all byte-identical
        Image.fromarray(pixels).save(root / str(y[j]) / f"{i:06d}.png", compress_level=1)
    return time.perf_counter() - t0


def measure(folder: Path, image_size: str | None) -> dict:
    """Load ``folder`` twice in this process (run in a fresh one, with an empty cache) and report."""
    import torch

    import aelab

    size = None if image_size is None else tuple(int(v) for v in image_size.split(","))
    channels = None if size is None else 1
    baseline = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    t0 = time.perf_counter()
    data = aelab.load_dataset(str(folder), image_size=size, channels=channels, progress=False)
    first = time.perf_counter() - t0
    peak_first = _status("VmHWM")
    t0 = time.perf_counter()
    again = aelab.load_dataset(str(folder), image_size=size, channels=channels, progress=False)
    second = time.perf_counter() - t0
    n = len(data.x_train) + len(data.x_test)
    cache = Path(data.path)
    return {"images": n, "shape": list(data.x_train.shape[1:]), "train": len(data.x_train), "test": len(data.x_test),
            "survey": size is None, "first_load_seconds": round(first, 2),
            "images_per_second": round(n / first), "second_load_seconds": round(second, 3),
            "same_rows": bool(torch.equal(data.x_test, again.x_test)),
            "cache_mb": round(cache.stat().st_size / 2**20, 1),
            "rss_after_imports_mb": round(baseline, 1), "peak_rss_first_load_mb": round(peak_first, 1),
            "peak_rss_mb": round(_status("VmHWM"), 1), "rss_growth_mb": round(_status("VmHWM") - baseline, 1),
            "cpu": os.cpu_count()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000, help="images to write (default 100,000)")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where to write them (default: the temp folder)")
    p.add_argument("--image-size", help="H,W given to load_dataset (skips the survey of sizes); default: chosen")
    p.add_argument("--keep", action="store_true", help="keep the folder and its cache")
    p.add_argument("--measure", metavar="FOLDER", help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.image_size)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="aelab-own-data-", dir=args.dir))
    folder, cache = work / "images", work / "cache"
    try:
        written = make_folder(folder, args.n)
        cmd = [sys.executable, __file__, "--measure", str(folder)]
        cmd += ["--image-size", args.image_size] if args.image_size else []
        child = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "AELAB_CACHE_DIR": str(cache)})
        if child.returncode != 0:
            sys.stderr.write(child.stderr)
            return child.returncode
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["write_seconds"] = round(written, 1)
        result["folder_mb"] = round(sum(f.stat().st_size for f in folder.rglob("*.png")) / 2**20, 1)
        print(json.dumps(result))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
