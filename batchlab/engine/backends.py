"""Which engine trains a cohort: the JAX engine (``engine/jax_backend.py``) for every model given
as an ``init``/``apply`` pair, the torch backend (``engine/torch_backend.py``) for PyTorch
modules. Both run the same host loop (``engine/loop.py``) and return the same
:class:`~batchlab.results.RunResult` list, so the API, sweeps and studies never ask which one ran.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Callable, Iterator, Sequence

from batchlab.config import RunConfig
from batchlab.results import RunResult


def backend_of(model) -> str:
    """``"torch"`` for an adapted PyTorch module, ``"jax"`` otherwise."""
    return getattr(model, "backend", "jax")


def train_cohort(configs: list[RunConfig], dataset, model, on_epoch: Callable[[int], None] | None = None,
                 checkpoints: tuple[int, ...] = (), shapes: dict | None = None) -> list[RunResult]:
    """Train one cohort on the backend its model needs (imported on first use); ``shapes``
    are the JAX engine's planned programs (:func:`plan`)."""
    if backend_of(model) == "torch":
        from batchlab.engine.torch_backend import train_cohort as train

        return train(configs, dataset, model, on_epoch=on_epoch, checkpoints=checkpoints)
    from batchlab.engine.jax_backend import train_cohort as train

    return train(configs, dataset, model, on_epoch=on_epoch, checkpoints=checkpoints, shapes=shapes)


def plan(cohorts: Sequence[list[RunConfig]], dataset, model, compile_now: bool = True,
         grid: Sequence[list[RunConfig]] | None = None) -> list[dict | None]:
    """The JAX engine's program for each batch size of each cohort, planned over ``grid``
    (the command's whole grid, runs already stored included; default: ``cohorts``) so a
    resumed command trains each run with the same program (``buckets.plan_shapes``). With
    ``compile_now`` every program is queued for compilation in the background at once, so
    later cohorts' programs compile while earlier ones train. None per cohort on the torch
    backend."""
    if backend_of(model) == "torch":
        return [None] * len(cohorts)
    from batchlab.engine import buckets, programs
    from batchlab.engine.jax_backend import epoch_data, measuring_model

    data = epoch_data(dataset)
    grid = cohorts if grid is None else grid
    plans = buckets.plan_shapes(grid, [measuring_model(model, c[0])[0] for c in grid], data)
    shapes = []
    for cohort in cohorts:
        key = programs.ProgramKey.of(measuring_model(model, cohort[0])[0], cohort[0], len(cohort), data)
        shapes.append(buckets.shapes_for(plans, key, cohort[0], data))
        if compile_now:
            programs.compile_ahead(key, shapes[-1].values())
    return shapes


def train_cohorts(cohorts: Sequence[list[RunConfig]], dataset, model,
                  on_epoch: Callable[[list[RunConfig]], Callable[[int], None] | None] = lambda cohort: None,
                  checkpoints: tuple[int, ...] = (), grid: Sequence[list[RunConfig]] | None = None,
                  threads: int | None = None) -> Iterator[list[RunResult]]:
    """Train cohorts of one dataset and model (programs planned over ``grid`` and compiled
    ahead together, :func:`plan`), side by side in ``threads`` threads (default: one per core,
    ``engine/parallel.py``), yielding each one's results as it finishes. ``on_epoch(cohort)``
    gives a cohort's progress callback. PyTorch cohorts train one after another (torch's
    random generator and thread settings are process-wide)."""
    from batchlab.engine.parallel import in_threads

    shapes = plan(cohorts, dataset, model, grid=grid)
    jobs = [partial(train_cohort, cohort, dataset, model, on_epoch=on_epoch(cohort), checkpoints=checkpoints,
                    shapes=shape) for cohort, shape in zip(cohorts, shapes)]
    try:
        yield from in_threads(jobs, 1 if backend_of(model) == "torch" else threads)
    finally:
        cancel_pending()


def cancel_pending() -> None:
    """Drop the JAX engine's queued compilations that have not started (nothing to do when
    the engine was never loaded)."""
    queue = sys.modules.get("batchlab.engine.compile_queue")
    if queue is not None:
        queue.QUEUE.cancel_pending()
