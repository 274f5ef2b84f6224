"""The host loop of a cohort, written once for every backend.

A backend (the JAX engine, ``engine/jax_backend.py``; the torch backend,
``engine/torch_backend.py``) trains a cohort's runs one epoch at a time and says what
happened (:class:`CohortBackend`). This loop does the rest, the same way for both: the
records (epoch 0 included, ``records.CohortRecorder``), scores in the task's names (accuracy,
or R^2 of a regression), early stopping and the best parameters, divergence, checkpoints,
progress, and the finished runs.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Protocol

import numpy as np

from batchlab import budget
from batchlab.config import EarlyStopping, RunConfig, eval_names, score_name
from batchlab.engine import parallel
from batchlab.engine.records import CohortRecorder, batch_counts, record_every
from batchlab.models.losses import score_metric, target_variance
from batchlab.results import RunResult


class EpochResult(NamedTuple):
    """What a backend reports of one epoch, every array with one row per run of the cohort."""

    per_step: dict[str, np.ndarray]  # (runs, steps): mb_loss, mb_score (accuracy or squared error), instruments
    metrics: dict[str, np.ndarray]  # (runs,): train_loss, train_score, test_loss, test_score after the epoch
    diverged_step: np.ndarray  # (runs,): the first update whose batch loss was not finite, -1 if none


class CohortBackend(Protocol):
    """What the loop needs of a backend that trains one cohort."""

    setup_seconds: float  # compiling (JAX) or building the runs (torch) before the first epoch

    def evaluate(self) -> dict[str, np.ndarray]: ...  # metrics before training (``EpochResult.metrics``)
    def train_epoch(self, epoch: int, active: np.ndarray) -> EpochResult: ...  # epoch is 1-based
    def keep_best(self, improved: np.ndarray) -> None: ...  # remember these runs' parameters now
    def saved(self) -> list: ...  # each run's parameters now, on the host
    def final(self, best: bool) -> list: ...  # each run's parameters at the end (or the best kept)


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


class Scores:
    """Metrics under their task's names, scores as recorded: accuracy as it is, a mean squared
    error as R^2 against the variance of the split's targets (``models/losses.py``)."""

    def __init__(self, task: str, y_train: np.ndarray, y_test: np.ndarray):
        self.task, self.name, self.names = task, score_name(task), eval_names(task)
        self.variance = ((target_variance(y_train), target_variance(y_test)) if task == "regression" else (1.0, 1.0))

    def metrics(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self.names[0]: raw["train_loss"], self.names[1]: score_metric(self.task, raw["train_score"],
                                                                               self.variance[0]),
                self.names[2]: raw["test_loss"], self.names[3]: score_metric(self.task, raw["test_score"],
                                                                              self.variance[1])}

    def per_step(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {f"mb_{self.name}" if k == "mb_score" else k:
                score_metric(self.task, v, self.variance[0]) if k == "mb_score" else v for k, v in raw.items()}


def train_runs(configs: list[RunConfig], backend: CohortBackend, scores: Scores, n_train: int,
               on_epoch: Callable[[int], None] | None = None, checkpoints: tuple[int, ...] = ()) -> list[RunResult]:
    """Train a cohort epoch by epoch through ``backend``; one result per config.

    ``checkpoints``: epochs (0 = before training) whose parameters each run keeps in
    ``RunResult.checkpoints``. ``on_epoch(e)``: epoch ``e`` finished (the last epoch when
    every run stopped early).
    """
    first, r = configs[0], len(configs)
    every = record_every(first.updates_after(n_train, first.epochs))
    recorder = CohortRecorder(r, scores.metrics(backend.evaluate()), scores.name, every)
    stopper = EarlyStopper(first.early_stopping, r)
    restore_best = first.early_stopping is not None and first.early_stopping.restore_best
    if restore_best:
        backend.keep_best(np.ones(r, bool))  # a run that never improves ends with its initial parameters
    saved = {0: backend.saved()} if 0 in checkpoints else {}
    active, end_epoch = np.ones(r, bool), np.full(r, first.epochs)
    t0 = time.perf_counter()
    for epoch in range(1, first.epochs + 1):
        parallel.check_cancelled()
        t_start = time.perf_counter() - t0
        result = backend.train_epoch(epoch, active)
        size = first.batch_size_at(epoch)
        counts = batch_counts(n_train, size, budget.steps_per_epoch(n_train, size, first.drop_last))
        diverged = recorder.add_epoch(epoch, counts, active, result.diverged_step, scores.per_step(result.per_step),
                                      scores.metrics(result.metrics), t_start, time.perf_counter() - t0)
        if epoch in checkpoints:
            saved[epoch] = backend.saved()
        improved, active, end_epoch = stopper.advance(epoch, recorder.epochs[-1], active, diverged, end_epoch)
        if restore_best and improved.any():
            backend.keep_best(improved)
        if on_epoch is not None:
            on_epoch(epoch if active.any() else first.epochs)  # stopped runs skip their last epochs
        if not active.any():
            break
    train_seconds = time.perf_counter() - t0
    params = backend.final(restore_best)  # Keras' restore_best_weights
    return [_result(i, cfg, recorder, stopper, int(end_epoch[i]), scores.name, params[i],
                    {e: states[i] for e, states in saved.items() if e <= end_epoch[i]},
                    backend.setup_seconds, train_seconds) for i, cfg in enumerate(configs)]


def _result(i: int, cfg: RunConfig, recorder: CohortRecorder, stopper: EarlyStopper, end_epoch: int, score: str,
            params, checkpoints: dict, setup_seconds: float, train_seconds: float) -> RunResult:
    """Run ``i``'s records, status and best epoch (the early stopper's, else the highest test
    score: accuracy or R^2)."""
    history, steps = recorder.series(i, end_epoch)
    diverged = recorder.diverged_step[i] >= 0
    status = "diverged" if diverged else ("early_stopped" if stopper.stopped[i] else "finished")
    test = history[f"test_{score}"]
    best = int(stopper.best_epoch[i]) if cfg.early_stopping else int(np.argmax(np.where(np.isfinite(test), test, -np.inf)))
    return RunResult(config=cfg, status=status, history=history, steps=steps, best_epoch=best,
                     diverged_step=int(recorder.diverged_step[i]) if diverged else None,
                     compile_seconds=setup_seconds, train_seconds=train_seconds, params=params, checkpoints=checkpoints)
