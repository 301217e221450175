"""Atomic files and safe checkpoints.

Every file of a run is written to a temporary file in the same folder, flushed, fsynced and then
renamed over the old one: a reader sees the old complete file or the new complete file, never half
of one, and a crash or a full disk leaves the old file as it was. A checkpoint also keeps the one
before it (``previous.pt`` beside ``last.pt``), so a checkpoint damaged later (a bad disk, a bad
copy) costs one epoch, not the run.

Loading never executes code: the file must be an intact zip archive (every member's CRC is
checked, so a flipped bit is caught rather than loaded as a wrong weight) and is then unpickled with
``torch.load(weights_only=True)``, which refuses any pickle that would call a function.
"""
from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import AelabError, first_line

PREVIOUS = "previous.pt"  # the checkpoint before the last one, in the same folder

_UMASK = os.umask(0)
os.umask(_UMASK)


class DamagedFileError(AelabError):
    """A checkpoint or model file that is truncated, corrupt or not a checkpoint at all."""


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (the folder entry itself); not every OS or file system allows it."""
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


def _temp_name(path: Path) -> str:
    return f".{path.name}."


def _keep_copy(path: Path, backup: Path) -> None:
    """Make ``backup`` a complete copy of ``path``, atomically (a hard link when the file system allows)."""
    fd, tmp = tempfile.mkstemp(prefix=_temp_name(backup), suffix=".tmp", dir=backup.parent)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(path, tmp)  # no copy: both names point at the same complete file
        except OSError:  # no hard links here (some network and FAT file systems): copy, then fsync
            shutil.copyfile(path, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, backup)
    finally:
        # also after success: when backup already was a link to the same file (a write killed just
        # after this step last time), rename() does nothing and leaves tmp in place (POSIX)
        if os.path.lexists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes, backup: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    With ``backup``, the file ``path`` held before becomes ``backup`` once the new data is safely
    on disk, and only then is ``path`` replaced: at every instant both names hold complete files.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_name(path), suffix=".tmp", dir=path.parent)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if backup is not None and path.is_file():
            _keep_copy(path, Path(backup))
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
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: Path, keep_previous: bool = False) -> None:
    """``torch.save`` to ``path`` atomically; with ``keep_previous`` the old file becomes ``previous.pt``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue(), backup=path.with_name(PREVIOUS) if keep_previous else None)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint or model file without executing code.

    Raises :class:`DamagedFileError` for a truncated or corrupt file and :class:`AelabError` for a
    file whose pickle asks for anything beyond tensors and plain values (it is never unpickled).
    """
    path = Path(path)
    if not path.is_file():
        raise AelabError(f"{path} does not exist")
    raw = path.read_bytes()
    buf = io.BytesIO(raw)
    # torch.save writes a zip archive; a torn write loses its central directory (at the end), and
    # a flipped bit fails a member's CRC. torch.load itself checks neither.
    try:
        with zipfile.ZipFile(buf) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError):
        raise DamagedFileError(f"{path} is damaged or not a checkpoint ({len(raw)} bytes, not a complete "
                               f"torch.save archive)") from None
    if bad is not None:
        raise DamagedFileError(f"{path} is damaged: its part '{bad}' fails its checksum")
    buf.seek(0)
    try:
        return torch.load(buf, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; all mean the same to a user
        text = str(exc)
        if "Weights only load failed" in text or "weights_only" in text:
            raise AelabError(f"{path} holds objects other than tensors and plain values; aelab refuses to "
                             f"load it because unpickling it could run code") from None
        raise DamagedFileError(f"{path} is damaged or not a checkpoint ({first_line(exc, 160)})") from None


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporary files a killed writer left in ``folder`` (never read; only call when no one writes)."""
    removed = []
    if Path(folder).is_dir():
        for p in Path(folder).glob(".*.tmp"):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def load_latest_checkpoint(path: Path, map_location="cpu", warn=None,
                           repair: bool = True) -> tuple[dict, Path] | None:
    """Load ``path`` or, when it is missing or damaged, the ``previous.pt`` beside it.

    Returns ``(state, the file used)``, or None when neither exists. A damaged ``path`` is renamed to
    ``<name>.damaged`` (kept for inspection, and so the next save cannot rotate it into
    ``previous.pt``) and ``warn`` is called with a line naming it. A file refused as unsafe is not
    skipped: someone changed it, and the user must know. ``repair=False`` (every rank of a
    distributed run but one) leaves the folder as it is.
    """
    path = Path(path)
    previous = path.with_name(PREVIOUS)
    if repair:
        remove_stale_temps(path.parent)
    if not path.is_file():
        if not previous.is_file():
            return None
        if warn:
            warn(f"warning: {path} is missing; resuming from {previous}")
        return load_checkpoint(previous, map_location), previous
    try:
        return load_checkpoint(path, map_location), path
    except DamagedFileError as exc:
        if not previous.is_file():
            raise DamagedFileError(f"{exc}; no earlier checkpoint ({previous.name}) to fall back on: "
                                   f"start the run again with another --out") from None
        try:
            state = load_checkpoint(previous, map_location)
        except DamagedFileError as exc2:
            raise DamagedFileError(f"both checkpoints are damaged: {exc}; and {exc2}; start the run again "
                                   f"with another --out") from None
        damaged = path.with_name(path.name + ".damaged")
        try:
            if repair:
                os.replace(path, damaged)
        except OSError:  # a read-only folder: resuming still works, the next save will fail clearly
            pass
        if warn:
            warn(f"warning: {exc}; kept it as {damaged.name} and resuming from {previous} "
                 f"(epoch {state.get('epoch', '?') if isinstance(state, dict) else '?'})")
        return state, previous
