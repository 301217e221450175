"""Atomic files and safe checkpoints.

Every file of a run is written to a temporary file in the same folder, flushed, fsynced and then
renamed over the old one: a reader sees the old complete file or the new complete file, never half
of one, and the previous good checkpoint survives a crash or a full disk. Checkpoints load with
``torch.load(weights_only=True)``, which refuses any pickle that would run code.
"""
from __future__ import annotations

import errno
import io
import os
import tempfile
from pathlib import Path

import torch

from ..errors import AelabError


_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise AelabError(f"no space left on the device while writing {path}; the previous version is "
                             f"intact: free some space and run again with --resume") from None
        raise AelabError(f"could not write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint or model file without executing code; a clear error if it is damaged or unsafe."""
    path = Path(path)
    if not path.is_file():
        raise AelabError(f"{path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; all mean the same to a user
        text = str(exc)
        if "Weights only load failed" in text or "weights_only" in text:
            raise AelabError(f"{path} holds objects other than tensors and plain values; aelab refuses to "
                             f"load it because unpickling it could run code") from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise AelabError(f"{path} is damaged or not a checkpoint ({first[:160]})") from None
