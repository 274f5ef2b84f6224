"""Compiled programs kept on disk by what they are, so a later command loads a program in
about 20 ms instead of tracing it again (0.1-0.3 s a program, Python holding the GIL, which
JAX's own compilation cache still pays to compute its key).

One folder per *environment* holds them, next to JAX's own cache: the environment is the
source of the batchlab package, the JAX and jaxlib versions, ``XLA_FLAGS`` and the device
(platform, kind, and on a CPU its instruction-set flags); an edited or upgraded batchlab
starts a new folder (``cachedir.programs_folder``; folders unused for ``KEEP_DAYS`` are removed). In the folder a
program's file is named by JAX's settings and its description: what it computes, for which
built-in model and which shapes (``engine/programs.py``). So a program is only reused where
JAX would compile the same one. Programs of models given as code are not kept this way
(their code is not in the environment); JAX's cache, keyed by the traced program, still
serves them. A file that cannot be read is ignored and written again.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import threading
from pathlib import Path
from typing import Callable

from batchlab.cachedir import programs_folder, write_whole

# JAX settings that name files or logging rather than how a program is built.
_IGNORED_SETTINGS = ("cache", "log", "dump", "traceback", "pprint", "explain")


def load(description: tuple):
    """The compiled program saved under ``description``, or None."""
    import jax
    from jax.experimental import serialize_executable

    path = _path(description, ".pkl")
    if path is None:
        return None
    try:
        payload, in_tree, out_tree = pickle.loads(path.read_bytes())
        # Saved programs run on one device (JAX's default): without saying so, JAX would load
        # one onto every device it sees (2 GPUs, or CPU devices made by XLA_FLAGS) and refuse
        # its one-device arguments.
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree,
                                                         execution_devices=jax.devices()[:1])
    except Exception:  # none yet, or a damaged or foreign file: compile again and replace it
        return None


def compile_lowered(lowered, options: dict | None = None):
    """``lowered.compile(options)`` (XLA options, e.g. its optimization level), and whether XLA compiled it here (rather than JAX loading it from
    its own cache): only those are saved. A program JAX loaded from its cache serializes
    without part of its code (jaxlib 0.10.2: it failed when loaded, "Function ... not
    found"); JAX's cache shares this environment's folder, so it only holds programs the
    same environment compiled, which are saved here already."""
    global _listening
    if not _listening:
        import jax.monitoring

        jax.monitoring.register_event_listener(_note_cache_hit)
        _listening = True
    _compiling.cache_hit = False
    compiled = lowered.compile(compiler_options=options)
    return compiled, not _compiling.cache_hit


_compiling = threading.local()
_listening = False


def _note_cache_hit(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":  # reported in the thread that compiles
        _compiling.cache_hit = True


def save(description: tuple, compiled) -> None:
    """Keep ``compiled`` under ``description``."""
    from jax.experimental import serialize_executable

    path = _path(description, ".pkl")
    if path is None:
        return
    try:
        data = pickle.dumps(serialize_executable.serialize(compiled))
    except Exception:
        return
    write_whole(path, data)


def number(description: tuple, compute: Callable[[], float]) -> float:
    """``compute()``, kept on disk under ``description`` like a program (for what takes a
    lowering to work out, such as XLA's flop count of a model's row)."""
    path = _path(description, ".json")
    if path is None:
        return compute()
    try:
        return float(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        value = compute()
        write_whole(path, json.dumps(value).encode())
        return value


def _path(description: tuple, suffix: str) -> Path | None:
    """The file of ``description`` under JAX's settings now (read at each call: a setting
    changed during a command changes the programs compiled after it)."""
    where = programs_folder()
    if where is None:
        return None
    import jax

    settings = sorted((name, repr(value)) for name, value in jax.config.values.items()
                      if not any(word in name for word in _IGNORED_SETTINGS))
    return where / (hashlib.sha256(repr((settings, description)).encode()).hexdigest() + suffix)
