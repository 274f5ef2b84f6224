"""Where batchlab keeps what it can recompute (compiled programs, prepared built-in data):
``BATCHLAB_CACHE_DIR``, default ``~/.cache/batchlab/jax``; ``off`` keeps nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from batchlab.errors import BatchlabError
from batchlab.paths import write_output

KEEP_DAYS = 14  # a folder of compiled programs unused this long is removed


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
    """Write ``path`` whole or not at all (``paths.write_output``, not flushed to disk), so a
    reader in another process never sees half a file (a cache folder that cannot be written only
    costs speed)."""
    try:
        write_output(path, data, sync=False)
    except BatchlabError:
        return


def programs_folder() -> Path | None:
    """This environment's folder of compiled programs (JAX's own cache included; what is in
    it: ``engine/saved_programs.py``); None when caching is off."""
    root = cache_dir()
    return None if root is None else _environment_folder(root)


@lru_cache(maxsize=4)
def _environment_folder(root: Path) -> Path:
    """``root/programs/<environment>``, marked as used now; other environments' folders
    unused for ``KEEP_DAYS`` are removed."""
    programs = root / "programs"
    here = programs / _environment()[:24]
    try:
        here.mkdir(parents=True, exist_ok=True)
        os.utime(here)
        for other in programs.iterdir():
            if other != here and other.is_dir() and time.time() - other.stat().st_mtime > KEEP_DAYS * 86400:
                shutil.rmtree(other, ignore_errors=True)
    except OSError:
        pass
    return here


@lru_cache(maxsize=1)
def _environment() -> str:
    """What is fixed for a process and changes what JAX compiles for a description."""
    import jax
    import jaxlib

    device = jax.devices()[0]
    parts = (files_digest(Path(__file__).resolve().parent.rglob("*.py")), jax.__version__, jaxlib.__version__, os.environ.get("XLA_FLAGS", ""),
             device.platform, device.device_kind, getattr(device.client, "platform_version", ""), _cpu_flags(),
             # how many devices and processes: an executable compiled under jax.distributed (its
             # devices spread over processes) must never be found by a one-process run
             jax.device_count(), jax.process_count())
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _cpu_flags() -> str:
    """The CPU's instruction-set flags (code compiled for one CPU may not run on another)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
