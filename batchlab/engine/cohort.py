"""Train a cohort: runs that share data, model, batch size and schedule, vmapped as one program.

The host loop is short: get the compiled programs (``engine/programs.py``: shared between
cohorts, often compiled ahead in the background), evaluate epoch 0, then per epoch one
compiled call (the loop over the epoch's steps plus the evaluation), bookkeeping of early
stopping and divergence, and a progress callback. Runs differ in learning rate, momentum
and seeds.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from batchlab import budget
from batchlab.config import EarlyStopping, RunConfig
from batchlab.data import Dataset
from batchlab import profiling
from batchlab.engine import losses, parallel, programs
from batchlab.engine.epoch import EpochData, EpochOrders
from batchlab.engine.flat import flat_model, unchanged
from batchlab.engine.programs import EpochShape, prng_key
from batchlab.engine.records import CohortRecorder, batch_counts
from batchlab.engine.step_stats import output_names
from batchlab.models.base import Model
from batchlab.results import RunResult

def monitorable(task: str) -> tuple[str, ...]:
    """Metrics early stopping can watch, for a model of ``task``."""
    score = losses.score_name(task)
    return losses.eval_names(task) + ("train_loss_running", f"train_{score}_running")


MONITORABLE = monitorable("classification")


class EarlyStopper:
    """Keras-style early stopping for each run of a cohort, on the host."""

    def __init__(self, rule: EarlyStopping | None, runs: int):
        self.rule = rule
        worst = np.inf if (rule is None or rule.mode == "min") else -np.inf
        self.best_value = np.full(runs, worst)
        self.best_epoch = np.zeros(runs, np.int64)
        self.wait = np.zeros(runs, np.int64)
        self.stopped = np.zeros(runs, bool)

    def update(self, epoch: int, metrics: dict[str, np.ndarray], active: np.ndarray) -> np.ndarray:
        """Returns which runs improved; marks those out of patience as stopped."""
        if self.rule is None:
            return np.zeros_like(active)
        value, delta = metrics[self.rule.monitor], self.rule.min_delta
        better = active & (value < self.best_value - delta if self.rule.mode == "min"
                           else value > self.best_value + delta)
        self.best_value = np.where(better, value, self.best_value)
        self.best_epoch = np.where(better, epoch, self.best_epoch)
        self.wait = np.where(better, 0, self.wait + 1)
        self.stopped |= active & (self.wait >= self.rule.patience)
        return better

    def advance(self, epoch: int, record: dict[str, np.ndarray], active: np.ndarray, diverged: np.ndarray,
                end_epoch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """After epoch ``epoch`` (``record``: its recorded metrics, running averages included):
        which runs improved, which still train, and each run's last epoch so far."""
        improved = self.update(epoch, record, active & ~diverged)
        still = active & ~diverged & ~self.stopped
        return improved, still, np.where(active & ~still, epoch, end_epoch)


def train_cohort(configs: list[RunConfig], dataset: Dataset, model: Model,
                 on_epoch: Callable[[int], None] | None = None, checkpoints: tuple[int, ...] = (),
                 shapes: dict[int, EpochShape] | None = None) -> list[RunResult]:
    """Train runs that share ``configs[0].cohort_key()`` together; one result per config.

    ``checkpoints`` lists epochs (0 = before training) whose parameters are kept in
    ``RunResult.checkpoints`` for instruments that run on saved parameters. ``shapes``: the
    epoch program each batch size uses (``programs.plan_shapes``); exact widths by default.
    """
    first = configs[0]
    assert all(c.cohort_key() == first.cohort_key() for c in configs), "configs are not one cohort"
    model, to_tree = measuring_model(model, first)
    n, r = dataset.n_train, len(configs)
    data = epoch_data(dataset)
    orders = EpochOrders([c.data_seed for c in configs], n, first.shuffle)
    shapes = shapes or programs.exact_shapes(first, n)
    start_args = (np.stack([prng_key(c.init_seed) for c in configs]),
                  np.stack([prng_key(c.dropout_seed) for c in configs]),
                  np.array([c.optimizer.lr for c in configs], np.float32),
                  np.array([c.optimizer.momentum for c in configs], np.float32))
    steps = {b: budget.steps_per_epoch(n, b, first.drop_last) for b in shapes}

    t_compile = time.perf_counter()
    epoch_shapes = list(dict.fromkeys(shapes.values()))
    needed = [programs.start_program(model, first, r, data), programs.eval_program(model, first, r, data),
              *(programs.epoch_program(model, first, shape, r, data) for shape in epoch_shapes)]
    with profiling.phase("compilation"):  # programs not compiled yet: built here, or waited for
        start, evaluate, *epoch_programs = programs.ready_all(needed)
    compiled = dict(zip(epoch_shapes, epoch_programs))
    compile_seconds = time.perf_counter() - t_compile
    with profiling.phase("training"):
        return _train(configs, model, to_tree, data, orders, start(*start_args), evaluate, compiled, shapes, steps,
                      compile_seconds, on_epoch, checkpoints)


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


def _train(configs, model, to_tree, data, orders, runs, evaluate, compiled, shapes, steps, compile_seconds,
           on_epoch, checkpoints) -> list[RunResult]:
    """The epoch loop of a cohort whose programs are compiled; returns one result per config."""
    first, n, r = configs[0], data.n_train, len(configs)
    task = model.task
    variance = ((losses.target_variance(data.y[:n]), losses.target_variance(data.y[n:]))
                if task == "regression" else (1.0, 1.0))

    def recorded(metrics) -> dict[str, np.ndarray]:
        """Full-pass metrics under their task's names, scores as recorded (accuracy or R^2)."""
        values = np.asarray(metrics).T
        names = losses.eval_names(task)
        return {names[0]: values[0], names[1]: losses.score_metric(task, values[1], variance[0]),
                names[2]: values[2], names[3]: losses.score_metric(task, values[3], variance[1])}

    metrics0 = recorded(evaluate(runs.params, runs.model_state, data))
    score = losses.score_name(task)
    active = np.ones(r, bool)
    t0 = time.perf_counter()
    recorder = CohortRecorder(r, metrics0, score)
    stopper = EarlyStopper(first.early_stopping, r)
    restore_best = first.early_stopping is not None and first.early_stopping.restore_best
    best_params = runs.params
    saved = {0: _host_tree(to_tree(runs.params))} if 0 in checkpoints else {}
    end_epoch = np.full(r, first.epochs)
    # Without early stopping the host never changes which runs train (divergence freezes a
    # run inside the program), so the next epoch is dispatched before this one's records
    # are processed: host bookkeeping overlaps device work.
    ahead = first.early_stopping is None
    step_names = output_names(first.instruments)

    def dispatch(runs, epoch: int):
        """Start epoch ``epoch``: a phase that begins here sets its learning rate first."""
        for phase in first.phases:
            if phase.epoch == epoch - 1 and phase.lr is not None:
                runs = runs._replace(lr=jnp.full_like(runs.lr, phase.lr))
        size = first.batch_size_at(epoch)
        out = compiled[shapes[size]](runs, active, orders.next(), np.int32(size), np.int32(steps[size]), data)
        return out if len(out) == 3 else (*out, evaluate(out[0].params, out[0].model_state, data))

    pending = dispatch(runs, 1)
    for epoch in range(1, first.epochs + 1):
        parallel.check_cancelled()
        t_start = time.perf_counter() - t0
        runs, per_step, metrics = pending
        if ahead and epoch < first.epochs:
            pending = dispatch(runs, epoch + 1)
        size = first.batch_size_at(epoch)
        per_step = {name if name != "mb_acc" else f"mb_{score}":
                    values if name != "mb_acc" else losses.score_metric(task, values, variance[0])
                    for name, values in zip(step_names, np.moveaxis(np.asarray(per_step)[:, :steps[size]], -1, 0))}
        metrics = recorded(metrics)
        diverged = recorder.add_epoch(epoch, batch_counts(n, size, steps[size]), active, np.asarray(runs.diverged_step), per_step, metrics,
                                      t_start, time.perf_counter() - t0)
        if epoch in checkpoints:
            saved[epoch] = _host_tree(to_tree(runs.params))
        improved, active, end_epoch = stopper.advance(epoch, recorder.epochs[-1], active, diverged, end_epoch)
        if restore_best and improved.any():
            best_params = _select_runs(jnp.asarray(improved), runs.params, best_params)
        if on_epoch is not None:
            on_epoch(epoch if active.any() else first.epochs)  # stopped runs skip their last epochs
        if not active.any():
            break
        if not ahead and epoch < first.epochs:
            pending = dispatch(runs, epoch + 1)
    train_seconds = time.perf_counter() - t0

    # On the host once (indexing a device array per run compiles a slicing program per leaf).
    final_params = _host_tree(to_tree(best_params if restore_best else runs.params))  # Keras' restore_best_weights
    results = []
    for i, cfg in enumerate(configs):
        history, step_series = recorder.series(i, int(end_epoch[i]))
        diverged = recorder.diverged_step[i] >= 0
        status = "diverged" if diverged else ("early_stopped" if stopper.stopped[i] else "finished")
        test_score = history[f"test_{score}"]
        finite = np.isfinite(test_score)
        best = int(stopper.best_epoch[i]) if cfg.early_stopping else int(np.argmax(np.where(finite, test_score, -np.inf)))
        results.append(RunResult(
            config=cfg, status=status, history=history, steps=step_series, best_epoch=best,
            diverged_step=int(recorder.diverged_step[i]) if diverged else None,
            compile_seconds=compile_seconds, train_seconds=train_seconds,
            params=jax.tree.map(lambda a: a[i].copy(), final_params),
            checkpoints={e: jax.tree.map(lambda a: a[i], p) for e, p in saved.items() if e <= end_epoch[i]}))
    return results


def _host_tree(tree):
    return jax.tree.map(np.asarray, tree)


def _select_runs(keep: jax.Array, new, old):
    """Per-run choice between two stacked pytrees (``keep`` has one flag per run)."""
    def pick(a, b):
        return jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
    return jax.tree.map(pick, new, old)
