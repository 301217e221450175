"""Peak resident memory while training on a .npy file far larger than it: prints one JSON line.

    python benchmarks/memmap_rss.py --gb 2 --dir /tmp             # a 2 GB float32 file, one epoch
    python benchmarks/memmap_rss.py --gb 2 --dir /tmp --no-release  # the same without dropping pages

The script writes a file of real digits (mnist5k tiled, float32 in [0, 1], shape (N, 1, 28, 28)) of
the asked size, then, in a fresh process, trains the default dense autoencoder for ``--epochs`` on
it with ``aelab.train(dataset="<file>.npy")`` and reads that process's peak resident set size
(``VmHWM`` from /proc, reset with ``/proc/self/clear_refs`` once torch and aelab are imported, so the
peak is what loading and training cost). The file is deleted at the end unless ``--keep``.
``--no-release`` turns off the ``madvise(MADV_DONTNEED)`` after each block, to show what it buys:
every page of the file that was read then stays in the process's resident set.
"""
from __future__ import annotations

import argparse
import json
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


def make_file(path: Path, gb: float) -> int:
    """Write about ``gb`` GiB of float32 digits to ``path`` (a .npy file); return the number of rows."""
    import numpy as np

    import aelab
    from aelab.data import as_float

    digits = as_float(aelab.load_dataset("mnist5k").x_train).numpy()  # float32 (4000, 1, 28, 28)
    rows = int(gb * 2**30 // digits[0].nbytes)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, *digits.shape[1:]))
    for start in range(0, rows, len(digits)):
        stop = min(start + len(digits), rows)
        array[start:stop] = digits[:stop - start]
    array.flush()
    del array
    return rows


def measure(path: Path, epochs: int, batch_size: int, release: bool, model: dict) -> dict:
    """Train on ``path`` in this process and report its memory (run in a fresh process)."""
    import torch

    import aelab
    from aelab.data import memmap

    if not release:
        memmap._release = lambda array: None
    baseline = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        run = aelab.train("dense", str(path), out=Path(out) / "run", epochs=epochs, batch_size=batch_size,
                          progress=False, log=None, report=False, **model)
    seconds = time.perf_counter() - t0
    peak = _status("VmHWM")
    rows = len(memmap.open_npy(path))  # reads the header only
    return {"file_mb": round(path.stat().st_size / 2**20, 1), "rows": rows, "epochs": epochs,
            "batch_size": batch_size, "block_mb": memmap.BLOCK_BYTES / 2**20, "release_pages": release,
            "hidden_dims": model["hidden_dims"], "latent_dim": model["latent_dim"],
            "rss_after_imports_mb": round(baseline, 1), "peak_rss_mb": round(peak, 1),
            "rss_growth_mb": round(peak - baseline, 1), "seconds": round(seconds, 1),
            "samples_per_second": round(run.last["samples_per_second"]), "test_loss": run.last["test_loss"],
            "torch_threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=2.0, help="size of the generated file in GiB (default 2)")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where to write it (default: the temp folder)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden-dims", default="256,128", help="of the dense model (default 256,128)")
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--no-release", action="store_true", help="keep the pages of read blocks mapped")
    p.add_argument("--keep", action="store_true", help="keep the generated file")
    p.add_argument("--measure", metavar="FILE", help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.measure:
        model = {"hidden_dims": [int(h) for h in args.hidden_dims.split(",")], "latent_dim": args.latent_dim}
        print(json.dumps(measure(Path(args.measure), args.epochs, args.batch_size, not args.no_release, model)))
        return 0
    folder = Path(args.dir)
    bytes_needed = args.gb * 2**30 + 2**30
    if shutil.disk_usage(folder).free < bytes_needed:
        print(f"memmap_rss: {folder} has less than {bytes_needed / 2**30:.1f} GiB free; pass --dir or a smaller --gb",
              file=sys.stderr)
        return 2
    path = folder / f"aelab-memmap-{args.gb:g}gb.npy"
    try:
        t0 = time.perf_counter()
        make_file(path, args.gb)
        written = time.perf_counter() - t0
        cmd = [sys.executable, __file__, "--measure", str(path), "--epochs", str(args.epochs), "--batch-size",
               str(args.batch_size), "--hidden-dims", args.hidden_dims, "--latent-dim", str(args.latent_dim)]
        cmd += ["--no-release"] if args.no_release else []
        child = subprocess.run(cmd, capture_output=True, text=True)
        if child.returncode != 0:
            sys.stderr.write(child.stderr)
            return child.returncode
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["write_seconds"] = round(written, 1)
        print(json.dumps(result))
    finally:
        if not args.keep and path.exists():
            path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
