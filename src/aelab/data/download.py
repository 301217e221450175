"""The only network access in aelab: fetching dataset files into the cache, verified by md5.

Each file is streamed into a temporary file in the target folder, its md5 computed on the way, and
renamed to its real name only when complete and correct. A mismatch leaves nothing behind.
Mirrors can be replaced with ``$AELAB_MIRROR`` (comma-separated base URLs), e.g. for a local copy.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm


class DownloadError(Exception):
    """A file could not be fetched or did not match its checksum."""


MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

# Published md5 sums of the upstream files (MNIST: LeCun et al.; Fashion-MNIST: zalandoresearch).
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

TIMEOUT_S = 30.0


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def mirrors_for(name: str) -> list[str]:
    env = os.environ.get("AELAB_MIRROR")
    if env:
        return [m if m.endswith("/") else m + "/" for m in env.split(",") if m.strip()]
    return MIRRORS.get(name, [])


def download_dataset(name: str, files, target: Path) -> None:
    """Fetch every missing file of dataset ``name`` into ``target``; raise DownloadError on failure."""
    sums = MD5.get(name)
    urls = mirrors_for(name)
    if not sums or not urls:
        raise DownloadError(f"no download source is known for '{name}'")
    target.mkdir(parents=True, exist_ok=True)
    for fname in files:
        dest = target / fname
        if dest.is_file() and md5_of(dest) == sums[fname]:
            continue
        errors = []
        for base in urls:
            try:
                fetch(base + fname, dest, sums[fname])
                break
            except DownloadError as exc:
                errors.append(str(exc))
        else:
            raise DownloadError("; ".join(errors))


def fetch(url: str, dest: Path, md5: str) -> None:
    """Stream ``url`` into ``dest`` through a temporary file, renaming it only if its md5 is ``md5``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False, disable=None) as bar:
                        while block := resp.read(1 << 16):
                            out.write(block)
                            h.update(block)
                            bar.update(len(block))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise DownloadError(f"{url}: {reason}") from None
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != md5:
            raise DownloadError(f"{url}: md5 {h.hexdigest()} does not match the published {md5}; file discarded")
        os.replace(tmp, dest)
        tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
