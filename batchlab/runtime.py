"""Process-wide set-up for the array libraries: thread counts and JAX's compilation cache.

Small models run fastest single-threaded on few cores, and two BLAS/Eigen pools fighting
for two cores can be many times slower, so XLA's CPU threading is turned off unless the
user set ``XLA_FLAGS`` themselves (and the torch backend keeps one intra-op thread,
``engine/torch_backend.py``). Compiled programs are cached on disk
(``BATCHLAB_CACHE_DIR``, default ``~/.cache/batchlab/jax``; ``BATCHLAB_CACHE_DIR=off``
disables it) so repeated commands, tests and sweep workers skip compilation.
"""

from __future__ import annotations

import os

_configured = False


def configure_threads() -> None:
    """Must run before jax is first imported to take effect. (XLA stops reading ``XLA_FLAGS``
    at the first word that is not one of its flags: keep only flags here.)"""
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")


def configure_cache() -> None:
    """JAX's compilation cache in this environment's folder of compiled programs
    (``cachedir.programs_folder``), which batchlab's own saved programs share."""
    global _configured
    if _configured:
        return
    _configured = True
    import jax

    from batchlab.cachedir import programs_folder

    where = programs_folder()
    if where is None or not where.is_dir():
        return  # caching is off, or the folder cannot be made: that only costs speed
    jax.config.update("jax_compilation_cache_dir", str(where))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
