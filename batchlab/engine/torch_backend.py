"""The torch backend of the host loop (``engine/loop.py``): a cohort of a PyTorch model.

Same contract and records as the JAX engine (``engine/backends.py`` picks one by
``model.backend``): the same loop, the same data order from the same data seeds
(``EpochOrders``), the same update rule (``torch_optim.py`` mirrors optax) and the same
instruments (``instruments/``, run on tensors). How the runs train (``torch_runs.py``): stacked
and vmapped when there are at least ``STACK_MIN_RUNS`` of them and the model allows it and
gains from it (no dropout or other random draws, no buffers that training moves such as batch
norm's statistics, no convolutions); otherwise one module per run, one after another.
Measured on this 2-core CPU (digits MLP 64-50-10, single thread, 10 epochs, best of 3;
machine shared): one by one / stacked time = 0.43 (1 run), 0.69 (2), 0.94 (3), 1.14 (4), 1.89
(8), 2.55 (16) at B = 32; 0.37, 0.68, 1.00, 1.26, 2.21, 3.58 at B = 4; 0.59, 0.88, 1.06, 1.21,
1.11, 1.76 at B = 256. A stacked step pays a roughly fixed ~0.4 ms of ``vmap``/``functional_call``
overhead.

Where it differs from the JAX engine, by nature: dropout masks come from torch's generator
(seeded per run from ``dropout_seed``), so they are reproducible but not JAX's masks, and
micro-batches or the noise instruments' halves draw their own masks (the JAX engine gives
every split the whole batch's masks). ``setup_seconds`` is the time to build the runs'
modules; nothing is compiled.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
import torch

from batchlab import budget
from batchlab.config import RunConfig
from batchlab.engine.epoch import EpochOrders
from batchlab.engine.loop import EpochResult, Scores, train_runs
from batchlab.engine.records import batch_counts
from batchlab.engine.torch_optim import TorchOptimizer
from batchlab.engine.torch_runs import ModuleRuns, StackedRuns, should_stack
from batchlab.engine.torch_step import EpochPlan
from batchlab.instruments import output_names, step_instruments
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

    ``model`` is a :class:`~batchlab.models.adapters.torch.TorchModel`. Parameters (and buffers)
    of checkpoints and of ``RunResult.params`` are NumPy arrays keyed by name. The caller's
    torch RNG is left as it was.
    """
    configure_threads()
    assert all(c.cohort_key() == configs[0].cohort_key() for c in configs), "configs are not one cohort"
    with torch.random.fork_rng(devices=[]):
        backend = TorchCohort(configs, dataset, model)
        return train_runs(configs, backend, Scores(model.task, dataset.y_train, dataset.y_test), dataset.n_train,
                          on_epoch, checkpoints)


def _data(dataset, module: torch.nn.Module, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All rows, training rows first, as tensors of the module's dtype and device."""
    first = next(iter(module.parameters()))
    x = torch.from_numpy(np.concatenate([dataset.x_train, dataset.x_test])).to(first.device, first.dtype)
    y = np.concatenate([dataset.y_train, dataset.y_test])
    y = torch.from_numpy(y).to(first.device, first.dtype if task == "regression" else torch.long)
    return x, y


class TorchCohort:
    """A cohort's modules and optimizer states (``loop.CohortBackend``)."""

    def __init__(self, configs: list[RunConfig], dataset, model):
        t_setup = time.perf_counter()
        self.cfg = first = configs[0]
        self.task, self.n = model.task, dataset.n_train
        modules = [model.build(c.init_seed) for c in configs]
        self.x, self.y = _data(dataset, modules[0], self.task)
        self.optimizer = TorchOptimizer(first.optimizer, first.updates_after(self.n, first.epochs))
        self.instruments = step_instruments(first.instruments)
        hyper = [[c.optimizer.lr for c in configs], [c.optimizer.momentum for c in configs],
                 [c.optimizer.weight_decay for c in configs]]
        if len(configs) >= STACK_MIN_RUNS and should_stack(modules[0], self.x[:2]):
            self.runs = StackedRuns(modules, self.optimizer, *hyper, self.instruments)
        else:
            self.runs = ModuleRuns(modules, self.optimizer, *hyper, self.instruments, [c.dropout_seed for c in configs])
        self.orders = EpochOrders([c.data_seed for c in configs], self.n, first.shuffle)
        self.everyone = np.arange(len(configs))
        self.updates = np.zeros(len(configs), np.int64)  # updates applied so far (the schedule's count)
        self.diverged_step = np.full(len(configs), -1, np.int64)
        self.setup_seconds = time.perf_counter() - t_setup

    def evaluate(self, idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return self.runs.evaluate(self.everyone if idx is None else idx, self.x, self.y, self.n, self.task)

    def train_epoch(self, epoch: int, active: np.ndarray) -> EpochResult:
        lr = self.cfg.lr_set_at(epoch)
        if lr is not None:
            self.runs.set_lr(lr)
        size = self.cfg.batch_size_at(epoch)
        steps = budget.steps_per_epoch(self.n, size, self.cfg.drop_last)
        plan = EpochPlan(size, steps, batch_counts(self.n, size, steps), self.task, self.cfg.reduction,
                         self.cfg.micro_batch, self.instruments, self.optimizer)
        order = torch.from_numpy(self.orders.next().astype(np.int64)).to(self.x.device)
        idx = np.flatnonzero(active)
        series, bad = self.runs.train_epoch(idx, self.x, self.y, order, plan, self.updates)
        r = len(self.everyone)
        per_step = {name: np.full((r, steps), np.nan) for name in output_names(self.instruments)}
        for name, values in series.items():
            per_step[name][idx] = values
        self.diverged_step[idx[bad >= 0]] = self.updates[idx[bad >= 0]] + bad[bad >= 0] + 1
        self.updates[idx[bad < 0]] += steps
        metrics = {name: np.full(r, np.nan) for name in ("train_loss", "train_score", "test_loss", "test_score")}
        for name, values in self.evaluate(idx).items():
            metrics[name][idx] = values
        return EpochResult(per_step, metrics, self.diverged_step.copy())

    def keep_best(self, improved: np.ndarray) -> None:
        self.runs.keep_best(improved)

    def saved(self) -> list:
        return [self.runs.state_dict(i) for i in self.everyone]

    def final(self, best: bool) -> list:
        return [self.runs.state_dict(i, best=best) for i in self.everyone]
