"""The Python API: ``batchlab.train(...)`` expands settings into runs, trains them cohort by
cohort, stores them, and returns their records as pandas DataFrames."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from batchlab import __version__, budget
from batchlab.config import (OPTIMIZERS, REDUCTIONS, SCHEDULES, SHUFFLE_MODES, DataConfig, EarlyStopping,
                             ModelConfig, OptimizerConfig, Phase, RunConfig, parse_batch_sizes, parse_floats,
                             parse_ints, parse_seeds, resolve_batch_size, check_seed,
                             check_writable_dir)
from batchlab.data import Dataset, from_arrays, load_dataset, resolve_data_config
from batchlab.engine.backends import train_cohorts
from batchlab.engine.cohort import monitorable
from batchlab.results import RunResult
from batchlab.engine.step_stats import uses_noise
from batchlab.errors import BatchlabError
from batchlab.instruments import resolve_instruments
from batchlab.models import Model, check_model_config
from batchlab.store import Store, series_frame, summary_frame

if TYPE_CHECKING:  # the frames import pandas when asked for; a sweep never needs it
    import pandas as pd

Progress = Callable[[int], None]  # called with the number of run-epochs just completed


@dataclass
class TrainResult:
    """The runs of one ``train`` call; ``skipped`` lists runs read back from the store."""

    runs: list[RunResult]
    skipped: list[str] = field(default_factory=list)

    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch records (epoch 0 included) of every run, with the run's settings as columns."""
        return series_frame(self.runs, "epoch")

    @property
    def steps(self) -> pd.DataFrame:
        """Per-step records (``mb_loss``, ``mb_acc``) of every run."""
        return series_frame(self.runs, "step")

    @property
    def summary(self) -> pd.DataFrame:
        """One row per run: final metrics, best epoch, updates, samples seen, wall time."""
        return summary_frame(self.runs)


def _check_int(value: Any, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BatchlabError(f"{what} must be an integer >= {low}, got {value!r}")
    return value


def build_configs(data: DataConfig, n_train: int, model: ModelConfig, *, batch_size, epochs: int, lr, momentum=0.0,
                  seeds=1, optimizer: str = "sgd", nesterov: bool = False, reduction: str = "mean",
                  drop_last: bool = False, shuffle: str = "every-epoch", early_stopping: EarlyStopping | None = None,
                  micro_batch: int | None = None, init_seed: int | None = None, data_seed: int | None = None,
                  dropout_seed: int | None = None, instruments: Any = None, phases: Any = (),
                  schedule: str = "constant", decay_epochs: Any = (), decay: float | None = None,
                  warmup_epochs: float = 0.0) -> list[RunConfig]:
    """Every combination of batch size x lr x momentum x seed as a resolved, validated config.

    ``phases`` change the batch size and/or learning rate at given epochs (:class:`Phase`,
    or ``(epoch, batch_size, lr)`` tuples with None for "unchanged"). ``schedule`` decays the
    learning rate: ``step`` multiplies it by ``decay`` (default 0.1) after each epoch in
    ``decay_epochs``; ``cosine`` anneals it to ``decay`` x lr (default 0) over the run.
    Both, and ``warmup_epochs``, are turned into update counts here, phases included.
    """
    _check_int(epochs, "epochs", 1)
    if schedule not in SCHEDULES:
        raise BatchlabError(f"unknown lr schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if optimizer not in OPTIMIZERS:
        raise BatchlabError(f"unknown optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if reduction not in REDUCTIONS:
        raise BatchlabError(f"unknown loss reduction {reduction!r}: choose one of {', '.join(REDUCTIONS)}")
    if shuffle not in SHUFFLE_MODES:
        raise BatchlabError(f"unknown shuffle mode {shuffle!r}: choose one of {', '.join(SHUFFLE_MODES)}")
    if micro_batch is not None:
        _check_int(micro_batch, "micro-batch size", 1)
    if early_stopping is not None:
        watchable = monitorable(data.task)
        if early_stopping.monitor not in watchable:
            raise BatchlabError(f"cannot monitor {early_stopping.monitor!r} in a {data.task}: "
                                f"choose one of {', '.join(watchable)}")
        _check_int(early_stopping.patience, "patience", 1)
        if not math.isfinite(early_stopping.min_delta) or early_stopping.min_delta < 0:
            raise BatchlabError(f"min delta must be finite and >= 0, got {early_stopping.min_delta}")
    if not model.name.startswith("custom:"):
        check_model_config(model)
    sizes = [resolve_batch_size(b, n_train) for b in parse_batch_sizes(batch_size)]
    lrs = parse_floats(lr, "learning rate", positive=True)
    momenta = parse_floats(momentum, "momentum", low=0.0, high=1.0)
    if optimizer == "adam" and any(m != 0.0 for m in momenta):
        raise BatchlabError("momentum applies to sgd only; Adam's moments are set by b1/b2")
    measured = resolve_instruments(instruments)
    if micro_batch is not None and uses_noise(measured):
        raise BatchlabError("the noise-scale instruments split each batch in two halves; "
                            "they cannot be combined with --micro-batch")
    seed_list = parse_seeds(seeds)
    for what, s in [("seed", s) for s in seed_list] + [(w, x) for w, x in (
            ("init seed", init_seed), ("data seed", data_seed), ("dropout seed", dropout_seed)) if x is not None]:
        check_seed(s, what)
    phase_list = resolve_phases(phases, n_train, epochs)
    decay_at = parse_ints(decay_epochs, "decay epoch", low=1) if decay_epochs not in ((), [], None, "") else []
    if schedule == "step" and not decay_at:
        raise BatchlabError("a step schedule needs the epochs after which lr decays (decay_epochs)")
    if decay is not None:
        parse_floats([decay], "lr decay factor", low=0.0, high=1.0 + 1e-12)
    if not math.isfinite(warmup_epochs) or warmup_epochs < 0:
        raise BatchlabError(f"warmup epochs must be >= 0, got {warmup_epochs}")
    configs = []
    for b, rate, m, seed in itertools.product(dict.fromkeys(sizes), lrs, momenta, seed_list):
        updates = _updates_after(n_train, b, phase_list, drop_last)
        opt = OptimizerConfig(optimizer, rate, m, nesterov, warmup_steps=round(warmup_epochs * updates(1)))
        if schedule == "step":
            opt = dataclasses.replace(opt, schedule="step", schedule_steps=tuple(updates(e) for e in decay_at),
                                      decay=0.1 if decay is None else decay)
        elif schedule == "cosine":
            opt = dataclasses.replace(opt, schedule="cosine", schedule_steps=(updates(epochs),),
                                      decay=0.0 if decay is None else decay)
        configs.append(RunConfig(
            data=data, model=model,
            optimizer=opt, phases=phase_list,
            batch_size=b, epochs=epochs, seed=seed,
            init_seed=seed if init_seed is None else init_seed,
            data_seed=seed if data_seed is None else data_seed,
            dropout_seed=seed if dropout_seed is None else dropout_seed,
            reduction=reduction, drop_last=drop_last, shuffle=shuffle,
            early_stopping=early_stopping, micro_batch=micro_batch, instruments=measured))
    configs = list({c.run_id: c for c in configs}.values())
    check_memory(configs, n_train)
    return configs


# What a run keeps in host memory: per step mb_loss, mb_acc and one value per instrument; per
# epoch about this many metrics (losses, accuracies, running averages, norms, times).
EPOCH_SERIES = 16
BYTES_PER_VALUE = 8
COPIES = 2  # the device's stacked outputs and their host copy exist at the same time


def memory_estimate(configs: Sequence[RunConfig], n_train: int) -> int:
    """Bytes the recorded series of ``configs`` take in memory:
    runs x steps x (2 + instruments) x 8 bytes (+ the per-epoch series), twice (device + host copy)."""
    total = 0
    for cfg in configs:
        steps = _updates_after(n_train, cfg.batch_size, cfg.phases, cfg.drop_last)(cfg.epochs)
        total += (steps * (2 + len(cfg.instruments)) + (cfg.epochs + 1) * EPOCH_SERIES) * BYTES_PER_VALUE
    return total * COPIES


def memory_limit() -> int:
    """Half the machine's physical memory (``os.sysconf``), or 8 GiB where that is unknown."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2 ** 30


def check_memory(configs: Sequence[RunConfig], n_train: int) -> None:
    """Refuse, before anything trains, runs whose records would not fit in half the machine's memory."""
    need, limit = memory_estimate(configs, n_train), memory_limit()
    if need > limit:
        raise BatchlabError(f"these {len(configs)} run(s) would record about {need / 2 ** 30:,.1f} GiB of series "
                            f"(limit: half this machine's memory, {limit / 2 ** 30:,.1f} GiB); "
                            f"use fewer epochs, runs or instruments")


def resolve_phases(phases: Any, n_train: int, epochs: int) -> tuple[Phase, ...]:
    """Validated phases in epoch order: each starts after 1..epochs-1 epochs, B in [1, N], lr > 0."""
    out = []
    for phase in phases or ():
        if isinstance(phase, dict):
            phase = Phase(**phase)
        elif isinstance(phase, (tuple, list)):
            phase = Phase(*phase)
        if not isinstance(phase, Phase):
            raise BatchlabError(f"a phase is (epoch, batch_size, lr), got {phase!r}")
        _check_int(phase.epoch, "phase start epoch", 1)
        if phase.epoch >= epochs:
            raise BatchlabError(f"a phase starting after epoch {phase.epoch} never runs in {epochs} epochs")
        size = None if phase.batch_size is None else resolve_batch_size(phase.batch_size, n_train)
        rate = None if phase.lr is None else parse_floats([phase.lr], "phase learning rate", positive=True)[0]
        if size is None and rate is None:
            raise BatchlabError(f"the phase after epoch {phase.epoch} changes neither batch size nor lr")
        out.append(Phase(phase.epoch, size, rate))
    starts = [p.epoch for p in out]
    if starts != sorted(set(starts)):
        raise BatchlabError(f"phases must start at distinct epochs in increasing order, got {starts}")
    return tuple(out)


def _updates_after(n_train: int, batch_size: int, phases: tuple[Phase, ...], drop_last: bool) -> Callable[[int], int]:
    """Updates done after ``e`` epochs of a run that starts at ``batch_size`` (phases included).

    Counted per phase (epochs x updates per epoch), so a huge ``e`` costs no loop over epochs.
    """
    starts = [0] + [p.epoch for p in phases]  # phase k covers epochs starts[k]+1 .. starts[k+1]
    sizes = [batch_size]
    for phase in phases:
        sizes.append(phase.batch_size if phase.batch_size is not None else sizes[-1])

    def updates(e: int) -> int:
        total = 0
        for k, size in enumerate(sizes):
            end = min(e, starts[k + 1]) if k + 1 < len(starts) else e
            if end > starts[k]:
                total += (end - starts[k]) * budget.steps_per_epoch(n_train, size, drop_last)
        return total

    return updates


def group_cohorts(configs: Sequence[RunConfig]) -> list[list[RunConfig]]:
    """Runs that can share one compiled, vmapped program, in first-seen order."""
    groups: dict[tuple, list[RunConfig]] = defaultdict(list)
    for cfg in configs:
        groups[cfg.cohort_key()].append(cfg)
    return list(groups.values())


def resolve_data(data: Any, *, standardize: bool | None, test_fraction: float, label: str,
                 task: str | None = None) -> tuple[Dataset, DataConfig]:
    """A dataset from a built-in name, a file path, a tuple of arrays or a :class:`Dataset`;
    ``task`` (``classification`` or ``regression``): the data's own by default (a built-in
    set's, or classification)."""
    if isinstance(data, Dataset):
        if task is not None and task != data.task:
            raise BatchlabError(f"this Dataset is a {data.task} problem, not {task}")
        return data, DataConfig(data.name, False, file_sha256=data.fingerprint(), task=data.task)
    if isinstance(data, (tuple, list)):
        if len(data) not in (2, 4):
            raise BatchlabError("data arrays must be (x, y) or (x, y, x_test, y_test)")
        return from_arrays(*data, standardize=bool(standardize), test_fraction=test_fraction,
                           task=task or "classification")
    if isinstance(data, Path):
        data = str(data)
    if not isinstance(data, str):
        raise BatchlabError(f"data must be a name, a file path or arrays, got {type(data).__name__}")
    cfg = resolve_data_config(data, standardize=standardize, test_fraction=test_fraction, label=label, task=task)
    return load_dataset(cfg), cfg


def train(data: Any = "blobs", model: Any = "mlp", *, batch_size: Any = 32, epochs: int = 10,
          lr: Any = 0.01, momentum: Any = 0.0, seeds: Any = 1, optimizer: str = "sgd", nesterov: bool = False,
          reduction: str = "mean", drop_last: bool = False, shuffle: str = "every-epoch",
          hidden: Any = (50,), activation: str = "relu", init: str = "he_uniform", dropout: float = 0.0,
          standardize: bool | None = None, test_fraction: float = 0.2, label: str = "label",
          task: str | None = None, early_stopping: EarlyStopping | None = None, micro_batch: int | None = None,
          init_seed: int | None = None, data_seed: int | None = None, dropout_seed: int | None = None,
          instruments: Any = None, phases: Any = (), schedule: str = "constant", decay_epochs: Any = (),
          decay: float | None = None, warmup_epochs: float = 0.0,
          db: str | Path | None = None, force: bool = False, progress: Progress | None = None) -> TrainResult:
    """Train every combination of ``batch_size`` x ``lr`` x ``momentum`` x ``seeds``.

    ``model`` is a built-in name (``mlp``, ``logreg``, ``cnn``), an import path
    (``"my_models.py:make_model"``), a ``batchlab.Model``, a Flax (linen or NNX), Equinox,
    Keras 3 or PyTorch model, or a function returning one (``batchlab.models.adapters``).

    ``task="regression"`` trains on float targets with the mean squared error (``train_loss``
    and ``test_loss`` are then the MSE, and ``train_r2``/``test_r2`` replace the accuracies);
    built-in sets know their task (``regression``, ``diabetes`` are regressions).

    ``batch_size`` takes integers, ``"full"`` (B = N, batch gradient descent), lists or a
    spec such as ``"1,32,full"``; ``seeds=5`` means seeds 0..4. ``phases``, ``schedule``,
    ``decay_epochs``, ``decay`` and ``warmup_epochs``: see :func:`build_configs`. ``instruments`` names per-step
    measurements (a preset ``cheap``/``standard``/``full`` or names such as ``grad_norm``);
    they appear as columns of ``result.steps``. Runs that share a batch size
    train together as one vmapped cohort. With ``db`` the runs are stored (one transaction
    per cohort) and finished runs are read back instead of recomputed unless ``force``.

    Example:
        >>> result = batchlab.train("blobs", "mlp", batch_size=32, epochs=200, lr=0.01, momentum=0.9, seeds=5)
        >>> result.history.groupby("epoch").test_acc.mean()
    """
    configs, dataset, net = prepare(data, model, batch_size=batch_size, epochs=epochs, lr=lr, momentum=momentum,
                                    seeds=seeds, optimizer=optimizer, nesterov=nesterov, reduction=reduction,
                                    drop_last=drop_last, shuffle=shuffle, hidden=hidden, activation=activation,
                                    init=init, dropout=dropout, standardize=standardize,
                                    test_fraction=test_fraction, label=label, task=task,
                                    early_stopping=early_stopping,
                                    micro_batch=micro_batch, init_seed=init_seed, data_seed=data_seed,
                                    dropout_seed=dropout_seed, instruments=instruments, phases=phases,
                                    schedule=schedule, decay_epochs=decay_epochs, decay=decay,
                                    warmup_epochs=warmup_epochs)
    return run_configs(configs, dataset, net, db=db, force=force, progress=progress)


def prepare(data: Any, model: Any, *, hidden: Any, activation: str, init: str, dropout: float,
            standardize: bool | None, test_fraction: float, label: str, task: str | None = None, **grid: Any
            ) -> tuple[list[RunConfig], Dataset, Model]:
    """Validate everything and resolve the runs before anything is trained or written."""
    if not 0 < test_fraction < 1:
        raise BatchlabError(f"test fraction must lie in (0, 1), got {test_fraction}")
    dataset, data_cfg = resolve_data(data, standardize=standardize, test_fraction=test_fraction, label=label,
                                     task=task)
    # A built-in name, an import path ("file.py:make_model") or a model object (batchlab.Model,
    # Flax, Equinox, Keras, PyTorch, or a function returning one): see batchlab.models.resolve.
    from batchlab.models.resolve import resolve_model

    model_cfg, net = resolve_model(model, dataset, hidden=hidden, activation=activation, init=init, dropout=dropout)
    configs = build_configs(data_cfg, dataset.n_train, model_cfg, **grid)
    return configs, dataset, net


def run_configs(configs: list[RunConfig], dataset: Dataset, net: Model, *, db: str | Path | None = None,
                force: bool = False, progress: Progress | None = None, checkpoints: tuple[int, ...] = ()
                ) -> TrainResult:
    """Train the configs cohort by cohort; store each cohort as it finishes.

    The store is checked for writing before the first cohort trains, so no work is done that
    could not be kept. What the data layer changed in the user's data (``dataset.notes``) is
    stored with each run. ``checkpoints``: epochs whose parameters the fresh runs keep
    (``RunResult.checkpoints``).
    """
    store = Store(db) if db is not None else None
    try:
        if store is not None:
            check_store_writable(store)
        done = store.run_ids() if (store is not None and not force) else set()
        todo = [c for c in configs if c.run_id not in done]
        skipped = [c.run_id for c in configs if c.run_id in done]
        if progress is not None and skipped:
            progress(sum(c.epochs for c in configs if c.run_id in done))
        notes = tuple(getattr(dataset, "notes", ()) or ())
        fresh: dict[str, RunResult] = {}
        for results in train_cohorts(group_cohorts(todo), dataset, net,
                                     on_epoch=lambda cohort: _epoch_counter(progress, len(cohort)),
                                     checkpoints=checkpoints, grid=group_cohorts(configs)):
            if store is not None:
                _write(store, results, notes)
            fresh.update((r.run_id, r) for r in results)
        stored = {r.run_id: r for r in store.load(skipped)} if (store is not None and skipped) else {}
        runs = [fresh.get(c.run_id) or stored[c.run_id] for c in configs]
        return TrainResult(runs, skipped)
    finally:
        if store is not None:
            store.close()


def check_store_writable(store: Store) -> None:
    """Raise StoreError (one line) when ``store`` cannot be written, before any training."""
    store.check_writable()


def _write(store: Store, results: list[RunResult], notes: tuple[str, ...]) -> None:
    """One transaction per cohort; the data notes go with each run when there are any."""
    if notes:
        store.write(results, __version__, notes={r.run_id: list(notes) for r in results})
    else:
        store.write(results, __version__)


def _epoch_counter(progress: Progress | None, runs: int) -> Callable[[int], None] | None:
    """Turn a cohort's 'epoch e finished' into run-epochs completed (early stops jump ahead)."""
    if progress is None:
        return None
    last = [0]

    def on_epoch(epoch: int) -> None:
        progress((epoch - last[0]) * runs)
        last[0] = epoch

    return on_epoch


__all__ = ["train", "TrainResult", "build_configs", "group_cohorts", "prepare", "run_configs", "check_writable_dir",
           "check_store_writable", "memory_estimate"]
