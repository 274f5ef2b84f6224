"""Which engine trains a cohort: the JAX engine (``engine/cohort.py``) for every model given as an
``init``/``apply`` pair, the torch backend (``engine/torch_cohort.py``) for PyTorch modules.

Both take the same arguments and return the same :class:`~batchlab.results.RunResult` list, so
the API, sweeps and studies never ask which one ran.
"""

from __future__ import annotations

from typing import Callable

from batchlab.config import RunConfig
from batchlab.results import RunResult


def backend_of(model) -> str:
    """``"torch"`` for an adapted PyTorch module, ``"jax"`` otherwise."""
    return getattr(model, "backend", "jax")


def train_cohort(configs: list[RunConfig], dataset, model, on_epoch: Callable[[int], None] | None = None,
                 checkpoints: tuple[int, ...] = ()) -> list[RunResult]:
    """Train one cohort on the backend its model needs (imported on first use)."""
    if backend_of(model) == "torch":
        from batchlab.engine.torch_cohort import train_cohort as train
    else:
        from batchlab.engine.cohort import train_cohort as train
    return train(configs, dataset, model, on_epoch=on_epoch, checkpoints=checkpoints)
