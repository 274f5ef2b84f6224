"""Train a cohort: runs that share data, model, batch size and schedule, vmapped as one program.

The host loop is short: compile once, evaluate epoch 0, then per epoch one compiled call
(the scan over the epoch's steps plus the evaluation), bookkeeping of early stopping and
divergence, and a progress callback. Runs differ in learning rate, momentum and seeds.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from batchlab import budget
from batchlab.config import EarlyStopping, RunConfig
from batchlab.data import Dataset
from batchlab.engine.epoch import EVAL_METRICS, EpochData, EpochOrders, evaluate_run, run_epoch
from batchlab.engine.flat import flat_model, unchanged
from batchlab.engine.optim import make_optimizer
from batchlab.engine.records import CohortRecorder, batch_counts
from batchlab.engine.runtime import configure_cache
from batchlab.engine.step import RunState
from batchlab.engine.step_stats import NOISE_STATE_SIZE, output_names, uses_noise
from batchlab.models.base import Model
from batchlab.results import RunResult

MONITORABLE = EVAL_METRICS + ("train_loss_running", "train_acc_running")


def prng_key(seed: int) -> np.ndarray:
    """``jax.random.PRNGKey(seed)`` built with NumPy (no compiled op): [high 32 bits, low 32 bits]."""
    return np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], dtype=np.uint32)


def _start_program(model: Model, opt_cfg, instruments: tuple[str, ...]):
    """Initial states of all runs (each with its own seeds and hyperparameters) and their
    epoch-0 metrics, as one compiled program."""

    def start_one(init_key, dropout_key, lr, momentum, data):
        params, model_state = model.init(init_key)
        opt_state = make_optimizer(opt_cfg, lr, momentum).init(params)
        run = RunState(params, model_state, opt_state, lr, momentum, jnp.int32(0), jnp.int32(-1), dropout_key,
                       init_params=params if "dist_init" in instruments else None,
                       noise_ema=jnp.zeros(NOISE_STATE_SIZE) if uses_noise(instruments) else None)
        return run, evaluate_run(run, data, model=model)

    return jax.jit(jax.vmap(start_one, in_axes=(0, 0, 0, 0, None)))


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


def train_cohort(configs: list[RunConfig], dataset: Dataset, model: Model,
                 on_epoch: Callable[[int], None] | None = None, checkpoints: tuple[int, ...] = ()
                 ) -> list[RunResult]:
    """Train runs that share ``configs[0].cohort_key()`` together; one result per config.

    ``checkpoints`` lists epochs (0 = before training) whose parameters are kept in
    ``RunResult.checkpoints`` for instruments that run on saved parameters.
    """
    configure_cache()
    first = configs[0]
    assert all(c.cohort_key() == first.cohort_key() for c in configs), "configs are not one cohort"
    # Per-step norms are cheap over one flat parameter vector (``engine/flat.py``).
    model, to_tree = flat_model(model) if first.instruments else (model, unchanged)
    n, r = dataset.n_train, len(configs)
    data = EpochData.from_dataset(dataset)
    orders = EpochOrders([c.data_seed for c in configs], n, first.shuffle)
    start_args = (np.stack([prng_key(c.init_seed) for c in configs]),
                  np.stack([prng_key(c.dropout_seed) for c in configs]),
                  np.array([c.optimizer.lr for c in configs], np.float32),
                  np.array([c.optimizer.momentum for c in configs], np.float32), data)
    # One compiled epoch per batch size the runs use (phases may switch it), reused across epochs.
    sizes = list(dict.fromkeys([first.batch_size] + [p.batch_size for p in first.phases if p.batch_size]))
    steps = {b: budget.steps_per_epoch(n, b, first.drop_last) for b in sizes}

    def epoch_program(batch_size: int):
        return jax.jit(jax.vmap(
            partial(run_epoch, model=model, optimizer=first.optimizer, batch_size=batch_size,
                    steps=steps[batch_size], reduction=first.reduction, micro_batch=first.micro_batch,
                    instruments=first.instruments),
            in_axes=(0, 0, 0, None)))

    t_compile = time.perf_counter()
    # JAX's default "partitionable" threefry makes XLA's CPU compiler take up to 4x longer on
    # random draws of multi-dimensional shapes (weight inits); the classic stream is just as
    # reproducible and keeps the cold start short. It applies to batchlab's programs only.
    with jax.threefry_partitionable(False):
        start_fn = _start_program(model, first.optimizer, first.instruments).lower(*start_args).compile()
        runs, metrics0 = start_fn(*start_args)
        active = np.ones(r, bool)
        order_shape = jax.ShapeDtypeStruct((r, n), jnp.int32)
        programs = {b: epoch_program(b).lower(runs, active, order_shape, data).compile() for b in sizes}
    compile_seconds = time.perf_counter() - t_compile

    t0 = time.perf_counter()
    recorder = CohortRecorder(r, _host(metrics0))
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
        return programs[first.batch_size_at(epoch)](runs, active, orders.next(), data)

    pending = dispatch(runs, 1)
    for epoch in range(1, first.epochs + 1):
        t_start = time.perf_counter() - t0
        runs, per_step, metrics = pending
        if ahead and epoch < first.epochs:
            pending = dispatch(runs, epoch + 1)
        per_step = dict(zip(step_names, np.moveaxis(np.asarray(per_step), -1, 0)))
        metrics = dict(zip(EVAL_METRICS, np.asarray(metrics).T))
        size = first.batch_size_at(epoch)
        diverged = recorder.add_epoch(epoch, batch_counts(n, size, steps[size]), active, np.asarray(runs.diverged_step), per_step, metrics,
                                      t_start, time.perf_counter() - t0)
        if epoch in checkpoints:
            saved[epoch] = _host_tree(to_tree(runs.params))
        improved = stopper.update(epoch, metrics, active & ~diverged)
        if restore_best and improved.any():
            best_params = _select_runs(jnp.asarray(improved), runs.params, best_params)
        still = active & ~diverged & ~stopper.stopped
        end_epoch = np.where(active & ~still, epoch, end_epoch)
        active = still
        if on_epoch is not None:
            on_epoch(epoch if active.any() else first.epochs)  # stopped runs skip their last epochs
        if not active.any():
            break
        if not ahead and epoch < first.epochs:
            pending = dispatch(runs, epoch + 1)
    train_seconds = time.perf_counter() - t0

    final_params = to_tree(best_params if restore_best else runs.params)  # Keras' restore_best_weights
    results = []
    for i, cfg in enumerate(configs):
        history, step_series = recorder.series(i, int(end_epoch[i]))
        diverged = recorder.diverged_step[i] >= 0
        status = "diverged" if diverged else ("early_stopped" if stopper.stopped[i] else "finished")
        finite = np.isfinite(history["test_acc"])
        best = int(stopper.best_epoch[i]) if cfg.early_stopping else int(np.argmax(np.where(finite, history["test_acc"], -1)))
        results.append(RunResult(
            config=cfg, status=status, history=history, steps=step_series, best_epoch=best,
            diverged_step=int(recorder.diverged_step[i]) if diverged else None,
            compile_seconds=compile_seconds, train_seconds=train_seconds,
            params=jax.tree.map(lambda a: np.asarray(a[i]), final_params),
            checkpoints={e: jax.tree.map(lambda a: a[i], p) for e, p in saved.items() if e <= end_epoch[i]}))
    return results


def _host_tree(tree):
    return jax.tree.map(np.asarray, tree)


def _host(tree: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in tree.items()}


def _select_runs(keep: jax.Array, new, old):
    """Per-run choice between two stacked pytrees (``keep`` has one flag per run)."""
    def pick(a, b):
        return jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
    return jax.tree.map(pick, new, old)
