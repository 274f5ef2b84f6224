"""Measure inside your own training loop: batchlab's per-step instruments (gradient norm, update
size, distance from the initial weights, the two-batch gradient noise estimate) recorded from a
loop batchlab does not run, into the batchlab store as runs of kind ``monitored``.

- :class:`TorchMonitor`: a PyTorch loop (plain, with gradient accumulation, or under DDP).
- :class:`LightningCallback`: the same, as a Lightning callback (``lightning_callback.py``).
- :class:`KerasCallback`: a Keras 3 ``model.fit`` on the JAX or torch backend (``keras_callback.py``).
- :func:`optax_monitor`: an optax transformation for a JAX loop, with :class:`OptaxRecorder`
  to take its statistics to the store.

The instruments are the engine's own (``batchlab/instruments/step/``): one implementation.
The contract, accumulation, DDP and the store: ``docs/monitor.md``.
"""

__all__ = ["TorchMonitor", "LightningCallback", "KerasCallback", "optax_monitor", "OptaxRecorder"]
LAZY = {"TorchMonitor": "torch_monitor", "optax_monitor": "jax_monitor", "OptaxRecorder": "jax_monitor", "LightningCallback": "lightning_callback",
        "KerasCallback": "keras_callback"}


def __getattr__(name: str):
    # Each framework is imported only when its monitor is asked for: a JAX user needs no torch,
    # a plain PyTorch user never pays for JAX, Lightning or Keras.
    if name in LAZY:
        import importlib

        module = importlib.import_module(f"batchlab.monitor.{LAZY[name]}")

        return getattr(module, name)
    raise AttributeError(f"module 'batchlab.monitor' has no attribute {name!r}")
