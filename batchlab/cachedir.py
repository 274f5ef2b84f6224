"""Where batchlab keeps what it can recompute (compiled programs, prepared built-in data):
``BATCHLAB_CACHE_DIR``, default ``~/.cache/batchlab/jax``; ``off`` keeps nothing."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    where = os.environ.get("BATCHLAB_CACHE_DIR", str(Path.home() / ".cache" / "batchlab" / "jax"))
    return None if where.lower() == "off" else Path(where)
