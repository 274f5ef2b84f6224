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


# batchlab's XLA flags, where the user has not set ``XLA_FLAGS`` (XLA stops reading it at the
# first word that is not one of its flags: keep only flags here).
XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false"


def configure_threads() -> None:
    """Must run before jax is first imported to take effect."""
    os.environ.setdefault("XLA_FLAGS", XLA_FLAGS)


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


def join_processes(coordinator: str, processes: int, process_id: int, loopback: bool = False) -> None:
    """Several processes (hosts, or processes of one machine) as one JAX runtime, so
    ``--devices all`` splits each batch over the devices of all of them (``docs/devices.md``).
    Call it first, before anything else uses JAX. ``loopback``: every process on this machine,
    and every connection between them on 127.0.0.1 — JAX's CPU collectives (gloo) otherwise
    connect over the address this machine's host name resolves to, and JAX has no public
    setting for it, so the CPU client is made here with gloo bound to 127.0.0.1 (JAX's private
    ``make_gloo_tcp_collectives``: refused with one line if this JAX has not got it)."""
    import jax

    from batchlab.errors import BatchlabError

    if loopback:
        try:
            from jax._src import distributed, xla_bridge
            from jax._src.lib import _jax

            def cpu_client():
                collectives = _jax.make_gloo_tcp_collectives(distributed_client=distributed.global_state.client,
                                                             hostname="127.0.0.1")
                return xla_bridge.make_cpu_client(collectives=collectives)

            xla_bridge.register_backend_factory("cpu", cpu_client, priority=0, fail_quietly=False)
        except (ImportError, AttributeError, RuntimeError) as error:
            raise BatchlabError(f"this JAX ({jax.__version__}) cannot keep its CPU collectives on 127.0.0.1: "
                                f"{error}") from None
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=processes, process_id=process_id)
