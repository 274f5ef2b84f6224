"""Where batchlab keeps what it can recompute (compiled programs, prepared built-in data):
``BATCHLAB_CACHE_DIR``, default ``~/.cache/batchlab/jax``; ``off`` keeps nothing."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    where = os.environ.get("BATCHLAB_CACHE_DIR", str(Path.home() / ".cache" / "batchlab" / "jax"))
    return None if where.lower() == "off" else Path(where)


def files_digest(paths: Iterable[Path]) -> str:
    """SHA-256 of files' names and contents (what is filed under code that may be edited)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def write_whole(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all, so a reader in another process never sees half a
    file (a cache folder that cannot be written only costs speed)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as part:
            part.write(data)
        os.replace(part.name, path)
    except OSError:
        return
