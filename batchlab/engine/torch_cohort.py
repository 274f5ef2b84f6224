"""Train a cohort of a PyTorch model: the torch backend of the engine.

Same contract and records as ``engine/cohort.py`` (``engine/backends.py`` picks one by
``model.backend``): epoch 0 evaluated; per epoch a full eval-mode pass (``train_loss``,
``train_acc``, ``test_loss``, ``test_acc``; for a regression the losses are the MSE and
``*_r2`` replace the accuracies, ``engine/losses.py``); per step ``mb_loss``, ``mb_acc``
(``mb_r2``) and the requested per-step instruments; the same data order from the same data seeds
(``EpochOrders``); divergence, early stopping, phases, checkpoints. Host bookkeeping is
shared with the JAX engine (``CohortRecorder``, ``EarlyStopper``).

How the runs train (``torch_runs.py``): stacked and vmapped when there are at least
``STACK_MIN_RUNS`` of them and the model allows it and gains from it (no dropout or other
random draws, no buffers that training moves such as batch norm's statistics, no
convolutions); otherwise one module per run, one after another. Measured on this 2-core CPU
(digits MLP 64-50-10, single thread, 10 epochs, best of 3; machine shared): one by one /
stacked time = 0.43 (1 run), 0.69 (2), 0.94 (3), 1.14 (4), 1.89 (8), 2.55 (16) at B = 32;
0.37, 0.68, 1.00, 1.26, 2.21, 3.58 at B = 4; 0.59, 0.88, 1.06, 1.21, 1.11, 1.76 at B = 256.
A stacked step pays a roughly fixed ~0.4 ms of ``vmap``/``functional_call`` overhead.

Where it differs from the JAX engine, by nature: dropout masks come from torch's generator
(seeded per run from ``dropout_seed``), so they are reproducible but not JAX's masks, and
micro-batches or the noise instruments' halves draw their own masks (the JAX engine gives
every split the whole batch's masks). ``compile_seconds`` holds the setup time (building
the runs' modules and the epoch-0 evaluation); nothing is compiled.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
import torch

from batchlab import budget
from batchlab.config import RunConfig, eval_names, score_name
from batchlab.engine.cohort import EarlyStopper
from batchlab.engine.epoch import EpochOrders
from batchlab.engine.losses import score_metric, target_variance
from batchlab.engine.records import CohortRecorder, batch_counts
from batchlab.engine.step_stats import NOISE_EMA, noise_outputs, output_names, uses_noise
from batchlab.engine.torch_optim import TorchOptimizer
from batchlab.engine.torch_runs import ModuleRuns, StackedRuns, should_stack
from batchlab.engine.torch_step import EpochPlan
from batchlab.results import RunResult

STACK_MIN_RUNS = 4  # fewer runs train as fast or faster one by one (vmap's fixed cost per step; see the docstring)
_threads_configured = False


def configure_threads() -> None:
    """One intra-op thread for torch, unless ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` say
    otherwise: small models run fastest single-threaded on few cores, and torch's pool and
    XLA's fighting over two cores is many times slower (``design.md``)."""
    global _threads_configured
    if _threads_configured:
        return
    _threads_configured = True
    if not any(v in os.environ for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        torch.set_num_threads(1)


def train_cohort(configs: list[RunConfig], dataset, model, on_epoch: Callable[[int], None] | None = None,
                 checkpoints: tuple[int, ...] = ()) -> list[RunResult]:
    """Train runs that share ``configs[0].cohort_key()`` together; one result per config.

    ``model`` is a :class:`~batchlab.models.adapters.torch.TorchModel`. ``checkpoints`` lists
    epochs (0 = before training) whose parameters (and buffers) are kept in
    ``RunResult.checkpoints`` as NumPy arrays keyed by name; ``RunResult.params`` likewise.
    The caller's torch RNG is left as it was.
    """
    configure_threads()
    first = configs[0]
    assert all(c.cohort_key() == first.cohort_key() for c in configs), "configs are not one cohort"
    with torch.random.fork_rng(devices=[]):
        return _train(configs, dataset, model, on_epoch, checkpoints)


def _data(dataset, module: torch.nn.Module, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All rows, training rows first, as tensors of the module's dtype and device."""
    first = next(iter(module.parameters()))
    x = torch.from_numpy(np.concatenate([dataset.x_train, dataset.x_test])).to(first.device, first.dtype)
    y = np.concatenate([dataset.y_train, dataset.y_test])
    y = torch.from_numpy(y).to(first.device, first.dtype if task == "regression" else torch.long)
    return x, y


def _total_updates(cfg: RunConfig, n: int) -> int:
    return sum(budget.steps_per_epoch(n, cfg.batch_size_at(e), cfg.drop_last) for e in range(1, cfg.epochs + 1))


def _train(configs: list[RunConfig], dataset, model, on_epoch, checkpoints) -> list[RunResult]:
    first, task = configs[0], model.task
    n, r = dataset.n_train, len(configs)
    t_setup = time.perf_counter()
    modules = [model.build(c.init_seed) for c in configs]
    x, y = _data(dataset, modules[0], task)
    optimizer = TorchOptimizer(first.optimizer, _total_updates(first, n))
    lrs, momenta = [c.optimizer.lr for c in configs], [c.optimizer.momentum for c in configs]
    keep_init = "dist_init" in first.instruments
    if r >= STACK_MIN_RUNS and should_stack(modules[0], x[:2]):
        runs = StackedRuns(modules, optimizer, lrs, momenta, keep_init)
    else:
        runs = ModuleRuns(modules, optimizer, lrs, momenta, keep_init, [c.dropout_seed for c in configs])
    everyone = np.arange(r)
    score = score_name(task)
    record = _Recording(task, dataset)
    metrics0 = record.metrics(runs.evaluate(everyone, x, y, n, task))
    setup_seconds = time.perf_counter() - t_setup

    t0 = time.perf_counter()
    orders = EpochOrders([c.data_seed for c in configs], n, first.shuffle)
    recorder = CohortRecorder(r, metrics0, score=score)
    stopper = EarlyStopper(first.early_stopping, r)
    restore_best = first.early_stopping is not None and first.early_stopping.restore_best
    if restore_best:
        runs.keep_best(np.ones(r, bool))  # a run that never improves ends with its initial parameters
    saved = {0: [runs.state_dict(i) for i in everyone]} if 0 in checkpoints else {}
    end_epoch = np.full(r, first.epochs)
    active = np.ones(r, bool)
    updates = np.zeros(r, np.int64)  # updates applied so far (the schedule's count)
    diverged_step = np.full(r, -1, np.int64)
    noise_state = np.zeros((r, 4), np.float32)
    step_names = [f"mb_{score}" if name == "mb_acc" else name for name in output_names(first.instruments)]

    for epoch in range(1, first.epochs + 1):
        t_start = time.perf_counter() - t0
        for phase in first.phases:
            if phase.epoch == epoch - 1 and phase.lr is not None:
                runs.set_lr(phase.lr)
        size = first.batch_size_at(epoch)
        steps = budget.steps_per_epoch(n, size, first.drop_last)
        counts = batch_counts(n, size, steps)
        plan = EpochPlan(size, steps, counts, task, first.reduction, first.micro_batch, first.instruments, optimizer)
        order = torch.from_numpy(orders.next().astype(np.int64)).to(x.device)
        idx = np.flatnonzero(active)
        series, bad = runs.train_epoch(idx, x, y, order, plan, updates)

        series[f"mb_{score}"] = record.score(series.pop("mb_score"))
        per_step = {name: np.full((r, steps), np.nan) for name in step_names}
        for name in step_names:
            if name in series:
                per_step[name][idx] = series[name]
        if uses_noise(first.instruments):
            outputs, state = _noise_series(noise_state[idx], series, counts)
            for name, values in outputs.items():
                per_step[name][idx] = values
            noise_state[idx[bad < 0]] = state[bad < 0]
        diverged_step[idx[bad >= 0]] = updates[idx[bad >= 0]] + bad[bad >= 0] + 1
        updates[idx[bad < 0]] += steps

        metrics = {name: np.full(r, np.nan) for name in metrics0}
        for name, values in record.metrics(runs.evaluate(idx, x, y, n, task)).items():
            metrics[name][idx] = values
        diverged = recorder.add_epoch(epoch, counts, active, diverged_step, per_step, metrics, t_start,
                                      time.perf_counter() - t0)
        if epoch in checkpoints:
            saved[epoch] = [runs.state_dict(i) for i in everyone]
        # Early stopping may watch a running average too (``cohort.monitorable``).
        improved, active, end_epoch = stopper.advance(epoch, recorder.epochs[-1], active, diverged, end_epoch)
        if restore_best and improved.any():
            runs.keep_best(improved)
        if on_epoch is not None:
            on_epoch(epoch if active.any() else first.epochs)  # stopped runs skip their last epochs
        if not active.any():
            break
    train_seconds = time.perf_counter() - t0

    results = []
    for i, cfg in enumerate(configs):
        history, step_series = recorder.series(i, int(end_epoch[i]))
        diverged = recorder.diverged_step[i] >= 0
        status = "diverged" if diverged else ("early_stopped" if stopper.stopped[i] else "finished")
        results.append(RunResult(
            config=cfg, status=status, history=history, steps=step_series,
            best_epoch=_best_epoch(history, cfg, stopper, i, score),
            diverged_step=int(recorder.diverged_step[i]) if diverged else None,
            compile_seconds=setup_seconds, train_seconds=train_seconds,
            params=runs.state_dict(i, best=restore_best),
            checkpoints={e: states[i] for e, states in saved.items() if e <= end_epoch[i]}))
    return results


class _Recording:
    """Scores as the JAX engine records them: accuracy as it is; a regression's mean squared
    error as R^2 against the variance of the split's targets (``engine/losses.py``)."""

    def __init__(self, task: str, dataset):
        self.task, self.names = task, eval_names(task)
        self.variance = ((target_variance(dataset.y_train), target_variance(dataset.y_test))
                         if task == "regression" else (1.0, 1.0))

    def metrics(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``train_loss``, ``train_acc``/``train_r2``, ``test_loss``, ``test_acc``/``test_r2``."""
        return {self.names[0]: raw["train_loss"], self.names[1]: self.score(raw["train_score"]),
                self.names[2]: raw["test_loss"], self.names[3]: self.score(raw["test_score"], test=True)}

    def score(self, values: np.ndarray, test: bool = False) -> np.ndarray:
        return score_metric(self.task, values, self.variance[1 if test else 0])


def _best_epoch(history: dict, cfg: RunConfig, stopper: EarlyStopper, i: int, score: str) -> int:
    """The early stopper's best epoch, else the highest test score (accuracy or R^2), as the JAX engine."""
    if cfg.early_stopping:
        return int(stopper.best_epoch[i])
    test = history[f"test_{score}"]
    return int(np.argmax(np.where(np.isfinite(test), test, -np.inf)))


def _noise_series(state: np.ndarray, series: dict, counts: np.ndarray) -> tuple[dict, np.ndarray]:
    """The noise EMAs along the epoch's steps (``step_stats.update_noise_state``, in float32
    on the host) and their per-step outputs, for runs with EMA ``state`` (k, 4); a one-row
    batch cannot be split and leaves the state as it was. Returns outputs (k, steps) and the
    final state."""
    state = state.copy()
    grad_sq = series["noise_grad_sq_est"].astype(np.float32)
    trace = series["noise_trace_est"].astype(np.float32)
    states = np.empty((len(counts), *state.shape), np.float32)
    for t, count in enumerate(counts):
        if count >= 2:
            values = np.stack([grad_sq[:, t], trace[:, t], grad_sq[:, t] * grad_sq[:, t]], axis=1)
            state[:, :3] = NOISE_EMA * state[:, :3] + (1 - NOISE_EMA) * values
            state[:, 3] += 1
        states[t] = state
    outputs = noise_outputs(np.moveaxis(states, -1, 0))  # (4, steps, k) -> each (steps, k)
    return {k: np.asarray(v, np.float64).T for k, v in outputs.items()}, state
