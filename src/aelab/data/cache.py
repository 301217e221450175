"""Where aelab keeps what it downloads or decodes: one folder, chosen by the environment.

Its own module (below the loaders) so that both the named datasets (:mod:`aelab.data.datasets`) and the
user's own folders of images (:mod:`aelab.data.folders`, which cache their decoded pixels) can use it.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user's cache folder for downloads: $AELAB_CACHE_DIR, else $XDG_CACHE_HOME/aelab, else ~/.cache/aelab."""
    if os.environ.get("AELAB_CACHE_DIR"):
        return Path(os.environ["AELAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "aelab"


__all__ = ["cache_dir"]
