"""Measure inside your own training loop: batchlab's per-step instruments (gradient norm, update
size, distance from the initial weights, the two-batch gradient noise estimate) recorded from a
loop batchlab does not run, into the batchlab store as runs of kind ``monitored``.

- :class:`TorchMonitor`: a PyTorch loop (plain, with gradient accumulation, or under DDP).
- :func:`optax_monitor`: an optax transformation for a JAX loop, with :class:`OptaxRecorder`
  to take its statistics to the store.

The instruments are the engine's own (``batchlab/instruments/step/``): one implementation.
The contract, accumulation, DDP and the store: ``docs/monitor.md``.
"""

from batchlab.monitor.torch_monitor import TorchMonitor

__all__ = ["TorchMonitor", "optax_monitor", "OptaxRecorder"]


def __getattr__(name: str):
    # The optax monitor imports JAX: only when asked for, so a PyTorch user never pays for it.
    if name in ("optax_monitor", "OptaxRecorder"):
        import importlib

        module = importlib.import_module("batchlab.monitor.jax_monitor")

        return getattr(module, name)
    raise AttributeError(f"module 'batchlab.monitor' has no attribute {name!r}")
