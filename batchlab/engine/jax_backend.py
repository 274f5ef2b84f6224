"""The JAX engine as a backend of the host loop (``engine/loop.py``): a cohort's runs vmapped
as one compiled program per batch size.

Runs differ in learning rate, momentum, weight decay and seeds. The programs come from
``engine/programs.py`` (shared between cohorts, often compiled ahead in the background); an
epoch is one call of its program, then the evaluation (in the same program from enough
epochs on). Without early stopping the host never changes which runs train (divergence
freezes a run inside the program), so the next epoch is dispatched before this one's records
are read: host bookkeeping overlaps device work.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from batchlab import budget, profiling
from batchlab.config import RunConfig
from batchlab.data import Dataset
from batchlab.engine import programs
from batchlab.engine.buckets import exact_shapes
from batchlab.engine.epoch import EVAL_METRICS, EpochData, EpochOrders, EpochOutput
from batchlab.engine.flat import flat_model, unchanged
from batchlab.engine.loop import EpochResult, Scores, train_runs
from batchlab.engine.programs import EpochShape, ProgramKey
from batchlab.instruments import output_names, step_instruments
from batchlab.models.base import Model
from batchlab.results import RunResult


def train_cohort(configs: list[RunConfig], dataset: Dataset, model: Model,
                 on_epoch: Callable[[int], None] | None = None, checkpoints: tuple[int, ...] = (),
                 shapes: dict[int, EpochShape] | None = None) -> list[RunResult]:
    """Train runs that share ``configs[0].cohort_key()`` together; one result per config.
    ``shapes``: the epoch program each batch size uses (``buckets.plan_shapes``); exact
    widths by default."""
    assert all(c.cohort_key() == configs[0].cohort_key() for c in configs), "configs are not one cohort"
    backend = JaxCohort(configs, dataset, model, shapes)
    with profiling.phase("training"):
        return train_runs(configs, backend, Scores(model.task, dataset.y_train, dataset.y_test), dataset.n_train,
                          on_epoch, checkpoints)


def measuring_model(model: Model, cfg: RunConfig) -> tuple[Model, Callable]:
    """The model the programs train: per-step norms are cheap over one flat parameter vector
    (``engine/flat.py``), so runs that measure them see the model that way."""
    return flat_model(model) if cfg.instruments else (model, unchanged)


_device_data: tuple = (None, None)  # the last dataset and its rows on the device


def epoch_data(dataset: Dataset) -> EpochData:
    """The dataset's rows on the device; consecutive cohorts of one dataset share one copy
    (the pair is replaced as a whole, so a cohort in another thread never sees half of it)."""
    global _device_data
    cached = _device_data
    if cached[0] is not dataset:
        cached = _device_data = (dataset, EpochData.from_dataset(dataset))
    return cached[1]


class JaxCohort:
    """A cohort's compiled programs and the runs' state on the device (``loop.CohortBackend``)."""

    def __init__(self, configs: list[RunConfig], dataset: Dataset, model: Model,
                 shapes: dict[int, EpochShape] | None = None):
        self.cfg = first = configs[0]
        self.model, self.to_tree = measuring_model(model, first)
        self.data = epoch_data(dataset)
        if first.devices > 1:  # the programs take their arguments replicated on every device
            self.data = jax.device_put(self.data, programs.replicated(first.devices))
        n, r = dataset.n_train, len(configs)
        self.orders = EpochOrders([c.data_seed for c in configs], n, first.shuffle)
        self.shapes = shapes or exact_shapes(first, n)
        self.steps = {b: budget.steps_per_epoch(n, b, first.drop_last) for b in self.shapes}
        self.names = output_names(step_instruments(first.instruments))
        t_compile = time.perf_counter()
        key = ProgramKey.of(self.model, first, r, self.data)
        epoch_shapes = list(dict.fromkeys(self.shapes.values()))
        needed = [programs.start_program(key), programs.eval_program(key),
                  *(programs.epoch_program(key, shape) for shape in epoch_shapes)]
        with profiling.phase("compilation"):  # programs not compiled yet: built here, or waited for
            start, self.evaluate_program, *compiled = programs.QUEUE.ready_all(needed)
        self.programs = dict(zip(epoch_shapes, compiled))
        self.setup_seconds = time.perf_counter() - t_compile
        self.state = programs.start_states(start, configs)
        self.best = None
        self.ahead = first.early_stopping is None
        self.pending: dict[int, EpochOutput] = {}

    def evaluate(self) -> dict[str, np.ndarray]:
        return self._metrics(self.evaluate_program(self.state.params, self.state.model_state, self.data))

    def _metrics(self, values) -> dict[str, np.ndarray]:
        return dict(zip(EVAL_METRICS, np.asarray(values).T))

    def _dispatch(self, state, epoch: int, active: np.ndarray) -> EpochOutput:
        """Start epoch ``epoch`` (a phase that begins here sets its learning rate first) and
        its evaluation, without waiting for either."""
        lr = self.cfg.lr_set_at(epoch)
        if lr is not None:
            state = state._replace(lr=jnp.full_like(state.lr, lr))
        size = self.cfg.batch_size_at(epoch)
        before = self.cfg.updates_after(self.data.n_train, epoch - 1)
        out = self.programs[self.shapes[size]](state, active, self.orders.next(), np.int32(size),
                                               np.int32(self.steps[size]), np.int32(before), self.data)
        if out.metrics is None:
            out = out._replace(metrics=self.evaluate_program(out.state.params, out.state.model_state, self.data))
        return out

    def train_epoch(self, epoch: int, active: np.ndarray) -> EpochResult:
        out = self.pending.pop(epoch, None) or self._dispatch(self.state, epoch, active)
        self.state = out.state
        if self.ahead and epoch < self.cfg.epochs:
            self.pending[epoch + 1] = self._dispatch(out.state, epoch + 1, active)
        steps = self.steps[self.cfg.batch_size_at(epoch)]
        per_step = np.moveaxis(np.asarray(out.per_step)[:, :steps], -1, 0)
        return EpochResult(dict(zip(self.names, per_step)), self._metrics(out.metrics),
                           np.asarray(out.state.diverged_step))

    def keep_best(self, improved: np.ndarray) -> None:
        if improved.all():
            self.best = self.state.params
            return
        keep = jnp.asarray(improved)

        def pick(a, b):
            return jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
        self.best = jax.tree.map(pick, self.state.params, self.best)

    def saved(self) -> list:
        tree = _host_tree(self.to_tree(self.state.params))
        return [jax.tree.map(lambda a: a[i], tree) for i in range(len(self.state.lr))]

    def final(self, best: bool) -> list:
        # On the host once (indexing a device array per run compiles a slicing program per leaf).
        tree = _host_tree(self.to_tree(self.best if best else self.state.params))
        return [jax.tree.map(lambda a: a[i].copy(), tree) for i in range(len(self.state.lr))]


def _host_tree(tree):
    return jax.tree.map(np.asarray, tree)
