"""Train a cohort: runs that share data, model, batch size and schedule, vmapped as one program.

The host loop is short: compile once, evaluate epoch 0, then per epoch one compiled call
(the scan over the epoch's steps plus the evaluation), bookkeeping of early stopping and
divergence, and a progress callback. Runs differ in learning rate, momentum and seeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from batchlab import budget
from batchlab.config import RunConfig
from batchlab.data import Dataset
from batchlab.engine.epoch import epoch_orders, evaluate_run, run_epoch
from batchlab.engine.optim import make_optimizer
from batchlab.engine.runtime import configure_cache
from batchlab.engine.step import RunState
from batchlab.models.base import Model

EVAL_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
MONITORABLE = EVAL_METRICS + ("train_loss_running", "train_acc_running")


@dataclass
class RunResult:
    """One finished run: its config, status and recorded series (numpy arrays)."""

    config: RunConfig
    status: str  # "finished" | "early_stopped" | "diverged"
    history: dict[str, np.ndarray]  # per epoch, epoch 0 included
    steps: dict[str, np.ndarray]  # per optimizer update
    best_epoch: int
    diverged_step: int | None = None
    compile_seconds: float = 0.0
    train_seconds: float = 0.0
    params: Any = field(default=None, repr=False)  # final (or restored best) parameters
    version: str | None = None  # batchlab version that produced it (set when read from a store)

    @property
    def run_id(self) -> str:
        return self.config.run_id

    def final(self, name: str) -> float:
        return float(self.history[name][-1])


def prng_key(seed: int) -> np.ndarray:
    """``jax.random.PRNGKey(seed)`` built with NumPy (no compiled op): [high 32 bits, low 32 bits]."""
    return np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], dtype=np.uint32)


def _start_program(model: Model, opt_cfg):
    """Initial states of all runs (each with its own seeds and hyperparameters) and their
    epoch-0 metrics, as one compiled program."""

    def start_one(init_key, dropout_key, lr, momentum, data):
        params, model_state = model.init(init_key)
        opt_state = make_optimizer(opt_cfg, lr, momentum).init(params)
        run = RunState(params, model_state, opt_state, jnp.int32(0), jnp.int32(0), jnp.bool_(True),
                       jnp.int32(-1), dropout_key)
        return run, evaluate_run(run, data, model=model)

    return jax.jit(jax.vmap(start_one, in_axes=(0, 0, 0, 0, None)))


def _improved(value: np.ndarray, best: np.ndarray, mode: str, min_delta: float) -> np.ndarray:
    return value < best - min_delta if mode == "min" else value > best + min_delta


def train_cohort(configs: list[RunConfig], dataset: Dataset, model: Model,
                 on_epoch: Callable[[int], None] | None = None) -> list[RunResult]:
    """Train runs that share ``configs[0].cohort_key()`` together; one result per config."""
    configure_cache()
    first = configs[0]
    assert all(c.cohort_key() == first.cohort_key() for c in configs), "configs are not one cohort"
    n = dataset.n_train
    steps = budget.steps_per_epoch(n, first.batch_size, first.drop_last)
    data = tuple(jax.device_put(a) for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test))

    epoch_fn = jax.jit(jax.vmap(
        partial(run_epoch, model=model, optimizer=make_optimizer(first.optimizer), batch_size=first.batch_size,
                steps=steps, reduction=first.reduction, micro_batch=first.micro_batch),
        in_axes=(0, 0, None)))
    start_args = (np.stack([prng_key(c.init_seed) for c in configs]),
                  np.stack([prng_key(c.dropout_seed) for c in configs]),
                  np.array([c.optimizer.lr for c in configs], np.float32),
                  np.array([c.optimizer.momentum for c in configs], np.float32), data)
    data_seeds = [c.data_seed for c in configs]

    t_compile = time.perf_counter()
    start_fn = _start_program(model, first.optimizer).lower(*start_args).compile()
    runs, metrics0 = start_fn(*start_args)
    epoch_fn = epoch_fn.lower(runs, epoch_orders(data_seeds, 1, n, first.shuffle), data).compile()
    compile_seconds = time.perf_counter() - t_compile

    r = len(configs)
    es = first.early_stopping
    best_value = np.full(r, np.inf if (es is None or es.mode == "min") else -np.inf)
    best_epoch = np.zeros(r, int)
    wait = np.zeros(r, int)
    end_epoch = np.full(r, first.epochs)
    stopped_early = np.zeros(r, bool)
    best_params = runs.params if es is not None and es.restore_best else None

    t0 = time.perf_counter()
    metrics0 = {k: np.asarray(v) for k, v in metrics0.items()}
    epoch_rows = [dict(metrics0, wall_time=np.zeros(r),
                       train_loss_running=np.full(r, np.nan), train_acc_running=np.full(r, np.nan))]
    step_chunks: list[dict[str, np.ndarray]] = []
    active = np.ones(r, bool)
    for epoch in range(1, first.epochs + 1):
        t_start = time.perf_counter() - t0
        runs, per_step, metrics = epoch_fn(runs, epoch_orders(data_seeds, epoch, n, first.shuffle), data)
        per_step = {k: np.asarray(v) for k, v in per_step.items()}
        metrics = {k: np.asarray(v) for k, v in metrics.items()}
        t_end = time.perf_counter() - t0

        weight = per_step["count"] * per_step["applied"]
        seen = np.maximum(weight.sum(axis=1), 1.0)
        for name in ("loss", "acc"):  # a diverged step's non-finite loss has weight 0
            values = np.where(weight > 0, per_step[f"mb_{name}"], 0.0)
            metrics[f"train_{name}_running"] = (values * weight).sum(axis=1) / seen
        metrics["wall_time"] = np.full(r, t_end)
        fraction = np.arange(1, steps + 1) / steps
        per_step["wall_time"] = np.broadcast_to(t_start + fraction * (t_end - t_start), (r, steps))
        per_step["epoch"] = np.full((r, steps), epoch)
        epoch_rows.append(metrics)
        step_chunks.append(per_step)

        # Divergence found by the evaluation pass (the step already caught non-finite batch losses).
        now_active = np.asarray(runs.active) & np.isfinite(metrics["train_loss"])
        if es is not None:
            value = metrics[es.monitor]
            better = _improved(value, best_value, es.mode, es.min_delta) & active
            best_value = np.where(better, value, best_value)
            best_epoch = np.where(better, epoch, best_epoch)
            wait = np.where(better, 0, wait + 1)
            if best_params is not None and better.any():
                best_params = _select_runs(jnp.asarray(better), runs.params, best_params)
            patience_out = now_active & (wait >= es.patience)
            stopped_early |= patience_out
            now_active &= ~patience_out
        newly_stopped = active & ~now_active
        end_epoch = np.where(newly_stopped, epoch, end_epoch)
        if newly_stopped.any():
            runs = runs._replace(active=jnp.asarray(now_active))
        active = now_active
        if on_epoch is not None:
            on_epoch(epoch)
        if not active.any():
            if on_epoch is not None and epoch < first.epochs:
                on_epoch(first.epochs)  # signal the skipped epochs as done
            break
    train_seconds = time.perf_counter() - t0

    final_params = runs.params if best_params is None else best_params  # Keras' restore_best_weights
    diverged_step = np.asarray(runs.diverged_step)
    results = []
    for i, cfg in enumerate(configs):
        history, step_series = _series_of_run(i, epoch_rows, step_chunks, end_epoch[i], runs, n_steps=steps)
        diverged = diverged_step[i] >= 0 or not np.isfinite(history["train_loss"][-1])
        if diverged and diverged_step[i] < 0:
            diverged_step[i] = int(history["step"][-1])
        status = "diverged" if diverged else ("early_stopped" if stopped_early[i] else "finished")
        if es is None:
            best = int(np.nanargmax(history["test_acc"])) if np.isfinite(history["test_acc"]).any() else 0
        else:
            best = int(best_epoch[i])
        results.append(RunResult(
            config=cfg, status=status, history=history, steps=step_series, best_epoch=best,
            diverged_step=int(diverged_step[i]) if diverged else None,
            compile_seconds=compile_seconds, train_seconds=train_seconds,
            params=jax.tree.map(lambda a: np.asarray(a[i]), final_params)))
    return results


def _select_runs(keep: jax.Array, new, old):
    """Per-run choice between two stacked pytrees (``keep`` has one flag per run)."""
    def pick(a, b):
        return jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
    return jax.tree.map(pick, new, old)


def _series_of_run(i: int, epoch_rows: list[dict], step_chunks: list[dict], end_epoch: int,
                   runs: RunState, n_steps: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-epoch and per-step arrays of run ``i``, cut at the epoch it stopped."""
    chunks = step_chunks[:end_epoch]
    if chunks:
        cat = {k: np.concatenate([c[k][i] for c in chunks]) for k in chunks[0]}
    else:
        cat = {k: np.zeros(0) for k in ("mb_loss", "mb_acc", "count", "applied", "wall_time", "epoch")}
    applied = cat["applied"].astype(bool)
    step_number = np.cumsum(applied)
    samples = np.cumsum(cat["count"] * applied).astype(np.int64)
    steps = {
        "epoch": cat["epoch"][applied].astype(np.int64),
        "step": step_number[applied].astype(np.int64),
        "samples_seen": samples[applied],
        "wall_time": cat["wall_time"][applied],
        "mb_loss": cat["mb_loss"][applied].astype(np.float64),
        "mb_acc": cat["mb_acc"][applied].astype(np.float64),
    }
    # Updates and samples at the end of each epoch, from the per-step counts.
    per_epoch_steps = [0] + [int(c["applied"][i].sum()) for c in chunks]
    per_epoch_samples = [0] + [int((c["count"][i] * c["applied"][i]).sum()) for c in chunks]
    rows = epoch_rows[: end_epoch + 1]
    history = {
        "epoch": np.arange(len(rows), dtype=np.int64),
        "step": np.cumsum(per_epoch_steps).astype(np.int64),
        "samples_seen": np.cumsum(per_epoch_samples).astype(np.int64),
    }
    for key in rows[0]:
        history[key] = np.array([float(row[key][i]) for row in rows])
    return history, steps
