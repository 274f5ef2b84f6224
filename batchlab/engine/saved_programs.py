"""Compiled programs kept on disk under a key of everything that makes them, so a later
command loads a program in about 20 ms instead of tracing it again (0.1-0.3 s a program,
Python holding the GIL, which JAX's own compilation cache still pays to compute its key).

A key covers the program's description (what it computes, for which built-in model and
which shapes: ``engine/programs.py``), the source of the batchlab package, the JAX and
jaxlib versions, JAX's settings, ``XLA_FLAGS`` and the device (platform, kind, and on a
CPU its instruction-set flags), so a program is only ever reused where JAX would compile
the same one. Programs of models given as code are not kept (their code is not part of
the key); JAX's cache, keyed by the traced program itself, still serves them. Files live
in ``<BATCHLAB_CACHE_DIR>/programs``; a file that cannot be read is ignored and replaced.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

from batchlab.cachedir import cache_dir

_loading = threading.Lock()
_compiling = threading.local()
_listening = False
# JAX settings that name files or logging rather than how a program is built.
_IGNORED_SETTINGS = ("cache", "log", "dump", "traceback", "pprint", "explain")


def key(description: tuple) -> str | None:
    """The file key of a program ``description`` (a tuple of plain values) in this
    environment; None when caching is off."""
    if cache_dir() is None:
        return None
    return hashlib.sha256(repr((_environment(), description)).encode()).hexdigest()


def load(program_key: str):
    """The compiled program saved under ``program_key``, or None."""
    from jax.experimental import serialize_executable

    path = _path(program_key)
    try:
        payload, in_tree, out_tree = pickle.loads(path.read_bytes())
        with _loading:
            return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except FileNotFoundError:
        return None
    except Exception:  # a damaged or foreign file: compile again and replace it
        return None


def compile_lowered(lowered):
    """``lowered.compile()``, and whether XLA compiled it here (rather than JAX loading it from
    its own cache): only those are saved. A program JAX loaded from its cache, serialized
    again, failed when loaded in a later command ("Function wrapped_slice not found", jaxlib
    0.10.2), so it is not kept; the command after the next real compilation keeps it."""
    global _listening
    if not _listening:
        import jax.monitoring

        jax.monitoring.register_event_listener(_note_cache_hit)
        _listening = True
    _compiling.cache_hit = False
    compiled = lowered.compile()
    return compiled, not _compiling.cache_hit


def _note_cache_hit(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":  # reported in the thread that compiles
        _compiling.cache_hit = True


def save(program_key: str, compiled) -> None:
    """Keep ``compiled`` under ``program_key`` (written whole or not at all; a folder that
    cannot be written only costs speed)."""
    from jax.experimental import serialize_executable

    path = _path(program_key)
    try:
        data = pickle.dumps(serialize_executable.serialize(compiled))
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as part:
            part.write(data)
        os.replace(part.name, path)
    except Exception:
        return


def _path(program_key: str) -> Path:
    return cache_dir() / "programs" / f"{program_key}.pkl"


@lru_cache(maxsize=1)
def _environment() -> str:
    """Everything outside a program's description that changes what JAX compiles for it."""
    import jax
    import jaxlib

    device = jax.devices()[0]
    settings = sorted((name, repr(value)) for name, value in jax.config.values.items()
                      if not any(word in name for word in _IGNORED_SETTINGS))
    parts = (_source_digest(), jax.__version__, jaxlib.__version__, os.environ.get("XLA_FLAGS", ""), settings,
             device.platform, device.device_kind, getattr(device.client, "platform_version", ""), _cpu_flags())
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _source_digest() -> str:
    """SHA-256 of every Python file of the batchlab package (an edited engine is a new key)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


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
