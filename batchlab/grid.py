"""From settings to runs: every combination of the grid axes as a resolved, validated config.

The settings are those of ``settings.py``, read; the axes are the settings declared as axes
(batch size x optimizer x lr x momentum x weight decay x seed). Everything that depends on
the data (N) or on the choices together is checked here, before anything trains, so every
interface (``batchlab.train``, ``train``, ``sweep``, config files, studies) gets the same
messages.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Sequence

from batchlab import budget
from batchlab.budget import memory_limit
from batchlab.engine.records import record_every
from batchlab.config import DataConfig, EarlyStopping, ModelConfig, OptimizerConfig, Phase, RunConfig, monitorable
from batchlab.errors import BatchlabError
from batchlab.instruments import uses_halves
from batchlab.parsing import check_seed, parse_float, resolve_batch_size
from batchlab.settings import BY_NAME, DEFAULT_WEIGHT_DECAY, read_given, training_defaults

Values = dict[str, Any]


def build_configs(data: DataConfig, n_train: int, model: ModelConfig, **settings: Any) -> list[RunConfig]:
    """The runs that settings given by name make (the others at their defaults; see
    :func:`runs_of`) for ``data`` of ``n_train`` training rows and ``model``."""
    return runs_of({**training_defaults(), **read_given(settings)}, data, n_train, model)


def runs_of(values: Values, data: DataConfig, n_train: int, model: ModelConfig) -> list[RunConfig]:
    """Every combination of batch size x optimizer x lr x momentum x weight decay x seed, as
    resolved configs in that order (each once). ``values``: every training setting, read.

    ``phases`` change the batch size and/or learning rate at given epochs. ``schedule`` decays
    the learning rate: ``step`` multiplies it by ``decay`` (default 0.1) after each epoch in
    ``decay_epochs``; ``cosine`` and ``linear`` anneal it to ``decay`` x lr (default 0) over the
    run. Both, and ``warmup_epochs``, are turned into update counts here, phases included.
    """
    early = early_stopping(values, data.task)
    _check_together(values)
    sizes = list(dict.fromkeys(resolve_batch_size(b, n_train) for b in values["batch_size"]))
    phases = resolve_phases(values["phases"], n_train, values["epochs"])
    devices = resolve_devices(values["devices"], sizes + [p.batch_size for p in phases if p.batch_size])
    configs = []
    for b, name, lr, momentum, decay, seed in itertools.product(
            sizes, values["optimizer"], values["lr"], values["momentum"], _decays(values), values["seeds"]):
        updates = budget.updates_after(n_train, b, phases, values["drop_last"])
        configs.append(RunConfig(
            data=data, model=model, optimizer=_optimizer(values, name, lr, momentum, decay, updates),
            phases=phases, batch_size=b, epochs=values["epochs"], seed=seed,
            init_seed=_seed(values, "init_seed", seed), data_seed=_seed(values, "data_seed", seed),
            dropout_seed=_seed(values, "dropout_seed", seed), reduction=values["reduction"],
            drop_last=values["drop_last"], shuffle=values["shuffle"], early_stopping=early,
            micro_batch=values["micro_batch"], instruments=values["instruments"], devices=devices))
    # Settings that do not apply to an optimizer (momentum to adam) repeat its runs: each is
    # kept once. Equal configs are equal runs; comparing them is 20x faster than hashing ids.
    configs = list(dict.fromkeys(configs))
    check_memory(configs, n_train)
    return configs


def resolve_devices(devices: int | str, sizes: list[int]) -> int:
    """The device count a run splits its batches over: ``all`` counted now; more than JAX sees
    refused, and a batch size that does not split evenly (each device takes B / devices rows,
    so the update is the single-device one)."""
    if devices == 1:
        return 1
    import jax

    available = jax.device_count()
    count = available if devices == "all" else devices
    if count > available:
        kinds = ", ".join(sorted({d.platform for d in jax.devices()}))
        raise BatchlabError(f"{count} devices asked for; JAX sees {available} ({kinds}). On a CPU, "
                            f"XLA_FLAGS=--xla_force_host_platform_device_count={count} makes {count} CPU devices")
    uneven = [b for b in sizes if b % count]
    if uneven:
        raise BatchlabError(f"batch size {uneven[0]} does not split evenly over {count} devices: use a multiple of "
                            f"{count} (each device takes B / {count} rows)")
    return count


def _seed(values: Values, name: str, seed: int) -> int:
    return seed if values[name] is None else values[name]


def _decays(values: Values) -> list[float | None]:
    return [None] if values["weight_decay"] is None else values["weight_decay"]


def _optimizer(values: Values, name: str, lr: float, momentum: float, decay: float | None,
               updates) -> OptimizerConfig:
    """The optimizer of one run: what applies to ``name`` (momentum and Nesterov to sgd, the
    betas and eps to adam and adamw; the others keep their defaults, so they never split runs
    that train alike), and the schedule in updates."""
    sgd = name == "sgd"
    opt = OptimizerConfig(
        name, lr, momentum if sgd else 0.0, values["nesterov"] and sgd,
        b1=values["beta1"] if not sgd else OptimizerConfig.b1, b2=values["beta2"] if not sgd else OptimizerConfig.b2,
        eps=values["eps"] if not sgd else OptimizerConfig.eps, warmup_steps=round(values["warmup_epochs"] * updates(1)),
        weight_decay=DEFAULT_WEIGHT_DECAY[name] if decay is None else decay, clip_norm=values["clip_norm"])
    schedule, decay_factor = values["schedule"], values["decay"]
    if schedule == "step":
        steps = tuple(updates(e) for e in values["decay_epochs"])
        opt = dataclasses.replace(opt, schedule="step", schedule_steps=steps,
                                  decay=0.1 if decay_factor is None else decay_factor)
    elif schedule in ("cosine", "linear"):
        opt = dataclasses.replace(opt, schedule=schedule, schedule_steps=(updates(values["epochs"]),),
                                  decay=0.0 if decay_factor is None else decay_factor)
    return opt


def _check_together(values: Values) -> None:
    """Settings that are valid alone but not with the others."""
    optimizers = values["optimizer"]
    if "sgd" not in optimizers:
        if any(m != 0.0 for m in values["momentum"]):
            raise BatchlabError("momentum applies to sgd only; Adam's moments are set by beta1/beta2")
        if values["nesterov"]:
            raise BatchlabError("nesterov applies to sgd only")
    if optimizers == ["sgd"]:
        for name in ("beta1", "beta2", "eps"):
            if values[name] != BY_NAME[name].default:
                raise BatchlabError(f"{name} applies to adam and adamw, not sgd")
    _check_schedule(values)
    if values["norm"] != "none" and values["model"] == "mlp" and 1 in values["batch_size"]:
        raise BatchlabError("batch norm over one row sets every hidden feature to its shift (each row is "
                            "its own mean): use B >= 2 with --norm, or no norm at B = 1")
    if values["micro_batch"] is not None and uses_halves(values["instruments"]):
        raise BatchlabError("the noise-scale instruments split each batch in two halves; "
                            "they cannot be combined with --micro-batch")
    for name in ("init_seed", "data_seed", "dropout_seed"):
        if values[name] is not None:
            check_seed(values[name], name.replace("_", " "))


def _check_schedule(values: Values) -> None:
    """The schedule's settings apply to it and fall within the run."""
    schedule, epochs = values["schedule"], values["epochs"]
    if schedule == "step" and not values["decay_epochs"]:
        raise BatchlabError("a step schedule needs the epochs after which lr decays (decay_epochs)")
    if values["decay_epochs"] and schedule != "step":
        raise BatchlabError(f"decay_epochs apply to a step schedule, not {schedule}")
    if values["decay"] is not None and schedule == "constant":
        raise BatchlabError("decay applies to a step, cosine or linear schedule; this one is constant")
    late = [e for e in values["decay_epochs"] if e >= epochs]
    if late:
        raise BatchlabError(f"lr decay after epoch {late[0]} never applies in a run of {epochs} epochs")
    if values["warmup_epochs"] > epochs:
        raise BatchlabError(f"warmup of {values['warmup_epochs']:g} epochs is longer than the run ({epochs} epochs)")


def early_stopping(values: Values, task: str) -> EarlyStopping | None:
    """The early-stopping rule the settings ask for (``patience`` given), checked against the
    task's metrics."""
    if values["patience"] is None:
        return None
    watchable = monitorable(task)
    if values["monitor"] not in watchable:
        raise BatchlabError(f"cannot monitor {values['monitor']!r} in a {task}: choose one of {', '.join(watchable)}")
    return EarlyStopping(values["monitor"], values["patience"], values["min_delta"], values["restore_best"])


def resolve_phases(phases: Sequence[Phase], n_train: int, epochs: int) -> tuple[Phase, ...]:
    """Validated phases in epoch order: each starts after 1..epochs-1 epochs, B in [1, N], lr > 0."""
    out = []
    for phase in phases:
        if isinstance(phase.epoch, bool) or not isinstance(phase.epoch, int) or phase.epoch < 1:
            raise BatchlabError(f"phase start epoch must be an integer >= 1, got {phase.epoch!r}")
        if phase.epoch >= epochs:
            raise BatchlabError(f"a phase starting after epoch {phase.epoch} never runs in {epochs} epochs")
        size = None if phase.batch_size is None else resolve_batch_size(phase.batch_size, n_train)
        rate = None if phase.lr is None else parse_float(phase.lr, "phase learning rate", positive=True)
        if size is None and rate is None:
            raise BatchlabError(f"the phase after epoch {phase.epoch} changes neither batch size nor lr")
        out.append(Phase(phase.epoch, size, rate))
    starts = [p.epoch for p in out]
    if starts != sorted(set(starts)):
        raise BatchlabError(f"phases must start at distinct epochs in increasing order, got {starts}")
    return tuple(out)


def group_cohorts(configs: Sequence[RunConfig]) -> list[list[RunConfig]]:
    """Runs that can share one compiled, vmapped program, in first-seen order."""
    groups: dict[tuple, list[RunConfig]] = {}
    for cfg in configs:
        groups.setdefault(cfg.cohort_key(), []).append(cfg)
    return list(groups.values())


# What a run holds in host memory, per per-step record it keeps (``engine/records.py``: at most
# STEP_RECORDS per run): its 4 bookkeeping columns (epoch, step, samples, time) compacted as the
# epochs come and again in the run's final series (64 bytes) plus some, and each output in
# float32, then float64, then the store's bytes (16). Measured with tracemalloc on blobs runs at
# B = 1 of 50,000-200,000 kept steps and 2-5 outputs: within 10% (tests/test_memory.py keeps it
# within 25%). Per epoch about EPOCH_SERIES metrics, three times (records, series, store).
STEP_RECORD_BYTES = 72
OUTPUT_BYTES = 16
EPOCH_SERIES = 16


def memory_estimate(configs: Sequence[RunConfig], n_train: int) -> int:
    """Bytes the recorded series of ``configs`` take in host memory at their peak: kept steps x
    (STEP_RECORD_BYTES + OUTPUT_BYTES x outputs) + epochs x EPOCH_SERIES x 24, per run."""
    total = 0
    for cfg in configs:
        updates = cfg.updates_after(n_train, cfg.epochs)
        kept = updates // record_every(updates)
        outputs = 2 + len(cfg.instruments)
        total += kept * (STEP_RECORD_BYTES + OUTPUT_BYTES * outputs) + (cfg.epochs + 1) * EPOCH_SERIES * 24
    return total


def check_memory(configs: Sequence[RunConfig], n_train: int) -> None:
    """Refuse, before anything trains, runs whose records would not fit in half the machine's memory."""
    need, limit = memory_estimate(configs, n_train), memory_limit()
    if need > limit:
        raise BatchlabError(f"these {len(configs)} run(s) would record about {need / 2 ** 30:,.1f} GiB of series "
                            f"(limit: half this machine's memory, {limit / 2 ** 30:,.1f} GiB); "
                            f"use fewer epochs, runs or instruments")


def check_model_memory(parameters: int, activations_per_row: int, n_rows: int, configs: Sequence[RunConfig]) -> None:
    """Refuse, before anything is allocated, runs whose model would not fit: a cohort holds
    about ``PARAMETER_COPIES`` float32 copies of every run's parameters (the parameters, the
    gradient, the optimizer's state and the update) and every run's activations for the rows
    it passes at once (its largest batch, or an evaluation chunk of all rows)."""
    from batchlab.engine.epoch import EVAL_CHUNK

    cohorts = group_cohorts(configs)
    runs = max(len(cohort) for cohort in cohorts)
    # A cohort's runs share their batch sizes and epochs (its key): one run of each tells them.
    rows = max([c[0].batch_size_at(e) for c in cohorts for e in range(1, c[0].epochs + 1)] + [min(n_rows, EVAL_CHUNK)])
    weights, activations = parameters * 4 * PARAMETER_COPIES * runs, activations_per_row * rows * 4 * runs
    need, limit = weights + activations, memory_limit()
    if need > limit:
        raise BatchlabError(f"{runs:,} run(s) trained together would take about {need / 2 ** 30:,.1f} GiB "
                            f"({parameters:,} parameters: {weights / 2 ** 30:,.1f} GiB; activations of "
                            f"{rows:,} rows at once: {activations / 2 ** 30:,.1f} GiB; limit: half this "
                            f"machine's memory, {limit / 2 ** 30:,.1f} GiB); use fewer runs (lrs x seeds), "
                            "a smaller model or batch")


PARAMETER_COPIES = 5  # parameters, gradient, Adam's two moments (SGD: one or none), the update


def epochs_for(kind: str, amount: float, n: int, batch_size: int) -> int:
    """Epochs that hold a sweep's budget at this batch size (rounded up to whole epochs)."""
    if kind == "epochs":
        return int(amount)
    per_epoch = budget.steps_per_epoch(n, batch_size) if kind == "steps" else n
    return max(1, math.ceil(amount / per_epoch))
